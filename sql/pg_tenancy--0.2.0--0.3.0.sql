-- pg_tenancy 0.2.0 → 0.3.0. Every change to an SQL object since 0.2.0 is here; the upgrade test
-- (scripts/upgrade-test) proves that 0.2.0 + this script has the same catalog as a fresh 0.3.0
-- install. All of it is the hardening of issue 31.
\echo Use "ALTER EXTENSION pg_tenancy UPDATE TO '0.3.0'" to load this file. \quit

-- Audit: denials name the session user in `role` and the current user, when it differs, in
-- `acting_role`.
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


-- Tokens without org_id identify nobody unless their issuer allows it; issuers handed to the
-- companion (it may replace only their keys). Issuers trusted before 0.3.0 are not handed over:
-- an administrator marks those the companion keeps.
ALTER TABLE tenancy.issuers ADD COLUMN allow_no_organization boolean NOT NULL DEFAULT false;
ALTER TABLE tenancy.issuers ADD COLUMN sync_jwks_url text CHECK (sync_jwks_url ~ '^https?://');
COMMENT ON COLUMN tenancy.issuers.allow_no_organization IS 'whether a token without org_id identifies a user (no workspace, no membership row); when false every identity function refuses it';
COMMENT ON COLUMN tenancy.issuers.sync_jwks_url IS 'where pg-tenancy-sync fetches this issuer''s keys; NULL: the companion may not change them (tenancy.sync_set_jwks refuses)';

-- Every change of an issuer's keys (an id added or removed, new material under a kept id) is
-- recorded and alerts as critical.
CREATE FUNCTION tenancy."_note_issuer_keys_changed"(
	"issuer" TEXT, /* & str */
	"added" TEXT[], /* Vec < String > */
	"removed" TEXT[], /* Vec < String > */
	"replaced" TEXT[], /* Vec < String > */
	"via" TEXT /* & str */
) RETURNS void
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_note_issuer_keys_changed_wrapper';
CREATE FUNCTION tenancy._key_changes(old_jwks jsonb, new_jwks jsonb,
                                     OUT added text[], OUT removed text[], OUT replaced text[])
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH o AS (SELECT k OPERATOR(pg_catalog.->>) 'kid' AS kid, k FROM pg_catalog.jsonb_array_elements(coalesce(old_jwks OPERATOR(pg_catalog.->) 'keys', '[]')) k),
         n AS (SELECT k OPERATOR(pg_catalog.->>) 'kid' AS kid, k FROM pg_catalog.jsonb_array_elements(coalesce(new_jwks OPERATOR(pg_catalog.->) 'keys', '[]')) k)
    SELECT ARRAY(SELECT n.kid FROM n WHERE NOT EXISTS (SELECT FROM o WHERE o.kid OPERATOR(pg_catalog.=) n.kid) ORDER BY 1),
           ARRAY(SELECT o.kid FROM o WHERE NOT EXISTS (SELECT FROM n WHERE n.kid OPERATOR(pg_catalog.=) o.kid) ORDER BY 1),
           ARRAY(SELECT n.kid FROM n JOIN o ON o.kid OPERATOR(pg_catalog.=) n.kid WHERE n.k OPERATOR(pg_catalog.<>) o.k ORDER BY 1)
$$;

CREATE FUNCTION tenancy._record_key_changes(issuer text, old_jwks jsonb, new_jwks jsonb, via text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
BEGIN
    SELECT * INTO c FROM tenancy._key_changes(old_jwks, new_jwks);
    IF c.added OPERATOR(pg_catalog.<>) '{}' OR c.removed OPERATOR(pg_catalog.<>) '{}' OR c.replaced OPERATOR(pg_catalog.<>) '{}' THEN
        PERFORM tenancy._note_issuer_keys_changed(issuer, c.added, c.removed, c.replaced, via);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION tenancy.set_jwks(issuer text, jwks jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    allowed text[];
    old_jwks jsonb;
BEGIN
    PERFORM tenancy._require_admin('replace an issuer''s keys');
    SELECT i.algorithms, i.jwks INTO allowed, old_jwks FROM tenancy.issuers i WHERE i.issuer = set_jwks.issuer FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'issuer "%" is not trusted', issuer
            USING ERRCODE = '22023', HINT = 'Add it with tenancy.add_issuer().';
    END IF;
    UPDATE tenancy.issuers i
       SET jwks = set_jwks.jwks, key_ids = tenancy._vet_jwks(set_jwks.jwks, allowed), updated_at = now()
     WHERE i.issuer = set_jwks.issuer;
    PERFORM tenancy._record_key_changes(issuer, old_jwks, set_jwks.jwks, 'tenancy.set_jwks');
END
$$;

REVOKE ALL ON FUNCTION tenancy._note_issuer_keys_changed(text, text[], text[], text[], text),
    tenancy._record_key_changes(text, jsonb, jsonb, text) FROM PUBLIC;

-- The companion: sync_set_jwks only for issuers handed to it; alert cursors belong to alert
-- delivery's own role, keep their names and move only forward, never past the newest row.
DO $alerts_role$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'tenancy_alerts') THEN
        CREATE ROLE tenancy_alerts NOLOGIN;
        COMMENT ON ROLE tenancy_alerts IS 'pg_tenancy: the rights of pg-tenancy-sync''s alert delivery (reads the audit log, moves its alert cursors)';
    END IF;
END
$alerts_role$;
GRANT SELECT (sync_jwks_url) ON tenancy.issuers TO tenancy_sync;
GRANT SELECT (id, ring_started_at, seq, at, reason, critical, pid, database, role, client_addr,
              application_name, iss, sub, org_id, sid, kid, exp, alert, origin, acting_role)
   ON tenancy.audit_log TO tenancy_alerts;
CREATE OR REPLACE FUNCTION tenancy.sync_set_jwks(issuer text, jwks jsonb)
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

-- The cursors: rows and columns, never the table (table-level UPDATE allowed LOCK TABLE, which
-- stalled the other login's writes); each login sees and writes only its own rows.
REVOKE UPDATE ON tenancy.sync_state FROM tenancy_sync;
GRANT UPDATE (value, updated_at) ON tenancy.sync_state TO tenancy_sync;
GRANT SELECT, INSERT, UPDATE (value, updated_at) ON tenancy.sync_state TO tenancy_alerts;
ALTER TABLE tenancy.sync_state ENABLE ROW LEVEL SECURITY;
CREATE POLICY companion ON tenancy.sync_state TO tenancy_sync
    USING (NOT pg_catalog.starts_with(name, 'alerts:')) WITH CHECK (NOT pg_catalog.starts_with(name, 'alerts:'));
CREATE POLICY alert_delivery ON tenancy.sync_state TO tenancy_alerts
    USING (pg_catalog.starts_with(name, 'alerts:')) WITH CHECK (pg_catalog.starts_with(name, 'alerts:'));
CREATE POLICY readers ON tenancy.sync_state FOR SELECT TO tenancy_admin, tenancy_auditor USING (true);

-- tenancy.coverage: alert delivery's login is expected in the audit database.
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
            THEN format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC; GRANT CONNECT ON DATABASE %I TO tenancy_admin, tenancy_auditor, tenancy_sync, tenancy_alerts;', db.datname, db.datname)
            ELSE format('REVOKE CONNECT ON DATABASE %I FROM %I;', db.datname, r.rolname) END
  FROM pg_catalog.pg_roles r
  JOIN pg_catalog.pg_database db ON db.datname OPERATOR(pg_catalog.=) pg_catalog.current_setting('tenancy.audit_database', true)
 WHERE r.rolcanlogin AND NOT r.rolsuper AND r.rolname !~ '^pg_'
   AND pg_catalog.has_database_privilege(r.oid, db.oid, 'CONNECT')
   AND NOT pg_catalog.pg_has_role(r.oid, 'tenancy_admin', 'MEMBER')
   AND NOT pg_catalog.pg_has_role(r.oid, 'tenancy_auditor', 'MEMBER')
   AND NOT pg_catalog.pg_has_role(r.oid, 'tenancy_sync', 'MEMBER')
   AND NOT pg_catalog.pg_has_role(r.oid, 'tenancy_alerts', 'MEMBER')
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
COMMENT ON VIEW tenancy.coverage IS 'findings that weaken tenant isolation, each with a severity and a fix; empty means a clean bill of health';

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

-- Event triggers never wait on a lock an ordinary role can take: PUBLIC loses table-level UPDATE
-- and DELETE on the registry (either allowed LOCK TABLE … ACCESS EXCLUSIVE), keeping
-- column-level UPDATE for protect(); unprotect() forgets its row through a function; a stale row
-- is never adopted by another table; a remembered default is restored as the table's owner.
REVOKE UPDATE, DELETE ON tenancy.protections FROM PUBLIC;
GRANT UPDATE (workspace_column, user_column, write_permission, enabled_rls, forced_rls, set_default,
              previous_default, protected_at, protected_by) ON tenancy.protections TO PUBLIC;
GRANT DELETE ON tenancy.protections TO tenancy_admin;
CREATE FUNCTION tenancy."_is_one_expression"(
	"text" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_is_one_expression_wrapper';
CREATE FUNCTION tenancy._forget_unprotected(schema_name text, table_name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '1s' AS $$
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

-- Runs an ALTER TABLE … ALTER COLUMN … SET or DROP DEFAULT of a workspace column. Citus refuses
-- any ALTER TABLE of a distributed table's distribution column (XX000 "cannot execute ALTER TABLE
-- command involving partition column"), a DEFAULT included: there the statement runs on the
-- coordinator's table alone (DDL propagation off for it), where Citus evaluates a DEFAULT before
-- it routes a row. Without Citus, the error as it was.
CREATE FUNCTION tenancy._alter_column_default(statement text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    refusal text;
    refusal_state text;
    propagation text;
BEGIN
    EXECUTE statement;
EXCEPTION WHEN feature_not_supported OR internal_error THEN
    GET STACKED DIAGNOSTICS refusal = MESSAGE_TEXT, refusal_state = RETURNED_SQLSTATE;
    propagation := pg_catalog.current_setting('citus.enable_ddl_propagation', true);
    IF propagation IS NULL THEN
        RAISE EXCEPTION '%', refusal USING ERRCODE = refusal_state;
    END IF;
    PERFORM pg_catalog.set_config('citus.enable_ddl_propagation', 'off', true);
    EXECUTE statement;
    PERFORM pg_catalog.set_config('citus.enable_ddl_propagation', propagation, true);
END
$$;

CREATE OR REPLACE FUNCTION tenancy._restore_default(rel oid, col text, previous text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    typ oid := tenancy._column_type(rel, col);
    current_default text;
    owner_name text := (SELECT pg_catalog.pg_get_userbyid(k.relowner) FROM pg_class k WHERE k.oid OPERATOR(pg_catalog.=) rel);
    saved_role text := pg_catalog.current_setting('role');
BEGIN
    IF typ IS NULL THEN
        RETURN;
    END IF;
    SELECT pg_get_expr(d.adbin, d.adrelid) INTO current_default FROM pg_attrdef d
      JOIN pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) d.adrelid AND a.attnum OPERATOR(pg_catalog.=) d.adnum
     WHERE d.adrelid OPERATOR(pg_catalog.=) rel AND a.attname OPERATOR(pg_catalog.=) col;
    IF current_default IS DISTINCT FROM tenancy._identity_expr('workspace_id', typ) THEN
        RETURN;
    END IF;
    IF previous IS NULL THEN
        PERFORM tenancy._alter_column_default(format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', rel::regclass, col));
    ELSE
        IF NOT tenancy._is_one_expression(previous) THEN
            RAISE WARNING 'the remembered default of column % of % is not one expression: the column is left without a default', col, rel::regclass
                USING DETAIL = 'tenancy.protections.previous_default is written by the table''s owner; it is never run as statements.';
            PERFORM tenancy._alter_column_default(format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', rel::regclass, col));
            RETURN;
        END IF;
        PERFORM pg_catalog.set_config('role', owner_name, true);
        PERFORM tenancy._alter_column_default(format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT (%s)', rel::regclass, col, previous));
        PERFORM pg_catalog.set_config('role', saved_role, true);
    END IF;
END
$$;

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
BEGIN
    -- With Citus's DDL propagation off the policies would reach the coordinator's table and not
    -- the shards, which Citus reads for the queries it routes (adversarial pass of session 14).
    IF pg_catalog.current_setting('citus.enable_ddl_propagation', true) = 'off' THEN
        RAISE EXCEPTION 'tenancy.protect needs citus.enable_ddl_propagation on' USING ERRCODE = '55000',
            DETAIL = 'With DDL propagation off, the policies would be made on the coordinator''s table and not on the shards.',
            HINT = 'RESET citus.enable_ddl_propagation, then protect the table again.';
    END IF;
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
    -- A row for this name whose table carries none of pg_tenancy's policies describes some other
    -- table (renamed or dropped while the event triggers could not follow, or one that lost its
    -- policies): it is forgotten, never adopted. Adopting it once ran another role's recorded
    -- default on this table.
    IF registered AND NOT EXISTS (SELECT FROM tenancy._live_policies(rel)) THEN
        PERFORM tenancy._forget_unprotected(c.nspname, c.relname);
        reg := NULL;
        registered := false;
    END IF;

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
        PERFORM tenancy._alter_column_default(format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s', rel::regclass, ws_col, ours));
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '1s' AS $$
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '1s' AS $$
BEGIN
    IF to_regclass('tenancy.protections') IS NULL THEN
        RETURN;
    END IF;
    -- A registry row some role keeps locked is left (and reported stale by tenancy.coverage):
    -- the DROP itself must not fail because of it. A stale row is never adopted by a new table.
    BEGIN
        DELETE FROM tenancy.protections r USING pg_event_trigger_dropped_objects() d
         WHERE d.object_type OPERATOR(pg_catalog.=) 'table' AND NOT d.is_temporary
           AND r.schema_name OPERATOR(pg_catalog.=) d.schema_name AND r.table_name OPERATOR(pg_catalog.=) d.object_name;
    EXCEPTION WHEN lock_not_available THEN
        RAISE WARNING 'pg_tenancy could not forget the registry rows of the dropped tables: a lock was not available'
            USING HINT = 'tenancy.coverage lists them as stale_registry_row, with the statement that removes them.';
    END;
END
$$;


-- API keys end with what made them: the session of the token that made or last rotated a key
-- disables it when revoked; keys made by identities live at most tenancy.api_key_max_lifetime days
-- and no longer than the key that made them; rotating ties the key to the rotator (without grace
-- for a key someone else made). The API-key functions record their refusals themselves
-- (tenancy._deny_admin) instead of the audit recognising their words.
ALTER TABLE tenancy._api_key_store ADD COLUMN creator_session_id text;
CREATE FUNCTION tenancy."_deny_admin"(
	"message" TEXT, /* & str */
	"hint" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_deny_admin_wrapper';
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
    SELECT LEAST(
               CASE WHEN d OPERATOR(pg_catalog.>) 0 THEN pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(days => d) END,
               CASE WHEN pg_catalog.current_setting('tenancy.api_key', true) OPERATOR(pg_catalog.<>) ''
                    THEN (SELECT i.expires_at FROM tenancy.identity() i) END)
      FROM (SELECT CAST(coalesce(nullif(pg_catalog.current_setting('tenancy.api_key_max_lifetime', true), ''), '90')
                        AS integer) AS d) s
$$;

CREATE OR REPLACE FUNCTION tenancy._key_manager(workspace text, action text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.pg_has_role(session_user, 'tenancy_admin', 'MEMBER') THEN
        RETURN 'admin';
    END IF;
    IF pg_catalog.current_setting('tenancy.token', true) OPERATOR(pg_catalog.<>) ''
       OR pg_catalog.current_setting('tenancy.api_key', true) OPERATOR(pg_catalog.<>) '' THEN
        -- A rotated key's old secret, in its grace period, only authenticates: it manages no key
        -- (it would take over the key its holder was being cut off from).
        IF tenancy.workspace_id() OPERATOR(pg_catalog.=) workspace AND tenancy.has_permission('api_keys:manage')
           AND NOT coalesce(CAST(tenancy.claims() OPERATOR(pg_catalog.->>) 'previous_secret' AS boolean), false) THEN
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
    actor text;
    stamp timestamptz;
BEGIN
    SELECT k.workspace_id, k.role, k.permissions, k.user_id, k.created_by_identity INTO key
      FROM tenancy._api_key_store k WHERE k.id = id FOR NO KEY UPDATE;
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
    -- The actor and the time as values first: Citus refuses non-immutable calls inside CASE and
    -- coalesce of a statement on a reference table (0A000; docs/scale-out.md).
    actor := tenancy._key_actor(manager);
    stamp := now();
    UPDATE tenancy._api_key_store k
       SET revoked_at = coalesce(k.revoked_at, stamp),
           revoked_by = CASE WHEN k.revoked_at IS NULL THEN actor ELSE k.revoked_by END
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
    -- Locked: a rotation that waited for another must decide on the row as that one left it.
    -- (FOR UPDATE is the lock its UPDATE of the unique digest takes anyway; revoke_api_key takes
    -- FOR NO KEY UPDATE, which a key's users, holding FOR KEY SHARE through api_key_usage's
    -- foreign key, never block.)
    SELECT k.workspace_id, k.role, k.permissions, k.user_id, k.expires_at, k.creator_user_id, k.creator_session_id INTO key
      FROM tenancy._api_key_store k WHERE k.id = id AND k.revoked_at IS NULL FOR UPDATE;
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
        -- A grace period keeps the old secret working; for a key another member made, that old
        -- secret (which its maker holds) would outlive the maker's tie, which moves to the rotator.
        IF grace > '0 seconds' AND key.creator_user_id IS DISTINCT FROM creator.user_id THEN
            RAISE EXCEPTION 'a key made by someone else is rotated without grace' USING ERRCODE = '22023',
                HINT = 'Rotate with grace => ''0 seconds'': the old secret is held by whoever made the key; members of tenancy_admin may give grace.';
        END IF;
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

REVOKE ALL ON FUNCTION tenancy._deny_admin(text, text), tenancy._key_creator(), tenancy._key_expiry_bound() FROM PUBLIC;

-- Issue 36: the recall of per-workspace HNSW indexes, measured (sql/calibration.sql); a new index
-- is calibrated when tenancy.create_vector_index builds it.
CREATE OR REPLACE FUNCTION tenancy.create_vector_index(tbl regclass, "column" name, workspace_id text,
                                            metric text DEFAULT 'cosine', m integer DEFAULT 16,
                                            ef_construction integer DEFAULT 160)
RETURNS regclass LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp SET max_parallel_maintenance_workers = 0 AS $$
DECLARE
    existing regclass;
    statement text;
BEGIN
    IF tbl IS NULL OR workspace_id IS NULL THEN
        RAISE EXCEPTION 'table and workspace_id must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM tenancy._require_owner(tbl);
    existing := tenancy._vector_index_of(tbl, "column", metric, workspace_id);
    IF existing IS NOT NULL THEN
        RETURN existing;
    END IF;
    FOREACH statement IN ARRAY tenancy._vector_index_statements(tbl, "column", workspace_id, metric, m,
                                                                ef_construction, false) LOOP
        EXECUTE statement;
    END LOOP;
    existing := tenancy._vector_index_of(tbl, "column", metric, workspace_id);
    -- Measured at once, so that tenancy.nearest meets tenancy.nearest_recall on it from its first
    -- search (sql/calibration.sql). A caller who cannot read the workspace's rows gets the index
    -- and a warning; the index is then searched at ef_search 40 until calibrated.
    BEGIN
        PERFORM tenancy.calibrate_vector_index(existing);
    EXCEPTION WHEN invalid_authorization_specification OR object_not_in_prerequisite_state
                   OR insufficient_privilege THEN
        RAISE WARNING 'index % was built but not calibrated: %', existing, SQLERRM
            USING HINT = 'Run SELECT * FROM tenancy.calibrate_vector_index(''' || existing::text
                         || ''') as the table''s owner with that workspace''s identity (or an owner that bypasses row-level security).';
    END;
    RETURN existing;
END
$$;

-- Issue 32: create_vector_index runs its two statements one at a time (Citus).
-- The CREATE INDEX and COMMENT statements tenancy.create_vector_index runs, one per element:
-- executed one at a time (Citus propagates a DDL statement's whole query string to the shards and
-- refuses a string of two, "cannot insert multiple commands into a prepared statement").
CREATE FUNCTION tenancy._vector_index_statements(tbl regclass, "column" name, workspace_id text,
                                                 metric text, m integer, ef_construction integer, concurrent boolean)
RETURNS text[] LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
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
    RETURN ARRAY[
        format('CREATE INDEX %s%I ON %s USING hnsw (%I %s) WITH (m = %s, ef_construction = %s) WHERE %I OPERATOR(pg_catalog.=) %L::%s;',
               CASE WHEN concurrent THEN 'CONCURRENTLY ' ELSE '' END, name, tgt.rel_name, "column", tgt.opclass,
               m, ef_construction, tgt.workspace_column, workspace_id, tgt.workspace_type),
        format('COMMENT ON INDEX %I.%I IS %L;',
               (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                 WHERE c.oid OPERATOR(pg_catalog.=) tbl), name,
               tenancy._vector_index_mark("column", metric, workspace_id))];
END
$$;

-- The CREATE INDEX and COMMENT statements tenancy.create_vector_index runs, for running by hand
-- (concurrent => true gives CREATE INDEX CONCURRENTLY, which must run outside a transaction
-- block and after SET max_parallel_maintenance_workers = 0). Checks its arguments like nearest.
CREATE OR REPLACE FUNCTION tenancy.vector_index_ddl(tbl regclass, "column" name, workspace_id text,
                                         metric text DEFAULT 'cosine', m integer DEFAULT 16,
                                         ef_construction integer DEFAULT 160, concurrent boolean DEFAULT true)
RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.array_to_string(
        tenancy._vector_index_statements(tbl, "column", workspace_id, metric, m, ef_construction, concurrent), ' ')
$$;

CREATE FUNCTION tenancy."_calibrated_strategy"(
	"ladder" TEXT, /* Option < & str > */
	"exact_ms" double precision, /* Option < f64 > */
	"calibrated_k" INT, /* Option < i32 > */
	"target" double precision, /* Option < f64 > */
	"k" INT, /* Option < i32 > */
	"queries" INT DEFAULT NULL /* Option < i32 > */
) RETURNS TEXT /* String */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_calibrated_strategy_wrapper';
CREATE FUNCTION tenancy."_calibration_queries"(
	"sample" real[], /* Array < f32 > */
	"dims" INT, /* i32 */
	"count" INT /* i32 */
) RETURNS SETOF real[] /* Vec < f32 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_calibration_queries_wrapper';
CREATE FUNCTION tenancy."_search_caches_changed"(
	"tbl" oid /* pg_sys :: Oid */
) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_search_caches_changed_wrapper';

-- pg_tenancy on Citus (issue 32): one call makes the identity tables reference tables, so that
-- every node (coordinator and workers) holds the issuers, workspaces, members, revoked sessions
-- and API keys and verifies identities locally. Runs after api_keys.sql.
--
-- tenancy.api_key_usage stays a plain table of each node: a key's use is recorded by the lookup
-- role on the node that verified it, and a write to a reference table goes to every placement
-- through connections Citus opens as the current user, which the NOLOGIN lookup role cannot
-- (every API key failed with 08006 while it was one). Its foreign key to the keys is dropped for
-- good (a key graph mixing reference and local tables is refused); tenancy.api_keys reads it
-- with a LEFT JOIN from the keys, so a deleted key's stale row is never shown.

-- The identity tables' foreign keys: (table, constraint, definition). Citus refuses to make a
-- table of a foreign-key graph a reference table while the other tables of the graph are local
-- ones it cannot convert (on the workers those are the extension's own copies: 42P07 "relation
-- … already exists"), so tenancy.distribute takes the keys off, distributes, and puts them back
-- (a key between reference tables is allowed and reaches every placement).
CREATE FUNCTION tenancy._identity_foreign_keys(OUT tbl text, OUT name text, OUT definition text)
RETURNS SETOF record LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    VALUES ('tenancy.members', 'members_workspace_id_fkey',
            'FOREIGN KEY (workspace_id) REFERENCES tenancy.workspaces(workspace_id) ON DELETE CASCADE'),
           ('tenancy._api_key_store', '_api_key_store_workspace_id_fkey',
            'FOREIGN KEY (workspace_id) REFERENCES tenancy.workspaces(workspace_id) ON DELETE CASCADE'),
           ('tenancy.api_key_usage', 'api_key_usage_key_id_fkey',
            'FOREIGN KEY (key_id) REFERENCES tenancy._api_key_store(id) ON DELETE CASCADE')
$$;

-- Makes the identity tables reference tables on a Citus cluster, in an order Citus accepts, after
-- checking what the nodes need: Citus installed in this database, `citus` first in
-- shared_preload_libraries and pg_tenancy loaded, the coordinator in the metadata (so that the
-- reference tables have a placement here and identity lookups read it locally: without one,
-- every lookup on the coordinator opened a worker connection as the NOLOGIN lookup role and
-- failed with 08006). Idempotent: tables already distributed are left as they are. Returns one
-- row per step taken. Superuser only (the tables belong to the extension's owner).
CREATE FUNCTION tenancy.distribute() RETURNS TABLE (step text, detail text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fk record;
    t text;
    failed text;
    tables constant text[] := ARRAY['tenancy.issuers', 'tenancy.revoked_sessions', 'tenancy.workspaces',
                                    'tenancy.members', 'tenancy._api_key_store'];
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user) THEN
        RAISE EXCEPTION 'tenancy.distribute must be run by a superuser' USING ERRCODE = '42501';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'citus') THEN
        RAISE EXCEPTION 'citus is not installed in this database' USING ERRCODE = '55000',
            HINT = 'CREATE EXTENSION citus on every node first (docs/scale-out.md).';
    END IF;
    IF pg_catalog.btrim(pg_catalog.split_part(pg_catalog.current_setting('shared_preload_libraries'), ',', 1))
           OPERATOR(pg_catalog.<>) 'citus'
       OR NOT ('pg_tenancy' OPERATOR(pg_catalog.=) ANY (
               SELECT pg_catalog.btrim(x) FROM pg_catalog.unnest(pg_catalog.string_to_array(
                   pg_catalog.current_setting('shared_preload_libraries'), ',')) x)) THEN
        RAISE EXCEPTION 'shared_preload_libraries must list citus first and pg_tenancy after it, not %',
                        pg_catalog.current_setting('shared_preload_libraries') USING ERRCODE = '55000',
            HINT = 'shared_preload_libraries = ''citus,pg_tenancy'' on every node, then restart.';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_node n WHERE n.groupid OPERATOR(pg_catalog.=) 0) THEN
        RAISE EXCEPTION 'the coordinator is not in the metadata' USING ERRCODE = '55000',
            HINT = 'SELECT citus_set_coordinator_host(''<host>'', <port>); the identity tables need a placement on the coordinator.';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.unnest(tables) u(t)
                    WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p
                                       WHERE p.logicalrelid OPERATOR(pg_catalog.=) CAST(u.t AS regclass))) THEN
        RETURN;
    END IF;
    -- The keys off, on the workers' copies of the extension's tables first (DDL there is refused
    -- unless propagation is off for the command), then here (propagated where a table is
    -- already distributed).
    FOR fk IN SELECT * FROM tenancy._identity_foreign_keys() LOOP
        SELECT pg_catalog.string_agg(format('%s:%s: %s', r.nodename, r.nodeport, r.result), '; ') INTO failed
          FROM pg_catalog.run_command_on_workers(
                   format('SET citus.enable_ddl_propagation = off; ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I',
                          fk.tbl, fk.name)) r
         WHERE NOT r.success;
        IF failed IS NOT NULL THEN
            RAISE EXCEPTION 'could not take the foreign key % off on every worker: %', fk.name, failed
                USING ERRCODE = '55000';
        END IF;
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', fk.tbl, fk.name);
    END LOOP;
    FOREACH t IN ARRAY tables LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p
                        WHERE p.logicalrelid OPERATOR(pg_catalog.=) CAST(t AS regclass)) THEN
            PERFORM pg_catalog.create_reference_table(CAST(t AS regclass));
            step := 'reference table';
            detail := t;
            RETURN NEXT;
        END IF;
    END LOOP;
    step := 'local table';
    detail := 'tenancy.api_key_usage (its foreign key dropped: each node records the uses of the keys it verifies)';
    RETURN NEXT;
    -- The keys back, between reference tables: Citus adds them to every placement.
    FOR fk IN SELECT * FROM tenancy._identity_foreign_keys() LOOP
        CONTINUE WHEN fk.tbl OPERATOR(pg_catalog.=) 'tenancy.api_key_usage';
        IF NOT EXISTS (SELECT FROM pg_constraint c
                        WHERE c.conrelid OPERATOR(pg_catalog.=) CAST(fk.tbl AS regclass)
                          AND c.conname OPERATOR(pg_catalog.=) fk.name) THEN
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', fk.tbl, fk.name, fk.definition);
            step := 'foreign key';
            detail := format('%s.%s', fk.tbl, fk.name);
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION tenancy.distribute() FROM PUBLIC;

-- pg_tenancy: the recall of each workspace's own HNSW index, measured (issue 36). Runs after
-- search.sql. tenancy.nearest meets tenancy.nearest_recall (default 0.99) with what is measured
-- here: the smallest ef_search whose measured recall reaches the target, or the exact scan when
-- that is cheaper or when no ef_search reaches it (src/search/calibration.rs, docs/search.md).

-- Whether a ladder is what tenancy.calibrate_vector_index writes: an array of at most 16 steps,
-- each with a number ef_search in 1..1000, a recall in 0..1 and a time in 0..1e9 ms. The table's
-- owner can write its rows by hand: this bounds them where they enter.
CREATE FUNCTION tenancy._valid_ladder(ladder jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.jsonb_typeof($1) OPERATOR(pg_catalog.=) 'array'
       AND pg_catalog.jsonb_array_length($1) OPERATOR(pg_catalog.<=) 16
       AND NOT EXISTS (
           SELECT FROM pg_catalog.jsonb_array_elements($1) s
            WHERE pg_catalog.jsonb_typeof(s) OPERATOR(pg_catalog.<>) 'object'
               OR pg_catalog.jsonb_typeof(s OPERATOR(pg_catalog.->) 'ef_search') IS DISTINCT FROM 'number'
               OR pg_catalog.jsonb_typeof(s OPERATOR(pg_catalog.->) 'recall') IS DISTINCT FROM 'number'
               OR pg_catalog.jsonb_typeof(s OPERATOR(pg_catalog.->) 'ms') IS DISTINCT FROM 'number'
               OR CAST(s OPERATOR(pg_catalog.->>) 'ef_search' AS numeric) NOT BETWEEN 1 AND 1000
               OR CAST(s OPERATOR(pg_catalog.->>) 'recall' AS numeric) NOT BETWEEN 0 AND 1
               OR CAST(s OPERATOR(pg_catalog.->>) 'ms' AS numeric) NOT BETWEEN 0 AND 1e9)
$$;

-- One row per calibrated index and workspace: what the calibration measured (a workspace's own
-- index has one row; the shared index of a table, one per workspace that tenancy.nearest
-- searches through it, `shared`). Written by
-- tenancy.calibrate_vector_index as the table's owner (row-level security: an owner reads and
-- writes the rows of its own tables' indexes), read by tenancy.nearest as tenancy_lookup, shown
-- with the strategy it leads to by the view tenancy.vector_indexes. Not dumped: index OIDs change
-- on restore; calibrate again after one (docs/search.md).
CREATE TABLE tenancy._vector_calibrations (
    index_oid            oid NOT NULL,
    table_oid            oid NOT NULL,
    column_name          name NOT NULL,
    metric               text NOT NULL,
    workspace_id         text NOT NULL,
    rows_at_calibration  bigint NOT NULL CHECK (rows_at_calibration >= 0),
    k                    integer NOT NULL CHECK (k BETWEEN 1 AND 1000),
    queries              integer NOT NULL CHECK (queries BETWEEN 1 AND 10000),
    calibrated_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    calibration_ms       double precision NOT NULL CHECK (calibration_ms BETWEEN 0 AND 1e12),
    exact_ms             double precision NOT NULL CHECK (exact_ms BETWEEN 0 AND 1e9),
    -- [{"ef_search": 40, "recall": 0.725, "ms": 1.96}, ...], ef_search ascending.
    ladder               jsonb NOT NULL CHECK (tenancy._valid_ladder(ladder)),
    -- false when the time budget ended the ladder before a step reached recall 1.
    complete             boolean NOT NULL,
    -- true: a shared index (every workspace's rows), searched with the workspace as a filter.
    shared               boolean NOT NULL DEFAULT false,
    PRIMARY KEY (index_oid, workspace_id)
);
COMMENT ON TABLE tenancy._vector_calibrations IS
    'measured recall of per-workspace HNSW indexes (tenancy.calibrate_vector_index); see tenancy.vector_indexes';

-- True when the current role owns table rel (or is a member of its owner), or rel is gone (a
-- stale row its old owner's successors may overwrite).
CREATE FUNCTION tenancy._owns_or_gone(rel oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT pg_has_role(current_user, c.relowner, 'USAGE')
                       FROM pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1), true)
$$;

ALTER TABLE tenancy._vector_calibrations ENABLE ROW LEVEL SECURITY;
CREATE POLICY owners ON tenancy._vector_calibrations
    USING (tenancy._owns_or_gone(table_oid))
    WITH CHECK (tenancy._owns_or_gone(table_oid) AND EXISTS (
        SELECT FROM pg_catalog.pg_index i
         WHERE i.indexrelid OPERATOR(pg_catalog.=) index_oid AND i.indrelid OPERATOR(pg_catalog.=) table_oid));
CREATE POLICY readers ON tenancy._vector_calibrations FOR SELECT TO tenancy_admin, tenancy_auditor, tenancy_lookup
    USING (true);
REVOKE ALL ON tenancy._vector_calibrations FROM PUBLIC;
-- No table-level UPDATE or DELETE for PUBLIC: either would let any role LOCK the table IN ACCESS
-- EXCLUSIVE MODE and stall every tenancy.nearest that reads it. INSERT allows ROW EXCLUSIVE only;
-- the upsert updates through column privileges.
GRANT SELECT, INSERT ON tenancy._vector_calibrations TO PUBLIC;
GRANT UPDATE (table_oid, column_name, metric, workspace_id, rows_at_calibration, k, queries, calibrated_at,
              calibration_ms, exact_ms, ladder, complete, shared) ON tenancy._vector_calibrations TO PUBLIC;
GRANT SELECT ON tenancy._vector_calibrations TO tenancy_lookup;

-- Forgets the calibration row of index idx when it no longer describes that index (the row of
-- an index dropped while event triggers were off, whose OID a new index now has). Runs as the
-- extension's owner, since such a row belongs to a table that may be gone or another's; removes
-- nothing else. Called by tenancy.calibrate_vector_index before it records.
CREATE FUNCTION tenancy._forget_orphan_calibration(idx oid) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM tenancy._vector_calibrations c
     WHERE c.index_oid OPERATOR(pg_catalog.=) $1
       AND NOT EXISTS (SELECT FROM pg_index i
                        WHERE i.indexrelid OPERATOR(pg_catalog.=) c.index_oid
                          AND i.indrelid OPERATOR(pg_catalog.=) c.table_oid)
$$;
REVOKE ALL ON FUNCTION tenancy._forget_orphan_calibration(oid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._forget_orphan_calibration(oid) TO PUBLIC;

-- Event trigger (sql_drop): forgets the calibrations of dropped indexes and tables, so that no
-- row outlives its index (an OID a later index reuses would otherwise find figures that are not
-- its own). Runs as the extension's owner; a row some role keeps locked is left, not waited on.
CREATE FUNCTION tenancy._forget_dropped_calibrations() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '1s' AS $$
BEGIN
    IF to_regclass('tenancy._vector_calibrations') IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        DELETE FROM tenancy._vector_calibrations c USING pg_event_trigger_dropped_objects() d
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
           AND (d.objid OPERATOR(pg_catalog.=) c.index_oid OR d.objid OPERATOR(pg_catalog.=) c.table_oid);
    EXCEPTION WHEN lock_not_available THEN
        RAISE WARNING 'pg_tenancy could not forget the calibrations of the dropped indexes: a lock was not available'
            USING HINT = 'tenancy.calibrate_vector_index forgets a stale row of the index it measures.';
    END;
END
$$;
CREATE EVENT TRIGGER tenancy_forget_dropped_calibrations ON sql_drop
    EXECUTE FUNCTION tenancy._forget_dropped_calibrations();

-- Measures the recall of a per-workspace HNSW index made by tenancy.create_vector_index, or of a
-- table's shared HNSW index for one workspace (`workspace`: tenancy.nearest searches a workspace
-- of more than tenancy._exact_max_rows() rows without its own index through the shared index,
-- filtered by workspace), and records it (tenancy.vector_indexes shows it). Queries are drawn from the workspace's own rows
-- (`queries` points made of its mean and two random rows, below); each is searched exactly (every row of the
-- workspace, sorted) and through the index at each ef_search of a ladder (40 to 1000); recall@k
-- is the share of the exact k found, averaged over the queries, and each step's time is the mean
-- per query, planning included as for the exact scan.
-- The ladder stops at recall 1, when a step costs three times the exact scan (a slower step can
-- never be chosen), or when time_budget is spent (then `complete` is false). Reads as the caller:
-- the caller must own the table and see the workspace's rows (a role that bypasses its
-- row-level security, or one whose identity is that workspace). Takes no lock beyond reading.
-- What calibration needs to know of an index: its table, its first column, its mark (its
-- comment: pg_tenancy:hnsw:<metric>:<column>:<workspace>), access method, whether it covers every
-- row (no predicate, no expression), its operator class (schema-qualified) and whether it is
-- valid. No row for an OID that is no index.
CREATE FUNCTION tenancy._vector_index_facts(idx oid, OUT table_oid oid, OUT first_column name, OUT index_mark text,
                                           OUT access_method name, OUT covers_all_rows boolean,
                                           OUT operator_class text, OUT is_valid boolean)
RETURNS SETOF record LANGUAGE sql STABLE ROWS 1 SET search_path = pg_catalog, pg_temp AS $$
    SELECT i.indrelid, a.attname, d.description, am.amname, i.indpred IS NULL AND i.indexprs IS NULL,
           format('%I.%I', ocn.nspname, oc.opcname), i.indisvalid
      FROM pg_index i
      JOIN pg_class ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid
      JOIN pg_am am ON am.oid OPERATOR(pg_catalog.=) ic.relam
      JOIN pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid
                         AND a.attnum OPERATOR(pg_catalog.=) i.indkey[0]
      JOIN pg_opclass oc ON oc.oid OPERATOR(pg_catalog.=) i.indclass[0]
      JOIN pg_namespace ocn ON ocn.oid OPERATOR(pg_catalog.=) oc.opcnamespace
      LEFT JOIN pg_description d ON d.objoid OPERATOR(pg_catalog.=) i.indexrelid
                                AND d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
                                AND d.objsubid OPERATOR(pg_catalog.=) 0
     WHERE i.indexrelid OPERATOR(pg_catalog.=) $1
$$;

CREATE FUNCTION tenancy.calibrate_vector_index(index regclass, queries integer DEFAULT 100,
                                               time_budget interval DEFAULT '60 seconds', k integer DEFAULT 10,
                                               workspace text DEFAULT NULL)
RETURNS TABLE (ef_search integer, recall double precision, ms double precision)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET jit = off AS $$
DECLARE
    started constant timestamptz := pg_catalog.clock_timestamp();
    steps constant integer[] := ARRAY[40, 64, 100, 160, 250, 400, 640, 1000];
    tbl oid;
    col name;
    mark text;
    am_name name;
    whole boolean;
    opc text;
    shared boolean := false;
    m text;
    metric text;
    ws text;
    tgt record;
    n bigint;
    vecs text[];
    exact tid[][];
    found tid[];
    hits bigint;
    wanted bigint;
    t0 timestamptz;
    spent double precision;
    exact_ms double precision := 0;
    ladder jsonb := '[]';
    complete boolean := false;
    ef integer;
    saved_ef text := pg_catalog.current_setting('hnsw.ef_search', true);
    saved_iterative text := pg_catalog.current_setting('hnsw.iterative_scan', true);
    saved_shared text := pg_catalog.current_setting('tenancy.shared_vector_indexes', true);
    exact_sql text;
    index_sql text;
BEGIN
    IF index IS NULL OR queries IS NULL OR time_budget IS NULL OR k IS NULL THEN
        RAISE EXCEPTION 'index, queries, time_budget and k must not be null' USING ERRCODE = '22004';
    END IF;
    IF queries NOT BETWEEN 1 AND 10000 OR k NOT BETWEEN 1 AND 1000 OR time_budget OPERATOR(pg_catalog.<=) interval '0' THEN
        RAISE EXCEPTION 'queries must be between 1 and 10000, k between 1 and 1000, time_budget positive'
            USING ERRCODE = '22023';
    END IF;
    -- The index's table, column, mark, access method, whether it covers every row and its
    -- operator class.
    SELECT f.table_oid, f.first_column, f.index_mark, f.access_method, f.covers_all_rows, f.operator_class
      INTO tbl, col, mark, am_name, whole, opc
      FROM tenancy._vector_index_facts(index) f;
    FOREACH m IN ARRAY ARRAY['cosine', 'l2', 'inner_product'] LOOP
        IF pg_catalog.starts_with(mark, tenancy._vector_index_mark(col, m, '')) THEN
            metric := m;
            ws := pg_catalog.substr(mark, pg_catalog.length(tenancy._vector_index_mark(col, m, '')) OPERATOR(pg_catalog.+) 1);
        END IF;
    END LOOP;
    IF metric IS NOT NULL AND workspace IS NOT NULL AND workspace OPERATOR(pg_catalog.<>) ws THEN
        RAISE EXCEPTION 'index % is workspace %''s own index, not %''s', index, ws, workspace USING ERRCODE = '22023';
    END IF;
    IF tbl IS NOT NULL AND metric IS NULL AND am_name OPERATOR(pg_catalog.=) 'hnsw' AND whole THEN
        -- A shared index: every row of the table in one graph; its metric is its operator class's.
        PERFORM tenancy._require_owner(tbl);
        FOREACH m IN ARRAY ARRAY['cosine', 'l2', 'inner_product'] LOOP
            tgt := tenancy._vector_target((SELECT c.reltype FROM pg_class c WHERE c.oid OPERATOR(pg_catalog.=) tbl), col, m);
            IF tgt.opclass OPERATOR(pg_catalog.=) opc THEN
                metric := m;
            END IF;
        END LOOP;
        IF metric IS NULL THEN
            RAISE EXCEPTION 'index % uses operator class %, which tenancy.nearest does not search', index, opc
                USING ERRCODE = '22023';
        END IF;
        IF workspace IS NULL THEN
            RAISE EXCEPTION 'index % is shared by every workspace: calibrate it for one', index USING ERRCODE = '22004',
                HINT = 'Pass workspace => ''…'' (a workspace tenancy.nearest searches through it), or use tenancy.calibrate_vector_indexes.';
        END IF;
        IF EXISTS (SELECT FROM pg_index i JOIN pg_description d ON d.objoid OPERATOR(pg_catalog.=) i.indexrelid
                                            AND d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
                                            AND d.objsubid OPERATOR(pg_catalog.=) 0
                    WHERE i.indrelid OPERATOR(pg_catalog.=) tbl AND i.indisvalid
                      AND d.description OPERATOR(pg_catalog.=) tenancy._vector_index_mark(col, metric, workspace)) THEN
            RAISE EXCEPTION 'workspace % has its own index on %', workspace, col USING ERRCODE = '22023',
                HINT = 'tenancy.nearest searches it there: calibrate that index.';
        END IF;
        shared := true;
        ws := workspace;
    END IF;
    IF tbl IS NULL OR metric IS NULL THEN
        RAISE EXCEPTION 'index % is neither made by tenancy.create_vector_index nor a table''s shared HNSW index', index
            USING ERRCODE = '22023',
            HINT = 'Calibrate the per-workspace indexes tenancy.create_vector_index(es) made (they carry its comment), or an HNSW index on a protected table''s vector column without a predicate.';
    END IF;
    PERFORM tenancy._require_owner(tbl);
    tgt := tenancy._vector_target((SELECT c.reltype FROM pg_class c WHERE c.oid OPERATOR(pg_catalog.=) tbl), col, metric);
    -- The queries (src/search/query_sampling.rs): up to 1,000 of the workspace's rows drawn at
    -- random, grouped into topics when k-means finds topics a single cloud of the same covariance
    -- does not have, and each query a group's mean plus the difference of two of its rows over
    -- the square root of two: new points drawn like the rows (one group: like the old mean plus
    -- difference). Never the rows themselves: a row is a node of the graph, whose links lead
    -- straight to its nearest neighbours, so rows as queries overstated recall (an isotropic cloud
    -- of 8,000 rows of 64 dimensions at ef_search 40: 0.976 with rows, 0.91 for new queries drawn
    -- like the data); nor points between topics, which no user asks and which understated it (a
    -- clustered 17,865-row workspace: 0.976 at ef_search 250 where its users' queries found 1.000
    -- at 40). Read as the caller (row-level security applies).
    EXECUTE format('WITH s AS (SELECT CAST(t.%1$I AS real[]) AS r, pg_catalog.row_number() OVER (ORDER BY pg_catalog.random()) AS i
                                 FROM %2$s t
                                WHERE t.%3$I OPERATOR(pg_catalog.=) CAST(%4$L AS %6$s) AND t.%1$I IS NOT NULL),
                         f AS (SELECT pg_catalog.array_agg(s.r ORDER BY s.i) AS r FROM s WHERE s.i OPERATOR(pg_catalog.<=) 1000)
                    SELECT (SELECT count(*) FROM s),
                           (SELECT pg_catalog.array_agg(CAST(CAST(q.v AS %7$s) AS text))
                              FROM f, tenancy._calibration_queries(f.r, pg_catalog.array_length(f.r, 2), %5$s) q(v)
                             WHERE f.r IS NOT NULL)',
                   col, tgt.rel_name, tgt.workspace_column, ws, queries, tgt.workspace_type, tgt.vector_base)
        INTO n, vecs;
    IF n OPERATOR(pg_catalog.<) 2 THEN
        RAISE EXCEPTION 'the caller sees % rows of workspace % in %', n, ws, tgt.rel_name USING ERRCODE = '55000',
            HINT = 'Calibrate as a role that bypasses the table''s row-level security, or with that workspace''s identity.';
    END IF;
    -- The exact answer: every row of the workspace, sorted (OFFSET 0 keeps the index out, as in
    -- tenancy.nearest's exact plan).
    exact_sql := format('SELECT pg_catalog.array_agg(e.tid ORDER BY e.distance) FROM (
                           SELECT x.tid, x.distance FROM (
                               SELECT t.ctid AS tid, t.%1$I %2$s CAST($1 AS %3$s) AS distance FROM %4$s t
                                WHERE t.%5$I OPERATOR(pg_catalog.=) CAST(%6$L AS %7$s) AND t.%1$I IS NOT NULL OFFSET 0) x
                            ORDER BY x.distance LIMIT %8$s) e',
                        col, tgt.op, tgt.vector_base, tgt.rel_name, tgt.workspace_column, ws, tgt.workspace_type, k);
    -- Through the index, as tenancy.nearest's plans read it: the own index with the workspace a
    -- literal, so that the planner matches the partial index; the shared index filtered by the
    -- workspace, its first max(100, k) candidates re-ranked (CANDIDATES in
    -- src/search/sql_text.rs); relaxed iterative scan.
    IF shared THEN
        index_sql := format('SELECT pg_catalog.array_agg(h.tid ORDER BY h.distance) FROM (
                               SELECT c.tid, c.distance FROM (
                                   SELECT t.ctid AS tid, t.%1$I %2$s CAST($1 AS %3$s) AS distance FROM %4$s t
                                    WHERE t.%5$I OPERATOR(pg_catalog.=) CAST(%6$L AS %7$s)
                                    ORDER BY t.%1$I %2$s CAST($1 AS %3$s) LIMIT %9$s) c
                                ORDER BY c.distance LIMIT %8$s) h',
                            col, tgt.op, tgt.vector_base, tgt.rel_name, tgt.workspace_column, ws, tgt.workspace_type, k,
                            GREATEST(100, k));
    ELSE
    index_sql := format('SELECT pg_catalog.array_agg(h.tid) FROM (
                           SELECT t.ctid AS tid FROM %4$s t
                            WHERE t.%5$I OPERATOR(pg_catalog.=) CAST(%6$L AS %7$s)
                            ORDER BY t.%1$I %2$s CAST($1 AS %3$s) LIMIT %8$s) h',
                        col, tgt.op, tgt.vector_base, tgt.rel_name, tgt.workspace_column, ws, tgt.workspace_type, k);
    END IF;
    t0 := pg_catalog.clock_timestamp();
    exact := ARRAY[]::tid[];
    FOR i IN 1 .. pg_catalog.cardinality(vecs) LOOP
        EXECUTE exact_sql INTO found USING vecs[i];
        exact := exact OPERATOR(pg_catalog.||) ARRAY[coalesce(found, ARRAY[]::tid[])
                                                     OPERATOR(pg_catalog.||) pg_catalog.array_fill('(0,0)'::tid, ARRAY[k OPERATOR(pg_catalog.-) coalesce(pg_catalog.cardinality(found), 0)])];
    END LOOP;
    exact_ms := extract(epoch FROM pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) t0) * 1000 / pg_catalog.cardinality(vecs);
    PERFORM pg_catalog.set_config('hnsw.iterative_scan', 'relaxed_order', true);
    -- A shared index is out of plain SQL's sight on a protected table under its row-level security.
    PERFORM pg_catalog.set_config('tenancy.shared_vector_indexes', 'on', true);
    PERFORM pg_catalog.set_config('enable_seqscan', 'off', true);
    PERFORM pg_catalog.set_config('enable_bitmapscan', 'off', true);
    PERFORM pg_catalog.set_config('enable_sort', 'off', true);
    FOREACH ef IN ARRAY steps LOOP
        IF pg_catalog.clock_timestamp() OPERATOR(pg_catalog.>) (started OPERATOR(pg_catalog.+) time_budget) THEN
            EXIT;
        END IF;
        PERFORM pg_catalog.set_config('hnsw.ef_search', GREATEST(ef, k)::text, true);
        hits := 0;
        wanted := 0;
        t0 := pg_catalog.clock_timestamp();
        FOR i IN 1 .. pg_catalog.cardinality(vecs) LOOP
            EXECUTE index_sql INTO found USING vecs[i];
            SELECT hits OPERATOR(pg_catalog.+) count(*) FILTER (WHERE e OPERATOR(pg_catalog.=) ANY (found)),
                   wanted OPERATOR(pg_catalog.+) count(*)
              INTO hits, wanted
              FROM pg_catalog.unnest(exact[i:i]) e WHERE e OPERATOR(pg_catalog.<>) '(0,0)'::tid;
        END LOOP;
        spent := extract(epoch FROM pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) t0) * 1000 / pg_catalog.cardinality(vecs);
        ef_search := GREATEST(ef, k);
        recall := CASE WHEN wanted OPERATOR(pg_catalog.=) 0 THEN 1 ELSE hits::double precision / wanted END;
        ms := spent;
        ladder := ladder OPERATOR(pg_catalog.||) jsonb_build_array(jsonb_build_object('ef_search', ef_search, 'recall', recall, 'ms', ms));
        RETURN NEXT;
        IF recall OPERATOR(pg_catalog.>=) 1 THEN
            complete := true;
            EXIT;
        END IF;
        IF spent OPERATOR(pg_catalog.>) 3 * exact_ms OR ef OPERATOR(pg_catalog.=) steps[pg_catalog.cardinality(steps)] THEN
            complete := true;
            EXIT;
        END IF;
    END LOOP;
    PERFORM pg_catalog.set_config('hnsw.ef_search', coalesce(saved_ef, '40'), true);
    PERFORM pg_catalog.set_config('hnsw.iterative_scan', coalesce(saved_iterative, 'off'), true);
    PERFORM pg_catalog.set_config('tenancy.shared_vector_indexes', coalesce(saved_shared, 'off'), true);
    PERFORM pg_catalog.set_config('enable_seqscan', 'on', true);
    PERFORM pg_catalog.set_config('enable_bitmapscan', 'on', true);
    PERFORM pg_catalog.set_config('enable_sort', 'on', true);
    -- The exact scan as the ladder's zeroth step: what tenancy.nearest compares each step with.
    ef_search := 0;
    recall := 1;
    ms := exact_ms;
    RETURN NEXT;
    PERFORM tenancy._forget_orphan_calibration(index);
    INSERT INTO tenancy._vector_calibrations AS v
        (index_oid, table_oid, column_name, metric, workspace_id, rows_at_calibration, k, queries,
         calibrated_at, calibration_ms, exact_ms, ladder, complete, shared)
    VALUES (index, tbl, col, metric, ws, n, k, pg_catalog.cardinality(vecs), pg_catalog.now(),
            extract(epoch FROM pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) started) * 1000, exact_ms, ladder, complete,
            shared)
    ON CONFLICT (index_oid, workspace_id) DO UPDATE SET
        table_oid = excluded.table_oid, column_name = excluded.column_name, metric = excluded.metric,
        workspace_id = excluded.workspace_id, rows_at_calibration = excluded.rows_at_calibration, k = excluded.k,
        queries = excluded.queries, calibrated_at = excluded.calibrated_at, calibration_ms = excluded.calibration_ms,
        exact_ms = excluded.exact_ms, ladder = excluded.ladder, complete = excluded.complete, shared = excluded.shared;
    -- Every backend's search caches of the table drop the old figures at commit.
    PERFORM tenancy._search_caches_changed(tbl);
END
$$;

-- Calibrates again every index of tbl's column (and metric) that was never calibrated or whose
-- workspace has grown by more than `growth` (a fraction: 0.5 = half again as many rows) since:
-- recall at a given ef_search falls as a graph grows. Shared HNSW indexes of the column are
-- calibrated, under the same rule, for each workspace of at least shared_min_rows rows without
-- an index of its own: tenancy.nearest then searches it through the shared index when that met
-- the target faster than the exact scan (past tenancy._exact_max_rows() rows it would anyway). For the nightly job that runs
-- tenancy.create_vector_indexes; returns what it calibrated, with the rows then and now. Counts
-- every workspace: the caller must own the table and bypass its row-level security.
CREATE FUNCTION tenancy.calibrate_vector_indexes(tbl regclass, "column" name, growth double precision DEFAULT 0.5,
                                                 metric text DEFAULT 'cosine', shared_min_rows bigint DEFAULT 1000)
RETURNS TABLE (index regclass, workspace_id text, rows_then bigint, rows_now bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tgt record;
    r record;
    w record;
    prefix text;
BEGIN
    IF tbl IS NULL OR growth IS NULL OR growth OPERATOR(pg_catalog.<) 0 OR shared_min_rows IS NULL
       OR shared_min_rows OPERATOR(pg_catalog.<) 2 THEN
        RAISE EXCEPTION 'table must not be null, growth a fraction of at least 0 and shared_min_rows at least 2'
            USING ERRCODE = '22023';
    END IF;
    PERFORM tenancy._require_owner(tbl);
    tgt := tenancy._vector_target((SELECT c.reltype FROM pg_class c WHERE c.oid OPERATOR(pg_catalog.=) tbl),
                                  "column", metric);
    prefix := tenancy._vector_index_mark("column", metric, '');
    IF row_security_active(tbl) THEN
        RAISE EXCEPTION 'counting rows per workspace of % needs a role that bypasses its row-level security', tbl
            USING ERRCODE = '42501',
                  HINT = 'Run it as a superuser or a BYPASSRLS role that owns the table, or calibrate each index with tenancy.calibrate_vector_index.';
    END IF;
    FOR r IN
        SELECT CAST(i.indexrelid AS regclass) AS idx, c.rows_at_calibration,
               pg_catalog.substr(d.description, pg_catalog.length(prefix) OPERATOR(pg_catalog.+) 1) AS ws
          FROM pg_index i
          JOIN pg_description d ON d.objoid OPERATOR(pg_catalog.=) i.indexrelid
                               AND d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
                               AND d.objsubid OPERATOR(pg_catalog.=) 0
          LEFT JOIN tenancy._vector_calibrations c ON c.index_oid OPERATOR(pg_catalog.=) i.indexrelid
         WHERE i.indrelid OPERATOR(pg_catalog.=) tbl AND i.indisvalid
           AND pg_catalog.starts_with(d.description, prefix)
         ORDER BY 1
    LOOP
        index := r.idx;
        workspace_id := r.ws;
        rows_then := r.rows_at_calibration;
        EXECUTE format('SELECT count(*) FROM %s t WHERE t.%I OPERATOR(pg_catalog.=) CAST(%L AS %s) AND t.%I IS NOT NULL',
                       tgt.rel_name, tgt.workspace_column, workspace_id, tgt.workspace_type, "column")
            INTO rows_now;
        IF rows_then IS NULL OR rows_now OPERATOR(pg_catalog.>) (rows_then OPERATOR(pg_catalog.*) (1 OPERATOR(pg_catalog.+) growth)) THEN
            PERFORM tenancy.calibrate_vector_index(index);
            RETURN NEXT;
        END IF;
    END LOOP;
    FOR r IN
        SELECT CAST(i.indexrelid AS regclass) AS idx
          FROM pg_index i, tenancy._vector_index_facts(i.indexrelid) f
         WHERE i.indrelid OPERATOR(pg_catalog.=) tbl AND f.is_valid AND f.access_method OPERATOR(pg_catalog.=) 'hnsw'
           AND f.covers_all_rows AND f.first_column OPERATOR(pg_catalog.=) "column"
           AND f.operator_class OPERATOR(pg_catalog.=) tgt.opclass
         ORDER BY 1
    LOOP
        FOR w IN EXECUTE format('SELECT CAST(t.%1$I AS text) AS ws, count(*) AS n FROM %2$s t
                                  WHERE t.%3$I IS NOT NULL GROUP BY 1 HAVING count(*) OPERATOR(pg_catalog.>=) %4$s ORDER BY 1',
                                tgt.workspace_column, tgt.rel_name, "column", shared_min_rows)
        LOOP
            CONTINUE WHEN EXISTS (
                SELECT FROM pg_index i JOIN pg_description d ON d.objoid OPERATOR(pg_catalog.=) i.indexrelid
                                          AND d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
                                          AND d.objsubid OPERATOR(pg_catalog.=) 0
                 WHERE i.indrelid OPERATOR(pg_catalog.=) tbl AND i.indisvalid
                   AND d.description OPERATOR(pg_catalog.=) tenancy._vector_index_mark("column", metric, w.ws));
            index := r.idx;
            workspace_id := w.ws;
            rows_now := w.n;
            rows_then := (SELECT c.rows_at_calibration FROM tenancy._vector_calibrations c
                           WHERE c.index_oid OPERATOR(pg_catalog.=) r.idx AND c.workspace_id OPERATOR(pg_catalog.=) w.ws);
            IF rows_then IS NULL OR rows_now OPERATOR(pg_catalog.>) (rows_then OPERATOR(pg_catalog.*) (1 OPERATOR(pg_catalog.+) growth)) THEN
                PERFORM tenancy.calibrate_vector_index(index, workspace => workspace_id);
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
END
$$;

-- Every per-workspace HNSW index tenancy.create_vector_index made on a table the caller owns (all
-- of them for tenancy_admin and tenancy_auditor), with its calibration (NULL columns: never
-- calibrated; tenancy.nearest then uses ef_search 40 as before calibration existed), then every
-- calibration of a shared index for one workspace (`shared`), each with the strategy
-- tenancy.nearest takes for it at the caller's tenancy.nearest_recall. The view runs as its
-- caller (security_invoker): the calibrations' row-level security applies too. A workspace's row
-- count is not for other tenants to read (the adversarial pass found every figure readable by
-- every role through a view that ran as its owner).
CREATE VIEW tenancy.vector_indexes WITH (security_invoker) AS
SELECT CAST(i.indexrelid AS regclass) AS index_name, CAST(i.indrelid AS regclass) AS table_name, c.column_name,
       c.metric, c.workspace_id, false AS shared, c.rows_at_calibration, c.calibrated_at, c.calibration_ms,
       c.exact_ms, c.k, c.queries, c.ladder, c.complete,
       tenancy._calibrated_strategy(CAST(c.ladder AS text), c.exact_ms, c.k,
                                    CAST(pg_catalog.current_setting('tenancy.nearest_recall', true) AS double precision), c.k, c.queries) AS strategy
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class t ON t.oid OPERATOR(pg_catalog.=) i.indrelid
  JOIN pg_catalog.pg_description d ON d.objoid OPERATOR(pg_catalog.=) i.indexrelid
                                  AND d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
                                  AND d.objsubid OPERATOR(pg_catalog.=) 0
  LEFT JOIN tenancy._vector_calibrations c
         ON c.index_oid OPERATOR(pg_catalog.=) i.indexrelid AND c.table_oid OPERATOR(pg_catalog.=) i.indrelid
        AND NOT c.shared
        AND d.description OPERATOR(pg_catalog.=) tenancy._vector_index_mark(c.column_name, c.metric, c.workspace_id)
 WHERE pg_catalog.starts_with(d.description, 'pg_tenancy:hnsw:')
   AND (pg_catalog.pg_has_role(current_user, t.relowner, 'USAGE')
        OR pg_catalog.pg_has_role(current_user, 'tenancy_admin', 'USAGE')
        OR pg_catalog.pg_has_role(current_user, 'tenancy_auditor', 'USAGE'))
UNION ALL
SELECT CAST(i.indexrelid AS regclass), CAST(i.indrelid AS regclass), c.column_name, c.metric, c.workspace_id, true,
       c.rows_at_calibration, c.calibrated_at, c.calibration_ms, c.exact_ms, c.k, c.queries, c.ladder, c.complete,
       pg_catalog.replace(tenancy._calibrated_strategy(CAST(c.ladder AS text), c.exact_ms, c.k,
                                    CAST(pg_catalog.current_setting('tenancy.nearest_recall', true) AS double precision), c.k, c.queries),
                          'hnsw_workspace', 'hnsw_shared')
  FROM tenancy._vector_calibrations c
  JOIN pg_catalog.pg_index i ON i.indexrelid OPERATOR(pg_catalog.=) c.index_oid AND i.indrelid OPERATOR(pg_catalog.=) c.table_oid
  JOIN pg_catalog.pg_class t ON t.oid OPERATOR(pg_catalog.=) i.indrelid
 WHERE c.shared
   AND (pg_catalog.pg_has_role(current_user, t.relowner, 'USAGE')
        OR pg_catalog.pg_has_role(current_user, 'tenancy_admin', 'USAGE')
        OR pg_catalog.pg_has_role(current_user, 'tenancy_auditor', 'USAGE'));
GRANT SELECT ON tenancy.vector_indexes TO PUBLIC;

GRANT EXECUTE ON FUNCTION tenancy.calibrate_vector_index(regclass, integer, interval, integer, text),
                          tenancy.calibrate_vector_indexes(regclass, name, double precision, text, bigint) TO PUBLIC;
