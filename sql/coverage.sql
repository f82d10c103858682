-- pg_tenancy: the psql audit surface over the RLS installer (runs after protect.sql):
-- tenancy.protected_tables (what is protected, and whether it still is) and tenancy.coverage
-- (every finding that weakens tenant isolation, with a severity and a fix). Both are readable by
-- tenancy_admin and tenancy_auditor.

-- Whether pg_tenancy is in shared_preload_libraries (a superuser-only setting, hence the definer).
CREATE FUNCTION tenancy._preloaded() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'pg_tenancy' OPERATOR(pg_catalog.=) ANY (
        SELECT btrim(s, ' "') FROM unnest(string_to_array(current_setting('shared_preload_libraries'), ',')) s)
$$;
REVOKE ALL ON FUNCTION tenancy._preloaded() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._preloaded() TO tenancy_admin, tenancy_auditor;

-- One row per protected table or partition, with the state that keeps it protected.
CREATE VIEW tenancy.protected_tables AS
SELECT p.schema_name, p.table_name, p.workspace_column, p.user_column, p.write_permission,
       (SELECT format('%I.%I', pn.nspname, pc.relname) FROM pg_catalog.pg_inherits i
          JOIN pg_catalog.pg_class pc ON pc.oid OPERATOR(pg_catalog.=) i.inhparent
          JOIN pg_catalog.pg_namespace pn ON pn.oid OPERATOR(pg_catalog.=) pc.relnamespace
         WHERE i.inhrelid OPERATOR(pg_catalog.=) c.oid AND c.relispartition) AS partition_of,
       coalesce(c.relrowsecurity, false) AS rls_enabled,
       coalesce(c.relforcerowsecurity, false) AS rls_forced,
       c.oid IS NOT NULL AND tenancy._policies_intact(c.oid, p.workspace_column, p.user_column, p.write_permission)
           AS policies_intact,
       EXISTS (SELECT FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a
                 ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid AND a.attnum OPERATOR(pg_catalog.=) i.indkey[0]
                WHERE i.indrelid OPERATOR(pg_catalog.=) c.oid AND i.indpred IS NULL
                  AND a.attname OPERATOR(pg_catalog.=) p.workspace_column) AS index_present,
       CASE WHEN c.relkind OPERATOR(pg_catalog.=) 'p'
            THEN (SELECT sum(greatest(l.reltuples, 0))::bigint FROM pg_catalog.pg_partition_tree(c.oid) t
                    JOIN pg_catalog.pg_class l ON l.oid OPERATOR(pg_catalog.=) t.relid WHERE t.isleaf)
            WHEN c.reltuples OPERATOR(pg_catalog.>=) 0 THEN c.reltuples::bigint END AS row_estimate
  FROM tenancy.protections p
  LEFT JOIN pg_catalog.pg_namespace n ON n.nspname OPERATOR(pg_catalog.=) p.schema_name
  LEFT JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid
        AND c.relname OPERATOR(pg_catalog.=) p.table_name AND c.relkind IN ('r', 'p');
COMMENT ON VIEW tenancy.protected_tables IS 'tables protected by tenancy.protect(): RLS state, policies unmodified, index, size';

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

-- One row per finding that weakens tenant isolation, with a severity and the fix; no rows is a
-- clean bill of health. The bootstrap superuser is not listed: pg_tenancy itself runs its
-- membership checks as that role, so it must exist; keep it for administration only.
CREATE VIEW tenancy.coverage AS
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

REVOKE ALL ON tenancy.protected_tables, tenancy.coverage FROM PUBLIC;
GRANT SELECT ON tenancy.protected_tables, tenancy.coverage TO tenancy_admin, tenancy_auditor;
