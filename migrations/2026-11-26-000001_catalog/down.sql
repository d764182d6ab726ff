ALTER TABLE id_map DROP CONSTRAINT id_map_local_unique;
ALTER TABLE id_map ADD CONSTRAINT id_map_local_unique UNIQUE (service, entity, local_id);
DROP SCHEMA stripe CASCADE;
