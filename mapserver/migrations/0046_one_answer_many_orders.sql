-- Street supervision: one answer answers every order waiting for it.
--
-- A street office may order (督办) a case again before the bureau has answered the first
-- order. The bureau's answer is then the reply to each order waiting for it, so the orders
-- share its history entry. answer_event was UNIQUE, so such an answer failed for ever: the
-- orders stayed open and escalated although the bureau had replied. The uniqueness goes; an
-- index keeps the look-up from an answer to its orders.

ALTER TABLE case_order DROP CONSTRAINT case_order_answer_event_key;
CREATE INDEX case_order_answer_event_idx ON case_order (answer_event)
    WHERE answer_event IS NOT NULL;
