-- pg_tenancy: the durable audit trail and the views over shared memory (runs after admin.sql).

-- Every denial, copied from shared memory by the background worker "pg_tenancy audit writer"
-- (so that the denying transaction's rollback cannot erase it). The worker writes the audit log
-- of the database named by tenancy.audit_database, for every database of the cluster.
CREATE TABLE tenancy.audit_log (
    ring_started_at   timestamptz NOT NULL,
    seq               bigint NOT NULL,
    at                timestamptz NOT NULL,
    reason            text NOT NULL,
    critical          boolean NOT NULL,
    pid               integer NOT NULL,
    database          text NOT NULL,
    role              text NOT NULL,
    client_addr       text,
    application_name  text NOT NULL DEFAULT '',
    iss               text,
    sub               text,
    org_id            text,
    sid               text,
    kid               text,
    exp               timestamptz,
    detail            text NOT NULL DEFAULT '',
    statement         text NOT NULL DEFAULT '',
    alert             text CHECK (alert IN ('denial', 'burst')),
    id                bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (ring_started_at, seq)
);
CREATE INDEX audit_log_at ON tenancy.audit_log (at);
CREATE UNIQUE INDEX audit_log_id ON tenancy.audit_log (id);
COMMENT ON TABLE tenancy.audit_log IS 'denials recorded by pg_tenancy (never a token); written by the audit worker, kept tenancy.audit_retention days';
COMMENT ON COLUMN tenancy.audit_log.id IS 'the order rows were committed in (one writer): what alert delivery follows, unlike ring_started_at, which a clock step or a promoted standby can move backwards';
SELECT pg_catalog.pg_extension_config_dump('tenancy.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.audit_log_id_seq', '');

-- Recent denials from the shared-memory ring (requires shared_preload_libraries = 'pg_tenancy').
CREATE VIEW tenancy.denials AS
SELECT d.seq, d.at, d.reason, d.critical, d.pid,
       coalesce(db.datname::text, 'oid:' || d.database_oid) AS database,
       coalesce(r.rolname::text, 'oid:' || d.role_oid) AS role,
       d.client_addr, d.application_name, d.iss, d.sub, d.org_id, d.sid, d.kid,
       pg_catalog.to_timestamp(d.exp) AS exp, d.detail, d.statement
  FROM tenancy._denials() d
  LEFT JOIN pg_catalog.pg_database db ON db.oid OPERATOR(pg_catalog.=) d.database_oid
  LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) d.role_oid;
COMMENT ON VIEW tenancy.denials IS 'recent denials kept in shared memory (newest tenancy.audit_ring_size)';

-- Counters since the postmaster started: verifications, cache hits, denials (total and per
-- reason), rows persisted, alerts, entries dropped from a full ring.
CREATE VIEW tenancy.stats AS SELECT s.name, s.value FROM tenancy._stats() s;
COMMENT ON VIEW tenancy.stats IS 'pg_tenancy counters since the server started';

REVOKE ALL ON tenancy.audit_log, tenancy.denials, tenancy.stats FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy._denials(), tenancy._stats() FROM PUBLIC;
GRANT SELECT ON tenancy.audit_log, tenancy.denials, tenancy.stats TO tenancy_admin, tenancy_auditor;
GRANT EXECUTE ON FUNCTION tenancy._denials(), tenancy._stats() TO tenancy_admin, tenancy_auditor;
