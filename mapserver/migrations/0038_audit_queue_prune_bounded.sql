-- Pruning the audit queue in time that does not grow with the log (migration 0033 made it).
--
-- audit_queue_prune joined the queue to audit_entry by queue_id in id order, and PostgreSQL
-- merged the two from the start of audit_entry's queue_id index: every prune walked the
-- queue_id of every entry ever pruned before reaching the queue's oldest row (800,000 index
-- entries, 330 ms, for 2,000 rows on the benchmark database). The join now starts at the
-- queue's oldest row (15 ms for the same 2,000).
--
-- The check that a deleted row is held by the log (in the tree, under a signed checkpoint)
-- was a row trigger, a PL/pgSQL call and a look-up per row; it is now one statement-level
-- check over all the rows a DELETE removed (a transition table), refusing the whole
-- statement if any of them is not held, bounded below in the same way. UPDATE and
-- TRUNCATE are refused as before.

CREATE OR REPLACE FUNCTION audit_queue_prune(keep interval, most integer) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH gone AS (
        DELETE FROM audit_queue q
        USING (
            SELECT p.id FROM audit_queue p
            JOIN audit_entry e ON e.queue_id = p.id
            WHERE e.leaf_index < (SELECT checkpoint_size FROM audit_tree)
              AND e.queue_id >= (SELECT min(id) FROM audit_queue)
              AND p.at < now() - keep
            ORDER BY p.id
            LIMIT most
        ) d
        WHERE q.id = d.id
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;

CREATE FUNCTION audit_queue_held() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM gone g
        WHERE NOT EXISTS (
            SELECT 1 FROM audit_entry e
            WHERE e.queue_id = g.id
              AND e.queue_id >= (SELECT min(id) FROM gone)  -- as above: no plan walks the past
              AND e.leaf_index < (SELECT checkpoint_size FROM audit_tree)
        )
    ) THEN
        RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER audit_queue_append_only ON audit_queue;
CREATE TRIGGER audit_queue_no_update BEFORE UPDATE ON audit_queue
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();  -- migration 0004
CREATE TRIGGER audit_queue_held AFTER DELETE ON audit_queue
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION audit_queue_held();
DROP FUNCTION audit_queue_prunable();
