-- The Stripe mirror: schema `stripe`, one relation per registered object
-- type (src/registry), named object.replace('.', '_') || 's'. Printed by
-- `stripe-sync catalog ddl all`; a later type gets its own migration the
-- same way.
--
-- Every relation: account ('platform' or acct_...), id, data (the newest
-- object, whole), deleted (a final tombstone), synced_at, the ordering
-- state (remote_version: the `created` second of the newest state applied;
-- remote_event_id), and typed columns generated from data. No foreign keys
-- across types: related objects arrive in any order, on other partitions.
CREATE SCHEMA stripe;

-- products: data.object.object = 'product'
CREATE TABLE stripe."products" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "active" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'active') = 'boolean' THEN (data->'active')::boolean END) STORED,
    "name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'name') = 'string' THEN data->>'name' END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "default_price" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'default_price') WHEN 'string' THEN data->>'default_price' WHEN 'object' THEN data->'default_price'->>'id' END) STORED,
    "updated" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'updated') = 'number' AND abs((data->>'updated')::numeric) < 1e11 THEN to_timestamp((data->>'updated')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "products_created_idx" ON stripe."products" (account, "created");

-- prices: data.object.object = 'price'
CREATE TABLE stripe."prices" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "active" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'active') = 'boolean' THEN (data->'active')::boolean END) STORED,
    "product" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'product') WHEN 'string' THEN data->>'product' WHEN 'object' THEN data->'product'->>'id' END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "unit_amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'unit_amount') = 'number' AND abs((data->>'unit_amount')::numeric) < 9e18 THEN trunc((data->>'unit_amount')::numeric)::bigint END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "recurring_interval" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'recurring'->'interval') = 'string' THEN data->'recurring'->>'interval' END) STORED,
    "lookup_key" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'lookup_key') = 'string' THEN data->>'lookup_key' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "prices_created_idx" ON stripe."prices" (account, "created");
CREATE INDEX "prices_product_idx" ON stripe."prices" (account, "product");

-- plans: data.object.object = 'plan'
CREATE TABLE stripe."plans" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "active" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'active') = 'boolean' THEN (data->'active')::boolean END) STORED,
    "product" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'product') WHEN 'string' THEN data->>'product' WHEN 'object' THEN data->'product'->>'id' END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "interval" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'interval') = 'string' THEN data->>'interval' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "plans_created_idx" ON stripe."plans" (account, "created");
CREATE INDEX "plans_product_idx" ON stripe."plans" (account, "product");

-- coupons: data.object.object = 'coupon'
CREATE TABLE stripe."coupons" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'name') = 'string' THEN data->>'name' END) STORED,
    "amount_off" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_off') = 'number' AND abs((data->>'amount_off')::numeric) < 9e18 THEN trunc((data->>'amount_off')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "duration" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'duration') = 'string' THEN data->>'duration' END) STORED,
    "valid" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'valid') = 'boolean' THEN (data->'valid')::boolean END) STORED,
    "redeem_by" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'redeem_by') = 'number' AND abs((data->>'redeem_by')::numeric) < 1e11 THEN to_timestamp((data->>'redeem_by')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "coupons_created_idx" ON stripe."coupons" (account, "created");

-- promotion_codes: data.object.object = 'promotion_code'
CREATE TABLE stripe."promotion_codes" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "active" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'active') = 'boolean' THEN (data->'active')::boolean END) STORED,
    "code" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'code') = 'string' THEN data->>'code' END) STORED,
    "coupon" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'promotion'->'coupon') WHEN 'string' THEN data->'promotion'->>'coupon' WHEN 'object' THEN data->'promotion'->'coupon'->>'id' END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "expires_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'expires_at') = 'number' AND abs((data->>'expires_at')::numeric) < 1e11 THEN to_timestamp((data->>'expires_at')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "promotion_codes_created_idx" ON stripe."promotion_codes" (account, "created");
CREATE INDEX "promotion_codes_customer_idx" ON stripe."promotion_codes" (account, "customer");

-- tax_rates: data.object.object = 'tax_rate'
CREATE TABLE stripe."tax_rates" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "active" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'active') = 'boolean' THEN (data->'active')::boolean END) STORED,
    "display_name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'display_name') = 'string' THEN data->>'display_name' END) STORED,
    "country" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'country') = 'string' THEN data->>'country' END) STORED,
    "inclusive" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'inclusive') = 'boolean' THEN (data->'inclusive')::boolean END) STORED,
    "tax_type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'tax_type') = 'string' THEN data->>'tax_type' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "tax_rates_created_idx" ON stripe."tax_rates" (account, "created");

-- shipping_rates: data.object.object = 'shipping_rate'
CREATE TABLE stripe."shipping_rates" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "active" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'active') = 'boolean' THEN (data->'active')::boolean END) STORED,
    "display_name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'display_name') = 'string' THEN data->>'display_name' END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'fixed_amount'->'amount') = 'number' AND abs((data->'fixed_amount'->>'amount')::numeric) < 9e18 THEN trunc((data->'fixed_amount'->>'amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'fixed_amount'->'currency') = 'string' THEN data->'fixed_amount'->>'currency' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "shipping_rates_created_idx" ON stripe."shipping_rates" (account, "created");

-- payment_links: data.object.object = 'payment_link'
CREATE TABLE stripe."payment_links" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "active" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'active') = 'boolean' THEN (data->'active')::boolean END) STORED,
    "url" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'url') = 'string' THEN data->>'url' END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "application_fee_amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'application_fee_amount') = 'number' AND abs((data->>'application_fee_amount')::numeric) < 9e18 THEN trunc((data->>'application_fee_amount')::numeric)::bigint END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);

-- entitlements_features: data.object.object = 'entitlements.feature'
CREATE TABLE stripe."entitlements_features" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "active" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'active') = 'boolean' THEN (data->'active')::boolean END) STORED,
    "lookup_key" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'lookup_key') = 'string' THEN data->>'lookup_key' END) STORED,
    "name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'name') = 'string' THEN data->>'name' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);

-- customers: data.object.object = 'customer' (local-first table, two-way sync)
CREATE VIEW stripe.customers AS
SELECT s.account, s.id, s.data, s.deleted, s.synced_at, s.local_id,
    CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END AS "created",
    CASE WHEN jsonb_typeof(data->'email') = 'string' THEN data->>'email' END AS "email",
    CASE WHEN jsonb_typeof(data->'name') = 'string' THEN data->>'name' END AS "name",
    CASE WHEN jsonb_typeof(data->'phone') = 'string' THEN data->>'phone' END AS "phone",
    CASE WHEN jsonb_typeof(data->'description') = 'string' THEN data->>'description' END AS "description"
FROM (SELECT m.account, m.external_id AS id, coalesce(c.stripe_object, jsonb_build_object('id', m.external_id)) AS data, (m.remote_deleted OR c.deleted_at IS NOT NULL) AS deleted, m.synced_at, c.id AS local_id FROM id_map m JOIN customers c ON c.id = m.local_id WHERE m.service = 'stripe' AND m.entity = 'customer') AS s;

-- tax_ids: data.object.object = 'tax_id'
CREATE TABLE stripe."tax_ids" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "value" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'value') = 'string' THEN data->>'value' END) STORED,
    "country" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'country') = 'string' THEN data->>'country' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "tax_ids_created_idx" ON stripe."tax_ids" (account, "created");
CREATE INDEX "tax_ids_customer_idx" ON stripe."tax_ids" (account, "customer");

-- payment_methods: data.object.object = 'payment_method'
CREATE TABLE stripe."payment_methods" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "card_brand" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'card'->'brand') = 'string' THEN data->'card'->>'brand' END) STORED,
    "card_last4" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'card'->'last4') = 'string' THEN data->'card'->>'last4' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "payment_methods_created_idx" ON stripe."payment_methods" (account, "created");
CREATE INDEX "payment_methods_customer_idx" ON stripe."payment_methods" (account, "customer");

-- entitlements_active_entitlements: data.object.object = 'entitlements.active_entitlement'
CREATE TABLE stripe."entitlements_active_entitlements" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "feature" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'feature') WHEN 'string' THEN data->>'feature' WHEN 'object' THEN data->'feature'->>'id' END) STORED,
    "lookup_key" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'lookup_key') = 'string' THEN data->>'lookup_key' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);

-- setup_intents: data.object.object = 'setup_intent'
CREATE TABLE stripe."setup_intents" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "payment_method" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'payment_method') WHEN 'string' THEN data->>'payment_method' WHEN 'object' THEN data->'payment_method'->>'id' END) STORED,
    "usage" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'usage') = 'string' THEN data->>'usage' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "setup_intents_created_idx" ON stripe."setup_intents" (account, "created");
CREATE INDEX "setup_intents_customer_idx" ON stripe."setup_intents" (account, "customer");

-- checkout_sessions: data.object.object = 'checkout.session'
CREATE TABLE stripe."checkout_sessions" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "payment_status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'payment_status') = 'string' THEN data->>'payment_status' END) STORED,
    "mode" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'mode') = 'string' THEN data->>'mode' END) STORED,
    "amount_subtotal" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_subtotal') = 'number' AND abs((data->>'amount_subtotal')::numeric) < 9e18 THEN trunc((data->>'amount_subtotal')::numeric)::bigint END) STORED,
    "amount_total" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_total') = 'number' AND abs((data->>'amount_total')::numeric) < 9e18 THEN trunc((data->>'amount_total')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "payment_intent" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'payment_intent') WHEN 'string' THEN data->>'payment_intent' WHEN 'object' THEN data->'payment_intent'->>'id' END) STORED,
    "payment_link" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'payment_link') WHEN 'string' THEN data->>'payment_link' WHEN 'object' THEN data->'payment_link'->>'id' END) STORED,
    "subscription" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'subscription') WHEN 'string' THEN data->>'subscription' WHEN 'object' THEN data->'subscription'->>'id' END) STORED,
    "invoice" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'invoice') WHEN 'string' THEN data->>'invoice' WHEN 'object' THEN data->'invoice'->>'id' END) STORED,
    "customer_email" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'customer_email') = 'string' THEN data->>'customer_email' END) STORED,
    "customer_details_email" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'customer_details'->'email') = 'string' THEN data->'customer_details'->>'email' END) STORED,
    "client_reference_id" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'client_reference_id') = 'string' THEN data->>'client_reference_id' END) STORED,
    "expires_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'expires_at') = 'number' AND abs((data->>'expires_at')::numeric) < 1e11 THEN to_timestamp((data->>'expires_at')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "checkout_sessions_created_idx" ON stripe."checkout_sessions" (account, "created");
CREATE INDEX "checkout_sessions_customer_idx" ON stripe."checkout_sessions" (account, "customer");
CREATE INDEX "checkout_sessions_payment_intent_idx" ON stripe."checkout_sessions" (account, "payment_intent");
CREATE INDEX "checkout_sessions_subscription_idx" ON stripe."checkout_sessions" (account, "subscription");
CREATE INDEX "checkout_sessions_invoice_idx" ON stripe."checkout_sessions" (account, "invoice");
CREATE TABLE stripe."checkout_session_line_items" (
    account text NOT NULL,
    "checkout_session" text NOT NULL,
    id text NOT NULL,
    position integer NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    "price" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'price'->'id') = 'string' THEN data->'price'->>'id' END) STORED,
    "product" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'price'->'product') WHEN 'string' THEN data->'price'->>'product' WHEN 'object' THEN data->'price'->'product'->>'id' END) STORED,
    "quantity" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'quantity') = 'number' AND abs((data->>'quantity')::numeric) < 9e18 THEN trunc((data->>'quantity')::numeric)::bigint END) STORED,
    "amount_subtotal" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_subtotal') = 'number' AND abs((data->>'amount_subtotal')::numeric) < 9e18 THEN trunc((data->>'amount_subtotal')::numeric)::bigint END) STORED,
    "amount_total" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_total') = 'number' AND abs((data->>'amount_total')::numeric) < 9e18 THEN trunc((data->>'amount_total')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "description" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'description') = 'string' THEN data->>'description' END) STORED,
    PRIMARY KEY (account, "checkout_session", id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "checkout_session_line_items_product_idx" ON stripe."checkout_session_line_items" (account, "product");

-- payment_intents: data.object.object = 'payment_intent'
CREATE TABLE stripe."payment_intents" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "amount_received" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_received') = 'number' AND abs((data->>'amount_received')::numeric) < 9e18 THEN trunc((data->>'amount_received')::numeric)::bigint END) STORED,
    "amount_capturable" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_capturable') = 'number' AND abs((data->>'amount_capturable')::numeric) < 9e18 THEN trunc((data->>'amount_capturable')::numeric)::bigint END) STORED,
    "application_fee_amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'application_fee_amount') = 'number' AND abs((data->>'application_fee_amount')::numeric) < 9e18 THEN trunc((data->>'application_fee_amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "payment_method" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'payment_method') WHEN 'string' THEN data->>'payment_method' WHEN 'object' THEN data->'payment_method'->>'id' END) STORED,
    "latest_charge" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'latest_charge') WHEN 'string' THEN data->>'latest_charge' WHEN 'object' THEN data->'latest_charge'->>'id' END) STORED,
    "canceled_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'canceled_at') = 'number' AND abs((data->>'canceled_at')::numeric) < 1e11 THEN to_timestamp((data->>'canceled_at')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "payment_intents_created_idx" ON stripe."payment_intents" (account, "created");
CREATE INDEX "payment_intents_customer_idx" ON stripe."payment_intents" (account, "customer");

-- charges: data.object.object = 'charge'
CREATE TABLE stripe."charges" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "amount_captured" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_captured') = 'number' AND abs((data->>'amount_captured')::numeric) < 9e18 THEN trunc((data->>'amount_captured')::numeric)::bigint END) STORED,
    "amount_refunded" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_refunded') = 'number' AND abs((data->>'amount_refunded')::numeric) < 9e18 THEN trunc((data->>'amount_refunded')::numeric)::bigint END) STORED,
    "application_fee_amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'application_fee_amount') = 'number' AND abs((data->>'application_fee_amount')::numeric) < 9e18 THEN trunc((data->>'application_fee_amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "payment_intent" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'payment_intent') WHEN 'string' THEN data->>'payment_intent' WHEN 'object' THEN data->'payment_intent'->>'id' END) STORED,
    "balance_transaction" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'balance_transaction') WHEN 'string' THEN data->>'balance_transaction' WHEN 'object' THEN data->'balance_transaction'->>'id' END) STORED,
    "paid" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'paid') = 'boolean' THEN (data->'paid')::boolean END) STORED,
    "refunded" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'refunded') = 'boolean' THEN (data->'refunded')::boolean END) STORED,
    "disputed" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'disputed') = 'boolean' THEN (data->'disputed')::boolean END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "charges_created_idx" ON stripe."charges" (account, "created");
CREATE INDEX "charges_customer_idx" ON stripe."charges" (account, "customer");
CREATE INDEX "charges_payment_intent_idx" ON stripe."charges" (account, "payment_intent");

-- refunds: data.object.object = 'refund'
CREATE TABLE stripe."refunds" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "charge" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'charge') WHEN 'string' THEN data->>'charge' WHEN 'object' THEN data->'charge'->>'id' END) STORED,
    "payment_intent" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'payment_intent') WHEN 'string' THEN data->>'payment_intent' WHEN 'object' THEN data->'payment_intent'->>'id' END) STORED,
    "reason" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'reason') = 'string' THEN data->>'reason' END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "refunds_created_idx" ON stripe."refunds" (account, "created");
CREATE INDEX "refunds_charge_idx" ON stripe."refunds" (account, "charge");
CREATE INDEX "refunds_payment_intent_idx" ON stripe."refunds" (account, "payment_intent");

-- disputes: data.object.object = 'dispute'
CREATE TABLE stripe."disputes" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "charge" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'charge') WHEN 'string' THEN data->>'charge' WHEN 'object' THEN data->'charge'->>'id' END) STORED,
    "payment_intent" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'payment_intent') WHEN 'string' THEN data->>'payment_intent' WHEN 'object' THEN data->'payment_intent'->>'id' END) STORED,
    "reason" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'reason') = 'string' THEN data->>'reason' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "disputes_created_idx" ON stripe."disputes" (account, "created");
CREATE INDEX "disputes_charge_idx" ON stripe."disputes" (account, "charge");
CREATE INDEX "disputes_payment_intent_idx" ON stripe."disputes" (account, "payment_intent");

-- radar_early_fraud_warnings: data.object.object = 'radar.early_fraud_warning'
CREATE TABLE stripe."radar_early_fraud_warnings" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "charge" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'charge') WHEN 'string' THEN data->>'charge' WHEN 'object' THEN data->'charge'->>'id' END) STORED,
    "fraud_type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'fraud_type') = 'string' THEN data->>'fraud_type' END) STORED,
    "actionable" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'actionable') = 'boolean' THEN (data->'actionable')::boolean END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "radar_early_fraud_warnings_created_idx" ON stripe."radar_early_fraud_warnings" (account, "created");
CREATE INDEX "radar_early_fraud_warnings_charge_idx" ON stripe."radar_early_fraud_warnings" (account, "charge");

-- reviews: data.object.object = 'review'
CREATE TABLE stripe."reviews" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "charge" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'charge') WHEN 'string' THEN data->>'charge' WHEN 'object' THEN data->'charge'->>'id' END) STORED,
    "open" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'open') = 'boolean' THEN (data->'open')::boolean END) STORED,
    "reason" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'reason') = 'string' THEN data->>'reason' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "reviews_created_idx" ON stripe."reviews" (account, "created");
CREATE INDEX "reviews_charge_idx" ON stripe."reviews" (account, "charge");

-- subscriptions: data.object.object = 'subscription'
CREATE TABLE stripe."subscriptions" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "collection_method" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'collection_method') = 'string' THEN data->>'collection_method' END) STORED,
    "cancel_at_period_end" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'cancel_at_period_end') = 'boolean' THEN (data->'cancel_at_period_end')::boolean END) STORED,
    "cancel_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'cancel_at') = 'number' AND abs((data->>'cancel_at')::numeric) < 1e11 THEN to_timestamp((data->>'cancel_at')::double precision) END) STORED,
    "canceled_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'canceled_at') = 'number' AND abs((data->>'canceled_at')::numeric) < 1e11 THEN to_timestamp((data->>'canceled_at')::double precision) END) STORED,
    "ended_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'ended_at') = 'number' AND abs((data->>'ended_at')::numeric) < 1e11 THEN to_timestamp((data->>'ended_at')::double precision) END) STORED,
    "start_date" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'start_date') = 'number' AND abs((data->>'start_date')::numeric) < 1e11 THEN to_timestamp((data->>'start_date')::double precision) END) STORED,
    "trial_end" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'trial_end') = 'number' AND abs((data->>'trial_end')::numeric) < 1e11 THEN to_timestamp((data->>'trial_end')::double precision) END) STORED,
    "latest_invoice" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'latest_invoice') WHEN 'string' THEN data->>'latest_invoice' WHEN 'object' THEN data->'latest_invoice'->>'id' END) STORED,
    "schedule" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'schedule') WHEN 'string' THEN data->>'schedule' WHEN 'object' THEN data->'schedule'->>'id' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "subscriptions_created_idx" ON stripe."subscriptions" (account, "created");
CREATE INDEX "subscriptions_customer_idx" ON stripe."subscriptions" (account, "customer");
CREATE TABLE stripe."subscription_items" (
    account text NOT NULL,
    "subscription" text NOT NULL,
    id text NOT NULL,
    position integer NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "price" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'price'->'id') = 'string' THEN data->'price'->>'id' END) STORED,
    "product" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'price'->'product') WHEN 'string' THEN data->'price'->>'product' WHEN 'object' THEN data->'price'->'product'->>'id' END) STORED,
    "quantity" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'quantity') = 'number' AND abs((data->>'quantity')::numeric) < 9e18 THEN trunc((data->>'quantity')::numeric)::bigint END) STORED,
    "current_period_end" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'current_period_end') = 'number' AND abs((data->>'current_period_end')::numeric) < 1e11 THEN to_timestamp((data->>'current_period_end')::double precision) END) STORED,
    PRIMARY KEY (account, "subscription", id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "subscription_items_created_idx" ON stripe."subscription_items" (account, "created");
CREATE INDEX "subscription_items_product_idx" ON stripe."subscription_items" (account, "product");

-- subscription_schedules: data.object.object = 'subscription_schedule'
CREATE TABLE stripe."subscription_schedules" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "subscription" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'subscription') WHEN 'string' THEN data->>'subscription' WHEN 'object' THEN data->'subscription'->>'id' END) STORED,
    "canceled_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'canceled_at') = 'number' AND abs((data->>'canceled_at')::numeric) < 1e11 THEN to_timestamp((data->>'canceled_at')::double precision) END) STORED,
    "completed_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'completed_at') = 'number' AND abs((data->>'completed_at')::numeric) < 1e11 THEN to_timestamp((data->>'completed_at')::double precision) END) STORED,
    "released_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'released_at') = 'number' AND abs((data->>'released_at')::numeric) < 1e11 THEN to_timestamp((data->>'released_at')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "subscription_schedules_created_idx" ON stripe."subscription_schedules" (account, "created");
CREATE INDEX "subscription_schedules_customer_idx" ON stripe."subscription_schedules" (account, "customer");
CREATE INDEX "subscription_schedules_subscription_idx" ON stripe."subscription_schedules" (account, "subscription");

-- invoices: data.object.object = 'invoice'
CREATE TABLE stripe."invoices" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "subscription" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'subscription') WHEN 'string' THEN data->>'subscription' WHEN 'object' THEN data->'subscription'->>'id' END) STORED,
    "number" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'number') = 'string' THEN data->>'number' END) STORED,
    "amount_due" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_due') = 'number' AND abs((data->>'amount_due')::numeric) < 9e18 THEN trunc((data->>'amount_due')::numeric)::bigint END) STORED,
    "amount_paid" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_paid') = 'number' AND abs((data->>'amount_paid')::numeric) < 9e18 THEN trunc((data->>'amount_paid')::numeric)::bigint END) STORED,
    "amount_remaining" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_remaining') = 'number' AND abs((data->>'amount_remaining')::numeric) < 9e18 THEN trunc((data->>'amount_remaining')::numeric)::bigint END) STORED,
    "amount_shipping" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_shipping') = 'number' AND abs((data->>'amount_shipping')::numeric) < 9e18 THEN trunc((data->>'amount_shipping')::numeric)::bigint END) STORED,
    "amount_overpaid" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_overpaid') = 'number' AND abs((data->>'amount_overpaid')::numeric) < 9e18 THEN trunc((data->>'amount_overpaid')::numeric)::bigint END) STORED,
    "pre_payment_credit_notes_amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'pre_payment_credit_notes_amount') = 'number' AND abs((data->>'pre_payment_credit_notes_amount')::numeric) < 9e18 THEN trunc((data->>'pre_payment_credit_notes_amount')::numeric)::bigint END) STORED,
    "post_payment_credit_notes_amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'post_payment_credit_notes_amount') = 'number' AND abs((data->>'post_payment_credit_notes_amount')::numeric) < 9e18 THEN trunc((data->>'post_payment_credit_notes_amount')::numeric)::bigint END) STORED,
    "total" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'total') = 'number' AND abs((data->>'total')::numeric) < 9e18 THEN trunc((data->>'total')::numeric)::bigint END) STORED,
    "subtotal" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'subtotal') = 'number' AND abs((data->>'subtotal')::numeric) < 9e18 THEN trunc((data->>'subtotal')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "billing_reason" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'billing_reason') = 'string' THEN data->>'billing_reason' END) STORED,
    "collection_method" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'collection_method') = 'string' THEN data->>'collection_method' END) STORED,
    "customer_email" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'customer_email') = 'string' THEN data->>'customer_email' END) STORED,
    "due_date" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'due_date') = 'number' AND abs((data->>'due_date')::numeric) < 1e11 THEN to_timestamp((data->>'due_date')::double precision) END) STORED,
    "period_start" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'period_start') = 'number' AND abs((data->>'period_start')::numeric) < 1e11 THEN to_timestamp((data->>'period_start')::double precision) END) STORED,
    "period_end" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'period_end') = 'number' AND abs((data->>'period_end')::numeric) < 1e11 THEN to_timestamp((data->>'period_end')::double precision) END) STORED,
    "effective_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'effective_at') = 'number' AND abs((data->>'effective_at')::numeric) < 1e11 THEN to_timestamp((data->>'effective_at')::double precision) END) STORED,
    "webhooks_delivered_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'webhooks_delivered_at') = 'number' AND abs((data->>'webhooks_delivered_at')::numeric) < 1e11 THEN to_timestamp((data->>'webhooks_delivered_at')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "invoices_created_idx" ON stripe."invoices" (account, "created");
CREATE INDEX "invoices_customer_idx" ON stripe."invoices" (account, "customer");
CREATE INDEX "invoices_subscription_idx" ON stripe."invoices" (account, "subscription");
CREATE TABLE stripe."invoice_line_items" (
    account text NOT NULL,
    "invoice" text NOT NULL,
    id text NOT NULL,
    position integer NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "quantity" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'quantity') = 'number' AND abs((data->>'quantity')::numeric) < 9e18 THEN trunc((data->>'quantity')::numeric)::bigint END) STORED,
    "description" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'description') = 'string' THEN data->>'description' END) STORED,
    "subscription" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'subscription') WHEN 'string' THEN data->>'subscription' WHEN 'object' THEN data->'subscription'->>'id' END) STORED,
    "price" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'pricing'->'price_details'->'price') WHEN 'string' THEN data->'pricing'->'price_details'->>'price' WHEN 'object' THEN data->'pricing'->'price_details'->'price'->>'id' END) STORED,
    PRIMARY KEY (account, "invoice", id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "invoice_line_items_subscription_idx" ON stripe."invoice_line_items" (account, "subscription");
CREATE INDEX "invoice_line_items_price_idx" ON stripe."invoice_line_items" (account, "price");

-- invoiceitems: data.object.object = 'invoiceitem'
CREATE TABLE stripe."invoiceitems" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "net_amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'net_amount') = 'number' AND abs((data->>'net_amount')::numeric) < 9e18 THEN trunc((data->>'net_amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "invoice" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'invoice') WHEN 'string' THEN data->>'invoice' WHEN 'object' THEN data->'invoice'->>'id' END) STORED,
    "quantity" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'quantity') = 'number' AND abs((data->>'quantity')::numeric) < 9e18 THEN trunc((data->>'quantity')::numeric)::bigint END) STORED,
    "date" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'date') = 'number' AND abs((data->>'date')::numeric) < 1e11 THEN to_timestamp((data->>'date')::double precision) END) STORED,
    "description" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'description') = 'string' THEN data->>'description' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "invoiceitems_customer_idx" ON stripe."invoiceitems" (account, "customer");
CREATE INDEX "invoiceitems_invoice_idx" ON stripe."invoiceitems" (account, "invoice");

-- credit_notes: data.object.object = 'credit_note'
CREATE TABLE stripe."credit_notes" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "invoice" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'invoice') WHEN 'string' THEN data->>'invoice' WHEN 'object' THEN data->'invoice'->>'id' END) STORED,
    "number" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'number') = 'string' THEN data->>'number' END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "amount_shipping" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_shipping') = 'number' AND abs((data->>'amount_shipping')::numeric) < 9e18 THEN trunc((data->>'amount_shipping')::numeric)::bigint END) STORED,
    "discount_amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'discount_amount') = 'number' AND abs((data->>'discount_amount')::numeric) < 9e18 THEN trunc((data->>'discount_amount')::numeric)::bigint END) STORED,
    "pre_payment_amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'pre_payment_amount') = 'number' AND abs((data->>'pre_payment_amount')::numeric) < 9e18 THEN trunc((data->>'pre_payment_amount')::numeric)::bigint END) STORED,
    "post_payment_amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'post_payment_amount') = 'number' AND abs((data->>'post_payment_amount')::numeric) < 9e18 THEN trunc((data->>'post_payment_amount')::numeric)::bigint END) STORED,
    "total" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'total') = 'number' AND abs((data->>'total')::numeric) < 9e18 THEN trunc((data->>'total')::numeric)::bigint END) STORED,
    "subtotal" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'subtotal') = 'number' AND abs((data->>'subtotal')::numeric) < 9e18 THEN trunc((data->>'subtotal')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "reason" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'reason') = 'string' THEN data->>'reason' END) STORED,
    "effective_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'effective_at') = 'number' AND abs((data->>'effective_at')::numeric) < 1e11 THEN to_timestamp((data->>'effective_at')::double precision) END) STORED,
    "voided_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'voided_at') = 'number' AND abs((data->>'voided_at')::numeric) < 1e11 THEN to_timestamp((data->>'voided_at')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "credit_notes_created_idx" ON stripe."credit_notes" (account, "created");
CREATE INDEX "credit_notes_customer_idx" ON stripe."credit_notes" (account, "customer");
CREATE INDEX "credit_notes_invoice_idx" ON stripe."credit_notes" (account, "invoice");
CREATE TABLE stripe."credit_note_line_items" (
    account text NOT NULL,
    "credit_note" text NOT NULL,
    id text NOT NULL,
    position integer NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "quantity" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'quantity') = 'number' AND abs((data->>'quantity')::numeric) < 9e18 THEN trunc((data->>'quantity')::numeric)::bigint END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "invoice_line_item" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'invoice_line_item') WHEN 'string' THEN data->>'invoice_line_item' WHEN 'object' THEN data->'invoice_line_item'->>'id' END) STORED,
    "description" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'description') = 'string' THEN data->>'description' END) STORED,
    PRIMARY KEY (account, "credit_note", id)
) WITH (toast_tuple_target = 8160);

-- invoice_payments: data.object.object = 'invoice_payment'
CREATE TABLE stripe."invoice_payments" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "invoice" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'invoice') WHEN 'string' THEN data->>'invoice' WHEN 'object' THEN data->'invoice'->>'id' END) STORED,
    "amount_paid" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_paid') = 'number' AND abs((data->>'amount_paid')::numeric) < 9e18 THEN trunc((data->>'amount_paid')::numeric)::bigint END) STORED,
    "amount_requested" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_requested') = 'number' AND abs((data->>'amount_requested')::numeric) < 9e18 THEN trunc((data->>'amount_requested')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "is_default" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'is_default') = 'boolean' THEN (data->'is_default')::boolean END) STORED,
    "payment_intent" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'payment'->'payment_intent') WHEN 'string' THEN data->'payment'->>'payment_intent' WHEN 'object' THEN data->'payment'->'payment_intent'->>'id' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "invoice_payments_created_idx" ON stripe."invoice_payments" (account, "created");
CREATE INDEX "invoice_payments_invoice_idx" ON stripe."invoice_payments" (account, "invoice");
CREATE INDEX "invoice_payments_payment_intent_idx" ON stripe."invoice_payments" (account, "payment_intent");

-- quotes: data.object.object = 'quote'
CREATE TABLE stripe."quotes" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "amount_subtotal" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_subtotal') = 'number' AND abs((data->>'amount_subtotal')::numeric) < 9e18 THEN trunc((data->>'amount_subtotal')::numeric)::bigint END) STORED,
    "amount_total" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_total') = 'number' AND abs((data->>'amount_total')::numeric) < 9e18 THEN trunc((data->>'amount_total')::numeric)::bigint END) STORED,
    "application_fee_amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'application_fee_amount') = 'number' AND abs((data->>'application_fee_amount')::numeric) < 9e18 THEN trunc((data->>'application_fee_amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "invoice" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'invoice') WHEN 'string' THEN data->>'invoice' WHEN 'object' THEN data->'invoice'->>'id' END) STORED,
    "subscription" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'subscription') WHEN 'string' THEN data->>'subscription' WHEN 'object' THEN data->'subscription'->>'id' END) STORED,
    "number" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'number') = 'string' THEN data->>'number' END) STORED,
    "expires_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'expires_at') = 'number' AND abs((data->>'expires_at')::numeric) < 1e11 THEN to_timestamp((data->>'expires_at')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "quotes_created_idx" ON stripe."quotes" (account, "created");
CREATE INDEX "quotes_customer_idx" ON stripe."quotes" (account, "customer");
CREATE INDEX "quotes_invoice_idx" ON stripe."quotes" (account, "invoice");
CREATE INDEX "quotes_subscription_idx" ON stripe."quotes" (account, "subscription");

-- payouts: data.object.object = 'payout'
CREATE TABLE stripe."payouts" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "application_fee_amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'application_fee_amount') = 'number' AND abs((data->>'application_fee_amount')::numeric) < 9e18 THEN trunc((data->>'application_fee_amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "arrival_date" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'arrival_date') = 'number' AND abs((data->>'arrival_date')::numeric) < 1e11 THEN to_timestamp((data->>'arrival_date')::double precision) END) STORED,
    "method" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'method') = 'string' THEN data->>'method' END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "destination" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'destination') WHEN 'string' THEN data->>'destination' WHEN 'object' THEN data->'destination'->>'id' END) STORED,
    "balance_transaction" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'balance_transaction') WHEN 'string' THEN data->>'balance_transaction' WHEN 'object' THEN data->'balance_transaction'->>'id' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "payouts_created_idx" ON stripe."payouts" (account, "created");

-- transfers: data.object.object = 'transfer'
CREATE TABLE stripe."transfers" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "amount_reversed" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_reversed') = 'number' AND abs((data->>'amount_reversed')::numeric) < 9e18 THEN trunc((data->>'amount_reversed')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "destination" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'destination') WHEN 'string' THEN data->>'destination' WHEN 'object' THEN data->'destination'->>'id' END) STORED,
    "destination_payment" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'destination_payment') WHEN 'string' THEN data->>'destination_payment' WHEN 'object' THEN data->'destination_payment'->>'id' END) STORED,
    "source_transaction" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'source_transaction') WHEN 'string' THEN data->>'source_transaction' WHEN 'object' THEN data->'source_transaction'->>'id' END) STORED,
    "transfer_group" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'transfer_group') = 'string' THEN data->>'transfer_group' END) STORED,
    "reversed" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'reversed') = 'boolean' THEN (data->'reversed')::boolean END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "transfers_created_idx" ON stripe."transfers" (account, "created");

-- topups: data.object.object = 'topup'
CREATE TABLE stripe."topups" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "expected_availability_date" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'expected_availability_date') = 'number' AND abs((data->>'expected_availability_date')::numeric) < 1e11 THEN to_timestamp((data->>'expected_availability_date')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "topups_created_idx" ON stripe."topups" (account, "created");

-- application_fees: data.object.object = 'application_fee'
CREATE TABLE stripe."application_fees" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "amount_refunded" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_refunded') = 'number' AND abs((data->>'amount_refunded')::numeric) < 9e18 THEN trunc((data->>'amount_refunded')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "connected_account" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'account') WHEN 'string' THEN data->>'account' WHEN 'object' THEN data->'account'->>'id' END) STORED,
    "charge" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'charge') WHEN 'string' THEN data->>'charge' WHEN 'object' THEN data->'charge'->>'id' END) STORED,
    "refunded" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'refunded') = 'boolean' THEN (data->'refunded')::boolean END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "application_fees_created_idx" ON stripe."application_fees" (account, "created");
CREATE INDEX "application_fees_charge_idx" ON stripe."application_fees" (account, "charge");

-- files: data.object.object = 'file'
CREATE TABLE stripe."files" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "purpose" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'purpose') = 'string' THEN data->>'purpose' END) STORED,
    "filename" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'filename') = 'string' THEN data->>'filename' END) STORED,
    "size" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'size') = 'number' AND abs((data->>'size')::numeric) < 9e18 THEN trunc((data->>'size')::numeric)::bigint END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "expires_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'expires_at') = 'number' AND abs((data->>'expires_at')::numeric) < 1e11 THEN to_timestamp((data->>'expires_at')::double precision) END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "files_created_idx" ON stripe."files" (account, "created");

-- test_helpers_test_clocks: data.object.object = 'test_helpers.test_clock'
CREATE TABLE stripe."test_helpers_test_clocks" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "frozen_time" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'frozen_time') = 'number' AND abs((data->>'frozen_time')::numeric) < 1e11 THEN to_timestamp((data->>'frozen_time')::double precision) END) STORED,
    "deletes_after" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'deletes_after') = 'number' AND abs((data->>'deletes_after')::numeric) < 1e11 THEN to_timestamp((data->>'deletes_after')::double precision) END) STORED,
    "name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'name') = 'string' THEN data->>'name' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "test_helpers_test_clocks_created_idx" ON stripe."test_helpers_test_clocks" (account, "created");

-- billing_portal_configurations: data.object.object = 'billing_portal.configuration'
CREATE TABLE stripe."billing_portal_configurations" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "active" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'active') = 'boolean' THEN (data->'active')::boolean END) STORED,
    "is_default" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'is_default') = 'boolean' THEN (data->'is_default')::boolean END) STORED,
    "updated" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'updated') = 'number' AND abs((data->>'updated')::numeric) < 1e11 THEN to_timestamp((data->>'updated')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "billing_portal_configurations_created_idx" ON stripe."billing_portal_configurations" (account, "created");

-- identity_verification_sessions: data.object.object = 'identity.verification_session'
CREATE TABLE stripe."identity_verification_sessions" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "identity_verification_sessions_created_idx" ON stripe."identity_verification_sessions" (account, "created");

-- issuing_cardholders: data.object.object = 'issuing.cardholder'
CREATE TABLE stripe."issuing_cardholders" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'name') = 'string' THEN data->>'name' END) STORED,
    "email" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'email') = 'string' THEN data->>'email' END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "issuing_cardholders_created_idx" ON stripe."issuing_cardholders" (account, "created");

-- issuing_cards: data.object.object = 'issuing.card'
CREATE TABLE stripe."issuing_cards" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "cardholder" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'cardholder'->'id') = 'string' THEN data->'cardholder'->>'id' END) STORED,
    "last4" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'last4') = 'string' THEN data->>'last4' END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "issuing_cards_created_idx" ON stripe."issuing_cards" (account, "created");

-- issuing_authorizations: data.object.object = 'issuing.authorization'
CREATE TABLE stripe."issuing_authorizations" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "merchant_amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'merchant_amount') = 'number' AND abs((data->>'merchant_amount')::numeric) < 9e18 THEN trunc((data->>'merchant_amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "approved" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'approved') = 'boolean' THEN (data->'approved')::boolean END) STORED,
    "card" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'card'->'id') = 'string' THEN data->'card'->>'id' END) STORED,
    "cardholder" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'cardholder') WHEN 'string' THEN data->>'cardholder' WHEN 'object' THEN data->'cardholder'->>'id' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "issuing_authorizations_created_idx" ON stripe."issuing_authorizations" (account, "created");

-- issuing_transactions: data.object.object = 'issuing.transaction'
CREATE TABLE stripe."issuing_transactions" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "merchant_amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'merchant_amount') = 'number' AND abs((data->>'merchant_amount')::numeric) < 9e18 THEN trunc((data->>'merchant_amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "card" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'card') WHEN 'string' THEN data->>'card' WHEN 'object' THEN data->'card'->>'id' END) STORED,
    "cardholder" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'cardholder') WHEN 'string' THEN data->>'cardholder' WHEN 'object' THEN data->'cardholder'->>'id' END) STORED,
    "authorization" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'authorization') WHEN 'string' THEN data->>'authorization' WHEN 'object' THEN data->'authorization'->>'id' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "issuing_transactions_created_idx" ON stripe."issuing_transactions" (account, "created");

-- issuing_disputes: data.object.object = 'issuing.dispute'
CREATE TABLE stripe."issuing_disputes" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "transaction" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'transaction') WHEN 'string' THEN data->>'transaction' WHEN 'object' THEN data->'transaction'->>'id' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "issuing_disputes_created_idx" ON stripe."issuing_disputes" (account, "created");

-- reporting_report_runs: data.object.object = 'reporting.report_run'
CREATE TABLE stripe."reporting_report_runs" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "report_type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'report_type') = 'string' THEN data->>'report_type' END) STORED,
    "succeeded_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'succeeded_at') = 'number' AND abs((data->>'succeeded_at')::numeric) < 1e11 THEN to_timestamp((data->>'succeeded_at')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "reporting_report_runs_created_idx" ON stripe."reporting_report_runs" (account, "created");

-- treasury_financial_accounts: data.object.object = 'treasury.financial_account'
CREATE TABLE stripe."treasury_financial_accounts" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "country" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'country') = 'string' THEN data->>'country' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "treasury_financial_accounts_created_idx" ON stripe."treasury_financial_accounts" (account, "created");

-- climate_orders: data.object.object = 'climate.order'
CREATE TABLE stripe."climate_orders" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "amount_total" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_total') = 'number' AND abs((data->>'amount_total')::numeric) < 9e18 THEN trunc((data->>'amount_total')::numeric)::bigint END) STORED,
    "amount_subtotal" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_subtotal') = 'number' AND abs((data->>'amount_subtotal')::numeric) < 9e18 THEN trunc((data->>'amount_subtotal')::numeric)::bigint END) STORED,
    "amount_fees" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount_fees') = 'number' AND abs((data->>'amount_fees')::numeric) < 9e18 THEN trunc((data->>'amount_fees')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "product" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'product') WHEN 'string' THEN data->>'product' WHEN 'object' THEN data->'product'->>'id' END) STORED,
    "canceled_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'canceled_at') = 'number' AND abs((data->>'canceled_at')::numeric) < 1e11 THEN to_timestamp((data->>'canceled_at')::double precision) END) STORED,
    "confirmed_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'confirmed_at') = 'number' AND abs((data->>'confirmed_at')::numeric) < 1e11 THEN to_timestamp((data->>'confirmed_at')::double precision) END) STORED,
    "delayed_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'delayed_at') = 'number' AND abs((data->>'delayed_at')::numeric) < 1e11 THEN to_timestamp((data->>'delayed_at')::double precision) END) STORED,
    "delivered_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'delivered_at') = 'number' AND abs((data->>'delivered_at')::numeric) < 1e11 THEN to_timestamp((data->>'delivered_at')::double precision) END) STORED,
    "product_substituted_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'product_substituted_at') = 'number' AND abs((data->>'product_substituted_at')::numeric) < 1e11 THEN to_timestamp((data->>'product_substituted_at')::double precision) END) STORED,
    "expected_delivery_year" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'expected_delivery_year') = 'number' AND abs((data->>'expected_delivery_year')::numeric) < 9e18 THEN trunc((data->>'expected_delivery_year')::numeric)::bigint END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "climate_orders_created_idx" ON stripe."climate_orders" (account, "created");
CREATE INDEX "climate_orders_product_idx" ON stripe."climate_orders" (account, "product");


-- Connect: a local row may be linked once per account of a service, not
-- once per service.
ALTER TABLE id_map DROP CONSTRAINT id_map_local_unique;
ALTER TABLE id_map ADD CONSTRAINT id_map_local_unique UNIQUE (service, account, entity, local_id);
