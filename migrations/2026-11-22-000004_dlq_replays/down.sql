DROP TABLE dlq_replays;
