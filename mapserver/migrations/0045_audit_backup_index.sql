-- The newest backup, found at once: GET /health and `citygrid config check` warn when the
-- install has not been backed up for two days (mapserver.pipeline_health). Backups are audited
-- acts (`backup.create`), a handful a day, so the index is small and costs nothing to other
-- entries' inserts but its predicate.

CREATE INDEX audit_entry_backup_idx ON audit_entry (at)
    WHERE action = 'backup.create' AND outcome = 'ok';
