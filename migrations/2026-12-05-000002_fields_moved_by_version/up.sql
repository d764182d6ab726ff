-- Typed columns whose field Stripe's 2025-03-31.basil version moved read
-- every version's path (registry::Column::moved); printed by
-- `stripe-sync catalog ddl` with the names below. Each column is made
-- again: Postgres 15 cannot change a generated column's expression.
-- stripe.invoices.subscription, computed as the registry says
ALTER TABLE stripe."invoices" DROP COLUMN "subscription";
ALTER TABLE stripe."invoices" ADD COLUMN "subscription" text GENERATED ALWAYS AS (COALESCE(CASE jsonb_typeof(data->'parent'->'subscription_details'->'subscription') WHEN 'string' THEN data->'parent'->'subscription_details'->>'subscription' WHEN 'object' THEN data->'parent'->'subscription_details'->'subscription'->>'id' END, CASE jsonb_typeof(data->'subscription') WHEN 'string' THEN data->>'subscription' WHEN 'object' THEN data->'subscription'->>'id' END)) STORED;
CREATE INDEX "invoices_subscription_idx" ON stripe."invoices" (account, "subscription");

-- stripe.invoice_line_items.subscription, computed as the registry says
ALTER TABLE stripe."invoice_line_items" DROP COLUMN "subscription";
ALTER TABLE stripe."invoice_line_items" ADD COLUMN "subscription" text GENERATED ALWAYS AS (COALESCE(CASE jsonb_typeof(data->'parent'->'subscription_item_details'->'subscription') WHEN 'string' THEN data->'parent'->'subscription_item_details'->>'subscription' WHEN 'object' THEN data->'parent'->'subscription_item_details'->'subscription'->>'id' END, CASE jsonb_typeof(data->'parent'->'invoice_item_details'->'subscription') WHEN 'string' THEN data->'parent'->'invoice_item_details'->>'subscription' WHEN 'object' THEN data->'parent'->'invoice_item_details'->'subscription'->>'id' END, CASE jsonb_typeof(data->'subscription') WHEN 'string' THEN data->>'subscription' WHEN 'object' THEN data->'subscription'->>'id' END)) STORED;
CREATE INDEX "invoice_line_items_subscription_idx" ON stripe."invoice_line_items" (account, "subscription");

-- stripe.invoice_line_items.price, computed as the registry says
ALTER TABLE stripe."invoice_line_items" DROP COLUMN "price";
ALTER TABLE stripe."invoice_line_items" ADD COLUMN "price" text GENERATED ALWAYS AS (COALESCE(CASE jsonb_typeof(data->'pricing'->'price_details'->'price') WHEN 'string' THEN data->'pricing'->'price_details'->>'price' WHEN 'object' THEN data->'pricing'->'price_details'->'price'->>'id' END, CASE jsonb_typeof(data->'price') WHEN 'string' THEN data->>'price' WHEN 'object' THEN data->'price'->>'id' END)) STORED;
CREATE INDEX "invoice_line_items_price_idx" ON stripe."invoice_line_items" (account, "price");

