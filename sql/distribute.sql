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
