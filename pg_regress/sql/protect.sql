-- Row-level security installed by tenancy.protect(): isolation between two workspaces for a
-- NOSUPERUSER NOBYPASSRLS application role, the planner's view of the policies, and the audit
-- views. Tokens of the fixture issuer (tests/fixtures/test-issuer-rsa.pem), valid until 2100.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_tenancy;
RESET client_min_messages;
SELECT tenancy.add_issuer('https://auth.test/user_management/client_TEST', '{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"k1","n":"8Yl5yx_FOqDUwvVt7_qahxF0iwnq50-TAtYGtMcJMIYBYEDy53v3HQMmUmAx5Zj0s278KJESOF7CWszOZHKAkRHFsoAAtkG9HI9c6EuwRppqfS1UWLP-6arE465fQvrHqwFvp-PxeGbOmn4MdZdU36kxC3sk3YIxw--mi6NNJudbu5OIrQT3hUQBSf3w682Ld6y66ugVy3P_eZGIkMAgJwB-jyYK4Y0xiiFxnpVh1uWvvuHeIyAv2oQWd_4h2JiNWuGdP3UMQ1PxVYQWOJJbGDy6tNebJZ2da6b3KbFtpcaWwdnxvvW3EmNkCDgWDhLTp95P4SMb2qB19wY5BBXzTQ","e":"AQAB"}]}'::jsonb);
INSERT INTO tenancy.workspaces (workspace_id, organization_id, name) VALUES
    ('ws_acme', 'org_acme', 'Acme'), ('ws_globex', 'org_globex', 'Globex');
INSERT INTO tenancy.members (workspace_id, user_id, role) VALUES
    ('ws_acme', 'user_alice', NULL), ('ws_acme', 'user_mallory', NULL), ('ws_globex', 'user_bob', 'owner');
-- alice and mallory: ws_acme, permissions {documents:read} and none; bob: ws_globex, {documents:read,documents:write}.
\set alice 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2FsaWNlIiwib3JnX2lkIjoib3JnX2FjbWUiLCJyb2xlIjoibWVtYmVyIiwicGVybWlzc2lvbnMiOlsiZG9jdW1lbnRzOnJlYWQiXSwic2lkIjoic2Vzc2lvbl9hbGljZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.cLBn0qMHFkbZ47I1GLNOrsDRpigp0-lsB9AV62KkKNeO33oFfSEjej_bBHLSdtQnFMVxdybx8la8EkKO0h20DUk5Rta2l6vRWiu-mnZ9NXyVaQ90FPhi-G_c-IxwYNHx2tWVQDFC265VAui3iZk7HseUEatuWulAQ7w8tcSnrKi1Sxv316Gg3SL9R4ZsFWQUY86Cf-WzDiFnY1kKxOp2xtIPxtavOCOEQpSiuADlR7HLqUwfHr7XT4YIrk32GyWoCv_C5IjVJ-GCjuh8QfOeI0l9lzwUOoYZEiOu7IXI3DibNibcMYT7iOSnJKoYp_jwmrB3ZLM90UYLN8Koem1JHQ'
\set bob 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2JvYiIsIm9yZ19pZCI6Im9yZ19nbG9iZXgiLCJyb2xlIjoiYWRtaW4iLCJwZXJtaXNzaW9ucyI6WyJkb2N1bWVudHM6cmVhZCIsImRvY3VtZW50czp3cml0ZSJdLCJzaWQiOiJzZXNzaW9uX2JvYiIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.cp1KZRl3yFd-10f6h1VgDC2KafeAvtR2RZ7lllxK7AnRfiET_PUzDi3KcMa2q6A_QFfRN5bj_dUN6jDQ0hrWzg9oW_h48ZKAaRiV2_i7DDmqMrwI2p8f2oTM1_S6opJ0i9pDmgL03v5z9FsM-Ior33GK41zQdEFJI0G5tIczlq1yfYxezuDTcUDMUA6LlNus-7RARlVeoLFUDyyf-65vuPDLcjNnexXWhFYbfpm_nZNp1kePbbUYgP-oUf-_2U64AHa2mJmcJsYcim05p-A_fIgxqH01VXlKQzToGStdPXvCBVDugJYKNqKNrFjauV7VgEwlNRhppvGeO0NM7K43WQ'
\set mallory 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX21hbGxvcnkiLCJvcmdfaWQiOiJvcmdfYWNtZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.77YZkT9cGa4eToapsh0LJ3jpowXWDgJoSfcZQpikD4KsjlIQAH-cbemszIQOBp_VuwF2OKRs38AELuwuJvT7a8UhpI0TM3sa9zIzZYfBBCm58n7mtnHKISGxYmP4xmqzGLjEzmYQMBOBKtLM9BPZoPcqTC6LSHfr5nzeuKNX9LzBwtMYhya27ZO40oeG7ibChP_3hUUnboqxJAbqBn7voNKY7V9mg3L8UXmuy9-YZzo8dj9gnBiI6fug8_ffaP3F6RuwM4j4ggottF3eXxHSZ0N85AVN6SZ6dVcbroWV6pewFEL_mpXwvOwRKOdUdpLU4sZbKr0Z5hCxvcBq8Fbasg'
CREATE ROLE regress_owner NOLOGIN;
CREATE ROLE regress_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE regress_auditor NOLOGIN;
GRANT tenancy_auditor TO regress_auditor;
GRANT CREATE ON SCHEMA public TO regress_owner;
-- NOTICEs with every row it is shown: it must only ever see the caller's rows.
CREATE FUNCTION public.regress_leak(workspace text, title text) RETURNS boolean
LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
    RAISE NOTICE 'leak saw % %', workspace, title;
    RETURN true;
END
$$;

-- The owner creates a table: tenancy.auto_protect is off, so the guard names it.
SET ROLE regress_owner;
CREATE TABLE documents (id bigint PRIMARY KEY, workspace_id text NOT NULL, title text NOT NULL);
SELECT tenancy.protect('documents');
CREATE INDEX documents_workspace_idx ON documents (workspace_id);
GRANT SELECT, INSERT, UPDATE, DELETE ON documents TO regress_app;
RESET ROLE;
\d documents
INSERT INTO documents VALUES (1, 'ws_acme', 'acme plan'), (2, 'ws_acme', 'acme budget'),
                             (3, 'ws_globex', 'globex secret'), (4, 'ws_globex', 'globex payroll');

-- No token: an error (28000), never an empty result.
SET ROLE regress_app;
\set VERBOSITY terse
SELECT * FROM documents;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM documents;
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default

-- alice (ws_acme) sees and touches only ws_acme's rows.
SET tenancy.token = :'alice';
SELECT * FROM documents ORDER BY id;
SELECT * FROM documents WHERE workspace_id = 'ws_globex';
SELECT * FROM documents WHERE id = 3;
BEGIN;
UPDATE documents SET title = 'stolen' WHERE id IN (3, 4) RETURNING *;
UPDATE documents SET title = title || ' (edited)' RETURNING *;
DELETE FROM documents WHERE workspace_id = 'ws_globex' RETURNING *;
DELETE FROM documents RETURNING id;
ROLLBACK;
-- Writes cannot put or move a row into another workspace.
INSERT INTO documents VALUES (10, 'ws_globex', 'planted');
UPDATE documents SET workspace_id = 'ws_globex' WHERE id = 1;
-- The workspace column defaults to the caller's workspace.
BEGIN;
INSERT INTO documents (id, title) VALUES (10, 'defaulted') RETURNING *;
ROLLBACK;
-- An upsert aimed at another workspace's key fails; it never updates the foreign row.
INSERT INTO documents (id, title) VALUES (3, 'hijack') ON CONFLICT (id) DO UPDATE SET title = excluded.title;
INSERT INTO documents (id, title) VALUES (3, 'hijack') ON CONFLICT (id) DO NOTHING RETURNING *;
-- MERGE matches only the caller's rows (a foreign key is "not matched") and inserts into the
-- caller's workspace; views and SQL functions over the table see the same rows.
BEGIN;
MERGE INTO documents d USING (VALUES (1, 'acme plan (merged)'), (4, 'globex payroll (merged)'), (11, 'new')) v(id, title)
   ON d.id = v.id
 WHEN MATCHED THEN UPDATE SET title = v.title
 WHEN NOT MATCHED AND v.id <> 4 THEN INSERT (id, title) VALUES (v.id, v.title);
SELECT * FROM documents ORDER BY id;
ROLLBACK;
CREATE TEMP VIEW my_documents WITH (security_invoker) AS SELECT id, workspace_id FROM documents;
CREATE FUNCTION pg_temp.document_count() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT count(*) FROM documents';
SELECT count(*), min(workspace_id), max(workspace_id), pg_temp.document_count() FROM my_documents;
DROP VIEW my_documents;
DROP FUNCTION pg_temp.document_count();
-- INSERT … SELECT copies only what the caller can see.
BEGIN;
INSERT INTO documents (id, title) SELECT id + 100, title || ' (copy)' FROM documents RETURNING *;
ROLLBACK;
COPY documents TO STDOUT;
COPY (SELECT id, title FROM documents ORDER BY id) TO STDOUT;
-- A leaky function in WHERE is shown only the caller's rows (the policy is a security barrier).
SELECT id FROM documents WHERE regress_leak(workspace_id, title) ORDER BY id;
-- Joins, CTEs and subqueries all see the same workspace.
SELECT a.id, b.id FROM documents a JOIN documents b ON a.id < b.id ORDER BY 1, 2;
WITH everything AS (SELECT * FROM documents) SELECT count(*), min(workspace_id), max(workspace_id) FROM everything;
WITH moved AS (UPDATE documents SET title = 'x' WHERE id = 3 RETURNING id) SELECT count(*) FROM moved;
SELECT (SELECT count(*) FROM documents) AS visible, EXISTS (SELECT FROM documents WHERE id = 4) AS sees_4;
-- A cursor walks the caller's rows; WHERE CURRENT OF updates only those.
BEGIN;
DECLARE cur CURSOR FOR SELECT id, title FROM documents ORDER BY id FOR UPDATE;
FETCH cur;
UPDATE documents SET title = 'acme plan v2' WHERE CURRENT OF cur RETURNING *;
FETCH ALL cur;
ROLLBACK;

-- The plan: with a session-level token the identity is a constant in the plan, as a literal
-- WHERE would be, and the workspace index is used.
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM documents;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM documents WHERE title = 'acme plan';
-- With SET LOCAL (a pooler's pattern) it is a parameter of the plan, computed once per statement
-- when first needed, so that one cached plan serves every transaction's identity. PostgreSQL
-- plans it as an initPlan; pg_tenancy runs it without one (and with the initPlan when
-- tenancy.identity_parameters is off).
BEGIN;
SELECT set_config('tenancy.token', :'alice', true) IS NOT NULL AS signed_in;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM documents;
RESET ROLE;
SET LOCAL tenancy.identity_parameters = off;
SET ROLE regress_app;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM documents;
-- An identity call whose argument changes from row to row stays a call, in either case.
SELECT count(*) FROM documents WHERE tenancy.has_permission(title);
COMMIT;
SELECT count(*) FROM documents WHERE tenancy.has_permission(title);
RESET enable_seqscan;
RESET enable_bitmapscan;

-- Prepared statements follow an identity change, with custom and generic plans.
PREPARE mine AS SELECT id, workspace_id FROM documents ORDER BY id;
EXECUTE mine;
SET tenancy.token = :'bob';
EXECUTE mine;
SET plan_cache_mode = force_generic_plan;
PREPARE one(bigint) AS SELECT id, workspace_id, title FROM documents WHERE id = $1;
EXECUTE one(3);
EXECUTE one(1);
SET tenancy.token = :'alice';
EXECUTE one(3);
EXECUTE one(1);
EXECUTE mine;
RESET plan_cache_mode;
DEALLOCATE mine;
DEALLOCATE one;

-- Forced parallel plans: the workers see the constant and only the caller's rows.
-- force_parallel_mode was renamed debug_parallel_query in PostgreSQL 16.
SELECT CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END AS parallel_guc \gset
SET :parallel_guc = on;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET enable_indexscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT count(*), min(workspace_id), max(workspace_id) FROM documents;
SELECT count(*), min(workspace_id), max(workspace_id) FROM documents;
SELECT id, title FROM documents ORDER BY id;
RESET :parallel_guc;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
RESET enable_indexscan;
RESET enable_bitmapscan;
RESET tenancy.token;
RESET ROLE;

-- The owner is filtered too (FORCE): without a token it gets an error, with one its workspace.
SET ROLE regress_owner;
\set VERBOSITY terse
SELECT count(*) FROM documents;
\set VERBOSITY default
SET tenancy.token = :'bob';
SELECT * FROM documents ORDER BY id;
RESET tenancy.token;
RESET ROLE;
-- A superuser bypasses row-level security altogether (hence the coverage finding for login superusers).
SELECT count(*) FROM documents;

-- Per-user rows (chat history): workspace and user must both match.
SET ROLE regress_owner;
CREATE TABLE chat_messages (workspace_id text NOT NULL, user_id text NOT NULL, id bigint NOT NULL,
                            body text, PRIMARY KEY (workspace_id, id));
CREATE INDEX ON chat_messages (workspace_id, user_id);
SELECT tenancy.protect('chat_messages', user_column => 'user_id');
GRANT SELECT, INSERT, UPDATE, DELETE ON chat_messages TO regress_app;
RESET ROLE;
INSERT INTO chat_messages VALUES ('ws_acme', 'user_alice', 1, 'alice: hi'), ('ws_acme', 'user_mallory', 2, 'mallory: hi'),
                                 ('ws_globex', 'user_bob', 3, 'bob: hi');
SET ROLE regress_app;
SET tenancy.token = :'alice';
SELECT * FROM chat_messages ORDER BY id;
INSERT INTO chat_messages (user_id, id, body) VALUES ('user_mallory', 4, 'as mallory');
INSERT INTO chat_messages (user_id, id, body) VALUES (tenancy.user_id(), 4, 'alice again') RETURNING *;
SET tenancy.token = :'mallory';
SELECT * FROM chat_messages ORDER BY id;
UPDATE chat_messages SET body = 'edited' WHERE id = 1;
SET tenancy.token = :'bob';
SELECT * FROM chat_messages ORDER BY id;
RESET tenancy.token;
RESET ROLE;

-- write_permission: reading needs a workspace, writing also documents:write.
SET ROLE regress_owner;
CREATE TABLE notes (workspace_id text NOT NULL, id bigint NOT NULL, body text, PRIMARY KEY (workspace_id, id));
SELECT tenancy.protect('notes', write_permission => 'documents:write');
GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO regress_app;
RESET ROLE;
INSERT INTO notes VALUES ('ws_acme', 1, 'acme note'), ('ws_globex', 2, 'globex note');
SELECT policyname, permissive, cmd, qual, with_check FROM pg_policies WHERE tablename = 'notes' ORDER BY policyname;
SET ROLE regress_app;
SET tenancy.token = :'alice';
SELECT * FROM notes ORDER BY id;
INSERT INTO notes (id, body) VALUES (3, 'no permission');
UPDATE notes SET body = 'no permission' RETURNING *;
DELETE FROM notes RETURNING *;
SET tenancy.token = :'bob';
BEGIN;
INSERT INTO notes (id, body) VALUES (3, 'bob may write') RETURNING *;
UPDATE notes SET body = body || ' (edited)' RETURNING *;
DELETE FROM notes RETURNING *;
ROLLBACK;
RESET tenancy.token;
RESET ROLE;

-- Bigint and uuid workspace columns: the same tokens, with the organizations remapped to numeric
-- and uuid workspace ids. The policy casts the identity, never the column, so the index is usable.
DELETE FROM tenancy.workspaces;
INSERT INTO tenancy.workspaces (workspace_id, organization_id) VALUES ('1001', 'org_acme'), ('1002', 'org_globex');
INSERT INTO tenancy.members (workspace_id, user_id) VALUES ('1001', 'user_alice'), ('1002', 'user_bob');
-- A partitioned table: protect covers the parent and every partition.
SET ROLE regress_owner;
CREATE TABLE events (workspace_id bigint NOT NULL, id bigint NOT NULL, kind text,
                     PRIMARY KEY (workspace_id, id)) PARTITION BY LIST (workspace_id);
CREATE TABLE events_1001 PARTITION OF events FOR VALUES IN (1001);
CREATE TABLE events_1002 PARTITION OF events FOR VALUES IN (1002);
SELECT tenancy.protect('events');
GRANT SELECT, INSERT ON events, events_1001, events_1002 TO regress_app;
RESET ROLE;
INSERT INTO events VALUES (1001, 1, 'login'), (1001, 2, 'upload'), (1002, 3, 'login');
SET ROLE regress_app;
SET tenancy.token = :'bob';
SELECT * FROM events ORDER BY id;
SELECT * FROM events_1001;
INSERT INTO events (id, kind) VALUES (4, 'defaulted') RETURNING *;
INSERT INTO events VALUES (1001, 5, 'planted');
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM events WHERE id = 3;
RESET enable_seqscan;
RESET tenancy.token;
RESET ROLE;
-- A partition attached later is not protected by itself: reads through the parent are
-- filtered by the parent's policies, the partition read directly is not. Coverage names it;
-- protect on the parent again (idempotent) covers it.
CREATE TABLE events_1003 (LIKE events INCLUDING DEFAULTS);
ALTER TABLE events_1003 OWNER TO regress_owner;
ALTER TABLE events ATTACH PARTITION events_1003 FOR VALUES IN (1003);
SELECT severity, finding, object, fix FROM tenancy.coverage WHERE object LIKE 'public.events%' ORDER BY 1, 2, 3;
SET ROLE regress_owner;
SELECT tenancy.protect('events');
RESET ROLE;
SELECT table_name, partition_of, rls_enabled, rls_forced, policies_intact, index_present
  FROM tenancy.protected_tables WHERE table_name LIKE 'events%' ORDER BY 1;

-- uuid
DELETE FROM tenancy.workspaces;
INSERT INTO tenancy.workspaces (workspace_id, organization_id) VALUES
    ('6f1c2a8e-0000-4000-8000-000000000001', 'org_acme'), ('6f1c2a8e-0000-4000-8000-000000000002', 'org_globex');
INSERT INTO tenancy.members (workspace_id, user_id) VALUES
    ('6f1c2a8e-0000-4000-8000-000000000001', 'user_alice'), ('6f1c2a8e-0000-4000-8000-000000000002', 'user_bob');
SET ROLE regress_owner;
CREATE TABLE files (workspace_id uuid NOT NULL, id bigint NOT NULL, name text, PRIMARY KEY (workspace_id, id));
SELECT tenancy.protect('files');
GRANT SELECT, INSERT ON files TO regress_app;
RESET ROLE;
INSERT INTO files VALUES ('6f1c2a8e-0000-4000-8000-000000000001', 1, 'a.pdf'), ('6f1c2a8e-0000-4000-8000-000000000002', 2, 'b.pdf');
SET ROLE regress_app;
SET tenancy.token = :'alice';
SELECT * FROM files;
INSERT INTO files (id, name) VALUES (3, 'c.pdf') RETURNING *;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM files;
RESET enable_seqscan;
RESET tenancy.token;
RESET ROLE;
DELETE FROM tenancy.workspaces;
INSERT INTO tenancy.workspaces (workspace_id, organization_id, name) VALUES
    ('ws_acme', 'org_acme', 'Acme'), ('ws_globex', 'org_globex', 'Globex');
INSERT INTO tenancy.members (workspace_id, user_id, role) VALUES
    ('ws_acme', 'user_alice', NULL), ('ws_acme', 'user_mallory', NULL), ('ws_globex', 'user_bob', 'owner');

-- Idempotence: a second call writes nothing (no transaction id is even assigned).
SET ROLE regress_owner;
BEGIN;
SELECT tenancy.protect('documents');
SELECT tenancy.protect('chat_messages', user_column => 'user_id');
SELECT tenancy.protect('events');
SELECT pg_current_xact_id_if_assigned() IS NULL AS nothing_written;
COMMIT;
-- Other columns or settings re-install cleanly.
CREATE TABLE tickets (org text NOT NULL, owner_id text, id bigint NOT NULL, priority integer, PRIMARY KEY (org, id));
SELECT tenancy.protect('tickets', 'org', write_permission => 'documents:write');
SELECT policyname, permissive, cmd, qual, with_check FROM pg_policies WHERE tablename = 'tickets' ORDER BY policyname;
SELECT tenancy.protect('tickets', 'org', 'owner_id');
SELECT policyname, permissive, cmd, qual, with_check FROM pg_policies WHERE tablename = 'tickets' ORDER BY policyname;
SELECT workspace_column, user_column, write_permission FROM tenancy.protections WHERE table_name = 'tickets';

-- Bad inputs.
SELECT tenancy.protect('tickets');
\echo :LAST_ERROR_SQLSTATE
SELECT tenancy.protect('tickets', 'org', 'nope');
\echo :LAST_ERROR_SQLSTATE
SELECT tenancy.protect('tickets', 'priority');
\echo :LAST_ERROR_SQLSTATE
SELECT tenancy.protect('tickets', 'org', 'org');
\echo :LAST_ERROR_SQLSTATE
SELECT tenancy.protect('tickets', 'org', write_permission => 'write everything; --');
\echo :LAST_ERROR_SQLSTATE
SELECT tenancy.protect('tickets', NULL);
\echo :LAST_ERROR_SQLSTATE
CREATE VIEW ticket_view AS SELECT * FROM tickets;
SELECT tenancy.protect('ticket_view', 'org');
\echo :LAST_ERROR_SQLSTATE
DROP VIEW ticket_view;
RESET ROLE;
SET ROLE regress_app;
SELECT tenancy.protect('tickets', 'org');
\echo :LAST_ERROR_SQLSTATE
SELECT tenancy.unprotect('tickets');
\echo :LAST_ERROR_SQLSTATE
UPDATE tenancy.protections SET enabled_rls = false;
SELECT count(*) FROM tenancy.protections;
RESET ROLE;

-- unprotect removes exactly what protect added. tickets had RLS off and no default: both go;
-- legacy had RLS enabled (not forced) and its own default before protect: those stay.
SET ROLE regress_owner;
SELECT tenancy.unprotect('tickets');
SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'tickets';
SELECT count(*) AS policies FROM pg_policy WHERE polrelid = 'tickets'::regclass;
CREATE TABLE legacy (workspace_id text NOT NULL DEFAULT 'ws_acme', id bigint, PRIMARY KEY (workspace_id, id));
ALTER TABLE legacy ENABLE ROW LEVEL SECURITY;
SELECT tenancy.protect('legacy');
SELECT pg_get_expr(adbin, adrelid) AS protected_default FROM pg_attrdef WHERE adrelid = 'legacy'::regclass;
SELECT tenancy.unprotect('legacy');
SELECT pg_get_expr(adbin, adrelid) AS restored_default FROM pg_attrdef WHERE adrelid = 'legacy'::regclass;
SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'legacy';
SELECT tenancy.unprotect('legacy');
-- Renames and drops keep the registry in step.
SELECT tenancy.protect('legacy');
ALTER TABLE legacy RENAME TO legacy_renamed;
SELECT schema_name, table_name FROM tenancy.protections WHERE table_name LIKE 'legacy%';
DROP TABLE legacy_renamed, tickets;
SELECT count(*) FROM tenancy.protections WHERE table_name LIKE 'legacy%' OR table_name = 'tickets';
RESET ROLE;

-- The audit: protected tables, then every finding before and after the fixes.
ANALYZE documents, chat_messages, notes, events, files;
SELECT * FROM tenancy.protected_tables ORDER BY schema_name, table_name;
SET ROLE regress_owner;
CREATE TABLE leads (workspace_id text, email text);
CREATE TABLE settings (scope text PRIMARY KEY, theme text);
ALTER TABLE settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone ON documents USING (true);
CREATE VIEW document_titles AS SELECT id, title FROM documents;
CREATE FUNCTION count_documents() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS 'SELECT count(*) FROM documents';
GRANT TRUNCATE ON documents TO regress_app;
ALTER POLICY tenancy_workspace ON notes USING (true);
RESET ROLE;
CREATE ROLE regress_bypass LOGIN BYPASSRLS;
CREATE ROLE regress_migrator LOGIN IN ROLE regress_owner;
SELECT severity, finding, object, detail, fix FROM tenancy.coverage
 WHERE finding NOT IN ('role_bypasses_rls', 'audit_database_reachable') OR object LIKE 'regress%' ORDER BY 1, 2, 3;
-- The auditor reads both views; the application role reads neither.
SET ROLE regress_auditor;
SELECT count(*) > 0 AS sees_tables FROM tenancy.protected_tables;
SELECT count(*) > 0 AS sees_findings FROM tenancy.coverage;
RESET ROLE;
SET ROLE regress_app;
SELECT count(*) FROM tenancy.coverage;
SELECT count(*) FROM tenancy.protected_tables;
RESET ROLE;
-- Fixes.
SET ROLE regress_owner;
SELECT tenancy.protect('leads');
ALTER TABLE settings FORCE ROW LEVEL SECURITY;
DROP POLICY everyone ON documents;
ALTER VIEW document_titles SET (security_invoker = true);
ALTER FUNCTION count_documents() SECURITY INVOKER;
REVOKE TRUNCATE ON documents FROM regress_app;
SELECT tenancy.protect('notes', write_permission => 'documents:write');
ALTER TABLE documents DROP CONSTRAINT documents_pkey, ADD PRIMARY KEY (workspace_id, id);
ALTER TABLE leads ADD PRIMARY KEY (workspace_id, email);
RESET ROLE;
DROP ROLE regress_bypass;
DROP ROLE regress_migrator;
SELECT severity, finding, object, detail, fix FROM tenancy.coverage
 WHERE finding NOT IN ('role_bypasses_rls', 'audit_database_reachable') OR object LIKE 'regress%' ORDER BY 1, 2, 3;


-- tenancy.auto_protect (SUSET): new tables with the workspace column in the watched schemas are
-- protected as they are created; a partition of a protected table takes its parent's settings.
SET ROLE regress_owner;
SET tenancy.auto_protect = on;
RESET ROLE;
CREATE SCHEMA regress_auto AUTHORIZATION regress_owner;
CREATE SCHEMA regress_unwatched AUTHORIZATION regress_owner;
SET tenancy.auto_protect = on;
SET tenancy.auto_protect_schemas = 'public, regress_auto';
SET ROLE regress_owner;
CREATE TABLE regress_auto.memos (workspace_id text NOT NULL, body text);
CREATE TABLE regress_auto.memo_copy AS SELECT * FROM regress_auto.memos;
SELECT * INTO regress_auto.memo_into FROM regress_auto.memos;
CREATE TABLE regress_auto.threads (workspace_id text NOT NULL, author text NOT NULL, at int NOT NULL)
    PARTITION BY RANGE (at);
SELECT tenancy.protect('regress_auto.threads', user_column => 'author', write_permission => 'documents:write');
CREATE TABLE regress_auto.threads_1 PARTITION OF regress_auto.threads FOR VALUES FROM (0) TO (100);
CREATE TABLE regress_auto.no_tenant (id int);
CREATE TABLE regress_unwatched.elsewhere (workspace_id text);
-- A shard Citus creates on a worker (an internal connection) is left to its coordinator.
SET application_name = 'citus_internal gpid=10000000001';
CREATE TABLE regress_auto.memos_102008 (workspace_id text NOT NULL, body text);
RESET application_name;
RESET ROLE;
SELECT schema_name, table_name, user_column, write_permission, rls_enabled, rls_forced, policies_intact
  FROM tenancy.protected_tables WHERE schema_name LIKE 'regress%' ORDER BY 1, 2;
RESET tenancy.auto_protect;
RESET tenancy.auto_protect_schemas;
-- Off again: a new table in a watched schema (public by default) is named in a WARNING.
SET ROLE regress_owner;
CREATE TABLE later (workspace_id text);
DROP TABLE later;
RESET ROLE;
DROP SCHEMA regress_auto, regress_unwatched CASCADE;
-- Clean up.
DROP TABLE documents, chat_messages, notes, events, files, leads, settings CASCADE;
DROP FUNCTION count_documents(), regress_leak(text, text);
SELECT count(*) FROM tenancy.protections;
REVOKE CREATE ON SCHEMA public FROM regress_owner;
DROP EXTENSION pg_tenancy;
DROP ROLE regress_owner, regress_app, regress_auditor;
