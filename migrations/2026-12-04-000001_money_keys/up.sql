-- Money paths under retries (issue 29).
--
-- A purchase remembers the payment method it was started with: a retry
-- that resumes it sends Stripe the same request under the same key (which
-- Stripe replays), never one built from today's default card (which Stripe
-- refuses as a reused key while the first intent may have charged).
-- NULL for purchases started before this migration.
ALTER TABLE credits.purchases ADD COLUMN payment_method text;

-- An Idempotency-Key is bound to its first request for good: the row is
-- no longer deleted after 48 hours, so a reuse on another route or for
-- another customer is refused at any age. Nothing else changes; the index
-- on created_at stays for operators who prune by age.
COMMENT ON TABLE payments.idempotency_keys IS
    'Each Idempotency-Key, bound for good to the route (with its customer) and request it was first used with; the final answer retries replay';
