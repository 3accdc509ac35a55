"""`citygrid eval indicators|config|rebuild`: the comprehensive evaluation inside the secure
zone (the same figures as `GET /evaluation/indicators`)."""

from __future__ import annotations

import json

import click

from mapserver.commands.base import Context, _audit_cli, _connection, pass_ctx, reports_errors
from mapserver.evaluation import indicators


@click.group("eval")
def evaluation() -> None:
    """Evaluation: indicators and scores, the scoring configuration, rebuilding aggregates."""


@evaluation.command("indicators")
@click.option("--subject", type=click.Choice(indicators.SUBJECT_KINDS), required=True)
@click.option("--from", "first", required=True, help="First day, YYYY-MM-DD.")
@click.option("--to", "last", required=True, help="Last day (inclusive), YYYY-MM-DD.")
@click.option("--json", "as_json", is_flag=True, help="The whole report as JSON.")
@click.option("--scan", is_flag=True, help="Count by a full scan instead of the aggregates.")
@pass_ctx
@reports_errors
def show_indicators(ctx: Context, subject: str, first: str, last: str, as_json: bool,
                    scan: bool) -> None:  # fmt: skip
    """Indicators, scores and ranks of every subject of a kind for a period."""
    from mapserver.evaluation import aggregates, config, report
    from webclient.messages import catalogue

    when = report.period({"from": first, "to": last})
    before = when.previous()
    with _connection(ctx) as conn:
        aggregates.require_zone(conn, ctx.settings.work_timezone)
        streets = aggregates.inspector_streets(conn) if subject == "inspector" else None
        now = aggregates.subject_counts(conn, subject, when.first, when.last, streets, scan)
        past = aggregates.subject_counts(conn, subject, before.first, before.last, streets, scan)
        areas = (
            aggregates.areas(conn, subject) if subject in ("street", "community", "grid") else {}
        )
        names = aggregates.subjects(conn, subject)
        cfg = config.current(conn)
    words = catalogue(ctx.settings.locale)  # centres' names and grades in the install's language
    if subject == "centre":
        names = [(code, words.get(f"centre.{code}", name)) for code, name in names]
    shown = report.build(subject, names, now, past, areas, cfg.config, cfg.version, when)
    if as_json:
        click.echo(json.dumps(shown, ensure_ascii=False, indent=2))
        return
    keys = [i["key"].split(".", 1)[1] for i in shown["indicators"]]
    click.echo("rank  score  grade  Δ       subject  " + "  ".join(keys))
    for row in shown["subjects"]:
        values = [
            "-"
            if (v := row["indicators"].get(f"{subject}.{k}")) is None or v["value"] is None
            else f"{v['value']:.4g}"
            for k in keys
        ]
        change = "" if row["change"] is None else f"{row['change']:+.2f}"
        score = "-" if row["score"] is None else f"{row['score']:.2f}"
        grade = words.get(f"grade.{row['grade']}", row["grade"]) if row["grade"] else "-"
        click.echo(
            f"{row['rank'] or '-':>4}  {score:>5}  {grade:^5}  {change:<7} "
            f"{row['subject']}  " + "  ".join(values)
        )


@evaluation.command("config")
@click.option("--version", type=int, default=None, help="A given version (default: in force).")
@pass_ctx
@reports_errors
def show_config(ctx: Context, version: int | None) -> None:
    """The scoring configuration (points, weights, thresholds) as JSON. It is changed only by
    a signed action over HTTP (`POST /evaluation/config`, role leader)."""
    from mapserver.evaluation import config

    with _connection(ctx) as conn:
        shown = config.current(conn, version)
        versions = config.history(conn)
    click.echo(json.dumps({**shown.as_json(), "versions": versions}, ensure_ascii=False, indent=2))


@evaluation.command("rebuild")
@pass_ctx
@reports_errors
def rebuild(ctx: Context) -> None:
    """Recompute every fact and per-day count from the case histories (after changing the
    work time zone, or to check the aggregates against their definition)."""
    from mapserver.evaluation import aggregates

    with _connection(ctx) as conn, conn.transaction():
        facts, days = aggregates.rebuild(conn, ctx.settings.work_timezone)
        _audit_cli(conn, "eval.rebuild", "evaluation", facts=facts, day_rows=days)
    click.echo(f"{facts} facts, {days} day rows ({ctx.settings.work_timezone})")


COMMANDS = [evaluation]
