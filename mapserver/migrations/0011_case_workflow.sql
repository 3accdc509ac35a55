-- The case workflow: cases numbered per district and year without gaps, their history of
-- signed transitions (append-only), and the time limit of every stage.

-- One counter row per district and year; the UPDATE that takes the next number holds the
-- row until commit, so a rolled-back creation gives its number back: no gaps.
CREATE TABLE case_counter (
    district char(6) NOT NULL CHECK (district ~ '^[0-9]{6}$'),
    year     integer NOT NULL CHECK (year BETWEEN 2000 AND 2999),
    last     integer NOT NULL CHECK (last >= 0),
    PRIMARY KEY (district, year)
);

-- Time limit of each stage of the workflow. The handling stage takes its limit from the
-- case's class (component_class / event_class); the others default to these rows and may
-- be overridden per class in case_stage_class_limit.
CREATE TABLE case_stage_limit (
    stage  text PRIMARY KEY CHECK (stage IN ('accept', 'file', 'dispatch', 'handle', 'forward', 'check')),
    amount numeric NOT NULL CHECK (amount > 0),
    unit   text NOT NULL CHECK (unit IN ('working_hours', 'working_days'))
);
INSERT INTO case_stage_limit (stage, amount, unit) VALUES
    ('accept', 1, 'working_hours'),
    ('file', 1, 'working_hours'),
    ('dispatch', 1, 'working_hours'),
    ('handle', 1, 'working_days'),
    ('forward', 1, 'working_hours'),
    ('check', 1, 'working_days');

CREATE TABLE case_stage_class_limit (
    kind   text NOT NULL CHECK (kind IN ('component', 'event')),
    major  char(2) NOT NULL,
    minor  varchar(3) NOT NULL,
    stage  text NOT NULL REFERENCES case_stage_limit (stage),
    amount numeric NOT NULL CHECK (amount > 0),
    unit   text NOT NULL CHECK (unit IN ('working_hours', 'working_days')),
    PRIMARY KEY (kind, major, minor, stage)
);

CREATE TABLE city_case (
    id               bigserial PRIMARY KEY,
    number           text NOT NULL UNIQUE CHECK (number ~ '^[0-9]{4}-[0-9]{6}$'),
    district         char(6) NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('component', 'event')),
    major            char(2) NOT NULL,
    minor            varchar(3) NOT NULL,
    component_code   varchar(17),
    source           text NOT NULL CHECK (source IN ('inspector', 'phone', 'web', 'sms',
                                                      'city_platform', 'leader')),
    state            text NOT NULL CHECK (state IN ('reported', 'accepted', 'rejected', 'filed',
        'dispatched', 'handling', 'handled', 'feedback', 'checking', 'closed', 'suspended',
        'cancelled')),
    resume_state     text,
    version          integer NOT NULL DEFAULT 1 CHECK (version > 0),
    description      text NOT NULL CHECK (length(description) BETWEEN 1 AND 4000),
    address          text NOT NULL DEFAULT '',
    contact          text NOT NULL DEFAULT '',  -- the caller's contact: operators only
    geom             geometry(Point, {{SRID}}) NOT NULL,
    grid_code        varchar(15) NOT NULL REFERENCES unit_grid (code),
    community_code   char(12) NOT NULL,
    street_code      char(9) NOT NULL,
    bureau           text REFERENCES organisation (code),
    reporter         text NOT NULL,
    duplicate_of     text REFERENCES city_case (number),
    created_at       timestamptz NOT NULL DEFAULT now(),
    stage            text,
    stage_started_at timestamptz NOT NULL DEFAULT now(),
    stage_deadline   timestamptz,
    postponed_hours  numeric NOT NULL DEFAULT 0,
    postpone_pending boolean NOT NULL DEFAULT false,
    rework_count     integer NOT NULL DEFAULT 0,
    closed_at        timestamptz,
    CHECK (kind = 'event' OR component_code IS NOT NULL)
);
CREATE INDEX city_case_state_idx ON city_case (state, stage_deadline);
CREATE INDEX city_case_street_idx ON city_case (street_code, state);
CREATE INDEX city_case_grid_idx ON city_case (grid_code);
CREATE INDEX city_case_bureau_idx ON city_case (bureau, state);
CREATE INDEX city_case_geom_idx ON city_case USING gist (geom);

-- Every transition, with who fired it, the signed action that proves it, and whether the
-- stage it ended was on time. Append-only like the audit log.
CREATE TABLE case_event (
    id             bigserial PRIMARY KEY,
    case_id        bigint NOT NULL REFERENCES city_case (id),
    at             timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,
    transition     text NOT NULL,
    from_state     text,
    to_state       text NOT NULL,
    version        integer NOT NULL,
    parameters     jsonb NOT NULL DEFAULT '{}',
    signed_action  bigint REFERENCES signed_action (id),
    stage          text,
    stage_deadline timestamptz,
    on_time        boolean
);
CREATE INDEX case_event_case_idx ON case_event (case_id, id);
CREATE TRIGGER case_event_append_only BEFORE UPDATE OR DELETE ON case_event
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER case_event_no_truncate BEFORE TRUNCATE ON case_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

GRANT SELECT, INSERT, UPDATE ON case_counter TO citygrid_app;
GRANT SELECT ON case_stage_limit, case_stage_class_limit TO citygrid_app;
GRANT SELECT, INSERT, UPDATE ON city_case TO citygrid_app;
GRANT SELECT, INSERT ON case_event TO citygrid_app;
GRANT USAGE ON SEQUENCE city_case_id_seq, case_event_id_seq TO citygrid_app;
GRANT SELECT (id, number, state, kind, major, minor, grid_code, street_code, geom, stage_deadline)
    ON city_case TO citygrid_map;
