"""Serving CityGrid over mutual TLS (or behind nginx)."""

from __future__ import annotations

from pathlib import Path

import click

from mapserver import cpu_latency as latency
from mapserver.commands.base import Context, pass_ctx, reports_errors

BEHIND_NGINX_WORKERS = 4  # single-threaded processes (auth/sync_worker.py; docs/performance.md)


def check_bindable(bind: str, option: str = "--bind") -> tuple[str, int]:
    """HOST:PORT that this machine can listen on now, checked before gunicorn starts: its
    own refusal is five retries and three log lines, then a worker-less exit."""
    import errno
    import socket

    from mapserver.errors import CityGridError
    from mapserver.serve import split_bind

    try:
        host, port = split_bind(bind)
    except CityGridError as exc:
        raise CityGridError(exc.message.replace("--bind", option, 1)) from None
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise CityGridError(f"{option} {bind}: no such host {host!r}") from None
    family, kind, proto, _, address = found[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            why = {
                errno.EADDRINUSE: "the port is in use (another server listens there)",
                errno.EADDRNOTAVAIL: "not an address of this machine",
                errno.EACCES: "not allowed (a port below 1024 needs root)",
            }.get(exc.errno or 0, exc.strerror or "cannot listen there")
            raise CityGridError(f"{option} {bind}: {why}") from None
    return host, port


# ---------------------------------------------------------------- serving


@click.command("serve")
@click.option(
    "--bind", default="127.0.0.1:8443", show_default=True, help="HOST:PORT (unix:PATH behind nginx)"
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes [default: 2 with TLS, each with --threads threads; "
    f"{BEHIND_NGINX_WORKERS} single-threaded behind nginx]",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="Threads per worker process (with TLS; behind nginx each process has one)",
)
@click.option(
    "--behind-nginx",
    is_flag=True,
    help="Plain HTTP on a Unix socket (--bind unix:PATH) for an nginx front that verifies "
    "client certificates.",
)
@click.option(
    "--socket-group",
    default="www-data",
    show_default=True,
    help="With --behind-nginx: nginx's group, the only one that may open the socket.",
)
@pass_ctx
@reports_errors
def serve(
    ctx: Context,
    bind: str,
    workers: int | None,
    threads: int,
    behind_nginx: bool,
    socket_group: str,
) -> None:
    """Serve CityGrid over TLS that requires a client certificate from CityGrid's CA."""
    import os

    from mapserver.serve import run

    if ctx.config_file:
        os.environ["CITYGRID_CONFIG"] = str(Path(ctx.config_file).resolve())
    if workers is None:
        workers = BEHIND_NGINX_WORKERS if behind_nginx else 2
    if not behind_nginx:
        check_bindable(bind)
    run(ctx.settings, bind, workers, threads, behind_nginx, socket_group)


@click.command("cpu-latency")
@click.option(
    "--us",
    type=click.IntRange(0, latency.MOST_US),
    default=0,
    show_default=True,
    help="Microseconds an idle CPU may take to wake (0: idle CPUs poll, never halt).",
)
@reports_errors
def cpu_latency(us: int) -> None:
    """Keep idle CPUs quick to wake until stopped (SIGTERM or Ctrl-C): a PM QoS request,
    for latency-bound hosts, virtual machines above all (docs/performance.md). Needs root."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    with latency.held(us):
        click.echo(
            f"citygrid: idle CPUs wake within {us} µs while this runs "
            f"(in force: {latency.current()} µs)",
        )
        try:
            while True:
                signal.pause()
        except KeyboardInterrupt:
            pass


COMMANDS = [serve, cpu_latency]
