"""gunicorn configuration for CityGrid: TLS that requires a client certificate from
CityGrid's CA and checks the CRL in the handshake.

`citygrid serve` passes the file locations through CITYGRID_TLS_* environment variables;
the CRL is re-read whenever its file changes, so a newly published CRL takes effect for the
next connection without a restart.
"""

import os
import ssl

bind = os.environ.get("CITYGRID_TLS_BIND", "127.0.0.1:8443")
if os.environ.get("CITYGRID_TLS_BEHIND_NGINX") == "1":
    # Behind nginx, which buffers the clients: single-threaded processes, refusals audited,
    # JSON answers for what gunicorn refuses itself, no Server header (auth/sync_worker.py).
    worker_class = "auth.sync_worker.AuditingSyncWorker"
    threads = 1
else:
    # Handshakes in the poller with a timeout, refusals audited, JSON answers for what
    # gunicorn refuses itself, no Server header (see auth/tls_worker.py).
    worker_class = "auth.tls_worker.AuditingThreadWorker"
    threads = int(os.environ.get("CITYGRID_TLS_THREADS", "8"))
    # Idle connections wait in the poller, not on a thread, as long as nginx's default keeps
    # them: a handheld over mobile data pays two round trips and a client-certificate
    # handshake for each new one, and gunicorn's 2 s would close it between two taps.
    keepalive = 75
http_protocols = "h1"  # the worker's answers and header rules are HTTP/1.1's
workers = int(os.environ.get("CITYGRID_TLS_WORKERS", "2"))
# The workers' heartbeat files on tmpfs: gunicorn touches one per request (CITYGRID_TLS_
# WORKER_TMP_DIR= empty: gunicorn's default, the system's temporary directory).
worker_tmp_dir = (
    os.environ.get("CITYGRID_TLS_WORKER_TMP_DIR", "/dev/shm" if os.path.isdir("/dev/shm") else "")
    or None
)
if os.environ.get("CITYGRID_TLS_CERT"):
    certfile = os.environ["CITYGRID_TLS_CERT"]
    keyfile = os.environ["CITYGRID_TLS_KEY"]
    ca_certs = os.environ["CITYGRID_TLS_CA"]
    cert_reqs = ssl.CERT_REQUIRED
# else: behind nginx, plain HTTP on a Unix socket only nginx's group may open; the app
# believes the forwarded certificate header on that socket alone.
if bind.startswith("unix:"):
    umask = 0o117  # the socket is rw for owner and group (nginx's), nothing for others


def when_ready(server):
    """Hand the Unix socket to nginx's group (it is 0660 from the start: umask above)."""
    group = os.environ.get("CITYGRID_TLS_SOCKET_GROUP")
    if bind.startswith("unix:") and group:
        import grp

        os.chown(bind[len("unix:") :], -1, grp.getgrnam(group).gr_gid)


def post_worker_init(worker):
    """Once the app is loaded: its objects out of the collector's reach, a shorter GIL
    switch interval (mapserver.worker_pauses: the requests' tail)."""
    from mapserver import worker_pauses

    worker_pauses.settle()


def worker_exit(server, worker):
    """A leaving worker ships its audit spool, and the files of workers that died before it
    (audit.spool.close_all), then integrates what it queued into the audit tree (and
    checkpoints the tail) if no other process leads the sequencer; else the leader does."""
    from audit import sequencer, spool

    spool.close_all()
    sequencer.drain_all()


limit_request_line = 2048
limit_request_fields = 50
limit_request_field_size = 8190
timeout = 60
graceful_timeout = 10
accesslog = None  # access is recorded in CityGrid's audit log
errorlog = "-"
loglevel = "warning"
proc_name = "citygrid"

_CRL = os.environ.get("CITYGRID_TLS_CRL", "")
_cache: dict = {}


def _stamp(path):
    try:
        st = os.stat(path)
        return (st.st_mtime_ns, st.st_size)
    except OSError:
        return None


def ssl_context(conf, default_ssl_context_factory):
    """One context per CRL version: rebuilt only when the CRL file changes."""
    key = (_stamp(_CRL), _stamp(conf.ca_certs), _stamp(conf.certfile))
    context = _cache.get(key)
    if context is None:
        context = default_ssl_context_factory()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        if _CRL:
            # Without a CRL every handshake fails: revocation checking never silently stops.
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
            if key[0] is not None:
                context.load_verify_locations(cafile=_CRL)
        _cache.clear()
        _cache[key] = context
    return context
