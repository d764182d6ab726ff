COMMENT ON TABLE payments.idempotency_keys IS NULL;
ALTER TABLE credits.purchases DROP COLUMN payment_method;
