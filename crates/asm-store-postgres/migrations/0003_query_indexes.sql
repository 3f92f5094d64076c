-- asm-store-postgres schema version 3: indexes of the cross-session query port (QueryStore).
--
-- `{schema}` is replaced by the quoted schema name before this runs.

-- search_sessions: keyset pagination on (updated_at, id), the default order, overall and per
-- agent (created_at orders use asm_sessions_listing / asm_sessions_agent of version 1).
CREATE INDEX asm_sessions_updated ON {schema}.asm_sessions (updated_at, id);
CREATE INDEX asm_sessions_agent_updated ON {schema}.asm_sessions (agent_id, updated_at, id);
-- search_runs / usage_summary across sessions: by creation time, overall and per provider.
CREATE INDEX asm_runs_created ON {schema}.asm_runs (created_at, id);
CREATE INDEX asm_runs_provider ON {schema}.asm_runs (provider, created_at, id);
