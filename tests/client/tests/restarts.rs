//! Faults that take the whole server down, or make it run out of space: `pg_ctl restart -m
//! immediate` while clients write (every process killed without a checkpoint, then crash
//! recovery), and a query or write that runs out of temporary file space (`temp_file_limit`, the
//! part of a full disk PostgreSQL lets a test provoke without root). Afterwards no protected row
//! is visible across workspaces, no acknowledged commit is lost, and no identity survives into a
//! new backend. (A SIGKILLed backend: faults.rs.)
//!
//! This file restarts the whole cluster: `PG_TENANCY_DATA` is its data directory and
//! `PG_TENANCY_SERVER_LOG` its log file; the test must run as the cluster's owner (scripts/test
//! runs it as the builder user). Cargo runs test binaries one after another, and the restart test
//! runs alone here (the other test takes its lock), so no other test sees the restart.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a recovery step may take.
const WAIT: Duration = Duration::from_secs(60);

/// A role of this file's own, so that its settings (`temp_file_limit`) reach no other test.
const ROLE: &str = "tenancy_restart_app";
/// Workspace, user and organization of each writer (from common::setup()).
const USERS: [(&str, &str, &str); 3] = [
    ("ws_acme", "user_alice", "org_acme"),
    ("ws_globex", "user_bob", "org_globex"),
    ("ws_initech", "user_carol", "org_initech"),
];

/// One test at a time in this binary: one restarts the server.
static SERIAL: Mutex<()> = Mutex::new(());

/// The role and the protected tables, once per binary.
fn fixtures() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let mut admin = admin();
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
                     CREATE ROLE {ROLE} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$;
                 ALTER ROLE {ROLE} IN DATABASE {DATABASE} SET temp_file_limit = '512kB';
                 ALTER ROLE {ROLE} IN DATABASE {DATABASE} SET work_mem = '64kB';
                 CREATE TABLE restart_notes (
                     id bigserial PRIMARY KEY,
                     workspace_id text NOT NULL,
                     writer int NOT NULL,
                     seq int NOT NULL,
                     UNIQUE (writer, seq));
                 CREATE INDEX ON restart_notes (workspace_id);
                 SELECT tenancy.protect('restart_notes');
                 CREATE TABLE spill_notes (id bigserial PRIMARY KEY, workspace_id text NOT NULL, body text NOT NULL);
                 CREATE INDEX ON spill_notes (workspace_id);
                 SELECT tenancy.protect('spill_notes');
                 INSERT INTO spill_notes (workspace_id, body)
                     SELECT w, repeat(md5(w || i), 4) FROM generate_series(1, 20000) i,
                            unnest(ARRAY['ws_acme', 'ws_globex', 'ws_initech']) w;
                 GRANT SELECT, INSERT, UPDATE, DELETE ON restart_notes, spill_notes TO {ROLE};
                 GRANT USAGE ON SEQUENCE restart_notes_id_seq, spill_notes_id_seq TO {ROLE};"
            ))
            .unwrap();
    });
}

fn role() -> postgres::Client {
    connect_with(ROLE, DATABASE, "").expect("connection as the restart role")
}

/// `pg_ctl restart -m immediate`: SIGQUIT to every server process, no shutdown checkpoint.
fn restart_immediately() {
    let data = std::env::var("PG_TENANCY_DATA").expect("PG_TENANCY_DATA: the cluster's data directory (scripts/test)");
    let log = std::env::var("PG_TENANCY_SERVER_LOG").unwrap_or_else(|_| format!("{data}/../server.log"));
    let bindir = std::env::var("PG_TENANCY_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let out = std::process::Command::new(format!("{bindir}/pg_ctl"))
        .args(["-D", &data, "-l", &log, "-m", "immediate", "-w", "-t", "120", "restart"])
        .output()
        .expect("pg_ctl");
    assert!(
        out.status.success(),
        "pg_ctl restart -m immediate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rows of `restart_notes` per workspace, as the superuser (no RLS).
fn rows_by_writer(admin: &mut postgres::Client) -> Vec<(String, i32, i32)> {
    admin
        .query("SELECT workspace_id, writer, seq FROM restart_notes", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[test]
fn an_immediate_restart_loses_no_acknowledged_commit_and_no_identity_survives() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    setup();
    fixtures();
    // A session-level token on a connection that the restart will cut.
    let mut holder = role();
    holder
        .execute(
            "SELECT set_config('tenancy.token', $1, false)",
            &[&token("user_alice", "org_acme")],
        )
        .unwrap();
    assert_eq!(
        holder
            .query_one("SELECT tenancy.workspace_id()", &[])
            .unwrap()
            .get::<_, String>(0),
        "ws_acme"
    );

    // Six writers, two per workspace, commit rows until the server goes away. Commits are
    // synchronous (the throw-away cluster defaults to synchronous_commit = off, where the last
    // fraction of a second of commits may be lost by design).
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let in_doubt = Arc::new(Mutex::new(BTreeSet::new()));
    let writers: Vec<_> = (0..6)
        .map(|w: i32| {
            let (stop, acknowledged, in_doubt) = (Arc::clone(&stop), Arc::clone(&acknowledged), Arc::clone(&in_doubt));
            std::thread::spawn(move || {
                let (ws, sub, org) = USERS[w as usize % 3];
                let token = token(sub, org);
                let mut client = role();
                client.batch_execute("SET synchronous_commit = on").unwrap();
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let result = (|| -> Result<(), postgres::Error> {
                        let mut tx = client.transaction()?;
                        tx.execute("SELECT set_config('tenancy.token', $1, true)", &[&token])?;
                        let got: String = tx
                            .query_one(
                                "INSERT INTO restart_notes (writer, seq) VALUES ($1, $2) RETURNING workspace_id",
                                &[&w, &seq],
                            )?
                            .get(0);
                        assert_eq!(got, ws);
                        tx.commit()
                    })();
                    match result {
                        Ok(()) => {
                            acknowledged.lock().unwrap().insert((w, seq));
                        }
                        Err(_) => {
                            in_doubt.lock().unwrap().insert((w, seq));
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    restart_immediately();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let in_doubt = in_doubt.lock().unwrap().clone();
    assert!(acknowledged.len() >= 6, "the writers committed before the restart");

    // The cut connection is gone, with its session token.
    assert!(
        holder.query_one("SELECT 1", &[]).is_err(),
        "the old backend died with the restart"
    );
    eventually("the cluster to accept connections again", WAIT, || {
        connect_with("postgres", DATABASE, "").ok()
    });

    let mut admin = admin();
    let rows = rows_by_writer(&mut admin);
    let found: BTreeSet<(i32, i32)> = rows.iter().map(|(_, w, s)| (*w, *s)).collect();
    let lost: Vec<_> = acknowledged.difference(&found).collect();
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
    let unexplained: Vec<_> = found
        .iter()
        .filter(|k| !acknowledged.contains(k) && !in_doubt.contains(k))
        .collect();
    assert!(unexplained.is_empty(), "rows nobody wrote: {unexplained:?}");
    for (ws, w, seq) in &rows {
        assert_eq!(ws, USERS[*w as usize % 3].0, "row ({w}, {seq}) in a wrong workspace");
    }
    println!(
        "immediate restart: {} acknowledged commits, all present; {} in flight at the crash, {} of them committed",
        acknowledged.len(),
        in_doubt.len(),
        in_doubt.intersection(&found).count()
    );

    // A new backend starts without identity, whatever the old one had.
    let mut fresh = role();
    let shown: String = fresh.query_one("SHOW tenancy.token", &[]).unwrap().get(0);
    assert_eq!(shown, "", "no token in a new backend");
    let err = fresh.query_one("SELECT tenancy.workspace_id()", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    let err = fresh.query("SELECT * FROM restart_notes", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");

    // Each workspace sees exactly its own rows, nothing of the others.
    for (ws, sub, org) in USERS {
        let mut tx = fresh.transaction().unwrap();
        set_local_token(&mut tx, sub, org);
        let seen: Vec<String> = first_column(&mut tx, "SELECT workspace_id FROM restart_notes", &[]);
        assert!(seen.iter().all(|w| w == ws), "{sub} saw another workspace's rows");
        let own = rows.iter().filter(|(w, _, _)| w == ws).count();
        assert_eq!(seen.len(), own, "{sub} sees all of its workspace's rows");
        tx.commit().unwrap();
    }
}

#[test]
fn running_out_of_temporary_file_space_leaves_no_rows_and_no_identity_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    setup();
    fixtures();
    let mut admin = admin();
    let before: i64 = admin.query_one("SELECT count(*) FROM spill_notes", &[]).unwrap().get(0);
    let mut client = role();

    // A read whose sort spills past temp_file_limit (512 kB; work_mem 64 kB).
    let err = refusal_as(
        &mut client,
        "user_alice",
        "org_acme",
        "SELECT body FROM spill_notes ORDER BY md5(body)",
    );
    assert_eq!(sqlstate(&err), "53400", "temp_file_limit exceeded: {err:?}");

    // A write whose sort spills: nothing of it remains.
    let err = refusal_as(
        &mut client,
        "user_alice",
        "org_acme",
        "INSERT INTO spill_notes (body) SELECT repeat(md5(i::text), 4) FROM generate_series(1, 100000) i ORDER BY random()",
    );
    assert_eq!(sqlstate(&err), "53400", "temp_file_limit exceeded: {err:?}");
    let after: i64 = admin.query_one("SELECT count(*) FROM spill_notes", &[]).unwrap().get(0);
    assert_eq!(after, before, "the failed write left no rows");

    // The same backend afterwards: no identity without a token, another user's token sees only
    // its own workspace, and the failed transactions' token is gone.
    let err = client.query_one("SELECT tenancy.workspace_id()", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    let mut tx = client.transaction().unwrap();
    set_local_token(&mut tx, "user_bob", "org_globex");
    let row = tx
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE workspace_id <> 'ws_globex') FROM spill_notes",
            &[],
        )
        .unwrap();
    let (seen, foreign): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((seen, foreign), (20000, 0), "bob sees his 20,000 rows and nothing else");
    tx.commit().unwrap();
}
