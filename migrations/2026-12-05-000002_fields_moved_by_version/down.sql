-- The columns as the first catalog migration computed them.
ALTER TABLE stripe."invoices" DROP COLUMN "subscription";
ALTER TABLE stripe."invoices" ADD COLUMN "subscription" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'subscription') WHEN 'string' THEN data->>'subscription' WHEN 'object' THEN data->'subscription'->>'id' END) STORED;
CREATE INDEX "invoices_subscription_idx" ON stripe."invoices" (account, "subscription");
ALTER TABLE stripe."invoice_line_items" DROP COLUMN "subscription";
ALTER TABLE stripe."invoice_line_items" ADD COLUMN "subscription" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'subscription') WHEN 'string' THEN data->>'subscription' WHEN 'object' THEN data->'subscription'->>'id' END) STORED;
CREATE INDEX "invoice_line_items_subscription_idx" ON stripe."invoice_line_items" (account, "subscription");
ALTER TABLE stripe."invoice_line_items" DROP COLUMN "price";
ALTER TABLE stripe."invoice_line_items" ADD COLUMN "price" text GENERATED ALWAYS AS (CASE jsonb_typeof(data->'pricing'->'price_details'->'price') WHEN 'string' THEN data->'pricing'->'price_details'->>'price' WHEN 'object' THEN data->'pricing'->'price_details'->'price'->>'id' END) STORED;
CREATE INDEX "invoice_line_items_price_idx" ON stripe."invoice_line_items" (account, "price");
