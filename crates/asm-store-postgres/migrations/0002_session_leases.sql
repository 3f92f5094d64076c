-- asm-store-postgres schema version 2: session leases, for ownership of a session by exactly one
-- process at a time (asm_ports::SessionLeases).
--
-- `{schema}` is replaced as in 0001_initial.sql.
--
-- A lease row per session: who owns it, the fencing token of the current grant and when it
-- ends. Times are the server's clock (clock_timestamp()), so owners with skewed clocks agree.
-- Every grant (a first one, or a takeover after expiry or release) raises the token, and the row
-- keeps the token when released, so tokens only grow.
--
-- Fencing: a fenced write runs asm_check_fence and asm_write in one transaction. The check takes
-- the lease row FOR SHARE; a grant updates the row (a row lock that conflicts with it), so a
-- write whose check passed commits before any takeover of the session, and a write after a
-- takeover finds the new token and is refused (SQLSTATE ASM02). Lock order of a fenced write:
-- lease row, then the head row (as in 0001).

CREATE TABLE {schema}.asm_session_leases (
    session_id   uuid        PRIMARY KEY REFERENCES {schema}.asm_sessions (id) ON DELETE CASCADE,
    owner        text        NOT NULL,
    token        bigint      NOT NULL CHECK (token >= 1),
    expires_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);

-- Grants the lease when the session has none or its lease ended; otherwise reports the holder.
-- No row: the session does not exist.
CREATE FUNCTION {schema}.asm_acquire_lease(p_session uuid, p_owner text, p_ttl_ms bigint)
RETURNS TABLE (o_granted boolean, o_owner text, o_token bigint, o_expires timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_owner   text;
    v_token   bigint;
    v_expires timestamptz;
BEGIN
    PERFORM 1 FROM {schema}.asm_sessions s WHERE s.id = p_session;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO {schema}.asm_session_leases AS l (session_id, owner, token, expires_at, heartbeat_at)
    VALUES (p_session, p_owner, 1, v_now + p_ttl_ms * interval '1 millisecond', v_now)
    ON CONFLICT (session_id) DO UPDATE SET
        owner = excluded.owner, token = l.token + 1, expires_at = excluded.expires_at,
        heartbeat_at = excluded.heartbeat_at
    WHERE l.expires_at <= v_now
    RETURNING l.owner, l.token, l.expires_at INTO v_owner, v_token, v_expires;
    IF FOUND THEN
        RETURN QUERY SELECT true, v_owner, v_token, v_expires;
        RETURN;
    END IF;
    RETURN QUERY SELECT false, l.owner, l.token, l.expires_at
      FROM {schema}.asm_session_leases l WHERE l.session_id = p_session;
END
$fn$;

-- Raises ASM02 unless p_token is the session's current token (DETAIL: the current owner, HINT:
-- the current token; both empty when the session never had a lease). Holds the lease row
-- FOR SHARE until the caller's transaction ends.
CREATE FUNCTION {schema}.asm_check_fence(p_session uuid, p_token bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_owner text;
    v_token bigint;
BEGIN
    SELECT l.owner, l.token INTO v_owner, v_token
      FROM {schema}.asm_session_leases l WHERE l.session_id = p_session FOR SHARE;
    IF NOT FOUND OR v_token <> p_token THEN
        RAISE EXCEPTION 'stale fencing token % for session %', p_token, p_session
            USING ERRCODE = 'ASM02', DETAIL = coalesce(v_owner, ''), HINT = coalesce(v_token::text, '');
    END IF;
END
$fn$;
