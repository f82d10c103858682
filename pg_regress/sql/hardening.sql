-- Hardening (issue 31): held cursors cannot outlive a per-transaction identity; the protection
-- registry cannot be locked by PUBLIC (and the rename follower still follows); API keys end with
-- what made them (the creating session, a bounded lifetime, the rotator's tie); org-less tokens and
-- NUL in claims are refused; identity().expires_at is NULL for a key without expiry.
-- Tokens of the fixture issuer (tests/fixtures/test-issuer-rsa.pem), valid until 2100. Key
-- secrets are kept in psql variables (\gset) and never printed.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_tenancy;
RESET client_min_messages;
SELECT count(*) FROM (SELECT tenancy.add_issuer('https://auth.test/user_management/client_TEST', '{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"k1","n":"8Yl5yx_FOqDUwvVt7_qahxF0iwnq50-TAtYGtMcJMIYBYEDy53v3HQMmUmAx5Zj0s278KJESOF7CWszOZHKAkRHFsoAAtkG9HI9c6EuwRppqfS1UWLP-6arE465fQvrHqwFvp-PxeGbOmn4MdZdU36kxC3sk3YIxw--mi6NNJudbu5OIrQT3hUQBSf3w682Ld6y66ugVy3P_eZGIkMAgJwB-jyYK4Y0xiiFxnpVh1uWvvuHeIyAv2oQWd_4h2JiNWuGdP3UMQ1PxVYQWOJJbGDy6tNebJZ2da6b3KbFtpcaWwdnxvvW3EmNkCDgWDhLTp95P4SMb2qB19wY5BBXzTQ","e":"AQAB"}]}'::jsonb)
                       WHERE NOT EXISTS (SELECT FROM tenancy.issuers WHERE issuer = 'https://auth.test/user_management/client_TEST')) s;
INSERT INTO tenancy.workspaces (workspace_id, organization_id, name) VALUES
    ('ws_acme', 'org_acme', 'Acme'), ('ws_globex', 'org_globex', 'Globex') ON CONFLICT DO NOTHING;
INSERT INTO tenancy.members (workspace_id, user_id, role) VALUES
    ('ws_acme', 'user_alice', NULL), ('ws_acme', 'user_kate', NULL), ('ws_acme', 'user_xavier', NULL)
    ON CONFLICT DO NOTHING;
-- All org_acme, role member, sid session_hard_<name>. alice: {documents:read}; kate and xavier:
-- {documents:read,api_keys:manage}; noorg: alice's claims without org_id; nul: sub "user_al\u0000ice".
\set alice 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2FsaWNlIiwib3JnX2lkIjoib3JnX2FjbWUiLCJyb2xlIjoibWVtYmVyIiwicGVybWlzc2lvbnMiOlsiZG9jdW1lbnRzOnJlYWQiXSwic2lkIjoic2Vzc2lvbl9oYXJkX2FsaWNlIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQxMDI0NDQ4MDB9.g_yQPGdVf54NXc7u5fc2ovFJXfJ6p1aDHLn0JSqpgaWI2N66Poka7pABF6zXuD6wUVHBiZl7QriN71qTlZOMnVdO7Emz9W0JZnXr4jjj7VlZ9SLHFJyDdGv5_RpVaeUfR_Jfg6pb9rkFqVi5kWUIz3FcK_OQhIVzDJV0bBJPlpBOGjKXI3qlRizkIGBqbDMh_8RAKwwhdHhV82gAINLmUUwO01fS9WBte3aTglS4bYeMcaPXcVnZRQSSgYXCR-c-paf5yXha_of9TlevD5P50SNkYAB8hXyvTwDbDWTAzO-xkcp0_RpKkUTOHl-HLIyUSSy3MaGKNYd_aoCbuy3LzQ'
\set kate 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2thdGUiLCJvcmdfaWQiOiJvcmdfYWNtZSIsInJvbGUiOiJtZW1iZXIiLCJwZXJtaXNzaW9ucyI6WyJkb2N1bWVudHM6cmVhZCIsImFwaV9rZXlzOm1hbmFnZSJdLCJzaWQiOiJzZXNzaW9uX2hhcmRfa2F0ZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.oxYLES8JuCLtCVafae-KJ-X08GkpvRxfkJ8Gug3rPibjRRHMhTMpjJIOgp81M-6ET7okY3ucAqz21Z8_1QfxyCRUPDNKkHZo3SXPH2yHfNs1t5yf0ib1YyLn4K8cGnZ2lvghUpRTBeKrQSD0UuxBd-u5KadTQ2XmQffhXHv2j1gu4Y08JaJ87zpwDoawc-JZ8M4oEjlgRNIfVdaDHOk92ZZRhaMp1Mrv3ppgHmRxEdumDH1KlYXqQIpeTlMUIx984_fK9zVPpjk4LROq6SymvP-q00p80ySyyEVUQpjjlGaBe_d-0nPck8ZRgxt4ADbUyYGa-5NO0FKWBwiwk-lLWA'
\set xavier 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX3hhdmllciIsIm9yZ19pZCI6Im9yZ19hY21lIiwicm9sZSI6Im1lbWJlciIsInBlcm1pc3Npb25zIjpbImRvY3VtZW50czpyZWFkIiwiYXBpX2tleXM6bWFuYWdlIl0sInNpZCI6InNlc3Npb25faGFyZF94YXZpZXIiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMH0.OsXmzx5DBiT4t_x_IK--IwYR2y4m6Q8lxr1y3q5ZnDgYjIDEoEYb3LtUUiTjkHsAyo8m4mYPIbzoayL-k5ikjKrTUfzujeGD_TSZwt-tlTBwdu0w3d31I2rDhBz1CgMSlC6ykqEYTSWEig1b8Ld3FujCF9GRCstqFtBeND3TxsyB3kO701ooPLfwODHFPB1uo8oZBEMmFshbKz6wj60RcNLtJkkh2y_88i6_fX-sofMukB6J5leCss_DclLOotcfpmoU4VoRRep71g6wqMldSQge916cN5fzWUzE0eGEOp3BbdT7-8LJ_GoqOqtYrBpANBqBB7EBZcRAYyAf-5O7cQ'
\set noorg 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2FsaWNlIiwicm9sZSI6Im1lbWJlciIsInBlcm1pc3Npb25zIjpbImRvY3VtZW50czpyZWFkIl0sInNpZCI6InNlc3Npb25faGFyZF9ub29yZyIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.1cfZyo1oDW16RQeOfEXG-dRH0Kp5FCiIzLor1Xr8w-ZQ6nY99Ex_kTfxCb4aJUenfZwY4ewhX9Tg47BetLIzOfMOYgz_YEnyr5DmwZ6lO7ypOmZBxy6UAteR0hAt2mWoO-eU-dSUR_3B7iyJSEfL4qL3wBbCeJnMVJj3LgOzV_gxxIDfn3nQOSMW7rUpkrRzQRBgQcl_WhJXL7YsRHI1RDGVWkM-WhdBR9A4NigS_EiXhIFHR6Gfq78sW5NSsDV5InOXHRvTCT4PzwREZLC9QovXHj9kcj9bfzkQ74fpAuDC2bi_ithJRhXq7nHAPSiJGHMAG4I2v2W2eCjgeD-hTw'
\set nul 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2FsXHUwMDAwaWNlIiwib3JnX2lkIjoib3JnX2FjbWUiLCJyb2xlIjoibWVtYmVyIiwicGVybWlzc2lvbnMiOlsiZG9jdW1lbnRzOnJlYWQiXSwic2lkIjoic2Vzc2lvbl9oYXJkX251bCIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.wrnsJ-JuuiqarZEanrya4nnfmoXKQNWIbbeshsxQ4prl4foDWOncjVQYZEkbE-1MO47JZHlknEXNKXqhmbLr3BYh_U1dpPmzWfKIylKEFQ_X8UwN7J8aCZB3Vnfk7Boc5rm1Z0KX45u9lu-VjlIaMjbdJ9tBPBA8v8xJYkzeoy8z8tz9H-MY3g0kSaSWv12WboY90XdCwpNZo0cQ2cBTDjQ72DDjIsWQNrhOjpdgx4C5YqZ6UddxS9owFMWIFTQsCcc0gdXnkMvY0o_dPA4ekW96qw596B3-GFZzlby0_WtWKdQkM7eaEZvXmHzr5WEwPHqbXF4smZhkQJpmB3iJpw'
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_hard_app') THEN
        CREATE ROLE regress_hard_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_hard_owner') THEN
        CREATE ROLE regress_hard_owner NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
END $$;
SET client_min_messages = error;  -- the guard's warnings about unprotected tables belong to protect.sql
CREATE TABLE hard_docs (id int PRIMARY KEY, workspace_id text NOT NULL, title text NOT NULL);
CREATE INDEX ON hard_docs (workspace_id);
SELECT tenancy.protect('hard_docs');
CREATE TABLE hard_plain (id int PRIMARY KEY);
RESET client_min_messages;
INSERT INTO hard_docs VALUES (1, 'ws_acme', 'acme plan'), (2, 'ws_acme', 'acme budget'), (3, 'ws_globex', 'globex secret');
INSERT INTO hard_plain SELECT generate_series(1, 5);
GRANT SELECT ON hard_docs, hard_plain TO regress_hard_app;
-- An administrator's key without expiry (no bound applies to administrators).
SELECT tenancy.create_api_key('ws_acme', 'hard admin key', permissions => '{documents:read}') AS admin_key \gset
SELECT length(tenancy.create_api_key('ws_acme', 'hard admin far key', expires_at => now() + interval '1000 days')) > 0 AS made;
SELECT name, expires_at IS NULL AS no_expiry, expires_at > now() + interval '999 days' AS far
  FROM tenancy.api_keys WHERE name LIKE 'hard admin%' ORDER BY name;

-- Held cursors. Declared first, the credential set for the transaction afterwards: the COMMIT
-- (which would materialize the cursor with the identity's rows and leave it on the connection)
-- is refused, the cursor closed, nothing left.
SET ROLE regress_hard_app;
BEGIN;
DECLARE c1 CURSOR WITH HOLD FOR SELECT id, workspace_id FROM hard_docs ORDER BY id;
SELECT set_config('tenancy.token', :'alice', true) IS NOT NULL AS signed_in;
COMMIT;
\echo :LAST_ERROR_SQLSTATE
FETCH 3 FROM c1;
SELECT count(*) AS open_cursors FROM pg_cursors;
-- The cursor read rows under the credential, which was then cleared before COMMIT: still refused.
BEGIN;
DECLARE c2 CURSOR WITH HOLD FOR SELECT id, workspace_id FROM hard_docs ORDER BY id;
SELECT set_config('tenancy.token', :'alice', true) IS NOT NULL AS signed_in;
FETCH 1 FROM c2;
SELECT set_config('tenancy.token', '', true) AS signed_out;
COMMIT;
\echo :LAST_ERROR_SQLSTATE
FETCH 3 FROM c2;
SELECT count(*) AS open_cursors FROM pg_cursors;
-- The credential set and cleared again inside PL/pgSQL (no statement of its own: only the
-- setting's assign hook sees it), the cursor fetched in between: still refused.
RESET ROLE;
CREATE FUNCTION hard_peek(tok text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r refcursor := 'c_peek'; rec record; x text;
BEGIN
    x := set_config('tenancy.token', tok, true);
    FETCH r INTO rec;
    x := set_config('tenancy.token', '', true);
    RETURN rec.title;
END $$;
GRANT EXECUTE ON FUNCTION hard_peek(text) TO regress_hard_app;
SET ROLE regress_hard_app;
BEGIN;
DECLARE c_peek CURSOR WITH HOLD FOR SELECT id, title FROM hard_docs ORDER BY id;
SELECT hard_peek(:'alice') IS NOT NULL AS fetched;
COMMIT;
FETCH ALL FROM c_peek;
SELECT count(*) AS held_cursors FROM pg_cursors;
RESET ROLE;
DROP FUNCTION hard_peek(text);
SET ROLE regress_hard_app;

-- Several transactions in one Query message: only the one that had the credential is refused
-- (the mark is the transaction's own, not shared by transactions that started together).
BEGIN \; SELECT set_config('tenancy.token', :'alice', true) IS NOT NULL AS signed_in \; COMMIT \; BEGIN \; DECLARE c_clean CURSOR WITH HOLD FOR SELECT id FROM hard_plain ORDER BY id \; COMMIT;
FETCH 2 FROM c_clean;
CLOSE c_clean;

-- The same with an API key for the transaction.
BEGIN;
DECLARE c3 CURSOR WITH HOLD FOR SELECT id, workspace_id FROM hard_docs ORDER BY id;
SELECT set_config('tenancy.api_key', :'admin_key', true) IS NOT NULL AS key_set;
COMMIT;
\echo :LAST_ERROR_SQLSTATE
FETCH 3 FROM c3;
SELECT count(*) AS open_cursors FROM pg_cursors;
-- Without any credential a held cursor works (over an unprotected table: a protected one would
-- raise 28000 without an identity).
BEGIN;
DECLARE c4 CURSOR WITH HOLD FOR SELECT id FROM hard_plain ORDER BY id;
COMMIT;
FETCH 3 FROM c4;
CLOSE c4;
-- A session-level identity belongs to the connection: its held cursor works.
SET tenancy.token = :'alice';
BEGIN;
DECLARE c5 CURSOR WITH HOLD FOR SELECT id, workspace_id FROM hard_docs ORDER BY id;
COMMIT;
FETCH 3 FROM c5;
CLOSE c5;
RESET tenancy.token;
SELECT count(*) AS open_cursors FROM pg_cursors;
RESET ROLE;

-- The protection registry: an ordinary role (owner of a schema) cannot lock it in a mode that
-- stalls other roles' DDL, nor update or delete its rows directly; protect() and unprotect()
-- still write its own row.
CREATE SCHEMA regress_hard AUTHORIZATION regress_hard_owner;
CREATE SCHEMA regress_hard_moved AUTHORIZATION regress_hard_owner;
SET ROLE regress_hard_owner;
BEGIN;
LOCK TABLE tenancy.protections IN ACCESS EXCLUSIVE MODE;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
LOCK TABLE tenancy.protections IN SHARE MODE;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
UPDATE tenancy.protections SET table_name = 'hijacked';
DELETE FROM tenancy.protections;
CREATE TABLE regress_hard.own (workspace_id text NOT NULL, id int NOT NULL, PRIMARY KEY (workspace_id, id));
SELECT tenancy.protect('regress_hard.own');
RESET ROLE;
SELECT schema_name, table_name, protected_by FROM tenancy.protections WHERE schema_name LIKE 'regress_hard%';
SET ROLE regress_hard_owner;
SELECT tenancy.unprotect('regress_hard.own');
RESET ROLE;
SELECT schema_name, table_name FROM tenancy.protections WHERE schema_name LIKE 'regress_hard%';
-- The rename follower: a protected table renamed, moved to another schema, and its schema
-- renamed keeps its registry row under each new name.
SET ROLE regress_hard_owner;
SELECT tenancy.protect('regress_hard.own');
ALTER TABLE regress_hard.own RENAME TO own_renamed;
RESET ROLE;
SELECT schema_name, table_name FROM tenancy.protections WHERE schema_name LIKE 'regress_hard%';
SET ROLE regress_hard_owner;
ALTER TABLE regress_hard.own_renamed SET SCHEMA regress_hard_moved;
RESET ROLE;
SELECT schema_name, table_name FROM tenancy.protections WHERE schema_name LIKE 'regress_hard%';
ALTER SCHEMA regress_hard_moved RENAME TO regress_hard_renamed;
SELECT schema_name, table_name FROM tenancy.protections WHERE schema_name LIKE 'regress_hard%';
SELECT schema_name, table_name, rls_enabled, rls_forced, policies_intact
  FROM tenancy.protected_tables WHERE schema_name LIKE 'regress_hard%';
SELECT count(*) AS findings FROM tenancy.coverage WHERE object LIKE 'regress_hard%';

-- API keys made by a member's token (api_keys:manage) end with it. kate makes two keys in her
-- transaction; without expires_at a key gets the longest lifetime (90 days), beyond it is refused.
SET SESSION AUTHORIZATION regress_hard_app;
BEGIN;
SELECT set_config('tenancy.token', :'kate', true) IS NOT NULL AS signed_in;
SELECT tenancy.create_api_key('ws_acme', 'kate long key', expires_at => now() + interval '100 days');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT set_config('tenancy.token', :'kate', true) IS NOT NULL AS signed_in;
SELECT tenancy.create_api_key('ws_acme', 'kate key', permissions => '{documents:read}') AS kate_key \gset
SELECT tenancy.create_api_key('ws_acme', 'kate shared key', permissions => '{documents:read}') AS shared_old \gset
SELECT length(tenancy.create_api_key('ws_acme', 'kate short key', expires_at => now() + interval '30 days')) > 0 AS made;
COMMIT;
-- A member cannot lift the bound itself.
SET tenancy.api_key_max_lifetime = 0;
RESET SESSION AUTHORIZATION;
SELECT name, created_by, expires_at BETWEEN now() + interval '89 days' AND now() + interval '91 days' AS ninety_days,
       expires_at BETWEEN now() + interval '29 days' AND now() + interval '31 days' AS thirty_days
  FROM tenancy.api_keys WHERE name LIKE 'kate%' ORDER BY name;
-- The key works, until kate's WorkOS session is revoked.
SET SESSION AUTHORIZATION regress_hard_app;
BEGIN;
SELECT set_config('tenancy.api_key', :'kate_key', true) IS NOT NULL AS key_set;
SELECT tenancy.workspace_id(), tenancy.permissions();
COMMIT;
RESET SESSION AUTHORIZATION;
SELECT tenancy.revoke_session('session_hard_kate');
SET SESSION AUTHORIZATION regress_hard_app;
BEGIN;
SELECT set_config('tenancy.api_key', :'kate_key', true) IS NOT NULL AS key_set;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
RESET SESSION AUTHORIZATION;
DELETE FROM tenancy.revoked_sessions WHERE sid = 'session_hard_kate';

-- An administrator lifts the bound with tenancy.api_key_max_lifetime = 0 (SUSET).
SET tenancy.api_key_max_lifetime = 0;
SET SESSION AUTHORIZATION regress_hard_app;
BEGIN;
SELECT set_config('tenancy.token', :'xavier', true) IS NOT NULL AS signed_in;
SELECT length(tenancy.create_api_key('ws_acme', 'xavier unbounded', expires_at => now() + interval '1000 days')) > 0 AS made;
SELECT length(tenancy.create_api_key('ws_acme', 'xavier unbounded none')) > 0 AS made;
COMMIT;
RESET SESSION AUTHORIZATION;
RESET tenancy.api_key_max_lifetime;
SELECT name, expires_at IS NULL AS no_expiry, expires_at > now() + interval '999 days' AS far
  FROM tenancy.api_keys WHERE name LIKE 'xavier%' ORDER BY name;

-- Rotation transfers the tie: xavier rotates kate's key (within his rights) and holds the new
-- secret, which is then tied to him, not to kate.
SELECT id AS shared_id FROM tenancy.api_keys WHERE name = 'kate shared key' \gset
SET SESSION AUTHORIZATION regress_hard_app;
BEGIN;
SELECT set_config('tenancy.token', :'xavier', true) IS NOT NULL AS signed_in;
SELECT tenancy.rotate_api_key(:'shared_id') AS shared_new \gset
COMMIT;
RESET SESSION AUTHORIZATION;
SELECT name, created_by, rotated_by FROM tenancy.api_keys WHERE name = 'kate shared key';
SET SESSION AUTHORIZATION regress_hard_app;
BEGIN;
SELECT set_config('tenancy.api_key', :'shared_new', true) IS NOT NULL AS key_set;
SELECT tenancy.workspace_id();
COMMIT;
-- kate disabled: the secret xavier holds still works.
RESET SESSION AUTHORIZATION;
UPDATE tenancy.members SET disabled_at = now() WHERE user_id = 'user_kate';
SET SESSION AUTHORIZATION regress_hard_app;
BEGIN;
SELECT set_config('tenancy.api_key', :'shared_new', true) IS NOT NULL AS key_set;
SELECT tenancy.workspace_id();
COMMIT;
RESET SESSION AUTHORIZATION;
UPDATE tenancy.members SET disabled_at = NULL WHERE user_id = 'user_kate';
-- xavier disabled: refused.
UPDATE tenancy.members SET disabled_at = now() WHERE user_id = 'user_xavier';
SET SESSION AUTHORIZATION regress_hard_app;
BEGIN;
SELECT set_config('tenancy.api_key', :'shared_new', true) IS NOT NULL AS key_set;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
RESET SESSION AUTHORIZATION;
UPDATE tenancy.members SET disabled_at = NULL WHERE user_id = 'user_xavier';

-- identity().expires_at of a key without expiry is NULL (not the epoch).
SET ROLE regress_hard_app;
BEGIN;
SELECT set_config('tenancy.api_key', :'admin_key', true) IS NOT NULL AS key_set;
SELECT workspace_id, role, permissions, session_id, expires_at IS NULL AS no_expiry FROM tenancy.identity();
COMMIT;

-- A verified token without org_id: refused unless its issuer allows users outside an
-- organization; then the user is known but there is no workspace.
SET tenancy.token = :'noorg';
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SELECT set_config('tenancy.token', :'noorg', true) IS NOT NULL AS signed_in;
ROLLBACK;
RESET ROLE;
UPDATE tenancy.issuers SET allow_no_organization = true WHERE issuer = 'https://auth.test/user_management/client_TEST';
SET ROLE regress_hard_app;
SET tenancy.token = :'noorg';
SELECT tenancy.user_id(), tenancy.role(), tenancy.permissions(), tenancy.has_permission('documents:read');
SELECT tenancy.workspace_id();
\echo :LAST_ERROR_SQLSTATE
-- Disallowed again while the token is set: every identity function refuses it.
RESET ROLE;
UPDATE tenancy.issuers SET allow_no_organization = false WHERE issuer = 'https://auth.test/user_management/client_TEST';
SET ROLE regress_hard_app;
SELECT tenancy.user_id();
\echo :LAST_ERROR_SQLSTATE
SELECT tenancy.role();
SELECT tenancy.permissions();
SELECT tenancy.has_permission('x');
SELECT tenancy.workspace_id();
RESET tenancy.token;
-- A signed token whose sub holds NUL is refused.
SET tenancy.token = :'nul';
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SELECT set_config('tenancy.token', :'nul', true) IS NOT NULL AS signed_in;
ROLLBACK;
RESET ROLE;

-- Attack rounds after the hardening (docs/security.md). A remembered default (text in the
-- registry, which the table's owner can write) is used only as one expression: statements in it
-- once ran as a superuser's unprotect (even behind a role switch: RESET ROLE inside them).
SET ROLE regress_hard_owner;
CREATE TABLE regress_hard.ledger (workspace_id text NOT NULL, amount int);
SELECT tenancy.protect('regress_hard.ledger') IS NULL AS protected;
UPDATE tenancy.protections SET set_default = true,
       previous_default = $$NULL; RESET ROLE; ALTER ROLE regress_hard_owner SUPERUSER; SELECT NULL$$
 WHERE schema_name = 'regress_hard' AND table_name = 'ledger';
RESET ROLE;
SELECT tenancy.unprotect('regress_hard.ledger') IS NULL AS unprotected;
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_hard_owner';
SELECT pg_get_expr(d.adbin, d.adrelid) AS default_left FROM pg_attrdef d WHERE d.adrelid = 'regress_hard.ledger'::regclass;
-- One expression is restored, as the owner.
SET ROLE regress_hard_owner;
SELECT tenancy.protect('regress_hard.ledger') IS NULL AS protected;
UPDATE tenancy.protections SET set_default = true, previous_default = $$'ws_' || 'acme'$$
 WHERE schema_name = 'regress_hard' AND table_name = 'ledger';
RESET ROLE;
SELECT tenancy.unprotect('regress_hard.ledger') IS NULL AS unprotected;
SELECT pg_get_expr(d.adbin, d.adrelid) AS default_restored FROM pg_attrdef d WHERE d.adrelid = 'regress_hard.ledger'::regclass;
SELECT tenancy._is_one_expression(e) AS one_expression, e
  FROM (VALUES ('NULL'), ($$'a' || 'b'$$), ('NULL); SELECT (1'), ('1; SELECT 2'), ('(SELECT 1)'),
               ('1 FROM pg_class'), ('/* 1'), ('1) UNION (SELECT 2')) v(e);
-- A registry row left behind (its table lost the policy and was renamed away) is never adopted by
-- a new table of that name: the superuser's protect writes a row of its own.
SET ROLE regress_hard_owner;
CREATE TABLE regress_hard.ledger2 (workspace_id text NOT NULL, amount int);
SELECT tenancy.protect('regress_hard.ledger2') IS NULL AS protected;
UPDATE tenancy.protections SET set_default = true, previous_default = $$regress_hard.planted()$$
 WHERE schema_name = 'regress_hard' AND table_name = 'ledger2';
DROP POLICY tenancy_workspace ON regress_hard.ledger2;
ALTER TABLE regress_hard.ledger2 RENAME TO ledger2_gone;
RESET ROLE;
SELECT table_name, set_default, previous_default FROM tenancy.protections
 WHERE schema_name = 'regress_hard' AND table_name = 'ledger2';
CREATE TABLE regress_hard.ledger2 (workspace_id text NOT NULL, amount int);
SELECT tenancy.protect('regress_hard.ledger2') IS NULL AS protected;
SELECT table_name, set_default, previous_default, protected_by FROM tenancy.protections
 WHERE schema_name = 'regress_hard' AND table_name = 'ledger2';
SELECT tenancy.unprotect('regress_hard.ledger2') IS NULL AS unprotected;
SELECT count(*) AS defaults_left FROM pg_attrdef d WHERE d.adrelid = 'regress_hard.ledger2'::regclass;
DROP TABLE regress_hard.ledger, regress_hard.ledger2, regress_hard.ledger2_gone;

-- New key material under a kept key id is a key change like a new id (F2): recorded as
-- issuer_keys_changed with "~k1".
SELECT tenancy.add_issuer('https://auth.test/hardening', '{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"k1","n":"8Yl5yx_FOqDUwvVt7_qahxF0iwnq50-TAtYGtMcJMIYBYEDy53v3HQMmUmAx5Zj0s278KJESOF7CWszOZHKAkRHFsoAAtkG9HI9c6EuwRppqfS1UWLP-6arE465fQvrHqwFvp-PxeGbOmn4MdZdU36kxC3sk3YIxw--mi6NNJudbu5OIrQT3hUQBSf3w682Ld6y66ugVy3P_eZGIkMAgJwB-jyYK4Y0xiiFxnpVh1uWvvuHeIyAv2oQWd_4h2JiNWuGdP3UMQ1PxVYQWOJJbGDy6tNebJZ2da6b3KbFtpcaWwdnxvvW3EmNkCDgWDhLTp95P4SMb2qB19wY5BBXzTQ","e":"AQAB"}]}'::jsonb) IS NULL AS trusted;
SELECT tenancy.set_jwks('https://auth.test/hardening', '{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"k1","n":"tCopPNEHa38Gq2ITqM6Dlx1CO0S-oP04iFumhw1Wo9nuyLEmLw7rw3Pc1beBE2K4zslsgQPfeUBc9VaN4fpJXY9ya8VM8fUlNjjr6wTfNY3iq6wB8MAxmXfylq9jSKKg2bOznkmvjPtwycyLb8PaKimTy0NzOM_dSE6Sy62V4gRH5yVALcCNNDKxZbP89qXksEUMatfgvMuVywTeEOaIZePTjxOzkoThLkQRy1zgnyXXFuUL8mVCsKWaijvoEJ8JLOqzJ8GflzwiBJHcJSih_jutMscKQEb3AcuS5bFA6HCTgUhF3OVAPX_UUtVLWT2KUwksHIf63orsdZMI1yp_Mw","e":"AQAB"}]}'::jsonb) IS NULL AS replaced;
SELECT reason, critical, iss, kid FROM tenancy.denials
 WHERE iss = 'https://auth.test/hardening' ORDER BY seq DESC LIMIT 1;
SELECT count(*) AS changes_before FROM tenancy.denials WHERE iss = 'https://auth.test/hardening' \gset
SELECT tenancy.set_jwks('https://auth.test/hardening', '{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"k1","n":"tCopPNEHa38Gq2ITqM6Dlx1CO0S-oP04iFumhw1Wo9nuyLEmLw7rw3Pc1beBE2K4zslsgQPfeUBc9VaN4fpJXY9ya8VM8fUlNjjr6wTfNY3iq6wB8MAxmXfylq9jSKKg2bOznkmvjPtwycyLb8PaKimTy0NzOM_dSE6Sy62V4gRH5yVALcCNNDKxZbP89qXksEUMatfgvMuVywTeEOaIZePTjxOzkoThLkQRy1zgnyXXFuUL8mVCsKWaijvoEJ8JLOqzJ8GflzwiBJHcJSih_jutMscKQEb3AcuS5bFA6HCTgUhF3OVAPX_UUtVLWT2KUwksHIf63orsdZMI1yp_Mw","e":"AQAB"}]}'::jsonb) IS NULL AS unchanged;
SELECT count(*) - :changes_before AS recorded_again FROM tenancy.denials WHERE iss = 'https://auth.test/hardening';
SELECT tenancy.drop_issuer('https://auth.test/hardening') IS NULL AS dropped;

-- A colleague rotating a key someone else made gives no grace: the old secret, which its maker
-- holds, would outlive the maker's tie (F6).
SET SESSION AUTHORIZATION regress_hard_app;
BEGIN;
SELECT set_config('tenancy.token', :'kate', true) IS NOT NULL AS signed_in;
SELECT length(tenancy.create_api_key('ws_acme', 'kate graced key', permissions => '{documents:read}')) > 0 AS made;
COMMIT;
RESET SESSION AUTHORIZATION;
SELECT id AS grace_id FROM tenancy.api_keys WHERE name = 'kate graced key' \gset
SET SESSION AUTHORIZATION regress_hard_app;
BEGIN;
SELECT set_config('tenancy.token', :'xavier', true) IS NOT NULL AS signed_in;
SELECT tenancy.rotate_api_key(:'grace_id', grace => '1 day');
ROLLBACK;
RESET SESSION AUTHORIZATION;

-- A key made by a key ends no later than its parent (F7): a one-hour key with api_keys:manage
-- cannot mint a 90-day key.
SET SESSION AUTHORIZATION regress_hard_app;
BEGIN;
SELECT set_config('tenancy.token', :'kate', true) IS NOT NULL AS signed_in;
SELECT tenancy.create_api_key('ws_acme', 'kate hour key', permissions => '{documents:read,api_keys:manage}',
                              expires_at => now() + interval '1 hour') AS hour_key \gset
COMMIT;
BEGIN;
SELECT set_config('tenancy.api_key', :'hour_key', true) IS NOT NULL AS key_set;
SELECT length(tenancy.create_api_key('ws_acme', 'kate child key', permissions => '{documents:read}')) > 0 AS made;
COMMIT;
RESET SESSION AUTHORIZATION;
SELECT c.expires_at <= p.expires_at AS child_ends_first, c.expires_at < now() + interval '2 hours' AS within_the_hour
  FROM tenancy.api_keys c, tenancy.api_keys p WHERE c.name = 'kate child key' AND p.name = 'kate hour key';

-- A rotated key's old secret, in its grace period, authenticates but manages no key: its holder
-- could otherwise take over the key it is being cut off from.
SET SESSION AUTHORIZATION regress_hard_app;
BEGIN;
SELECT set_config('tenancy.token', :'kate', true) IS NOT NULL AS signed_in;
SELECT tenancy.create_api_key('ws_acme', 'kate manager key', permissions => '{documents:read,api_keys:manage}') AS manager_old \gset
COMMIT;
RESET SESSION AUTHORIZATION;
SELECT id AS manager_id FROM tenancy.api_keys WHERE name = 'kate manager key' \gset
SET SESSION AUTHORIZATION regress_hard_app;
BEGIN;
SELECT set_config('tenancy.token', :'kate', true) IS NOT NULL AS signed_in;
SELECT length(tenancy.rotate_api_key(:'manager_id', grace => '1 hour')) > 0 AS rotated;
COMMIT;
BEGIN;
SELECT set_config('tenancy.api_key', :'manager_old', true) IS NOT NULL AS old_secret_set;
SELECT tenancy.workspace_id();
SELECT tenancy.rotate_api_key(:'manager_id', grace => '30 days');
ROLLBACK;
RESET SESSION AUTHORIZATION;

-- Clean up.
DROP TABLE hard_docs, hard_plain;
DROP SCHEMA regress_hard, regress_hard_renamed CASCADE;
DROP EXTENSION pg_tenancy;
DROP ROLE regress_hard_app, regress_hard_owner;
