-- City–district exchange (市区数据交换): signed bundles between two CityGrid installs.
--
-- * exchange_outbox: what this install sends its peer, one row per message, numbered without
--   gaps (exchange_counter, locked by the sending transaction) so the peer can tell a missing
--   or reordered message; written in the transaction of the signed act it carries; kept
--   until the peer acknowledged it, then marked, never deleted.
-- * exchange_inbox: every bundle accepted from the peer, its bytes' hash and the bundle
--   itself, by its source id (unique: a replay is refused, never applied twice).
-- * exchange_peer_state: the last sequence number accepted from the peer.
-- * exchange_component: on the city platform, the districts' components as last reported.
-- * The role exchange_peer: the account the other install connects as (its certificate from
--   this install's CA); it may deliver bundles and nothing else.

INSERT INTO role (name, description) VALUES
    ('exchange_peer', '交换对端：市级平台或区级平台的交换服务，仅可递交签名数据包');

CREATE TABLE exchange_counter (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    last bigint NOT NULL CHECK (last >= 0)
);
INSERT INTO exchange_counter (one, last) VALUES (true, 0);

CREATE TABLE exchange_outbox (
    seq           bigint PRIMARY KEY CHECK (seq > 0),
    source_id     text NOT NULL UNIQUE,
    kind          text NOT NULL CHECK (kind IN ('case.forward', 'case.result', 'component.update')),
    case_number   text,
    in_reply_to   text,
    content       jsonb NOT NULL,
    signed_action bigint NOT NULL REFERENCES signed_action (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    attempts      integer NOT NULL DEFAULT 0,
    last_attempt  timestamptz,
    last_error    text,
    acked_at      timestamptz,
    ack           jsonb
);
CREATE INDEX exchange_outbox_pending_idx ON exchange_outbox (seq) WHERE acked_at IS NULL;
CREATE INDEX exchange_outbox_case_idx ON exchange_outbox (case_number);

CREATE TABLE exchange_peer_state (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_seq bigint NOT NULL CHECK (last_seq >= 0)
);
INSERT INTO exchange_peer_state (one, last_seq) VALUES (true, 0);

CREATE TABLE exchange_inbox (
    source_id     text PRIMARY KEY,
    seq           bigint NOT NULL UNIQUE,
    kind          text NOT NULL,
    content       jsonb NOT NULL,
    bundle        jsonb NOT NULL,
    bundle_sha256 char(64) NOT NULL,
    signer        text NOT NULL,   -- the peer's person who signed the act
    case_number   text,            -- the local case it concerns, if any
    in_reply_to   text,            -- the source id of ours it answers
    received_at   timestamptz NOT NULL DEFAULT now(),
    answered_by   text             -- the source id of our answer
);
CREATE INDEX exchange_inbox_case_idx ON exchange_inbox (case_number);

CREATE TABLE exchange_component (
    code        varchar(17) PRIMARY KEY,
    content     jsonb NOT NULL,
    version     integer NOT NULL,
    source_id   text NOT NULL REFERENCES exchange_inbox (source_id),
    received_at timestamptz NOT NULL DEFAULT now()
);

-- The serving role sends and receives; nothing here is deleted.
GRANT SELECT, UPDATE ON exchange_counter, exchange_peer_state TO citygrid_app;
GRANT SELECT, INSERT ON exchange_outbox, exchange_inbox TO citygrid_app;
GRANT UPDATE (attempts, last_attempt, last_error, acked_at, ack) ON exchange_outbox TO citygrid_app;
GRANT UPDATE (answered_by) ON exchange_inbox TO citygrid_app;
GRANT SELECT, INSERT, UPDATE ON exchange_component TO citygrid_app;
