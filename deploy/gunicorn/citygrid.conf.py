"""gunicorn configuration for CityGrid: TLS that requires a client certificate from
CityGrid's CA and checks the CRL in the handshake.

`citygrid serve` passes the file locations through CITYGRID_TLS_* environment variables;
the CRL is re-read whenever its file changes, so a newly published CRL takes effect for the
next connection without a restart.
"""

import os
import ssl

import gunicorn.http.wsgi

# No server banner with a version.
gunicorn.http.wsgi.SERVER = "CityGrid"

bind = os.environ.get("CITYGRID_TLS_BIND", "127.0.0.1:8443")
worker_class = "auth.tls_worker.AuditingThreadWorker"
workers = int(os.environ.get("CITYGRID_TLS_WORKERS", "2"))
threads = int(os.environ.get("CITYGRID_TLS_THREADS", "8"))
if os.environ.get("CITYGRID_TLS_CERT"):
    certfile = os.environ["CITYGRID_TLS_CERT"]
    keyfile = os.environ["CITYGRID_TLS_KEY"]
    ca_certs = os.environ["CITYGRID_TLS_CA"]
    cert_reqs = ssl.CERT_REQUIRED
    do_handshake_on_connect = True
# else: behind nginx, plain HTTP on loopback; the app trusts only CITYGRID_TRUSTED_PROXIES.
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
