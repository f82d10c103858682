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
-- The keys pass the same policy as tenancy.set_jwks (tenancy._vet_jwks): a set that fails it
-- raises and changes nothing.
CREATE FUNCTION tenancy.sync_set_jwks(issuer text, jwks jsonb)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    allowed text[];
    current_keys jsonb;
BEGIN
    IF NOT pg_catalog.pg_has_role(session_user, 'tenancy_sync', 'MEMBER')
       AND NOT pg_catalog.pg_has_role(session_user, 'tenancy_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to replace an issuer''s keys'
            USING ERRCODE = '42501',
                  HINT = 'Only members of tenancy_sync or tenancy_admin replace keys.';
    END IF;
    SELECT i.algorithms, i.jwks INTO allowed, current_keys
      FROM tenancy.issuers i WHERE i.issuer OPERATOR(pg_catalog.=) sync_set_jwks.issuer FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'issuer "%" is not trusted', issuer
            USING ERRCODE = '22023', HINT = 'An administrator trusts an issuer with tenancy.add_issuer().';
    END IF;
    IF current_keys OPERATOR(pg_catalog.=) jwks THEN
        RETURN false;
    END IF;
    UPDATE tenancy.issuers i
       SET jwks = sync_set_jwks.jwks, key_ids = tenancy._vet_jwks(sync_set_jwks.jwks, allowed),
           updated_at = pg_catalog.now()
     WHERE i.issuer OPERATOR(pg_catalog.=) sync_set_jwks.issuer;
    RETURN true;
END
$$;

REVOKE ALL ON tenancy.sync_state, tenancy.sync_objects, tenancy.sync_log FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy.sync_set_jwks(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.sync_set_jwks(text, jsonb) TO tenancy_sync, tenancy_admin;
GRANT SELECT (issuer, jwks, updated_at) ON tenancy.issuers TO tenancy_sync;
GRANT SELECT, INSERT, UPDATE ON tenancy.workspaces, tenancy.members TO tenancy_sync;
GRANT SELECT, INSERT ON tenancy.revoked_sessions TO tenancy_sync;
GRANT SELECT, INSERT, UPDATE ON tenancy.sync_state, tenancy.sync_objects TO tenancy_sync;
GRANT SELECT, INSERT ON tenancy.sync_log TO tenancy_sync;
GRANT SELECT ON tenancy.sync_state, tenancy.sync_objects, tenancy.sync_log TO tenancy_admin, tenancy_auditor;

-- Alert delivery (pg-tenancy-sync) follows tenancy.audit_log in the audit database: every column
-- but the statement text and the free-form detail, so no payload it builds can carry either.
GRANT SELECT (id, ring_started_at, seq, at, reason, critical, pid, database, role, client_addr,
              application_name, iss, sub, org_id, sid, kid, exp, alert, origin, acting_role)
   ON tenancy.audit_log TO tenancy_sync;
