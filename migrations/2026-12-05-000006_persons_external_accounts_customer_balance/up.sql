-- A connected account's persons and external accounts (bank accounts and
-- cards), kept under it, and customers' balance transactions
-- (registry::Listing::Nested): printed by
-- `stripe-sync catalog ddl person bank_account card customer_balance_transaction`.
-- persons: data.object.object = 'person'
CREATE TABLE stripe."persons" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "first_name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'first_name') = 'string' THEN data->>'first_name' END) STORED,
    "last_name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'last_name') = 'string' THEN data->>'last_name' END) STORED,
    "representative" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'relationship'->'representative') = 'boolean' THEN (data->'relationship'->'representative')::boolean END) STORED,
    "owner" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'relationship'->'owner') = 'boolean' THEN (data->'relationship'->'owner')::boolean END) STORED,
    "director" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'relationship'->'director') = 'boolean' THEN (data->'relationship'->'director')::boolean END) STORED,
    "executive" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'relationship'->'executive') = 'boolean' THEN (data->'relationship'->'executive')::boolean END) STORED,
    "title" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'relationship'->'title') = 'string' THEN data->'relationship'->>'title' END) STORED,
    "verification_status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'verification'->'status') = 'string' THEN data->'verification'->>'status' END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "persons_created_idx" ON stripe."persons" (account, "created");

-- bank_accounts: data.object.object = 'bank_account'
CREATE TABLE stripe."bank_accounts" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "bank_name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'bank_name') = 'string' THEN data->>'bank_name' END) STORED,
    "country" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'country') = 'string' THEN data->>'country' END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "last4" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'last4') = 'string' THEN data->>'last4' END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "account_holder_type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'account_holder_type') = 'string' THEN data->>'account_holder_type' END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);

-- cards: data.object.object = 'card'
CREATE TABLE stripe."cards" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "brand" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'brand') = 'string' THEN data->>'brand' END) STORED,
    "country" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'country') = 'string' THEN data->>'country' END) STORED,
    "last4" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'last4') = 'string' THEN data->>'last4' END) STORED,
    "exp_month" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'exp_month') = 'number' AND abs((data->>'exp_month')::numeric) < 9e18 THEN trunc((data->>'exp_month')::numeric)::bigint END) STORED,
    "exp_year" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'exp_year') = 'number' AND abs((data->>'exp_year')::numeric) < 9e18 THEN trunc((data->>'exp_year')::numeric)::bigint END) STORED,
    "funding" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'funding') = 'string' THEN data->>'funding' END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);

-- customer_balance_transactions: data.object.object = 'customer_balance_transaction'
CREATE TABLE stripe."customer_balance_transactions" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "ending_balance" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'ending_balance') = 'number' AND abs((data->>'ending_balance')::numeric) < 9e18 THEN trunc((data->>'ending_balance')::numeric)::bigint END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "invoice" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'invoice') WHEN 'string' THEN data->>'invoice' WHEN 'object' THEN data->'invoice'->>'id' END) STORED,
    "credit_note" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'credit_note') WHEN 'string' THEN data->>'credit_note' WHEN 'object' THEN data->'credit_note'->>'id' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "customer_balance_transactions_created_idx" ON stripe."customer_balance_transactions" (account, "created");
CREATE INDEX "customer_balance_transactions_customer_idx" ON stripe."customer_balance_transactions" (account, "customer");
CREATE INDEX "customer_balance_transactions_invoice_idx" ON stripe."customer_balance_transactions" (account, "invoice");

