-- pg_tenancy: tenant-scoped vector search (issue 5). Runs after protect.sql: it reads the
-- registry tenancy.protections. See docs/search.md for the design and the measurements behind
-- the thresholds.
--
-- pgvector is NOT needed at CREATE EXTENSION time. Nothing here names a pgvector type, operator
-- or function statically: the query vector is an `anycompatible` argument, the column's type is
-- read from pg_attribute at call time, and every pgvector object is reached through dynamic SQL
-- qualified with the schema that holds the column's type (so search_path cannot redirect it).
-- vector, halfvec and sparsevec columns are accepted.
--
-- Conventions: every function pins search_path; identifiers go through %I and values through
-- %L or USING; the caller's workspace and user come from tenancy.workspace_id() and
-- tenancy.user_id(), never from an argument. Search runs as the caller (SECURITY INVOKER): the
-- table's own policies apply on top of the filter nearest adds itself.

-- What tenancy.nearest needs to know about a searchable column, checked: the table (from the
-- row type the caller passed), its registry row, the column's type, and the pgvector operator
-- and operator class of the metric. Raises 42809 (not a table row type), 55000 (not protected),
-- 42703 (no such column), 42804 (not a vector column), 22023 (unknown metric), 22004 (NULLs).
CREATE FUNCTION tenancy._vector_target(row_type regtype, col name, metric text,
    OUT rel oid, OUT rel_name text, OUT workspace_column text, OUT workspace_type text,
    OUT user_column text, OUT user_type text, OUT vector_type text, OUT vector_base text,
    OUT vector_schema text, OUT dims int, OUT op text, OUT opclass text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
    reg record;
    a record;
BEGIN
    IF col IS NULL THEN
        RAISE EXCEPTION 'column must not be null' USING ERRCODE = '22004';
    END IF;
    IF metric IS NULL THEN
        RAISE EXCEPTION 'metric must not be null' USING ERRCODE = '22004',
            HINT = 'Use ''cosine'' (the default), ''l2'' or ''inner_product''.';
    END IF;
    IF metric NOT IN ('cosine', 'l2', 'inner_product') THEN
        RAISE EXCEPTION 'unknown metric "%"', metric USING ERRCODE = '22023',
            HINT = 'Use ''cosine'' (operator <=>), ''l2'' (<->) or ''inner_product'' (<#>).';
    END IF;
    SELECT k.oid, k.relkind, n.nspname, k.relname INTO c
      FROM pg_type t JOIN pg_class k ON k.oid OPERATOR(pg_catalog.=) t.typrelid
      JOIN pg_namespace n ON n.oid OPERATOR(pg_catalog.=) k.relnamespace
     WHERE t.oid OPERATOR(pg_catalog.=) row_type;
    IF NOT FOUND OR c.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'type % is not the row type of a table', row_type USING ERRCODE = '42809',
            HINT = 'Pass a typed NULL of the table''s row type, e.g. tenancy.nearest(NULL::documents, ''embedding'', $1).';
    END IF;
    rel := c.oid;
    rel_name := format('%I.%I', c.nspname, c.relname);
    SELECT p.workspace_column, p.user_column INTO reg FROM tenancy._protection(c.nspname, c.relname) p;
    IF reg.workspace_column IS NULL THEN
        RAISE EXCEPTION 'table % is not protected by pg_tenancy', rel_name USING ERRCODE = '55000',
            HINT = format('Protect it first: SELECT tenancy.protect(%L);', rel_name);
    END IF;
    workspace_column := reg.workspace_column;
    workspace_type := format_type(tenancy._column_type(rel, workspace_column), NULL);
    user_column := reg.user_column;
    IF user_column IS NOT NULL THEN
        user_type := format_type(tenancy._column_type(rel, user_column), NULL);
    END IF;
    IF workspace_type IS NULL OR (user_column IS NOT NULL AND user_type IS NULL) THEN
        RAISE EXCEPTION 'table % lost its tenant column', rel_name USING ERRCODE = '55000',
            HINT = 'Check SELECT * FROM tenancy.protected_tables and protect the table again.';
    END IF;
    SELECT at.atttypid, at.atttypmod, t.typname, tn.nspname INTO a
      FROM pg_attribute at JOIN pg_type t ON t.oid OPERATOR(pg_catalog.=) at.atttypid
      JOIN pg_namespace tn ON tn.oid OPERATOR(pg_catalog.=) t.typnamespace
     WHERE at.attrelid OPERATOR(pg_catalog.=) rel AND at.attname OPERATOR(pg_catalog.=) col
       AND at.attnum OPERATOR(pg_catalog.>) 0 AND NOT at.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation % does not exist', col, rel_name USING ERRCODE = '42703';
    END IF;
    IF a.typname NOT IN ('vector', 'halfvec', 'sparsevec')
       OR NOT EXISTS (SELECT FROM pg_depend d JOIN pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid
                       WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::regclass
                         AND d.objid OPERATOR(pg_catalog.=) a.atttypid AND d.deptype OPERATOR(pg_catalog.=) 'e'
                         AND e.extname OPERATOR(pg_catalog.=) 'vector') THEN
        RAISE EXCEPTION 'column "%" of relation % has type %, not a pgvector type', col, rel_name,
                        format_type(a.atttypid, a.atttypmod) USING ERRCODE = '42804',
            HINT = 'Search a vector, halfvec or sparsevec column (CREATE EXTENSION vector).';
    END IF;
    vector_type := format_type(a.atttypid, a.atttypmod);
    vector_base := format('%I.%I', a.nspname, a.typname);
    vector_schema := a.nspname;
    dims := CASE WHEN a.atttypmod OPERATOR(pg_catalog.>) 0 THEN a.atttypmod END;
    op := format('OPERATOR(%I.%s)', a.nspname,
                 CASE metric WHEN 'cosine' THEN '<=>' WHEN 'l2' THEN '<->' ELSE '<#>' END);
    opclass := format('%I.%I', a.nspname,
                      a.typname OPERATOR(pg_catalog.||) CASE metric WHEN 'cosine' THEN '_cosine_ops'
                                                                     WHEN 'l2' THEN '_l2_ops' ELSE '_ip_ops' END);
END
$$;

-- The tenant columns of a protected table, from the registry (whose row-level security hides
-- rows from roles that do not own the table, so this reads it as the extension owner). What it
-- returns is no secret: pg_policies shows the same columns to every role.
CREATE FUNCTION tenancy._protection(schema_name text, table_name text)
RETURNS TABLE (workspace_column text, user_column text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.workspace_column, p.user_column FROM tenancy.protections p
     WHERE p.schema_name OPERATOR(pg_catalog.=) $1 AND p.table_name OPERATOR(pg_catalog.=) $2
$$;
REVOKE ALL ON FUNCTION tenancy._protection(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._protection(text, text) TO PUBLIC;

-- The comment that marks a per-workspace HNSW index made by tenancy.create_vector_index; search
-- finds the index by it (pg_description is indexed by object, so the lookup is a few probes).
CREATE FUNCTION tenancy._vector_index_mark(col text, metric text, workspace_id text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('pg_tenancy:hnsw:%s:%s:%s', metric, col, workspace_id)
$$;

-- The valid per-workspace HNSW index of rel for (column, metric, workspace), or NULL.
CREATE FUNCTION tenancy._vector_index_of(rel oid, col text, metric text, workspace_id text) RETURNS regclass
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT i.indexrelid::regclass FROM pg_index i
      JOIN pg_description d ON d.objoid OPERATOR(pg_catalog.=) i.indexrelid
                           AND d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
                           AND d.objsubid OPERATOR(pg_catalog.=) 0
     WHERE i.indrelid OPERATOR(pg_catalog.=) rel AND i.indisvalid AND i.indisready
       AND d.description OPERATOR(pg_catalog.=) tenancy._vector_index_mark(col, metric, workspace_id)
     LIMIT 1
$$;

-- Workspaces with at most this many rows are searched exactly (EXACT_MAX_ROWS in
-- src/search/strategy.rs is the same number). Measured (docs/search.md, 64-dim vectors, 2 shared
-- cores): an exact top-10 costs about 0.4 µs per row of the workspace (4 ms at 10,000 rows),
-- which is what an HNSW scan with ef_search 200 plus re-ranking costs; the bounded count that
-- decides reads at most 10,001 index entries (index-only, about 0.6 ms), once a minute per backend
-- and workspace.
CREATE FUNCTION tenancy._exact_max_rows() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$ SELECT 10000 $$;

-- The strategy tenancy.nearest would use now for the caller on this table and column:
-- 'exact', 'hnsw' or 'hnsw_workspace' (see tenancy.nearest), from the same per-backend caches.
-- For tests and EXPLAIN-style checks.
CREATE FUNCTION tenancy.nearest_strategy(tbl anyelement, "column" name, metric text DEFAULT 'cosine')
RETURNS text LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'tenancy_nearest_strategy';

-- The caller's k nearest rows of a protected table: whole rows (item, of the table's row type)
-- and their distance (cosine distance, L2 distance, or the negative inner product, as pgvector's
-- <=>, <-> and <#> return them), nearest first. Always filters on the caller's workspace (and
-- user, for a user-scoped table) from the verified token, so it stays scoped for a role that
-- bypasses row-level security; runs as the caller, so the table's policies apply too.
--   SELECT (n.item).*, n.distance FROM tenancy.nearest(NULL::documents, 'embedding', $1::vector, 10) n;
-- Strategy per call (src/search/strategy.rs, docs/search.md): the workspace's own HNSW index (from
-- tenancy.create_vector_index) when it has one; else an exact scan of the workspace's rows when
-- the table's statistics estimate at most 5,000 of them or, past that or without statistics, a
-- count through its B-tree, capped at 10,001 and remembered for a minute, finds at most 10,000;
-- else the shared HNSW index with iterative scan. HNSW scans run with ef_search raised and their
-- candidates re-ranked exactly; one that comes back with fewer than k rows falls back to the
-- exact scan in the same statement, so a workspace with n rows always yields min(k, n) rows.
CREATE FUNCTION tenancy.nearest(tbl anyelement, "column" name, query anycompatible,
                                k integer DEFAULT 10, metric text DEFAULT 'cosine')
RETURNS TABLE (item anyelement, distance double precision)
LANGUAGE c VOLATILE ROWS 10 AS 'MODULE_PATHNAME', 'tenancy_nearest';
-- In Rust (src/search/, the search layer): the checks, the strategy and the plans are kept per
-- backend between calls (a relcache invalidation of the table drops them), and its SQL runs under
-- search_path = pg_catalog, pg_temp with every name qualified.

-- Builds an HNSW index over the rows of one workspace (a partial index, WHERE workspace column =
-- workspace_id) for tenancy.nearest to use when that workspace searches, and returns it. For
-- the largest workspaces: their searches then walk a graph of their own rows only. Runs as the
-- caller, who must own the table; builds serially (max_parallel_maintenance_workers = 0:
-- CVE-2026-3172 affects parallel HNSW builds in pgvector <= 0.8.1) and in the caller's
-- transaction, holding a SHARE lock that blocks writes to the table until it commits (for a
-- non-blocking build run the statement tenancy.vector_index_ddl returns, with CONCURRENTLY).
-- Idempotent: an existing valid index for the same workspace, column and metric is returned.
-- A new index is calibrated at once (tenancy.calibrate_vector_index, sql/calibration.sql).
-- The defaults (m 16 as pgvector's, ef_construction 160, 2.5 times pgvector's) matter: one
-- workspace's rows form a few tight topics, and with ef_construction 64 the graph linked them
-- poorly (docs/benchmarks.md: recall@10 of a 36,000-row clustered workspace 0.988, one query at
-- 0, at any ef_search); 160 gives 1.000 at ef_search 40, and m 16 costs half the search time of
-- m 32 (672 against 496 buffers per search).
-- The index's predicate names the workspace id, and catalogs are readable by every role.
CREATE FUNCTION tenancy.create_vector_index(tbl regclass, "column" name, workspace_id text,
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
CREATE FUNCTION tenancy.vector_index_ddl(tbl regclass, "column" name, workspace_id text,
                                         metric text DEFAULT 'cosine', m integer DEFAULT 16,
                                         ef_construction integer DEFAULT 160, concurrent boolean DEFAULT true)
RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.array_to_string(
        tenancy._vector_index_statements(tbl, "column", workspace_id, metric, m, ef_construction, concurrent), ' ')
$$;

-- Automatic policy: gives every workspace with at least min_rows rows in tbl its own HNSW index
-- (tenancy.create_vector_index), skipping those that have one; returns the workspaces and
-- indexes made. The counts span workspaces, so the caller must own the table and bypass its
-- row-level security (a superuser or a BYPASSRLS owner, e.g. from a nightly job). The default
-- min_rows is tenancy.nearest's exact-scan threshold: above it, a workspace without an index of
-- its own falls to the shared index, whose filtered scan at 5-9% selectivity was no faster than
-- the exact scan in docs/benchmarks.md.
CREATE FUNCTION tenancy.create_vector_indexes(tbl regclass, "column" name, min_rows bigint DEFAULT 10000,
                                              metric text DEFAULT 'cosine')
RETURNS TABLE (workspace_id text, index regclass, row_count bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET max_parallel_maintenance_workers = 0 AS $$
DECLARE
    tgt record;
    big text[];
    counts bigint[];
BEGIN
    IF tbl IS NULL OR min_rows IS NULL THEN
        RAISE EXCEPTION 'table and min_rows must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM tenancy._require_owner(tbl);
    tgt := tenancy._vector_target((SELECT c.reltype FROM pg_class c WHERE c.oid OPERATOR(pg_catalog.=) tbl),
                                  "column", metric);
    IF row_security_active(tbl) THEN
        RAISE EXCEPTION 'counting rows per workspace of % needs a role that bypasses its row-level security', tbl
            USING ERRCODE = '42501',
                  HINT = 'Run it as a superuser or a BYPASSRLS role that owns the table, or name each workspace with tenancy.create_vector_index.';
    END IF;
    -- Counted first, then built: CREATE INDEX refuses a table an open cursor still reads.
    EXECUTE format('SELECT array_agg(s.ws ORDER BY s.n DESC, s.ws), array_agg(s.n ORDER BY s.n DESC, s.ws) '
                   '  FROM (SELECT t.%1$I::text AS ws, count(*) AS n FROM %2$s t WHERE t.%3$I IS NOT NULL '
                   '         GROUP BY 1 HAVING count(*) OPERATOR(pg_catalog.>=) %4$s) s',
                   tgt.workspace_column, tgt.rel_name, "column", min_rows) INTO big, counts;
    FOR i IN 1 .. coalesce(cardinality(big), 0) LOOP
        IF tenancy._vector_index_of(tbl, "column", metric, big[i]) IS NULL THEN
            workspace_id := big[i];
            row_count := counts[i];
            index := tenancy.create_vector_index(tbl, "column", big[i], metric);
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION tenancy.nearest(anyelement, name, anycompatible, integer, text),
                          tenancy.nearest_strategy(anyelement, name, text),
                          tenancy.create_vector_index(regclass, name, text, text, integer, integer),
                          tenancy.vector_index_ddl(regclass, name, text, text, integer, integer, boolean),
                          tenancy.create_vector_indexes(regclass, name, bigint, text) TO PUBLIC;
