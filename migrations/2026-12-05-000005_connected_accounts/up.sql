-- Connected accounts, kept under the platform (registry::Identity::
-- ConnectedAccount): printed by `stripe-sync catalog ddl account`.
-- accounts: data.object.object = 'account'
CREATE TABLE stripe."accounts" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "country" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'country') = 'string' THEN data->>'country' END) STORED,
    "email" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'email') = 'string' THEN data->>'email' END) STORED,
    "default_currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'default_currency') = 'string' THEN data->>'default_currency' END) STORED,
    "business_type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'business_type') = 'string' THEN data->>'business_type' END) STORED,
    "business_name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'business_profile'->'name') = 'string' THEN data->'business_profile'->>'name' END) STORED,
    "charges_enabled" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'charges_enabled') = 'boolean' THEN (data->'charges_enabled')::boolean END) STORED,
    "payouts_enabled" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'payouts_enabled') = 'boolean' THEN (data->'payouts_enabled')::boolean END) STORED,
    "details_submitted" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'details_submitted') = 'boolean' THEN (data->'details_submitted')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "accounts_created_idx" ON stripe."accounts" (account, "created");

