-- A customer's active entitlement summary, keyed by its customer, and its
-- entitlements as a child list: printed by `stripe-sync catalog ddl
-- entitlements.active_entitlement_summary`.
-- entitlements_active_entitlement_summarys: data.object.object = 'entitlements.active_entitlement_summary'
CREATE TABLE stripe."entitlements_active_entitlement_summarys" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "entitlements_active_entitlement_summarys_customer_idx" ON stripe."entitlements_active_entitlement_summarys" (account, "customer");
CREATE TABLE stripe."customer_active_entitlements" (
    account text NOT NULL,
    "customer" text NOT NULL,
    id text NOT NULL,
    position integer NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    "feature" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'feature') WHEN 'string' THEN data->>'feature' WHEN 'object' THEN data->'feature'->>'id' END) STORED,
    "lookup_key" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'lookup_key') = 'string' THEN data->>'lookup_key' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, "customer", id)
) WITH (toast_tuple_target = 8160);

