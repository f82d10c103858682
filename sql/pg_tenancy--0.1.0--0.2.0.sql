-- pg_tenancy 0.1.0 → 0.2.0. Every change to an SQL object since 0.1.0 is here, in the order it
-- was made; the upgrade test (scripts/upgrade-test) proves that 0.1.0 + this script has the same
-- catalog as a fresh 0.2.0 install.
\echo Use "ALTER EXTENSION pg_tenancy UPDATE TO '0.2.0'" to load this file. \quit

-- Privileges (issue: privileged internals immune to the caller's session). Identity lookups run
-- as tenancy_lookup instead of the bootstrap superuser.
-- The role pg_tenancy's identity lookups run as (src/raised.rs): it logs in never, owns nothing,
-- and may only read the identity tables and record API-key use. A role of that name that could
-- log in or has members is not ours: refuse to install rather than run lookups as it.
DO $lookup$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'tenancy_lookup') THEN
        CREATE ROLE tenancy_lookup NOLOGIN NOINHERIT;
        COMMENT ON ROLE tenancy_lookup IS 'pg_tenancy: the role identity lookups run as (no login, no members)';
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_roles r
                   WHERE r.rolname OPERATOR(pg_catalog.=) 'tenancy_lookup'
                     AND (r.rolcanlogin OR r.rolsuper OR r.rolbypassrls OR r.rolcreaterole
                          OR EXISTS (SELECT FROM pg_catalog.pg_auth_members m
                                      WHERE m.roleid OPERATOR(pg_catalog.=) r.oid))) THEN
        RAISE EXCEPTION 'role "tenancy_lookup" exists with login, attributes or members'
            USING ERRCODE = '42501',
                  HINT = 'pg_tenancy runs its identity lookups as that role; drop it or make it NOLOGIN NOSUPERUSER without members.';
    END IF;
END
$lookup$;
GRANT SELECT ON tenancy.issuers, tenancy.workspaces, tenancy.members, tenancy.revoked_sessions TO tenancy_lookup;
GRANT SELECT ON tenancy._api_key_store TO tenancy_lookup;
GRANT SELECT, INSERT, UPDATE ON tenancy.api_key_usage TO tenancy_lookup;

-- tenancy.coverage reports login roles that can connect to the audit database (they may LISTEN
-- tenancy_alert, now a wake-up signal only). The view as in sql/coverage.sql:
CREATE OR REPLACE VIEW tenancy.coverage AS
WITH user_tables AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind, c.relowner, c.relrowsecurity, c.relforcerowsecurity,
           c.relispartition, c.relacl, format('%I.%I', n.nspname, c.relname) AS qualified
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.relkind IN ('r', 'p')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenancy')
       AND n.nspname !~ '^pg_(toast|temp_)'
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                        WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                          AND d.objid OPERATOR(pg_catalog.=) c.oid AND d.deptype OPERATOR(pg_catalog.=) 'e')
), protected AS (
    SELECT t.*, p.workspace_column, p.user_column, p.write_permission
      FROM tenancy.protections p
      JOIN user_tables t ON t.nspname OPERATOR(pg_catalog.=) p.schema_name AND t.relname OPERATOR(pg_catalog.=) p.table_name
), tenant_columns AS (
    SELECT 'workspace_id'::text AS attname UNION SELECT p.workspace_column FROM tenancy.protections p
)
SELECT 'medium'::text AS severity, 'not_preloaded'::text AS finding, 'shared_preload_libraries'::text AS object,
       'pg_tenancy is not in shared_preload_libraries: until a backend loads the library, tenancy.* settings are unchecked placeholders'::text AS detail,
       'add pg_tenancy to shared_preload_libraries (ALTER SYSTEM SET shared_preload_libraries = …) and restart'::text AS fix
 WHERE NOT tenancy._preloaded()
UNION ALL
SELECT 'critical', 'unprotected_table', t.qualified,
       format('has tenant column %I but no pg_tenancy protection: every workspace''s rows are visible', a.attname),
       CASE WHEN par.qualified IS NOT NULL
            THEN format('SELECT tenancy.protect(%L);  -- a partition attached after its parent was protected', par.qualified)
            WHEN a.attname OPERATOR(pg_catalog.=) 'workspace_id' THEN format('SELECT tenancy.protect(%L);', t.qualified)
            ELSE format('SELECT tenancy.protect(%L, %L);', t.qualified, a.attname) END
  FROM user_tables t
  CROSS JOIN LATERAL (SELECT min(a.attname) AS attname FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid OPERATOR(pg_catalog.=) t.oid AND a.attnum OPERATOR(pg_catalog.>) 0
                         AND NOT a.attisdropped AND a.attname IN (SELECT attname FROM tenant_columns)) a
  LEFT JOIN LATERAL (SELECT p.qualified FROM pg_catalog.pg_inherits i JOIN protected p ON p.oid OPERATOR(pg_catalog.=) i.inhparent
                      WHERE i.inhrelid OPERATOR(pg_catalog.=) t.oid) par ON true
 WHERE a.attname IS NOT NULL AND t.oid NOT IN (SELECT oid FROM protected)
UNION ALL
SELECT 'low', 'stale_registry_row', format('%I.%I', p.schema_name, p.table_name),
       'registered as protected but no such table exists (restored without it, or dropped while the event triggers were off)',
       format('DELETE FROM tenancy.protections WHERE schema_name = %L AND table_name = %L;', p.schema_name, p.table_name)
  FROM tenancy.protections p
 WHERE NOT EXISTS (SELECT FROM user_tables t WHERE t.nspname OPERATOR(pg_catalog.=) p.schema_name
                      AND t.relname OPERATOR(pg_catalog.=) p.table_name)
UNION ALL
SELECT 'critical', 'rls_disabled', p.qualified, 'protected, but row-level security is disabled: the policies are ignored',
       format('SELECT tenancy.protect(%L%s);', p.qualified,
              CASE WHEN p.workspace_column OPERATOR(pg_catalog.<>) 'workspace_id' THEN format(', %L', p.workspace_column) ELSE '' END)
  FROM protected p WHERE NOT p.relrowsecurity
UNION ALL
SELECT CASE WHEN p.oid IS NOT NULL THEN 'high' ELSE 'medium' END, 'rls_not_forced', t.qualified,
       'row-level security is enabled but not forced: the table''s owner sees and writes every row',
       format('ALTER TABLE %s FORCE ROW LEVEL SECURITY;', t.qualified)
  FROM user_tables t LEFT JOIN protected p ON p.oid OPERATOR(pg_catalog.=) t.oid
 WHERE t.relrowsecurity AND NOT t.relforcerowsecurity
UNION ALL
SELECT 'critical', 'policies_modified', p.qualified,
       'pg_tenancy''s policies are missing or differ from what tenancy.protect() writes',
       format('SELECT tenancy.protect(%L, %L, %L, %L);', p.qualified, p.workspace_column, p.user_column, p.write_permission)
  FROM protected p
 WHERE NOT tenancy._policies_intact(p.oid, p.workspace_column, p.user_column, p.write_permission)
UNION ALL
SELECT CASE WHEN pol.polpermissive THEN 'high' ELSE 'low' END, 'foreign_policy',
       format('%I on %s', pol.polname, p.qualified),
       CASE WHEN pol.polpermissive
            THEN 'permissive policy not written by pg_tenancy: permissive policies are OR-ed together, so it widens access'
            ELSE 'restrictive policy not written by pg_tenancy: it only narrows access, but a non-leakproof function in it may see other workspaces'' rows' END,
       CASE WHEN pol.polpermissive
            THEN format('DROP POLICY %I ON %s;  -- or recreate it AS RESTRICTIVE', pol.polname, p.qualified)
            ELSE format('review policy %I on %s; drop it if it is not needed', pol.polname, p.qualified) END
  FROM protected p JOIN pg_catalog.pg_policy pol ON pol.polrelid OPERATOR(pg_catalog.=) p.oid
 WHERE pol.polname NOT IN ('tenancy_workspace', 'tenancy_write_insert', 'tenancy_write_update', 'tenancy_write_delete')
UNION ALL
SELECT 'high', 'role_bypasses_rls', quote_ident(r.rolname),
       CASE WHEN r.rolsuper THEN 'a superuser that can log in: row-level security never applies to it'
            ELSE 'a role with BYPASSRLS that can log in: row-level security never applies to it' END,
       CASE WHEN r.rolsuper THEN format('ALTER ROLE %I NOSUPERUSER;  -- or NOLOGIN; applications must not connect as superusers', r.rolname)
            ELSE format('ALTER ROLE %I NOBYPASSRLS;', r.rolname) END
  FROM pg_catalog.pg_roles r
 WHERE r.rolcanlogin AND (r.rolsuper OR r.rolbypassrls) AND r.oid OPERATOR(pg_catalog.<>) 10
UNION ALL
SELECT 'low', 'audit_database_reachable', quote_ident(r.rolname),
       format('can connect to the audit database %I and LISTEN tenancy_alert: it learns when denials happen (the signal carries nothing else; details stay in tenancy.audit_log)', db.datname),
       CASE WHEN pg_catalog.has_database_privilege('public', db.oid, 'CONNECT')
            THEN format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC; GRANT CONNECT ON DATABASE %I TO tenancy_admin, tenancy_auditor, tenancy_sync;', db.datname, db.datname)
            ELSE format('REVOKE CONNECT ON DATABASE %I FROM %I;', db.datname, r.rolname) END
  FROM pg_catalog.pg_roles r
  JOIN pg_catalog.pg_database db ON db.datname OPERATOR(pg_catalog.=) pg_catalog.current_setting('tenancy.audit_database', true)
 WHERE r.rolcanlogin AND NOT r.rolsuper AND r.rolname !~ '^pg_'
   AND pg_catalog.has_database_privilege(r.oid, db.oid, 'CONNECT')
   AND NOT pg_catalog.pg_has_role(r.oid, 'tenancy_admin', 'MEMBER')
   AND NOT pg_catalog.pg_has_role(r.oid, 'tenancy_auditor', 'MEMBER')
   AND NOT pg_catalog.pg_has_role(r.oid, 'tenancy_sync', 'MEMBER')
UNION ALL
SELECT 'critical', 'owner_bypasses_rls', p.qualified,
       format('owned by %I, a superuser or BYPASSRLS role: FORCE ROW LEVEL SECURITY has no effect on it', r.rolname),
       format('ALTER TABLE %s OWNER TO <a NOLOGIN, NOBYPASSRLS role>;', p.qualified)
  FROM protected p JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) p.relowner
 WHERE r.rolsuper OR r.rolbypassrls
UNION ALL
SELECT 'high', 'owner_can_login', quote_ident(r.rolname),
       format('%s %s protected table(s), e.g. %s: it can disable row-level security or drop the policies',
              CASE WHEN r.oid OPERATOR(pg_catalog.=) p.relowner THEN 'a login role that owns'
                   ELSE format('a login role that is a member of %I, owner of', pg_catalog.pg_get_userbyid(p.relowner)) END,
              count(*), min(p.qualified)),
       CASE WHEN r.oid OPERATOR(pg_catalog.=) p.relowner
            THEN format('ALTER ROLE %I NOLOGIN;  -- let a NOLOGIN role own the tables; migrate with SET ROLE', r.rolname)
            ELSE format('REVOKE %I FROM %I;  -- or ALTER ROLE %I NOLOGIN', pg_catalog.pg_get_userbyid(p.relowner), r.rolname, r.rolname) END
  FROM protected p JOIN pg_catalog.pg_roles r ON pg_catalog.pg_has_role(r.oid, p.relowner, 'MEMBER')
 WHERE r.rolcanlogin AND NOT r.rolsuper AND NOT r.rolbypassrls
 GROUP BY r.oid, r.rolname, p.relowner
UNION ALL
SELECT CASE WHEN v.relkind OPERATOR(pg_catalog.=) 'm' THEN 'critical' ELSE 'high' END,
       CASE WHEN v.relkind OPERATOR(pg_catalog.=) 'm' THEN 'materialized_view' ELSE 'view_not_security_invoker' END,
       format('%I.%I', vn.nspname, v.relname),
       CASE WHEN v.relkind OPERATOR(pg_catalog.=) 'm'
            THEN format('materialized view over protected table %s: it stores every workspace''s rows without row-level security', p.qualified)
            ELSE format('view over protected table %s without security_invoker: the policies are checked as the view''s owner', p.qualified) END,
       CASE WHEN v.relkind OPERATOR(pg_catalog.=) 'm'
            THEN format('DROP MATERIALIZED VIEW %I.%I;  -- or keep it out of the application''s reach', vn.nspname, v.relname)
            ELSE format('ALTER VIEW %I.%I SET (security_invoker = true);', vn.nspname, v.relname) END
  FROM protected p
  JOIN pg_catalog.pg_depend d ON d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
   AND d.refobjid OPERATOR(pg_catalog.=) p.oid AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass
  JOIN pg_catalog.pg_rewrite rw ON rw.oid OPERATOR(pg_catalog.=) d.objid
  JOIN pg_catalog.pg_class v ON v.oid OPERATOR(pg_catalog.=) rw.ev_class AND v.oid OPERATOR(pg_catalog.<>) p.oid
  JOIN pg_catalog.pg_namespace vn ON vn.oid OPERATOR(pg_catalog.=) v.relnamespace
 WHERE v.relkind IN ('v', 'm')
   AND NOT (v.relkind OPERATOR(pg_catalog.=) 'v' AND EXISTS (
            SELECT FROM pg_catalog.pg_options_to_table(v.reloptions) o
             WHERE o.option_name OPERATOR(pg_catalog.=) 'security_invoker'
               AND lower(o.option_value) IN ('true', 'on', 'yes', '1')))
 GROUP BY v.relkind, vn.nspname, v.relname, p.qualified
UNION ALL
SELECT 'medium', 'security_definer_function', format('%I.%I(%s)', fn.nspname, f.proname, pg_catalog.pg_get_function_identity_arguments(f.oid)),
       format('SECURITY DEFINER function owned by %I, owner of protected table %s: it runs with the owner''s rights',
              pg_catalog.pg_get_userbyid(f.proowner), min(p.qualified)),
       format('ALTER FUNCTION %I.%I(%s) SECURITY INVOKER;  -- or give it another owner', fn.nspname, f.proname,
              pg_catalog.pg_get_function_identity_arguments(f.oid))
  FROM pg_catalog.pg_proc f
  JOIN pg_catalog.pg_namespace fn ON fn.oid OPERATOR(pg_catalog.=) f.pronamespace
  JOIN protected p ON p.relowner OPERATOR(pg_catalog.=) f.proowner
 WHERE f.prosecdef AND fn.nspname NOT IN ('pg_catalog', 'information_schema')
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                    WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
                      AND d.objid OPERATOR(pg_catalog.=) f.oid AND d.deptype OPERATOR(pg_catalog.=) 'e')
 GROUP BY fn.nspname, f.proname, f.oid, f.proowner
UNION ALL
SELECT 'high', 'truncate_granted', format('%s to %s', p.qualified,
              CASE WHEN acl.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END),
       'TRUNCATE ignores row-level security: the grantee can empty every workspace''s rows',
       format('REVOKE TRUNCATE ON %s FROM %s;', p.qualified,
              CASE WHEN acl.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END)
  FROM protected p CROSS JOIN LATERAL pg_catalog.aclexplode(p.relacl) acl
 WHERE acl.privilege_type OPERATOR(pg_catalog.=) 'TRUNCATE' AND acl.grantee OPERATOR(pg_catalog.<>) p.relowner
UNION ALL
SELECT 'medium', 'unique_without_workspace', format('%s on %s', quote_ident(ic.relname), p.qualified),
       format('unique index without %I: inserting a key another workspace uses fails, revealing that it exists', p.workspace_column),
       format('make it unique on (%I, …), e.g. a primary key (%I, id)', p.workspace_column, p.workspace_column)
  FROM protected p
  JOIN pg_catalog.pg_index i ON i.indrelid OPERATOR(pg_catalog.=) p.oid AND i.indisunique
  JOIN pg_catalog.pg_class ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid
  JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) p.oid AND a.attname OPERATOR(pg_catalog.=) p.workspace_column
 WHERE NOT (a.attnum OPERATOR(pg_catalog.=) ANY (i.indkey::int2[]))
   AND NOT (p.relispartition AND EXISTS (SELECT FROM pg_catalog.pg_inherits ii
                                          WHERE ii.inhrelid OPERATOR(pg_catalog.=) i.indexrelid));

-- API keys carry no more than whoever made them: who made, rotated and revoked each key, the
-- member it was made from, and key functions bounded by the caller's rights.
ALTER TABLE tenancy._api_key_store
    ADD COLUMN created_by_identity text,
    ADD COLUMN creator_user_id text,
    ADD COLUMN rotated_at timestamptz,
    ADD COLUMN rotated_by text,
    ADD COLUMN revoked_by text;
DROP VIEW tenancy.api_keys;
CREATE VIEW tenancy.api_keys AS
SELECT k.id, k.workspace_id, k.name, k.key_prefix, k.role, k.permissions, k.user_id,
       k.created_at, coalesce(k.created_by_identity, 'role:' OPERATOR(pg_catalog.||) k.created_by) AS created_by,
       k.expires_at, u.last_used_at, k.revoked_at,
       k.previous_valid_until AS previous_key_valid_until,
       k.rotated_at, k.rotated_by, k.revoked_by
  FROM tenancy._api_key_store k
  LEFT JOIN tenancy.api_key_usage u ON u.key_id OPERATOR(pg_catalog.=) k.id;
COMMENT ON VIEW tenancy.api_keys IS 'API keys: id, workspace, name, key prefix, role, permissions, dates; never the secret';

REVOKE ALL ON tenancy.api_keys FROM PUBLIC;
GRANT SELECT ON tenancy.api_keys TO tenancy_admin, tenancy_auditor;
DROP FUNCTION tenancy._require_key_manager(text, text);
-- Who manages the keys of `workspace` in this call: 'admin' for members of tenancy_admin (and
-- superusers), who control every key; 'identity' for an identity of that workspace that holds
-- api_keys:manage, whose keys are bounded by its own rights. Anyone else: 42501.
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
    RAISE EXCEPTION 'permission denied to % for workspace "%"', action, workspace
        USING ERRCODE = '42501',
              HINT = 'Members of tenancy_admin, or an identity of that workspace with the api_keys:manage permission, manage its keys.';
END
$$;

-- Who is acting, as the key records show it: the identity's user (user_… or api_key:<id>), or
-- role:<name> for an administrator.
CREATE OR REPLACE FUNCTION tenancy._key_actor(manager text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN manager OPERATOR(pg_catalog.=) 'admin'
                THEN 'role:' OPERATOR(pg_catalog.||) session_user
                ELSE tenancy.user_id() END
$$;

-- What a key with these rights would carry beyond the calling identity's, in words; NULL when
-- nothing. Permissions must be a subset of the identity's; the role the identity's own or none
-- (WorkOS role slugs have no order, so "not above" can only mean "the same"); the user the
-- identity's own or none.
CREATE OR REPLACE FUNCTION tenancy._beyond_identity(key_role text, key_permissions text[], key_user text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    extra text[];
BEGIN
    SELECT pg_catalog.array_agg(p.permission ORDER BY p.permission) INTO extra
      FROM pg_catalog.unnest(coalesce(key_permissions, '{}')) AS p(permission)
     WHERE NOT tenancy.has_permission(p.permission);
    IF extra IS NOT NULL THEN
        RETURN pg_catalog.format('permissions %s not held by the identity', pg_catalog.array_to_string(extra, ', '));
    END IF;
    IF key_role IS NOT NULL AND key_role IS DISTINCT FROM tenancy.role() THEN
        RETURN pg_catalog.format('role "%s" is not the identity''s own (%s)', key_role, coalesce(tenancy.role(), 'none'));
    END IF;
    IF key_user IS NOT NULL AND key_user IS DISTINCT FROM tenancy.user_id() THEN
        RETURN pg_catalog.format('user "%s" is not the identity''s own', key_user);
    END IF;
    RETURN NULL;
END
$$;

-- Creates a key and returns its secret, the only time it is ever shown. An identity's key carries
-- at most the identity's rights (tenancy._beyond_identity) and stays tied to the member whose
-- rights it was made from: disabling that member disables the key.
CREATE OR REPLACE FUNCTION tenancy.create_api_key(workspace_id text, name text, role text DEFAULT NULL,
                                       permissions text[] DEFAULT '{}',
                                       expires_at timestamptz DEFAULT NULL, user_id text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    manager text;
    excess text;
    creator_user text;
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
        -- A key made by a key inherits that key's member (or none, for an administrator's key).
        IF pg_catalog.current_setting('tenancy.api_key', true) OPERATOR(pg_catalog.<>) '' THEN
            SELECT coalesce(k.user_id, k.creator_user_id) INTO creator_user
              FROM tenancy._api_key_store k
             WHERE CAST(k.id AS pg_catalog.text) OPERATOR(pg_catalog.=) (tenancy.claims() OPERATOR(pg_catalog.->>) 'api_key_id');
        ELSE
            creator_user := tenancy.user_id();
        END IF;
    END IF;
    IF user_id IS NOT NULL AND NOT EXISTS (SELECT FROM tenancy.members m
                                            WHERE m.workspace_id = workspace_id AND m.user_id = user_id) THEN
        RAISE EXCEPTION 'user "%" is not a member of workspace "%"', user_id, workspace_id
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO minted FROM tenancy._mint_api_key();
    INSERT INTO tenancy._api_key_store (workspace_id, name, key_prefix, digest, role, permissions,
                                        user_id, expires_at, created_by_identity, creator_user_id)
    VALUES (workspace_id, name, minted.display, minted.digest, role, coalesce(permissions, '{}'),
            user_id, expires_at, tenancy._key_actor(manager), creator_user);
    RETURN minted.secret;
END
$$;

-- Revokes a key: it fails from the next statement on, in every backend. An identity revokes keys
-- within its own rights or that it created.
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
            RAISE EXCEPTION 'permission denied to revoke api key %: it carries more than the identity (%) and was not created by it', id, excess
                USING ERRCODE = '42501',
                      HINT = 'An identity revokes keys within its own rights or that it created; members of tenancy_admin revoke any key.';
        END IF;
    END IF;
    UPDATE tenancy._api_key_store k
       SET revoked_at = coalesce(k.revoked_at, now()),
           revoked_by = CASE WHEN k.revoked_at IS NULL THEN tenancy._key_actor(manager) ELSE k.revoked_by END
     WHERE k.id = id;
END
$$;

-- Gives a key a new secret (returned once); the old secret stays valid for `grace`. An identity
-- rotates only keys within its own rights at the moment of rotation (a working secret is as much
-- as a new key).
CREATE OR REPLACE FUNCTION tenancy.rotate_api_key(id uuid, grace interval DEFAULT '0 seconds')
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    key record;
    manager text;
    excess text;
    minted record;
BEGIN
    SELECT k.workspace_id, k.role, k.permissions, k.user_id INTO key
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
    END IF;
    SELECT * INTO minted FROM tenancy._mint_api_key();
    UPDATE tenancy._api_key_store k
       SET previous_digest = CASE WHEN grace > '0 seconds' THEN k.digest END,
           previous_valid_until = CASE WHEN grace > '0 seconds' THEN now() + grace END,
           digest = minted.digest, key_prefix = minted.display,
           rotated_at = now(), rotated_by = tenancy._key_actor(manager)
     WHERE k.id = id;
    RETURN minted.secret;
END
$$;

REVOKE ALL ON FUNCTION tenancy.create_api_key(text, text, text, text[], timestamptz, text),
    tenancy.revoke_api_key(uuid), tenancy.rotate_api_key(uuid, interval),
    tenancy._key_manager(text, text), tenancy._key_actor(text),
    tenancy._beyond_identity(text, text[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.create_api_key(text, text, text, text[], timestamptz, text),
    tenancy.revoke_api_key(uuid), tenancy.rotate_api_key(uuid, interval) TO PUBLIC;


-- Immutable helpers are parallel safe (PostgreSQL's opr_sanity check).
ALTER FUNCTION tenancy._registry_key(text) PARALLEL SAFE;
ALTER FUNCTION tenancy._vector_index_mark(text, text, text) PARALLEL SAFE;
ALTER FUNCTION tenancy._exact_max_rows() PARALLEL SAFE;

-- pg-tenancy-sync (issue: the database stays in step with WorkOS): the tenancy_sync role, the
-- companion's cursors, object versions and event log, and tenancy.sync_set_jwks. As in sql/sync.sql:
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

-- Alerts (issue: critical denials reach the operations team): each row says whether it raised
-- an alert ('denial': critical; 'burst': it made a burst from one source), so that alert
-- delivery follows the extension's own severity and burst rules.
ALTER TABLE tenancy.audit_log ADD COLUMN alert text CHECK (alert IN ('denial', 'burst'));
-- The order rows were committed in, which alert delivery follows (rows kept from 0.1.0 are
-- numbered in their physical order).
ALTER TABLE tenancy.audit_log ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX audit_log_id ON tenancy.audit_log (id);
COMMENT ON COLUMN tenancy.audit_log.id IS 'the order rows were committed in (one writer): what alert delivery follows, unlike ring_started_at, which a clock step or a promoted standby can move backwards';
SELECT pg_catalog.pg_extension_config_dump('tenancy.audit_log_id_seq', '');

-- Alert delivery (pg-tenancy-sync) follows tenancy.audit_log in the audit database: every column
-- but the statement text and the free-form detail, so no payload it builds can carry either.
GRANT SELECT (id, ring_started_at, seq, at, reason, critical, pid, database, role, client_addr,
              application_name, iss, sub, org_id, sid, kid, exp, alert)
   ON tenancy.audit_log TO tenancy_sync;

-- Vector search at native speed: tenancy.nearest is a C function (src/surface/nearest.rs) that
-- keeps its checks, strategy and plans per backend between calls.
CREATE OR REPLACE FUNCTION tenancy.nearest(tbl anyelement, "column" name, query anycompatible,
                                k integer DEFAULT 10, metric text DEFAULT 'cosine')
RETURNS TABLE (item anyelement, distance double precision)
LANGUAGE c VOLATILE ROWS 10 AS 'MODULE_PATHNAME', 'tenancy_nearest';
CREATE OR REPLACE FUNCTION tenancy.nearest_strategy(tbl anyelement, "column" name, metric text DEFAULT 'cosine')
RETURNS text LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'tenancy_nearest_strategy';
-- What the PL/pgSQL versions chose the strategy with.
DROP FUNCTION tenancy._strategy(oid, text, text, text, text);
DROP FUNCTION tenancy._scope(text, text, text, text);

-- Read replicas: denials raised on a hot standby are recorded here by its audit writer, named by
-- the standby they came from.
ALTER TABLE tenancy.audit_log ADD COLUMN origin text;
COMMENT ON COLUMN tenancy.audit_log.origin IS 'the hot standby that raised the denial (its cluster_name, else host:port); NULL when raised on this server';
GRANT SELECT (origin) ON tenancy.audit_log TO tenancy_sync;

-- Records a batch of denials raised on a hot standby (a standby cannot write): its audit writer
-- calls this in the primary's audit database over primary_conninfo, or
-- tenancy.audit_primary_conninfo (src/audit/standby.rs). A batch sent twice is recorded once
-- (keyed by the standby ring's start and sequence numbers); alerts and key-rotation signals are
-- raised as for the primary's own denials. Only a role with REPLICATION (which can already read
-- every row by streaming the WAL) or a superuser may call it: the audit log is evidence, and
-- ordinary roles must not write it.
CREATE FUNCTION tenancy.record_standby_denials(origin text, ring_started_at timestamptz, entries jsonb)
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
                                       application_name, iss, sub, org_id, sid, kid, exp, detail, statement, alert, origin)
        SELECT record_standby_denials.ring_started_at, e.seq, e.at, e.reason, e.critical, e.pid, e.database, e.role, e.client_addr,
               coalesce(e.application_name, ''), e.iss, e.sub, e.org_id, e.sid, e.kid, pg_catalog.to_timestamp(e.exp),
               coalesce(e.detail, ''), coalesce(e.statement, ''), e.alert, record_standby_denials.origin
          FROM pg_catalog.jsonb_to_recordset(entries)
               AS e(seq bigint, at timestamptz, reason text, critical boolean, pid integer, database text, role text,
                    client_addr text, application_name text, iss text, sub text, org_id text, sid text, kid text,
                    exp double precision, detail text, statement text, alert text)
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

-- Per-workspace HNSW indexes: new defaults, m 16 and ef_construction 160 (were 32 and 128).
-- Builds an HNSW index over the rows of one workspace (a partial index, WHERE workspace column =
-- workspace_id) for tenancy.nearest to use when that workspace searches, and returns it. For
-- the largest workspaces: their searches then walk a graph of their own rows only. Runs as the
-- caller, who must own the table; builds serially (max_parallel_maintenance_workers = 0:
-- CVE-2026-3172 affects parallel HNSW builds in pgvector <= 0.8.1) and in the caller's
-- transaction, holding a SHARE lock that blocks writes to the table until it commits (for a
-- non-blocking build run the statement tenancy.vector_index_ddl returns, with CONCURRENTLY).
-- Idempotent: an existing valid index for the same workspace, column and metric is returned.
-- The defaults (m 16 as pgvector's, ef_construction 160, 2.5 times pgvector's) matter: one
-- workspace's rows form a few tight topics, and with ef_construction 64 the graph linked them
-- poorly (docs/benchmarks.md: recall@10 of a 36,000-row clustered workspace 0.988, one query at
-- 0, at any ef_search); 160 gives 1.000 at ef_search 40, and m 16 costs half the search time of
-- m 32 (672 against 496 buffers per search).
-- The index's predicate names the workspace id, and catalogs are readable by every role.
CREATE OR REPLACE FUNCTION tenancy.create_vector_index(tbl regclass, "column" name, workspace_id text,
                                            metric text DEFAULT 'cosine', m integer DEFAULT 16,
                                            ef_construction integer DEFAULT 160)
RETURNS regclass LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp SET max_parallel_maintenance_workers = 0 AS $$
DECLARE
    existing regclass;
BEGIN
    IF tbl IS NULL OR workspace_id IS NULL THEN
        RAISE EXCEPTION 'table and workspace_id must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM tenancy._require_owner(tbl);
    existing := tenancy._vector_index_of(tbl, "column", metric, workspace_id);
    IF existing IS NOT NULL THEN
        RETURN existing;
    END IF;
    EXECUTE tenancy.vector_index_ddl(tbl, "column", workspace_id, metric, m, ef_construction, false);
    existing := tenancy._vector_index_of(tbl, "column", metric, workspace_id);
    RETURN existing;
END
$$;

-- The CREATE INDEX and COMMENT statements tenancy.create_vector_index runs, for running by hand
-- (concurrent => true gives CREATE INDEX CONCURRENTLY, which must run outside a transaction
-- block and after SET max_parallel_maintenance_workers = 0). Checks its arguments like nearest.
CREATE OR REPLACE FUNCTION tenancy.vector_index_ddl(tbl regclass, "column" name, workspace_id text,
                                         metric text DEFAULT 'cosine', m integer DEFAULT 16,
                                         ef_construction integer DEFAULT 160, concurrent boolean DEFAULT true)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tgt record;
    name text;
BEGIN
    IF tbl IS NULL OR workspace_id IS NULL OR concurrent IS NULL THEN
        RAISE EXCEPTION 'table, workspace_id and concurrent must not be null' USING ERRCODE = '22004';
    END IF;
    IF m IS NULL OR ef_construction IS NULL OR m NOT BETWEEN 2 AND 100
       OR ef_construction NOT BETWEEN 4 AND 1000 OR ef_construction OPERATOR(pg_catalog.<) 2 * m THEN
        RAISE EXCEPTION 'm must be between 2 and 100 and ef_construction between 2 * m and 1000'
            USING ERRCODE = '22023', HINT = 'The defaults are m 16, ef_construction 160 (pgvector''s own are 16 and 64).';
    END IF;
    tgt := tenancy._vector_target((SELECT c.reltype FROM pg_class c WHERE c.oid OPERATOR(pg_catalog.=) tbl),
                                  "column", metric);
    IF tgt.vector_base LIKE '%.sparsevec' THEN
        RAISE EXCEPTION 'HNSW indexes on sparsevec are not supported here' USING ERRCODE = '0A000';
    END IF;
    -- A name that is unique per (table, column, metric, workspace) and fits in 63 bytes.
    name := format('%s_%s_ws_%s', left((SELECT c.relname FROM pg_class c WHERE c.oid OPERATOR(pg_catalog.=) tbl), 30),
                   left(metric, 3), left(md5(format('%s:%s', "column", workspace_id)), 16));
    RETURN format('CREATE INDEX %s%I ON %s USING hnsw (%I %s) WITH (m = %s, ef_construction = %s) WHERE %I OPERATOR(pg_catalog.=) %L::%s; '
                  'COMMENT ON INDEX %I.%I IS %L;',
                  CASE WHEN concurrent THEN 'CONCURRENTLY ' ELSE '' END, name, tgt.rel_name, "column", tgt.opclass,
                  m, ef_construction, tgt.workspace_column, workspace_id, tgt.workspace_type,
                  (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                    WHERE c.oid OPERATOR(pg_catalog.=) tbl), name,
                  tenancy._vector_index_mark("column", metric, workspace_id));
END
$$;


-- Logical replication into protected tables: a coverage finding when PostgreSQL would refuse to
-- apply a subscription's changes (row-level security applies to the applying role).
-- Each subscription of this database and table it applies changes into, with the role whose
-- rights apply them: the subscription's owner, or from PostgreSQL 16 on, unless the subscription
-- runs as its owner (run_as_owner), the table's owner. PostgreSQL refuses to apply into a table
-- whose row-level security applies to that role (FORCE makes it apply to the table's owner).
CREATE FUNCTION tenancy._subscription_targets()
RETURNS TABLE (subscription name, rel oid, apply_role oid)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.current_setting('server_version_num')::integer OPERATOR(pg_catalog.>=) 160000 THEN
        RETURN QUERY EXECUTE
            'SELECT s.subname, r.srrelid, CASE WHEN s.subrunasowner THEN s.subowner ELSE c.relowner END
               FROM pg_catalog.pg_subscription s
               JOIN pg_catalog.pg_subscription_rel r ON r.srsubid OPERATOR(pg_catalog.=) s.oid
               JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) r.srrelid
               JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) s.subdbid
              WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()';
    ELSE
        RETURN QUERY
            SELECT s.subname, r.srrelid, s.subowner
              FROM pg_catalog.pg_subscription s
              JOIN pg_catalog.pg_subscription_rel r ON r.srsubid OPERATOR(pg_catalog.=) s.oid
              JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) s.subdbid
             WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database();
    END IF;
END
$$;

CREATE OR REPLACE VIEW tenancy.coverage AS
WITH user_tables AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind, c.relowner, c.relrowsecurity, c.relforcerowsecurity,
           c.relispartition, c.relacl, format('%I.%I', n.nspname, c.relname) AS qualified
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.relkind IN ('r', 'p')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenancy')
       AND n.nspname !~ '^pg_(toast|temp_)'
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                        WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                          AND d.objid OPERATOR(pg_catalog.=) c.oid AND d.deptype OPERATOR(pg_catalog.=) 'e')
), protected AS (
    SELECT t.*, p.workspace_column, p.user_column, p.write_permission
      FROM tenancy.protections p
      JOIN user_tables t ON t.nspname OPERATOR(pg_catalog.=) p.schema_name AND t.relname OPERATOR(pg_catalog.=) p.table_name
), tenant_columns AS (
    SELECT 'workspace_id'::text AS attname UNION SELECT p.workspace_column FROM tenancy.protections p
)
SELECT 'medium'::text AS severity, 'not_preloaded'::text AS finding, 'shared_preload_libraries'::text AS object,
       'pg_tenancy is not in shared_preload_libraries: until a backend loads the library, tenancy.* settings are unchecked placeholders'::text AS detail,
       'add pg_tenancy to shared_preload_libraries (ALTER SYSTEM SET shared_preload_libraries = …) and restart'::text AS fix
 WHERE NOT tenancy._preloaded()
UNION ALL
SELECT 'critical', 'unprotected_table', t.qualified,
       format('has tenant column %I but no pg_tenancy protection: every workspace''s rows are visible', a.attname),
       CASE WHEN par.qualified IS NOT NULL
            THEN format('SELECT tenancy.protect(%L);  -- a partition attached after its parent was protected', par.qualified)
            WHEN a.attname OPERATOR(pg_catalog.=) 'workspace_id' THEN format('SELECT tenancy.protect(%L);', t.qualified)
            ELSE format('SELECT tenancy.protect(%L, %L);', t.qualified, a.attname) END
  FROM user_tables t
  CROSS JOIN LATERAL (SELECT min(a.attname) AS attname FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid OPERATOR(pg_catalog.=) t.oid AND a.attnum OPERATOR(pg_catalog.>) 0
                         AND NOT a.attisdropped AND a.attname IN (SELECT attname FROM tenant_columns)) a
  LEFT JOIN LATERAL (SELECT p.qualified FROM pg_catalog.pg_inherits i JOIN protected p ON p.oid OPERATOR(pg_catalog.=) i.inhparent
                      WHERE i.inhrelid OPERATOR(pg_catalog.=) t.oid) par ON true
 WHERE a.attname IS NOT NULL AND t.oid NOT IN (SELECT oid FROM protected)
UNION ALL
SELECT 'low', 'stale_registry_row', format('%I.%I', p.schema_name, p.table_name),
       'registered as protected but no such table exists (restored without it, or dropped while the event triggers were off)',
       format('DELETE FROM tenancy.protections WHERE schema_name = %L AND table_name = %L;', p.schema_name, p.table_name)
  FROM tenancy.protections p
 WHERE NOT EXISTS (SELECT FROM user_tables t WHERE t.nspname OPERATOR(pg_catalog.=) p.schema_name
                      AND t.relname OPERATOR(pg_catalog.=) p.table_name)
UNION ALL
SELECT 'critical', 'rls_disabled', p.qualified, 'protected, but row-level security is disabled: the policies are ignored',
       format('SELECT tenancy.protect(%L%s);', p.qualified,
              CASE WHEN p.workspace_column OPERATOR(pg_catalog.<>) 'workspace_id' THEN format(', %L', p.workspace_column) ELSE '' END)
  FROM protected p WHERE NOT p.relrowsecurity
UNION ALL
SELECT CASE WHEN p.oid IS NOT NULL THEN 'high' ELSE 'medium' END, 'rls_not_forced', t.qualified,
       'row-level security is enabled but not forced: the table''s owner sees and writes every row',
       format('ALTER TABLE %s FORCE ROW LEVEL SECURITY;', t.qualified)
  FROM user_tables t LEFT JOIN protected p ON p.oid OPERATOR(pg_catalog.=) t.oid
 WHERE t.relrowsecurity AND NOT t.relforcerowsecurity
UNION ALL
SELECT 'critical', 'policies_modified', p.qualified,
       'pg_tenancy''s policies are missing or differ from what tenancy.protect() writes',
       format('SELECT tenancy.protect(%L, %L, %L, %L);', p.qualified, p.workspace_column, p.user_column, p.write_permission)
  FROM protected p
 WHERE NOT tenancy._policies_intact(p.oid, p.workspace_column, p.user_column, p.write_permission)
UNION ALL
SELECT CASE WHEN pol.polpermissive THEN 'high' ELSE 'low' END, 'foreign_policy',
       format('%I on %s', pol.polname, p.qualified),
       CASE WHEN pol.polpermissive
            THEN 'permissive policy not written by pg_tenancy: permissive policies are OR-ed together, so it widens access'
            ELSE 'restrictive policy not written by pg_tenancy: it only narrows access, but a non-leakproof function in it may see other workspaces'' rows' END,
       CASE WHEN pol.polpermissive
            THEN format('DROP POLICY %I ON %s;  -- or recreate it AS RESTRICTIVE', pol.polname, p.qualified)
            ELSE format('review policy %I on %s; drop it if it is not needed', pol.polname, p.qualified) END
  FROM protected p JOIN pg_catalog.pg_policy pol ON pol.polrelid OPERATOR(pg_catalog.=) p.oid
 WHERE pol.polname NOT IN ('tenancy_workspace', 'tenancy_write_insert', 'tenancy_write_update', 'tenancy_write_delete')
UNION ALL
SELECT 'high', 'role_bypasses_rls', quote_ident(r.rolname),
       CASE WHEN r.rolsuper THEN 'a superuser that can log in: row-level security never applies to it'
            ELSE 'a role with BYPASSRLS that can log in: row-level security never applies to it' END,
       CASE WHEN r.rolsuper THEN format('ALTER ROLE %I NOSUPERUSER;  -- or NOLOGIN; applications must not connect as superusers', r.rolname)
            ELSE format('ALTER ROLE %I NOBYPASSRLS;', r.rolname) END
  FROM pg_catalog.pg_roles r
 WHERE r.rolcanlogin AND (r.rolsuper OR r.rolbypassrls) AND r.oid OPERATOR(pg_catalog.<>) 10
UNION ALL
SELECT 'low', 'audit_database_reachable', quote_ident(r.rolname),
       format('can connect to the audit database %I and LISTEN tenancy_alert: it learns when denials happen (the signal carries nothing else; details stay in tenancy.audit_log)', db.datname),
       CASE WHEN pg_catalog.has_database_privilege('public', db.oid, 'CONNECT')
            THEN format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC; GRANT CONNECT ON DATABASE %I TO tenancy_admin, tenancy_auditor, tenancy_sync;', db.datname, db.datname)
            ELSE format('REVOKE CONNECT ON DATABASE %I FROM %I;', db.datname, r.rolname) END
  FROM pg_catalog.pg_roles r
  JOIN pg_catalog.pg_database db ON db.datname OPERATOR(pg_catalog.=) pg_catalog.current_setting('tenancy.audit_database', true)
 WHERE r.rolcanlogin AND NOT r.rolsuper AND r.rolname !~ '^pg_'
   AND pg_catalog.has_database_privilege(r.oid, db.oid, 'CONNECT')
   AND NOT pg_catalog.pg_has_role(r.oid, 'tenancy_admin', 'MEMBER')
   AND NOT pg_catalog.pg_has_role(r.oid, 'tenancy_auditor', 'MEMBER')
   AND NOT pg_catalog.pg_has_role(r.oid, 'tenancy_sync', 'MEMBER')
UNION ALL
SELECT 'critical', 'owner_bypasses_rls', p.qualified,
       format('owned by %I, a superuser or BYPASSRLS role: FORCE ROW LEVEL SECURITY has no effect on it', r.rolname),
       format('ALTER TABLE %s OWNER TO <a NOLOGIN, NOBYPASSRLS role>;', p.qualified)
  FROM protected p JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) p.relowner
 WHERE r.rolsuper OR r.rolbypassrls
UNION ALL
SELECT 'high', 'owner_can_login', quote_ident(r.rolname),
       format('%s %s protected table(s), e.g. %s: it can disable row-level security or drop the policies',
              CASE WHEN r.oid OPERATOR(pg_catalog.=) p.relowner THEN 'a login role that owns'
                   ELSE format('a login role that is a member of %I, owner of', pg_catalog.pg_get_userbyid(p.relowner)) END,
              count(*), min(p.qualified)),
       CASE WHEN r.oid OPERATOR(pg_catalog.=) p.relowner
            THEN format('ALTER ROLE %I NOLOGIN;  -- let a NOLOGIN role own the tables; migrate with SET ROLE', r.rolname)
            ELSE format('REVOKE %I FROM %I;  -- or ALTER ROLE %I NOLOGIN', pg_catalog.pg_get_userbyid(p.relowner), r.rolname, r.rolname) END
  FROM protected p JOIN pg_catalog.pg_roles r ON pg_catalog.pg_has_role(r.oid, p.relowner, 'MEMBER')
 WHERE r.rolcanlogin AND NOT r.rolsuper AND NOT r.rolbypassrls
 GROUP BY r.oid, r.rolname, p.relowner
UNION ALL
SELECT CASE WHEN v.relkind OPERATOR(pg_catalog.=) 'm' THEN 'critical' ELSE 'high' END,
       CASE WHEN v.relkind OPERATOR(pg_catalog.=) 'm' THEN 'materialized_view' ELSE 'view_not_security_invoker' END,
       format('%I.%I', vn.nspname, v.relname),
       CASE WHEN v.relkind OPERATOR(pg_catalog.=) 'm'
            THEN format('materialized view over protected table %s: it stores every workspace''s rows without row-level security', p.qualified)
            ELSE format('view over protected table %s without security_invoker: the policies are checked as the view''s owner', p.qualified) END,
       CASE WHEN v.relkind OPERATOR(pg_catalog.=) 'm'
            THEN format('DROP MATERIALIZED VIEW %I.%I;  -- or keep it out of the application''s reach', vn.nspname, v.relname)
            ELSE format('ALTER VIEW %I.%I SET (security_invoker = true);', vn.nspname, v.relname) END
  FROM protected p
  JOIN pg_catalog.pg_depend d ON d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
   AND d.refobjid OPERATOR(pg_catalog.=) p.oid AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass
  JOIN pg_catalog.pg_rewrite rw ON rw.oid OPERATOR(pg_catalog.=) d.objid
  JOIN pg_catalog.pg_class v ON v.oid OPERATOR(pg_catalog.=) rw.ev_class AND v.oid OPERATOR(pg_catalog.<>) p.oid
  JOIN pg_catalog.pg_namespace vn ON vn.oid OPERATOR(pg_catalog.=) v.relnamespace
 WHERE v.relkind IN ('v', 'm')
   AND NOT (v.relkind OPERATOR(pg_catalog.=) 'v' AND EXISTS (
            SELECT FROM pg_catalog.pg_options_to_table(v.reloptions) o
             WHERE o.option_name OPERATOR(pg_catalog.=) 'security_invoker'
               AND lower(o.option_value) IN ('true', 'on', 'yes', '1')))
 GROUP BY v.relkind, vn.nspname, v.relname, p.qualified
UNION ALL
SELECT 'medium', 'security_definer_function', format('%I.%I(%s)', fn.nspname, f.proname, pg_catalog.pg_get_function_identity_arguments(f.oid)),
       format('SECURITY DEFINER function owned by %I, owner of protected table %s: it runs with the owner''s rights',
              pg_catalog.pg_get_userbyid(f.proowner), min(p.qualified)),
       format('ALTER FUNCTION %I.%I(%s) SECURITY INVOKER;  -- or give it another owner', fn.nspname, f.proname,
              pg_catalog.pg_get_function_identity_arguments(f.oid))
  FROM pg_catalog.pg_proc f
  JOIN pg_catalog.pg_namespace fn ON fn.oid OPERATOR(pg_catalog.=) f.pronamespace
  JOIN protected p ON p.relowner OPERATOR(pg_catalog.=) f.proowner
 WHERE f.prosecdef AND fn.nspname NOT IN ('pg_catalog', 'information_schema')
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                    WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
                      AND d.objid OPERATOR(pg_catalog.=) f.oid AND d.deptype OPERATOR(pg_catalog.=) 'e')
 GROUP BY fn.nspname, f.proname, f.oid, f.proowner
UNION ALL
SELECT 'high', 'truncate_granted', format('%s to %s', p.qualified,
              CASE WHEN acl.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END),
       'TRUNCATE ignores row-level security: the grantee can empty every workspace''s rows',
       format('REVOKE TRUNCATE ON %s FROM %s;', p.qualified,
              CASE WHEN acl.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END)
  FROM protected p CROSS JOIN LATERAL pg_catalog.aclexplode(p.relacl) acl
 WHERE acl.privilege_type OPERATOR(pg_catalog.=) 'TRUNCATE' AND acl.grantee OPERATOR(pg_catalog.<>) p.relowner
UNION ALL
SELECT 'medium', 'unique_without_workspace', format('%s on %s', quote_ident(ic.relname), p.qualified),
       format('unique index without %I: inserting a key another workspace uses fails, revealing that it exists', p.workspace_column),
       format('make it unique on (%I, …), e.g. a primary key (%I, id)', p.workspace_column, p.workspace_column)
  FROM protected p
  JOIN pg_catalog.pg_index i ON i.indrelid OPERATOR(pg_catalog.=) p.oid AND i.indisunique
  JOIN pg_catalog.pg_class ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid
  JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) p.oid AND a.attname OPERATOR(pg_catalog.=) p.workspace_column
 WHERE NOT (a.attnum OPERATOR(pg_catalog.=) ANY (i.indkey::int2[]))
   AND NOT (p.relispartition AND EXISTS (SELECT FROM pg_catalog.pg_inherits ii
                                          WHERE ii.inhrelid OPERATOR(pg_catalog.=) i.indexrelid))
UNION ALL
SELECT 'high', 'subscription_refused', format('subscription %I into %s', st.subscription, p.qualified),
       format('row-level security applies to %I, the role that applies the subscription''s changes: PostgreSQL refuses them and replication stops',
              r.rolname),
       CASE WHEN pg_catalog.current_setting('server_version_num')::integer OPERATOR(pg_catalog.>=) 160000
            THEN format('ALTER SUBSCRIPTION %I SET (run_as_owner = true);  -- its owner a superuser that is not a login role of the applications; the rows then arrive as the publisher wrote them',
                        st.subscription)
            ELSE format('ALTER SUBSCRIPTION %I OWNER TO <a superuser>;  -- the rows then arrive as the publisher wrote them', st.subscription) END
  FROM tenancy._subscription_targets() st
  JOIN protected p ON p.oid OPERATOR(pg_catalog.=) st.rel
  JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) st.apply_role
 WHERE NOT (r.rolsuper OR r.rolbypassrls);

-- protect warns when a subscription into the table would be refused under its row-level security,
-- and says how to order it with Citus when the workspace column's DEFAULT is refused.
CREATE OR REPLACE FUNCTION tenancy._protect_one(rel oid, ws_col text, user_col text, permission text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
    reg tenancy.protections;
    registered boolean;
    p record;
    ws_type oid;
    ws_attnum int2;
    ours text;
    current_default text;
    enabled boolean;
    forced boolean;
    defaulted boolean;
    previous text;
    refusal text;
BEGIN
    PERFORM tenancy._require_owner(rel);
    PERFORM tenancy._check_column(rel, ws_col, 'workspace column');
    IF user_col IS NOT NULL THEN
        PERFORM tenancy._check_column(rel, user_col, 'user column');
    END IF;
    SELECT n.nspname, k.relname, k.relrowsecurity, k.relforcerowsecurity INTO c
      FROM pg_class k JOIN pg_namespace n ON n.oid OPERATOR(pg_catalog.=) k.relnamespace
     WHERE k.oid OPERATOR(pg_catalog.=) rel;
    -- Serializes protect and unprotect of one table without blocking reads and writes, and
    -- without writing anything (a second protect must leave no trace, not even a row lock).
    EXECUTE format('LOCK TABLE %s IN SHARE UPDATE EXCLUSIVE MODE', rel::regclass);
    SELECT * INTO reg FROM tenancy.protections r
     WHERE r.schema_name OPERATOR(pg_catalog.=) c.nspname AND r.table_name OPERATOR(pg_catalog.=) c.relname;
    registered := FOUND;

    -- Row-level security on, and forced so that the owner is filtered too.
    enabled := coalesce(reg.enabled_rls, false);
    forced := coalesce(reg.forced_rls, false);
    IF NOT c.relrowsecurity THEN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', rel::regclass);
        enabled := true;
    END IF;
    IF NOT c.relforcerowsecurity THEN
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', rel::regclass);
        forced := true;
    END IF;

    -- Policies: drop ours that differ from the spec, create the missing ones.
    FOR p IN SELECT l.policy_name FROM tenancy._live_policies(rel) l
              WHERE NOT l.to_public
                 OR NOT EXISTS (SELECT FROM tenancy._policy_spec(rel, ws_col, user_col, permission) s
                                 WHERE (s.policy_name, s.permissive, s.command, s.qual, s.with_check)
                                       IS NOT DISTINCT FROM (l.policy_name, l.permissive, l.command, l.qual, l.with_check))
    LOOP
        EXECUTE format('DROP POLICY %I ON %s', p.policy_name, rel::regclass);
    END LOOP;
    FOR p IN SELECT s.* FROM tenancy._policy_spec(rel, ws_col, user_col, permission) s
              WHERE s.policy_name NOT IN (SELECT l.policy_name FROM tenancy._live_policies(rel) l)
    LOOP
        EXECUTE format('CREATE POLICY %I ON %s AS %s FOR %s TO PUBLIC%s%s', p.policy_name, rel::regclass,
                       CASE WHEN p.permissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                       CASE p.command WHEN '*' THEN 'ALL' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                      WHEN 'd' THEN 'DELETE' END,
                       ' USING (' OPERATOR(pg_catalog.||) p.qual OPERATOR(pg_catalog.||) ')',
                       ' WITH CHECK (' OPERATOR(pg_catalog.||) p.with_check OPERATOR(pg_catalog.||) ')');
    END LOOP;
    IF NOT EXISTS (SELECT FROM pg_policy pol JOIN pg_description d
                     ON d.objoid OPERATOR(pg_catalog.=) pol.oid
                    AND d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_policy'::regclass
                    AND d.objsubid OPERATOR(pg_catalog.=) 0
                  WHERE pol.polrelid OPERATOR(pg_catalog.=) rel AND pol.polname OPERATOR(pg_catalog.=) 'tenancy_workspace'
                    AND d.description OPERATOR(pg_catalog.=) tenancy._registry_mark(c.nspname, c.relname)) THEN
        EXECUTE format('COMMENT ON POLICY tenancy_workspace ON %s IS %L', rel::regclass,
                       tenancy._registry_mark(c.nspname, c.relname));
    END IF;

    -- Permissive policies of others are OR-ed with ours: say so now (tenancy.coverage lists them too).
    FOR p IN SELECT pol.polname FROM pg_policy pol
              WHERE pol.polrelid OPERATOR(pg_catalog.=) rel AND pol.polpermissive
                AND pol.polname NOT IN ('tenancy_workspace', 'tenancy_write_insert', 'tenancy_write_update', 'tenancy_write_delete')
              ORDER BY pol.polname
    LOOP
        RAISE WARNING 'table % has permissive policy "%" that pg_tenancy did not write', rel::regclass, p.polname
            USING DETAIL = 'Permissive policies are OR-ed together: it widens what the workspace policy allows.',
                  HINT = 'Drop it, or recreate it AS RESTRICTIVE.';
    END LOOP;

    -- The workspace column defaults to the caller's workspace; remember what it replaced.
    defaulted := coalesce(reg.set_default, false);
    previous := reg.previous_default;
    IF registered AND reg.workspace_column OPERATOR(pg_catalog.<>) ws_col THEN
        IF reg.set_default THEN
            PERFORM tenancy._restore_default(rel, reg.workspace_column, reg.previous_default);
        END IF;
        defaulted := false;
        previous := NULL;
    END IF;
    SELECT a.atttypid, a.attnum INTO ws_type, ws_attnum FROM pg_attribute a
     WHERE a.attrelid OPERATOR(pg_catalog.=) rel AND a.attname OPERATOR(pg_catalog.=) ws_col;
    ours := tenancy._identity_expr('workspace_id', ws_type);
    SELECT pg_get_expr(d.adbin, d.adrelid) INTO current_default FROM pg_attrdef d
     WHERE d.adrelid OPERATOR(pg_catalog.=) rel AND d.adnum OPERATOR(pg_catalog.=) ws_attnum;
    IF current_default IS DISTINCT FROM ours THEN
        BEGIN
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s', rel::regclass, ws_col, ours);
        EXCEPTION WHEN feature_not_supported THEN
            -- Citus refuses ALTER TABLE on a distributed table's distribution column.
            GET STACKED DIAGNOSTICS refusal = MESSAGE_TEXT;
            RAISE EXCEPTION '%', refusal USING ERRCODE = 'feature_not_supported',
                HINT = 'On Citus, protect a table before create_distributed_table(), and name its workspace column in every INSERT (docs/scale-out.md).';
        END;
        IF NOT defaulted OR current_default !~ '^\(?tenancy\.workspace_id\(\)' THEN
            previous := current_default;
        END IF;
        defaulted := true;
    END IF;

    -- Every statement filters on the workspace column: it wants an index.
    IF NOT EXISTS (SELECT FROM pg_index i
                    WHERE i.indrelid OPERATOR(pg_catalog.=) rel AND i.indkey[0] OPERATOR(pg_catalog.=) ws_attnum
                      AND i.indpred IS NULL) THEN
        RAISE WARNING 'no index on table % leads with column "%"', rel::regclass, ws_col
            USING DETAIL = 'Every query on a protected table filters on its workspace column.',
                  HINT = format('CREATE INDEX ON %s (%I);', rel::regclass, ws_col);
    END IF;

    -- A subscription applying into the table as a role its row-level security now applies to
    -- would be refused by PostgreSQL (tenancy.coverage: subscription_refused).
    FOR p IN SELECT st.subscription, r.rolname
               FROM tenancy._subscription_targets() st
               JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) st.apply_role
              WHERE st.rel OPERATOR(pg_catalog.=) _protect_one.rel AND NOT (r.rolsuper OR r.rolbypassrls)
    LOOP
        RAISE WARNING 'subscription "%" applies changes into % as role "%", to which its row-level security now applies: PostgreSQL will refuse them',
                      p.subscription, rel::regclass, p.rolname
            USING HINT = 'Let the subscription run as an owner that bypasses row-level security: see the subscription_refused finding of tenancy.coverage.';
    END LOOP;

    -- The registry row, written only when something changed (ON CONFLICT would lock the row
    -- even when it changes nothing).
    IF NOT registered THEN
        INSERT INTO tenancy.protections (schema_name, table_name, workspace_column, user_column, write_permission,
                                         enabled_rls, forced_rls, set_default, previous_default)
        VALUES (c.nspname, c.relname, ws_col, user_col, permission, enabled, forced, defaulted, previous);
    ELSIF (reg.workspace_column, reg.user_column, reg.write_permission, reg.enabled_rls, reg.forced_rls,
           reg.set_default, reg.previous_default) IS DISTINCT FROM
          (ws_col, user_col, permission, enabled, forced, defaulted, previous) THEN
        UPDATE tenancy.protections r
           SET workspace_column = ws_col, user_column = user_col, write_permission = permission,
               enabled_rls = enabled, forced_rls = forced, set_default = defaulted,
               previous_default = previous, protected_at = now(), protected_by = current_user
         WHERE r.schema_name OPERATOR(pg_catalog.=) c.nspname AND r.table_name OPERATOR(pg_catalog.=) c.relname;
    END IF;
END
$$;

-- Citus: the new-table event trigger ignores the shards Citus creates on its workers.
CREATE OR REPLACE FUNCTION tenancy._guard_new_tables() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    auto boolean := coalesce(nullif(current_setting('tenancy.auto_protect', true), '')::boolean, false);
    schemas text[] := tenancy._auto_protect_schemas();
    t record;
    parent tenancy.protections;
    ws text;
BEGIN
    -- Citus creates a distributed table's shards on its workers through internal connections,
    -- named 'citus_internal gpid=…': the shards are protected (or not) with their table on the
    -- coordinator, and a warning per shard helps no one.
    IF pg_catalog.starts_with(pg_catalog.current_setting('application_name'), 'citus_internal') THEN
        RETURN;
    END IF;
    FOR t IN SELECT DISTINCT c.oid, n.nspname, c.relname, c.relispartition
               FROM pg_event_trigger_ddl_commands() e
               JOIN pg_class c ON c.oid OPERATOR(pg_catalog.=) e.objid
               JOIN pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
              WHERE e.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass AND NOT e.in_extension
                AND c.relkind IN ('r', 'p') AND c.relpersistence OPERATOR(pg_catalog.<>) 't'
                AND n.nspname OPERATOR(pg_catalog.=) ANY (schemas)
    LOOP
        parent := NULL;
        IF t.relispartition THEN
            SELECT r.* INTO parent FROM pg_inherits i
              JOIN pg_class pc ON pc.oid OPERATOR(pg_catalog.=) i.inhparent
              JOIN pg_namespace pn ON pn.oid OPERATOR(pg_catalog.=) pc.relnamespace
              JOIN tenancy.protections r ON r.schema_name OPERATOR(pg_catalog.=) pn.nspname
                                        AND r.table_name OPERATOR(pg_catalog.=) pc.relname
             WHERE i.inhrelid OPERATOR(pg_catalog.=) t.oid;
        END IF;
        ws := coalesce(parent.workspace_column, 'workspace_id');
        IF tenancy._column_type(t.oid, ws) IS NULL THEN
            CONTINUE;
        END IF;
        IF auto THEN
            PERFORM tenancy.protect(t.oid::regclass, ws, parent.user_column, parent.write_permission);
        ELSE
            RAISE WARNING 'table %.% has a workspace column but is not protected', quote_ident(t.nspname), quote_ident(t.relname)
                USING DETAIL = 'Without row-level security every workspace''s rows are visible to every caller.',
                      HINT = format('Run SELECT tenancy.protect(%L)%s, or set tenancy.auto_protect = on.',
                                    format('%I.%I', t.nspname, t.relname),
                                    CASE WHEN parent.schema_name IS NOT NULL
                                         THEN ' with the parent''s arguments' ELSE '' END);
        END IF;
    END LOOP;
END
$$;

-- Citus (issue: read replicas and Citus): the invalidation triggers become internal triggers,
-- which Citus does not count when it makes the identity tables reference tables; writes to the
-- tables and to their shards are also seen by the hooks (src/state/invalidation.rs).
CREATE FUNCTION tenancy."_create_invalidation_trigger"("table" TEXT) RETURNS void
STRICT LANGUAGE c AS 'MODULE_PATHNAME', '_create_invalidation_trigger_wrapper';
DROP TRIGGER invalidate_identities ON tenancy.issuers;
DROP TRIGGER invalidate_identities ON tenancy.workspaces;
DROP TRIGGER invalidate_identities ON tenancy.members;
DROP TRIGGER invalidate_identities ON tenancy.revoked_sessions;
DROP TRIGGER invalidate_identities ON tenancy._api_key_store;
SELECT tenancy._create_invalidation_trigger(t)
  FROM unnest(ARRAY['issuers', 'workspaces', 'members', 'revoked_sessions', '_api_key_store']) t;
REVOKE ALL ON FUNCTION tenancy._create_invalidation_trigger(text) FROM PUBLIC;

-- tenancy.coverage reports an identity table without its invalidation trigger. The view as in
-- sql/coverage.sql:
CREATE OR REPLACE VIEW tenancy.coverage AS
WITH user_tables AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind, c.relowner, c.relrowsecurity, c.relforcerowsecurity,
           c.relispartition, c.relacl, format('%I.%I', n.nspname, c.relname) AS qualified
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.relkind IN ('r', 'p')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenancy')
       AND n.nspname !~ '^pg_(toast|temp_)'
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                        WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                          AND d.objid OPERATOR(pg_catalog.=) c.oid AND d.deptype OPERATOR(pg_catalog.=) 'e')
), protected AS (
    SELECT t.*, p.workspace_column, p.user_column, p.write_permission
      FROM tenancy.protections p
      JOIN user_tables t ON t.nspname OPERATOR(pg_catalog.=) p.schema_name AND t.relname OPERATOR(pg_catalog.=) p.table_name
), tenant_columns AS (
    SELECT 'workspace_id'::text AS attname UNION SELECT p.workspace_column FROM tenancy.protections p
)
SELECT 'medium'::text AS severity, 'not_preloaded'::text AS finding, 'shared_preload_libraries'::text AS object,
       'pg_tenancy is not in shared_preload_libraries: until a backend loads the library, tenancy.* settings are unchecked placeholders'::text AS detail,
       'add pg_tenancy to shared_preload_libraries (ALTER SYSTEM SET shared_preload_libraries = …) and restart'::text AS fix
 WHERE NOT tenancy._preloaded()
UNION ALL
SELECT 'high', 'invalidation_trigger_missing', format('tenancy.%I', t.name),
       'the identity table has no invalidation trigger: a change to it by a backend that has not loaded pg_tenancy leaves cached identities in force elsewhere (a pg_upgrade drops it: pg_dump leaves internal triggers out)',
       format('SELECT tenancy._create_invalidation_trigger(%L);', t.name)
  FROM unnest(ARRAY['issuers', 'workspaces', 'members', 'revoked_sessions', '_api_key_store']) t(name)
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_trigger g
                    WHERE g.tgrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(format('tenancy.%I', t.name))
                      AND g.tgfoid OPERATOR(pg_catalog.=) CAST('tenancy.invalidate_identities()' AS pg_catalog.regprocedure))
UNION ALL
SELECT 'critical', 'unprotected_table', t.qualified,
       format('has tenant column %I but no pg_tenancy protection: every workspace''s rows are visible', a.attname),
       CASE WHEN par.qualified IS NOT NULL
            THEN format('SELECT tenancy.protect(%L);  -- a partition attached after its parent was protected', par.qualified)
            WHEN a.attname OPERATOR(pg_catalog.=) 'workspace_id' THEN format('SELECT tenancy.protect(%L);', t.qualified)
            ELSE format('SELECT tenancy.protect(%L, %L);', t.qualified, a.attname) END
  FROM user_tables t
  CROSS JOIN LATERAL (SELECT min(a.attname) AS attname FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid OPERATOR(pg_catalog.=) t.oid AND a.attnum OPERATOR(pg_catalog.>) 0
                         AND NOT a.attisdropped AND a.attname IN (SELECT attname FROM tenant_columns)) a
  LEFT JOIN LATERAL (SELECT p.qualified FROM pg_catalog.pg_inherits i JOIN protected p ON p.oid OPERATOR(pg_catalog.=) i.inhparent
                      WHERE i.inhrelid OPERATOR(pg_catalog.=) t.oid) par ON true
 WHERE a.attname IS NOT NULL AND t.oid NOT IN (SELECT oid FROM protected)
UNION ALL
SELECT 'low', 'stale_registry_row', format('%I.%I', p.schema_name, p.table_name),
       'registered as protected but no such table exists (restored without it, or dropped while the event triggers were off)',
       format('DELETE FROM tenancy.protections WHERE schema_name = %L AND table_name = %L;', p.schema_name, p.table_name)
  FROM tenancy.protections p
 WHERE NOT EXISTS (SELECT FROM user_tables t WHERE t.nspname OPERATOR(pg_catalog.=) p.schema_name
                      AND t.relname OPERATOR(pg_catalog.=) p.table_name)
UNION ALL
SELECT 'critical', 'rls_disabled', p.qualified, 'protected, but row-level security is disabled: the policies are ignored',
       format('SELECT tenancy.protect(%L%s);', p.qualified,
              CASE WHEN p.workspace_column OPERATOR(pg_catalog.<>) 'workspace_id' THEN format(', %L', p.workspace_column) ELSE '' END)
  FROM protected p WHERE NOT p.relrowsecurity
UNION ALL
SELECT CASE WHEN p.oid IS NOT NULL THEN 'high' ELSE 'medium' END, 'rls_not_forced', t.qualified,
       'row-level security is enabled but not forced: the table''s owner sees and writes every row',
       format('ALTER TABLE %s FORCE ROW LEVEL SECURITY;', t.qualified)
  FROM user_tables t LEFT JOIN protected p ON p.oid OPERATOR(pg_catalog.=) t.oid
 WHERE t.relrowsecurity AND NOT t.relforcerowsecurity
UNION ALL
SELECT 'critical', 'policies_modified', p.qualified,
       'pg_tenancy''s policies are missing or differ from what tenancy.protect() writes',
       format('SELECT tenancy.protect(%L, %L, %L, %L);', p.qualified, p.workspace_column, p.user_column, p.write_permission)
  FROM protected p
 WHERE NOT tenancy._policies_intact(p.oid, p.workspace_column, p.user_column, p.write_permission)
UNION ALL
SELECT CASE WHEN pol.polpermissive THEN 'high' ELSE 'low' END, 'foreign_policy',
       format('%I on %s', pol.polname, p.qualified),
       CASE WHEN pol.polpermissive
            THEN 'permissive policy not written by pg_tenancy: permissive policies are OR-ed together, so it widens access'
            ELSE 'restrictive policy not written by pg_tenancy: it only narrows access, but a non-leakproof function in it may see other workspaces'' rows' END,
       CASE WHEN pol.polpermissive
            THEN format('DROP POLICY %I ON %s;  -- or recreate it AS RESTRICTIVE', pol.polname, p.qualified)
            ELSE format('review policy %I on %s; drop it if it is not needed', pol.polname, p.qualified) END
  FROM protected p JOIN pg_catalog.pg_policy pol ON pol.polrelid OPERATOR(pg_catalog.=) p.oid
 WHERE pol.polname NOT IN ('tenancy_workspace', 'tenancy_write_insert', 'tenancy_write_update', 'tenancy_write_delete')
UNION ALL
SELECT 'high', 'role_bypasses_rls', quote_ident(r.rolname),
       CASE WHEN r.rolsuper THEN 'a superuser that can log in: row-level security never applies to it'
            ELSE 'a role with BYPASSRLS that can log in: row-level security never applies to it' END,
       CASE WHEN r.rolsuper THEN format('ALTER ROLE %I NOSUPERUSER;  -- or NOLOGIN; applications must not connect as superusers', r.rolname)
            ELSE format('ALTER ROLE %I NOBYPASSRLS;', r.rolname) END
  FROM pg_catalog.pg_roles r
 WHERE r.rolcanlogin AND (r.rolsuper OR r.rolbypassrls) AND r.oid OPERATOR(pg_catalog.<>) 10
UNION ALL
SELECT 'low', 'audit_database_reachable', quote_ident(r.rolname),
       format('can connect to the audit database %I and LISTEN tenancy_alert: it learns when denials happen (the signal carries nothing else; details stay in tenancy.audit_log)', db.datname),
       CASE WHEN pg_catalog.has_database_privilege('public', db.oid, 'CONNECT')
            THEN format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC; GRANT CONNECT ON DATABASE %I TO tenancy_admin, tenancy_auditor, tenancy_sync;', db.datname, db.datname)
            ELSE format('REVOKE CONNECT ON DATABASE %I FROM %I;', db.datname, r.rolname) END
  FROM pg_catalog.pg_roles r
  JOIN pg_catalog.pg_database db ON db.datname OPERATOR(pg_catalog.=) pg_catalog.current_setting('tenancy.audit_database', true)
 WHERE r.rolcanlogin AND NOT r.rolsuper AND r.rolname !~ '^pg_'
   AND pg_catalog.has_database_privilege(r.oid, db.oid, 'CONNECT')
   AND NOT pg_catalog.pg_has_role(r.oid, 'tenancy_admin', 'MEMBER')
   AND NOT pg_catalog.pg_has_role(r.oid, 'tenancy_auditor', 'MEMBER')
   AND NOT pg_catalog.pg_has_role(r.oid, 'tenancy_sync', 'MEMBER')
UNION ALL
SELECT 'critical', 'owner_bypasses_rls', p.qualified,
       format('owned by %I, a superuser or BYPASSRLS role: FORCE ROW LEVEL SECURITY has no effect on it', r.rolname),
       format('ALTER TABLE %s OWNER TO <a NOLOGIN, NOBYPASSRLS role>;', p.qualified)
  FROM protected p JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) p.relowner
 WHERE r.rolsuper OR r.rolbypassrls
UNION ALL
SELECT 'high', 'owner_can_login', quote_ident(r.rolname),
       format('%s %s protected table(s), e.g. %s: it can disable row-level security or drop the policies',
              CASE WHEN r.oid OPERATOR(pg_catalog.=) p.relowner THEN 'a login role that owns'
                   ELSE format('a login role that is a member of %I, owner of', pg_catalog.pg_get_userbyid(p.relowner)) END,
              count(*), min(p.qualified)),
       CASE WHEN r.oid OPERATOR(pg_catalog.=) p.relowner
            THEN format('ALTER ROLE %I NOLOGIN;  -- let a NOLOGIN role own the tables; migrate with SET ROLE', r.rolname)
            ELSE format('REVOKE %I FROM %I;  -- or ALTER ROLE %I NOLOGIN', pg_catalog.pg_get_userbyid(p.relowner), r.rolname, r.rolname) END
  FROM protected p JOIN pg_catalog.pg_roles r ON pg_catalog.pg_has_role(r.oid, p.relowner, 'MEMBER')
 WHERE r.rolcanlogin AND NOT r.rolsuper AND NOT r.rolbypassrls
 GROUP BY r.oid, r.rolname, p.relowner
UNION ALL
SELECT CASE WHEN v.relkind OPERATOR(pg_catalog.=) 'm' THEN 'critical' ELSE 'high' END,
       CASE WHEN v.relkind OPERATOR(pg_catalog.=) 'm' THEN 'materialized_view' ELSE 'view_not_security_invoker' END,
       format('%I.%I', vn.nspname, v.relname),
       CASE WHEN v.relkind OPERATOR(pg_catalog.=) 'm'
            THEN format('materialized view over protected table %s: it stores every workspace''s rows without row-level security', p.qualified)
            ELSE format('view over protected table %s without security_invoker: the policies are checked as the view''s owner', p.qualified) END,
       CASE WHEN v.relkind OPERATOR(pg_catalog.=) 'm'
            THEN format('DROP MATERIALIZED VIEW %I.%I;  -- or keep it out of the application''s reach', vn.nspname, v.relname)
            ELSE format('ALTER VIEW %I.%I SET (security_invoker = true);', vn.nspname, v.relname) END
  FROM protected p
  JOIN pg_catalog.pg_depend d ON d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
   AND d.refobjid OPERATOR(pg_catalog.=) p.oid AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass
  JOIN pg_catalog.pg_rewrite rw ON rw.oid OPERATOR(pg_catalog.=) d.objid
  JOIN pg_catalog.pg_class v ON v.oid OPERATOR(pg_catalog.=) rw.ev_class AND v.oid OPERATOR(pg_catalog.<>) p.oid
  JOIN pg_catalog.pg_namespace vn ON vn.oid OPERATOR(pg_catalog.=) v.relnamespace
 WHERE v.relkind IN ('v', 'm')
   AND NOT (v.relkind OPERATOR(pg_catalog.=) 'v' AND EXISTS (
            SELECT FROM pg_catalog.pg_options_to_table(v.reloptions) o
             WHERE o.option_name OPERATOR(pg_catalog.=) 'security_invoker'
               AND lower(o.option_value) IN ('true', 'on', 'yes', '1')))
 GROUP BY v.relkind, vn.nspname, v.relname, p.qualified
UNION ALL
SELECT 'medium', 'security_definer_function', format('%I.%I(%s)', fn.nspname, f.proname, pg_catalog.pg_get_function_identity_arguments(f.oid)),
       format('SECURITY DEFINER function owned by %I, owner of protected table %s: it runs with the owner''s rights',
              pg_catalog.pg_get_userbyid(f.proowner), min(p.qualified)),
       format('ALTER FUNCTION %I.%I(%s) SECURITY INVOKER;  -- or give it another owner', fn.nspname, f.proname,
              pg_catalog.pg_get_function_identity_arguments(f.oid))
  FROM pg_catalog.pg_proc f
  JOIN pg_catalog.pg_namespace fn ON fn.oid OPERATOR(pg_catalog.=) f.pronamespace
  JOIN protected p ON p.relowner OPERATOR(pg_catalog.=) f.proowner
 WHERE f.prosecdef AND fn.nspname NOT IN ('pg_catalog', 'information_schema')
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                    WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
                      AND d.objid OPERATOR(pg_catalog.=) f.oid AND d.deptype OPERATOR(pg_catalog.=) 'e')
 GROUP BY fn.nspname, f.proname, f.oid, f.proowner
UNION ALL
SELECT 'high', 'truncate_granted', format('%s to %s', p.qualified,
              CASE WHEN acl.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END),
       'TRUNCATE ignores row-level security: the grantee can empty every workspace''s rows',
       format('REVOKE TRUNCATE ON %s FROM %s;', p.qualified,
              CASE WHEN acl.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END)
  FROM protected p CROSS JOIN LATERAL pg_catalog.aclexplode(p.relacl) acl
 WHERE acl.privilege_type OPERATOR(pg_catalog.=) 'TRUNCATE' AND acl.grantee OPERATOR(pg_catalog.<>) p.relowner
UNION ALL
SELECT 'medium', 'unique_without_workspace', format('%s on %s', quote_ident(ic.relname), p.qualified),
       format('unique index without %I: inserting a key another workspace uses fails, revealing that it exists', p.workspace_column),
       format('make it unique on (%I, …), e.g. a primary key (%I, id)', p.workspace_column, p.workspace_column)
  FROM protected p
  JOIN pg_catalog.pg_index i ON i.indrelid OPERATOR(pg_catalog.=) p.oid AND i.indisunique
  JOIN pg_catalog.pg_class ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid
  JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) p.oid AND a.attname OPERATOR(pg_catalog.=) p.workspace_column
 WHERE NOT (a.attnum OPERATOR(pg_catalog.=) ANY (i.indkey::int2[]))
   AND NOT (p.relispartition AND EXISTS (SELECT FROM pg_catalog.pg_inherits ii
                                          WHERE ii.inhrelid OPERATOR(pg_catalog.=) i.indexrelid))
UNION ALL
SELECT 'high', 'subscription_refused', format('subscription %I into %s', st.subscription, p.qualified),
       format('row-level security applies to %I, the role that applies the subscription''s changes: PostgreSQL refuses them and replication stops',
              r.rolname),
       CASE WHEN pg_catalog.current_setting('server_version_num')::integer OPERATOR(pg_catalog.>=) 160000
            THEN format('ALTER SUBSCRIPTION %I SET (run_as_owner = true);  -- its owner a superuser that is not a login role of the applications; the rows then arrive as the publisher wrote them',
                        st.subscription)
            ELSE format('ALTER SUBSCRIPTION %I OWNER TO <a superuser>;  -- the rows then arrive as the publisher wrote them', st.subscription) END
  FROM tenancy._subscription_targets() st
  JOIN protected p ON p.oid OPERATOR(pg_catalog.=) st.rel
  JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) st.apply_role
 WHERE NOT (r.rolsuper OR r.rolbypassrls);
