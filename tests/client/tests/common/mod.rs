//! Shared set-up of the client tests: a database with the extension, a trusted local issuer,
//! two workspaces, a protected table, and an application role that cannot bypass RLS.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use postgres::types::{FromSql, ToSql};
use postgres::ToStatement;
use postgres::{Client, NoTls};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{json, Value};
use std::sync::OnceLock;

pub const ISSUER: &str = "https://auth.test/user_management/client_TEST";
pub const DATABASE: &str = "tenancy_client_tests";
pub const APP_ROLE: &str = "tenancy_client_app";

/// Host and port of the throw-away cluster started by `scripts/test`.
fn endpoint() -> (String, String) {
    let host = std::env::var("PG_TENANCY_TEST_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PG_TENANCY_TEST_PORT").expect("PG_TENANCY_TEST_PORT: run through scripts/test");
    (host, port)
}

/// A connection as `user` to `dbname`, with extra `options` (startup parameters).
pub fn connect_with(user: &str, dbname: &str, options: &str) -> Result<Client, postgres::Error> {
    let (host, port) = endpoint();
    let mut config = format!("host={host} port={port} user={user} dbname={dbname}");
    if !options.is_empty() {
        config.push_str(&format!(" options='{options}'"));
    }
    Client::connect(&config, NoTls)
}

/// A connection as the application role, after the one-time set-up.
pub fn app() -> Client {
    setup();
    connect_with(APP_ROLE, DATABASE, "").expect("app connection")
}

/// A superuser connection to the test database, after the one-time set-up.
pub fn admin() -> Client {
    setup();
    connect_with("postgres", DATABASE, "").expect("admin connection")
}

/// Signs WorkOS-shaped claims with the repository's test key (kid "k1").
pub fn mint(claims: &Value) -> String {
    let der = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/test-issuer-rsa.pk8")).unwrap();
    let key = RsaKeyPair::from_pkcs8(&der).unwrap();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#);
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig)
        .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Seconds since the Unix epoch, for `iat` and `exp` claims.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The public JWKS of the repository's test issuer.
pub fn fixture_jwks() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/test-issuer-jwks.json"
    ))
    .unwrap()
}

/// Drops and creates database `name`, and makes sure the login role `app_role` exists
/// (NOSUPERUSER NOBYPASSRLS), through a superuser connection to `postgres`.
pub fn recreate_database(name: &str, app_role: &str) {
    let mut postgres = connect_with("postgres", "postgres", "").expect("superuser connection");
    postgres
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
    postgres.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    postgres
        .batch_execute(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{app_role}') THEN
                 CREATE ROLE {app_role} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$"
        ))
        .unwrap();
}

/// Retries `f` every 200 ms until it returns a value; fails the test after `timeout`.
pub fn eventually<T>(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A valid token for `sub` in `org`, expiring in five minutes.
pub fn token(sub: &str, org: &str) -> String {
    let now = unix_now();
    mint(
        &json!({"iss": ISSUER, "sub": sub, "org_id": org, "role": "member", "sid": format!("session_{sub}"),
                 "permissions": ["documents:read"], "iat": now, "exp": now + 300}),
    )
}

/// `SET LOCAL tenancy.token` for `sub` in `org`, as a bound parameter, inside `tx`.
pub fn set_local_token(tx: &mut postgres::Transaction, sub: &str, org: &str) {
    tx.execute("SELECT set_config('tenancy.token', $1, true)", &[&token(sub, org)])
        .unwrap();
}

/// The error `sql` fails with, run as `sub` in `org` (`SET LOCAL tenancy.token`) in a transaction
/// that is then rolled back. Panics when `sql` succeeds.
pub fn refusal_as(client: &mut Client, sub: &str, org: &str, sql: &str) -> postgres::Error {
    let mut tx = client.transaction().unwrap();
    set_local_token(&mut tx, sub, org);
    tx.batch_execute(sql).expect_err(sql)
}

/// `prefix` made unique to this test run (audit rows outlive the test database).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// The first column of every row `sql` (a text or a prepared statement) returns (panics on an
/// error), for assertions.
pub fn first_column<T, S>(client: &mut impl postgres::GenericClient, sql: &S, params: &[&(dyn ToSql + Sync)]) -> Vec<T>
where
    T: for<'a> FromSql<'a>,
    S: ToStatement + ?Sized,
{
    client.query(sql, params).unwrap().iter().map(|r| r.get(0)).collect()
}

/// The SQLSTATE of an error, for assertions.
pub fn sqlstate(e: &postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// Creates the database and its fixtures once per test binary.
pub fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        recreate_database(DATABASE, APP_ROLE);
        let jwks = fixture_jwks();
        let mut db = connect_with("postgres", DATABASE, "").unwrap();
        db.batch_execute(&format!(
            "CREATE EXTENSION pg_tenancy;
             CREATE EXTENSION vector;
             SELECT tenancy.add_issuer('{ISSUER}', '{jwks}'::jsonb);
             INSERT INTO tenancy.workspaces VALUES ('ws_acme', 'org_acme', 'Acme', NULL),
                                                   ('ws_globex', 'org_globex', 'Globex', NULL),
                                                   ('ws_initech', 'org_initech', 'Initech', NULL);
             INSERT INTO tenancy.members VALUES ('ws_acme', 'user_alice', NULL, NULL),
                                                ('ws_globex', 'user_bob', NULL, NULL),
                                                ('ws_initech', 'user_carol', NULL, NULL);
             CREATE TABLE documents (
                 id bigserial PRIMARY KEY,
                 workspace_id text NOT NULL,
                 title text NOT NULL,
                 embedding vector(3));
             CREATE INDEX ON documents (workspace_id);
             GRANT SELECT, INSERT, UPDATE, DELETE ON documents TO {APP_ROLE};
             GRANT USAGE ON SEQUENCE documents_id_seq TO {APP_ROLE};
             INSERT INTO documents (workspace_id, title, embedding) VALUES
                 ('ws_acme', 'acme plan', '[1,0,0]'), ('ws_acme', 'acme budget', '[0.9,0.1,0]'),
                 ('ws_globex', 'globex secret', '[1,0,0]'), ('ws_initech', 'initech memo', '[0,1,0]');
             SELECT tenancy.protect('documents');"
        ))
        .unwrap();
    });
}

/// Port of the PgBouncer started by `scripts/pooler` (transaction pooling, ≤ 4 server
/// connections), from `PG_TENANCY_POOLER_PORT`.
pub fn pooler_port() -> String {
    std::env::var("PG_TENANCY_POOLER_PORT")
        .expect("PG_TENANCY_POOLER_PORT: run through scripts/test (scripts/pooler start)")
}

/// A connection through PgBouncer as `user` to `dbname` (a database or a PgBouncer alias), with
/// `application_name` set to `app_name`. Through a transaction pooler, use the extended protocol
/// (bound parameters) only inside an explicit transaction: outside one, its Parse and Execute may
/// reach different server connections.
pub fn pooled(user: &str, dbname: &str, app_name: &str) -> Result<Client, postgres::Error> {
    let config = format!(
        "host=127.0.0.1 port={} user={user} dbname={dbname} application_name={app_name}",
        pooler_port()
    );
    Client::connect(&config, NoTls)
}

/// A point of an isotropic cloud (the hard case of issue 36): its centre (1, 0.5, 1, 0.5, …) plus about 0.35 per dimension of noise (a sum of three
/// uniforms, near-Gaussian), from a small deterministic generator seeded by `seed`.
pub fn cloud_point(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..dimensions)
        .map(|d| {
            let noise = (uniform() + uniform() + uniform() - 1.5) * 0.7;
            (if d % 2 == 0 { 1.0 } else { 0.5 } + noise) as f32
        })
        .collect()
}

/// A transaction of ws_acme's member (user_alice) at recall target `target`, and the strategy
/// `tenancy.nearest` reports there for `table`'s `embedding`.
pub fn acme_at<'a>(app: &'a mut Client, table: &str, target: f64) -> (postgres::Transaction<'a>, String) {
    let mut tx = app.transaction().unwrap();
    set_local_token(&mut tx, "user_alice", "org_acme");
    tx.execute(
        "SELECT set_config('tenancy.nearest_recall', $1, true)",
        &[&target.to_string()],
    )
    .unwrap();
    let strategy = tx
        .query_one(
            &format!("SELECT tenancy.nearest_strategy(NULL::{table}, 'embedding')"),
            &[],
        )
        .unwrap()
        .get(0);
    (tx, strategy)
}

/// Creates `table` (`id`, `workspace_id`, `embedding vector(dimensions)`) with a B-tree on the
/// workspace, protected and readable by the application role, holding `acme_rows` rows of
/// ws_acme drawn by `acme(id)` and 300 of ws_globex drawn by `globex(id)` (ids after ws_acme's),
/// in one transaction, as the administrator. Indexes and statistics are the caller's.
pub fn protected_vector_table(
    table: &str,
    dimensions: usize,
    acme_rows: i64,
    acme: impl Fn(u64) -> Vec<f32>,
    globex: impl Fn(u64) -> Vec<f32>,
) -> Client {
    let mut db = admin();
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, workspace_id text NOT NULL, embedding vector({dimensions}));
         CREATE INDEX ON {table} (workspace_id);
         SELECT tenancy.protect('{table}');
         GRANT SELECT ON {table} TO {APP_ROLE};"
    ))
    .unwrap();
    let insert = db.prepare(&format!("INSERT INTO {table} VALUES ($1, $2, $3)")).unwrap();
    let mut tx = db.transaction().unwrap();
    for id in 0..acme_rows + 300 {
        let (workspace, point) = if id < acme_rows {
            ("ws_acme", acme(id as u64))
        } else {
            ("ws_globex", globex(id as u64))
        };
        tx.execute(&insert, &[&id, &workspace, &pgvector::Vector::from(point)])
            .unwrap();
    }
    tx.commit().unwrap();
    db
}

/// Mean recall@10 of `tenancy.nearest` on `table` (`id`, `embedding` of `dimensions`) against the
/// exact answer, for the queries `cloud_point(seeds, dimensions)` (drawn like ws_acme's rows,
/// none of them a row), at `target`, as ws_acme's member; and the strategy nearest reported.
pub fn measured_recall(table: &str, dimensions: usize, target: f64, seeds: std::ops::Range<u64>) -> (f64, String) {
    let queries: Vec<Vec<f32>> = seeds.map(|seed| cloud_point(seed, dimensions)).collect();
    measured_recall_of(table, target, &queries)
}

/// Mean recall@10 of `tenancy.nearest` on `table` for `queries`, at `target`, as ws_acme's
/// member, and the strategy nearest reported.
pub fn measured_recall_of(table: &str, target: f64, queries: &[Vec<f32>]) -> (f64, String) {
    let mut app = app();
    let (mut tx, strategy) = acme_at(&mut app, table, target);
    let (mut found, mut wanted) = (0usize, 0usize);
    for query in queries {
        let query = pgvector::Vector::from(query.clone());
        let nearest: Vec<i64> = first_column(
            &mut tx,
            &format!("SELECT (n.item).id FROM tenancy.nearest(NULL::{table}, 'embedding', $1::vector, 10) n"),
            &[&query],
        );
        let exact: Vec<i64> = first_column(
            &mut tx,
            &format!(
                "SELECT x.id FROM (SELECT id, embedding <=> $1 AS d FROM {table} OFFSET 0) x ORDER BY x.d LIMIT 10"
            ),
            &[&query],
        );
        assert_eq!(nearest.len(), 10, "min(k, n) rows");
        wanted += exact.len();
        found += exact.iter().filter(|id| nearest.contains(id)).count();
    }
    (found as f64 / wanted as f64, strategy)
}

/// Standard normal values from a seed (xorshift, Box–Muller).
fn normals(seed: u64, count: usize) -> Vec<f64> {
    let mut state = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407)
        | 1;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 / (1u64 << 53) as f64).max(f64::MIN_POSITIVE)
    };
    (0..count)
        .map(|_| (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos())
        .collect()
}

/// A point of one of `topics` topics (the seed picks it): each topic a centre about 0.85 from
/// the others', a rank-4 spread of norm 0.5 around it and noise of norm 0.25, as
/// `scripts/bench-recall`'s clustered workspaces are drawn. The same seed gives the same point.
pub fn topic_point(seed: u64, dimensions: usize, topics: u64) -> Vec<f32> {
    let topic = seed % topics;
    let d = dimensions as f64;
    let layout = normals(0x746f_7069_6300 + topic, dimensions * 5);
    let draw = normals(seed ^ 0x5eed_0000_0000, 4 + dimensions);
    (0..dimensions)
        .map(|i| {
            let centre = if i % 2 == 0 { 1.0 } else { 0.5 } + layout[i] * 0.6 / d.sqrt();
            let spread: f64 = (0..4)
                .map(|r| draw[r] * layout[dimensions * (r + 1) + i] * 0.5 / (4.0 * d).sqrt())
                .sum();
            (centre + spread + draw[4 + i] * 0.03) as f32
        })
        .collect()
}
