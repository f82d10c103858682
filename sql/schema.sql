-- pg_tenancy: roles, identity tables and their privileges (runs before the Rust functions).

-- Cluster-wide roles: created once, kept across DROP EXTENSION (other databases may use them).
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_admin') THEN
        CREATE ROLE tenancy_admin NOLOGIN;
        COMMENT ON ROLE tenancy_admin IS 'pg_tenancy: manages issuers, keys, workspaces, members and revocations';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_auditor') THEN
        CREATE ROLE tenancy_auditor NOLOGIN;
        COMMENT ON ROLE tenancy_auditor IS 'pg_tenancy: reads coverage, denials and statistics';
    END IF;
END
$roles$;

-- The role pg_tenancy's identity lookups run as (src/plumbing/pinned_context.rs): it logs in
-- never, owns nothing, and may only read the identity tables and record API-key use. A role of
-- that name that could log in or has members is not ours: refuse to install rather than run
-- lookups as it.
DO $lookup$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'tenancy_lookup') THEN
        CREATE ROLE tenancy_lookup NOLOGIN NOINHERIT;
        COMMENT ON ROLE tenancy_lookup IS 'pg_tenancy: the role identity lookups run as (no login, no members)';
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_roles r
                   WHERE r.rolname OPERATOR(pg_catalog.=) 'tenancy_lookup'
                     AND (r.rolcanlogin OR r.rolsuper OR r.rolbypassrls OR r.rolcreaterole
                          OR EXISTS (SELECT FROM pg_catalog.pg_auth_members m
                                      WHERE m.roleid OPERATOR(pg_catalog.=) r.oid))) THEN
        RAISE EXCEPTION 'role "tenancy_lookup" exists with login, attributes or members'
            USING ERRCODE = '42501',
                  HINT = 'pg_tenancy runs its identity lookups as that role; drop it or make it NOLOGIN NOSUPERUSER without members.';
    END IF;
END
$lookup$;

GRANT USAGE ON SCHEMA tenancy TO PUBLIC;

-- Trusted token issuers. Written only through add_issuer / set_jwks, which vet every key.
CREATE TABLE tenancy.issuers (
    issuer      text PRIMARY KEY CHECK (issuer <> ''),
    audience    text,
    algorithms  text[] NOT NULL DEFAULT '{RS256}',
    jwks        jsonb NOT NULL,
    key_ids     text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    allow_no_organization boolean NOT NULL DEFAULT false,
    sync_jwks_url text CHECK (sync_jwks_url ~ '^https?://')
);
COMMENT ON COLUMN tenancy.issuers.sync_jwks_url IS 'where pg-tenancy-sync fetches this issuer''s keys; NULL: the companion may not change them (tenancy.sync_set_jwks refuses)';
COMMENT ON COLUMN tenancy.issuers.allow_no_organization IS 'whether a token without org_id identifies a user (no workspace, no membership row); when false every identity function refuses it';
COMMENT ON TABLE tenancy.issuers IS 'trusted token issuers and their public keys (JWKS); private key members are refused at load';

-- The database's side of the double check.
CREATE TABLE tenancy.workspaces (
    workspace_id     text PRIMARY KEY CHECK (workspace_id <> ''),
    organization_id  text UNIQUE,
    name             text,
    disabled_at      timestamptz
);
COMMENT ON TABLE tenancy.workspaces IS 'workspaces, each mapped to a WorkOS organization (org_…)';

CREATE TABLE tenancy.members (
    workspace_id  text NOT NULL REFERENCES tenancy.workspaces ON DELETE CASCADE,
    user_id       text NOT NULL CHECK (user_id <> ''),
    role          text,
    disabled_at   timestamptz,
    PRIMARY KEY (workspace_id, user_id)
);
COMMENT ON TABLE tenancy.members IS 'users (WorkOS user_…) of each workspace; a set role overrides the token''s role';

CREATE TABLE tenancy.revoked_sessions (
    sid         text PRIMARY KEY,
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    revoked_by  name NOT NULL DEFAULT session_user
);
COMMENT ON TABLE tenancy.revoked_sessions IS 'WorkOS session ids whose tokens are refused from the next statement on';

-- pg_dump keeps the rows of configuration tables.
SELECT pg_catalog.pg_extension_config_dump('tenancy.issuers', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.workspaces', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.members', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.revoked_sessions', '');

REVOKE ALL ON tenancy.issuers, tenancy.workspaces, tenancy.members, tenancy.revoked_sessions FROM PUBLIC;
GRANT SELECT ON tenancy.issuers, tenancy.revoked_sessions TO tenancy_admin, tenancy_auditor;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenancy.workspaces, tenancy.members TO tenancy_admin;
GRANT SELECT ON tenancy.workspaces, tenancy.members TO tenancy_auditor;
GRANT SELECT ON tenancy.issuers, tenancy.workspaces, tenancy.members, tenancy.revoked_sessions TO tenancy_lookup;
