"""`citygrid street stats`: per-street statistics for a period inside the secure zone (the
same report as `GET /street/stats`), as a table, JSON, CSV or XLSX."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mapserver.commands.base import Context, _audit_cli, _connection, pass_ctx, reports_errors
from mapserver.errors import InvalidInput


@click.group("street")
def street() -> None:
    """Street supervision: statistics per street."""


@street.command("stats")
@click.option("--from", "first", required=True, help="First day, YYYY-MM-DD.")
@click.option("--to", "last", required=True, help="Last day (inclusive), YYYY-MM-DD.")
@click.option("--street", "streets", multiple=True, help="Street code (repeatable; default all).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "xlsx"]),
              default="table", show_default=True)  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@pass_ctx
@reports_errors
def stats(
    ctx: Context, first: str, last: str, streets: tuple[str, ...], fmt: str, out: Path | None
) -> None:
    """Reported, filed, closed, on time and overdue cases of a period, per street, by class
    and by community, with the reminders and orders sent (days in the work time zone)."""
    from mapserver.cases import street_stats
    from mapserver.cases.calendar import parse_timezone

    day_from, day_to = street_stats.period({"from": first, "to": last})
    if fmt == "xlsx" and out is None:
        raise InvalidInput("--format xlsx needs --out FILE")
    with _connection(ctx) as conn:
        known = {r[0] for r in conn.execute("SELECT code FROM street").fetchall()}
        unknown = sorted(set(streets) - known)
        if unknown:
            raise InvalidInput(f"no street {unknown[0]!r}")
        shown = street_stats.report(
            conn, streets or known, day_from, day_to, parse_timezone(ctx.settings.work_timezone),
            ctx.settings.locale,
        )  # fmt: skip
        with conn.transaction():
            _audit_cli(conn, "street.stats", "street stats", streets=sorted(streets)[:20],
                       period=f"{day_from}..{day_to}", format=fmt)  # fmt: skip
    if fmt == "xlsx":
        assert out is not None
        from webclient.messages import catalogue

        out.write_bytes(street_stats.as_xlsx(shown, catalogue(ctx.settings.locale)))
        click.echo(f"{len(shown['streets'])} streets written to {out.name}")
        return
    if fmt == "csv":
        text = street_stats.as_csv(shown).decode("utf-8")
    elif fmt == "json":
        text = json.dumps(shown, ensure_ascii=False, indent=1) + "\n"
    else:
        keys = street_stats.COUNTS + street_stats.SUPERVISION
        lines = ["street     " + " ".join(f"{k:>9}" for k in keys) + "  name"]
        for entry in shown["streets"]:
            t = entry["total"]
            lines.append(
                f"{entry['street']['code']}  "
                + " ".join(f"{t[k]:>9}" for k in keys)
                + f"  {entry['street']['name']}"
            )
        text = "\n".join(lines) + "\n"
    if out is not None:
        out.write_text(text, "utf-8")
        click.echo(f"{len(shown['streets'])} streets written to {out.name}")
    else:
        click.echo(text, nl=False)


COMMANDS = [street]
