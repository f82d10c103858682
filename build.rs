//! Links libpq (used by a hot standby's audit writer, src/plumbing/libpq.rs) from the library
//! directory of the PostgreSQL major being built, with that directory as the run-time search path.
//!
//! Why not the system's libpq: a server loads one `libpq.so.5` per process. pg_tenancy is
//! preloaded first, so the libpq it brings is the one the server's own walreceiver
//! (libpqwalreceiver) then uses too. Linked against Debian's libpq 15 under a PostgreSQL 18 built
//! from source, the walreceiver of every standby failed on the `sslnegotiation` option that
//! PostgreSQL 18's `pg_basebackup -R` writes into `primary_conninfo` ("invalid connection
//! option"). With the major's own libpq, the server and pg_tenancy agree.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PG_CONFIG");
    let major = ["15", "16", "17", "18"]
        .into_iter()
        .find(|m| std::env::var_os(format!("CARGO_FEATURE_PG{m}")).is_some());
    let pg_config = std::env::var("PG_CONFIG")
        .ok()
        .or_else(|| major.map(|m| format!("/usr/lib/postgresql/{m}/bin/pg_config")));
    let Some(pg_config) = pg_config else {
        return;
    };
    let Ok(out) = Command::new(&pg_config).arg("--libdir").output() else {
        return;
    };
    let libdir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !libdir.is_empty() {
        println!("cargo:rustc-link-search=native={libdir}");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,{libdir}");
    }
}
