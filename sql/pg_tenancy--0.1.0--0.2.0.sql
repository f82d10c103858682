-- pg_tenancy 0.1.0 → 0.2.0. Every change to an SQL object since 0.1.0 is here, in the order it
-- was made; the upgrade test (scripts/upgrade-test) proves that 0.1.0 + this script has the same
-- catalog as a fresh 0.2.0 install.
\echo Use "ALTER EXTENSION pg_tenancy UPDATE TO '0.2.0'" to load this file. \quit
