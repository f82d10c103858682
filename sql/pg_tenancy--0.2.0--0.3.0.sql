-- pg_tenancy 0.2.0 → 0.3.0. Every change to an SQL object since 0.2.0 is here, in the order it
-- was made; the upgrade test (scripts/upgrade-test) proves that 0.2.0 + this script has the same
-- catalog as a fresh 0.3.0 install.
\echo Use "ALTER EXTENSION pg_tenancy UPDATE TO '0.3.0'" to load this file. \quit

-- Hardening (issue 31). Denials name the session user in `role` and the current user, when it
-- differs, in `acting_role`.
ALTER TABLE tenancy.audit_log ADD COLUMN acting_role text;
COMMENT ON COLUMN tenancy.audit_log.role IS 'the session user: who connected, whatever function or SET ROLE the denial was raised under';
COMMENT ON COLUMN tenancy.audit_log.acting_role IS 'the current user when it was not the session user (a SECURITY DEFINER function''s owner, SET ROLE); NULL otherwise';
GRANT SELECT (acting_role) ON tenancy.audit_log TO tenancy_sync;

-- A time PostgreSQL cannot hold is never converted (one such value once stopped the audit trail).
CREATE OR REPLACE VIEW tenancy.denials AS
SELECT d.seq, d.at, d.reason, d.critical, d.pid,
       coalesce(db.datname::text, 'oid:' || d.database_oid) AS database,
       coalesce(r.rolname::text, 'oid:' || d.role_oid) AS role,
       d.client_addr, d.application_name, d.iss, d.sub, d.org_id, d.sid, d.kid,
       CASE WHEN d.exp OPERATOR(pg_catalog.>=) -210866803200 AND d.exp OPERATOR(pg_catalog.<=) 9224318015999
            THEN pg_catalog.to_timestamp(d.exp) END AS exp, d.detail, d.statement
  FROM tenancy._denials() d
  LEFT JOIN pg_catalog.pg_database db ON db.oid OPERATOR(pg_catalog.=) d.database_oid
  LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) d.role_oid;

-- Tokens without org_id identify nobody unless their issuer allows it.
ALTER TABLE tenancy.issuers ADD COLUMN allow_no_organization boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN tenancy.issuers.allow_no_organization IS 'whether a token without org_id identifies a user (no workspace, no membership row); when false every identity function refuses it';

-- The standby's batches: acting_role, and exp bounded as above.
CREATE OR REPLACE FUNCTION tenancy.record_standby_denials(origin text, ring_started_at timestamptz, entries jsonb)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    recorded bigint;
    kinds text[];
    issuers text[];
    kind text;
    issuer text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles r
                    WHERE r.rolname OPERATOR(pg_catalog.=) pg_catalog.session_user() AND (r.rolreplication OR r.rolsuper)) THEN
        RAISE EXCEPTION 'only a replication role or a superuser may record a standby''s denials'
            USING ERRCODE = '42501',
                  HINT = 'A hot standby''s audit writer calls this with the role of its primary_conninfo or tenancy.audit_primary_conninfo.';
    END IF;
    IF origin IS NULL OR ring_started_at IS NULL OR entries IS NULL THEN
        RAISE EXCEPTION 'origin, ring_started_at and entries must not be null' USING ERRCODE = '22004';
    END IF;
    IF pg_catalog.jsonb_typeof(entries) OPERATOR(pg_catalog.<>) 'array' THEN
        RAISE EXCEPTION 'entries must be a JSON array, not %', pg_catalog.jsonb_typeof(entries) USING ERRCODE = '22023';
    END IF;
    WITH recorded_rows AS (
        INSERT INTO tenancy.audit_log AS l (ring_started_at, seq, at, reason, critical, pid, database, role, client_addr,
                                       application_name, iss, sub, org_id, sid, kid, exp, detail, statement, alert, origin,
                                       acting_role)
        SELECT record_standby_denials.ring_started_at, e.seq, e.at, e.reason, e.critical, e.pid, e.database, e.role, e.client_addr,
               coalesce(e.application_name, ''), e.iss, e.sub, e.org_id, e.sid, e.kid,
               -- A time PostgreSQL cannot hold is not recorded: one such entry must not fail the batch.
               CASE WHEN e.exp OPERATOR(pg_catalog.>=) -210866803200 AND e.exp OPERATOR(pg_catalog.<=) 9224318015999
                    THEN pg_catalog.to_timestamp(e.exp) END,
               coalesce(e.detail, ''), coalesce(e.statement, ''), e.alert, record_standby_denials.origin, e.acting_role
          FROM pg_catalog.jsonb_to_recordset(entries)
               AS e(seq bigint, at timestamptz, reason text, critical boolean, pid integer, database text, role text,
                    client_addr text, application_name text, iss text, sub text, org_id text, sid text, kid text,
                    exp double precision, detail text, statement text, alert text, acting_role text)
         ORDER BY e.seq
        ON CONFLICT ON CONSTRAINT audit_log_pkey DO NOTHING
        RETURNING l.alert, l.reason, l.iss)
    SELECT pg_catalog.count(*),
           pg_catalog.array_agg(DISTINCT r.alert) FILTER (WHERE r.alert IS NOT NULL),
           pg_catalog.array_agg(DISTINCT r.iss) FILTER (WHERE r.reason OPERATOR(pg_catalog.=) 'unknown_key' AND r.iss IS NOT NULL)
      INTO recorded, kinds, issuers
      FROM recorded_rows r;
    FOREACH kind IN ARRAY coalesce(kinds, '{}') LOOP
        PERFORM pg_catalog.pg_notify('tenancy_alert', pg_catalog.format('{"kind":"%s","severity":"critical"}', kind));
    END LOOP;
    FOREACH issuer IN ARRAY coalesce(issuers, '{}') LOOP
        PERFORM pg_catalog.pg_notify('tenancy_jwks', issuer);
    END LOOP;
    RETURN recorded;
END
$$;

-- Event triggers never wait on a lock an ordinary role can take (issue 31): PUBLIC loses
-- table-level UPDATE and DELETE on the registry (either allowed LOCK TABLE … ACCESS EXCLUSIVE),
-- keeping column-level UPDATE for protect(); unprotect() forgets its row through a function.
REVOKE UPDATE, DELETE ON tenancy.protections FROM PUBLIC;
GRANT UPDATE (workspace_column, user_column, write_permission, enabled_rls, forced_rls, set_default,
              previous_default, protected_at, protected_by) ON tenancy.protections TO PUBLIC;
GRANT DELETE ON tenancy.protections TO tenancy_admin;

CREATE FUNCTION tenancy._forget_unprotected(schema_name text, table_name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '5s' AS $$
DECLARE
    rel oid := to_regclass(format('%I.%I', schema_name, table_name));
BEGIN
    IF rel IS NOT NULL AND EXISTS (SELECT FROM tenancy._live_policies(rel)) THEN
        RETURN false;
    END IF;
    DELETE FROM tenancy.protections r
     WHERE r.schema_name OPERATOR(pg_catalog.=) _forget_unprotected.schema_name
       AND r.table_name OPERATOR(pg_catalog.=) _forget_unprotected.table_name;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION tenancy._unprotect_one(rel oid) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
    reg tenancy.protections;
    p record;
    others boolean;
BEGIN
    PERFORM tenancy._require_owner(rel);
    SELECT n.nspname, k.relname, k.relrowsecurity, k.relforcerowsecurity INTO c
      FROM pg_class k JOIN pg_namespace n ON n.oid OPERATOR(pg_catalog.=) k.relnamespace
     WHERE k.oid OPERATOR(pg_catalog.=) rel;
    EXECUTE format('LOCK TABLE %s IN SHARE UPDATE EXCLUSIVE MODE', rel::regclass);
    SELECT * INTO reg FROM tenancy.protections r
     WHERE r.schema_name OPERATOR(pg_catalog.=) c.nspname AND r.table_name OPERATOR(pg_catalog.=) c.relname;
    IF NOT FOUND AND NOT EXISTS (SELECT FROM tenancy._live_policies(rel)) THEN
        RETURN false;
    END IF;
    FOR p IN SELECT l.policy_name FROM tenancy._live_policies(rel) l ORDER BY 1 LOOP
        EXECUTE format('DROP POLICY %I ON %s', p.policy_name, rel::regclass);
    END LOOP;
    IF reg.schema_name IS NULL THEN
        RETURN true;
    END IF;
    IF reg.set_default THEN
        PERFORM tenancy._restore_default(rel, reg.workspace_column, reg.previous_default);
    END IF;
    others := EXISTS (SELECT FROM pg_policy pol WHERE pol.polrelid OPERATOR(pg_catalog.=) rel);
    IF others AND (reg.forced_rls OR reg.enabled_rls) THEN
        RAISE NOTICE 'table % keeps row-level security: it has policies pg_tenancy did not write', rel::regclass;
    END IF;
    IF reg.forced_rls AND c.relforcerowsecurity AND NOT others THEN
        EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', rel::regclass);
    END IF;
    IF reg.enabled_rls AND c.relrowsecurity AND NOT others THEN
        EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', rel::regclass);
    END IF;
    PERFORM tenancy._forget_unprotected(c.nspname, c.relname);
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION tenancy._follow_renames() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '5s' AS $$
DECLARE
    m record;
BEGIN
    FOR m IN WITH altered AS (
                 SELECT e.objid, e.classid FROM pg_event_trigger_ddl_commands() e
                  WHERE e.classid IN ('pg_catalog.pg_class'::regclass, 'pg_catalog.pg_namespace'::regclass))
             SELECT pol.polrelid, n.nspname, c.relname, tenancy._registry_key(d.description) AS key
               FROM pg_policy pol
               JOIN pg_class c ON c.oid OPERATOR(pg_catalog.=) pol.polrelid
               JOIN pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
               JOIN pg_description d ON d.objoid OPERATOR(pg_catalog.=) pol.oid
                AND d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_policy'::regclass
                AND d.objsubid OPERATOR(pg_catalog.=) 0
              WHERE pol.polname OPERATOR(pg_catalog.=) 'tenancy_workspace'
                AND (c.oid IN (SELECT a.objid FROM altered a WHERE a.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass)
                     OR n.oid IN (SELECT a.objid FROM altered a WHERE a.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::regclass))
    LOOP
        -- Only a key whose table is gone and that names a registered table moves: a comment
        -- copied onto another table cannot take over the registry row of a table that still
        -- exists, and a key naming nothing registered is not ours.
        CONTINUE WHEN m.key IS NULL OR m.key OPERATOR(pg_catalog.=) ARRAY[m.nspname::text, m.relname::text]
                   OR to_regclass(format('%I.%I', m.key[1], m.key[2])) IS NOT NULL
                   OR NOT EXISTS (SELECT FROM tenancy.protections o WHERE o.schema_name OPERATOR(pg_catalog.=) m.key[1]
                                     AND o.table_name OPERATOR(pg_catalog.=) m.key[2]);
        BEGIN
            DELETE FROM tenancy.protections r
             WHERE r.schema_name OPERATOR(pg_catalog.=) m.nspname AND r.table_name OPERATOR(pg_catalog.=) m.relname;
            UPDATE tenancy.protections r SET schema_name = m.nspname, table_name = m.relname
             WHERE r.schema_name OPERATOR(pg_catalog.=) m.key[1] AND r.table_name OPERATOR(pg_catalog.=) m.key[2];
            EXECUTE format('COMMENT ON POLICY tenancy_workspace ON %I.%I IS %L', m.nspname, m.relname,
                           tenancy._registry_mark(m.nspname, m.relname));
        EXCEPTION WHEN lock_not_available THEN
            RAISE WARNING 'pg_tenancy could not follow the rename of %.% to %.%: a lock was not available',
                          quote_ident(m.key[1]), quote_ident(m.key[2]), quote_ident(m.nspname), quote_ident(m.relname)
                USING HINT = 'tenancy.coverage lists the registry row as stale; run SELECT tenancy.protect() on the table again.';
        END;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION tenancy._forget_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '5s' AS $$
BEGIN
    IF to_regclass('tenancy.protections') IS NULL THEN
        RETURN;
    END IF;
    DELETE FROM tenancy.protections r USING pg_event_trigger_dropped_objects() d
     WHERE d.object_type OPERATOR(pg_catalog.=) 'table' AND NOT d.is_temporary
       AND r.schema_name OPERATOR(pg_catalog.=) d.schema_name AND r.table_name OPERATOR(pg_catalog.=) d.object_name;
END
$$;


-- Keys end with what made them (issue 31): the session of the token that made or last rotated a
-- key disables it when revoked; keys made by identities live at most tenancy.api_key_max_lifetime
-- days; rotating ties the key to the rotator.
ALTER TABLE tenancy._api_key_store ADD COLUMN creator_session_id text;

CREATE FUNCTION tenancy._key_creator(OUT user_id text, OUT session_id text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.current_setting('tenancy.api_key', true) OPERATOR(pg_catalog.<>) '' THEN
        SELECT coalesce(k.user_id, k.creator_user_id), k.creator_session_id INTO user_id, session_id
          FROM tenancy._api_key_store k
         WHERE CAST(k.id AS pg_catalog.text) OPERATOR(pg_catalog.=) (tenancy.claims() OPERATOR(pg_catalog.->>) 'api_key_id');
    ELSE
        user_id := tenancy.user_id();
        session_id := tenancy.session_id();
    END IF;
END
$$;

CREATE FUNCTION tenancy._key_expiry_bound() RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN d OPERATOR(pg_catalog.>) 0 THEN pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(days => d) END
      FROM (SELECT CAST(coalesce(nullif(pg_catalog.current_setting('tenancy.api_key_max_lifetime', true), ''), '90')
                        AS integer) AS d) s
$$;

CREATE OR REPLACE FUNCTION tenancy.create_api_key(workspace_id text, name text, role text DEFAULT NULL,
                                       permissions text[] DEFAULT '{}',
                                       expires_at timestamptz DEFAULT NULL, user_id text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    manager text;
    excess text;
    creator_user text;
    creator_session text;
    bound timestamptz;
    minted record;
BEGIN
    manager := tenancy._key_manager(workspace_id, 'create an api key');
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'api key name must not be empty' USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM tenancy.workspaces w WHERE w.workspace_id = workspace_id) THEN
        RAISE EXCEPTION 'workspace "%" does not exist', workspace_id USING ERRCODE = '22023',
            HINT = 'Add it to tenancy.workspaces first.';
    END IF;
    IF expires_at IS NOT NULL AND expires_at <= now() THEN
        RAISE EXCEPTION 'expires_at must be in the future' USING ERRCODE = '22023';
    END IF;
    IF manager = 'identity' THEN
        excess := tenancy._beyond_identity(role, permissions, user_id);
        IF excess IS NOT NULL THEN
            RAISE EXCEPTION 'permission denied to create an api key beyond its creator''s rights: %', excess
                USING ERRCODE = '42501',
                      HINT = 'An identity creates keys with at most its own permissions, its own role or none, and its own user or none; members of tenancy_admin create any key.';
        END IF;
        -- A key made by a key inherits that key's member and session (none, for an
        -- administrator's key).
        SELECT c.user_id, c.session_id INTO creator_user, creator_session FROM tenancy._key_creator() c;
        bound := tenancy._key_expiry_bound();
        IF bound IS NOT NULL AND expires_at IS NULL THEN
            expires_at := bound;
        ELSIF bound IS NOT NULL AND expires_at > bound THEN
            RAISE EXCEPTION 'expires_at is beyond the longest lifetime of a key made by an identity (tenancy.api_key_max_lifetime = % days)',
                            pg_catalog.current_setting('tenancy.api_key_max_lifetime', true)
                USING ERRCODE = '22023',
                      HINT = 'Choose an earlier expires_at, or leave it out to get the longest; members of tenancy_admin make keys without this bound.';
        END IF;
    END IF;
    IF user_id IS NOT NULL AND NOT EXISTS (SELECT FROM tenancy.members m
                                            WHERE m.workspace_id = workspace_id AND m.user_id = user_id) THEN
        RAISE EXCEPTION 'user "%" is not a member of workspace "%"', user_id, workspace_id
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO minted FROM tenancy._mint_api_key();
    INSERT INTO tenancy._api_key_store (workspace_id, name, key_prefix, digest, role, permissions,
                                        user_id, expires_at, created_by_identity, creator_user_id,
                                        creator_session_id)
    VALUES (workspace_id, name, minted.display, minted.digest, role, coalesce(permissions, '{}'),
            user_id, expires_at, tenancy._key_actor(manager), creator_user, creator_session);
    RETURN minted.secret;
END
$$;

CREATE OR REPLACE FUNCTION tenancy.rotate_api_key(id uuid, grace interval DEFAULT '0 seconds')
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    key record;
    manager text;
    excess text;
    creator record;
    bound timestamptz;
    minted record;
BEGIN
    SELECT k.workspace_id, k.role, k.permissions, k.user_id, k.expires_at, k.creator_user_id, k.creator_session_id INTO key
      FROM tenancy._api_key_store k WHERE k.id = id AND k.revoked_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'api key % does not exist or is revoked', id USING ERRCODE = '22023';
    END IF;
    manager := tenancy._key_manager(key.workspace_id, 'rotate an api key');
    IF grace IS NULL OR grace < '0 seconds' OR grace > '30 days' THEN
        RAISE EXCEPTION 'grace must be between 0 seconds and 30 days' USING ERRCODE = '22023';
    END IF;
    IF manager = 'identity' THEN
        excess := tenancy._beyond_identity(key.role, key.permissions, key.user_id);
        IF excess IS NOT NULL THEN
            RAISE EXCEPTION 'permission denied to rotate api key %: it carries more than the identity (%)', id, excess
                USING ERRCODE = '42501',
                      HINT = 'An identity rotates only keys within its own rights; members of tenancy_admin rotate any key.';
        END IF;
        creator := tenancy._key_creator();
        bound := tenancy._key_expiry_bound();
        key.creator_user_id := creator.user_id;
        key.creator_session_id := creator.session_id;
        IF bound IS NOT NULL AND (key.expires_at IS NULL OR key.expires_at > bound) THEN
            key.expires_at := bound;
        END IF;
    END IF;
    SELECT * INTO minted FROM tenancy._mint_api_key();
    UPDATE tenancy._api_key_store k
       SET previous_digest = CASE WHEN grace > '0 seconds' THEN k.digest END,
           previous_valid_until = CASE WHEN grace > '0 seconds' THEN now() + grace END,
           digest = minted.digest, key_prefix = minted.display,
           rotated_at = now(), rotated_by = tenancy._key_actor(manager),
           creator_user_id = key.creator_user_id, creator_session_id = key.creator_session_id,
           expires_at = key.expires_at
     WHERE k.id = id;
    RETURN minted.secret;
END
$$;

REVOKE ALL ON FUNCTION tenancy._key_creator(), tenancy._key_expiry_bound() FROM PUBLIC;

-- Classification by origin (issue 31): the API-key functions record their refusals themselves,
-- through tenancy._deny_admin, instead of the audit recognising their words.
CREATE FUNCTION tenancy."_deny_admin"(
	"message" TEXT, /* & str */
	"hint" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_deny_admin_wrapper';
REVOKE ALL ON FUNCTION tenancy._deny_admin(text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION tenancy._key_manager(workspace text, action text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.pg_has_role(session_user, 'tenancy_admin', 'MEMBER') THEN
        RETURN 'admin';
    END IF;
    IF pg_catalog.current_setting('tenancy.token', true) OPERATOR(pg_catalog.<>) ''
       OR pg_catalog.current_setting('tenancy.api_key', true) OPERATOR(pg_catalog.<>) '' THEN
        IF tenancy.workspace_id() OPERATOR(pg_catalog.=) workspace AND tenancy.has_permission('api_keys:manage') THEN
            RETURN 'identity';
        END IF;
    END IF;
    PERFORM tenancy._deny_admin(pg_catalog.format('permission denied to %s for workspace "%s"', action, workspace),
              'Members of tenancy_admin, or an identity of that workspace with the api_keys:manage permission, manage its keys.');
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tenancy.create_api_key(workspace_id text, name text, role text DEFAULT NULL,
                                       permissions text[] DEFAULT '{}',
                                       expires_at timestamptz DEFAULT NULL, user_id text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    manager text;
    excess text;
    creator_user text;
    creator_session text;
    bound timestamptz;
    minted record;
BEGIN
    manager := tenancy._key_manager(workspace_id, 'create an api key');
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'api key name must not be empty' USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM tenancy.workspaces w WHERE w.workspace_id = workspace_id) THEN
        RAISE EXCEPTION 'workspace "%" does not exist', workspace_id USING ERRCODE = '22023',
            HINT = 'Add it to tenancy.workspaces first.';
    END IF;
    IF expires_at IS NOT NULL AND expires_at <= now() THEN
        RAISE EXCEPTION 'expires_at must be in the future' USING ERRCODE = '22023';
    END IF;
    IF manager = 'identity' THEN
        excess := tenancy._beyond_identity(role, permissions, user_id);
        IF excess IS NOT NULL THEN
            PERFORM tenancy._deny_admin(pg_catalog.format('permission denied to create an api key beyond its creator''s rights: %s', excess),
                      'An identity creates keys with at most its own permissions, its own role or none, and its own user or none; members of tenancy_admin create any key.');
        END IF;
        -- A key made by a key inherits that key's member and session (none, for an
        -- administrator's key).
        SELECT c.user_id, c.session_id INTO creator_user, creator_session FROM tenancy._key_creator() c;
        bound := tenancy._key_expiry_bound();
        IF bound IS NOT NULL AND expires_at IS NULL THEN
            expires_at := bound;
        ELSIF bound IS NOT NULL AND expires_at > bound THEN
            RAISE EXCEPTION 'expires_at is beyond the longest lifetime of a key made by an identity (tenancy.api_key_max_lifetime = % days)',
                            pg_catalog.current_setting('tenancy.api_key_max_lifetime', true)
                USING ERRCODE = '22023',
                      HINT = 'Choose an earlier expires_at, or leave it out to get the longest; members of tenancy_admin make keys without this bound.';
        END IF;
    END IF;
    IF user_id IS NOT NULL AND NOT EXISTS (SELECT FROM tenancy.members m
                                            WHERE m.workspace_id = workspace_id AND m.user_id = user_id) THEN
        RAISE EXCEPTION 'user "%" is not a member of workspace "%"', user_id, workspace_id
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO minted FROM tenancy._mint_api_key();
    INSERT INTO tenancy._api_key_store (workspace_id, name, key_prefix, digest, role, permissions,
                                        user_id, expires_at, created_by_identity, creator_user_id,
                                        creator_session_id)
    VALUES (workspace_id, name, minted.display, minted.digest, role, coalesce(permissions, '{}'),
            user_id, expires_at, tenancy._key_actor(manager), creator_user, creator_session);
    RETURN minted.secret;
END
$$;

CREATE OR REPLACE FUNCTION tenancy.revoke_api_key(id uuid)
RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    key record;
    manager text;
    excess text;
BEGIN
    SELECT k.workspace_id, k.role, k.permissions, k.user_id, k.created_by_identity INTO key
      FROM tenancy._api_key_store k WHERE k.id = id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'api key % does not exist', id USING ERRCODE = '22023';
    END IF;
    manager := tenancy._key_manager(key.workspace_id, 'revoke an api key');
    IF manager = 'identity' AND key.created_by_identity IS DISTINCT FROM tenancy.user_id() THEN
        excess := tenancy._beyond_identity(key.role, key.permissions, key.user_id);
        IF excess IS NOT NULL THEN
            PERFORM tenancy._deny_admin(pg_catalog.format('permission denied to revoke api key %s: it carries more than the identity (%s) and was not created by it', id, excess),
                      'An identity revokes keys within its own rights or that it created; members of tenancy_admin revoke any key.');
        END IF;
    END IF;
    UPDATE tenancy._api_key_store k
       SET revoked_at = coalesce(k.revoked_at, now()),
           revoked_by = CASE WHEN k.revoked_at IS NULL THEN tenancy._key_actor(manager) ELSE k.revoked_by END
     WHERE k.id = id;
END
$$;

CREATE OR REPLACE FUNCTION tenancy.rotate_api_key(id uuid, grace interval DEFAULT '0 seconds')
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    key record;
    manager text;
    excess text;
    creator record;
    bound timestamptz;
    minted record;
BEGIN
    SELECT k.workspace_id, k.role, k.permissions, k.user_id, k.expires_at, k.creator_user_id, k.creator_session_id INTO key
      FROM tenancy._api_key_store k WHERE k.id = id AND k.revoked_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'api key % does not exist or is revoked', id USING ERRCODE = '22023';
    END IF;
    manager := tenancy._key_manager(key.workspace_id, 'rotate an api key');
    IF grace IS NULL OR grace < '0 seconds' OR grace > '30 days' THEN
        RAISE EXCEPTION 'grace must be between 0 seconds and 30 days' USING ERRCODE = '22023';
    END IF;
    IF manager = 'identity' THEN
        excess := tenancy._beyond_identity(key.role, key.permissions, key.user_id);
        IF excess IS NOT NULL THEN
            PERFORM tenancy._deny_admin(pg_catalog.format('permission denied to rotate api key %s: it carries more than the identity (%s)', id, excess),
                      'An identity rotates only keys within its own rights; members of tenancy_admin rotate any key.');
        END IF;
        creator := tenancy._key_creator();
        bound := tenancy._key_expiry_bound();
        key.creator_user_id := creator.user_id;
        key.creator_session_id := creator.session_id;
        IF bound IS NOT NULL AND (key.expires_at IS NULL OR key.expires_at > bound) THEN
            key.expires_at := bound;
        END IF;
    END IF;
    SELECT * INTO minted FROM tenancy._mint_api_key();
    UPDATE tenancy._api_key_store k
       SET previous_digest = CASE WHEN grace > '0 seconds' THEN k.digest END,
           previous_valid_until = CASE WHEN grace > '0 seconds' THEN now() + grace END,
           digest = minted.digest, key_prefix = minted.display,
           rotated_at = now(), rotated_by = tenancy._key_actor(manager),
           creator_user_id = key.creator_user_id, creator_session_id = key.creator_session_id,
           expires_at = key.expires_at
     WHERE k.id = id;
    RETURN minted.secret;
END
$$;


-- The companion cannot add keys silently or hide alerts (issue 31): it replaces the keys only of
-- issuers an administrator marked (sync_jwks_url); every change of an issuer's key ids is
-- recorded with the ids added and removed and alerts as critical; alert cursors move only forward
-- and never past the newest audit row. Issuers trusted before 0.3.0 are not marked: an
-- administrator marks those the companion keeps.
ALTER TABLE tenancy.issuers ADD COLUMN sync_jwks_url text CHECK (sync_jwks_url ~ '^https?://');
COMMENT ON COLUMN tenancy.issuers.sync_jwks_url IS 'where pg-tenancy-sync fetches this issuer''s keys; NULL: the companion may not change them (tenancy.sync_set_jwks refuses)';
GRANT SELECT (sync_jwks_url) ON tenancy.issuers TO tenancy_sync;
CREATE FUNCTION tenancy."_note_issuer_keys_changed"(
	"issuer" TEXT, /* & str */
	"added" TEXT[], /* Vec < String > */
	"removed" TEXT[], /* Vec < String > */
	"via" TEXT /* & str */
) RETURNS void
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_note_issuer_keys_changed_wrapper';
REVOKE ALL ON FUNCTION tenancy._note_issuer_keys_changed(text, text[], text[], text) FROM PUBLIC;
CREATE OR REPLACE FUNCTION tenancy.set_jwks(issuer text, jwks jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    allowed text[];
    old_ids text[];
    new_ids text[];
BEGIN
    PERFORM tenancy._require_admin('replace an issuer''s keys');
    SELECT i.algorithms, i.key_ids INTO allowed, old_ids FROM tenancy.issuers i WHERE i.issuer = set_jwks.issuer FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'issuer "%" is not trusted', issuer
            USING ERRCODE = '22023', HINT = 'Add it with tenancy.add_issuer().';
    END IF;
    new_ids := tenancy._vet_jwks(set_jwks.jwks, allowed);
    UPDATE tenancy.issuers i
       SET jwks = set_jwks.jwks, key_ids = new_ids, updated_at = now()
     WHERE i.issuer = set_jwks.issuer;
    IF NOT (old_ids @> new_ids AND new_ids @> old_ids) THEN
        PERFORM tenancy._note_issuer_keys_changed(issuer,
            ARRAY(SELECT k FROM unnest(new_ids) k EXCEPT SELECT k FROM unnest(old_ids) k ORDER BY 1),
            ARRAY(SELECT k FROM unnest(old_ids) k EXCEPT SELECT k FROM unnest(new_ids) k ORDER BY 1),
            'tenancy.set_jwks');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION tenancy.sync_set_jwks(issuer text, jwks jsonb)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    allowed text[];
    current_keys jsonb;
    managed_url text;
    old_ids text[];
    new_ids text[];
BEGIN
    IF NOT pg_catalog.pg_has_role(session_user, 'tenancy_sync', 'MEMBER')
       AND NOT pg_catalog.pg_has_role(session_user, 'tenancy_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to replace an issuer''s keys'
            USING ERRCODE = '42501',
                  HINT = 'Only members of tenancy_sync or tenancy_admin replace keys.';
    END IF;
    SELECT i.algorithms, i.jwks, i.sync_jwks_url, i.key_ids INTO allowed, current_keys, managed_url, old_ids
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
    new_ids := tenancy._vet_jwks(sync_set_jwks.jwks, allowed);
    UPDATE tenancy.issuers i
       SET jwks = sync_set_jwks.jwks, key_ids = new_ids, updated_at = pg_catalog.now()
     WHERE i.issuer OPERATOR(pg_catalog.=) sync_set_jwks.issuer;
    IF NOT (old_ids OPERATOR(pg_catalog.@>) new_ids AND new_ids OPERATOR(pg_catalog.@>) old_ids) THEN
        PERFORM tenancy._note_issuer_keys_changed(issuer,
            ARRAY(SELECT k FROM pg_catalog.unnest(new_ids) k EXCEPT SELECT k FROM pg_catalog.unnest(old_ids) k ORDER BY 1),
            ARRAY(SELECT k FROM pg_catalog.unnest(old_ids) k EXCEPT SELECT k FROM pg_catalog.unnest(new_ids) k ORDER BY 1),
            'tenancy.sync_set_jwks');
    END IF;
    RETURN true;
END
$$;

CREATE FUNCTION tenancy._check_alert_cursor() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wanted bigint;
    previous bigint;
BEGIN
    IF NOT pg_catalog.starts_with(NEW.name, 'alerts:') OR pg_catalog.pg_has_role(session_user, 'tenancy_admin', 'MEMBER') THEN
        RETURN NEW;
    END IF;
    BEGIN
        wanted := CAST(CAST(NEW.value AS pg_catalog.jsonb) OPERATOR(pg_catalog.->>) 'id' AS bigint);
    EXCEPTION WHEN OTHERS THEN
        wanted := NULL;
    END;
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
