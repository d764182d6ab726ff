-- Where a change to a local row came from: 'local' (the API), or the
-- service whose report of its own object changed the row ('stripe',
-- 'salesforce'). Each outbound worker skips changes of its own origin, so
-- a remote edit reaches the other services and never echoes back to the
-- one it came from.
ALTER TABLE outbox ADD COLUMN origin text NOT NULL DEFAULT 'local';
