-- Optimistic concurrency for the API: bumped on every change to the row,
-- local or from Stripe; served as the ETag.
ALTER TABLE customers ADD COLUMN version bigint NOT NULL DEFAULT 1;
CREATE INDEX customers_created_idx ON customers (created_at, id);
CREATE INDEX customers_updated_idx ON customers (updated_at);

-- Local changes waiting to flow out. Written in the same transaction as the
-- change itself (no dual writes); the relay publishes rows in id order.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    entity       text NOT NULL,
    local_id     uuid NOT NULL,
    operation    text NOT NULL CHECK (operation IN ('create', 'update', 'delete')),
    -- The fields the change sets: {"name": "...", "email": null, "metadata": {"k": "v"|null}}
    fields       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_local_idx ON outbox (entity, local_id, id);

-- What became of each outbox row at each external service.
CREATE TABLE outbox_deliveries (
    outbox_id    bigint NOT NULL REFERENCES outbox (id),
    service      text NOT NULL,
    status       text NOT NULL CHECK (status IN ('synced', 'failed')),
    external_id  text,
    error        text,
    delivered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (outbox_id, service)
);

-- True when the event is Stripe echoing one of our own writes.
ALTER TABLE event_ledger ADD COLUMN echo boolean NOT NULL DEFAULT false;
