-- Paid orders: the export of new paid checkout sessions and the order
-- notifier's one-email-per-order records (src/apps/orders).
CREATE SCHEMA orders;

-- The order in which the mirror saw checkout sessions become paid. A
-- trigger on the mirror records each session once, in the transaction that
-- first stored it paid, whichever path stored it (webhook, backfill,
-- reconcile, a re-read). `paid_xid` is that transaction's id: an export
-- reads only rows of transactions older than every one still running
-- (pg_snapshot_xmin), so a transaction that commits late can never slip
-- in behind a watermark that has already passed its sequence number.
CREATE TABLE orders.paid_sessions (
    seq bigserial NOT NULL,
    account text NOT NULL,
    session_id text NOT NULL,
    paid_xid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    seen_paid_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, session_id)
);
CREATE UNIQUE INDEX paid_sessions_order_idx ON orders.paid_sessions (paid_xid, seq);

CREATE FUNCTION orders.record_paid_session() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO orders.paid_sessions (account, session_id)
    VALUES (NEW.account, NEW.id)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER checkout_sessions_record_paid
AFTER INSERT OR UPDATE ON stripe.checkout_sessions
FOR EACH ROW WHEN (NEW.payment_status = 'paid' AND NOT NEW.deleted)
EXECUTE FUNCTION orders.record_paid_session();

-- Sessions that were already paid in the mirror, in the order they were
-- synced.
INSERT INTO orders.paid_sessions (account, session_id, seen_paid_at)
SELECT account, id, synced_at FROM stripe.checkout_sessions
WHERE payment_status = 'paid' AND NOT deleted
ORDER BY synced_at, account, id;

-- One watermark per export name: the last (paid_xid, seq) delivered.
CREATE TABLE orders.exports (
    name text PRIMARY KEY,
    last_xid bigint NOT NULL DEFAULT 0,
    last_seq bigint NOT NULL DEFAULT 0,
    runs bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per paid order, claimed before its email is sent and marked
-- after: the unique key is what makes it one email per order.
CREATE TABLE orders.notifications (
    id bigserial PRIMARY KEY,
    account text NOT NULL,
    -- `checkout_session:cs_…`, or `subscription:sub_…` for a subscription's
    -- first order (its renewals share the key, so they are never notified).
    order_key text NOT NULL,
    session_id text NOT NULL,
    -- The event that made it an order, kept to dead-letter it on refusal.
    event_id text NOT NULL,
    event jsonb NOT NULL,
    -- The session and its complete line items, as the email shows them.
    order_data jsonb NOT NULL,
    message_id text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    UNIQUE (account, order_key)
);
CREATE INDEX notifications_due_idx ON orders.notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_status_idx ON orders.notifications (status, id);
