-- Dead letters put back on their source topic (`stripe-sync dlq replay`),
-- so `dlq list` can tell what is still waiting for an operator.
CREATE TABLE dlq_replays (
    dlq_topic   text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    replayed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, partition, "offset")
);
