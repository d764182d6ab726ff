-- Resumable positions of the pull paths: backfill (list API) per
-- (account, object type) and reconcile (Events API) per account.
CREATE TABLE sync_cursors (
    service      text NOT NULL,
    account      text NOT NULL,
    -- 'backfill:customer', 'events', ...
    stream       text NOT NULL,
    -- backfill: starting_after of the next page; events: unix seconds.
    position     text,
    -- What the position is valid for (e.g. the --created-since filter).
    scope        text NOT NULL DEFAULT '',
    completed_at timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, account, stream)
);
