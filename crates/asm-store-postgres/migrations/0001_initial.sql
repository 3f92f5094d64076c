-- asm-store-postgres schema version 1.
--
-- `{schema}` is replaced by the quoted schema name and `{channel}` by the NOTIFY channel (a SQL
-- string literal) before this runs; the checksum recorded in asm_schema_migrations is taken of
-- this text before the replacement.
--
-- Lock protocol (what makes the rules hold under concurrent writers in many processes):
--   * every write that adds events to a session or writes one of its runs first takes the
--     session's head row (asm_session_heads) through the one INSERT ... ON CONFLICT DO UPDATE
--     that also reserves the batch's sequence range; so appends, flushes and run writes of one
--     session are serialised on that row, and a check made after taking it (compare-and-append,
--     "no event after a terminal run", run overwrite rules) stays true until the commit;
--   * delete_session first locks the session row FOR UPDATE, then deletes the head row (waiting
--     for the writers that hold it), then the events, the runs (cascade) and the session.

CREATE TABLE {schema}.asm_sessions (
    id                uuid        PRIMARY KEY,
    agent_id          text        NOT NULL,
    status            text        NOT NULL,
    parent_session_id uuid,
    metadata          jsonb       NOT NULL,
    context           jsonb       NOT NULL,
    tags              text[]      NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    deleted_at        timestamptz
);
-- list_sessions: keyset pagination on (created_at, id), filtered by agent / status / tag.
CREATE INDEX asm_sessions_listing ON {schema}.asm_sessions (created_at, id);
CREATE INDEX asm_sessions_agent ON {schema}.asm_sessions (agent_id, created_at, id);
CREATE INDEX asm_sessions_status ON {schema}.asm_sessions (status, created_at, id);
CREATE INDEX asm_sessions_tags ON {schema}.asm_sessions USING gin (tags);

-- The per-session sequence counter: last_sequence is the session's last assigned sequence.
-- Created by the first write of the session; the row lock is the session's write lock.
CREATE TABLE {schema}.asm_session_heads (
    session_id    uuid   PRIMARY KEY REFERENCES {schema}.asm_sessions (id) ON DELETE CASCADE,
    last_sequence bigint NOT NULL CHECK (last_sequence >= 0)
);

CREATE TABLE {schema}.asm_runs (
    id         uuid             PRIMARY KEY,
    session_id uuid             NOT NULL REFERENCES {schema}.asm_sessions (id) ON DELETE CASCADE,
    status     text             NOT NULL,
    created_at timestamptz      NOT NULL,
    started_at timestamptz,
    ended_at   timestamptz,
    provider   text,
    cost_usd   double precision,
    -- The whole run as serde JSON: what get_run returns. The columns above are copies for
    -- indexes and cross-session queries.
    doc        jsonb            NOT NULL
);
CREATE INDEX asm_runs_session ON {schema}.asm_runs (session_id, created_at, id);

-- The append-only log. No foreign key (its per-row check would cost ~25% of an append): the
-- lock protocol above keeps events from outliving their session.
CREATE TABLE {schema}.asm_events (
    session_id     uuid        NOT NULL,
    sequence       bigint      NOT NULL CHECK (sequence >= 1),
    id             uuid        NOT NULL,
    run_id         uuid,
    kind           text        NOT NULL,
    ts             timestamptz NOT NULL,
    schema_version integer     NOT NULL CHECK (schema_version >= 1),
    provider       text,
    correlation_id text,
    -- json, not jsonb: the text is kept exactly (jsonb cannot hold "\u0000", which tool output
    -- may contain) and is cheaper to store.
    data           json        NOT NULL,
    metadata       json        NOT NULL,
    CONSTRAINT asm_events_pkey PRIMARY KEY (session_id, sequence),
    CONSTRAINT asm_events_id_key UNIQUE (id)
);
-- run_id cursor reads.
CREATE INDEX asm_events_run ON {schema}.asm_events (session_id, run_id, sequence) WHERE run_id IS NOT NULL;

-- RFC 7396 JSON merge patch (asm_ports::merge_patch): objects merge recursively, null removes,
-- anything else replaces.
CREATE FUNCTION {schema}.asm_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    k text;
    v jsonb;
    result jsonb;
BEGIN
    IF jsonb_typeof(patch) IS DISTINCT FROM 'object' THEN
        RETURN patch;
    END IF;
    result := CASE WHEN jsonb_typeof(target) = 'object' THEN target ELSE '{}'::jsonb END;
    FOR k, v IN SELECT e.key, e.value FROM jsonb_each(patch) AS e LOOP
        IF jsonb_typeof(v) = 'null' THEN
            result := result - k;
        ELSE
            result := result || jsonb_build_object(k, {schema}.asm_merge_patch(result -> k, v));
        END IF;
    END LOOP;
    RETURN result;
END
$fn$;

-- One atomic write of one session: an append (p_run IS NULL) or a flush (a run, its events and a
-- session metadata patch). Expected refusals are returned as one row with o_error set and write
-- nothing; anything raised rolls the statement (and the caller's transaction) back.
--
-- Result rows:
--   o_error NULL, o_ord NULL:  o_sequence is the last sequence before the new events; the new
--                              events (the positions not returned as stored) follow it in order.
--   o_error NULL, o_ord = n:   the event at position n was stored before: its stored columns.
--   o_error set:               the refusal; o_sequence, o_run, o_detail carry its details.
CREATE FUNCTION {schema}.asm_write(
    p_session      uuid,
    p_expected_seq bigint,
    p_terminal     text[],
    p_run          uuid,
    p_run_status   text,
    p_run_created  timestamptz,
    p_run_started  timestamptz,
    p_run_ended    timestamptz,
    p_run_provider text,
    p_run_cost     double precision,
    p_run_doc      jsonb,
    p_run_from     text[],
    p_run_expected text,
    p_retry        boolean,
    p_patch        jsonb,
    p_ids          uuid[],
    p_runs         uuid[],
    p_kinds        text[],
    p_ts           timestamptz[],
    p_schemas      integer[],
    p_providers    text[],
    p_corrs        text[],
    p_data         json[],
    p_meta         json[]
) RETURNS TABLE (
    o_error    text,
    o_ord      integer,
    o_sequence bigint,
    o_session  uuid,
    o_run      uuid,
    o_kind     text,
    o_ts       timestamptz,
    o_schema   integer,
    o_provider text,
    o_corr     text,
    o_data     json,
    o_meta     json,
    o_detail   text
)
LANGUAGE plpgsql
-- Generic plans: a custom plan (the default for the first calls, and whenever the planner finds
-- it cheaper, which it does for small arrays) costs more to plan than to run.
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_found  integer[];
    v_found_ids uuid[];
    v_new    integer;
    v_last   bigint;
    v_has    boolean;
    v_status text;
    v_rsess  uuid;
    v_doc    jsonb;
    v_bad    uuid;
    v_badst  text;
BEGIN
    -- 1. Events stored before (idempotency by id, across sessions): probes of the unique id
    --    index (the ids of one call are distinct, so array_position finds each one's position).
    SELECT coalesce(array_agg(array_position(p_ids, e.id)), '{}'), coalesce(array_agg(e.id), '{}')
      INTO v_found, v_found_ids
      FROM {schema}.asm_events e WHERE e.id = ANY(p_ids);
    v_new := coalesce(cardinality(p_ids), 0) - cardinality(v_found);

    IF v_new = 0 AND p_run IS NULL THEN
        -- A batch of stored events is a retry: returned without any check but the session's.
        PERFORM 1 FROM {schema}.asm_sessions s WHERE s.id = p_session;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'session_not_found'::text, NULL::integer, NULL::bigint, NULL::uuid, NULL::uuid,
                NULL::text, NULL::timestamptz, NULL::integer, NULL::text, NULL::text, NULL::json, NULL::json, NULL::text;
            RETURN;
        END IF;
        RETURN QUERY SELECT NULL::text, array_position(p_ids, e.id), e.sequence, e.session_id, e.run_id, e.kind,
                e.ts, e.schema_version, e.provider, e.correlation_id, e.data, e.metadata, NULL::text
            FROM {schema}.asm_events e WHERE e.id = ANY(v_found_ids);
        RETURN;
    END IF;

    -- 2. Take the session's head row and reserve the range of the new events in one statement.
    --    No row: the session does not exist.
    INSERT INTO {schema}.asm_session_heads AS h (session_id, last_sequence)
        SELECT s.id, v_new FROM {schema}.asm_sessions s WHERE s.id = p_session
    ON CONFLICT (session_id) DO UPDATE SET last_sequence = h.last_sequence + excluded.last_sequence
    RETURNING h.last_sequence INTO v_last;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'session_not_found'::text, NULL::integer, NULL::bigint, NULL::uuid, NULL::uuid,
            NULL::text, NULL::timestamptz, NULL::integer, NULL::text, NULL::text, NULL::json, NULL::json, NULL::text;
        RETURN;
    END IF;
    v_last := v_last - v_new;

    -- Every refusal below first gives the reserved range back (the head row is still ours), so a
    -- refused write leaves the session exactly as it was.

    -- 3. Compare-and-append.
    IF p_expected_seq IS NOT NULL AND p_expected_seq <> v_last THEN
        UPDATE {schema}.asm_session_heads SET last_sequence = v_last WHERE session_id = p_session;
        RETURN QUERY SELECT 'sequence_conflict'::text, NULL::integer, v_last, NULL::uuid, NULL::uuid,
            NULL::text, NULL::timestamptz, NULL::integer, NULL::text, NULL::text, NULL::json, NULL::json, NULL::text;
        RETURN;
    END IF;

    -- 4. The run of a flush: expected status (compare-and-set), final terminal runs, forward-only
    --    status (p_run_from: the stored statuses the incoming status may follow), one session.
    IF p_run IS NOT NULL THEN
        SELECT r.session_id, r.status, r.doc INTO v_rsess, v_status, v_doc
          FROM {schema}.asm_runs r WHERE r.id = p_run FOR UPDATE;
        v_has := FOUND;
        IF p_run_expected IS NOT NULL AND NOT v_has THEN
            UPDATE {schema}.asm_session_heads SET last_sequence = v_last WHERE session_id = p_session;
            RETURN QUERY SELECT 'run_not_found'::text, NULL::integer, NULL::bigint, NULL::uuid, p_run,
                NULL::text, NULL::timestamptz, NULL::integer, NULL::text, NULL::text, NULL::json, NULL::json, NULL::text;
            RETURN;
        END IF;
        IF p_run_expected IS NOT NULL AND v_status <> p_run_expected
           -- a retried flush that finds its own run already written is not a mismatch
           AND NOT (p_retry AND v_doc = p_run_doc) THEN
            UPDATE {schema}.asm_session_heads SET last_sequence = v_last WHERE session_id = p_session;
            RETURN QUERY SELECT 'status_mismatch'::text, NULL::integer, NULL::bigint, NULL::uuid, p_run,
                NULL::text, NULL::timestamptz, NULL::integer, NULL::text, NULL::text, NULL::json, NULL::json, v_status;
            RETURN;
        END IF;
        IF v_has AND (
               -- a terminal run is final: only an identical copy (errors compare without their
               -- timestamp, as asm_core::Error's PartialEq does) may be written again
               (v_status = ANY(p_terminal)
                AND (v_doc #- '{error,timestamp}') IS DISTINCT FROM (p_run_doc #- '{error,timestamp}'))
               -- a status only moves forward along the state machine
            OR (v_status <> p_run_status AND NOT (v_status = ANY(p_run_from)))) THEN
            UPDATE {schema}.asm_session_heads SET last_sequence = v_last WHERE session_id = p_session;
            RETURN QUERY SELECT 'run_rewrite'::text, NULL::integer, NULL::bigint, NULL::uuid, p_run,
                NULL::text, NULL::timestamptz, NULL::integer, NULL::text, NULL::text, NULL::json, NULL::json, v_status;
            RETURN;
        END IF;
        IF v_has AND v_rsess <> p_session THEN
            UPDATE {schema}.asm_session_heads SET last_sequence = v_last WHERE session_id = p_session;
            RETURN QUERY SELECT 'session_mismatch'::text, NULL::integer, NULL::bigint, NULL::uuid, p_run,
                NULL::text, NULL::timestamptz, NULL::integer, NULL::text, NULL::text, NULL::json, NULL::json, NULL::text;
            RETURN;
        END IF;
    END IF;

    IF v_new > 0 THEN
        -- 5. No new event of a run whose stored state is terminal (the state before this write:
        --    the events of a terminal flush belong to the same write).
        SELECT r.id, r.status INTO v_bad, v_badst
          FROM {schema}.asm_runs r
         WHERE r.session_id = p_session
           AND r.status = ANY(p_terminal)
           AND r.id = ANY(ARRAY(SELECT t.run FROM unnest(p_runs) WITH ORDINALITY AS t(run, ord)
                                 WHERE t.run IS NOT NULL AND NOT (t.ord::integer = ANY(v_found))))
         LIMIT 1;
        IF FOUND THEN
            UPDATE {schema}.asm_session_heads SET last_sequence = v_last WHERE session_id = p_session;
            RETURN QUERY SELECT 'run_terminal'::text, NULL::integer, NULL::bigint, NULL::uuid, v_bad,
                NULL::text, NULL::timestamptz, NULL::integer, NULL::text, NULL::text, NULL::json, NULL::json, v_badst;
            RETURN;
        END IF;

        -- 6. The new events, numbered after v_last in input order.
        INSERT INTO {schema}.asm_events
            (session_id, sequence, id, run_id, kind, ts, schema_version, provider, correlation_id, data, metadata)
        SELECT p_session, v_last + row_number() OVER (ORDER BY t.ord), t.id, t.run, t.kind, t.ts, t.sv,
               t.provider, t.corr, t.data, t.meta
          FROM unnest(p_ids, p_runs, p_kinds, p_ts, p_schemas, p_providers, p_corrs, p_data, p_meta)
               WITH ORDINALITY AS t(id, run, kind, ts, sv, provider, corr, data, meta, ord)
         WHERE NOT (t.ord::integer = ANY(v_found));
        -- Delivered on commit; identical notifications of one transaction are sent once.
        PERFORM pg_notify({channel}, p_session::text);
    END IF;

    -- 7. The run and the session metadata patch of a flush.
    IF p_run IS NOT NULL THEN
        INSERT INTO {schema}.asm_runs AS r
            (id, session_id, status, created_at, started_at, ended_at, provider, cost_usd, doc)
        VALUES (p_run, p_session, p_run_status, p_run_created, p_run_started, p_run_ended, p_run_provider,
                p_run_cost, p_run_doc)
        ON CONFLICT (id) DO UPDATE SET
            status = excluded.status, created_at = excluded.created_at, started_at = excluded.started_at,
            ended_at = excluded.ended_at, provider = excluded.provider, cost_usd = excluded.cost_usd,
            doc = excluded.doc;
        IF p_patch IS NOT NULL AND p_patch <> '{}'::jsonb THEN
            UPDATE {schema}.asm_sessions s SET metadata = {schema}.asm_merge_patch(s.metadata, p_patch)
             WHERE s.id = p_session;
        END IF;
    END IF;

    RETURN QUERY SELECT NULL::text, NULL::integer, v_last, NULL::uuid, NULL::uuid, NULL::text,
        NULL::timestamptz, NULL::integer, NULL::text, NULL::text, NULL::json, NULL::json, NULL::text;
    IF cardinality(v_found) > 0 THEN
        RETURN QUERY SELECT NULL::text, array_position(p_ids, e.id), e.sequence, e.session_id, e.run_id, e.kind,
                e.ts, e.schema_version, e.provider, e.correlation_id, e.data, e.metadata, NULL::text
            FROM {schema}.asm_events e WHERE e.id = ANY(v_found_ids);
    END IF;
END
$fn$;

-- The fast path of group commit: the appends of many callers (of any sessions) in one
-- statement, set-based. It applies only when nothing needs a per-append answer: no event is
-- stored already, every session exists, every compare-and-append precondition holds and no event
-- names a terminal run. Otherwise it raises SQLSTATE ASM01 (rolling back everything it did) and
-- the caller writes the appends through asm_write, which answers each one.
--
-- p_sess / p_sess_count: the distinct sessions (sorted: the lock order) and how many events each
-- gets; p_req_*: per append, its session, precondition and the number of events of the earlier
-- appends of its session in this group; p_chk_*: the distinct (run, session) pairs the events
-- name; p_ev_session / p_ev_rank: per event, its session and its rank (1, 2, ...) among that
-- session's events in this group. Returns each session's last sequence before the group.
CREATE FUNCTION {schema}.asm_append_group(
    p_terminal    text[],
    p_sess        uuid[],
    p_sess_count  integer[],
    p_req_session uuid[],
    p_req_expect  bigint[],
    p_req_offset  bigint[],
    p_chk_run     uuid[],
    p_chk_session uuid[],
    p_ev_session  uuid[],
    p_ev_rank     bigint[],
    p_ids         uuid[],
    p_runs        uuid[],
    p_kinds       text[],
    p_ts          timestamptz[],
    p_schemas     integer[],
    p_providers   text[],
    p_corrs       text[],
    p_data        json[],
    p_meta        json[]
) RETURNS TABLE (o_session uuid, o_base bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_heads_sess uuid[];
    v_heads_base bigint[];
    v_n          bigint;
BEGIN
    -- (count, not LIMIT 1: with a LIMIT the planner may prefer a sequential scan that stops at
    -- the first match, and reads the whole log when there is none, the usual case.)
    SELECT count(*) INTO v_n FROM {schema}.asm_events e WHERE e.id = ANY(p_ids);
    IF v_n > 0 THEN
        RAISE EXCEPTION 'asm_append_group: an event is stored already' USING ERRCODE = 'ASM01';
    END IF;

    -- Every head row of the group, taken in session order (so two groups never wait for each
    -- other in a cycle), each session's range reserved in the same statement.
    WITH reserved AS (
        INSERT INTO {schema}.asm_session_heads AS h (session_id, last_sequence)
        SELECT s.id, c.n
          FROM unnest(p_sess, p_sess_count) AS c(id, n)
          JOIN {schema}.asm_sessions s ON s.id = c.id
         ORDER BY c.id
        ON CONFLICT (session_id) DO UPDATE SET last_sequence = h.last_sequence + excluded.last_sequence
        RETURNING h.session_id, h.last_sequence
    )
    SELECT array_agg(r.session_id), array_agg(r.last_sequence - c.n)
      INTO v_heads_sess, v_heads_base
      FROM reserved r JOIN unnest(p_sess, p_sess_count) AS c(id, n) ON c.id = r.session_id;
    IF coalesce(cardinality(v_heads_sess), 0) <> cardinality(p_sess) THEN
        RAISE EXCEPTION 'asm_append_group: a session does not exist' USING ERRCODE = 'ASM01';
    END IF;

    PERFORM 1
       FROM unnest(p_req_session, p_req_expect, p_req_offset) AS q(session, expect, off)
       JOIN unnest(v_heads_sess, v_heads_base) AS b(session, base) ON b.session = q.session
      WHERE q.expect IS NOT NULL AND q.expect <> b.base + q.off
      LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'asm_append_group: a compare-and-append precondition fails' USING ERRCODE = 'ASM01';
    END IF;

    -- No new event of a run whose stored state is terminal.
    SELECT count(*) INTO v_n
      FROM {schema}.asm_runs r
     WHERE r.id = ANY(p_chk_run) AND r.status = ANY(p_terminal)
       AND (r.id, r.session_id) IN (SELECT c.run, c.session FROM unnest(p_chk_run, p_chk_session) AS c(run, session));
    IF v_n > 0 THEN
        RAISE EXCEPTION 'asm_append_group: an event of a finished run' USING ERRCODE = 'ASM01';
    END IF;

    INSERT INTO {schema}.asm_events
        (session_id, sequence, id, run_id, kind, ts, schema_version, provider, correlation_id, data, metadata)
    SELECT t.session, b.base + t.rank, t.id, t.run, t.kind, t.ts, t.sv, t.provider, t.corr, t.data, t.meta
      FROM unnest(p_ev_session, p_ev_rank, p_ids, p_runs, p_kinds, p_ts, p_schemas, p_providers, p_corrs, p_data,
                  p_meta) AS t(session, rank, id, run, kind, ts, sv, provider, corr, data, meta)
      JOIN unnest(v_heads_sess, v_heads_base) AS b(session, base) ON b.session = t.session;

    -- One notification per 200 sessions (payloads hold at most 8000 bytes): the listener splits
    -- the comma-separated ids.
    PERFORM pg_notify({channel}, string_agg(x.s::text, ','))
       FROM (SELECT s, (row_number() OVER () - 1) / 200 AS chunk FROM unnest(p_sess) AS s) x
      GROUP BY x.chunk;
    RETURN QUERY SELECT q.session, q.base FROM unnest(v_heads_sess, v_heads_base) AS q(session, base);
END
$fn$;

-- delete_session: the session with its runs and events, in the order of the lock protocol.
-- Returns false for an unknown session.
CREATE FUNCTION {schema}.asm_delete_session(p_session uuid) RETURNS boolean
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM 1 FROM {schema}.asm_sessions s WHERE s.id = p_session FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM {schema}.asm_session_heads WHERE session_id = p_session;
    DELETE FROM {schema}.asm_events WHERE session_id = p_session;
    DELETE FROM {schema}.asm_sessions WHERE id = p_session;
    -- Wakes long-poll readers of the session, which then find it gone.
    PERFORM pg_notify({channel}, p_session::text);
    RETURN true;
END
$fn$;
