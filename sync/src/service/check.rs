//! `check`: the configuration, the database (extension, role, issuer), the audit database, the
//! alert sinks and WorkOS (JWKS, API key), one line each on standard output. Exit status 0 when
//! every part passes.

use crate::alerts;
use crate::context::{Ctx, APPLICATION};
use crate::db;
use crate::error::{audit, SyncError};
use std::time::{Duration, Instant};

/// `check`: configuration, database and WorkOS reachability. Exit status 0 when all pass.
pub async fn check(ctx: Ctx) -> i32 {
    let mut failures = 0;
    // One line per part: what was checked, and what was found or what is wrong (without the
    // part's name repeated at its head: "FAIL  database: …", not "database: database: …").
    let mut report = |what: &str, result: Result<String, SyncError>| match &result {
        Ok(detail) => println!("ok    {what}: {detail}"),
        Err(problem) => {
            failures += 1;
            let problem = problem.to_string();
            let problem = problem.strip_prefix(&format!("{what}: ")).unwrap_or(&problem);
            println!("FAIL  {what}: {problem}");
        }
    };
    report(
        "configuration",
        Ok(format!("issuer {}, workspaces {:?}", ctx.config.issuer, ctx.config.workspaces).to_lowercase()),
    );
    match db::connect(&ctx.config.database_url, APPLICATION, None).await {
        Err(e) => report("database", Err(e)),
        Ok(db) => {
            let row = db
                .query_one(
                    "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_tenancy'),
                            pg_catalog.pg_has_role(current_user, 'tenancy_sync', 'MEMBER'),
                            EXISTS (SELECT FROM tenancy.issuers WHERE issuer = $1)",
                    &[&ctx.config.issuer],
                )
                .await;
            match row {
                Err(e) => report("database", Err(e.into())),
                Ok(r) => {
                    let (version, member, trusted): (Option<String>, bool, bool) = (r.get(0), r.get(1), r.get(2));
                    report(
                        "pg_tenancy",
                        version
                            .map(|v| format!("version {v}"))
                            .ok_or_else(|| SyncError::Unmet("not installed in this database".into())),
                    );
                    report(
                        "role",
                        if member {
                            Ok("member of tenancy_sync".into())
                        } else {
                            Err(SyncError::Unmet(
                                "not a member of tenancy_sync: GRANT tenancy_sync TO <this role>".into(),
                            ))
                        },
                    );
                    // Since 0.3.0 the companion replaces the keys only of issuers an administrator
                    // handed to it (tenancy.issuers.sync_jwks_url); earlier versions lack the column.
                    let managed = db
                        .query_one(
                            "SELECT i.sync_jwks_url IS NOT NULL FROM tenancy.issuers i WHERE i.issuer = $1",
                            &[&ctx.config.issuer],
                        )
                        .await
                        .map_or(true, |r| r.get::<_, bool>(0));
                    report(
                        "issuer",
                        match (trusted, managed) {
                            (true, true) => Ok("trusted".into()),
                            (true, false) => Err(SyncError::Unmet("trusted, but its keys are not handed to pg-tenancy-sync: an administrator sets tenancy.issuers.sync_jwks_url to the JWKS URL".into())),
                            (false, _) => Err(SyncError::Unmet("not trusted: an administrator runs tenancy.add_issuer() once".into())),
                        },
                    );
                }
            }
        }
    }
    // The audit database: key signals always, alerts when a sink is configured.
    let sinks: Vec<&str> = alerts::configured(&ctx.config.alerts)
        .iter()
        .map(|s| s.name())
        .collect();
    let audit_database = match db::connect(&ctx.config.alert_database_url, APPLICATION, None).await {
        Err(e) => Err(e),
        Ok(db) => {
            // Since 0.3.0 alert cursors belong to tenancy_alerts, which a tenancy_sync login
            // should not hold (it could acknowledge the alert of a key change it made).
            let member = db
                .query_one(
                    "SELECT pg_catalog.pg_has_role(current_user, 'tenancy_alerts', 'MEMBER')",
                    &[],
                )
                .await
                .map_or(true, |r| r.get::<_, bool>(0));
            match db
                .query_one(
                    "SELECT pg_catalog.count(*) FROM (SELECT ring_started_at, seq, alert FROM tenancy.audit_log LIMIT 1) r",
                    &[],
                )
                .await
            {
                Err(e) => Err(audit(e)),
                Ok(_) if !member && !sinks.is_empty() => Err(SyncError::Unmet(
                    "tenancy.audit_log readable, but this login cannot move alert cursors: GRANT tenancy_alerts TO <the alert login>"
                        .into(),
                )),
                Ok(_) => Ok("tenancy.audit_log readable".to_string()),
            }
        }
    };
    report("audit database", audit_database);
    report(
        "alert sinks",
        Ok(if sinks.is_empty() {
            "none configured".into()
        } else {
            format!(
                "{} (at least severity {:?})",
                sinks.join(", "),
                ctx.config.alerts.min_severity
            )
            .to_lowercase()
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let jwks = ctx
        .workos
        .get(&format!("/sso/jwks/{}", ctx.config.client_id), &[], false, deadline)
        .await;
    report(
        "WorkOS JWKS",
        jwks.map(|j| format!("{} keys", j.get("keys").and_then(|k| k.as_array()).map_or(0, Vec::len))),
    );
    if ctx.config.has_api_key() {
        let orgs = ctx
            .workos
            .get("/organizations", &[("limit", "1".into())], true, deadline)
            .await;
        report("WorkOS API key", orgs.map(|_| "accepted".to_string()));
    } else {
        report(
            "WorkOS API key",
            Err(SyncError::Config("WORKOS_API_KEY is not set".into())),
        );
    }
    i32::from(failures > 0)
}
