-- Street supervision: an order ends when the bureau it went to can answer no more.
--
-- An order (督办) goes to the bureau the case is dispatched to. When the command centre
-- recalls the dispatch, the bureau returns the case, or the command centre feeds its handling
-- back (forward), that bureau can no longer answer, and the order stayed open for ever:
-- escalated once due, in the bureau's inbox, and answered by whichever bureau the case went
-- to next. Now such a step ends the case's open orders (ended_event: that history entry,
-- ended_at: its time). An order due before it ended still counts as escalated; an answer
-- answers only an open order to the answering bureau. A row still changes once: answered or
-- ended, never both. Answers given before this version stay as they were recorded.

ALTER TABLE case_order ADD COLUMN ended_event bigint REFERENCES case_event (id);
ALTER TABLE case_order ADD COLUMN ended_at timestamptz;
ALTER TABLE case_order ADD CONSTRAINT case_order_ended_check
    CHECK ((ended_event IS NULL) = (ended_at IS NULL)
           AND (kind = 'order' OR ended_event IS NULL)
           AND (answer_event IS NULL OR ended_event IS NULL)
           AND (answer IS NULL) = (answer_event IS NULL));

CREATE OR REPLACE FUNCTION case_order_answer_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR OLD.answer_event IS NOT NULL OR OLD.ended_event IS NOT NULL
       OR (OLD.id, OLD.case_id, OLD.event_id, OLD.kind, OLD.street_code, OLD.bureau, OLD.actor,
           OLD.at, OLD.message, OLD.due_at)
          IS DISTINCT FROM
          (NEW.id, NEW.case_id, NEW.event_id, NEW.kind, NEW.street_code, NEW.bureau, NEW.actor,
           NEW.at, NEW.message, NEW.due_at) THEN
        RAISE EXCEPTION 'case_order: an order is answered or ended once and never otherwise changed'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

DROP INDEX case_order_open_idx;
CREATE INDEX case_order_open_idx ON case_order (due_at)
    WHERE kind = 'order' AND answer_event IS NULL AND ended_event IS NULL;

-- Orders left open before this version end at the step that ended them.
UPDATE case_order o SET (ended_event, ended_at) = (
        SELECT e.id, e.at FROM case_event e
        WHERE e.case_id = o.case_id AND e.id > o.event_id AND e.transition IN ('return', 'recall', 'forward')
        ORDER BY e.id LIMIT 1)
    WHERE o.kind = 'order' AND o.answer_event IS NULL AND EXISTS (
        SELECT 1 FROM case_event e
        WHERE e.case_id = o.case_id AND e.id > o.event_id AND e.transition IN ('return', 'recall', 'forward'));
