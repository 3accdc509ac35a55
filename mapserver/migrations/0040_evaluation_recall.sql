-- The command centre's recall (撤回派遣) of a dispatch the bureau has not signed for
-- (transition recall, dispatched → filed). It counts as the return does, with its own
-- measures: `recalled` for the bureau (taken out of its dispatches, so that a dispatch it
-- never had the chance to handle does not lower its rates) and `dispatches_recalled` for the
-- command centre (a dispatch that did not stand, against its accuracy). The view keeps its
-- columns; no history holds a recall yet, so no fact needs rebuilding.

CREATE OR REPLACE VIEW eval_fact AS
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
    SELECT f.assignment, m, k, s, (d.at AT TIME ZONE f.timezone)::date
        FROM (VALUES ('recalled', 'bureau', d.parameters ->> 'bureau'),
                     ('dispatches_recalled', 'centre', 'command')) v (m, k, s)
        WHERE f.transition = 'recall'
    UNION ALL
    SELECT f.assignment, 'postponed', 'bureau', d.parameters ->> 'bureau',
           (d.at AT TIME ZONE f.timezone)::date
        WHERE f.transition = 'decide_postpone' AND f.decision = 'approve' AND f.nth = 1
    UNION ALL
    SELECT f.assignment, 'reworked', 'bureau', d.parameters ->> 'bureau',
           (d.at AT TIME ZONE f.timezone)::date
        WHERE f.transition = 'check_fail' AND f.nth = 1
) AS x (unit, measure, subject_kind, subject, day);
