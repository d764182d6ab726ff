-- Credits (src/apps/credits): packages of in-app credits bought with a
-- saved card, spent in the app, and an append-only ledger that credits
-- each payment exactly once whichever path learns of it first: the API's
-- own answer from Stripe or the mirror's copy of the payment intent
-- (webhook, reconcile, backfill), through the trigger below.
CREATE SCHEMA credits;

-- What is on sale. A purchase copies price, currency and credits, so a
-- later change here never alters what was sold.
CREATE TABLE credits.packages (
    id text PRIMARY KEY,
    name text NOT NULL,
    price bigint NOT NULL CHECK (price > 0),
    currency text NOT NULL,
    credits bigint NOT NULL CHECK (credits > 0),
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO credits.packages (id, name, price, currency, credits) VALUES
    ('package_1', 'Starter Pack', 1000, 'usd', 100),
    ('package_2', 'Popular Pack', 2500, 'usd', 300),
    ('package_3', 'Premium Pack', 5000, 'usd', 700);

-- One row per purchase, written before Stripe is asked (its id goes into
-- the payment intent's metadata), so a payment that succeeds while serve
-- is down is still found and credited by the webhook.
CREATE TABLE credits.purchases (
    id uuid PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers (id),
    package_id text NOT NULL REFERENCES credits.packages (id),
    credits bigint NOT NULL,
    price bigint NOT NULL,
    currency text NOT NULL,
    -- The Idempotency-Key sent to Stripe (derived from the client's): a
    -- retry of the request finds this row instead of starting another.
    request_key text NOT NULL UNIQUE,
    payment_intent text UNIQUE,
    status text NOT NULL DEFAULT 'processing'
        CHECK (status IN ('processing', 'pending', 'requires_action', 'succeeded', 'failed')),
    error_code text,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX purchases_customer_idx ON credits.purchases (customer_id, created_at DESC, id DESC);

-- A customer's balance, changed only in the transaction that appends its
-- ledger entry (credits.post_entry).
CREATE TABLE credits.balances (
    customer_id uuid PRIMARY KEY REFERENCES customers (id),
    balance bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Append-only. `source` is what the entry is for, unique:
--   purchase  'payment_intent:pi_…'
--   spend     'spend:<customer>:<Idempotency-Key>'
--   refund    'refund:re_…' or 'charge:ch_…:<amount_refunded>'
--   adjustment whatever the operator names it
-- so a second delivery of the same fact finds its entry and changes nothing.
CREATE TABLE credits.ledger (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id uuid NOT NULL REFERENCES customers (id),
    kind text NOT NULL CHECK (kind IN ('purchase', 'spend', 'refund', 'adjustment')),
    credits bigint NOT NULL,
    source text NOT NULL UNIQUE,
    purchase_id uuid REFERENCES credits.purchases (id),
    reason text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_customer_idx ON credits.ledger (customer_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX ledger_one_credit_per_purchase ON credits.ledger (purchase_id)
    WHERE kind = 'purchase';

CREATE FUNCTION credits.refuse_rewrite() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credits.ledger is append-only: correct an entry with an adjustment';
END
$$;
CREATE TRIGGER ledger_is_append_only
BEFORE UPDATE OR DELETE ON credits.ledger
FOR EACH ROW EXECUTE FUNCTION credits.refuse_rewrite();

-- Appends an entry and moves the balance by it, once per source: the new
-- balance, or NULL when an entry for `p_source` already exists.
CREATE FUNCTION credits.post_entry(
    p_customer uuid, p_kind text, p_credits bigint, p_source text,
    p_purchase uuid, p_reason text
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_balance bigint;
BEGIN
    INSERT INTO credits.ledger (customer_id, kind, credits, source, purchase_id, reason)
    VALUES (p_customer, p_kind, p_credits, p_source, p_purchase, p_reason)
    ON CONFLICT (source) DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO credits.balances AS b (customer_id, balance)
    VALUES (p_customer, p_credits)
    ON CONFLICT (customer_id)
    DO UPDATE SET balance = b.balance + EXCLUDED.balance, updated_at = now()
    RETURNING balance INTO new_balance;
    RETURN new_balance;
END
$$;

-- Debits the refunded share of a credited purchase's credits, rounded
-- down, as far as the mirror knows it refunded (the larger of its
-- succeeded refunds and its charges' amount_refunded). Cumulative, so
-- duplicates, reordering and both webhooks of one refund (refund.*,
-- charge.refunded) debit it once.
CREATE FUNCTION credits.settle_refunds(p_purchase uuid, p_source text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p credits.purchases%ROWTYPE;
    refunded bigint;
    owed bigint;
    debited bigint;
BEGIN
    SELECT * INTO p FROM credits.purchases WHERE id = p_purchase FOR UPDATE;
    IF NOT FOUND OR p.status <> 'succeeded' OR p.payment_intent IS NULL THEN
        RETURN;
    END IF;
    SELECT GREATEST(
        (SELECT COALESCE(sum(amount), 0) FROM stripe.refunds
         WHERE account = 'platform' AND payment_intent = p.payment_intent
           AND status = 'succeeded'),
        (SELECT COALESCE(max(amount_refunded), 0) FROM stripe.charges
         WHERE account = 'platform' AND payment_intent = p.payment_intent)
    ) INTO refunded;
    owed := (p.credits * LEAST(refunded, p.price)) / p.price;
    SELECT COALESCE(-sum(credits), 0) INTO debited FROM credits.ledger
    WHERE purchase_id = p.id AND kind = 'refund';
    IF owed > debited THEN
        PERFORM credits.post_entry(p.customer_id, 'refund', debited - owed, p_source, p.id,
                                   'refund of ' || p.payment_intent);
    END IF;
END
$$;

-- Credits a purchase once: its entry, the balance and its status move in
-- one transaction, under the purchase's row lock (the API and the mirror
-- may both get here; the second finds it succeeded). TRUE when this call
-- credited it.
CREATE FUNCTION credits.credit_purchase(p_purchase uuid, p_intent text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    p credits.purchases%ROWTYPE;
BEGIN
    SELECT * INTO p FROM credits.purchases WHERE id = p_purchase FOR UPDATE;
    IF NOT FOUND OR p.status = 'succeeded' THEN
        RETURN false;
    END IF;
    IF p.payment_intent IS NOT NULL AND p.payment_intent <> p_intent THEN
        RAISE WARNING 'purchase % belongs to %, not %', p.id, p.payment_intent, p_intent;
        RETURN false;
    END IF;
    PERFORM credits.post_entry(p.customer_id, 'purchase', p.credits,
                               'payment_intent:' || p_intent, p.id, p.package_id);
    UPDATE credits.purchases
    SET status = 'succeeded', payment_intent = p_intent, error_code = NULL, error = NULL,
        updated_at = now()
    WHERE id = p.id;
    -- A refund the mirror stored before the payment's success (another
    -- lane) is debited now.
    PERFORM credits.settle_refunds(p.id, 'charge:' || p_intent || ':at-credit');
    RETURN true;
END
$$;

-- The purchase a payment intent's metadata names, when the intent is for
-- exactly what was sold (a payment for another amount credits nothing).
CREATE FUNCTION credits.purchase_of(intent stripe.payment_intents) RETURNS uuid
LANGUAGE plpgsql STABLE AS $$
DECLARE
    named text := intent.data->'metadata'->>'stripe_sync_purchase';
    found_id uuid;
BEGIN
    IF named IS NULL OR named !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RETURN NULL;
    END IF;
    SELECT id INTO found_id FROM credits.purchases
    WHERE id = named::uuid AND price = intent.amount AND currency = intent.currency;
    IF NOT FOUND THEN
        RAISE WARNING 'payment intent % names purchase % but does not match it', intent.id, named;
    END IF;
    RETURN found_id;
END
$$;

-- Every payment intent the mirror stores moves the purchase it names.
CREATE FUNCTION credits.follow_payment_intent() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    purchase uuid := credits.purchase_of(NEW);
BEGIN
    IF purchase IS NULL THEN
        RETURN NULL;
    END IF;
    IF NEW.status = 'succeeded' THEN
        PERFORM credits.credit_purchase(purchase, NEW.id);
    ELSE
        UPDATE credits.purchases
        SET payment_intent = COALESCE(payment_intent, NEW.id),
            status = CASE
                WHEN NEW.status = 'processing' THEN 'pending'
                WHEN NEW.status = 'requires_action' THEN 'requires_action'
                WHEN NEW.status = 'canceled' THEN 'failed'
                WHEN NEW.status = 'requires_payment_method'
                     AND jsonb_typeof(NEW.data->'last_payment_error') = 'object' THEN 'failed'
                ELSE status
            END,
            error_code = CASE WHEN NEW.status IN ('canceled', 'requires_payment_method')
                              THEN COALESCE(NEW.data->'last_payment_error'->>'code', error_code)
                              ELSE error_code END,
            error = CASE WHEN NEW.status IN ('canceled', 'requires_payment_method')
                         THEN COALESCE(NEW.data->'last_payment_error'->>'message', error)
                         ELSE error END,
            updated_at = now()
        WHERE id = purchase AND status <> 'succeeded'
          AND (payment_intent IS NULL OR payment_intent = NEW.id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER payment_intents_credit_purchases
AFTER INSERT OR UPDATE ON stripe.payment_intents
FOR EACH ROW WHEN (NEW.account = 'platform' AND NOT NEW.deleted
                   AND NEW.data->'metadata' ? 'stripe_sync_purchase')
EXECUTE FUNCTION credits.follow_payment_intent();

-- Refunds and refunded charges the mirror stores debit the purchase paid
-- by their payment intent.
CREATE FUNCTION credits.follow_refund() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    purchase uuid;
BEGIN
    SELECT id INTO purchase FROM credits.purchases WHERE payment_intent = NEW.payment_intent;
    IF FOUND THEN
        PERFORM credits.settle_refunds(purchase,
            CASE TG_TABLE_NAME
                WHEN 'refunds' THEN 'refund:' || NEW.id
                ELSE 'charge:' || NEW.id || ':' || (NEW.data->>'amount_refunded')
            END);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER refunds_debit_credits
AFTER INSERT OR UPDATE ON stripe.refunds
FOR EACH ROW WHEN (NEW.account = 'platform' AND NOT NEW.deleted
                   AND NEW.payment_intent IS NOT NULL AND NEW.status = 'succeeded')
EXECUTE FUNCTION credits.follow_refund();

CREATE TRIGGER charges_debit_credits
AFTER INSERT OR UPDATE ON stripe.charges
FOR EACH ROW WHEN (NEW.account = 'platform' AND NOT NEW.deleted
                   AND NEW.payment_intent IS NOT NULL AND NEW.amount_refunded > 0)
EXECUTE FUNCTION credits.follow_refund();
