"""gunicorn configuration for the renderer service of the secure zone (`citygrid renderer
serve`): TLS that requires a client certificate of CityGrid's CA, checked against the CRL in
the handshake; the app then accepts service certificates only (tiles/renderer_app.py).

`citygrid renderer serve` passes the file locations through CITYGRID_TLS_RENDERER_*.
"""

import os
import ssl

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


def ssl_context(config, default_ssl_context_factory):
    """The default context (certificate, key, CA, client certificate required) plus the
    CRL: a revoked service certificate fails the handshake. gunicorn builds the context for
    each connection, so a CRL the gateway pushed (PUT /crl) applies to the next handshake;
    the app checks every request against it too (kept-alive connections)."""
    from tiles.renderer_tls import with_crl

    return with_crl(default_ssl_context_factory(), os.environ.get("CITYGRID_TLS_RENDERER_CRL", ""))


def post_worker_init(worker):
    """Once the app is loaded: the tile channel (tiles.tile_channel) where one is bound, and
    fewer collector and GIL pauses (mapserver.worker_pauses)."""
    from mapserver import worker_pauses

    tile_bind = os.environ.get("CITYGRID_TLS_RENDERER_TILE_BIND", "")
    if tile_bind:
        from tiles import tile_channel

        tile_channel.start_in_worker(worker, tile_bind)
    worker_pauses.settle()


def worker_exit(server, worker):
    """A leaving worker commits its answers' entries written behind (the runs of tiles
    among them) and ships its audit spool (and what workers that died left), then integrates
    what it queued into the renderer's audit tree."""
    from audit import sequencer, spool
    from tiles import renderer_audit

    renderer_audit.drain_all()
    spool.close_all()
    sequencer.drain_all()


limit_request_line = 2048
limit_request_fields = 30
timeout = 60
graceful_timeout = 10
accesslog = None
errorlog = "-"
loglevel = "warning"
proc_name = "citygrid-renderer"
