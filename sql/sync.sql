-- pg_tenancy: what the companion pg-tenancy-sync needs in the database (runs after admin.sql).
--
-- The companion logs in as a role granted tenancy_sync. That role may read the identity tables,
-- insert and update workspaces and members, insert revoked sessions, replace the keys of issuers
-- an administrator already trusts (tenancy.sync_set_jwks), and keep its own bookkeeping. It may
-- delete nothing, truncate nothing, trust no new issuer and mint no API key.

DO $sync_role$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'tenancy_sync') THEN
        CREATE ROLE tenancy_sync NOLOGIN;
        COMMENT ON ROLE tenancy_sync IS 'pg_tenancy: the rights of pg-tenancy-sync (keeps keys, workspaces, members and revoked sessions in step with WorkOS)';
    END IF;
    -- Alert delivery moves the cursors that say which audit rows reached the operations team. It
    -- is a role of its own so that a stolen tenancy_sync login, which can change an issuer's keys,
    -- cannot also acknowledge the critical alert that change raises: give alert delivery its own
    -- login (PG_TENANCY_ALERT_DATABASE_URL).
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'tenancy_alerts') THEN
        CREATE ROLE tenancy_alerts NOLOGIN;
        COMMENT ON ROLE tenancy_alerts IS 'pg_tenancy: the rights of pg-tenancy-sync''s alert delivery (reads the audit log, moves its alert cursors)';
    END IF;
END
$sync_role$;

-- The companion's cursors and timestamps, one row each: 'events' (the last applied WorkOS event
-- id), 'reconciled_at' (the last complete reconcile), 'alerts:<sink>' (the last delivered audit
-- row). A cursor is written in the same transaction as the changes it covers.
CREATE TABLE tenancy.sync_state (
    name        text PRIMARY KEY CHECK (name <> ''),
    value       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE tenancy.sync_state IS 'cursors of pg-tenancy-sync, each committed with the changes it covers';

-- The newest version of each WorkOS object the companion applied: an event or page carrying an
-- older updated_at never moves state backwards. `state` is what the companion last applied
-- (active, inactive, pending, deleted); the companion lifts only a disable it made itself, so a
-- member an administrator disabled stays disabled whatever WorkOS says.
CREATE TABLE tenancy.sync_objects (
    object_id     text PRIMARY KEY CHECK (object_id <> ''),
    kind          text NOT NULL CHECK (kind IN ('organization', 'organization_membership', 'user')),
    updated_at    timestamptz NOT NULL,
    state         text NOT NULL,
    workspace_id  text,
    user_id       text,
    -- whether the companion itself disabled the member (it re-enables only those)
    disabled_by_sync  boolean NOT NULL DEFAULT false,
    applied_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE tenancy.sync_objects IS 'the newest WorkOS version of each object applied by pg-tenancy-sync';

-- Every WorkOS event the companion consumed, once: what it did with it. Its primary key makes a
-- second application of one event impossible.
CREATE TABLE tenancy.sync_log (
    event_id     text PRIMARY KEY CHECK (event_id <> ''),
    event        text NOT NULL,
    occurred_at  timestamptz,
    applied_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    outcome      text NOT NULL
);
CREATE INDEX sync_log_applied_at ON tenancy.sync_log (applied_at);
COMMENT ON TABLE tenancy.sync_log IS 'WorkOS events consumed by pg-tenancy-sync and their outcome (applied, stale, unmapped, ignored, malformed)';

SELECT pg_catalog.pg_extension_config_dump('tenancy.sync_state', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.sync_objects', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.sync_log', '');

-- Replaces the keys of an issuer already trusted, when they differ; returns whether they changed.
-- Only for issuers an administrator marked as managed by the companion (tenancy.issuers.
-- sync_jwks_url): a stolen companion login could otherwise add a key of its own to any trusted
-- issuer and sign tokens for every user. Every change of the keys (an id added or removed, or new
-- key material under a kept id) is recorded in the audit trail and raises a critical alert. The keys pass the same policy
-- as tenancy.set_jwks (tenancy._vet_jwks): a set that fails it raises and changes nothing.
CREATE FUNCTION tenancy.sync_set_jwks(issuer text, jwks jsonb)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    allowed text[];
    current_keys jsonb;
    managed_url text;
BEGIN
    IF NOT pg_catalog.pg_has_role(session_user, 'tenancy_sync', 'MEMBER')
       AND NOT pg_catalog.pg_has_role(session_user, 'tenancy_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to replace an issuer''s keys'
            USING ERRCODE = '42501',
                  HINT = 'Only members of tenancy_sync or tenancy_admin replace keys.';
    END IF;
    SELECT i.algorithms, i.jwks, i.sync_jwks_url INTO allowed, current_keys, managed_url
      FROM tenancy.issuers i WHERE i.issuer OPERATOR(pg_catalog.=) sync_set_jwks.issuer FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'issuer "%" is not trusted', issuer
            USING ERRCODE = '22023', HINT = 'An administrator trusts an issuer with tenancy.add_issuer().';
    END IF;
    IF managed_url IS NULL THEN
        RAISE EXCEPTION 'issuer "%" is not managed by pg-tenancy-sync', issuer
            USING ERRCODE = '42501',
                  HINT = 'An administrator lets the companion keep its keys: UPDATE tenancy.issuers SET sync_jwks_url = ''<the JWKS URL>'' WHERE issuer = ….';
    END IF;
    IF current_keys OPERATOR(pg_catalog.=) jwks THEN
        RETURN false;
    END IF;
    UPDATE tenancy.issuers i
       SET jwks = sync_set_jwks.jwks, key_ids = tenancy._vet_jwks(sync_set_jwks.jwks, allowed), updated_at = pg_catalog.now()
     WHERE i.issuer OPERATOR(pg_catalog.=) sync_set_jwks.issuer;
    PERFORM tenancy._record_key_changes(issuer, current_keys, sync_set_jwks.jwks, 'tenancy.sync_set_jwks');
    RETURN true;
END
$$;

-- Alert cursors ('alerts:<sink>', value {"id": N}) belong to alert delivery (tenancy_alerts), keep
-- their names, and move only forward and never past the newest row of tenancy.audit_log (or stay
-- at 0, before every row), unless an administrator moves them: a stolen companion login cannot
-- skip alerts by moving a cursor past them.
CREATE FUNCTION tenancy._check_alert_cursor() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wanted bigint;
    previous bigint;
BEGIN
    IF pg_catalog.pg_has_role(session_user, 'tenancy_admin', 'MEMBER') THEN
        RETURN NEW;
    END IF;
    IF (pg_catalog.starts_with(NEW.name, 'alerts:')
        OR (TG_OP OPERATOR(pg_catalog.=) 'UPDATE' AND pg_catalog.starts_with(OLD.name, 'alerts:')))
       AND NOT pg_catalog.pg_has_role(session_user, 'tenancy_alerts', 'MEMBER') THEN
        RAISE EXCEPTION 'only alert delivery (tenancy_alerts) moves alert cursors' USING ERRCODE = '42501',
            HINT = 'Give pg-tenancy-sync''s alert delivery a login of its own, granted tenancy_alerts.';
    END IF;
    IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' AND NEW.name OPERATOR(pg_catalog.<>) OLD.name
       AND (pg_catalog.starts_with(NEW.name, 'alerts:') OR pg_catalog.starts_with(OLD.name, 'alerts:')) THEN
        RAISE EXCEPTION 'alert cursor names cannot change' USING ERRCODE = '42501';
    END IF;
    IF NOT pg_catalog.starts_with(NEW.name, 'alerts:') THEN
        RETURN NEW;
    END IF;
    -- Exactly the form the companion writes and reads, {"id":<digits>}: a value it cannot read
    -- (12e0, a duplicate key, a string) made it start after the newest row, skipping what came
    -- since.
    IF NEW.value OPERATOR(pg_catalog.~) '^\{"id":[0-9]{1,18}\}$' THEN
        wanted := CAST(pg_catalog.substring(NEW.value, '[0-9]+') AS bigint);
    END IF;
    IF wanted IS NULL OR wanted OPERATOR(pg_catalog.<) 0 THEN
        RAISE EXCEPTION 'alert cursor % must be {"id": <audit row id>}', NEW.name USING ERRCODE = '22023';
    END IF;
    IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
        BEGIN
            previous := CAST(CAST(OLD.value AS pg_catalog.jsonb) OPERATOR(pg_catalog.->>) 'id' AS bigint);
        EXCEPTION WHEN OTHERS THEN
            previous := NULL;
        END;
        IF wanted OPERATOR(pg_catalog.<) previous THEN
            RAISE EXCEPTION 'alert cursor % may only move forward (from % to %)', NEW.name, previous, wanted
                USING ERRCODE = '42501', HINT = 'A member of tenancy_admin may move it back.';
        END IF;
    END IF;
    IF wanted OPERATOR(pg_catalog.>) 0 AND to_regclass('tenancy.audit_log') IS NOT NULL
       AND NOT EXISTS (SELECT FROM tenancy.audit_log l WHERE l.id OPERATOR(pg_catalog.=) wanted)
       AND wanted OPERATOR(pg_catalog.>) coalesce((SELECT pg_catalog.max(l.id) FROM tenancy.audit_log l), 0) THEN
        RAISE EXCEPTION 'alert cursor % may not move past the newest audit row', NEW.name
            USING ERRCODE = '42501', HINT = 'A member of tenancy_admin may move it anywhere.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER check_alert_cursor BEFORE INSERT OR UPDATE ON tenancy.sync_state
    FOR EACH ROW EXECUTE FUNCTION tenancy._check_alert_cursor();
REVOKE ALL ON FUNCTION tenancy._check_alert_cursor() FROM PUBLIC;

REVOKE ALL ON tenancy.sync_state, tenancy.sync_objects, tenancy.sync_log FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy.sync_set_jwks(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.sync_set_jwks(text, jsonb) TO tenancy_sync, tenancy_admin;
GRANT SELECT (issuer, jwks, updated_at, sync_jwks_url) ON tenancy.issuers TO tenancy_sync;
GRANT SELECT, INSERT, UPDATE ON tenancy.workspaces, tenancy.members TO tenancy_sync;
GRANT SELECT, INSERT ON tenancy.revoked_sessions TO tenancy_sync;
GRANT SELECT, INSERT, UPDATE ON tenancy.sync_objects TO tenancy_sync;
-- The cursors: rows and columns, never the table. Table-level UPDATE would let either login
-- `LOCK TABLE tenancy.sync_state` and stall the other's writes; each sees and writes only its own
-- rows (row-level security below), so neither can lock the other's.
GRANT SELECT, INSERT, UPDATE (value, updated_at) ON tenancy.sync_state TO tenancy_sync;
GRANT SELECT, INSERT ON tenancy.sync_log TO tenancy_sync;
GRANT SELECT ON tenancy.sync_state, tenancy.sync_objects, tenancy.sync_log TO tenancy_admin, tenancy_auditor;
GRANT SELECT, INSERT, UPDATE (value, updated_at) ON tenancy.sync_state TO tenancy_alerts;
ALTER TABLE tenancy.sync_state ENABLE ROW LEVEL SECURITY;
CREATE POLICY companion ON tenancy.sync_state TO tenancy_sync
    USING (NOT pg_catalog.starts_with(name, 'alerts:')) WITH CHECK (NOT pg_catalog.starts_with(name, 'alerts:'));
CREATE POLICY alert_delivery ON tenancy.sync_state TO tenancy_alerts
    USING (pg_catalog.starts_with(name, 'alerts:')) WITH CHECK (pg_catalog.starts_with(name, 'alerts:'));
CREATE POLICY readers ON tenancy.sync_state FOR SELECT TO tenancy_admin, tenancy_auditor USING (true);

-- Alert delivery (pg-tenancy-sync) follows tenancy.audit_log in the audit database: every column
-- but the statement text and the free-form detail, so no payload it builds can carry either.
GRANT SELECT (id, ring_started_at, seq, at, reason, critical, pid, database, role, client_addr,
              application_name, iss, sub, org_id, sid, kid, exp, alert, origin, acting_role)
   ON tenancy.audit_log TO tenancy_sync, tenancy_alerts;
