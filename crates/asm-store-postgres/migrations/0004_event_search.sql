-- asm-store-postgres schema version 4: the index of cross-session event search
-- (QueryStore::search_events / count_events).
--
-- `{schema}` is replaced by the quoted schema name before this runs.
--
-- One index only: every index on asm_events is paid by every append. A session filter uses the
-- primary key (session_id, sequence); this one serves the timestamp orders and time ranges
-- across sessions, with kinds, providers, correlation ids and payload text filtered on the scan.
CREATE INDEX asm_events_ts ON {schema}.asm_events (ts, id);
