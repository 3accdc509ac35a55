-- The database's own time of each queued audit entry. An entry's `at` is its serving host's
-- clock; GET /health and `citygrid config check` judge how long entries have waited for the
-- sequencer (mapserver.pipeline_health), and a host whose clock ran ahead hid its entries'
-- wait (a day ahead: no wait at all). `queued_at` is set by the database as the row is
-- inserted (now(): the inserting transaction's start), whatever the host's clock says.
-- now() is stable, so existing rows take the migration's time without a rewrite.

ALTER TABLE audit_queue ADD COLUMN queued_at timestamptz NOT NULL DEFAULT now();
