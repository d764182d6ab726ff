-- Every type the catalog adds in issue 33, and the child lists added to
-- types that had their relation: printed by
-- `stripe-sync catalog ddl` with the names below, as the first catalog
-- migration was.
-- billing_meters: data.object.object = 'billing.meter'
CREATE TABLE stripe."billing_meters" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "display_name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'display_name') = 'string' THEN data->>'display_name' END) STORED,
    "event_name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'event_name') = 'string' THEN data->>'event_name' END) STORED,
    "updated" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'updated') = 'number' AND abs((data->>'updated')::numeric) < 1e11 THEN to_timestamp((data->>'updated')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "billing_meters_created_idx" ON stripe."billing_meters" (account, "created");

-- billing_alerts: data.object.object = 'billing.alert'
CREATE TABLE stripe."billing_alerts" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "alert_type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'alert_type') = 'string' THEN data->>'alert_type' END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "title" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'title') = 'string' THEN data->>'title' END) STORED,
    "meter" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'usage_threshold'->'meter') WHEN 'string' THEN data->'usage_threshold'->>'meter' WHEN 'object' THEN data->'usage_threshold'->'meter'->>'id' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);

-- billing_credit_grants: data.object.object = 'billing.credit_grant'
CREATE TABLE stripe."billing_credit_grants" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "category" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'category') = 'string' THEN data->>'category' END) STORED,
    "amount_value" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount'->'monetary'->'value') = 'number' AND abs((data->'amount'->'monetary'->>'value')::numeric) < 9e18 THEN trunc((data->'amount'->'monetary'->>'value')::numeric)::bigint END) STORED,
    "amount_currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount'->'monetary'->'currency') = 'string' THEN data->'amount'->'monetary'->>'currency' END) STORED,
    "effective_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'effective_at') = 'number' AND abs((data->>'effective_at')::numeric) < 1e11 THEN to_timestamp((data->>'effective_at')::double precision) END) STORED,
    "expires_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'expires_at') = 'number' AND abs((data->>'expires_at')::numeric) < 1e11 THEN to_timestamp((data->>'expires_at')::double precision) END) STORED,
    "voided_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'voided_at') = 'number' AND abs((data->>'voided_at')::numeric) < 1e11 THEN to_timestamp((data->>'voided_at')::double precision) END) STORED,
    "updated" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'updated') = 'number' AND abs((data->>'updated')::numeric) < 1e11 THEN to_timestamp((data->>'updated')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "billing_credit_grants_created_idx" ON stripe."billing_credit_grants" (account, "created");
CREATE INDEX "billing_credit_grants_customer_idx" ON stripe."billing_credit_grants" (account, "customer");

-- billing_credit_balance_transactions: data.object.object = 'billing.credit_balance_transaction'
CREATE TABLE stripe."billing_credit_balance_transactions" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "credit_grant" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'credit_grant') WHEN 'string' THEN data->>'credit_grant' WHEN 'object' THEN data->'credit_grant'->>'id' END) STORED,
    "effective_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'effective_at') = 'number' AND abs((data->>'effective_at')::numeric) < 1e11 THEN to_timestamp((data->>'effective_at')::double precision) END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "billing_credit_balance_transactions_created_idx" ON stripe."billing_credit_balance_transactions" (account, "created");

-- balance_transactions: data.object.object = 'balance_transaction'
CREATE TABLE stripe."balance_transactions" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "fee" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'fee') = 'number' AND abs((data->>'fee')::numeric) < 9e18 THEN trunc((data->>'fee')::numeric)::bigint END) STORED,
    "net" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'net') = 'number' AND abs((data->>'net')::numeric) < 9e18 THEN trunc((data->>'net')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "available_on" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'available_on') = 'number' AND abs((data->>'available_on')::numeric) < 1e11 THEN to_timestamp((data->>'available_on')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "reporting_category" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'reporting_category') = 'string' THEN data->>'reporting_category' END) STORED,
    "source" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'source') WHEN 'string' THEN data->>'source' WHEN 'object' THEN data->'source'->>'id' END) STORED,
    "balance_type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'balance_type') = 'string' THEN data->>'balance_type' END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "balance_transactions_created_idx" ON stripe."balance_transactions" (account, "created");
-- refresh reaches back to the oldest pending transaction (src/pull/refresh.rs).
CREATE INDEX "balance_transactions_pending_idx" ON stripe."balance_transactions" (account, "created")
    WHERE status = 'pending' AND NOT deleted;

-- climate_products: data.object.object = 'climate.product'
CREATE TABLE stripe."climate_products" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'name') = 'string' THEN data->>'name' END) STORED,
    "delivery_year" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'delivery_year') = 'number' AND abs((data->>'delivery_year')::numeric) < 9e18 THEN trunc((data->>'delivery_year')::numeric)::bigint END) STORED,
    "metric_tons_available" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'metric_tons_available') = 'string' THEN data->>'metric_tons_available' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "climate_products_created_idx" ON stripe."climate_products" (account, "created");

-- financial_connections_accounts: data.object.object = 'financial_connections.account'
CREATE TABLE stripe."financial_connections_accounts" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "category" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'category') = 'string' THEN data->>'category' END) STORED,
    "subcategory" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'subcategory') = 'string' THEN data->>'subcategory' END) STORED,
    "institution_name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'institution_name') = 'string' THEN data->>'institution_name' END) STORED,
    "display_name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'display_name') = 'string' THEN data->>'display_name' END) STORED,
    "last4" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'last4') = 'string' THEN data->>'last4' END) STORED,
    "account_holder_customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'account_holder'->'customer') WHEN 'string' THEN data->'account_holder'->>'customer' WHEN 'object' THEN data->'account_holder'->'customer'->>'id' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "financial_connections_accounts_created_idx" ON stripe."financial_connections_accounts" (account, "created");

-- issuing_personalization_designs: data.object.object = 'issuing.personalization_design'
CREATE TABLE stripe."issuing_personalization_designs" (
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
    "lookup_key" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'lookup_key') = 'string' THEN data->>'lookup_key' END) STORED,
    "physical_bundle" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'physical_bundle') WHEN 'string' THEN data->>'physical_bundle' WHEN 'object' THEN data->'physical_bundle'->>'id' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "issuing_personalization_designs_created_idx" ON stripe."issuing_personalization_designs" (account, "created");

-- reporting_report_types: data.object.object = 'reporting.report_type'
CREATE TABLE stripe."reporting_report_types" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'name') = 'string' THEN data->>'name' END) STORED,
    "data_available_start" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'data_available_start') = 'number' AND abs((data->>'data_available_start')::numeric) < 1e11 THEN to_timestamp((data->>'data_available_start')::double precision) END) STORED,
    "data_available_end" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'data_available_end') = 'number' AND abs((data->>'data_available_end')::numeric) < 1e11 THEN to_timestamp((data->>'data_available_end')::double precision) END) STORED,
    "version" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'version') = 'number' AND abs((data->>'version')::numeric) < 9e18 THEN trunc((data->>'version')::numeric)::bigint END) STORED,
    "updated" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'updated') = 'number' AND abs((data->>'updated')::numeric) < 1e11 THEN to_timestamp((data->>'updated')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);

-- scheduled_query_runs: data.object.object = 'scheduled_query_run'
CREATE TABLE stripe."scheduled_query_runs" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "title" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'title') = 'string' THEN data->>'title' END) STORED,
    "data_load_time" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'data_load_time') = 'number' AND abs((data->>'data_load_time')::numeric) < 1e11 THEN to_timestamp((data->>'data_load_time')::double precision) END) STORED,
    "result_available_until" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'result_available_until') = 'number' AND abs((data->>'result_available_until')::numeric) < 1e11 THEN to_timestamp((data->>'result_available_until')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "scheduled_query_runs_created_idx" ON stripe."scheduled_query_runs" (account, "created");

-- terminal_readers: data.object.object = 'terminal.reader'
CREATE TABLE stripe."terminal_readers" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "device_type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'device_type') = 'string' THEN data->>'device_type' END) STORED,
    "label" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'label') = 'string' THEN data->>'label' END) STORED,
    "serial_number" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'serial_number') = 'string' THEN data->>'serial_number' END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "location" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'location') WHEN 'string' THEN data->>'location' WHEN 'object' THEN data->'location'->>'id' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);

-- file_links: data.object.object = 'file_link'
CREATE TABLE stripe."file_links" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "file" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'file') WHEN 'string' THEN data->>'file' WHEN 'object' THEN data->'file'->>'id' END) STORED,
    "expired" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'expired') = 'boolean' THEN (data->'expired')::boolean END) STORED,
    "expires_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'expires_at') = 'number' AND abs((data->>'expires_at')::numeric) < 1e11 THEN to_timestamp((data->>'expires_at')::double precision) END) STORED,
    "url" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'url') = 'string' THEN data->>'url' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "file_links_created_idx" ON stripe."file_links" (account, "created");

-- tax_codes: data.object.object = 'tax_code'
CREATE TABLE stripe."tax_codes" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'name') = 'string' THEN data->>'name' END) STORED,
    "description" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'description') = 'string' THEN data->>'description' END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);

-- tax_registrations: data.object.object = 'tax.registration'
CREATE TABLE stripe."tax_registrations" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "country" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'country') = 'string' THEN data->>'country' END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "active_from" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'active_from') = 'number' AND abs((data->>'active_from')::numeric) < 1e11 THEN to_timestamp((data->>'active_from')::double precision) END) STORED,
    "expires_at" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'expires_at') = 'number' AND abs((data->>'expires_at')::numeric) < 1e11 THEN to_timestamp((data->>'expires_at')::double precision) END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "tax_registrations_created_idx" ON stripe."tax_registrations" (account, "created");

-- webhook_endpoints: data.object.object = 'webhook_endpoint'
CREATE TABLE stripe."webhook_endpoints" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "url" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'url') = 'string' THEN data->>'url' END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "api_version" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'api_version') = 'string' THEN data->>'api_version' END) STORED,
    "description" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'description') = 'string' THEN data->>'description' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "webhook_endpoints_created_idx" ON stripe."webhook_endpoints" (account, "created");

-- payment_method_configurations: data.object.object = 'payment_method_configuration'
CREATE TABLE stripe."payment_method_configurations" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "active" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'active') = 'boolean' THEN (data->'active')::boolean END) STORED,
    "name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'name') = 'string' THEN data->>'name' END) STORED,
    "is_default" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'is_default') = 'boolean' THEN (data->'is_default')::boolean END) STORED,
    "parent" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'parent') = 'string' THEN data->>'parent' END) STORED,
    "application" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'application') = 'string' THEN data->>'application' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);

-- payment_method_domains: data.object.object = 'payment_method_domain'
CREATE TABLE stripe."payment_method_domains" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "domain_name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'domain_name') = 'string' THEN data->>'domain_name' END) STORED,
    "enabled" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'enabled') = 'boolean' THEN (data->'enabled')::boolean END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "payment_method_domains_created_idx" ON stripe."payment_method_domains" (account, "created");

-- radar_value_lists: data.object.object = 'radar.value_list'
CREATE TABLE stripe."radar_value_lists" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "alias" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'alias') = 'string' THEN data->>'alias' END) STORED,
    "name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'name') = 'string' THEN data->>'name' END) STORED,
    "item_type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'item_type') = 'string' THEN data->>'item_type' END) STORED,
    "created_by" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created_by') = 'string' THEN data->>'created_by' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "radar_value_lists_created_idx" ON stripe."radar_value_lists" (account, "created");

-- terminal_locations: data.object.object = 'terminal.location'
CREATE TABLE stripe."terminal_locations" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "display_name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'display_name') = 'string' THEN data->>'display_name' END) STORED,
    "city" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'address'->'city') = 'string' THEN data->'address'->>'city' END) STORED,
    "country" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'address'->'country') = 'string' THEN data->'address'->>'country' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);

-- terminal_configurations: data.object.object = 'terminal.configuration'
CREATE TABLE stripe."terminal_configurations" (
    account text NOT NULL,
    id text NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    remote_version bigint NOT NULL,
    remote_event_id text NOT NULL,
    "name" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'name') = 'string' THEN data->>'name' END) STORED,
    "is_account_default" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'is_account_default') = 'boolean' THEN (data->'is_account_default')::boolean END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, id)
) WITH (toast_tuple_target = 8160);

CREATE TABLE stripe."setup_attempts" (
    account text NOT NULL,
    "setup_intent" text NOT NULL,
    id text NOT NULL,
    position integer NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "status" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'status') = 'string' THEN data->>'status' END) STORED,
    "payment_method" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'payment_method') WHEN 'string' THEN data->>'payment_method' WHEN 'object' THEN data->'payment_method'->>'id' END) STORED,
    "customer" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'customer') WHEN 'string' THEN data->>'customer' WHEN 'object' THEN data->'customer'->>'id' END) STORED,
    "usage" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'usage') = 'string' THEN data->>'usage' END) STORED,
    "livemode" boolean GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'livemode') = 'boolean' THEN (data->'livemode')::boolean END) STORED,
    PRIMARY KEY (account, "setup_intent", id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "setup_attempts_created_idx" ON stripe."setup_attempts" (account, "created");
CREATE INDEX "setup_attempts_customer_idx" ON stripe."setup_attempts" (account, "customer");

CREATE TABLE stripe."payout_balance_transactions" (
    account text NOT NULL,
    "payout" text NOT NULL,
    id text NOT NULL,
    position integer NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "fee" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'fee') = 'number' AND abs((data->>'fee')::numeric) < 9e18 THEN trunc((data->>'fee')::numeric)::bigint END) STORED,
    "net" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'net') = 'number' AND abs((data->>'net')::numeric) < 9e18 THEN trunc((data->>'net')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "type" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'type') = 'string' THEN data->>'type' END) STORED,
    "source" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'source') WHEN 'string' THEN data->>'source' WHEN 'object' THEN data->'source'->>'id' END) STORED,
    PRIMARY KEY (account, "payout", id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "payout_balance_transactions_created_idx" ON stripe."payout_balance_transactions" (account, "created");

CREATE TABLE stripe."transfer_reversals" (
    account text NOT NULL,
    "transfer" text NOT NULL,
    id text NOT NULL,
    position integer NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "balance_transaction" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'balance_transaction') WHEN 'string' THEN data->>'balance_transaction' WHEN 'object' THEN data->'balance_transaction'->>'id' END) STORED,
    "source_refund" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'source_refund') WHEN 'string' THEN data->>'source_refund' WHEN 'object' THEN data->'source_refund'->>'id' END) STORED,
    "destination_payment_refund" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'destination_payment_refund') WHEN 'string' THEN data->>'destination_payment_refund' WHEN 'object' THEN data->'destination_payment_refund'->>'id' END) STORED,
    PRIMARY KEY (account, "transfer", id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "transfer_reversals_created_idx" ON stripe."transfer_reversals" (account, "created");

CREATE TABLE stripe."application_fee_refunds" (
    account text NOT NULL,
    "application_fee" text NOT NULL,
    id text NOT NULL,
    position integer NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now(),
    "created" timestamptz GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'created') = 'number' AND abs((data->>'created')::numeric) < 1e11 THEN to_timestamp((data->>'created')::double precision) END) STORED,
    "amount" bigint GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'amount') = 'number' AND abs((data->>'amount')::numeric) < 9e18 THEN trunc((data->>'amount')::numeric)::bigint END) STORED,
    "currency" text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(data->'currency') = 'string' THEN data->>'currency' END) STORED,
    "balance_transaction" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'balance_transaction') WHEN 'string' THEN data->>'balance_transaction' WHEN 'object' THEN data->'balance_transaction'->>'id' END) STORED,
    PRIMARY KEY (account, "application_fee", id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX "application_fee_refunds_created_idx" ON stripe."application_fee_refunds" (account, "created");

