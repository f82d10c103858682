//! Hot standbys: a streaming replica of the test cluster (`pg_basebackup -R` over loopback, with
//! pg_tenancy preloaded as on the primary) serves identity, protected reads, `tenancy.nearest`,
//! coverage and the audit views; changes made on the primary (a member disabled, a session
//! revoked, a key withdrawn, a JWKS rotated) are refused there from the first statement after
//! their replay (the delay is printed); a denial raised on the standby is recorded in the
//! primary's `tenancy.audit_log`, named by the standby, exactly once, also when the primary was
//! unreachable and the standby restarted meanwhile; after a promotion, identity, protection and
//! the audit writer carry on.
//!
//! Each test makes its own standby under the primary's data directory's parent and removes it at
//! the end (`PG_TENANCY_DATA`, `PG_TENANCY_PG_BIN`: scripts/test); run as the cluster's owner.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;
use postgres::{Client, NoTls};
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long replay, a restart or a promotion may take.
const WAIT: Duration = Duration::from_secs(60);
/// An issuer of this file's own, so that rotating its keys reaches no other test.
const REPLICA_ISSUER: &str = "https://auth.test/replica";

/// A streaming replica of the test cluster; stopped and removed when dropped.
struct Standby {
    dir: PathBuf,
    port: u16,
    name: String,
}

fn bindir() -> String {
    std::env::var("PG_TENANCY_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
}

fn primary_port() -> String {
    std::env::var("PG_TENANCY_TEST_PORT").expect("PG_TENANCY_TEST_PORT: run through scripts/test")
}

/// Runs a server program; panics with its output when it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(format!("{}/{program}", bindir()))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `name` under the primary's data directory's parent, emptied: a server left running there by
/// an interrupted run is stopped first.
fn fresh_server_dir(name: &str) -> PathBuf {
    let data = std::env::var("PG_TENANCY_DATA").expect("PG_TENANCY_DATA: the primary's data directory (scripts/test)");
    let dir = PathBuf::from(data).parent().unwrap().join(name);
    if dir.join("data/postmaster.pid").exists() {
        stop_immediately(&dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `pg_ctl stop -m immediate` of the server in `dir`/data, whatever its state.
fn stop_immediately(dir: &std::path::Path) {
    let data = dir.join("data");
    let _ = Command::new(format!("{}/pg_ctl", bindir()))
        .args(["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"])
        .output();
}

/// Stops the server in `dir` and removes it (kept for a look when the test failed).
fn remove_server_dir(dir: &std::path::Path) {
    stop_immediately(dir);
    if !std::thread::panicking() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Appends `settings` to the server's postgresql.conf.
fn append_conf(datadir: &std::path::Path, settings: &str) {
    use std::io::Write;
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(datadir.join("postgresql.conf"))
        .unwrap();
    writeln!(conf, "{settings}").unwrap();
}

impl Standby {
    /// A new standby named `name` on `port`, started and caught up with the primary.
    fn start(name: &str, port: u16) -> Standby {
        let dir = fresh_server_dir(&format!("standby-{name}"));
        let datadir = dir.join("data");
        // A replication slot of its own, made before the backup starts: with only the temporary
        // slot of `-X stream`, a checkpoint of the other test's backup removed the WAL segment
        // this one was about to stream (seen on PostgreSQL 18). One backup at a time, too.
        static BACKUPS: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = BACKUPS.lock().unwrap_or_else(|e| e.into_inner());
        drop_slot(name);
        run(
            "pg_basebackup",
            &[
                "-C",
                "-S",
                name,
                "-D",
                datadir.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-h",
                "127.0.0.1",
                "-p",
                &primary_port(),
                "-U",
                "postgres",
            ],
        );
        // The primary's configuration came along (pg_tenancy preloaded); this server's own:
        append_conf(
            &datadir,
            &format!(
                "port = {port}\nunix_socket_directories = '{}'\ncluster_name = '{name}'\nhot_standby = on",
                dir.display()
            ),
        );
        let standby = Standby {
            dir,
            port,
            name: name.to_string(),
        };
        standby.pg_ctl("start");
        standby.catch_up();
        standby
    }

    fn pg_ctl(&self, action: &str) {
        let log = self.dir.join("server.log");
        run(
            "pg_ctl",
            &[
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "-t",
                "120",
                action,
            ],
        );
    }

    /// A connection to the standby.
    fn connect(&self, user: &str, dbname: &str, application_name: &str) -> Client {
        Client::connect(
            &format!(
                "host=127.0.0.1 port={} user={user} dbname={dbname} application_name='{application_name}'",
                self.port
            ),
            NoTls,
        )
        .unwrap()
    }

    /// Waits until the standby has replayed everything the primary has written so far.
    fn catch_up(&self) -> Duration {
        let mut primary = connect_with("postgres", "postgres", "").unwrap();
        let lsn: String = primary
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .unwrap()
            .get(0);
        let start = Instant::now();
        eventually("the standby to replay the primary's WAL", WAIT, || {
            let mut standby = Client::connect(
                &format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port),
                NoTls,
            )
            .ok()?;
            let done: bool = standby
                .query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                    &[&lsn],
                )
                .ok()?
                .get(0);
            done.then_some(())
        });
        start.elapsed()
    }

    /// Sets `tenancy.audit_primary_conninfo` on the standby and reloads.
    fn set_audit_conninfo(&self, conninfo: Option<&str>) {
        let mut admin = self.connect("postgres", "postgres", "replica test");
        match conninfo {
            Some(c) => admin
                .batch_execute(&format!("ALTER SYSTEM SET tenancy.audit_primary_conninfo = '{c}'"))
                .unwrap(),
            None => admin
                .batch_execute("ALTER SYSTEM RESET tenancy.audit_primary_conninfo")
                .unwrap(),
        }
        admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    }

    /// Files waiting in the standby's spool.
    fn spooled(&self) -> usize {
        std::fs::read_dir(self.dir.join("data/pg_tenancy_spool"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        remove_server_dir(&self.dir);
        drop_slot(&self.name);
    }
}

/// Drops the primary's replication slot `name`, if there is one.
fn drop_slot(name: &str) {
    if let Ok(mut primary) = connect_with("postgres", "postgres", "") {
        let _ = primary.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active",
            &[&name],
        );
    }
}

/// The primary's fixtures of this file: its issuer, users of their own, the audit database.
fn fixtures() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let mut admin = admin();
        let jwks = fixture_jwks();
        admin
            .batch_execute(&format!(
                "SELECT tenancy.add_issuer('{REPLICA_ISSUER}', '{jwks}'::jsonb);
                 INSERT INTO tenancy.members VALUES ('ws_acme', 'user_replica_read', NULL, NULL),
                                                    ('ws_acme', 'user_replica_disabled', NULL, NULL),
                                                    ('ws_acme', 'user_replica_revoked', NULL, NULL),
                                                    ('ws_acme', 'user_replica_rotated', NULL, NULL),
                                                    ('ws_globex', 'user_replica_promoted', NULL, NULL);
                 CREATE TABLE replica_notes (id bigserial PRIMARY KEY, workspace_id text NOT NULL, body text,
                                             embedding vector(3));
                 CREATE INDEX ON replica_notes (workspace_id);
                 SELECT tenancy.protect('replica_notes');
                 GRANT SELECT, INSERT ON replica_notes TO {APP_ROLE};
                 GRANT USAGE ON SEQUENCE replica_notes_id_seq TO {APP_ROLE};"
            ))
            .unwrap();
        let mut audit = connect_with("postgres", "postgres", "").unwrap();
        audit
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_tenancy")
            .unwrap();
    });
}

/// A token of this file's issuer.
fn replica_token(sub: &str, org: &str) -> String {
    let now = unix_now();
    mint(
        &json!({"iss": REPLICA_ISSUER, "sub": sub, "org_id": org, "sid": format!("session_{sub}"),
                 "iat": now, "exp": now + 600}),
    )
}

/// The workspaces `client` sees in `documents` with `token` set for one transaction, or the
/// SQLSTATE of the refusal.
fn workspaces_seen(client: &mut Client, credential: (&str, &str)) -> Result<Vec<String>, String> {
    let mut tx = client.transaction().map_err(|e| sqlstate(&e))?;
    tx.execute("SELECT set_config($1, $2, true)", &[&credential.0, &credential.1])
        .map_err(|e| sqlstate(&e))?;
    let rows = tx
        .query("SELECT DISTINCT workspace_id FROM documents ORDER BY 1", &[])
        .map_err(|e| sqlstate(&e))?;
    tx.commit().map_err(|e| sqlstate(&e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Rows of the primary's audit log raised by connections named `application_name`, with their
/// origin.
fn audited(application_name: &str) -> Vec<(String, Option<String>)> {
    let mut audit = connect_with("postgres", "postgres", "").unwrap();
    audit
        .query(
            "SELECT reason, origin FROM tenancy.audit_log WHERE application_name = $1 ORDER BY id",
            &[&application_name],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Raises one denial on `client` (a malformed token): 28000.
fn raise_denial(client: &mut Client) {
    let mut tx = client.transaction().unwrap();
    let err = tx
        .execute("SELECT set_config('tenancy.token', 'not-a-token', true)", &[])
        .and_then(|_| tx.query("SELECT count(*) FROM documents", &[]).map(|_| 0))
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
}

/// Time from a change committed on the primary until `refused` holds on the standby.
/// Time until `seen` (what the standby answers) is a 28000 refusal; fails with the last answer.
fn until_refused(what: &str, mut seen: impl FnMut() -> Result<Vec<String>, String>) -> Duration {
    let start = Instant::now();
    loop {
        let answer = seen();
        if answer == Err("28000".to_string()) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < WAIT,
            "{what}: the standby never refused the withdrawn credential (last answer {answer:?})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_hot_standby_serves_tenants_and_sends_its_denials_to_the_primary() {
    fixtures();
    let mut primary = admin();
    // The test cluster runs with synchronous_commit = off (WAL flushed every wal_writer_delay,
    // 200 ms); the changes below are committed as a deployment would commit them.
    primary.batch_execute("SET synchronous_commit = on").unwrap();
    let key: String = primary
        .query_one("SELECT tenancy.create_api_key('ws_globex', 'replica reader')", &[])
        .unwrap()
        .get(0);
    let standby = Standby::start("tenancy_standby_a", 54359);
    let mut app = standby.connect(APP_ROLE, DATABASE, "replica reader");

    // Identity by token and by API key, filtered reads, nearest.
    let alice = replica_token("user_replica_read", "org_acme");
    assert_eq!(
        workspaces_seen(&mut app, ("tenancy.token", &alice)),
        Ok(vec!["ws_acme".to_string()])
    );
    assert_eq!(
        workspaces_seen(&mut app, ("tenancy.api_key", &key)),
        Ok(vec!["ws_globex".to_string()])
    );
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT set_config('tenancy.token', $1, true)", &[&alice])
        .unwrap();
    let nearest: Vec<String> = tx
        .query(
            "SELECT (n.item).workspace_id FROM tenancy.nearest(NULL::documents, 'embedding', '[1,0,0]'::vector, 10) n",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(nearest, ["ws_acme", "ws_acme"], "min(k, n) rows, all the caller's");
    // A write is refused as on any standby (25006), not by us.
    let err = tx
        .execute(
            "INSERT INTO replica_notes (workspace_id, body) VALUES ('ws_acme', 'x')",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "25006");
    tx.rollback().unwrap();

    // Coverage and the audit views answer on the standby.
    let mut standby_admin = standby.connect("postgres", DATABASE, "replica admin");
    let findings: i64 = standby_admin
        .query_one("SELECT count(*) FROM tenancy.coverage", &[])
        .unwrap()
        .get(0);
    assert!(findings >= 0);
    standby_admin.query("SELECT * FROM tenancy.denials", &[]).unwrap();
    standby_admin.query("SELECT * FROM tenancy.stats", &[]).unwrap();
    standby_admin
        .query("SELECT count(*) FROM tenancy.audit_log", &[])
        .unwrap_or_else(|e| panic!("the replicated audit log is readable: {e}"));

    // Changes on the primary are refused on the standby from the first statement after replay,
    // under light write load (one insert every 10 ms on the primary meanwhile).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut w = connect_with("postgres", DATABASE, "").unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                w.execute(
                    "INSERT INTO replica_notes (workspace_id, body) VALUES ('ws_initech', 'load')",
                    &[],
                )
                .unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut delays = vec![];
    // The same key published under another key id: tokens signed as "k1" become unknown.
    let rotated_issuer_jwks = fixture_jwks().replace("\"k1\"", "\"k2\"");
    assert_ne!(rotated_issuer_jwks, fixture_jwks());
    let changes: [(&str, String, (&str, String)); 4] = [
        (
            "member disabled",
            "UPDATE tenancy.members SET disabled_at = now() WHERE user_id = 'user_replica_disabled'".into(),
            ("tenancy.token", replica_token("user_replica_disabled", "org_acme")),
        ),
        (
            "session revoked",
            "SELECT tenancy.revoke_session('session_user_replica_revoked')".into(),
            ("tenancy.token", replica_token("user_replica_revoked", "org_acme")),
        ),
        (
            "API key revoked",
            "SELECT tenancy.revoke_api_key(id) FROM tenancy.api_keys WHERE name = 'replica reader'".into(),
            ("tenancy.api_key", key.clone()),
        ),
        (
            "JWKS rotated",
            format!("SELECT tenancy.set_jwks('{REPLICA_ISSUER}', '{rotated_issuer_jwks}'::jsonb)"),
            ("tenancy.token", replica_token("user_replica_rotated", "org_acme")),
        ),
    ];
    for (what, sql, credential) in &changes {
        let credential = (credential.0, credential.1.as_str());
        assert!(
            workspaces_seen(&mut app, credential).is_ok(),
            "{what}: accepted before the change"
        );
        primary.batch_execute(sql).unwrap();
        let delay = until_refused(what, || workspaces_seen(&mut app, credential));
        delays.push(format!("{what} {:.1} ms", delay.as_secs_f64() * 1e3));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    println!(
        "commit on the primary to refusal on the standby (synchronous_commit on, writes every 10 ms): {}",
        delays.join(", ")
    );
    primary
        .batch_execute(&format!(
            "SELECT tenancy.set_jwks('{REPLICA_ISSUER}', '{}'::jsonb)",
            fixture_jwks()
        ))
        .unwrap();

    // A denial on the standby reaches the primary's audit log once, named by the standby.
    // Names of this run's denying connections (the primary's audit log outlives test runs).
    let (d1, d2, d3) = (
        unique("replica_denial"),
        unique("replica_denial"),
        unique("replica_denial"),
    );
    let mut denied = standby.connect(APP_ROLE, DATABASE, &d1);
    raise_denial(&mut denied);
    let rows = eventually("the standby's denial on the primary", WAIT, || {
        let rows = audited(&d1);
        (!rows.is_empty()).then_some(rows)
    });
    assert_eq!(rows, [("malformed".to_string(), Some(standby.name.clone()))]);

    // The primary unreachable: denials are spooled on the standby, survive its restart, and
    // arrive once when the primary answers again.
    standby.set_audit_conninfo(Some(
        "host=127.0.0.1 port=1 dbname=postgres user=postgres connect_timeout=2",
    ));
    std::thread::sleep(Duration::from_millis(500));
    let mut denied = standby.connect(APP_ROLE, DATABASE, &d2);
    raise_denial(&mut denied);
    eventually("the denial in the standby's spool", WAIT, || {
        (standby.spooled() > 0).then_some(())
    });
    let mut denied = standby.connect(APP_ROLE, DATABASE, &d3);
    raise_denial(&mut denied);
    drop(denied);
    // Stopped at once: the third denial is spooled by the writer's shutdown if not before.
    standby.pg_ctl("restart");
    assert!(standby.spooled() >= 1, "the spool survived the restart");
    assert!(audited(&d2).is_empty() && audited(&d3).is_empty());
    standby.set_audit_conninfo(None);
    for name in [&d2, &d3] {
        eventually("the spooled denial on the primary", WAIT, || {
            (!audited(name).is_empty()).then_some(())
        });
    }
    eventually("the spool emptied", WAIT, || (standby.spooled() == 0).then_some(()));
    std::thread::sleep(Duration::from_secs(1));
    for name in [&d1, &d2, &d3] {
        assert_eq!(audited(name).len(), 1, "{name} recorded exactly once");
    }
}

#[test]
fn only_a_replication_role_records_a_standbys_denials() {
    fixtures();
    let mut audit = connect_with(APP_ROLE, "postgres", "").unwrap();
    let forged = json!([{"seq": 1, "at": "2026-01-01T00:00:00Z", "reason": "malformed", "critical": true,
                         "pid": 1, "database": "x", "role": "x", "alert": "denial"}])
    .to_string();
    let err = audit
        .query(
            "SELECT tenancy.record_standby_denials('forged', now(), $1::text::jsonb)",
            &[&forged],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    // Not through SET ROLE either: the check is on the session's login role.
    let mut admin = connect_with("postgres", "postgres", "").unwrap();
    let mut tx = admin.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL ROLE {APP_ROLE}")).unwrap();
    tx.query(
        "SELECT tenancy.record_standby_denials('by a superuser as the app', now(), '[]')",
        &[],
    )
    .unwrap();
    tx.rollback().unwrap();
    let mut tx = audit.transaction().unwrap();
    let err = tx
        .query("SELECT tenancy.record_standby_denials('forged', now(), '{}')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
}

#[test]
fn a_promoted_standby_carries_on_with_identity_protection_and_audit() {
    fixtures();
    let standby = Standby::start("tenancy_standby_b", 54360);
    // A denial spooled while the primary cannot be reached, then the promotion.
    standby.set_audit_conninfo(Some(
        "host=127.0.0.1 port=1 dbname=postgres user=postgres connect_timeout=2",
    ));
    std::thread::sleep(Duration::from_millis(500));
    let (before, after) = (unique("promoted_denial"), unique("promoted_denial"));
    let mut denied = standby.connect(APP_ROLE, DATABASE, &before);
    raise_denial(&mut denied);
    eventually("the denial in the spool", WAIT, || {
        (standby.spooled() > 0).then_some(())
    });
    standby.pg_ctl("promote");

    // Identity and protection on the new primary, with writes now allowed.
    let mut app = standby.connect(APP_ROLE, DATABASE, "promoted app");
    let token = replica_token("user_replica_promoted", "org_globex");
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT set_config('tenancy.token', $1, true)", &[&token])
        .unwrap();
    tx.execute("INSERT INTO replica_notes (body) VALUES ('after promotion')", &[])
        .unwrap();
    let seen: Vec<String> = tx
        .query("SELECT DISTINCT workspace_id FROM documents", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, ["ws_globex"]);
    tx.commit().unwrap();

    // The audit writer carries on there: the spooled denial and a new one, recorded locally.
    let mut denied = standby.connect(APP_ROLE, DATABASE, &after);
    raise_denial(&mut denied);
    let mut audit = standby.connect("postgres", "postgres", "promoted audit");
    let rows = |audit: &mut Client, name: &str| -> Vec<Option<String>> {
        audit
            .query(
                "SELECT origin FROM tenancy.audit_log WHERE application_name = $1",
                &[&name],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    eventually("the promoted server's denials in its audit log", WAIT, || {
        (!rows(&mut audit, &before).is_empty() && !rows(&mut audit, &after).is_empty()).then_some(())
    });
    assert_eq!(rows(&mut audit, &before), [Some(standby.name.clone())]);
    assert_eq!(rows(&mut audit, &after), [None]);
    assert_eq!(standby.spooled(), 0);
}

/// A throw-away publisher cluster (`wal_level = logical`) beside the test cluster, which
/// subscribes to it; stopped and removed when dropped.
struct Publisher {
    dir: PathBuf,
    port: u16,
}

impl Publisher {
    fn start(port: u16) -> Publisher {
        let dir = fresh_server_dir("publisher");
        let datadir = dir.join("data");
        run(
            "initdb",
            &[
                "-D",
                datadir.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-locale",
                "-E",
                "UTF8",
            ],
        );
        append_conf(
            &datadir,
            &format!(
                "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = logical\nfsync = off",
                dir.display()
            ),
        );
        let log = dir.join("server.log");
        run(
            "pg_ctl",
            &[
                "-D",
                datadir.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        Publisher { dir, port }
    }

    fn connect(&self) -> Client {
        Client::connect(
            &format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port),
            NoTls,
        )
        .unwrap()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        remove_server_dir(&self.dir);
    }
}

/// The server's major version.
fn major(client: &mut Client) -> i32 {
    let n: String = client.query_one("SHOW server_version_num", &[]).unwrap().get(0);
    n.parse::<i32>().unwrap() / 10000
}

#[test]
fn a_subscription_into_a_protected_table_is_reported_and_the_fix_lets_it_apply() {
    fixtures();
    let publisher = Publisher::start(54361);
    let mut publishing = publisher.connect();
    publishing
        .batch_execute(
            "CREATE TABLE shared_notes (id bigint PRIMARY KEY, workspace_id text NOT NULL, body text NOT NULL);
             INSERT INTO shared_notes VALUES (1, 'ws_acme', 'acme note'), (2, 'ws_globex', 'globex note');
             CREATE PUBLICATION notes FOR TABLE shared_notes;",
        )
        .unwrap();
    let mut admin = admin();
    let pg = major(&mut admin);
    // The subscriber's table, protected and owned by an application owner that does not bypass
    // row-level security (FORCE makes it apply to the owner).
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenancy_repl_owner') THEN
                 CREATE ROLE tenancy_repl_owner NOLOGIN NOSUPERUSER NOBYPASSRLS; END IF;
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenancy_repl_sub') THEN
                 CREATE ROLE tenancy_repl_sub LOGIN NOSUPERUSER; END IF; END $$;
             CREATE TABLE shared_notes (id bigint PRIMARY KEY, workspace_id text NOT NULL, body text NOT NULL);
             CREATE INDEX ON shared_notes (workspace_id);
             ALTER TABLE shared_notes OWNER TO tenancy_repl_owner;
             GRANT SELECT ON shared_notes TO {APP_ROLE};
             GRANT ALL ON shared_notes TO tenancy_repl_sub;
             SET ROLE tenancy_repl_owner; SELECT tenancy.protect('shared_notes'); RESET ROLE;"
        ))
        .unwrap();
    // The applying role: from 16 on the table's owner (run_as_owner off, the default); on 15 the
    // subscription's owner, here a superuser that then loses the attribute.
    admin
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION notes_sub CONNECTION 'host=127.0.0.1 port={} user=postgres dbname=postgres'
                 PUBLICATION notes WITH (enabled = false)",
            publisher.port
        ))
        .unwrap();
    if pg < 16 {
        admin
            .batch_execute(
                "ALTER ROLE tenancy_repl_sub SUPERUSER; ALTER SUBSCRIPTION notes_sub OWNER TO tenancy_repl_sub;
                 ALTER ROLE tenancy_repl_sub NOSUPERUSER",
            )
            .unwrap();
    }
    let finding = |admin: &mut Client| -> Option<String> {
        admin
            .query(
                "SELECT fix FROM tenancy.coverage WHERE finding = 'subscription_refused' AND object LIKE 'subscription notes_sub %'",
                &[],
            )
            .unwrap()
            .first()
            .map(|r| r.get(0))
    };
    let fix = finding(&mut admin).expect("coverage reports the subscription PostgreSQL will refuse");
    // protect says so too when it runs again.
    let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut config: postgres::Config =
        format!("host=127.0.0.1 port={} user=postgres dbname={DATABASE}", primary_port())
            .parse()
            .unwrap();
    let heard = warnings.clone();
    config.notice_callback(move |n| heard.lock().unwrap().push(n.message().to_string()));
    let mut owner = config.connect(NoTls).unwrap();
    owner
        .batch_execute("SET ROLE tenancy_repl_owner; SELECT tenancy.protect('shared_notes')")
        .unwrap();
    assert!(
        warnings
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("subscription \"notes_sub\"")),
        "{:?}",
        warnings.lock().unwrap()
    );
    admin.batch_execute("ALTER SUBSCRIPTION notes_sub ENABLE").unwrap();
    // Refused: nothing arrives, and PostgreSQL counts apply errors.
    std::thread::sleep(Duration::from_secs(2));
    let arrived: i64 = admin
        .query_one("SELECT count(*) FROM shared_notes", &[])
        .unwrap()
        .get(0);
    assert_eq!(arrived, 0, "the subscription cannot apply under row-level security");

    // The fix the finding gives.
    if pg >= 16 {
        assert!(fix.contains("run_as_owner = true"), "{fix}");
        admin
            .batch_execute("ALTER SUBSCRIPTION notes_sub DISABLE; ALTER SUBSCRIPTION notes_sub SET (run_as_owner = true); ALTER SUBSCRIPTION notes_sub ENABLE")
            .unwrap();
    } else {
        assert!(fix.contains("OWNER TO"), "{fix}");
        admin
            .batch_execute("ALTER SUBSCRIPTION notes_sub DISABLE; ALTER SUBSCRIPTION notes_sub OWNER TO postgres; ALTER SUBSCRIPTION notes_sub ENABLE")
            .unwrap();
    }
    assert_eq!(finding(&mut admin), None, "the finding is gone");
    eventually("the publisher's rows on the subscriber", WAIT, || {
        let n: i64 = admin.query_one("SELECT count(*) FROM shared_notes", &[]).ok()?.get(0);
        (n == 2).then_some(())
    });
    // Applied, and still filtered for the application.
    let mut app = app();
    let mut tx = app.transaction().unwrap();
    set_local_token(&mut tx, "user_bob", "org_globex");
    let bodies: Vec<String> = tx
        .query("SELECT body FROM shared_notes", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(bodies, ["globex note"]);
    tx.rollback().unwrap();
    admin
        .batch_execute(
            "ALTER SUBSCRIPTION notes_sub DISABLE; ALTER SUBSCRIPTION notes_sub SET (slot_name = NONE);
             DROP SUBSCRIPTION notes_sub; DROP TABLE shared_notes; DROP ROLE tenancy_repl_owner, tenancy_repl_sub",
        )
        .unwrap();
    drop(publishing);
}
