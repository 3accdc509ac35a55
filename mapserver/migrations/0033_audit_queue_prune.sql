-- Pruning the audit queue. A queued entry that the sequencer has integrated into the tree
-- (audit_entry.queue_id names it) and that a signed checkpoint covers (its leaf index is
-- below audit_tree.checkpoint_size) is held by the log itself: its queue row is a copy. Such
-- rows may now be deleted, so the queue does not grow forever; any other deletion, every
-- update and TRUNCATE are still refused to everyone, so no entry can leave the queue before
-- it is in the tree under a checkpoint.
--
-- The serving and audit roles get no DELETE privilege: they call audit_queue_prune, which
-- deletes only such rows (the oldest first, at most `most`, queued longer ago than `keep`).

CREATE FUNCTION audit_queue_prunable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (
        SELECT 1 FROM audit_entry e
        WHERE e.queue_id = OLD.id
          AND e.leaf_index < (SELECT checkpoint_size FROM audit_tree)
    ) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

DROP TRIGGER audit_queue_append_only ON audit_queue;
CREATE TRIGGER audit_queue_append_only BEFORE UPDATE OR DELETE ON audit_queue
    FOR EACH ROW EXECUTE FUNCTION audit_queue_prunable();

CREATE FUNCTION audit_queue_prune(keep interval, most integer) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH gone AS (
        DELETE FROM audit_queue q
        USING (
            SELECT p.id FROM audit_queue p
            JOIN audit_entry e ON e.queue_id = p.id
            WHERE e.leaf_index < (SELECT checkpoint_size FROM audit_tree)
              AND p.at < now() - keep
            ORDER BY p.id
            LIMIT most
        ) d
        WHERE q.id = d.id
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;

REVOKE ALL ON FUNCTION audit_queue_prune(interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_queue_prune(interval, integer) TO citygrid_app;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'citygrid_audit') THEN
        GRANT EXECUTE ON FUNCTION audit_queue_prune(interval, integer) TO citygrid_audit;
    END IF;
END
$$;
