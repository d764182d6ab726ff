ALTER TABLE event_ledger DROP COLUMN echo;
DROP TABLE outbox_deliveries;
DROP TABLE outbox;
DROP INDEX customers_updated_idx;
DROP INDEX customers_created_idx;
ALTER TABLE customers DROP COLUMN version;
