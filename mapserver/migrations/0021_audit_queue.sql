-- Queue, then sequence (as Certificate Transparency logs do): a request makes its audit entry
-- durable by inserting it into audit_queue, which takes no shared lock; the sequencer (one
-- per install, audit/sequencer.py) integrates queued entries into the Merkle tree in large
-- batches, copying them into audit_entry with their leaf index, and signs the checkpoints.
--
-- Nothing is ever removed from the queue. The sequencer remembers how far it has read as a
-- transaction snapshot horizon (audit_tree.queue_xmax and the transactions still running then,
-- queue_xip): every queue row carries the id of the transaction that inserted it, so a row
-- committed late, by a transaction that began before rows already integrated, is still found
-- the next time, and no row is integrated twice (audit_entry.queue_id is unique).

CREATE TABLE audit_queue (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    at          timestamptz NOT NULL,
    request_id  text NOT NULL DEFAULT '',
    account     text NOT NULL DEFAULT '',
    role        text NOT NULL DEFAULT '',
    cert_serial text NOT NULL DEFAULT '',
    cert_sha256 text NOT NULL DEFAULT '',
    client_addr text NOT NULL DEFAULT '',
    method      text NOT NULL DEFAULT '',
    resource    text NOT NULL DEFAULT '',
    action      text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'refused', 'error')),
    status      integer,
    bytes       bigint,
    latency_ms  double precision,
    detail      jsonb NOT NULL DEFAULT '{}',
    leaf_hash   bytea NOT NULL CHECK (length(leaf_hash) = 32)
);
CREATE INDEX audit_queue_txid_idx ON audit_queue (txid);

CREATE TRIGGER audit_queue_append_only BEFORE UPDATE OR DELETE ON audit_queue
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_queue_no_truncate BEFORE TRUNCATE ON audit_queue
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- The serving role appends to the queue and reads it; it can neither change nor remove a row.
REVOKE ALL ON audit_queue FROM PUBLIC, citygrid_app;
GRANT SELECT, INSERT ON audit_queue TO citygrid_app;

ALTER TABLE audit_entry ADD COLUMN queue_id bigint UNIQUE;

-- Where the sequencer has read up to: transactions from queue_xmax on, and those in
-- queue_xip, may still add rows it has not integrated. 0: everything (the queue is new).
ALTER TABLE audit_tree ADD COLUMN queue_xmax xid8 NOT NULL DEFAULT '0';
ALTER TABLE audit_tree ADD COLUMN queue_xip xid8[] NOT NULL DEFAULT '{}';
