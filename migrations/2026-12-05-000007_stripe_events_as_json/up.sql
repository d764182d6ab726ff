-- stripe.events keeps each body as the text Stripe sent (json), not
-- re-encoded (jsonb): it is what was received, byte for byte, costs the
-- apply far less to write (jsonb decodes and re-encodes every body in
-- the batch's transaction), and takes bodies jsonb refuses (a lone UTF-16
-- surrogate in a field the engine does not read). The `->`, `->>` and
-- `#>>` operators read it the same way.
ALTER TABLE stripe.events ALTER COLUMN data TYPE json USING data::json;
