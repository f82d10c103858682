//! pg_tenancy: multi-tenancy enforced inside PostgreSQL.

pub mod verify;
