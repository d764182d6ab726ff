DROP TABLE orders.export_batches;
ALTER TABLE orders.notifications DROP COLUMN lease_token;
