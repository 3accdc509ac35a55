"""An evaluation report as files: XLSX (openpyxl) and PDF (reportlab, with a CJK font that
embeds, so names in Chinese print as themselves). Both are made from the report the API
answers (`report.build`), so every figure in them is one the API gives. Pure but for the
font file: no database, no network.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from mapserver.errors import CityGridError

KIND_NAMES = {
    "inspector": "监督员",
    "bureau": "专业部门",
    "centre": "监督中心与指挥中心",
    "street": "街道",
    "community": "社区",
    "grid": "单元网格",
}
# TrueType outlines (reportlab embeds TrueType only): WenQuanYi Zen Hei, from Debian's
# fonts-wqy-zenhei, which deploy/setup.sh installs beside Noto CJK for the maps.
CJK_FONTS = (Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),)
FONT = "CityGridCJK"
RANKING_HEAD = ["名次", "对象", "名称", "得分", "等级", "上期得分", "变化", "上期名次"]


class NoFont(CityGridError):
    status = 503
    code = "unavailable"


INDICATOR_HEAD = ["对象", "名称", "指标", "公式", "分子", "分母", "值", "等级", "权重", "得分",
                  "上期值"]  # fmt: skip


def title(data: dict[str, Any]) -> str:
    p, q = data["period"], data["previous_period"]
    return (
        f"CityGrid 综合评价报告 · {KIND_NAMES[data['subject']]} · {p['from']} 至 {p['to']}"
        f"（上期 {q['from']} 至 {q['to']}，评分配置第 {data['config_version']} 版）"
    )


def ranking_rows(data: dict[str, Any]) -> Iterator[list[Any]]:
    for r in data["subjects"]:
        yield [r["rank"], r["subject"], r["name"], r["score"], r["grade"],
               r["previous_score"], r["change"], r["previous_rank"]]  # fmt: skip


def indicator_rows(data: dict[str, Any]) -> Iterator[list[Any]]:
    described = {i["key"]: i for i in data["indicators"]}
    for r in data["subjects"]:
        for key, v in r["indicators"].items():
            d = described[key]
            yield [r["subject"], r["name"], d["title"], d["formula"], v["numerator"],
                   v["denominator"], v["value"], v["grade"], v["weight"], v["score"],
                   v["previous_value"]]  # fmt: skip


def xlsx(data: dict[str, Any]) -> bytes:
    """Three sheets: 排名 (ranking), 指标 (every indicator of every subject), 公式 (what
    each indicator counts)."""
    book = Workbook()
    bold = Font(bold=True)
    ranking = book.active
    assert ranking is not None
    ranking.title = "排名"
    ranking.append([title(data)])
    ranking.append(RANKING_HEAD)
    for row in ranking_rows(data):
        ranking.append(row)
    values = book.create_sheet("指标")
    values.append(INDICATOR_HEAD)
    for row in indicator_rows(data):
        values.append(row)
    formulas = book.create_sheet("公式")
    formulas.append(["指标", "键", "公式", "分子", "分母", "方向"])
    for d in data["indicators"]:
        formulas.append([d["title"], d["key"], d["formula"], _side(d["numerator"]),
                         _side(d["denominator"]), "越高越好" if d["better"] == "higher"
                         else "越低越好"])  # fmt: skip
    for sheet, header_row in ((ranking, 2), (values, 1), (formulas, 1)):
        for cell in sheet[header_row]:
            cell.font = bold
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _side(side: dict[str, Any]) -> str:
    terms = side.get("terms") or []
    if not terms:
        return f"{side['formula']}: {side.get('definition', '')}"
    return "; ".join(
        f"{'-' if t['sign'] < 0 else ''}{t['measure']}: {t['definition']}" for t in terms
    )


@lru_cache(maxsize=1)
def _font() -> str:
    for path in CJK_FONTS:
        if path.is_file():
            pdfmetrics.registerFont(TTFont(FONT, str(path), subfontIndex=0))
            return FONT
    raise NoFont("no CJK font for PDF reports: install fonts-wqy-zenhei")


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return str(value)


def pdf(data: dict[str, Any]) -> bytes:
    """A landscape A4 document: title, ranking, then every indicator with its formula,
    numerator, denominator and value."""
    font = _font()
    head = ParagraphStyle("head", fontName=font, fontSize=13, leading=18)
    cell = ParagraphStyle("cell", fontName=font, fontSize=7, leading=9)
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out, pagesize=landscape(A4), leftMargin=12 * mm, rightMargin=12 * mm,
        topMargin=12 * mm, bottomMargin=12 * mm, title="CityGrid 综合评价报告",
        author="CityGrid",
    )  # fmt: skip
    style = TableStyle(
        [
            ("FONTNAME", (0, 0), (-1, -1), font),
            ("FONTSIZE", (0, 0), (-1, -1), 8),
            ("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef7")),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ]
    )
    ranking = [RANKING_HEAD] + [[_fmt(v) for v in row] for row in ranking_rows(data)]
    values = [INDICATOR_HEAD] + [
        [_fmt(v) if i != 3 else Paragraph(str(v), cell) for i, v in enumerate(row)]
        for row in indicator_rows(data)
    ]
    widths = [30, 34, 20, 70, 16, 16, 18, 10, 14, 16, 18]  # mm, 262 of A4's 273
    story: list[Any] = [
        Paragraph(title(data), head),
        Spacer(1, 4 * mm),
        Table(ranking, repeatRows=1, style=style, hAlign="LEFT"),
        Spacer(1, 6 * mm),
        Paragraph("指标明细（公式、分子、分母）", head),
        Spacer(1, 2 * mm),
        Table(values, repeatRows=1, style=style, hAlign="LEFT",
              colWidths=[w * mm for w in widths]),
    ]  # fmt: skip
    doc.build(story)
    return out.getvalue()
