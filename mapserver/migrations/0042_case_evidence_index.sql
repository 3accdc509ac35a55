-- A case's evidence is found in the audit log by the case: the entry of a partner's request
-- (detail.open311) and the entries of the case's exports (detail.case_head: the case's
-- version and state as the export read them, which shows that its bundle left no event
-- out). Both were found by a scan of the whole log. Only such entries carry these keys, so
-- the indexes stay small and tile requests never touch them.

CREATE INDEX audit_entry_open311_idx ON audit_entry (resource, leaf_index)
    WHERE detail ? 'open311';
CREATE INDEX audit_entry_case_head_idx ON audit_entry (resource, leaf_index)
    WHERE detail ? 'case_head';
