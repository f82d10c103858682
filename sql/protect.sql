-- pg_tenancy: row-level security installer (protect / unprotect), its registry, and the event
-- triggers that guard new tables and follow renames and drops (runs after the Rust functions and
-- admin.sql: it needs tenancy.workspace_id() and friends). The audit views are in coverage.sql.
--
-- Conventions: every function pins search_path; catalog names are formatted with %I / %L;
-- protect and unprotect are SECURITY INVOKER, so PostgreSQL's own ownership checks apply to the
-- DDL they run. The registry is written by the caller too: its row-level security lets a role
-- touch only the rows of tables it owns (see tenancy.protections below), so no SECURITY DEFINER
-- helper has to guess who its caller was. Only the bookkeeping event triggers (renames, drops)
-- and the preload check run as the extension owner.

-- Registry of protected tables: one row per protected table or partition. Tables are named by
-- schema and table text (no regclass/oid: those change across pg_dump and block pg_upgrade);
-- renames and drops are followed by the event triggers below. The flags record what protect
-- itself turned on, so that unprotect removes exactly that.
CREATE TABLE tenancy.protections (
    schema_name       text NOT NULL,
    table_name        text NOT NULL,
    workspace_column  text NOT NULL CHECK (workspace_column <> ''),
    user_column       text CHECK (user_column <> ''),
    write_permission  text CHECK (write_permission <> ''),
    enabled_rls       boolean NOT NULL DEFAULT false,
    forced_rls        boolean NOT NULL DEFAULT false,
    set_default       boolean NOT NULL DEFAULT false,
    previous_default  text,
    protected_at      timestamptz NOT NULL DEFAULT now(),
    protected_by      name NOT NULL DEFAULT current_user,
    PRIMARY KEY (schema_name, table_name),
    CHECK (user_column IS DISTINCT FROM workspace_column)
);
COMMENT ON TABLE tenancy.protections IS 'tables protected by tenancy.protect(): columns, permission, and what protect turned on (so unprotect undoes exactly that)';

-- pg_dump keeps the rows of configuration tables; pg_extension_config_dump only works inside the
-- extension script, so a standalone development load (psql -f) skips it.
DO $config$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_depend d
                WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND d.objid OPERATOR(pg_catalog.=) 'tenancy.protections'::pg_catalog.regclass
                  AND d.deptype OPERATOR(pg_catalog.=) 'e') THEN
        PERFORM pg_catalog.pg_extension_config_dump('tenancy.protections', '');
    END IF;
END
$config$;

-- True when the current role may manage the registry row of schema.table: it owns the table
-- (or is a member of its owner), or the table no longer exists (a stale row anyone may clear).
CREATE FUNCTION tenancy._may_manage(schema_name text, table_name text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN c.oid IS NULL THEN true
                ELSE pg_has_role(current_user, c.relowner, 'USAGE') END
      FROM (SELECT to_regclass(format('%I.%I', $1, $2)) AS rel) r
      LEFT JOIN pg_class c ON c.oid OPERATOR(pg_catalog.=) r.rel
$$;

-- True when schema.table exists and the current role owns it (or is a member of its owner).
CREATE FUNCTION tenancy._owns(schema_name text, table_name text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(pg_has_role(current_user, c.relowner, 'USAGE'), false)
      FROM (SELECT to_regclass(format('%I.%I', $1, $2)) AS rel) r
      LEFT JOIN pg_class c ON c.oid OPERATOR(pg_catalog.=) r.rel
$$;

ALTER TABLE tenancy.protections ENABLE ROW LEVEL SECURITY;
CREATE POLICY owners ON tenancy.protections
    USING (tenancy._may_manage(schema_name, table_name))
    WITH CHECK (tenancy._owns(schema_name, table_name));
CREATE POLICY auditors ON tenancy.protections FOR SELECT TO tenancy_admin, tenancy_auditor
    USING (true);
REVOKE ALL ON tenancy.protections FROM PUBLIC;
-- No table-level UPDATE or DELETE for PUBLIC: either would let any role LOCK the registry IN
-- ACCESS EXCLUSIVE MODE and stall every CREATE, ALTER and DROP TABLE behind the event triggers
-- below. Column-level UPDATE lets protect() rewrite its own rows without granting that lock
-- (LOCK TABLE checks table-level privileges only); unprotect() removes its row through
-- tenancy._forget_unprotected().
GRANT SELECT, INSERT ON tenancy.protections TO PUBLIC;
GRANT UPDATE (workspace_column, user_column, write_permission, enabled_rls, forced_rls, set_default,
              previous_default, protected_at, protected_by) ON tenancy.protections TO PUBLIC;
GRANT DELETE ON tenancy.protections TO tenancy_admin;

-- The deparsed form of the caller's identity in a column's type: "tenancy.workspace_id()",
-- "(tenancy.user_id())::uuid". Policies compare with it and the workspace column's default is it;
-- the planner folds the call into a constant (src/surface/folding.rs).
-- It is written exactly as pg_get_expr prints it under search_path pg_catalog, so that the text
-- protect installs and the text the catalog shows can be compared for equality.
CREATE FUNCTION tenancy._identity_expr(fn text, typ oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN typ OPERATOR(pg_catalog.=) 'pg_catalog.text'::regtype
                THEN format('tenancy.%s()', fn)
                ELSE format('(tenancy.%s())::%s', fn, format_type(typ, NULL)) END
$$;

-- The type of a live column of rel, or NULL when there is none.
CREATE FUNCTION tenancy._column_type(rel oid, col text) RETURNS oid
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.atttypid FROM pg_attribute a
     WHERE a.attrelid OPERATOR(pg_catalog.=) rel AND a.attname OPERATOR(pg_catalog.=) col
       AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
$$;

-- The policies protect writes on rel for these settings, in deparsed form: one permissive
-- policy for every command (the workspace, and the user when given), and with write_permission
-- one restrictive policy per write command. No rows when a column is missing.
CREATE FUNCTION tenancy._policy_spec(rel oid, workspace_column text, user_column text, write_permission text)
RETURNS TABLE (policy_name name, permissive boolean, command "char", qual text, with_check text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ws_type oid := tenancy._column_type(rel, workspace_column);
    user_type oid;
    tenant text;
    allowed text;
BEGIN
    IF ws_type IS NULL THEN
        RETURN;
    END IF;
    tenant := format('(%I = %s)', workspace_column, tenancy._identity_expr('workspace_id', ws_type));
    IF user_column IS NOT NULL THEN
        user_type := tenancy._column_type(rel, user_column);
        IF user_type IS NULL THEN
            RETURN;
        END IF;
        tenant := format('(%s AND (%I = %s))', tenant, user_column, tenancy._identity_expr('user_id', user_type));
    END IF;
    RETURN QUERY SELECT 'tenancy_workspace'::name, true, '*'::"char", tenant, tenant;
    IF write_permission IS NOT NULL THEN
        allowed := format('tenancy.has_permission(%L::text)', write_permission);
        RETURN QUERY VALUES ('tenancy_write_insert'::name, false, 'a'::"char", NULL::text, allowed),
                            ('tenancy_write_update'::name, false, 'w'::"char", allowed, allowed),
                            ('tenancy_write_delete'::name, false, 'd'::"char", allowed, NULL::text);
    END IF;
END
$$;

-- The policies on rel whose names pg_tenancy uses, as the catalog shows them (same shape as
-- _policy_spec; to_public is false when a policy was narrowed to roles).
CREATE FUNCTION tenancy._live_policies(rel oid)
RETURNS TABLE (policy_name name, permissive boolean, command "char", qual text, with_check text, to_public boolean)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.polname, p.polpermissive, p.polcmd, pg_get_expr(p.polqual, p.polrelid),
           pg_get_expr(p.polwithcheck, p.polrelid), p.polroles OPERATOR(pg_catalog.=) '{0}'::oid[]
      FROM pg_policy p
     WHERE p.polrelid OPERATOR(pg_catalog.=) rel
       AND p.polname IN ('tenancy_workspace', 'tenancy_write_insert', 'tenancy_write_update', 'tenancy_write_delete')
$$;

-- True when rel carries exactly the policies protect would write now for these settings:
-- none missing, none altered (expression, command, kind or roles), none extra.
CREATE FUNCTION tenancy._policies_intact(rel oid, workspace_column text, user_column text, write_permission text)
RETURNS boolean LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH spec AS (SELECT * FROM tenancy._policy_spec(rel, workspace_column, user_column, write_permission)),
         live AS (SELECT policy_name, permissive, command, qual, with_check FROM tenancy._live_policies(rel)
                   WHERE to_public)
    SELECT EXISTS (SELECT FROM spec)
       AND NOT EXISTS (SELECT * FROM spec EXCEPT SELECT * FROM live)
       AND (SELECT count(*) FROM tenancy._live_policies(rel)) OPERATOR(pg_catalog.=) (SELECT count(*) FROM spec)
$$;

-- The comment protect puts on a table's tenancy_workspace policy: the table's registry key.
-- Comments travel with pg_dump and with renames, so the rename follower can find the old key.
CREATE FUNCTION tenancy._registry_mark(schema_name text, table_name text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'pg_tenancy:' OPERATOR(pg_catalog.||) format('%I.%I', schema_name, table_name)
$$;

-- The registry key (schema, table) named by a policy comment, or NULL when it is not one of ours.
CREATE FUNCTION tenancy._registry_key(mark text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    key text[];
BEGIN
    IF mark IS NULL OR left(mark, 11) OPERATOR(pg_catalog.<>) 'pg_tenancy:' THEN
        RETURN NULL;
    END IF;
    key := parse_ident(substr(mark, 12));
    RETURN CASE WHEN cardinality(key) OPERATOR(pg_catalog.=) 2 THEN key END;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN NULL;
END
$$;

-- Raises a clear error unless col is a usable tenant column of rel: it exists (42703), has
-- type text, uuid or bigint (42804), and is neither generated nor an identity column (22023).
CREATE FUNCTION tenancy._check_column(rel oid, col text, what text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    col_info record;
BEGIN
    SELECT a.atttypid, a.attgenerated, a.attidentity INTO col_info FROM pg_attribute a
     WHERE a.attrelid OPERATOR(pg_catalog.=) rel AND a.attname OPERATOR(pg_catalog.=) col
       AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation "%" does not exist', col, rel::regclass
            USING ERRCODE = '42703',
                  HINT = format('Name the table''s %s with the %s argument.', what,
                                replace(what, ' ', '_'));
    END IF;
    IF col_info.atttypid NOT IN ('pg_catalog.text'::regtype, 'pg_catalog.uuid'::regtype, 'pg_catalog.int8'::regtype) THEN
        RAISE EXCEPTION '% "%" of relation "%" has type %, not text, uuid or bigint',
                        what, col, rel::regclass, format_type(col_info.atttypid, NULL)
            USING ERRCODE = '42804',
                  HINT = format('Change its type, e.g. ALTER TABLE %s ALTER COLUMN %I TYPE text.', rel::regclass, col);
    END IF;
    IF col_info.attgenerated OPERATOR(pg_catalog.<>) '' OR col_info.attidentity OPERATOR(pg_catalog.<>) '' THEN
        RAISE EXCEPTION '% "%" of relation "%" is a generated or identity column', what, col, rel::regclass
            USING ERRCODE = '22023',
                  HINT = 'The workspace and user columns are filled from the caller''s identity.';
    END IF;
END
$$;

-- Raises 42501 unless the current role owns rel (or is a member of its owner), with the
-- wording PostgreSQL uses; the DDL protect runs would refuse anyway, this says so up front.
CREATE FUNCTION tenancy._require_owner(rel oid) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_class c WHERE c.oid OPERATOR(pg_catalog.=) rel
                      AND pg_has_role(current_user, c.relowner, 'USAGE')) THEN
        RAISE EXCEPTION 'must be owner of table %', rel::regclass
            USING ERRCODE = '42501',
                  HINT = 'Only the table''s owner (or a member of the owning role) can protect or unprotect it.';
    END IF;
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

-- Restores the default protect replaced on column col of rel (or drops it), but only while the
-- column still carries protect's own default: a default changed since is left alone. The
-- remembered default is text from the registry, which the table's owner can write: it is used
-- only when it parses as one expression and nothing else (tenancy._is_one_expression), in
-- parentheses, as that owner; anything else is dropped with a warning. So whoever calls unprotect
-- (a superuser's maintenance) runs no statement the owner wrote.
CREATE FUNCTION tenancy._restore_default(rel oid, col text, previous text) RETURNS void
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

-- Protects one table or partition (the settings are already validated): RLS on and forced,
-- exactly protect's policies, the workspace default, the registry row. Issues no DDL for what
-- is already in place, so a second call changes nothing.
CREATE FUNCTION tenancy._protect_one(rel oid, ws_col text, user_col text, permission text) RETURNS void
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

-- Removes the registry row of schema.table once the table is no longer protected: it is gone, or
-- it carries none of pg_tenancy's policies (tenancy._unprotect_one has just dropped them, as its
-- owner). Runs as the extension owner, since PUBLIC may not DELETE from the registry; anyone may
-- call it, and it removes only a row that no longer describes a protection. Never waits on a
-- lock a caller could hold: a registry row locked by someone else fails fast.
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

-- A table and, when partitioned, every partition below it, with its depth (0 for the table).
CREATE FUNCTION tenancy._table_tree(tbl regclass)
RETURNS TABLE (relid oid, relkind "char", level integer, relname name)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.relid, c.relkind, t.level, c.relname
      FROM (SELECT tbl::oid AS relid, 0 AS level
            UNION SELECT pt.relid, pt.level FROM pg_partition_tree(tbl) pt) t
      JOIN pg_class c ON c.oid OPERATOR(pg_catalog.=) t.relid
$$;

-- Protects a table for multi-tenancy: enables and forces row-level security and installs the
-- policies that show, update and delete only the caller's workspace's rows (and, with
-- user_column, only the caller's own rows), refuse writes into another workspace, and with
-- write_permission require tenancy.has_permission(write_permission) for every write. The
-- workspace column defaults to the caller's workspace. A partitioned table is protected with
-- every partition; partitions attached later are not (call protect again). Idempotent.
CREATE FUNCTION tenancy.protect(tbl regclass, workspace_column name DEFAULT 'workspace_id',
                                user_column name DEFAULT NULL, write_permission text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k record;
    part record;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be null' USING ERRCODE = '22023';
    END IF;
    IF workspace_column IS NULL OR workspace_column OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'workspace_column must not be null or empty' USING ERRCODE = '22023';
    END IF;
    IF user_column OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'user_column must not be empty' USING ERRCODE = '22023',
            HINT = 'Pass NULL (the default) for a table shared by the whole workspace.';
    END IF;
    IF user_column OPERATOR(pg_catalog.=) workspace_column THEN
        RAISE EXCEPTION 'user_column and workspace_column must differ' USING ERRCODE = '22023';
    END IF;
    IF write_permission !~ '^[A-Za-z0-9][A-Za-z0-9_.:/*-]{0,199}$' THEN
        RAISE EXCEPTION 'write_permission "%" is not a permission slug', write_permission
            USING ERRCODE = '22023',
                  HINT = 'Use the WorkOS permission slug, e.g. ''documents:write'' (letters, digits and _ . : / * -).';
    END IF;
    SELECT c.relkind, n.nspname INTO k FROM pg_class c JOIN pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.oid OPERATOR(pg_catalog.=) tbl;
    IF k.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '"%" is not a table', tbl
            USING ERRCODE = '42809', HINT = 'Protect the tables a view or materialized view reads instead.';
    END IF;
    IF k.nspname IN ('pg_catalog', 'information_schema', 'tenancy') OR k.nspname ~ '^pg_toast' THEN
        RAISE EXCEPTION 'table % is in system schema "%"', tbl, k.nspname USING ERRCODE = '22023';
    END IF;
    PERFORM tenancy._require_owner(tbl);
    FOR part IN SELECT t.relid, t.relkind FROM tenancy._table_tree(tbl) t ORDER BY t.level, t.relname
    LOOP
        IF part.relkind NOT IN ('r', 'p') THEN
            RAISE WARNING 'partition % of % is not a table and is left unprotected', part.relid::regclass, tbl
                USING DETAIL = 'Rows reached through the parent are still filtered by its policies.';
            CONTINUE;
        END IF;
        PERFORM tenancy._protect_one(part.relid, workspace_column, user_column, write_permission);
    END LOOP;
END
$$;

-- Removes one table's protection: pg_tenancy's policies, the default protect set (restoring the
-- one it replaced), and FORCE / ENABLE ROW LEVEL SECURITY when protect turned them on and no
-- other policy remains (a remaining policy is the owner's own, which RLS keeps meaningful).
CREATE FUNCTION tenancy._unprotect_one(rel oid) RETURNS boolean
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

-- Removes exactly what tenancy.protect() added to a table and its partitions: the policies, the
-- workspace default it set, and FORCE / ENABLE ROW LEVEL SECURITY only if protect turned them on.
CREATE FUNCTION tenancy.unprotect(tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    part record;
    any_protected boolean := false;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be null' USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_class c WHERE c.oid OPERATOR(pg_catalog.=) tbl AND c.relkind IN ('r', 'p')) THEN
        RAISE EXCEPTION '"%" is not a table', tbl USING ERRCODE = '42809';
    END IF;
    PERFORM tenancy._require_owner(tbl);
    FOR part IN SELECT t.relid FROM tenancy._table_tree(tbl) t
                 WHERE t.relkind IN ('r', 'p')
                 ORDER BY t.level DESC, t.relname
    LOOP
        any_protected := tenancy._unprotect_one(part.relid) OR any_protected;
    END LOOP;
    IF NOT any_protected THEN
        RAISE NOTICE 'table % is not protected, skipping', tbl;
    END IF;
END
$$;

GRANT EXECUTE ON FUNCTION tenancy.protect(regclass, name, name, text), tenancy.unprotect(regclass) TO PUBLIC;

-- The schemas tenancy.auto_protect_schemas lists (comma-separated; unset or empty means public).
CREATE FUNCTION tenancy._auto_protect_schemas() RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(btrim(s, ' "')) FILTER (WHERE btrim(s, ' "') OPERATOR(pg_catalog.<>) ''), '{public}')
      FROM unnest(string_to_array(coalesce(nullif(current_setting('tenancy.auto_protect_schemas', true), ''), 'public'), ',')) s
$$;

-- Event trigger (ddl_command_end of CREATE TABLE, CREATE TABLE AS, SELECT INTO): a new table in
-- one of tenancy.auto_protect_schemas that has a workspace_id column (or is a partition of a
-- protected table) is protected when tenancy.auto_protect is on, else named in a WARNING.
-- Runs as the creator, who owns the new table; temporary and extension tables are skipped, and so
-- are Citus's shards.
CREATE FUNCTION tenancy._guard_new_tables() RETURNS event_trigger
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

-- Event trigger (ddl_command_end of ALTER TABLE and ALTER SCHEMA): follows renames and SET
-- SCHEMA. Each protected table's tenancy_workspace policy carries its registry key as a comment;
-- a key that no longer matches the table's name moves the registry row to the new name.
-- Runs as the extension owner: a schema's owner may rename tables it does not own. It looks only
-- at the tables the command altered (or the tables of the schema it renamed) and acts only on a
-- key that names a registered table: a policy any role wrote on its own table, with a comment of
-- its choosing, is never touched, so a lock that role holds cannot stall someone else's DDL. A
-- lock it cannot take within lock_timeout is skipped with a warning (tenancy.coverage reports
-- the stale row).
CREATE FUNCTION tenancy._follow_renames() RETURNS event_trigger
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

-- Event trigger (sql_drop): forgets the registry rows of dropped tables. Runs as the extension
-- owner, since the row of a table that is gone no longer names an owner.
CREATE FUNCTION tenancy._forget_dropped() RETURNS event_trigger
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

-- Created last, so that nothing above fires them.
CREATE EVENT TRIGGER tenancy_guard_new_tables ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO')
    EXECUTE FUNCTION tenancy._guard_new_tables();
CREATE EVENT TRIGGER tenancy_follow_renames ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER SCHEMA')
    EXECUTE FUNCTION tenancy._follow_renames();
CREATE EVENT TRIGGER tenancy_forget_dropped ON sql_drop
    EXECUTE FUNCTION tenancy._forget_dropped();
