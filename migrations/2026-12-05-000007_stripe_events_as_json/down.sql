ALTER TABLE stripe.events ALTER COLUMN data TYPE jsonb USING data::jsonb;
