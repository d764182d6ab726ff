DROP TABLE event_ledger;
DROP TABLE id_map;
DROP TABLE customers;
