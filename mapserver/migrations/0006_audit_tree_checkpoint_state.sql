-- The tree state also remembers its latest checkpoint, so that appending entries needs no
-- scan of audit_checkpoint to decide whether the next checkpoint is due.

ALTER TABLE audit_tree ADD COLUMN checkpoint_size bigint NOT NULL DEFAULT 0;
ALTER TABLE audit_tree ADD COLUMN checkpoint_at timestamptz;
UPDATE audit_tree SET checkpoint_size = c.size, checkpoint_at = c.at
FROM (SELECT size, at FROM audit_checkpoint ORDER BY size DESC LIMIT 1) c;
