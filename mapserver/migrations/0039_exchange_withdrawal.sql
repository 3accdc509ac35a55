-- City–district exchange: withdrawing a message the peer has not acknowledged.
--
-- Messages are numbered without gaps and the peer takes them strictly in order, so one it
-- refuses (a well-formed case it cannot record) held back every later message for ever. A
-- signed withdrawal (`exchange.withdraw`) now takes the message's place under the same
-- number and source id: the row's kind becomes `exchange.withdrawn`, its content names the
-- withdrawn kind, the reason and the hash of the withdrawn content, and its signed action is
-- the withdrawal's. The withdrawn act and its audit entry stay as they were.
-- withdrawn_at is set exactly when the row is a withdrawal.

ALTER TABLE exchange_outbox DROP CONSTRAINT exchange_outbox_kind_check;
ALTER TABLE exchange_outbox ADD CONSTRAINT exchange_outbox_kind_check
    CHECK (kind IN ('case.forward', 'case.result', 'component.update', 'exchange.withdrawn'));
ALTER TABLE exchange_outbox ADD COLUMN withdrawn_at timestamptz;
ALTER TABLE exchange_outbox ADD CONSTRAINT exchange_outbox_withdrawn_check
    CHECK ((kind = 'exchange.withdrawn') = (withdrawn_at IS NOT NULL));
