CREATE INDEX event_ledger_object_idx ON event_ledger (service, account, object_id);
