-- No query reads the ledger by object, and this index shares its leading
-- columns with the primary key: with statistics a fast-growing ledger has
-- outrun (a backfill, a backlog), the planner took it for lookups by event
-- id and scanned every row of the account per lookup. Lookups by event id
-- now have only the primary key to use.
DROP INDEX IF EXISTS event_ledger_object_idx;
