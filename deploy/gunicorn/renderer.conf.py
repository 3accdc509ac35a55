"""gunicorn configuration for the renderer service of the secure zone (`citygrid renderer
serve`): TLS that requires a client certificate of CityGrid's CA, checked against the CRL in
the handshake; the app then accepts service certificates only (tiles/renderer_app.py).

`citygrid renderer serve` passes the file locations through CITYGRID_TLS_RENDERER_*.
"""

import os
import ssl
from pathlib import Path

bind = os.environ.get("CITYGRID_TLS_RENDERER_BIND", "127.0.0.1:8444")
# The gateway's worker (auth/tls_worker.py): handshakes in the poller with a timeout, and
# each refused handshake (revoked, foreign, expired certificate) an entry of the renderer's
# own audit log, written as its audit role (`renderer serve` sets CITYGRID_APP_DATABASE_URL).
worker_class = "auth.tls_worker.AuditingThreadWorker"
http_protocols = "h1"
workers = int(os.environ.get("CITYGRID_TLS_RENDERER_WORKERS", "2"))
threads = int(os.environ.get("CITYGRID_TLS_RENDERER_THREADS", "8"))
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
certfile = os.environ["CITYGRID_TLS_RENDERER_CERT"]
keyfile = os.environ["CITYGRID_TLS_RENDERER_KEY"]
ca_certs = os.environ["CITYGRID_TLS_RENDERER_CA"]
cert_reqs = ssl.CERT_REQUIRED
keepalive = 75  # the gateway keeps one connection per thread open


def _current_crl(path):
    """The CRL file if it is current. A stale or missing CRL is left out of the handshake,
    so the app can answer 503 naming the reason (and take the push of a fresh one) instead
    of every handshake failing; the app refuses everything else meanwhile."""
    import datetime as dt

    from cryptography import x509

    try:
        crl = x509.load_pem_x509_crl(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    nxt = crl.next_update_utc
    return path if nxt is not None and dt.datetime.now(dt.UTC) < nxt else None


def ssl_context(config, default_ssl_context_factory):
    """The default context (certificate, key, CA, client certificate required) plus the
    CRL: a revoked service certificate fails the handshake. gunicorn builds the context for
    each connection, so a CRL the gateway pushed (PUT /crl) applies to the next handshake;
    the app checks every request against it too (kept-alive connections)."""
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    crl = _current_crl(os.environ.get("CITYGRID_TLS_RENDERER_CRL", ""))
    if crl:
        context.load_verify_locations(cafile=crl)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def post_worker_init(worker):
    """Once the app is loaded: fewer collector and GIL pauses (mapserver.worker_pauses)."""
    from mapserver import worker_pauses

    worker_pauses.settle()


def worker_exit(server, worker):
    """A leaving worker integrates what it queued into the renderer's audit tree."""
    from audit import sequencer

    sequencer.drain_all()


limit_request_line = 2048
limit_request_fields = 30
timeout = 60
graceful_timeout = 10
accesslog = None
errorlog = "-"
loglevel = "warning"
proc_name = "citygrid-renderer"
