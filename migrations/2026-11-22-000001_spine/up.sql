-- The local store of customers. Columns are projected from Stripe (and,
-- later, from local API writes); the last Stripe snapshot is kept whole.
CREATE TABLE customers (
    id            uuid PRIMARY KEY,
    email         text,
    name          text,
    phone         text,
    description   text,
    metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
    stripe_object jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: a tombstone that late updates cannot resurrect.
    deleted_at    timestamptz
);

CREATE INDEX customers_email_idx ON customers (email);

-- Links local entities to objects of external services (stripe today,
-- salesforce tomorrow) and carries each link's sync state.
CREATE TABLE id_map (
    service         text NOT NULL,
    -- Stripe account ('platform' or acct_...); a tenant/org for other services.
    account         text NOT NULL,
    entity          text NOT NULL,
    external_id     text NOT NULL,
    local_id        uuid NOT NULL,
    -- Ordering watermark: `created` (whole seconds) of the newest remote
    -- state applied. Older events are stale; equal ones are resolved by
    -- re-reading the object from the service.
    remote_version  bigint NOT NULL,
    remote_event_id text,
    remote_deleted  boolean NOT NULL DEFAULT false,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, account, entity, external_id),
    CONSTRAINT id_map_local_unique UNIQUE (service, entity, local_id)
);

-- Every event applied (or recognised as stale/ignored), once. Inserting here
-- in the same transaction as the effect is what makes redelivery harmless.
CREATE TABLE event_ledger (
    service       text NOT NULL,
    account       text NOT NULL,
    event_id      text NOT NULL,
    event_type    text NOT NULL,
    object_id     text NOT NULL,
    event_created bigint NOT NULL,
    outcome       text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, account, event_id)
);

CREATE INDEX event_ledger_object_idx ON event_ledger (service, account, object_id);
