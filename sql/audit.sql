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
    origin            text,
    acting_role       text,
    PRIMARY KEY (ring_started_at, seq)
);
CREATE INDEX audit_log_at ON tenancy.audit_log (at);
CREATE UNIQUE INDEX audit_log_id ON tenancy.audit_log (id);
COMMENT ON TABLE tenancy.audit_log IS 'denials recorded by pg_tenancy (never a token); written by the audit worker, kept tenancy.audit_retention days';
COMMENT ON COLUMN tenancy.audit_log.id IS 'the order rows were committed in (one writer): what alert delivery follows, unlike ring_started_at, which a clock step or a promoted standby can move backwards';
COMMENT ON COLUMN tenancy.audit_log.origin IS 'the hot standby that raised the denial (its cluster_name, else host:port); NULL when raised on this server';
COMMENT ON COLUMN tenancy.audit_log.role IS 'the session user: who connected, whatever function or SET ROLE the denial was raised under';
COMMENT ON COLUMN tenancy.audit_log.acting_role IS 'the current user when it was not the session user (a SECURITY DEFINER function''s owner, SET ROLE); NULL otherwise';
SELECT pg_catalog.pg_extension_config_dump('tenancy.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.audit_log_id_seq', '');

-- Recent denials from the shared-memory ring (requires shared_preload_libraries = 'pg_tenancy').
CREATE VIEW tenancy.denials AS
SELECT d.seq, d.at, d.reason, d.critical, d.pid,
       coalesce(db.datname::text, 'oid:' || d.database_oid) AS database,
       coalesce(r.rolname::text, 'oid:' || d.role_oid) AS role,
       d.client_addr, d.application_name, d.iss, d.sub, d.org_id, d.sid, d.kid,
       CASE WHEN d.exp OPERATOR(pg_catalog.>=) -210866803200 AND d.exp OPERATOR(pg_catalog.<=) 9224318015999
            THEN pg_catalog.to_timestamp(d.exp) END AS exp, d.detail, d.statement
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

-- Records a batch of denials raised on a hot standby (a standby cannot write): its audit writer
-- calls this in the primary's audit database over primary_conninfo, or
-- tenancy.audit_primary_conninfo (src/audit/standby.rs). A batch sent twice is recorded once
-- (keyed by the standby ring's start and sequence numbers); alerts and key-rotation signals are
-- raised as for the primary's own denials. Only a role with REPLICATION (which can already read
-- every row by streaming the WAL) or a superuser may call it: the audit log is evidence, and
-- ordinary roles must not write it.
CREATE FUNCTION tenancy.record_standby_denials(origin text, ring_started_at timestamptz, entries jsonb)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    recorded bigint;
    kinds text[];
    issuers text[];
    kind text;
    issuer text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles r
                    WHERE r.rolname OPERATOR(pg_catalog.=) pg_catalog.session_user() AND (r.rolreplication OR r.rolsuper)) THEN
        RAISE EXCEPTION 'only a replication role or a superuser may record a standby''s denials'
            USING ERRCODE = '42501',
                  HINT = 'A hot standby''s audit writer calls this with the role of its primary_conninfo or tenancy.audit_primary_conninfo.';
    END IF;
    IF origin IS NULL OR ring_started_at IS NULL OR entries IS NULL THEN
        RAISE EXCEPTION 'origin, ring_started_at and entries must not be null' USING ERRCODE = '22004';
    END IF;
    IF pg_catalog.jsonb_typeof(entries) OPERATOR(pg_catalog.<>) 'array' THEN
        RAISE EXCEPTION 'entries must be a JSON array, not %', pg_catalog.jsonb_typeof(entries) USING ERRCODE = '22023';
    END IF;
    WITH recorded_rows AS (
        INSERT INTO tenancy.audit_log AS l (ring_started_at, seq, at, reason, critical, pid, database, role, client_addr,
                                       application_name, iss, sub, org_id, sid, kid, exp, detail, statement, alert, origin,
                                       acting_role)
        SELECT record_standby_denials.ring_started_at, e.seq, e.at, e.reason, e.critical, e.pid, e.database, e.role, e.client_addr,
               coalesce(e.application_name, ''), e.iss, e.sub, e.org_id, e.sid, e.kid,
               -- A time PostgreSQL cannot hold is not recorded: one such entry must not fail the batch.
               CASE WHEN e.exp OPERATOR(pg_catalog.>=) -210866803200 AND e.exp OPERATOR(pg_catalog.<=) 9224318015999
                    THEN pg_catalog.to_timestamp(e.exp) END,
               coalesce(e.detail, ''), coalesce(e.statement, ''), e.alert, record_standby_denials.origin, e.acting_role
          FROM pg_catalog.jsonb_to_recordset(entries)
               AS e(seq bigint, at timestamptz, reason text, critical boolean, pid integer, database text, role text,
                    client_addr text, application_name text, iss text, sub text, org_id text, sid text, kid text,
                    exp double precision, detail text, statement text, alert text, acting_role text)
         ORDER BY e.seq
        ON CONFLICT ON CONSTRAINT audit_log_pkey DO NOTHING
        RETURNING l.alert, l.reason, l.iss)
    SELECT pg_catalog.count(*),
           pg_catalog.array_agg(DISTINCT r.alert) FILTER (WHERE r.alert IS NOT NULL),
           pg_catalog.array_agg(DISTINCT r.iss) FILTER (WHERE r.reason OPERATOR(pg_catalog.=) 'unknown_key' AND r.iss IS NOT NULL)
      INTO recorded, kinds, issuers
      FROM recorded_rows r;
    FOREACH kind IN ARRAY coalesce(kinds, '{}') LOOP
        PERFORM pg_catalog.pg_notify('tenancy_alert', pg_catalog.format('{"kind":"%s","severity":"critical"}', kind));
    END LOOP;
    FOREACH issuer IN ARRAY coalesce(issuers, '{}') LOOP
        PERFORM pg_catalog.pg_notify('tenancy_jwks', issuer);
    END LOOP;
    RETURN recorded;
END
$$;
