-- Exactly once for the order emails and the HTTP export (issue 30).

-- The lease of a notification being sent: a random token written when a
-- sender takes the row. Only the holder of the current token may renew the
-- lease, send the message or record its outcome, so a sender that was slow
-- past its lease (and lost it to another) cannot send again or overwrite
-- what the new holder recorded. NULL when no sender holds it.
ALTER TABLE orders.notifications ADD COLUMN lease_token uuid;

-- Batches of the HTTP export, offered until acknowledged. A name has at
-- most one pending batch: the export's watermark moves to `to_*` only when
-- it is acknowledged, and until then every call gets that same batch (held
-- for one caller until `leased_until`). `sessions` is the answer as first
-- offered, so it is offered again unchanged; it is cleared on
-- acknowledgement, and the row stays to make a repeated acknowledgement
-- harmless.
CREATE TABLE orders.export_batches (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    from_xid bigint NOT NULL,
    from_seq bigint NOT NULL,
    to_xid bigint NOT NULL,
    to_seq bigint NOT NULL,
    -- The filters it was made with; a call with others is refused while it
    -- is pending.
    payment_links text[] NOT NULL,
    since timestamptz,
    max_sessions bigint NOT NULL,
    count integer NOT NULL,
    has_more boolean NOT NULL,
    sessions jsonb,
    offers integer NOT NULL DEFAULT 1,
    leased_until timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    acked_at timestamptz
);
CREATE UNIQUE INDEX export_batches_pending_idx ON orders.export_batches (name)
    WHERE acked_at IS NULL;
CREATE INDEX export_batches_acked_idx ON orders.export_batches (acked_at)
    WHERE acked_at IS NOT NULL;
