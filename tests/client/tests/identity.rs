//! The identity a token yields cannot be changed by any other route, survives no transaction it
//! should not, and the token itself does not linger where another connection can read it.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

/// The workspace the connection's current identity resolves to.
fn workspace(client: &mut impl postgres::GenericClient) -> String {
    client.query_one("SELECT tenancy.workspace_id()", &[]).unwrap().get(0)
}

/// The `query` column another connection sees for backend `pid`.
fn activity_of(observer: &mut postgres::Client, pid: i32) -> String {
    observer
        .query_one("SELECT query FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .unwrap()
        .get(0)
}

/// What another connection sees of backend `pid` after `statement`, asserted masked: no
/// `signature` (the token's), the redaction mark in its place.
fn masked_activity_of(observer: &mut postgres::Client, pid: i32, statement: &str, signature: &str) -> String {
    let seen = activity_of(observer, pid);
    assert!(!seen.contains(signature), "{statement}: token readable as {seen}");
    assert!(seen.contains("[redacted]"), "{statement}: {seen}");
    seen
}

/// With `log_statement = 'all'` the server logs a statement before parsing it, and the log hook
/// masks its text first: the statement's own hooks then found nothing left to mask and left the
/// raw copy in `pg_stat_activity`, readable for as long as the session stayed idle (adversarial
/// pass of session 14).
#[test]
fn a_logged_set_leaves_no_token_in_pg_stat_activity() {
    let mut client = admin();
    let mut observer = admin();
    client.batch_execute("SET log_statement = 'all'").unwrap();
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let token = token("user_alice", "org_acme");
    let signature = &token[token.rfind('.').unwrap() + 1..];
    for statement in [
        format!("SET tenancy.token = '{token}'"),
        format!("SET tenancy.token TO '{token}'; SELECT 1"),
        format!("BEGIN; SET LOCAL tenancy.token = '{token}'; COMMIT"),
    ] {
        client.batch_execute(&statement).unwrap();
        masked_activity_of(&mut observer, pid, &statement, signature);
    }
}

#[test]
fn a_plain_set_leaves_no_token_in_pg_stat_activity() {
    let mut client = app();
    let mut observer = app();
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let token = token("user_alice", "org_acme");
    let signature = &token[token.rfind('.').unwrap() + 1..];
    for statement in [
        format!("SET tenancy.token = '{token}'"),
        format!("SET tenancy.token TO '{token}'; SELECT 1"),
        format!("SELECT set_config('tenancy.token', '{token}', false)"),
    ] {
        client.batch_execute(&statement).unwrap();
        let seen = masked_activity_of(&mut observer, pid, &statement, signature);
        assert_eq!(seen.len(), statement.len(), "masking keeps the statement's length");
        assert_eq!(
            workspace(&mut client),
            "ws_acme",
            "{statement}: the SET still took effect"
        );
    }
    // A statement that fails before it executes (a parse error, an analysis error) reaches no
    // hook that masks; its text is masked when its transaction aborts, before the client hears
    // of the error, and stays masked while the connection is idle.
    struct Case {
        before: &'static str,
        statement: String,
        code: &'static str,
    }
    for Case {
        before,
        statement,
        code,
    } in [
        Case {
            before: "",
            statement: format!("SET tenancy.token = '{token}' garbage"),
            code: "42601",
        },
        Case {
            before: "",
            statement: format!("SELECT set_config('tenancy.token', '{token}', true) FROM no_such_table"),
            code: "42P01",
        },
        Case {
            before: "BEGIN; SAVEPOINT s",
            statement: format!("SET LOCAL tenancy.token = '{token}' garbage"),
            code: "42601",
        },
    ] {
        client.batch_execute(before).unwrap();
        let err = client.batch_execute(&statement).unwrap_err();
        assert_eq!(sqlstate(&err), code, "{err}");
        masked_activity_of(&mut observer, pid, &statement, signature);
        client.batch_execute("ROLLBACK").ok();
    }
    // scripts/cluster preloads pg_stat_statements after pg_tenancy, so its hooks run first: the
    // in-place masking must still reach the text it stores.
    let mut admin = admin();
    admin
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .unwrap();
    client.batch_execute(&format!("SET tenancy.token = '{token}'")).unwrap();
    let stored: Vec<String> = first_column(
        &mut admin,
        "SELECT query FROM pg_stat_statements WHERE query LIKE '%tenancy.token%'",
        &[],
    );
    assert!(!stored.is_empty(), "pg_stat_statements tracks the SET");
    assert!(
        stored.iter().all(|q| !q.contains(signature)),
        "pg_stat_statements keeps a token: {stored:?}"
    );
}

#[test]
fn tokens_never_reach_the_server_log_or_errors() {
    let Ok(log_path) = std::env::var("PG_TENANCY_SERVER_LOG") else {
        panic!("PG_TENANCY_SERVER_LOG: run through scripts/test");
    };
    let mut admin = admin();
    let good = token("user_alice", "org_acme");
    let forged = format!("{}.{}", &good[..good.rfind('.').unwrap()], "A".repeat(342));
    admin.batch_execute("SET log_statement = 'all'").unwrap();
    admin.batch_execute(&format!("SET tenancy.token = '{good}'")).unwrap();
    let err = admin
        .batch_execute(&format!("SET tenancy.token = '{forged}'"))
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    let err = admin
        .batch_execute(&format!("SELECT no_such_function('{good}')"))
        .unwrap_err();
    assert!(
        !format!("{err:?}").contains(&good[10..60]),
        "error echoes the token: {err:?}"
    );
    admin.batch_execute("SELECT 'log flushed'").unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let payload = &good[good.find('.').unwrap() + 1..good.rfind('.').unwrap()];
    assert!(log.contains("[redacted]"), "log_statement lines are present but masked");
    assert!(!log.contains(payload), "a token reached the server log");
    assert!(
        !log.contains(&forged[forged.len() - 40..]),
        "a forged token reached the server log"
    );
}

#[test]
fn tokens_cannot_be_stored_in_catalogs_everyone_reads() {
    let mut app = app();
    let token = token("user_alice", "org_acme");
    for statement in [
        format!("ALTER ROLE CURRENT_USER SET tenancy.token = '{token}'"),
        format!("CREATE FUNCTION pinned() RETURNS int LANGUAGE sql SET tenancy.token = '{token}' AS 'SELECT 1'"),
    ] {
        let err = app.batch_execute(&statement).unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{statement}: {err}");
    }
    let err = admin()
        .batch_execute(&format!("ALTER DATABASE {DATABASE} SET tenancy.token = '{token}'"))
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
}

#[test]
fn derived_settings_refuse_function_set_clauses_and_reset() {
    let mut app = app();
    let err = app
        .batch_execute(
            "CREATE FUNCTION spoof() RETURNS text LANGUAGE sql SET tenancy.workspace_id = 'ws_globex'
             AS 'SELECT tenancy.workspace_id()'",
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    let mut tx = app.transaction().unwrap();
    set_local_token(&mut tx, "user_alice", "org_acme");
    tx.batch_execute("RESET tenancy.workspace_id; RESET tenancy.user_id")
        .unwrap();
    assert_eq!(
        workspace(&mut tx),
        "ws_acme",
        "RESET of a derived setting changes nothing"
    );
    let shown: String = tx.query_one("SHOW tenancy.workspace_id", &[]).unwrap().get(0);
    assert_eq!(shown, "ws_acme");
    tx.batch_execute("RESET ALL").unwrap();
    let err = tx.query_one("SELECT tenancy.workspace_id()", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "RESET ALL ends the identity: {err}");
}

#[test]
fn a_token_in_the_startup_packet_is_verified_like_any_other() {
    let good = token("user_bob", "org_globex");
    let mut client = connect_with(APP_ROLE, DATABASE, &format!("-c tenancy.token={good}")).unwrap();
    assert_eq!(workspace(&mut client), "ws_globex");
    let forged = format!("{}.{}", &good[..good.rfind('.').unwrap()], "A".repeat(342));
    let mut client = connect_with(APP_ROLE, DATABASE, &format!("-c tenancy.token={forged}")).unwrap();
    let err = client.query_one("SELECT tenancy.workspace_id()", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    let rows = client.query("SELECT 1 FROM documents", &[]);
    assert!(rows.is_err(), "a forged startup token reads nothing");
}

#[test]
fn role_games_do_not_change_the_identity() {
    let mut admin = admin();
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenancy_client_helper') THEN
                 CREATE ROLE tenancy_client_helper NOLOGIN NOBYPASSRLS; END IF; END $$;
             GRANT tenancy_client_helper TO {APP_ROLE};
             GRANT SELECT ON documents TO tenancy_client_helper;"
        ))
        .unwrap();
    let mut app = app();
    let mut tx = app.transaction().unwrap();
    set_local_token(&mut tx, "user_alice", "org_acme");
    tx.batch_execute("SET LOCAL ROLE tenancy_client_helper").unwrap();
    assert_eq!(workspace(&mut tx), "ws_acme");
    let foreign: i64 = tx
        .query_one("SELECT count(*) FROM documents WHERE workspace_id <> 'ws_acme'", &[])
        .unwrap()
        .get(0);
    assert_eq!(foreign, 0, "another database role reads through the same identity");
    tx.batch_execute("RESET ROLE").unwrap();
    let err = tx.batch_execute("SET SESSION AUTHORIZATION postgres").unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
}

#[test]
fn savepoints_restore_the_identity_they_saved() {
    let mut app = app();
    let mut tx = app.transaction().unwrap();
    set_local_token(&mut tx, "user_alice", "org_acme");
    tx.batch_execute("SAVEPOINT before_bob").unwrap();
    set_local_token(&mut tx, "user_bob", "org_globex");
    assert_eq!(workspace(&mut tx), "ws_globex");
    tx.batch_execute("ROLLBACK TO SAVEPOINT before_bob").unwrap();
    assert_eq!(workspace(&mut tx), "ws_acme");
    let titles = tx.query("SELECT title FROM documents", &[]).unwrap();
    assert_eq!(titles.len(), 2, "alice's rows only, after the rollback to savepoint");
    tx.batch_execute("SAVEPOINT s; SELECT set_config('tenancy.token', '', true); RELEASE s")
        .unwrap();
    let err = tx.query("SELECT 1 FROM documents", &[]).unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "28000",
        "a released savepoint keeps the cleared token: {err}"
    );
}

/// The plan PostgreSQL would run for `statement`, one line per row of EXPLAIN.
fn plan_of(client: &mut impl postgres::GenericClient, statement: &str) -> String {
    let lines: Vec<String> = first_column(client, &format!("EXPLAIN (COSTS OFF) {statement}"), &[]);
    lines.join("\n")
}

#[test]
fn prepared_statements_follow_the_identity_of_each_execution() {
    let mut app = app();
    app.batch_execute("SET plan_cache_mode = force_generic_plan").unwrap();
    // SET LOCAL: one cached plan, the identity a parameter of it (planned as an initPlan, run
    // without one: src/surface/identity_params/), serves every transaction.
    // Session-level SET: the identity is a constant in the plan, which is replanned when it changes.
    for local in [true, false] {
        let name = if local { "titles_local" } else { "titles_session" };
        let query = "SELECT string_agg(title, ',' ORDER BY title) FROM documents";
        app.batch_execute(&format!("PREPARE {name} AS {query}")).unwrap();
        let protocol_level = app.prepare(query).unwrap();
        struct Case {
            sub: &'static str,
            org: &'static str,
            workspace: &'static str,
            titles: &'static str,
        }
        for Case {
            sub,
            org,
            workspace,
            titles: expected,
        } in [
            Case {
                sub: "user_alice",
                org: "org_acme",
                workspace: "ws_acme",
                titles: "acme budget,acme plan",
            },
            Case {
                sub: "user_bob",
                org: "org_globex",
                workspace: "ws_globex",
                titles: "globex secret",
            },
            Case {
                sub: "user_alice",
                org: "org_acme",
                workspace: "ws_acme",
                titles: "acme budget,acme plan",
            },
        ] {
            let mut tx = app.transaction().unwrap();
            tx.execute(
                "SELECT set_config('tenancy.token', $1, $2)",
                &[&token(sub, org), &local],
            )
            .unwrap();
            let sql_level: String = tx.query_one(&format!("EXECUTE {name}"), &[]).unwrap().get(0);
            assert_eq!(sql_level, expected, "EXECUTE as {sub}, local {local}");
            let bound: String = tx.query_one(&protocol_level, &[]).unwrap().get(0);
            assert_eq!(
                bound, expected,
                "protocol-level prepared statement as {sub}, local {local}"
            );
            let plan = plan_of(&mut tx, &format!("EXECUTE {name}"));
            if local {
                assert!(!plan.contains("InitPlan") && plan.contains("= $0"), "{plan}");
            } else {
                assert!(plan.contains(&format!("'{workspace}'::text")), "{plan}");
            }
            tx.commit().unwrap();
        }
    }
}

#[test]
fn folded_plans_follow_thousands_of_identity_switches() {
    // Four connections switch at random between three users, mostly with session-level SETs
    // (the identity folded into the cached plans, which must be replanned at each switch), and
    // sometimes with a SET LOCAL inside a transaction, after which the session identity is back.
    const USERS: [(&str, &str, &str); 3] = [
        ("user_alice", "org_acme", "ws_acme"),
        ("user_bob", "org_globex", "ws_globex"),
        ("user_carol", "org_initech", "ws_initech"),
    ];
    let tokens: Vec<String> = USERS.iter().map(|(sub, org, _)| token(sub, org)).collect();
    let workers: Vec<_> = (0..4_u64)
        .map(|seed| {
            let tokens = tokens.clone();
            std::thread::spawn(move || {
                let mut app = app();
                app.batch_execute("SET plan_cache_mode = force_generic_plan").unwrap();
                let read = app
                    .prepare("SELECT workspace_id, count(*) FROM documents GROUP BY workspace_id")
                    .unwrap();
                let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let mut next = |n: u64| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (state >> 33) % n
                };
                let mut session_user = None;
                let mut checked = 0;
                for _ in 0..400 {
                    let user = next(3) as usize;
                    if next(4) == 0 {
                        let mut tx = app.transaction().unwrap();
                        tx.execute("SELECT set_config('tenancy.token', $1, true)", &[&tokens[user]])
                            .unwrap();
                        let seen: Vec<String> = first_column(&mut tx, &read, &[]);
                        assert_eq!(seen, [USERS[user].2], "SET LOCAL as {}", USERS[user].0);
                        tx.commit().unwrap();
                    } else {
                        app.execute("SELECT set_config('tenancy.token', $1, false)", &[&tokens[user]])
                            .unwrap();
                        session_user = Some(user);
                    }
                    if let Some(user) = session_user {
                        let seen: Vec<String> = first_column(&mut app, &read, &[]);
                        assert_eq!(seen, [USERS[user].2], "session identity {}", USERS[user].0);
                        checked += 1;
                    }
                }
                checked
            })
        })
        .collect();
    let checked: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(checked > 1000, "{checked} session-identity reads checked");
}

#[test]
fn a_cached_plan_stops_serving_when_its_token_expires() {
    let mut app = app();
    let skew: String = app.query_one("SHOW tenancy.clock_skew", &[]).unwrap().get(0);
    let skew: u64 = skew.trim_end_matches('s').parse().unwrap();
    let now = unix_now();
    // Still valid for five seconds with the server's clock skew allowance.
    let expiring = mint(&json!({"iss": ISSUER, "sub": "user_alice", "org_id": "org_acme",
                                "sid": "session_expiring", "iat": now - 60, "exp": now + 5 - skew}));
    app.execute("SELECT set_config('tenancy.token', $1, false)", &[&expiring])
        .unwrap();
    app.batch_execute("SET plan_cache_mode = force_generic_plan").unwrap();
    let count = app.prepare("SELECT count(*) FROM documents").unwrap();
    let rows: i64 = app.query_one(&count, &[]).unwrap().get(0);
    assert_eq!(rows, 2);
    assert!(plan_of(&mut app, "SELECT count(*) FROM documents").contains("'ws_acme'::text"));
    std::thread::sleep(std::time::Duration::from_secs(7));
    let err = app.query_one(&count, &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    assert!(format!("{err:?}").contains("expired"), "{err:?}");
}

#[test]
fn forced_parallel_plans_see_only_the_callers_rows() {
    let mut app = app();
    // force_parallel_mode was renamed debug_parallel_query in PostgreSQL 16.
    app.batch_execute(
        "SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
                                THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'on', false);
         SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
         SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;
         SET enable_indexscan = off; SET enable_bitmapscan = off",
    )
    .unwrap();
    struct Case {
        sub: &'static str,
        org: &'static str,
        own: &'static str,
        rows: i64,
        local: bool,
    }
    for Case {
        sub,
        org,
        own,
        rows: expected,
        local,
    } in [
        Case {
            sub: "user_alice",
            org: "org_acme",
            own: "ws_acme",
            rows: 2,
            local: true,
        },
        Case {
            sub: "user_bob",
            org: "org_globex",
            own: "ws_globex",
            rows: 1,
            local: true,
        },
        Case {
            sub: "user_alice",
            org: "org_acme",
            own: "ws_acme",
            rows: 2,
            local: false,
        },
        Case {
            sub: "user_bob",
            org: "org_globex",
            own: "ws_globex",
            rows: 1,
            local: false,
        },
    ] {
        let mut tx = app.transaction().unwrap();
        tx.execute(
            "SELECT set_config('tenancy.token', $1, $2)",
            &[&token(sub, org), &local],
        )
        .unwrap();
        let plan: Vec<String> = first_column(
            &mut tx,
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT count(*) FROM documents",
            &[],
        );
        let launched = plan.iter().find_map(|l| l.trim().strip_prefix("Workers Launched: "));
        assert!(launched.is_some_and(|n| n != "0"), "no parallel worker ran: {plan:?}");
        let count: i64 = tx.query_one("SELECT count(*) FROM documents", &[]).unwrap().get(0);
        let foreign: i64 = tx
            .query_one("SELECT count(*) FROM documents WHERE workspace_id <> $1", &[&own])
            .unwrap()
            .get(0);
        assert_eq!((count, foreign), (expected, 0), "{sub}, local {local}");
        tx.commit().unwrap();
    }
}

/// Signs bytes with a test key.
type Signer = Box<dyn Fn(&[u8]) -> Vec<u8>>;
/// Turns claims into a signed token.
type Minter = Box<dyn Fn(&serde_json::Value) -> String>;

/// Registers an issuer that signs with `algorithm`; returns its name and a token minter.
fn issuer_with(algorithm: &str) -> (String, Minter) {
    let rng = SystemRandom::new();
    let name = format!("https://{}.auth.test", algorithm.to_lowercase());
    let (jwk, sign): (serde_json::Value, Signer) = match algorithm {
        "ES256" => {
            let pk8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pk8.as_ref(), &rng).unwrap();
            let point = key.public_key().as_ref().to_vec();
            let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "ec1", "alg": "ES256",
                             "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])});
            (
                jwk,
                Box::new(move |m| key.sign(&SystemRandom::new(), m).unwrap().as_ref().to_vec()),
            )
        }
        _ => {
            let pk8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            let key = Ed25519KeyPair::from_pkcs8(pk8.as_ref()).unwrap();
            let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "alg": "EdDSA",
                             "x": URL_SAFE_NO_PAD.encode(key.public_key().as_ref())});
            (jwk, Box::new(move |m| key.sign(m).as_ref().to_vec()))
        }
    };
    let mut admin = admin();
    admin
        .execute(
            "SELECT tenancy.drop_issuer($1) FROM tenancy.issuers WHERE issuer = $1",
            &[&name],
        )
        .unwrap();
    admin
        .execute(
            "SELECT tenancy.add_issuer($1, $2::text::jsonb, NULL, ARRAY[$3])",
            &[&name, &json!({"keys": [jwk]}).to_string(), &algorithm],
        )
        .unwrap();
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": algorithm, "kid": jwk["kid"]}).to_string());
    let minter = move |claims: &serde_json::Value| {
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sign(input.as_bytes())))
    };
    (name, Box::new(minter))
}

#[test]
fn es256_and_eddsa_issuers_work_end_to_end() {
    for algorithm in ["ES256", "EdDSA"] {
        let (issuer, mint_token) = issuer_with(algorithm);
        let now = unix_now();
        let claims = json!({"iss": issuer, "sub": "user_bob", "org_id": "org_globex", "exp": now + 300});
        let token = mint_token(&claims);
        let mut app = app();
        let mut tx = app.transaction().unwrap();
        tx.execute("SELECT set_config('tenancy.token', $1, true)", &[&token])
            .unwrap();
        assert_eq!(workspace(&mut tx), "ws_globex", "{algorithm}");
        drop(tx);
        let tampered = format!("{}x", &token[..token.len() - 1]);
        let err = app
            .execute("SELECT set_config('tenancy.token', $1, true)", &[&tampered])
            .unwrap_err();
        assert_eq!(sqlstate(&err), "28000", "{algorithm} tampered: {err}");
    }
}

#[test]
fn a_key_outside_the_issuers_algorithms_is_refused_at_load() {
    let rng = SystemRandom::new();
    let pk8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pk8.as_ref()).unwrap();
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "ed9", "alg": "EdDSA",
                                "x": URL_SAFE_NO_PAD.encode(key.public_key().as_ref())}]});
    let err = admin()
        .execute(
            "SELECT tenancy.add_issuer('https://rs-only.auth.test', $1::text::jsonb)",
            &[&jwks.to_string()],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "22023", "{err}");
}

#[test]
fn a_pooled_role_refuses_session_level_tokens() {
    let pooled = "tenancy_client_pooled";
    admin()
        .batch_execute(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{pooled}') THEN
                 CREATE ROLE {pooled} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$;
             ALTER ROLE {pooled} SET tenancy.session_tokens = refuse;
             GRANT SELECT ON documents TO {pooled};"
        ))
        .unwrap();
    let mut client = connect_with(pooled, DATABASE, "").unwrap();
    let err = client.batch_execute("SET tenancy.session_tokens = allow").unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "only a superuser changes the policy: {err}");

    client
        .execute(
            "SELECT set_config('tenancy.token', $1, false)",
            &[&token("user_alice", "org_acme")],
        )
        .unwrap();
    let err = client.query("SELECT title FROM documents", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "a session-level token is refused: {err}");
    let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert_eq!(message, "tenancy token was set for the whole session");
    // The next transaction on this server connection (another pooled client) sees nothing either.
    let err = client.query("SELECT count(*) FROM documents", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");

    let mut tx = client.transaction().unwrap();
    set_local_token(&mut tx, "user_bob", "org_globex");
    assert_eq!(
        workspace(&mut tx),
        "ws_globex",
        "SET LOCAL over the session value works"
    );
    tx.commit().unwrap();

    let startup = format!("-c tenancy.token={}", token("user_bob", "org_globex"));
    let mut client = connect_with(pooled, DATABASE, &startup).unwrap();
    assert_eq!(
        workspace(&mut client),
        "ws_globex",
        "a startup option is not a session SET"
    );
}

#[test]
fn reset_and_discard_all_end_the_identity() {
    let mut app = app();
    for ending in ["RESET tenancy.token", "RESET ALL", "DISCARD ALL"] {
        app.execute(
            "SELECT set_config('tenancy.token', $1, false)",
            &[&token("user_alice", "org_acme")],
        )
        .unwrap();
        assert_eq!(workspace(&mut app), "ws_acme", "before {ending}");
        app.batch_execute(ending).unwrap();
        let err = app.query_one("SELECT tenancy.workspace_id()", &[]).unwrap_err();
        assert_eq!(sqlstate(&err), "28000", "after {ending}: {err}");
        let shown: String = app.query_one("SHOW tenancy.workspace_id", &[]).unwrap().get(0);
        assert_eq!(shown, "", "after {ending}, SHOW tenancy.workspace_id is empty");
    }
}
