"""Warm tiles/s through the whole gateway vs plain servers of the same file, in one run.

Targets (same cached 1:500 tiles, the client keeps its connections open, `--clients` at once):
- gateway: `citygrid serve` (mTLS with CRL check, certificate → account, policy, Redis rate
  limit, audit entry per request), the shipped gunicorn configuration;
- queue-audit: the same with `audit_durability = "database"`: each request waits for its
  entry's commit to the database queue instead of its flush to the host's spool file;
- no-audit: the same app and configuration with the audit write a no-op (bench/apps);
- behind-nginx: `citygrid serve --behind-nginx` behind the shipped nginx template;
- nginx-no-audit: the same with the audit write a no-op (bench/apps);
- nginx-bare: the same nginx and server shape (`citygrid serve --behind-nginx`'s gunicorn
  configuration and worker) in front of an app that does nothing but answer
  X-Accel-Redirect (bench/apps): the ceiling of any app behind nginx on this machine;
- nginx: nginx serving the cache files itself over mTLS (`ssl_verify_client on`, CityGrid's
  CA and CRL, keep-alive): what a plain secure file server does on this machine;
- tls-wsgi: gunicorn serving the same files over TLS with none of CityGrid's checks;
- bare-wsgi: gunicorn, 2 sync workers, plain HTTP, the same files, no checks at all.

The load comes from curl's parallel mode (C, one process, connections reused), so that the
client is not what limits the fast targets; `--client python` uses threads of http.client.
Each request's time is recorded: p50 and p99 are printed per target. All targets run at
once and are measured in `--rounds` alternating turns (seconds / rounds each), so that other
load on a shared machine falls on every target alike and the ratios stay comparable. Each
target's turns are also charged with the CPU the machine's processes used meanwhile, by kind
(the app, nginx, the database, Redis, the client: bench/cpu_use.py), printed per request.

Each run serves a fresh copy of the benchmark's district database (as every bench does:
bench_settings), so that its audit log starts alike in every run.

Usage: python bench/gateway.py [--area-km2 4] [--seconds 10] [--clients 8] [--rounds 5]
       [--only a,b]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import dataclasses
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import NamedTuple

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import db
from mapserver.commands.serving import BEHIND_NGINX_WORKERS
from mapserver.serve import GUNICORN_CONF, TlsFiles, prepare_tls
from tiles.service import TileService
from tiles.tile_grid import TileRange

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# The project's folder first, this one after it: bench/audit.py and bench/tiles.py must not hide
# the audit and tiles packages (an editable install's finder comes after sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))
from cpu_use import ORDER, per_request, snapshot, spent  # noqa: E402
from tiles_bench_support import bench_settings, free_port, wait_port  # noqa: E402

SECRET = "gateway benchmark passphrase"
TARGETS = (
    "gateway",
    "queue-audit",
    "no-audit",
    "behind-nginx",
    "nginx-no-audit",
    "nginx-bare",
    "nginx",
    "tls-wsgi",
    "bare-wsgi",
)
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_GROUP = "nogroup"


class Result(NamedTuple):
    rate: float  # requests per second
    p50_ms: float
    p99_ms: float
    count: int
    times: list[float]  # each request's time, ms


class Client(NamedTuple):
    scheme: str  # "https" or "http"
    ca: Path
    cert: Path
    key: Path


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def load_python(
    port: int, paths: list[str], client: Client, clients: int, seconds: float
) -> Result:
    """`clients` threads, each on one kept-alive http.client connection."""
    times: list[list[float]] = [[] for _ in range(clients)]
    stop = time.monotonic() + seconds
    errors: list[BaseException] = []

    def run(i: int) -> None:
        if client.scheme == "https":
            ctx = ssl.create_default_context(cafile=str(client.ca))
            ctx.load_cert_chain(str(client.cert), str(client.key))
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", port, context=ctx, timeout=30
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = i
        try:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                conn.request("GET", paths[n % len(paths)])
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}")
                times[i].append(time.perf_counter() - t0)
                n += clients
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    if errors:
        raise RuntimeError(f"load failed: {errors[0]!r}")
    flat = [x * 1000 for ts in times for x in ts]
    return Result(
        len(flat) / elapsed, _percentile(flat, 0.5), _percentile(flat, 0.99), len(flat), flat
    )


def load_curl(
    port: int, paths: list[str], client: Client, clients: int, count: int, workdir: Path
) -> Result:
    """`count` requests by curl's parallel mode, `clients` at a time on reused connections."""
    config = workdir / "curl.conf"
    with config.open("w") as fh:
        for n in range(count):
            fh.write(f'url = "{client.scheme}://127.0.0.1:{port}{paths[n % len(paths)]}"\n')
            fh.write("output = /dev/null\n")
    cmd = ["curl", "-sS", "-Z", "--parallel-immediate", "--parallel-max", str(clients)]
    cmd += ["-K", str(config), "-w", "%{http_code} %{time_total}\\n"]
    if client.scheme == "https":
        cmd += ["--cacert", str(client.ca), "--cert", str(client.cert), "--key", str(client.key)]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    lines = done.stdout.split()
    codes, secs = lines[0::2], lines[1::2]
    bad = [c for c in codes if c != "200"]
    if done.returncode or bad or len(codes) != count:
        raise RuntimeError(
            f"curl: exit {done.returncode}, {len(codes)} answers, {len(bad)} not 200"
            f" ({sorted(set(bad))[:3]}): {done.stderr[:300]}"
        )
    ms = [float(s) * 1000 for s in secs]
    return Result(count / elapsed, _percentile(ms, 0.5), _percentile(ms, 0.99), count, ms)


def warm(
    port: int, paths: list[str], client: Client, args: argparse.Namespace, workdir: Path
) -> float:
    """Warm up on fresh connections three times, so that every worker has served (each
    builds its tile service on its first request); the last warm-up's rate."""
    if args.client == "python":
        return load_python(port, paths, client, args.clients, 1.0).rate
    for _ in range(3):
        rate = load_curl(port, paths, client, args.clients, 400, workdir).rate
    return rate


def measure(
    port: int,
    paths: list[str],
    client: Client,
    args: argparse.Namespace,
    workdir: Path,
    seconds: float,
    rate: float,
) -> list[Result]:
    """Chunks of about 2 s each until `seconds` have passed (a slow start never makes a run
    short); each chunk opens its `clients` connections anew."""
    if args.client == "python":
        return [load_python(port, paths, client, args.clients, seconds)]
    done: list[Result] = []
    spent = 0.0
    while spent < seconds:
        chunk = load_curl(port, paths, client, args.clients, max(200, int(rate * 2)), workdir)
        done.append(chunk)
        rate, spent = chunk.rate, spent + chunk.count / chunk.rate
    return done


def combined(chunks: list[Result]) -> Result:
    count = sum(r.count for r in chunks)
    spent = sum(r.count / r.rate for r in chunks)
    ms = sorted(t for r in chunks for t in r.times)
    return Result(count / spent, _percentile(ms, 0.5), _percentile(ms, 0.99), count, ms)


# ------------------------------------------------------------------------ the targets


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_unix(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the app did not start")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {path}")


def _nginx_conf(tmp: Path, server: str) -> Path:
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""user nobody {NGINX_GROUP};
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{server}
}}
"""
    )
    return conf


def _start_nginx(conf: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [NGINX, "-c", str(conf), "-g", "daemon off;"],
        start_new_session=True,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc


def _sizes(env: dict[str, str]) -> list[str]:
    """`citygrid serve`'s worker and thread counts, as the other CityGrid targets get them."""
    return ["--workers", env["CITYGRID_TLS_WORKERS"], "--threads", env["CITYGRID_TLS_THREADS"]]


def _nginx_sizes(env: dict[str, str]) -> list[str]:
    """`--workers` behind nginx if `--nginx-workers` asked for it, else citygrid serve's."""
    return ["--workers", env["BENCH_NGINX_WORKERS"]] if "BENCH_NGINX_WORKERS" in env else []


@contextmanager
def target(
    name: str, port: int, env: dict[str, str], files: TlsFiles, settings_dir: Path, tile_dir: Path
) -> Iterator[None]:
    """Start `name` listening on `port`; stopped on leaving."""
    gunicorn = str(shutil.which("gunicorn", path=str(Path(sys.executable).parent)))
    tls = {
        "CITYGRID_TLS_CERT": str(files.cert),
        "CITYGRID_TLS_KEY": str(files.key),
        "CITYGRID_TLS_CA": str(files.ca),
        "CITYGRID_TLS_CRL": str(files.crl),
    }
    procs: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str], extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            cmd, env={**env, **(extra or {})}, start_new_session=True, stderr=subprocess.DEVNULL
        )
        procs.append(proc)
        return proc

    try:
        if name == "gateway":
            cmd = [sys.executable, "-m", "mapserver.cli", "serve", "--bind", f"127.0.0.1:{port}"]
            start([*cmd, *_sizes(env)])
            wait_port(port)
        elif name == "queue-audit":  # the audit entry committed to the database queue
            cmd = [sys.executable, "-m", "mapserver.cli", "serve", "--bind", f"127.0.0.1:{port}"]
            start([*cmd, *_sizes(env)], {"CITYGRID_AUDIT_DURABILITY": "database"})
            wait_port(port)
        elif name == "no-audit":  # the same gunicorn configuration, audit write a no-op
            cmd = [gunicorn, "-c", str(GUNICORN_CONF), "--chdir", str(HERE / "apps")]
            start(
                [*cmd, "gateway_noaudit:create()"],
                {**tls, "CITYGRID_TLS_BIND": f"127.0.0.1:{port}"},
            )
            wait_port(port)
        elif name in ("behind-nginx", "nginx-no-audit", "nginx-bare"):
            sock_dir = Path(tempfile.mkdtemp(prefix="citygrid-bench-"))
            sock_dir.chmod(0o711)
            sock = sock_dir / "app.sock"
            if name == "behind-nginx":
                app = start(
                    [sys.executable, "-m", "mapserver.cli", "serve", "--behind-nginx"]
                    + ["--bind", f"unix:{sock}", "--socket-group", NGINX_GROUP]
                    + _nginx_sizes(env)
                )
            else:  # what `citygrid serve --behind-nginx` runs: the audit a no-op, or no app
                cmd = [gunicorn, "-c", str(GUNICORN_CONF), "--chdir", str(HERE / "apps")]
                wsgi = "gateway_noaudit:create()"
                if name == "nginx-bare":
                    wsgi = "gateway_baseline:accel_app"
                app = start(
                    [*cmd, wsgi],
                    {
                        "CITYGRID_TLS_BIND": f"unix:{sock}",
                        "CITYGRID_TLS_BEHIND_NGINX": "1",
                        "CITYGRID_TLS_SOCKET_GROUP": NGINX_GROUP,
                        "CITYGRID_TLS_WORKERS": env.get("BENCH_NGINX_WORKERS")
                        or str(BEHIND_NGINX_WORKERS),
                    },
                )
            server = subprocess.run(
                [str(REPO / "deploy/nginx/render.sh"), f"127.0.0.1:{port}", "127.0.0.1"]
                + [str(settings_dir / "pki"), str(sock), str(tile_dir)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            _wait_unix(sock, app)
            procs.append(_start_nginx(_nginx_conf(sock_dir, server), port))
        elif name == "nginx":
            tmp = Path(tempfile.mkdtemp(prefix="citygrid-bench-"))
            tmp.chmod(0o711)
            server = f"""    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {files.cert};
        ssl_certificate_key {files.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_client_certificate {files.ca};
        ssl_verify_client on;
        ssl_verify_depth 1;
        ssl_crl {files.crl};
        location /tiles/ {{
            alias {tile_dir}/;
            default_type image/png;
        }}
    }}"""
            procs.append(_start_nginx(_nginx_conf(tmp, server), port))
        elif name == "tls-wsgi":
            cmd = [gunicorn, "-k", "gthread", "-w", "2", "--threads", "8"]
            cmd += ["--certfile", str(files.cert), "--keyfile", str(files.key)]
            cmd += ["--bind", f"127.0.0.1:{port}", "--chdir", str(HERE / "apps")]
            start([*cmd, "gateway_baseline:app"])
            wait_port(port)
        elif name == "bare-wsgi":
            cmd = [gunicorn, "-k", "sync", "-w", "2", "--bind", f"127.0.0.1:{port}"]
            start([*cmd, "--chdir", str(HERE / "apps"), "gateway_baseline:app"])
            wait_port(port)
        else:
            raise ValueError(f"unknown target {name}")
        yield
    finally:
        for proc in reversed(procs):
            _stop(proc)


@contextmanager
def sequencer_service(env: dict[str, str]) -> Iterator[None]:
    """`citygrid audit sequencer` for the bench database, leading before any server starts."""
    cmd = [sys.executable, "-m", "mapserver.cli", "audit", "sequencer"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()  # "audit sequencer: leading"
        if "leading" not in line:
            raise SystemExit(f"the sequencer service did not lead: {line!r}")
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area-km2", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating turns the targets are measured in"
    )
    parser.add_argument("--client", choices=("curl", "python"), default="curl")
    parser.add_argument("--only", default=",".join(TARGETS), help="targets, comma-separated")
    parser.add_argument("--workers", type=int, default=None, help="CityGrid's gunicorn workers")
    parser.add_argument("--threads", type=int, default=None, help="threads per worker")
    parser.add_argument(
        "--nginx-workers",
        type=int,
        default=None,
        help="behind nginx: single-threaded worker processes (default: citygrid serve's)",
    )
    parser.add_argument(
        "--sequencer-service",
        action="store_true",
        help="run `citygrid audit sequencer` beside the servers, as deployed with "
        "citygrid-sequencer.service (by default a serving worker sequences)",
    )
    args = parser.parse_args()
    chosen = [t for t in args.only.split(",") if t]
    unknown = set(chosen) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    base = bench_settings(args.area_km2)
    settings = dataclasses.replace(base, data_dir=Path(tempfile.mkdtemp()))
    settings.data_dir.chmod(0o755)  # nginx's workers read the cache and CA files
    store = CaStore(settings.pki_dir)
    store.init(SECRET.encode())
    out = settings.data_dir / "certs"
    who = f"bench-{uuid.uuid4().hex[:8]}"  # issued certificates stay in the register
    with db.transaction(settings) as conn:
        accounts.add(conn, who, ["operator"])
        certs.issue(conn, store, SECRET.encode(), who, pki.Kind.PERSON, out)
    os.environ["CITYGRID_CA_PASSPHRASE"] = SECRET
    files = prepare_tls(settings, "127.0.0.1")

    svc = TileService.from_settings(settings)
    z = svc.grid.z_of_scale(500)
    assert svc.extent is not None
    e = svc.extent
    x, y, _, _ = svc.grid.locate(z, (e.minx + e.maxx) / 2, (e.miny + e.maxy) / 2)
    rng = TileRange(z, x, y, x + 15, y + 15)
    for mx, my in svc.grid.metatiles(rng, svc.metatile):
        svc.render("topo500", z, mx, my)
    paths = [f"/tiles/topo500/{z}/{tx}/{ty}.png" for tx, ty in rng.tiles()]
    for p in settings.data_dir.rglob("*"):  # nginx's workers (nobody) read them
        p.chmod(p.stat().st_mode | (0o755 if p.is_dir() else 0o644))

    env = {
        **os.environ,
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
        "CITYGRID_RATE_LIMIT_TILES": "*=100000000/hour",
        "BENCH_TILE_DIR": str(settings.tile_dir),
    }
    if args.workers:
        env["CITYGRID_TLS_WORKERS"] = str(args.workers)
    if args.threads:
        env["CITYGRID_TLS_THREADS"] = str(args.threads)
    if args.nginx_workers:
        env["BENCH_NGINX_WORKERS"] = str(args.nginx_workers)
    env.setdefault("CITYGRID_TLS_WORKERS", "2")
    env.setdefault("CITYGRID_TLS_THREADS", "8")
    cert, key = out / f"{who}.crt", out / f"{who}.key"
    results: dict[str, Result] = {}
    workdir = Path(tempfile.mkdtemp(prefix="citygrid-bench-load-"))
    # All targets run at once and are measured in `rounds` alternating turns, so that the
    # machine's other load (a shared machine) falls on each of them alike.
    with ExitStack() as running:
        if args.sequencer_service:
            running.enter_context(sequencer_service(env))
        ports: dict[str, tuple[int, Client]] = {}
        rates: dict[str, float] = {}
        for name in chosen:
            port = free_port()
            client = Client("http" if name == "bare-wsgi" else "https", files.ca, cert, key)
            running.enter_context(
                target(name, port, env, files, settings.data_dir, settings.tile_dir)
            )
            ports[name] = (port, client)
        for name, (port, client) in ports.items():
            rates[name] = warm(port, paths, client, args, workdir)
        chunks: dict[str, list[Result]] = {name: [] for name in chosen}
        cpu: dict[str, dict[str, float]] = {name: dict.fromkeys(ORDER, 0.0) for name in chosen}
        for turn in range(args.rounds):
            for name in chosen if turn % 2 == 0 else chosen[::-1]:
                port, client = ports[name]
                before = snapshot()
                done = measure(
                    port, paths, client, args, workdir, args.seconds / args.rounds, rates[name]
                )
                for kind, seconds in spent(before, snapshot()).items():
                    cpu[name][kind] += seconds
                chunks[name] += done
                rates[name] = done[-1].rate
    for name in chosen:
        results[name] = r = combined(chunks[name])
        print(
            f"{name:12s}: {r.rate:8.0f} tiles/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms"
            f"  ({r.count} requests, c={args.clients})",
            flush=True,
        )
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("CPU per request by kind of process during each target's turns, µs (bench/cpu_use.py):")
    print(f"{'':12s}  " + "".join(f"{kind:>9s}" for kind in (*ORDER, "all")))
    for name in chosen:
        used = per_request(cpu[name], results[name].count)
        print(f"{name:12s}  " + "".join(f"{used[kind]:9.0f}" for kind in (*ORDER, "all")))

    ratio: Callable[[str, str], str] = lambda a, b: (  # noqa: E731
        f"{results[a].rate / results[b].rate:.3f}" if a in results and b in results else "-"
    )
    print(f"full path (direct mTLS) / nginx mTLS:    {ratio('gateway', 'nginx')}")
    print(f"full path (behind nginx) / nginx mTLS:   {ratio('behind-nginx', 'nginx')}")
    print(f"  (no app behind nginx / nginx mTLS:     {ratio('nginx-bare', 'nginx')})")
    print(f"  (behind nginx / no app behind nginx:   {ratio('behind-nginx', 'nginx-bare')})")
    print(f"full path (direct mTLS) / bare WSGI:     {ratio('gateway', 'bare-wsgi')}")
    print(f"full path (direct mTLS) / TLS WSGI:      {ratio('gateway', 'tls-wsgi')}")
    print(f"audit on / audit as a no-op:             {ratio('gateway', 'no-audit')}")
    print(f"  (audit to the database queue / no-op:  {ratio('queue-audit', 'no-audit')})")
    print(f"  (behind nginx, audit on / no-op:       {ratio('behind-nginx', 'nginx-no-audit')})")
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(settings.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
