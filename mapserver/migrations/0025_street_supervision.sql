-- Street supervision (街道监督): a street office's reminders (提醒) and supervision orders
-- (督办) to the bureau handling a case. Each is a signed case event (transitions `remind`,
-- `order`, `answer` of mapserver.cases.flow, which leave the case in its state); this table
-- holds what the events alone do not: whom it went to, when an order's answer is due on the
-- work calendar, and the answer. An order not answered by its due time is escalated to the
-- command centre: that is computed on read (due_at < answered_at or now), never stored, so
-- it cannot be missed while a timer is down and needs no unsigned write.

CREATE TABLE case_order (
    id           bigserial PRIMARY KEY,
    case_id      bigint NOT NULL REFERENCES city_case (id),
    event_id     bigint NOT NULL UNIQUE REFERENCES case_event (id),
    kind         text NOT NULL CHECK (kind IN ('reminder', 'order')),
    street_code  char(9) NOT NULL,
    bureau       text REFERENCES organisation (code),
    actor        text NOT NULL,
    at           timestamptz NOT NULL,
    message      text NOT NULL CHECK (length(message) BETWEEN 1 AND 2000),
    due_at       timestamptz,
    answer_event bigint UNIQUE REFERENCES case_event (id),
    answered_at  timestamptz,
    answer       text,
    CHECK ((kind = 'order') = (due_at IS NOT NULL)),
    CHECK (kind = 'order' OR answer_event IS NULL),
    CHECK ((answer_event IS NULL) = (answered_at IS NULL))
);
CREATE INDEX case_order_case_idx ON case_order (case_id, id);
CREATE INDEX case_order_street_idx ON case_order (street_code, at);
CREATE INDEX case_order_open_idx ON case_order (due_at)
    WHERE kind = 'order' AND answer_event IS NULL;

-- An order is answered once; nothing else of a row ever changes, and rows are never removed.
CREATE FUNCTION case_order_answer_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR OLD.answer_event IS NOT NULL
       OR (OLD.id, OLD.case_id, OLD.event_id, OLD.kind, OLD.street_code, OLD.bureau, OLD.actor,
           OLD.at, OLD.message, OLD.due_at)
          IS DISTINCT FROM
          (NEW.id, NEW.case_id, NEW.event_id, NEW.kind, NEW.street_code, NEW.bureau, NEW.actor,
           NEW.at, NEW.message, NEW.due_at) THEN
        RAISE EXCEPTION 'case_order: an order is answered once and never otherwise changed'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER case_order_answer_once BEFORE UPDATE OR DELETE ON case_order
    FOR EACH ROW EXECUTE FUNCTION case_order_answer_once();
CREATE TRIGGER case_order_no_truncate BEFORE TRUNCATE ON case_order
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- The answer limit of an order is a limit like the stages' (default here, per class in
-- case_stage_class_limit), versioned with them by application maintenance (0026).
ALTER TABLE case_stage_limit DROP CONSTRAINT case_stage_limit_stage_check;
ALTER TABLE case_stage_limit ADD CONSTRAINT case_stage_limit_stage_check
    CHECK (stage IN ('accept', 'file', 'dispatch', 'handle', 'forward', 'check', 'order_reply'));
INSERT INTO case_stage_limit (stage, amount, unit) VALUES ('order_reply', 4, 'working_hours');

-- Street statistics read a street's cases of a period (mapserver.cases.street_stats).
CREATE INDEX city_case_street_created_idx ON city_case (street_code, created_at);

REVOKE DELETE, TRUNCATE ON case_order FROM citygrid_app;
