//! `create` mode (a workspace per organization) and the `check` subcommand.

mod common;

use common::fixture::{self, Fixture};
use common::*;

#[test]
fn create_mode_makes_a_workspace_per_organization_and_takes_over_none() {
    let _serial = serial();
    let f = Fixture::start();
    f.with(|s| {
        s.jwks = jwks("test-issuer-jwks.json");
        s.organizations = vec![
            fixture::organization("org_new", "New Co", Some("ws_new"), 1),
            fixture::organization("org_plain", "Plain", None, 1),
            // Its external id names a workspace that belongs to another organization.
            fixture::organization("org_thief", "Thief", Some("ws_acme"), 1),
        ];
        s.memberships = vec![
            fixture::membership("om_1", "user_dan", "org_new", "active", 1),
            fixture::membership("om_2", "user_eve", "org_thief", "active", 1),
        ];
    });
    let mut admin = fresh_database(&f, &jwks("test-issuer-jwks.json").to_string());
    let (code, log) = once(&f, &[("PG_TENANCY_SYNC_WORKSPACES", "create")]);
    assert_eq!(code, 0, "{log}");
    let workspaces: Vec<(String, Option<String>)> = admin
        .query(
            "SELECT workspace_id, organization_id FROM tenancy.workspaces ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        workspaces,
        vec![
            ("org_plain".to_string(), Some("org_plain".to_string())),
            ("ws_acme".to_string(), Some("org_acme".to_string())),
            ("ws_globex".to_string(), Some("org_globex".to_string())),
            ("ws_new".to_string(), Some("org_new".to_string())),
        ],
        "external_id, else the organization id; ws_acme stays org_acme's"
    );
    assert_eq!(
        identity(&token(&f, "k1", "user_dan", "org_new", "s")),
        Ok("ws_new".into())
    );
    assert_eq!(
        identity(&token(&f, "k1", "user_eve", "org_thief", "s")),
        Err("28000".into()),
        "no workspace taken over"
    );
    assert_eq!(
        identity(&token(&f, "k1", "user_eve", "org_acme", "s")),
        Err("28000".into())
    );
}

#[test]
fn check_reports_each_part_without_secrets() {
    let _serial = serial();
    let f = Fixture::start();
    f.with(|s| s.jwks = jwks("test-issuer-jwks.json"));
    let _admin = fresh_database(&f, &jwks("test-issuer-jwks.json").to_string());
    let output = command(&f, "check", &[]).output().unwrap();
    let text = no_secrets(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    for line in [
        "ok    pg_tenancy: version 0.3.0",
        "ok    role: member of tenancy_sync",
        "ok    issuer: trusted",
        "ok    WorkOS JWKS: 1 keys",
        "ok    WorkOS API key: accepted",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    let output = command(&f, "check", &[("WORKOS_API_KEY", "sk_wrong_key_123")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text.contains("FAIL  WorkOS API key: WorkOS answered 401") && !text.contains("sk_wrong_key_123"),
        "{text}"
    );
}
