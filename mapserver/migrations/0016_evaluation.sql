-- Comprehensive evaluation (综合评价): what each case's history counts for, kept per day.
--
-- One definition, the view eval_fact, says which counted units ("facts") a case's history
-- holds: a report, a verification, a check, a filing, a dispatch to a bureau and what became
-- of it, a closing... Each fact has a measure, a subject (inspector account, bureau code,
-- centre, street/community/grid code) and the day (in the install's zone) of the event that
-- started the unit: a bureau's handling counts on the day the case was dispatched to it, a
-- closing on the day the case was filed. Facts only ever appear, never go away, so:
--
-- * case_fact holds every fact once (for drilling down from a figure to its cases);
-- * case_day_fact holds their counts per day, subject and measure (for indicators);
-- * a trigger on case_event adds the new facts of the event's case in the same transaction;
-- * `citygrid eval rebuild` recomputes both from the view (the same definition).

CREATE TABLE eval_setting (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    timezone text NOT NULL DEFAULT 'Asia/Shanghai'  -- days are counted in this zone
);
INSERT INTO eval_setting DEFAULT VALUES;

-- Grade thresholds and weights, versioned: a new version per signed change, never updated.
CREATE TABLE eval_config (
    version       integer PRIMARY KEY CHECK (version > 0),
    config        jsonb NOT NULL,
    account       text NOT NULL,
    signed_action bigint REFERENCES signed_action (id),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER eval_config_append_only BEFORE UPDATE OR DELETE ON eval_config
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER eval_config_no_truncate BEFORE TRUNCATE ON eval_config
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

CREATE TABLE case_fact (
    unit         bigint NOT NULL,  -- the case_event that started the counted unit
    measure      text NOT NULL,
    subject_kind text NOT NULL CHECK (subject_kind IN ('inspector', 'bureau', 'centre',
                                                        'street', 'community', 'grid')),
    subject      text NOT NULL,
    case_id      bigint NOT NULL,
    day          date NOT NULL,
    PRIMARY KEY (unit, measure, subject_kind, subject)
);
CREATE INDEX case_fact_subject_idx ON case_fact (subject_kind, subject, measure, day);

CREATE TABLE case_day_fact (
    subject_kind text NOT NULL,
    day          date NOT NULL,
    subject      text NOT NULL,
    measure      text NOT NULL,
    n            bigint NOT NULL CHECK (n > 0),
    PRIMARY KEY (subject_kind, day, subject, measure)
);

-- The facts of every case's history. Window functions are partitioned by case, so a query
-- for one case (the trigger's) reads that case's events only.
CREATE VIEW eval_fact AS
WITH ev AS (
    SELECT e.id, e.case_id, e.actor, e.transition, e.from_state, e.on_time,
           coalesce(e.parameters ->> 'decision', '') AS decision,
           e.parameters ->> 'bureau' AS bureau,
           (e.at AT TIME ZONE s.timezone)::date AS day,
           s.timezone,
           min(e.id) OVER w AS created,
           max(e.id) FILTER (WHERE e.transition = 'dispatch') OVER w AS assignment,
           max(e.id) FILTER (WHERE e.transition = 'file') OVER w AS filing,
           bool_and(coalesce(e.on_time, true)) OVER w AS all_on_time
    FROM case_event e CROSS JOIN eval_setting s
    WINDOW w AS (PARTITION BY e.case_id ORDER BY e.id)
), f AS (
    -- nth: the first handling, failed check or approved postponement of an assignment
    SELECT ev.*, row_number() OVER (
               PARTITION BY ev.case_id, ev.assignment, ev.transition, ev.decision ORDER BY ev.id
           ) AS nth
    FROM ev
)
SELECT x.unit, x.measure, x.subject_kind, x.subject, f.case_id, x.day
FROM f
JOIN city_case c ON c.id = f.case_id
LEFT JOIN case_event d ON d.id = f.assignment
LEFT JOIN case_event fl ON fl.id = f.filing
CROSS JOIN LATERAL (
    SELECT f.id, 'reports', 'inspector', c.reporter, f.day
        WHERE f.transition = 'create' AND c.source = 'inspector'
    UNION ALL
    SELECT f.created, 'reports_valid', 'inspector', c.reporter,
           (c.created_at AT TIME ZONE f.timezone)::date
        WHERE f.transition IN ('accept', 'verify') AND f.from_state = 'reported'
          AND c.source = 'inspector'
    UNION ALL
    SELECT f.id, m, 'inspector', f.actor, f.day
        FROM (VALUES ('verifications', true), ('verifications_on_time', f.on_time)) v (m, counts)
        WHERE f.transition = 'verify' AND v.counts
    UNION ALL
    SELECT f.id, m, 'inspector', f.actor, f.day
        FROM (VALUES ('checks', true), ('checks_on_time', f.on_time)) v (m, counts)
        WHERE f.transition IN ('check_pass', 'check_fail') AND v.counts
    UNION ALL
    SELECT f.id, m, k, code, f.day
        FROM (VALUES ('filed', true), ('filed_public', c.source <> 'inspector')) v (m, counts),
             (VALUES ('street', c.street_code::text), ('community', c.community_code::text),
                     ('grid', c.grid_code::text)) a (k, code)
        WHERE f.transition = 'file' AND v.counts
    UNION ALL
    SELECT f.id, m, 'centre', 'supervision', f.day
        FROM (VALUES ('filings', true), ('filings_on_time', f.on_time)) v (m, counts)
        WHERE f.transition = 'file' AND v.counts
    UNION ALL
    SELECT f.filing, 'filed_cancelled', k, code, (fl.at AT TIME ZONE f.timezone)::date
        FROM (VALUES ('street', c.street_code::text), ('community', c.community_code::text),
                     ('grid', c.grid_code::text)) a (k, code)
        WHERE f.transition = 'cancel' AND f.from_state = 'filed'
    UNION ALL
    SELECT f.filing, m, k, code, (fl.at AT TIME ZONE f.timezone)::date
        FROM (VALUES ('closed', true), ('closed_on_time', f.all_on_time)) v (m, counts),
             (VALUES ('street', c.street_code::text), ('community', c.community_code::text),
                     ('grid', c.grid_code::text)) a (k, code)
        WHERE f.transition = 'check_pass' AND v.counts
    UNION ALL
    SELECT f.id, 'dispatched', 'bureau', f.bureau, f.day
        WHERE f.transition = 'dispatch'
    UNION ALL
    SELECT f.id, m, 'centre', 'command', f.day
        FROM (VALUES ('dispatches', true), ('dispatches_on_time', f.on_time)) v (m, counts)
        WHERE f.transition = 'dispatch' AND v.counts
    UNION ALL
    SELECT f.assignment, m, 'bureau', d.parameters ->> 'bureau',
           (d.at AT TIME ZONE f.timezone)::date
        FROM (VALUES ('handled', true), ('handled_on_time', f.on_time)) v (m, counts)
        WHERE f.transition = 'handle' AND f.nth = 1 AND v.counts
    UNION ALL
    SELECT f.assignment, m, k, s, (d.at AT TIME ZONE f.timezone)::date
        FROM (VALUES ('returned', 'bureau', d.parameters ->> 'bureau'),
                     ('dispatches_returned', 'centre', 'command')) v (m, k, s)
        WHERE f.transition = 'return'
    UNION ALL
    SELECT f.assignment, 'postponed', 'bureau', d.parameters ->> 'bureau',
           (d.at AT TIME ZONE f.timezone)::date
        WHERE f.transition = 'decide_postpone' AND f.decision = 'approve' AND f.nth = 1
    UNION ALL
    SELECT f.assignment, 'reworked', 'bureau', d.parameters ->> 'bureau',
           (d.at AT TIME ZONE f.timezone)::date
        WHERE f.transition = 'check_fail' AND f.nth = 1
) AS x (unit, measure, subject_kind, subject, day);

-- Add the facts a new history entry brings, in its transaction. SECURITY DEFINER: the
-- serving role reads the aggregates but may not write them. Rows are locked in one order,
-- so concurrent transitions never deadlock on a day's counters.
CREATE FUNCTION eval_case_event_facts() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    WITH added AS (
        INSERT INTO case_fact (unit, measure, subject_kind, subject, case_id, day)
        SELECT unit, measure, subject_kind, subject, case_id, day
        FROM eval_fact WHERE case_id = NEW.case_id
        ON CONFLICT DO NOTHING
        RETURNING subject_kind, day, subject, measure
    )
    INSERT INTO case_day_fact (subject_kind, day, subject, measure, n)
    SELECT subject_kind, day, subject, measure, count(*) FROM added
    GROUP BY subject_kind, day, subject, measure
    ORDER BY subject_kind, day, subject, measure
    ON CONFLICT (subject_kind, day, subject, measure)
        DO UPDATE SET n = case_day_fact.n + EXCLUDED.n;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION eval_case_event_facts() FROM PUBLIC;
CREATE TRIGGER case_event_evaluation AFTER INSERT ON case_event
    FOR EACH ROW EXECUTE FUNCTION eval_case_event_facts();

-- The history already there.
INSERT INTO case_fact (unit, measure, subject_kind, subject, case_id, day)
    SELECT unit, measure, subject_kind, subject, case_id, day FROM eval_fact;
INSERT INTO case_day_fact (subject_kind, day, subject, measure, n)
    SELECT subject_kind, day, subject, measure, count(*) FROM case_fact
    GROUP BY subject_kind, day, subject, measure;

CREATE INDEX case_event_at_idx ON case_event (at);

-- The serving role reads; only the trigger (and the owner's rebuild) writes the facts, and a
-- configuration version, once inserted, is never changed (default privileges gave more).
REVOKE ALL ON eval_setting, eval_config, case_fact, case_day_fact FROM PUBLIC, citygrid_app;
REVOKE ALL ON eval_fact FROM PUBLIC, citygrid_app;
GRANT SELECT ON eval_setting, case_fact, case_day_fact TO citygrid_app;
GRANT SELECT, INSERT ON eval_config TO citygrid_app;
