"""Unit grids of about 100 m × 100 m that tile each community exactly, and the vectorised
lookup of which grid a point lies in.

A community is a rectangle, so its grids are an nx × ny subdivision of it: no gaps, no
overlaps, every cell within a few metres of 100 m. Serials run west→east within a row and
rows run north→south (CJ/T 213).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mapserver.codes import grid_code
from mapserver.demo.layout import Community, Layout, Rect

GRID_M = 100.0
EDGE_EPS = 0.05  # a point closer than this to a grid edge is moved off it


@dataclass(frozen=True)
class Grid:
    code: str
    community_code: str
    rect: Rect


@dataclass(frozen=True)
class GridIndex:
    """Arrays over communities for vectorised point → grid lookup."""

    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    nx: np.ndarray
    ny: np.ndarray
    first: np.ndarray  # index in `codes` of each community's first grid
    codes: np.ndarray


def cells(rect: Rect) -> tuple[int, int]:
    return max(1, round(rect.width / GRID_M)), max(1, round(rect.height / GRID_M))


def grids(layout: Layout, district: str, serial_digits: int) -> tuple[list[Grid], GridIndex]:
    out: list[Grid] = []
    firsts = []
    for community in layout.communities:
        ccode = community_code(district, community)
        firsts.append(len(out))
        r = community.rect
        nx, ny = cells(r)
        cw, ch = r.width / nx, r.height / ny
        for row in range(ny):  # north → south
            top = r.y1 - row * ch
            bottom = r.y0 if row == ny - 1 else top - ch
            for col in range(nx):  # west → east
                left = r.x0 + col * cw
                right = r.x1 if col == nx - 1 else left + cw
                serial = row * nx + col + 1
                out.append(
                    Grid(
                        grid_code(ccode, serial, serial_digits),
                        ccode,
                        Rect(left, bottom, right, top),
                    )
                )
    comms = layout.communities
    index = GridIndex(
        x0=np.array([c.rect.x0 for c in comms]),
        y0=np.array([c.rect.y0 for c in comms]),
        x1=np.array([c.rect.x1 for c in comms]),
        y1=np.array([c.rect.y1 for c in comms]),
        nx=np.array([cells(c.rect)[0] for c in comms]),
        ny=np.array([cells(c.rect)[1] for c in comms]),
        first=np.array(firsts),
        codes=np.array([g.code for g in out]),
    )
    return out, index


def street_code(district: str, street: str) -> str:
    return district + street


def community_code(district: str, community: Community) -> str:
    return district + community.street_code + community.code


def locate(
    index: GridIndex, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid codes of points, after moving each point off any grid edge it sits on.

    Returns (codes, x, y) with the possibly nudged coordinates; points outside every
    community get code ''.
    """
    x = np.asarray(x, dtype=float).copy()
    y = np.asarray(y, dtype=float).copy()
    which = np.full(x.shape, -1)
    for i in range(len(index.x0)):
        inside = (x >= index.x0[i]) & (x <= index.x1[i]) & (y >= index.y0[i]) & (y <= index.y1[i])
        which[inside & (which < 0)] = i
    found = which >= 0
    k = np.where(found, which, 0)
    x0, x1, y0, y1 = index.x0[k], index.x1[k], index.y0[k], index.y1[k]
    nx, ny = index.nx[k], index.ny[k]
    cw, ch = (x1 - x0) / nx, (y1 - y0) / ny
    # Move points off cell edges (including community edges) towards the cell's inside.
    fx = (x - x0) / cw
    fy = (y1 - y) / ch
    for frac, coord, step, sign in ((fx, x, cw, 1.0), (fy, y, ch, -1.0)):
        near = np.abs(frac - np.round(frac)) * step < EDGE_EPS
        at_far_end = np.round(frac) >= (nx if sign > 0 else ny)
        direction = np.where(at_far_end, -1.0, 1.0) * sign
        coord[near & found] += (direction * 4 * EDGE_EPS)[near & found]
    col = np.clip(np.floor((x - x0) / cw).astype(int), 0, nx - 1)
    row = np.clip(np.floor((y1 - y) / ch).astype(int), 0, ny - 1)
    idx = index.first[k] + row * nx + col
    codes = np.where(found, index.codes[np.clip(idx, 0, len(index.codes) - 1)], "")
    return codes, x, y
