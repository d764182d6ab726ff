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

-- Refunds asked for through POST /api/refund-requests: queued here with an
-- outbox row in one transaction, carried out by workers/stripe-commands
-- (through stripe.commands.v1), then kept current by Stripe's refund
-- webhooks through the mirror (the trigger below).
CREATE TABLE payments.refund_requests (
    id text PRIMARY KEY,
    -- The outbox's id for it (the outbox keys local rows by UUID).
    local_id uuid NOT NULL UNIQUE,
    payment_intent text NOT NULL,
    -- NULL: whatever is left to refund, settled by the worker.
    amount bigint,
    reason text,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'processing', 'pending', 'succeeded', 'failed', 'canceled')),
    refund_id text UNIQUE,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refund_requests_payment_intent_idx ON payments.refund_requests (payment_intent, created_at);

-- A refund's status as a request's status (`requires_action` waits on the
-- customer: still pending for us).
CREATE FUNCTION payments.request_status(refund_status text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE refund_status
        WHEN 'succeeded' THEN 'succeeded'
        WHEN 'failed' THEN 'failed'
        WHEN 'canceled' THEN 'canceled'
        ELSE 'pending'
    END
$$;

-- Every refund the mirror stores moves the request it belongs to: found
-- by the refund id the worker recorded, or by the request id the worker
-- put in the refund's metadata (a webhook can arrive before the worker has
-- recorded the id).
CREATE FUNCTION payments.follow_refund() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE payments.refund_requests
    SET refund_id = NEW.id,
        amount = COALESCE((NEW.data->>'amount')::bigint, amount),
        status = payments.request_status(NEW.status),
        error = CASE WHEN NEW.status = 'failed'
                     THEN COALESCE(NEW.data->>'failure_reason', 'the refund failed') END,
        updated_at = now()
    WHERE NEW.account = 'platform'
      AND (refund_id = NEW.id OR id = NEW.data->'metadata'->>'stripe_sync_request');
    RETURN NULL;
END
$$;

CREATE TRIGGER refunds_follow_requests
AFTER INSERT OR UPDATE ON stripe.refunds
FOR EACH ROW WHEN (NEW.status IS NOT NULL AND NOT NEW.deleted)
EXECUTE FUNCTION payments.follow_refund();
