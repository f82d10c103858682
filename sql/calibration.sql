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
