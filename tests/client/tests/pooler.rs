//! Isolation behind a transaction-mode pooler: PgBouncer (`scripts/pooler`) with at most 4 server
//! connections in front of the cluster, 64 clients in 24 workspaces, each running its own
//! transactions with `SET LOCAL tenancy.token` and, mixed in, transactions without a token, ones
//! that roll back, ones that fail mid-way, attempts to write into another workspace, and
//! session-level `SET tenancy.token` by mistake.
//!
//! The application role has `tenancy.session_tokens = refuse` (as an administrator sets it for a
//! pooled role): a token from a session-level SET stays in the server connection after the
//! transaction, where the next client of that connection would inherit it; with `refuse`, any
//! identity read from such a token raises 28000 instead. `session_set_behind_a_pooler_*` show both
//! behaviours deterministically through a pool of one server connection. It also has
//! `tenancy.credentials_in_text = refuse`, as recommended for application roles: every
//! transaction that tries the literal `SET LOCAL tenancy.token = '…'` first sees it refused
//! (28000) and then binds the token as a parameter.
//!
//! `PG_TENANCY_CHURN_SECONDS` (default 20) sets the churn's length; `scripts/soak` runs it longer.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;
use postgres::{Client, SimpleQueryMessage, Transaction};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The pooled application role: `tenancy.session_tokens = refuse`, `tenancy.credentials_in_text = refuse`.
const POOL_ROLE: &str = "tenancy_pooler_app";
/// The same grants, with the default `tenancy.session_tokens = allow`.
const ALLOW_ROLE: &str = "tenancy_pooler_allow";
/// The PgBouncer alias of the test database with a pool of one server connection.
const SINGLE: &str = "tenancy_client_tests_single";
const WORKSPACES: usize = 24;
const CLIENTS: usize = 64;
/// The most server connections PgBouncer may open to the database (`scripts/pooler`).
const SERVER_CONNECTIONS: i64 = 4;
const CHURN_APP: &str = "pooler_churn";

fn workspace(ws: usize) -> String {
    format!("ws_pool_{ws:02}")
}

fn org(ws: usize) -> String {
    format!("org_pool_{ws:02}")
}

/// Client `c` works in workspace `c % 24` as one of that workspace's two users.
fn client_workspace(c: usize) -> usize {
    c % WORKSPACES
}

fn client_user(c: usize) -> String {
    format!("user_pool_{:02}_{}", client_workspace(c), (c / WORKSPACES) % 2)
}

/// Workspaces, members, the two roles and the protected table, once per test binary.
fn fixtures() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let mut admin = admin();
        for role in [POOL_ROLE, ALLOW_ROLE] {
            admin
                .batch_execute(&format!(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                         CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$"
                ))
                .unwrap();
        }
        admin
            .batch_execute(&format!(
                "ALTER ROLE {POOL_ROLE} SET tenancy.session_tokens = 'refuse';
                 ALTER ROLE {POOL_ROLE} SET tenancy.credentials_in_text = 'refuse';
                 ALTER ROLE {ALLOW_ROLE} RESET ALL;
                 INSERT INTO tenancy.workspaces (workspace_id, organization_id, name)
                     SELECT format('ws_pool_%s', lpad(i::text, 2, '0')), format('org_pool_%s', lpad(i::text, 2, '0')),
                            format('Pool %s', i)
                       FROM generate_series(0, {last}) i;
                 INSERT INTO tenancy.members (workspace_id, user_id)
                     SELECT format('ws_pool_%s', lpad(i::text, 2, '0')), format('user_pool_%s_%s', lpad(i::text, 2, '0'), u)
                       FROM generate_series(0, {last}) i, generate_series(0, 1) u;
                 CREATE TABLE pooler_notes (
                     id bigserial PRIMARY KEY,
                     workspace_id text NOT NULL,
                     author text NOT NULL DEFAULT tenancy.user_id(),
                     client int NOT NULL,
                     seq int NOT NULL,
                     kind text NOT NULL,
                     body text);
                 CREATE INDEX ON pooler_notes (workspace_id, id);
                 SELECT tenancy.protect('pooler_notes');
                 INSERT INTO pooler_notes (workspace_id, author, client, seq, kind)
                     SELECT format('ws_pool_%s', lpad(i::text, 2, '0')), 'seed', -1, s, 'seed'
                       FROM generate_series(0, {last}) i, generate_series(1, 5) s;
                 GRANT SELECT, INSERT, UPDATE, DELETE ON pooler_notes TO {POOL_ROLE}, {ALLOW_ROLE};
                 GRANT USAGE ON SEQUENCE pooler_notes_id_seq TO {POOL_ROLE}, {ALLOW_ROLE};",
                last = WORKSPACES - 1
            ))
            .unwrap();
    });
}

/// A tiny deterministic generator (xorshift64*), one per client.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// What one client saw and did.
#[derive(Default)]
struct Tally {
    kinds: BTreeMap<&'static str, u64>,
    cross_tenant_rows_read: u64,
    tokenless_saw_data: u64,
    tokenless_not_refused: u64,
    session_set_refused: u64,
    session_set_not_refused: u64,
    foreign_writes_refused: u64,
    committed: BTreeSet<(i32, i32)>,
    discarded: BTreeSet<(i32, i32)>,
    server_pids: BTreeSet<i32>,
    unexpected: Vec<String>,
}

/// A client's token, re-minted before it expires.
struct Credential {
    sub: String,
    org: String,
    token: String,
    minted: Instant,
}

impl Credential {
    fn new(c: usize) -> Credential {
        let (sub, org) = (client_user(c), org(client_workspace(c)));
        Credential {
            token: token(&sub, &org),
            sub,
            org,
            minted: Instant::now(),
        }
    }

    fn get(&mut self) -> &str {
        if self.minted.elapsed() > Duration::from_secs(120) {
            self.token = token(&self.sub, &self.org);
            self.minted = Instant::now();
        }
        &self.token
    }
}

/// Sets the client's token for this transaction only, as a bound parameter. With `literal`, the
/// client first tries `SET LOCAL` with the token in the text, which the role's
/// `tenancy.credentials_in_text = refuse` must refuse (28000) inside a savepoint.
fn set_local(tx: &mut Transaction, token: &str, literal: bool) -> Result<(), postgres::Error> {
    if literal {
        let mut attempt = tx.transaction()?;
        match attempt.batch_execute(&format!("SET LOCAL tenancy.token = '{token}'")) {
            Err(e) if sqlstate(&e) == "28000" => drop(attempt),
            Err(e) => return Err(e),
            Ok(()) => panic!("a token written in the statement text was accepted with credentials_in_text = refuse"),
        }
    }
    tx.execute("SELECT set_config('tenancy.token', $1, true)", &[&token])
        .map(|_| ())
}

/// Reads as the client would and checks every row against the client's own workspace.
fn read_and_check(tx: &mut Transaction, c: usize, tally: &mut Tally) -> Result<(), postgres::Error> {
    let own = workspace(client_workspace(c));
    let who = tx.query_one(
        "SELECT pg_backend_pid(), tenancy.workspace_id(), tenancy.user_id()",
        &[],
    )?;
    tally.server_pids.insert(who.get(0));
    let (ws, user): (String, String) = (who.get(1), who.get(2));
    if ws != own || user != client_user(c) {
        tally
            .unexpected
            .push(format!("client {c}: identity {ws}/{user}, expected {own}"));
    }
    for row in tx.query(
        "SELECT workspace_id, client FROM pooler_notes ORDER BY id DESC LIMIT 20",
        &[],
    )? {
        let (ws, writer): (String, i32) = (row.get(0), row.get(1));
        let writer_ws = usize::try_from(writer).map(|w| workspace(client_workspace(w)));
        if ws != own || writer_ws.as_ref().is_ok_and(|w| *w != own) {
            tally.cross_tenant_rows_read += 1;
        }
    }
    let foreign: i64 = tx
        .query_one("SELECT count(*) FROM pooler_notes WHERE workspace_id <> $1", &[&own])?
        .get(0);
    tally.cross_tenant_rows_read += foreign as u64;
    Ok(())
}

/// Whether `result` is the loud refusal of an identity read (28000).
fn refused(result: &Result<Vec<SimpleQueryMessage>, postgres::Error>) -> bool {
    matches!(result, Err(e) if sqlstate(e) == "28000")
}

/// Rows in a simple-query result.
fn rows(messages: &[SimpleQueryMessage]) -> u64 {
    messages
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .count() as u64
}

/// One transaction of client `c`, of a kind chosen at random; `Err` is an unexpected failure.
fn one_transaction(
    client: &mut Client,
    c: usize,
    seq: i32,
    rng: &mut Rng,
    credential: &mut Credential,
    tally: &mut Tally,
) -> Result<(), postgres::Error> {
    let ci = c as i32;
    let dice = rng.below(100);
    let literal = rng.below(2) == 0;
    let token = credential.get().to_string();
    let kind = match dice {
        0..=54 => {
            // The intended use: own token, reads, writes, commit.
            let mut tx = client.transaction()?;
            set_local(&mut tx, &token, literal)?;
            read_and_check(&mut tx, c, tally)?;
            let row = tx.query_one(
                "INSERT INTO pooler_notes (client, seq, kind) VALUES ($1, $2, 'commit') RETURNING workspace_id",
                &[&ci, &seq],
            )?;
            let ws: String = row.get(0);
            if ws != workspace(client_workspace(c)) {
                tally.unexpected.push(format!("client {c}: insert defaulted to {ws}"));
            }
            if rng.below(4) == 0 {
                tx.execute(
                    "UPDATE pooler_notes SET body = $1 WHERE id = (SELECT max(id) FROM pooler_notes WHERE client <> $2)",
                    &[&format!("touched by {c}"), &ci],
                )?;
            }
            tx.commit()?;
            tally.committed.insert((ci, seq));
            "commit"
        }
        55..=64 => {
            // No token at all: every protected read must fail, never return rows.
            let result = client.simple_query("BEGIN; SELECT workspace_id FROM pooler_notes LIMIT 5");
            match &result {
                Ok(messages) => {
                    tally.tokenless_saw_data += rows(messages);
                    tally.tokenless_not_refused += 1;
                }
                Err(e) if sqlstate(e) != "28000" => tally
                    .unexpected
                    .push(format!("client {c}: tokenless read failed with {e}")),
                Err(_) => {}
            }
            client.batch_execute("ROLLBACK")?;
            "tokenless"
        }
        65..=74 => {
            let mut tx = client.transaction()?;
            set_local(&mut tx, &token, literal)?;
            tx.execute(
                "INSERT INTO pooler_notes (client, seq, kind) VALUES ($1, $2, 'rollback')",
                &[&ci, &seq],
            )?;
            read_and_check(&mut tx, c, tally)?;
            tx.rollback()?;
            tally.discarded.insert((ci, seq));
            "rollback"
        }
        75..=84 => {
            // An error mid-way: the transaction is aborted, its write discarded.
            let mut tx = client.transaction()?;
            set_local(&mut tx, &token, literal)?;
            tx.execute(
                "INSERT INTO pooler_notes (client, seq, kind) VALUES ($1, $2, 'error')",
                &[&ci, &seq],
            )?;
            let err = tx.batch_execute("SELECT 1 / 0").unwrap_err();
            if sqlstate(&err) != "22012" {
                tally.unexpected.push(format!("client {c}: division gave {err}"));
            }
            let after = tx.batch_execute("SELECT 1").unwrap_err();
            if sqlstate(&after) != "25P02" {
                tally
                    .unexpected
                    .push(format!("client {c}: aborted transaction gave {after}"));
            }
            drop(tx);
            tally.discarded.insert((ci, seq));
            "error"
        }
        85..=91 => {
            // Trying to write into another workspace.
            let other = workspace((client_workspace(c) + 1 + rng.below(WORKSPACES as u64 - 1) as usize) % WORKSPACES);
            let mut tx = client.transaction()?;
            set_local(&mut tx, &token, literal)?;
            let moved = tx.execute(
                "UPDATE pooler_notes SET body = 'stolen' WHERE workspace_id = $1",
                &[&other],
            )?;
            if moved != 0 {
                tally
                    .unexpected
                    .push(format!("client {c}: updated {moved} rows of {other}"));
            }
            match tx.execute(
                "INSERT INTO pooler_notes (workspace_id, client, seq, kind) VALUES ($1, $2, $3, 'planted')",
                &[&other, &ci, &seq],
            ) {
                Err(e) if sqlstate(&e) == "42501" => tally.foreign_writes_refused += 1,
                other => tally
                    .unexpected
                    .push(format!("client {c}: planting a row gave {other:?}")),
            }
            drop(tx);
            tally.discarded.insert((ci, seq));
            "foreign_write"
        }
        _ => {
            // Session-level SET by mistake, in one of three shapes.
            let set = format!("SET tenancy.token = '{token}'");
            let outcome = match rng.below(3) {
                // Inside the transaction that reads: refused there and then.
                0 => {
                    let r = client.simple_query(&format!("BEGIN; {set}; SELECT workspace_id FROM pooler_notes"));
                    client.batch_execute("ROLLBACK")?;
                    r
                }
                // As a transaction of its own, then a read in the next one (which a pooler
                // may send to any server connection).
                1 => match client.simple_query(&set) {
                    Err(e) => Err(e),
                    Ok(_) => {
                        let r = client.simple_query("BEGIN; SELECT workspace_id FROM pooler_notes LIMIT 5");
                        client.batch_execute("ROLLBACK")?;
                        r
                    }
                },
                // Committed inside a transaction without a read; the next one reads.
                _ => match client.simple_query(&format!("BEGIN; {set}; COMMIT")) {
                    Err(e) => {
                        client.batch_execute("ROLLBACK")?;
                        Err(e)
                    }
                    Ok(_) => {
                        let r = client.simple_query("BEGIN; SELECT workspace_id FROM pooler_notes LIMIT 5");
                        client.batch_execute("ROLLBACK")?;
                        r
                    }
                },
            };
            match &outcome {
                Ok(messages) => {
                    tally.tokenless_saw_data += rows(messages);
                    tally.session_set_not_refused += 1;
                }
                Err(_) if refused(&outcome) => tally.session_set_refused += 1,
                Err(e) => tally.unexpected.push(format!("client {c}: session SET gave {e}")),
            }
            "session_set"
        }
    };
    *tally.kinds.entry(kind).or_default() += 1;
    Ok(())
}

/// Samples the number of server connections of the churn every 100 ms; returns the maximum.
fn monitor(stop: Arc<AtomicBool>, peak: Arc<AtomicI64>) {
    let mut admin = admin();
    while !stop.load(Ordering::Relaxed) {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND datname = $2 AND application_name = $3",
                &[&POOL_ROLE, &DATABASE, &CHURN_APP],
            )
            .unwrap()
            .get(0);
        peak.fetch_max(n, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn churn_through_a_transaction_pooler_never_crosses_workspaces() {
    setup();
    fixtures();
    let seconds: u64 = std::env::var("PG_TENANCY_CHURN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let watcher = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || monitor(stop, peak))
    };
    let total = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let total = Arc::clone(&total);
            std::thread::spawn(move || {
                let mut client = pooled(POOL_ROLE, DATABASE, CHURN_APP).expect("connection through PgBouncer");
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
                let mut credential = Credential::new(c);
                let mut tally = Tally::default();
                let mut seq = 0;
                while Instant::now() < deadline {
                    seq += 1;
                    if let Err(e) = one_transaction(&mut client, c, seq, &mut rng, &mut credential, &mut tally) {
                        tally.unexpected.push(format!("client {c}, transaction {seq}: {e}"));
                        if client.is_closed() {
                            break;
                        }
                        let _ = client.batch_execute("ROLLBACK");
                    }
                }
                let mut total = total.lock().unwrap();
                for (kind, n) in tally.kinds {
                    *total.kinds.entry(kind).or_default() += n;
                }
                total.cross_tenant_rows_read += tally.cross_tenant_rows_read;
                total.tokenless_saw_data += tally.tokenless_saw_data;
                total.tokenless_not_refused += tally.tokenless_not_refused;
                total.session_set_refused += tally.session_set_refused;
                total.session_set_not_refused += tally.session_set_not_refused;
                total.foreign_writes_refused += tally.foreign_writes_refused;
                total.committed.extend(tally.committed);
                total.discarded.extend(tally.discarded);
                total.server_pids.extend(tally.server_pids);
                total.unexpected.extend(tally.unexpected);
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let total = Arc::try_unwrap(total).ok().unwrap().into_inner().unwrap();

    // Every write, checked afterwards as the superuser (no RLS).
    let mut admin = admin();
    let mut wrong_workspace = 0u64;
    let mut found_committed = BTreeSet::new();
    let mut found_discarded = 0u64;
    for row in admin
        .query(
            "SELECT workspace_id, author, client, seq, kind, body FROM pooler_notes WHERE client >= 0",
            &[],
        )
        .unwrap()
    {
        let (ws, author, c, seq, kind): (String, String, i32, i32, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let c = c as usize;
        if ws != workspace(client_workspace(c)) || author != client_user(c) {
            wrong_workspace += 1;
        }
        if kind == "commit" {
            assert!(
                found_committed.insert((c as i32, seq)),
                "row ({c}, {seq}) written twice"
            );
        } else {
            found_discarded += 1;
        }
    }
    for row in admin
        .query(
            "SELECT workspace_id, body FROM pooler_notes WHERE body IS NOT NULL",
            &[],
        )
        .unwrap()
    {
        let (ws, body): (String, String) = (row.get(0), row.get(1));
        let toucher: Option<usize> = body.strip_prefix("touched by ").and_then(|c| c.parse().ok());
        if toucher.is_none_or(|c| ws != workspace(client_workspace(c))) {
            wrong_workspace += 1;
        }
    }
    let lost = total.committed.difference(&found_committed).count();
    let phantom = found_committed.difference(&total.committed).count();

    let transactions: u64 = total.kinds.values().sum();
    println!(
        "pooler churn: {CLIENTS} clients, {WORKSPACES} workspaces, {seconds} s, {transactions} transactions ({:.0}/s) {:?}",
        transactions as f64 / elapsed,
        total.kinds
    );
    println!(
        "  server connections: peak {} concurrent, {} distinct backends seen by the clients",
        peak.load(Ordering::Relaxed),
        total.server_pids.len()
    );
    println!(
        "  cross-tenant rows read = {}, rows written into a wrong workspace = {wrong_workspace}, tokenless transactions that saw data = {}",
        total.cross_tenant_rows_read, total.tokenless_saw_data
    );
    println!(
        "  committed writes = {}, lost = {lost}, unexpected = {phantom}, discarded writes found = {found_discarded}; foreign writes refused = {}; session SETs refused loudly = {}, not refused = {}",
        total.committed.len(),
        total.foreign_writes_refused,
        total.session_set_refused,
        total.session_set_not_refused
    );
    for line in total.unexpected.iter().take(20) {
        println!("  unexpected: {line}");
    }

    assert!(transactions > CLIENTS as u64 * 5, "the churn ran");
    assert_eq!(total.cross_tenant_rows_read, 0, "cross-tenant rows read");
    assert_eq!(wrong_workspace, 0, "rows written into a wrong workspace");
    assert_eq!(total.tokenless_saw_data, 0, "tokenless transactions that saw data");
    assert_eq!(
        total.tokenless_not_refused, 0,
        "tokenless reads that did not raise 28000"
    );
    assert_eq!(
        total.session_set_not_refused, 0,
        "session-level SETs that were not refused"
    );
    assert!(total.session_set_refused > 0, "session-level SETs were tried");
    assert_eq!(
        (lost, phantom, found_discarded),
        (0, 0, 0),
        "every committed write, and only those"
    );
    assert!(
        total.unexpected.is_empty(),
        "{} unexpected outcomes",
        total.unexpected.len()
    );
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        (1..=SERVER_CONNECTIONS).contains(&peak),
        "{peak} server connections for {CLIENTS} clients"
    );
    if seconds <= 300 {
        assert!(
            total.server_pids.len() as i64 <= SERVER_CONNECTIONS,
            "{:?}",
            total.server_pids
        );
    }
}

/// The first server connection's pid and `tenancy.workspace_id()` as a client of the one-connection
/// pool sees it in a fresh transaction without a token of its own.
fn inherited(user: &str) -> (i32, Result<Vec<SimpleQueryMessage>, postgres::Error>) {
    let mut client = pooled(user, SINGLE, "pooler_single").unwrap();
    let pid = client
        .simple_query("SELECT pg_backend_pid()")
        .unwrap()
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(|p| p.parse().unwrap()),
            _ => None,
        })
        .unwrap();
    let read = client.simple_query("BEGIN; SELECT tenancy.workspace_id(); ROLLBACK");
    if read.is_err() {
        client.batch_execute("ROLLBACK").unwrap();
    }
    (pid, read)
}

/// The single value of a one-row simple-query result.
fn value(messages: &[SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
        _ => None,
    })
}

#[test]
fn session_set_behind_a_pooler_is_inherited_by_the_next_client_when_allowed() {
    setup();
    fixtures();
    // Client A makes the mistake: a session-level SET, through a pool of one server connection.
    let mut a = pooled(ALLOW_ROLE, SINGLE, "pooler_single").unwrap();
    a.batch_execute(&format!("SET tenancy.token = '{}'", token(&client_user(0), &org(0))))
        .unwrap();
    let a_pid = value(&a.simple_query("SELECT pg_backend_pid()").unwrap()).unwrap();
    drop(a);
    // Client B, another application connection, sends no token and gets A's identity: this is
    // what tenancy.session_tokens = refuse exists for.
    let (b_pid, read) = inherited(ALLOW_ROLE);
    assert_eq!(b_pid.to_string(), a_pid, "one server connection");
    let seen = value(&read.expect("allowed: B reads with A's token"));
    assert_eq!(
        seen.as_deref(),
        Some(workspace(0).as_str()),
        "B inherited A's workspace"
    );
    let mut cleanup = pooled(ALLOW_ROLE, SINGLE, "pooler_single").unwrap();
    cleanup.batch_execute("RESET tenancy.token").unwrap();
    let (_, read) = inherited(ALLOW_ROLE);
    assert!(refused(&read), "after RESET: {read:?}");
}

#[test]
fn session_set_behind_a_pooler_is_refused_loudly_with_session_tokens_refuse() {
    setup();
    fixtures();
    let mut a = pooled(POOL_ROLE, SINGLE, "pooler_single").unwrap();
    let set = a.simple_query(&format!("SET tenancy.token = '{}'", token(&client_user(1), &org(1))));
    // The mistake fails loudly for A itself, at the SET or at its first identity read …
    if let Err(e) = &set {
        assert_eq!(sqlstate(e), "28000", "{e}");
    } else {
        let read = a.simple_query("BEGIN; SELECT workspace_id FROM pooler_notes");
        let err = read.expect_err("A's session token must not be used");
        assert_eq!(sqlstate(&err), "28000", "{err}");
        let message = err.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
        assert!(message.contains("whole session"), "{message}");
        a.batch_execute("ROLLBACK").unwrap();
    }
    drop(a);
    // … and client B, on the same server connection, inherits nothing.
    let (_, read) = inherited(POOL_ROLE);
    let err = read.expect_err("B must not inherit A's identity");
    assert_eq!(sqlstate(&err), "28000", "{err}");
    // B's own per-transaction token works on that connection, and ends with its transaction.
    let mut b = pooled(POOL_ROLE, SINGLE, "pooler_single").unwrap();
    let mut tx = b.transaction().unwrap();
    set_local_token(&mut tx, &client_user(2), &org(2));
    let ws: String = tx.query_one("SELECT tenancy.workspace_id()", &[]).unwrap().get(0);
    assert_eq!(ws, workspace(2));
    let n: i64 = tx
        .query_one("SELECT count(*) FROM pooler_notes WHERE workspace_id <> $1", &[&ws])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    tx.commit().unwrap();
    let (_, read) = inherited(POOL_ROLE);
    assert!(refused(&read), "after B's COMMIT: {read:?}");
    b.batch_execute("RESET tenancy.token").unwrap();
}

#[test]
fn session_tokens_refuse_still_accepts_a_startup_option_token() {
    setup();
    fixtures();
    // Not through PgBouncer (it does not pass startup options): a token given when connecting
    // is the connection's own, so `refuse` accepts it.
    let options = format!("-c tenancy.token={}", token(&client_user(3), &org(3)));
    let mut direct = connect_with(POOL_ROLE, DATABASE, &options).unwrap();
    let ws: String = direct.query_one("SELECT tenancy.workspace_id()", &[]).unwrap().get(0);
    assert_eq!(ws, workspace(3));
    // The role has credentials_in_text = refuse: a token written in a SET is refused at the SET,
    // and the connection's own token stays.
    let err = direct
        .batch_execute(&format!("SET tenancy.token = '{}'", token(&client_user(4), &org(4))))
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    let ws: String = direct.query_one("SELECT tenancy.workspace_id()", &[]).unwrap().get(0);
    assert_eq!(ws, workspace(3));
    // The same role's session-level set_config (bound) on a direct connection is refused at the
    // first identity read.
    direct
        .execute(
            "SELECT set_config('tenancy.token', $1, false)",
            &[&token(&client_user(4), &org(4))],
        )
        .ok();
    let err = direct.query_one("SELECT tenancy.workspace_id()", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
}

#[test]
fn a_held_cursor_cannot_outlive_a_per_transaction_identity() {
    setup();
    fixtures();
    // Client A declares a cursor WITH HOLD under its SET LOCAL token: refused, so that nothing of
    // A's is left on the server connection for the pooler's next client.
    let mut a = pooled(POOL_ROLE, SINGLE, "pooler_single").unwrap();
    let err = refusal_as(
        &mut a,
        &client_user(5),
        &org(5),
        "DECLARE held CURSOR WITH HOLD FOR SELECT * FROM pooler_notes",
    );
    assert_eq!(sqlstate(&err), "42501", "{err}");
    let message = err.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    assert!(message.contains("cursor with hold"), "{message}");
    drop(a);
    let mut b = pooled(POOL_ROLE, SINGLE, "pooler_single").unwrap();
    let open: i64 = b
        .query_one("SELECT count(*) FROM pg_cursors WHERE is_holdable", &[])
        .unwrap()
        .get(0);
    assert_eq!(open, 0, "no cursor left on the server connection");
    // Cursors without HOLD under a token, and held cursors without any credential, work.
    let mut tx = b.transaction().unwrap();
    set_local_token(&mut tx, &client_user(5), &org(5));
    tx.batch_execute("DECLARE c CURSOR FOR SELECT workspace_id FROM pooler_notes; FETCH 1 FROM c; CLOSE c")
        .unwrap();
    tx.commit().unwrap();
    b.batch_execute("DECLARE anonymous_held CURSOR WITH HOLD FOR SELECT 1; CLOSE anonymous_held")
        .unwrap();
    // A token of the connection's own (a startup option, on a direct connection) may hold a
    // cursor past its transaction: the cursor stays with the client that set it.
    let options = format!("-c tenancy.token={}", token(&client_user(5), &org(5)));
    let mut direct = connect_with(POOL_ROLE, DATABASE, &options).unwrap();
    direct
        .batch_execute("BEGIN; DECLARE mine CURSOR WITH HOLD FOR SELECT workspace_id FROM pooler_notes; COMMIT")
        .unwrap();
    let rows = direct.query("FETCH ALL FROM mine", &[]).unwrap();
    assert!(
        rows.iter().all(|r| r.get::<_, String>(0) == workspace(5)),
        "own rows only"
    );
}
