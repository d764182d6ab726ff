-- The payments API (src/apps/payments): idempotency keys of its POSTs.
CREATE SCHEMA payments;

-- One row per Idempotency-Key a client sent: the request it was first
-- used with (route and body hash) and, once that request finished, the
-- answer every retry replays. `status` is NULL while the first request is
-- still running.
CREATE TABLE payments.idempotency_keys (
    key text PRIMARY KEY,
    route text NOT NULL,
    request_hash text NOT NULL,
    status integer,
    response jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_idx ON payments.idempotency_keys (created_at);
