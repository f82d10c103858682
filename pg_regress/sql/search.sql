-- Tenant-scoped vector search (sql/search.sql): tenancy.nearest returns min(k, n) rows of the
-- caller's workspace however small it is inside a large table, never another workspace's rows
-- (also for a role that bypasses row-level security), and refuses bad input with a clear error.
-- Tokens of the fixture issuer (tests/fixtures/test-issuer-rsa.pem), valid until 2100.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_tenancy;
CREATE EXTENSION IF NOT EXISTS vector;
RESET client_min_messages;
SELECT count(*) FROM (SELECT tenancy.add_issuer('https://auth.test/user_management/client_TEST', '{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"k1","n":"8Yl5yx_FOqDUwvVt7_qahxF0iwnq50-TAtYGtMcJMIYBYEDy53v3HQMmUmAx5Zj0s278KJESOF7CWszOZHKAkRHFsoAAtkG9HI9c6EuwRppqfS1UWLP-6arE465fQvrHqwFvp-PxeGbOmn4MdZdU36kxC3sk3YIxw--mi6NNJudbu5OIrQT3hUQBSf3w682Ld6y66ugVy3P_eZGIkMAgJwB-jyYK4Y0xiiFxnpVh1uWvvuHeIyAv2oQWd_4h2JiNWuGdP3UMQ1PxVYQWOJJbGDy6tNebJZ2da6b3KbFtpcaWwdnxvvW3EmNkCDgWDhLTp95P4SMb2qB19wY5BBXzTQ","e":"AQAB"}]}'::jsonb)
                       WHERE NOT EXISTS (SELECT FROM tenancy.issuers WHERE issuer = 'https://auth.test/user_management/client_TEST')) s;
INSERT INTO tenancy.workspaces (workspace_id, organization_id, name) VALUES
    ('ws_acme', 'org_acme', 'Acme'), ('ws_globex', 'org_globex', 'Globex') ON CONFLICT DO NOTHING;
INSERT INTO tenancy.members (workspace_id, user_id, role) VALUES
    ('ws_acme', 'user_alice', NULL), ('ws_acme', 'user_mallory', NULL), ('ws_globex', 'user_bob', 'owner')
    ON CONFLICT DO NOTHING;
-- alice and mallory: ws_acme; bob: ws_globex.
\set alice 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2FsaWNlIiwib3JnX2lkIjoib3JnX2FjbWUiLCJyb2xlIjoibWVtYmVyIiwicGVybWlzc2lvbnMiOlsiZG9jdW1lbnRzOnJlYWQiXSwic2lkIjoic2Vzc2lvbl9hbGljZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.cLBn0qMHFkbZ47I1GLNOrsDRpigp0-lsB9AV62KkKNeO33oFfSEjej_bBHLSdtQnFMVxdybx8la8EkKO0h20DUk5Rta2l6vRWiu-mnZ9NXyVaQ90FPhi-G_c-IxwYNHx2tWVQDFC265VAui3iZk7HseUEatuWulAQ7w8tcSnrKi1Sxv316Gg3SL9R4ZsFWQUY86Cf-WzDiFnY1kKxOp2xtIPxtavOCOEQpSiuADlR7HLqUwfHr7XT4YIrk32GyWoCv_C5IjVJ-GCjuh8QfOeI0l9lzwUOoYZEiOu7IXI3DibNibcMYT7iOSnJKoYp_jwmrB3ZLM90UYLN8Koem1JHQ'
\set bob 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2JvYiIsIm9yZ19pZCI6Im9yZ19nbG9iZXgiLCJyb2xlIjoiYWRtaW4iLCJwZXJtaXNzaW9ucyI6WyJkb2N1bWVudHM6cmVhZCIsImRvY3VtZW50czp3cml0ZSJdLCJzaWQiOiJzZXNzaW9uX2JvYiIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.cp1KZRl3yFd-10f6h1VgDC2KafeAvtR2RZ7lllxK7AnRfiET_PUzDi3KcMa2q6A_QFfRN5bj_dUN6jDQ0hrWzg9oW_h48ZKAaRiV2_i7DDmqMrwI2p8f2oTM1_S6opJ0i9pDmgL03v5z9FsM-Ior33GK41zQdEFJI0G5tIczlq1yfYxezuDTcUDMUA6LlNus-7RARlVeoLFUDyyf-65vuPDLcjNnexXWhFYbfpm_nZNp1kePbbUYgP-oUf-_2U64AHa2mJmcJsYcim05p-A_fIgxqH01VXlKQzToGStdPXvCBVDugJYKNqKNrFjauV7VgEwlNRhppvGeO0NM7K43WQ'
\set mallory 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX21hbGxvcnkiLCJvcmdfaWQiOiJvcmdfYWNtZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.77YZkT9cGa4eToapsh0LJ3jpowXWDgJoSfcZQpikD4KsjlIQAH-cbemszIQOBp_VuwF2OKRs38AELuwuJvT7a8UhpI0TM3sa9zIzZYfBBCm58n7mtnHKISGxYmP4xmqzGLjEzmYQMBOBKtLM9BPZoPcqTC6LSHfr5nzeuKNX9LzBwtMYhya27ZO40oeG7ibChP_3hUUnboqxJAbqBn7voNKY7V9mg3L8UXmuy9-YZzo8dj9gnBiI6fug8_ffaP3F6RuwM4j4ggottF3eXxHSZ0N85AVN6SZ6dVcbroWV6pewFEL_mpXwvOwRKOdUdpLU4sZbKr0Z5hCxvcBq8Fbasg'
CREATE ROLE regress_search_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE regress_search_bypass NOLOGIN NOSUPERUSER BYPASSRLS;

-- One table: ws_globex has 12,000 rows (more than the exact-scan threshold), ws_acme 3 rows
-- pointing elsewhere. HNSW built serially (CVE-2026-3172).
SET client_min_messages = error;  -- the guard's warnings about unprotected tables belong to protect.sql
CREATE TABLE search_docs (id int PRIMARY KEY, workspace_id text NOT NULL, title text NOT NULL,
                          embedding vector(3), note text);
INSERT INTO search_docs
SELECT i, 'ws_globex', 'globex ' || i, format('[%s,%s,%s]', 1 + (i % 100) / 100.0, (i / 100) / 120.0, 0.5)::vector
  FROM generate_series(1, 12000) i;
INSERT INTO search_docs VALUES (20001, 'ws_acme', 'acme plan', '[0,0,1]'), (20002, 'ws_acme', 'acme budget', '[0,0.1,1]'),
                               (20003, 'ws_acme', 'acme memo', '[0.2,0,1]'), (20004, 'ws_acme', 'acme draft', NULL);
CREATE INDEX ON search_docs (workspace_id);
SET max_parallel_maintenance_workers = 0;
CREATE INDEX search_docs_hnsw ON search_docs USING hnsw (embedding vector_cosine_ops);
RESET max_parallel_maintenance_workers;
SELECT tenancy.protect('search_docs');
ANALYZE search_docs;
GRANT SELECT ON search_docs TO regress_search_app, regress_search_bypass;
-- A table shared by nobody: each user sees only their own notes.
CREATE TABLE search_notes (id int PRIMARY KEY, workspace_id text NOT NULL, user_id text NOT NULL, embedding vector(3));
INSERT INTO search_notes VALUES (1, 'ws_acme', 'user_alice', '[1,0,0]'), (2, 'ws_acme', 'user_mallory', '[1,0,0]'),
                                (3, 'ws_acme', 'user_alice', '[0,1,0]'), (4, 'ws_globex', 'user_bob', '[1,0,0]');
CREATE INDEX ON search_notes (workspace_id, user_id);
SELECT tenancy.protect('search_notes', user_column => 'user_id');
GRANT SELECT ON search_notes TO regress_search_app, regress_search_bypass;
CREATE TABLE search_plain (id int PRIMARY KEY, workspace_id text, embedding vector(3));
GRANT SELECT ON search_plain TO regress_search_app;
RESET client_min_messages;
-- SQLSTATE and message of a statement, for the error cases.
CREATE FUNCTION public.regress_search_try(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN format('%s: %s', SQLSTATE, SQLERRM);
END
$$;

-- A tiny workspace inside a large table: plain SQL may not use the HNSW index shared by every
-- workspace (it would find none of acme's rows: iterative scan off, ef_search 40), so it gets the
-- exact scan and all three rows; with tenancy.shared_vector_indexes on it goes through the shared
-- index and finds none. tenancy.nearest returns all three (the row with a NULL embedding is not a
-- neighbour), nearest first, as whole rows.
SET ROLE regress_search_app;
BEGIN;
SELECT set_config('tenancy.token', :'alice', true) IS NOT NULL AS signed_in;
SELECT count(*) AS plain_sql_rows FROM (SELECT id FROM search_docs ORDER BY embedding <=> '[1,0.5,0.5]' LIMIT 10) s;
SET LOCAL tenancy.shared_vector_indexes = on;
SELECT count(*) AS through_shared_index FROM (SELECT id FROM search_docs ORDER BY embedding <=> '[1,0.5,0.5]' LIMIT 10) s;
RESET tenancy.shared_vector_indexes;
SELECT tenancy.nearest_strategy(NULL::search_docs, 'embedding');
SELECT (n.item).id, (n.item).title, round(n.distance::numeric, 4) AS distance
  FROM tenancy.nearest(NULL::search_docs, 'embedding', '[1,0.5,0.5]'::vector, 10) n ORDER BY n.distance;
-- The whole row, as an ORM maps it, with k and the metric by name.
SELECT (n.item).*, round(n.distance::numeric, 4) AS distance
  FROM tenancy.nearest(NULL::search_docs, 'embedding', '[0,0,1]'::vector, k => 2, metric => 'l2') n ORDER BY n.distance;
SELECT (n.item).id, round(n.distance::numeric, 4) AS distance
  FROM tenancy.nearest(NULL::search_docs, 'embedding', '[0,0,1]'::vector, 1, 'inner_product') n;
-- A text literal and a real[] are cast to the column's type.
SELECT count(*) FROM tenancy.nearest(NULL::search_docs, 'embedding', '[0,0,1]', 10);
SELECT count(*) FROM tenancy.nearest(NULL::search_docs, 'embedding', ARRAY[0,0,1]::real[], 10);
COMMIT;

-- A large workspace goes through HNSW (iterative scan, re-ranked): k rows, all its own, and
-- the caller's HNSW settings are left as they were.
BEGIN;
SELECT set_config('tenancy.token', :'bob', true) IS NOT NULL AS signed_in;
SELECT tenancy.nearest_strategy(NULL::search_docs, 'embedding');
SELECT count(*) AS rows, bool_and((n.item).workspace_id = 'ws_globex') AS all_own
  FROM tenancy.nearest(NULL::search_docs, 'embedding', '[0,0,1]'::vector, 10) n;
SELECT count(*) AS rows, bool_and((n.item).workspace_id = 'ws_globex') AS all_own
  FROM tenancy.nearest(NULL::search_docs, 'embedding', '[1.5,0.5,0.5]'::vector, 500) n;
SELECT current_setting('hnsw.ef_search') AS ef_search, current_setting('hnsw.iterative_scan') AS iterative_scan;
-- Plain SQL on the protected table stays inside the workspace too (recall aside).
SELECT bool_and(workspace_id = 'ws_globex') AS plain_all_own
  FROM (SELECT workspace_id FROM search_docs ORDER BY embedding <=> '[0,0,1]' LIMIT 10) s;
COMMIT;
RESET ROLE;

-- A role that bypasses row-level security, and a superuser, still get only their workspace.
SET ROLE regress_search_bypass;
BEGIN;
SELECT set_config('tenancy.token', :'alice', true) IS NOT NULL AS signed_in;
SELECT count(*) AS visible_rows FROM search_docs;
SELECT (n.item).id, (n.item).workspace_id FROM tenancy.nearest(NULL::search_docs, 'embedding', '[1,0.5,0.5]'::vector, 10) n
 ORDER BY n.distance;
SELECT (n.item).id, (n.item).user_id FROM tenancy.nearest(NULL::search_notes, 'embedding', '[1,0,0]'::vector, 10) n
 ORDER BY n.distance;
COMMIT;
RESET ROLE;
BEGIN;
SELECT set_config('tenancy.token', :'bob', true) IS NOT NULL AS signed_in;
SELECT count(*) AS rows, bool_and((n.item).workspace_id = 'ws_globex') AS all_own
  FROM tenancy.nearest(NULL::search_docs, 'embedding', '[0,0,1]'::vector, 10) n;
COMMIT;

-- A user-scoped table: mallory shares alice's workspace but sees only her own note.
SET ROLE regress_search_app;
BEGIN;
SELECT set_config('tenancy.token', :'mallory', true) IS NOT NULL AS signed_in;
SELECT (n.item).id, (n.item).user_id FROM tenancy.nearest(NULL::search_notes, 'embedding', '[1,0,0]'::vector, 10) n;
COMMIT;

-- Bad input: a clear error each (the token is set for the session here, so that each error
-- ends only its own statement).
SELECT set_config('tenancy.token', :'alice', false) IS NOT NULL AS signed_in;
SELECT * FROM tenancy.nearest(NULL::search_docs, 'embedding', '[1,0]'::vector, 10);
SELECT * FROM tenancy.nearest(NULL::search_docs, 'embedding', NULL::vector, 10);
SELECT * FROM tenancy.nearest(NULL::search_docs, 'title', '[1,0,0]'::vector, 10);
SELECT * FROM tenancy.nearest(NULL::search_plain, 'embedding', '[1,0,0]'::vector, 10);
SELECT * FROM tenancy.nearest(NULL::search_docs, 'embedding', 1, 10);
SELECT statement, regress_search_try(statement) FROM (VALUES
    ($$SELECT tenancy.nearest(NULL::search_docs, 'embedding', '[1,0]'::vector, 10)$$),
    ($$SELECT tenancy.nearest(NULL::search_docs, 'embedding', NULL::vector, 10)$$),
    ($$SELECT tenancy.nearest(NULL::search_docs, 'embedding', '[1,0,0]'::vector, 0)$$),
    ($$SELECT tenancy.nearest(NULL::search_docs, 'embedding', '[1,0,0]'::vector, -5)$$),
    ($$SELECT tenancy.nearest(NULL::search_docs, 'embedding', '[1,0,0]'::vector, 1000000)$$),
    ($$SELECT tenancy.nearest(NULL::search_docs, 'embedding', '[1,0,0]'::vector, NULL)$$),
    ($$SELECT tenancy.nearest(NULL::search_docs, 'embedding', '[1,0,0]'::vector, 10, 'hamming')$$),
    ($$SELECT tenancy.nearest(NULL::search_docs, 'embedding', '[1,0,0]'::vector, 10, NULL)$$),
    ($$SELECT tenancy.nearest(NULL::search_docs, 'title', '[1,0,0]'::vector, 10)$$),
    ($$SELECT tenancy.nearest(NULL::search_docs, 'no_such_column', '[1,0,0]'::vector, 10)$$),
    ($$SELECT tenancy.nearest(NULL::search_docs, NULL, '[1,0,0]'::vector, 10)$$),
    ($$SELECT tenancy.nearest(NULL::search_plain, 'embedding', '[1,0,0]'::vector, 10)$$),
    ($$SELECT tenancy.nearest(NULL::int, 'embedding', '[1,0,0]'::vector, 10)$$),
    ($$SELECT tenancy.nearest(NULL::search_docs, 'embedding', 1, 10)$$),
    ($$SELECT tenancy.nearest(NULL::search_docs, 'embedding', 'not a vector', 10)$$)) t(statement);
-- Without an identity: 28000.
RESET tenancy.token;
SELECT left(regress_search_try($$SELECT tenancy.nearest(NULL::search_docs, 'embedding', '[1,0,0]'::vector, 10)$$), 5) AS sqlstate;
RESET ROLE;

-- Per-workspace HNSW indexes: only the owner builds them; nearest then uses globex's own.
SET ROLE regress_search_app;
SELECT tenancy.create_vector_index('search_docs', 'embedding', 'ws_globex');
RESET ROLE;
SELECT tenancy.vector_index_ddl('search_docs', 'embedding', 'ws_globex');
SELECT tenancy.create_vector_index('search_docs', 'embedding', 'ws_globex', m => 8, ef_construction => 16);
SELECT tenancy.create_vector_index('search_docs', 'embedding', 'ws_globex');
SELECT workspace_id, index, row_count FROM tenancy.create_vector_indexes('search_docs', 'embedding', 2);
SELECT indexrelid::regclass, pg_get_expr(indpred, indrelid) FROM pg_index
 WHERE indrelid = 'search_docs'::regclass AND indpred IS NOT NULL ORDER BY 1;
-- Both were calibrated as they were built (the timings vary; tests/client/tests/recall.rs checks
-- what nearest makes of them). Forgotten here, the indexes are searched as before calibration
-- existed, whatever this machine's timings.
SELECT index_name, workspace_id, rows_at_calibration, complete, jsonb_array_length(ladder) > 0 AS measured
  FROM tenancy.vector_indexes WHERE table_name = 'search_docs'::regclass ORDER BY 1;
DELETE FROM tenancy._vector_calibrations WHERE table_oid = 'search_docs'::regclass;
SELECT tenancy._search_caches_changed('search_docs'::regclass);
SELECT index_name, strategy FROM tenancy.vector_indexes WHERE table_name = 'search_docs'::regclass ORDER BY 1;
SET ROLE regress_search_app;
BEGIN;
SELECT set_config('tenancy.token', :'bob', true) IS NOT NULL AS signed_in;
SELECT tenancy.nearest_strategy(NULL::search_docs, 'embedding');
SELECT count(*) AS rows, bool_and((n.item).workspace_id = 'ws_globex') AS all_own
  FROM tenancy.nearest(NULL::search_docs, 'embedding', '[1.2,0.3,0.5]'::vector, 10) n;
COMMIT;
-- acme's own index (made above, threshold 2) holds 3 rows: fewer than k, so the same statement
-- answers with the exact scan; all three, nearest first.
BEGIN;
SELECT set_config('tenancy.token', :'alice', true) IS NOT NULL AS signed_in;
SELECT tenancy.nearest_strategy(NULL::search_docs, 'embedding');
SELECT (n.item).id, round(n.distance::numeric, 4) AS distance
  FROM tenancy.nearest(NULL::search_docs, 'embedding', '[1,0.5,0.5]'::vector, 10) n;
COMMIT;
RESET ROLE;

-- Clean up.
DROP TABLE search_docs, search_notes, search_plain;
DROP FUNCTION regress_search_try(text);
DROP EXTENSION pg_tenancy;
DROP ROLE regress_search_app, regress_search_bypass;
