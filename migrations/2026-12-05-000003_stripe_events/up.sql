-- The raw Stripe events as received (webhooks, and those reconcile reads
-- from the Events API), kept for STRIPE_EVENTS_RETENTION (prune deletes
-- what is older). Kafka stays the source: replays come from the topic, and
-- nothing reads this table to apply. The snapshots the pull commands build
-- are not events Stripe sent, and are not kept.
CREATE TABLE stripe.events (
    account text NOT NULL,
    id text NOT NULL,
    type text NOT NULL,
    -- NULL only for a time Postgres cannot hold (Stripe never sends one).
    created timestamptz,
    api_version text,
    livemode boolean NOT NULL,
    object_id text NOT NULL,
    data jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, id)
);
CREATE INDEX events_created_idx ON stripe.events (account, created);
CREATE INDEX events_object_idx ON stripe.events (account, object_id);
CREATE INDEX events_received_at_idx ON stripe.events (received_at);
