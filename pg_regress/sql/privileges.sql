-- Attacks of the CVE-2018-1058 class on every path that runs with raised rights: a role that may
-- create objects in one schema shadows pg_catalog's functions, operators and types (in its own
-- schema put first in search_path, and in pg_temp, which is searched first for types), then sets
-- a token or an API key, or calls the SQL helpers. Each trap records current_user and tries
-- ALTER ROLE … SUPERUSER. Result: the traps run only as the attacker, who stays unprivileged.
-- Then: unusual session settings never change the identity a lookup resolves.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_tenancy;
RESET client_min_messages;
SELECT tenancy.add_issuer('https://auth.test/user_management/client_TEST', '{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"k1","n":"8Yl5yx_FOqDUwvVt7_qahxF0iwnq50-TAtYGtMcJMIYBYEDy53v3HQMmUmAx5Zj0s278KJESOF7CWszOZHKAkRHFsoAAtkG9HI9c6EuwRppqfS1UWLP-6arE465fQvrHqwFvp-PxeGbOmn4MdZdU36kxC3sk3YIxw--mi6NNJudbu5OIrQT3hUQBSf3w682Ld6y66ugVy3P_eZGIkMAgJwB-jyYK4Y0xiiFxnpVh1uWvvuHeIyAv2oQWd_4h2JiNWuGdP3UMQ1PxVYQWOJJbGDy6tNebJZ2da6b3KbFtpcaWwdnxvvW3EmNkCDgWDhLTp95P4SMb2qB19wY5BBXzTQ","e":"AQAB"}]}'::jsonb) IS NULL AS issuer_added;
INSERT INTO tenancy.workspaces (workspace_id, organization_id, name) VALUES
    ('ws_acme', 'org_acme', 'Acme'), ('ws_globex', 'org_globex', 'Globex');
INSERT INTO tenancy.members (workspace_id, user_id, role) VALUES
    ('ws_acme', 'user_alice', 'editor'), ('ws_globex', 'user_bob', NULL);
CREATE ROLE regress_attacker NOSUPERUSER NOBYPASSRLS NOCREATEROLE;
GRANT tenancy_admin TO regress_attacker;
CREATE SCHEMA evil AUTHORIZATION regress_attacker;
CREATE TABLE regress_keys (name text PRIMARY KEY, secret text NOT NULL);
INSERT INTO regress_keys VALUES ('acme', tenancy.create_api_key('ws_acme', 'svc', role => 'service',
    permissions => '{documents:read}', expires_at => '2099-01-01 00:00:00+00'));
GRANT SELECT ON regress_keys TO regress_attacker;

SET ROLE regress_attacker;
CREATE TABLE evil.ran (who name NOT NULL, what text NOT NULL);
GRANT INSERT ON evil.ran TO PUBLIC;
-- The trap: records who runs it and tries to make the attacker a superuser.
CREATE FUNCTION evil.trap(what pg_catalog.text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO evil.ran VALUES (current_user, what);
    BEGIN
        EXECUTE 'ALTER ROLE regress_attacker SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN true;
END
$$;
-- Functions that match pg_catalog's exactly where the catalog's are polymorphic or equal.
CREATE FUNCTION evil.array_to_string(a pg_catalog.text[], s pg_catalog.text) RETURNS pg_catalog.text
    LANGUAGE sql AS $$ SELECT CASE WHEN evil.trap('array_to_string') THEN pg_catalog.array_to_string(a, s) END $$;
CREATE FUNCTION evil.array_to_json(a pg_catalog.text[]) RETURNS pg_catalog.json
    LANGUAGE sql AS $$ SELECT CASE WHEN evil.trap('array_to_json') THEN pg_catalog.array_to_json(a) END $$;
CREATE FUNCTION evil.decode(t pg_catalog.text, f pg_catalog.text) RETURNS pg_catalog.bytea
    LANGUAGE sql AS $$ SELECT CASE WHEN evil.trap('decode') THEN pg_catalog.decode(t, f) END $$;
CREATE FUNCTION evil.encode(b pg_catalog.bytea, f pg_catalog.text) RETURNS pg_catalog.text
    LANGUAGE sql AS $$ SELECT CASE WHEN evil.trap('encode') THEN pg_catalog.encode(b, f) END $$;
CREATE FUNCTION evil.now() RETURNS pg_catalog.timestamptz
    LANGUAGE sql AS $$ SELECT CASE WHEN evil.trap('now') THEN pg_catalog.now() END $$;
CREATE FUNCTION evil.to_timestamp(f pg_catalog.float8) RETURNS pg_catalog.timestamptz
    LANGUAGE sql AS $$ SELECT CASE WHEN evil.trap('to_timestamp') THEN pg_catalog.to_timestamp(f) END $$;
CREATE FUNCTION evil.pg_has_role(u pg_catalog.name, r pg_catalog.text, m pg_catalog.text) RETURNS boolean
    LANGUAGE sql AS $$ SELECT evil.trap('pg_has_role') $$;
CREATE FUNCTION evil.current_setting(n pg_catalog.text, m boolean) RETURNS pg_catalog.text
    LANGUAGE sql AS $$ SELECT CASE WHEN evil.trap('current_setting') THEN pg_catalog.current_setting(n, m) END $$;
CREATE FUNCTION evil.gen_random_uuid() RETURNS pg_catalog.uuid
    LANGUAGE sql AS $$ SELECT CASE WHEN evil.trap('gen_random_uuid') THEN pg_catalog.gen_random_uuid() END $$;
-- Operators: an exact match in a schema ahead of pg_catalog wins.
CREATE FUNCTION evil.text_eq(a pg_catalog.text, b pg_catalog.text) RETURNS boolean
    LANGUAGE sql AS $$ SELECT evil.trap('operator =(text,text)') AND pg_catalog.texteq(a, b) $$;
CREATE OPERATOR evil.= (LEFTARG = pg_catalog.text, RIGHTARG = pg_catalog.text, FUNCTION = evil.text_eq);
CREATE FUNCTION evil.bytea_eq(a pg_catalog.bytea, b pg_catalog.bytea) RETURNS boolean
    LANGUAGE sql AS $$ SELECT evil.trap('operator =(bytea,bytea)') AND pg_catalog.byteaeq(a, b) $$;
CREATE OPERATOR evil.= (LEFTARG = pg_catalog.bytea, RIGHTARG = pg_catalog.bytea, FUNCTION = evil.bytea_eq);
CREATE FUNCTION evil.text_cat(a pg_catalog.text, b pg_catalog.text) RETURNS pg_catalog.text
    LANGUAGE sql AS $$ SELECT CASE WHEN evil.trap('operator ||') THEN pg_catalog.textcat(a, b) END $$;
CREATE OPERATOR evil.|| (LEFTARG = pg_catalog.text, RIGHTARG = pg_catalog.text, FUNCTION = evil.text_cat);
-- Types: domains named like the catalog's, whose CHECK runs the trap on every cast to them.
CREATE DOMAIN evil.float8 AS pg_catalog.float8 CHECK (evil.trap('type float8'));
CREATE DOMAIN evil.int8 AS pg_catalog.int8 CHECK (evil.trap('type int8'));
CREATE DOMAIN evil.uuid AS pg_catalog.uuid CHECK (evil.trap('type uuid'));
CREATE DOMAIN evil.bytea AS pg_catalog.bytea CHECK (evil.trap('type bytea'));
CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (evil.trap('type pg_temp.text'));
CREATE DOMAIN pg_temp.jsonb AS pg_catalog.jsonb CHECK (evil.trap('type pg_temp.jsonb'));
SET search_path = evil, pg_catalog, public;

-- The traps are live: in the attacker's own statements they run (as the attacker).
SELECT array_to_string(ARRAY['a'], ',') AS own_call, 'x'::text AS own_cast, ('a' = 'a') AS own_operator;
SELECT count(*) > 0 AS traps_live, count(*) FILTER (WHERE who <> 'regress_attacker') AS elevated FROM evil.ran;
TRUNCATE evil.ran;

-- The token path: shape check, issuer load, signature, membership and revocation lookups.
BEGIN;
SELECT set_config('tenancy.token', 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2FsaWNlIiwib3JnX2lkIjoib3JnX2FjbWUiLCJyb2xlIjoibWVtYmVyIiwicGVybWlzc2lvbnMiOlsiZG9jdW1lbnRzOnJlYWQiXSwic2lkIjoic2Vzc2lvbl9wcml2X2FsaWNlIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQxMDI0NDQ4MDB9.5I_tkc0VLlgTsw9U-EBzl0c9fBti__f_C9cdrZcib84Yn9c4k1OhiCzy67LSUzNLnbAgOvV2YEEH5OOGfwRfsdu32O2-Je6mCFMtimEJyvwoxJ36B-1SSJENevGRGqzbuST0dOkfGC5QHy1D_0xhzk4rcClKskL199SV46-K6Wtnl_Dh1dgy_x0V4QH7867dJcOWUKEKKZLqvR5HQXwRCNgNwstCWgFfBQimrD5z90oEK2EW_WnywTQpI0moptcUlPGZgsjTijd-OjPqfE-NUUVHw4SvJIQ_fMy94uC3tz01Ryi8zH3qvcpg_OHtx1VzB3NUrQVnbKl9XGI-NT_A_w', true) IS NOT NULL AS token_set;
SELECT tenancy.workspace_id() AS workspace, tenancy.user_id() AS user_id, tenancy.role() AS role;
COMMIT;
SELECT tenancy.revoke_session('session_priv_bob') IS NULL AS revoked;
BEGIN;
SELECT set_config('tenancy.token', 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2JvYiIsIm9yZ19pZCI6Im9yZ19nbG9iZXgiLCJyb2xlIjoibWVtYmVyIiwic2lkIjoic2Vzc2lvbl9wcml2X2JvYiIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.4fx1rwwL3Eu4OwMlenO8dBQ5BJ8S9cVqBL92wNBfd0AoxVXkfOibvn_kW8B-dP5ZQrBlyyaubqb6Qfw2VDtZ-irtdbVOY-uBZpUETuGp1z52r320IRL_w9x5qSzo-CH61vnzlDPv6n253vL3FfSiPK5Pq-iH4hKlmH65IAbkjy3gg0P7jdyn4wAdBe4kdaybuJViOrOUR4oe9Cn8W4N24cBHEwfGS4ijzy5trkNFnqYn8xNBlHaCHTmYfr4BzqbtcHH-Dqv0TGFSIzDhcIZHwjxRWNAYcVFvZKPJj7XwYy_aYyhBjIWjBVdZoOQ2g2vBdWjQr0BJaAd2S6syO1B0dA', true) IS NOT NULL AS token_set;
ROLLBACK;
-- The issuer reloaded after a key change, then verified again.
SELECT tenancy.set_jwks('https://auth.test/user_management/client_TEST', '{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"k1","n":"8Yl5yx_FOqDUwvVt7_qahxF0iwnq50-TAtYGtMcJMIYBYEDy53v3HQMmUmAx5Zj0s278KJESOF7CWszOZHKAkRHFsoAAtkG9HI9c6EuwRppqfS1UWLP-6arE465fQvrHqwFvp-PxeGbOmn4MdZdU36kxC3sk3YIxw--mi6NNJudbu5OIrQT3hUQBSf3w682Ld6y66ugVy3P_eZGIkMAgJwB-jyYK4Y0xiiFxnpVh1uWvvuHeIyAv2oQWd_4h2JiNWuGdP3UMQ1PxVYQWOJJbGDy6tNebJZ2da6b3KbFtpcaWwdnxvvW3EmNkCDgWDhLTp95P4SMb2qB19wY5BBXzTQ","e":"AQAB"}]}'::jsonb) IS NULL AS keys_set;
BEGIN;
SELECT set_config('tenancy.token', 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2FsaWNlIiwib3JnX2lkIjoib3JnX2FjbWUiLCJyb2xlIjoibWVtYmVyIiwicGVybWlzc2lvbnMiOlsiZG9jdW1lbnRzOnJlYWQiXSwic2lkIjoic2Vzc2lvbl9wcml2X2FsaWNlIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQxMDI0NDQ4MDB9.5I_tkc0VLlgTsw9U-EBzl0c9fBti__f_C9cdrZcib84Yn9c4k1OhiCzy67LSUzNLnbAgOvV2YEEH5OOGfwRfsdu32O2-Je6mCFMtimEJyvwoxJ36B-1SSJENevGRGqzbuST0dOkfGC5QHy1D_0xhzk4rcClKskL199SV46-K6Wtnl_Dh1dgy_x0V4QH7867dJcOWUKEKKZLqvR5HQXwRCNgNwstCWgFfBQimrD5z90oEK2EW_WnywTQpI0moptcUlPGZgsjTijd-OjPqfE-NUUVHw4SvJIQ_fMy94uC3tz01Ryi8zH3qvcpg_OHtx1VzB3NUrQVnbKl9XGI-NT_A_w', true) IS NOT NULL AS token_set;
SELECT tenancy.workspace_id() AS workspace;
COMMIT;
-- The API-key path: lookup and the recording of its use.
BEGIN;
SELECT set_config('tenancy.api_key', (SELECT k.secret FROM public.regress_keys k WHERE k.name OPERATOR(pg_catalog.=) 'acme'), true) IS NOT NULL AS key_set;
SELECT tenancy.workspace_id() AS workspace, tenancy.role() AS role;
COMMIT;
-- The SQL helpers, as a member of tenancy_admin with the hostile search_path.
SELECT length(tenancy.create_api_key('ws_acme', 'attacker key', permissions => '{documents:read}')) AS key_length;
SELECT length(tenancy.rotate_api_key((SELECT k.id FROM tenancy.api_keys k WHERE k.name OPERATOR(pg_catalog.=) 'attacker key'))) AS rotated_length;
SELECT tenancy.revoke_api_key((SELECT k.id FROM tenancy.api_keys k WHERE k.name OPERATOR(pg_catalog.=) 'attacker key')) IS NULL AS key_revoked;
CREATE TABLE evil.docs (id pg_catalog.int4 PRIMARY KEY, workspace_id pg_catalog.text NOT NULL);
CREATE INDEX ON evil.docs (workspace_id);
SELECT tenancy.protect('evil.docs') IS NULL AS protected;
SELECT count(*) >= 0 AS coverage_read FROM tenancy.coverage;
SELECT count(*) >= 0 AS protected_tables_read FROM tenancy.protected_tables;
SELECT tenancy.unprotect('evil.docs') IS NULL AS unprotected;
RESET search_path;
RESET ROLE;

-- Whatever ran the traps, it was only ever the attacker, and the attacker is no superuser.
SELECT count(*) FILTER (WHERE who <> 'regress_attacker') AS elevated,
       string_agg(DISTINCT what, ', ' ORDER BY what) FILTER (WHERE who <> 'regress_attacker') AS elevated_traps
  FROM evil.ran;
SELECT rolsuper, rolcreaterole, rolbypassrls FROM pg_roles WHERE rolname = 'regress_attacker';

-- Unusual session settings change nothing a lookup resolves: each line re-verifies (the
-- invalidation empties the backend's cache) and prints the same identity. The attacker's
-- pg_temp types stay in place (the helpers below name pg_catalog's types so as not to use them).
CREATE FUNCTION regress_touch() RETURNS void LANGUAGE sql AS
    $$ UPDATE tenancy.workspaces SET name = name WHERE false $$;
CREATE FUNCTION regress_who(token pg_catalog.text) RETURNS pg_catalog.text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('tenancy.token', token, true);
    RETURN (SELECT format('%s %s %s %s %s', i.workspace_id, i.user_id, i.role, i.session_id,
                          extract(epoch FROM i.expires_at)::bigint) FROM tenancy.identity() i);
END
$$;
CREATE FUNCTION regress_who_key() RETURNS pg_catalog.text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('tenancy.api_key', (SELECT secret FROM regress_keys WHERE name = 'acme'), true);
    RETURN (SELECT format('%s %s %s %s', i.workspace_id, i.role, i.permissions, extract(epoch FROM i.expires_at)::bigint)
              FROM tenancy.identity() i);
END
$$;
\set alice 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2FsaWNlIiwib3JnX2lkIjoib3JnX2FjbWUiLCJyb2xlIjoibWVtYmVyIiwicGVybWlzc2lvbnMiOlsiZG9jdW1lbnRzOnJlYWQiXSwic2lkIjoic2Vzc2lvbl9wcml2X2FsaWNlIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQxMDI0NDQ4MDB9.5I_tkc0VLlgTsw9U-EBzl0c9fBti__f_C9cdrZcib84Yn9c4k1OhiCzy67LSUzNLnbAgOvV2YEEH5OOGfwRfsdu32O2-Je6mCFMtimEJyvwoxJ36B-1SSJENevGRGqzbuST0dOkfGC5QHy1D_0xhzk4rcClKskL199SV46-K6Wtnl_Dh1dgy_x0V4QH7867dJcOWUKEKKZLqvR5HQXwRCNgNwstCWgFfBQimrD5z90oEK2EW_WnywTQpI0moptcUlPGZgsjTijd-OjPqfE-NUUVHw4SvJIQ_fMy94uC3tz01Ryi8zH3qvcpg_OHtx1VzB3NUrQVnbKl9XGI-NT_A_w'
BEGIN; SELECT regress_touch(); SET LOCAL DateStyle = 'SQL, DMY'; SELECT regress_who(:'alice') AS "DateStyle"; COMMIT;
BEGIN; SELECT regress_touch(); SET LOCAL IntervalStyle = 'sql_standard'; SELECT regress_who(:'alice') AS "IntervalStyle"; COMMIT;
BEGIN; SELECT regress_touch(); SET LOCAL TimeZone = 'Pacific/Kiritimati'; SELECT regress_who(:'alice') AS "TimeZone"; COMMIT;
BEGIN; SELECT regress_touch(); SET LOCAL bytea_output = 'escape'; SELECT regress_who(:'alice') AS "bytea_output"; COMMIT;
BEGIN; SELECT regress_touch(); SET LOCAL extra_float_digits = -15; SELECT regress_who(:'alice') AS "extra_float_digits"; COMMIT;
BEGIN; SELECT regress_touch(); SET LOCAL standard_conforming_strings = off; SELECT regress_who(:'alice') AS "standard_conforming_strings"; COMMIT;
BEGIN; SELECT regress_touch(); SET LOCAL transaction_read_only = on; SELECT regress_who(:'alice') AS "transaction_read_only"; COMMIT;
BEGIN; SELECT regress_touch(); SET LOCAL default_transaction_read_only = on; SELECT regress_who(:'alice') AS "default_transaction_read_only"; COMMIT;
BEGIN; SELECT regress_touch(); SET LOCAL statement_timeout = '5s'; SET LOCAL lock_timeout = '1ms'; SELECT regress_who(:'alice') AS "timeouts"; COMMIT;
BEGIN; SELECT regress_touch(); SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_nestloop = off; SET LOCAL enable_mergejoin = off; SELECT regress_who(:'alice') AS "enable_*"; COMMIT;
BEGIN; SELECT regress_touch(); SET LOCAL search_path = evil, pg_catalog; SELECT public.regress_who(:'alice') AS "search_path"; COMMIT;
BEGIN; SELECT regress_touch(); SET LOCAL ROLE regress_attacker; SELECT public.regress_who(:'alice') AS "SET ROLE"; COMMIT;
BEGIN; SELECT regress_touch(); SET LOCAL SESSION AUTHORIZATION regress_attacker; SELECT public.regress_who(:'alice') AS "SET SESSION AUTHORIZATION"; COMMIT;
BEGIN; SELECT regress_touch(); SET LOCAL extra_float_digits = -15; SET LOCAL TimeZone = 'America/St_Johns'; SELECT regress_who_key() AS "api key, float digits and time zone"; COMMIT;
BEGIN; SELECT regress_touch(); SET LOCAL transaction_read_only = on; SELECT regress_who_key() AS "api key, read only"; COMMIT;
SELECT count(*) FILTER (WHERE who <> 'regress_attacker') AS elevated,
       string_agg(DISTINCT what, ', ' ORDER BY what) FILTER (WHERE who <> 'regress_attacker') AS elevated_traps
  FROM evil.ran;

-- The credential settings cannot be set inside a security-restricted operation (here: an index
-- expression evaluated by a maintenance command).
CREATE FUNCTION regress_sets_token(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM set_config('tenancy.token', 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2FsaWNlIiwib3JnX2lkIjoib3JnX2FjbWUiLCJyb2xlIjoibWVtYmVyIiwicGVybWlzc2lvbnMiOlsiZG9jdW1lbnRzOnJlYWQiXSwic2lkIjoic2Vzc2lvbl9wcml2X2FsaWNlIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQxMDI0NDQ4MDB9.5I_tkc0VLlgTsw9U-EBzl0c9fBti__f_C9cdrZcib84Yn9c4k1OhiCzy67LSUzNLnbAgOvV2YEEH5OOGfwRfsdu32O2-Je6mCFMtimEJyvwoxJ36B-1SSJENevGRGqzbuST0dOkfGC5QHy1D_0xhzk4rcClKskL199SV46-K6Wtnl_Dh1dgy_x0V4QH7867dJcOWUKEKKZLqvR5HQXwRCNgNwstCWgFfBQimrD5z90oEK2EW_WnywTQpI0moptcUlPGZgsjTijd-OjPqfE-NUUVHw4SvJIQ_fMy94uC3tz01Ryi8zH3qvcpg_OHtx1VzB3NUrQVnbKl9XGI-NT_A_w', true);
    RETURN i;
END
$$;
CREATE TABLE regress_restricted (i int);
INSERT INTO regress_restricted VALUES (1);
CREATE INDEX ON regress_restricted (regress_sets_token(i));


-- tenancy.credentials_in_text = refuse: only a parameter bound to the statement (extended
-- protocol; tests/client/tests/pooler.rs) or a startup option carries a credential. A literal is
-- refused (28000, with the hint to bind it), and so is every other spelling or source: escapes,
-- expressions, a PREPAREd literal, a function's body, a value read from a table.
CREATE TABLE regress_tokens (token pg_catalog.text);
INSERT INTO regress_tokens VALUES (:'alice');
SET tenancy.credentials_in_text = refuse;
\set VERBOSITY default
BEGIN;
SET LOCAL tenancy.token = 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2FsaWNlIiwib3JnX2lkIjoib3JnX2FjbWUiLCJyb2xlIjoibWVtYmVyIiwicGVybWlzc2lvbnMiOlsiZG9jdW1lbnRzOnJlYWQiXSwic2lkIjoic2Vzc2lvbl9wcml2X2FsaWNlIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQxMDI0NDQ4MDB9.5I_tkc0VLlgTsw9U-EBzl0c9fBti__f_C9cdrZcib84Yn9c4k1OhiCzy67LSUzNLnbAgOvV2YEEH5OOGfwRfsdu32O2-Je6mCFMtimEJyvwoxJ36B-1SSJENevGRGqzbuST0dOkfGC5QHy1D_0xhzk4rcClKskL199SV46-K6Wtnl_Dh1dgy_x0V4QH7867dJcOWUKEKKZLqvR5HQXwRCNgNwstCWgFfBQimrD5z90oEK2EW_WnywTQpI0moptcUlPGZgsjTijd-OjPqfE-NUUVHw4SvJIQ_fMy94uC3tz01Ryi8zH3qvcpg_OHtx1VzB3NUrQVnbKl9XGI-NT_A_w';
ROLLBACK;
BEGIN;
SELECT set_config('tenancy.token', 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2F1dGgudGVzdC91c2VyX21hbmFnZW1lbnQvY2xpZW50X1RFU1QiLCJzdWIiOiJ1c2VyX2FsaWNlIiwib3JnX2lkIjoib3JnX2FjbWUiLCJyb2xlIjoibWVtYmVyIiwicGVybWlzc2lvbnMiOlsiZG9jdW1lbnRzOnJlYWQiXSwic2lkIjoic2Vzc2lvbl9wcml2X2FsaWNlIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQxMDI0NDQ4MDB9.5I_tkc0VLlgTsw9U-EBzl0c9fBti__f_C9cdrZcib84Yn9c4k1OhiCzy67LSUzNLnbAgOvV2YEEH5OOGfwRfsdu32O2-Je6mCFMtimEJyvwoxJ36B-1SSJENevGRGqzbuST0dOkfGC5QHy1D_0xhzk4rcClKskL199SV46-K6Wtnl_Dh1dgy_x0V4QH7867dJcOWUKEKKZLqvR5HQXwRCNgNwstCWgFfBQimrD5z90oEK2EW_WnywTQpI0moptcUlPGZgsjTijd-OjPqfE-NUUVHw4SvJIQ_fMy94uC3tz01Ryi8zH3qvcpg_OHtx1VzB3NUrQVnbKl9XGI-NT_A_w', true);
ROLLBACK;
\set VERBOSITY terse
BEGIN;
SELECT regress_who((SELECT t.token FROM regress_tokens t)) AS "read from a table";
ROLLBACK;
BEGIN;
SELECT set_config('tenancy.token', E'\x65' || substr((SELECT t.token FROM regress_tokens t), 2), true) IS NOT NULL AS "an escape and a concatenation";
ROLLBACK;
BEGIN;
SELECT set_config('tenancy.token', pg_catalog.convert_from(pg_catalog.decode(pg_catalog.encode(pg_catalog.convert_to((SELECT t.token FROM regress_tokens t), 'UTF8'), 'base64'), 'base64'), 'UTF8'), true) IS NOT NULL AS "decoded";
ROLLBACK;
BEGIN;
SELECT set_config('tenancy.token', reverse(reverse((SELECT t.token FROM regress_tokens t))), true) IS NOT NULL AS "reversed twice";
ROLLBACK;
SELECT format('PREPARE regress_set_token AS SELECT set_config(%L, %L, true) IS NOT NULL', 'tenancy.token', t.token) AS prepare
  FROM regress_tokens t \gset
:prepare;
BEGIN;
EXECUTE regress_set_token;
ROLLBACK;
DEALLOCATE regress_set_token;
PREPARE regress_set_param(pg_catalog.text) AS SELECT set_config('tenancy.token', $1, true) IS NOT NULL;
SELECT t.token AS regress_token FROM regress_tokens t \gset
BEGIN;
EXECUTE regress_set_param(:'regress_token');
ROLLBACK;
DEALLOCATE regress_set_param;
RESET tenancy.credentials_in_text;

DROP TABLE regress_restricted, regress_tokens;
DROP FUNCTION regress_sets_token(int), regress_touch(), regress_who(pg_catalog.text), regress_who_key();
DROP DOMAIN pg_temp.text, pg_temp.jsonb;
DROP SCHEMA evil CASCADE;
DROP TABLE regress_keys;
DROP EXTENSION pg_tenancy;
REVOKE tenancy_admin FROM regress_attacker;
DROP ROLE regress_attacker;
