"""An evaluation report as files: XLSX (openpyxl) and PDF (reportlab, with a CJK font that
embeds, so names in Chinese print as themselves). Both are made from the report the API
answers (`report.build`), so every figure in them is one the API gives. Their words come
from the install's message catalogue (`words`, webclient.messages: zh-CN by default). Pure
but for the font file: no database, no network.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
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
from mapserver.evaluation import indicators

Words = Mapping[str, str]  # a locale's message catalogue (webclient.messages.catalogue)

# TrueType outlines (reportlab embeds TrueType only): WenQuanYi Zen Hei, from Debian's
# fonts-wqy-zenhei, which deploy/setup.sh installs beside Noto CJK for the maps.
CJK_FONTS = (Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),)
FONT = "CityGridCJK"


class NoFont(CityGridError):
    status = 503
    code = "unavailable"


def default_words() -> Words:
    from webclient.messages import catalogue

    return catalogue("zh-CN")


def head(words: Words, key: str) -> list[str]:
    return words[f"export.{key}"].split("|")


def title(data: dict[str, Any], words: Words) -> str:
    p, q = data["period"], data["previous_period"]
    return words["export.title"].format(
        kind=words[f"export.kind.{data['subject']}"],
        first=p["from"],
        last=p["to"],
        previous_first=q["from"],
        previous_last=q["to"],
        version=data["config_version"],
    )


def _named(words: Words, table: str, code: str, name: str) -> str:
    """A server code's name in the catalogue's language (the report's own name otherwise)."""
    return words.get(f"{table}.{code}", name)


def _indicator(words: Words, d: dict[str, Any]) -> tuple[str, str]:
    """An indicator's title and formula in the catalogue's language."""
    shown = _named(words, "indicator", d["key"], d["title"])
    found = indicators.INDICATORS.get(d["key"])
    if found is None:  # not one of ours: as the report gave it
        return shown, str(d["formula"]).replace(d["title"], shown, 1)
    return shown, found.formula(shown, lambda m: _named(words, "measure", m, m))


def ranking_rows(data: dict[str, Any], words: Words) -> Iterator[list[Any]]:
    for r in data["subjects"]:
        grade = _named(words, "grade", r["grade"], r["grade"]) if r["grade"] else r["grade"]
        yield [r["rank"], r["subject"], _named(words, "centre", r["subject"], r["name"]),
               r["score"], grade, r["previous_score"], r["change"],
               r["previous_rank"]]  # fmt: skip


def indicator_rows(data: dict[str, Any], words: Words) -> Iterator[list[Any]]:
    described = {i["key"]: i for i in data["indicators"]}
    for r in data["subjects"]:
        for key, v in r["indicators"].items():
            shown, formula = _indicator(words, described[key])
            grade = _named(words, "grade", v["grade"], v["grade"]) if v["grade"] else v["grade"]
            yield [r["subject"], _named(words, "centre", r["subject"], r["name"]), shown,
                   formula, v["numerator"], v["denominator"], v["value"], grade, v["weight"],
                   v["score"], v["previous_value"]]  # fmt: skip


def xlsx(data: dict[str, Any], words: Words | None = None) -> bytes:
    """Three sheets: ranking (排名), every indicator of every subject (指标), what each
    indicator counts (公式), in the words of `words` (default zh-CN)."""
    words = words or default_words()
    book = Workbook()
    bold = Font(bold=True)
    ranking = book.active
    assert ranking is not None
    ranking.title = words["export.sheet_ranking"]
    ranking.append([title(data, words)])
    ranking.append(head(words, "ranking_head"))
    for row in ranking_rows(data, words):
        ranking.append(row)
    values = book.create_sheet(words["export.sheet_indicators"])
    values.append(head(words, "indicator_head"))
    for row in indicator_rows(data, words):
        values.append(row)
    formulas = book.create_sheet(words["export.sheet_formulas"])
    formulas.append(head(words, "formula_head"))
    for d in data["indicators"]:
        shown, formula = _indicator(words, d)
        formulas.append([shown, d["key"], formula, _side(d["numerator"]),
                         _side(d["denominator"]), words["export.higher"]
                         if d["better"] == "higher" else words["export.lower"]])  # fmt: skip
    for sheet, header_row in ((ranking, 2), (values, 1), (formulas, 1)):
        for cell in sheet[header_row]:
            cell.font = bold
        for row in sheet.iter_rows():  # a name is data, never a formula (openpyxl reads "=…" so)
            for cell in row:
                if cell.data_type == "f":
                    cell.data_type = "s"
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


def pdf(data: dict[str, Any], words: Words | None = None) -> bytes:
    """A landscape A4 document: title, ranking, then every indicator with its formula,
    numerator, denominator and value, in the words of `words` (default zh-CN)."""
    words = words or default_words()
    font = _font()
    heading = ParagraphStyle("head", fontName=font, fontSize=13, leading=18)
    cell = ParagraphStyle("cell", fontName=font, fontSize=7, leading=9)
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out, pagesize=landscape(A4), leftMargin=12 * mm, rightMargin=12 * mm,
        topMargin=12 * mm, bottomMargin=12 * mm, title=words["export.document"],
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
    ranking = [head(words, "ranking_head")] + [
        [_fmt(v) for v in row] for row in ranking_rows(data, words)
    ]
    values = [head(words, "indicator_head")] + [
        [_fmt(v) if i != 3 else Paragraph(str(v), cell) for i, v in enumerate(row)]
        for row in indicator_rows(data, words)
    ]
    widths = [30, 34, 20, 70, 16, 16, 18, 10, 14, 16, 18]  # mm, 262 of A4's 273
    story: list[Any] = [
        Paragraph(title(data, words), heading),
        Spacer(1, 4 * mm),
        Table(ranking, repeatRows=1, style=style, hAlign="LEFT"),
        Spacer(1, 6 * mm),
        Paragraph(words["export.details"], heading),
        Spacer(1, 2 * mm),
        Table(values, repeatRows=1, style=style, hAlign="LEFT",
              colWidths=[w * mm for w in widths]),
    ]  # fmt: skip
    doc.build(story)
    return out.getvalue()
