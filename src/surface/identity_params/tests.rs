//! Identity parameters: which initPlans become parameters and which stay, and that the statement
//! answers as the initPlan did (values, laziness, EXECUTE right, parallel plans).

#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{register_test_members, sqlstate_of, test_token};
    use pgrx::prelude::*;

    /// A protected table with rows of `ws_a` (ids 1 and 3) and `ws_b` (id 2), readable by a plain
    /// role `tenancy_test_params`.
    fn protected_table() {
        register_test_members();
        Spi::run(
            "CREATE ROLE tenancy_test_params NOLOGIN;
             CREATE TABLE params_docs (id int PRIMARY KEY, workspace_id text NOT NULL, owner text);
             INSERT INTO params_docs VALUES (1, 'ws_a', 'user_a'), (2, 'ws_b', 'user_b'), (3, 'ws_a', 'user_a');
             SELECT tenancy.protect('params_docs');
             GRANT SELECT, UPDATE ON params_docs TO tenancy_test_params",
        )
        .unwrap();
    }

    /// The transaction's credential becomes `user`'s of `org`, and the role the plain one.
    fn as_member(user: &str, org: &str) {
        Spi::run(&format!(
            "RESET ROLE; SET LOCAL tenancy.token = {}; SET LOCAL ROLE tenancy_test_params",
            pgrx::spi::quote_literal(test_token(user, org))
        ))
        .unwrap();
    }

    /// `EXPLAIN (COSTS OFF)` of `sql`, one line per row.
    fn plan_of(sql: &str) -> String {
        Spi::connect(|client| {
            client
                .select(&format!("EXPLAIN (COSTS OFF) {sql}"), None, &[])
                .unwrap()
                .map(|row| row.get::<String>(1).unwrap().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    /// The ids `sql` returns (its first column), in order.
    fn ids(sql: &str) -> Vec<i32> {
        Spi::connect(|client| {
            client
                .select(sql, None, &[])
                .unwrap()
                .filter_map(|row| row.get::<i32>(1).unwrap())
                .collect()
        })
    }

    #[pg_test]
    fn identity_initplans_become_parameters() {
        protected_table();
        as_member("user_a", "org_a");
        let plan = plan_of("SELECT id FROM params_docs WHERE id > 0");
        assert!(!plan.contains("InitPlan"), "{plan}");
        assert!(plan.contains("$0"), "{plan}");
        assert_eq!(ids("SELECT id FROM params_docs ORDER BY id"), [1, 3]);

        Spi::run("RESET ROLE; SET LOCAL tenancy.identity_parameters = off; SET LOCAL ROLE tenancy_test_params")
            .unwrap();
        let plan = plan_of("SELECT id FROM params_docs WHERE id > 0");
        assert!(plan.contains("InitPlan"), "the setting keeps the initPlan: {plan}");
        assert_eq!(ids("SELECT id FROM params_docs ORDER BY id"), [1, 3]);
    }

    #[pg_test]
    fn look_alikes_and_other_shapes_keep_their_initplans() {
        protected_table();
        as_member("user_a", "org_a");
        Spi::run(
            "CREATE FUNCTION pg_temp.workspace_id() RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN 'ws_b'; END $$;
             CREATE FUNCTION pg_temp.user_id() RETURNS int8 LANGUAGE plpgsql AS $$ BEGIN RETURN 42; END $$",
        )
        .unwrap();
        // The policy's parameter goes; the role's own function keeps its initPlan and its value.
        let sql = "SELECT id FROM params_docs WHERE workspace_id = (SELECT pg_temp.workspace_id())";
        let plan = plan_of(sql);
        let initplans = plan
            .lines()
            .filter(|line| line.trim_start().starts_with("InitPlan"))
            .count();
        assert_eq!(initplans, 1, "{plan}");
        assert_eq!(
            ids(sql),
            Vec::<i32>::new(),
            "ws_a's rows filtered by the look-alike's ws_b"
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT (SELECT pg_temp.user_id()) FROM params_docs LIMIT 1").unwrap(),
            Some(42)
        );
        // Shapes other than a bare call stay initPlans and answer as before.
        for (sql, expected) in [
            (
                "SELECT (SELECT tenancy.workspace_id() LIMIT 1) FROM params_docs LIMIT 1",
                "ws_a",
            ),
            (
                "SELECT (SELECT tenancy.workspace_id() WHERE random() >= 0) FROM params_docs LIMIT 1",
                "ws_a",
            ),
            (
                "SELECT (SELECT tenancy.user_id() COLLATE \"C\") FROM params_docs LIMIT 1",
                "user_a",
            ),
        ] {
            assert!(plan_of(sql).contains("InitPlan"), "{sql}: {}", plan_of(sql));
            assert_eq!(Spi::get_one::<String>(sql).unwrap().as_deref(), Some(expected), "{sql}");
        }
    }

    #[pg_test]
    fn writes_and_locking_reads_keep_the_initplan() {
        protected_table();
        as_member("user_a", "org_a");
        for sql in [
            "UPDATE params_docs SET owner = owner WHERE id > 0",
            "SELECT id FROM params_docs FOR UPDATE",
            "WITH w AS (UPDATE params_docs SET owner = owner RETURNING id) SELECT id FROM params_docs",
        ] {
            assert!(plan_of(sql).contains("InitPlan"), "{sql}: {}", plan_of(sql));
        }
        assert_eq!(ids("SELECT id FROM params_docs ORDER BY id FOR UPDATE"), [1, 3]);
    }

    #[pg_test]
    fn one_generic_plan_serves_each_identity() {
        protected_table();
        Spi::run("SET LOCAL plan_cache_mode = force_generic_plan; PREPARE params_read AS SELECT id FROM params_docs ORDER BY id")
            .unwrap();
        for (user, org, expected) in [
            ("user_a", "org_a", vec![1, 3]),
            ("user_b", "org_b", vec![2]),
            ("user_a", "org_a", vec![1, 3]),
        ] {
            as_member(user, org);
            assert_eq!(ids("EXECUTE params_read"), expected, "{user}");
        }
        assert_eq!(
            Spi::get_one::<i64>("SELECT generic_plans FROM pg_prepared_statements WHERE name = 'params_read'").unwrap(),
            Some(3)
        );
        assert!(!plan_of("EXECUTE params_read").contains("InitPlan"));
    }

    #[pg_test]
    fn the_identity_is_read_when_first_needed() {
        protected_table();
        Spi::run("SET LOCAL ROLE tenancy_test_params").unwrap();
        // Never evaluated: no identity needed, as with the initPlan.
        assert_eq!(ids("SELECT id FROM params_docs LIMIT 0"), Vec::<i32>::new());
        assert_eq!(sqlstate_of("SELECT id FROM params_docs").as_deref(), Some("28000"));
        // A cursor declared before its credential reads the identity of its first fetch.
        Spi::run("DECLARE params_cursor CURSOR FOR SELECT id FROM params_docs ORDER BY id").unwrap();
        as_member("user_b", "org_b");
        assert_eq!(ids("FETCH ALL FROM params_cursor"), [2]);
    }

    #[pg_test]
    fn the_execute_right_is_checked_when_the_statement_starts() {
        protected_table();
        as_member("user_a", "org_a");
        assert_eq!(ids("SELECT id FROM params_docs ORDER BY id"), [1, 3]);
        Spi::run(
            "RESET ROLE; REVOKE EXECUTE ON FUNCTION tenancy.workspace_id() FROM PUBLIC;
             CREATE ROLE tenancy_test_params_group NOLOGIN;
             GRANT EXECUTE ON FUNCTION tenancy.workspace_id() TO tenancy_test_params_group;
             SET LOCAL ROLE tenancy_test_params",
        )
        .unwrap();
        assert_eq!(sqlstate_of("SELECT id FROM params_docs").as_deref(), Some("42501"));
        Spi::run(
            "RESET ROLE; GRANT tenancy_test_params_group TO tenancy_test_params; SET LOCAL ROLE tenancy_test_params",
        )
        .unwrap();
        assert_eq!(
            ids("SELECT id FROM params_docs ORDER BY id"),
            [1, 3],
            "granted through the group"
        );
        Spi::run(
            "RESET ROLE; REVOKE tenancy_test_params_group FROM tenancy_test_params; SET LOCAL ROLE tenancy_test_params",
        )
        .unwrap();
        assert_eq!(
            sqlstate_of("SELECT id FROM params_docs").as_deref(),
            Some("42501"),
            "a right known granted is forgotten when the membership goes"
        );
    }

    #[pg_test]
    fn parallel_workers_receive_the_leaders_value() {
        protected_table();
        Spi::run(
            "INSERT INTO params_docs SELECT i, CASE WHEN i % 2 = 0 THEN 'ws_a' ELSE 'ws_b' END, NULL
               FROM generate_series(10, 20009) i;
             ANALYZE params_docs;
             SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0;
             SET LOCAL min_parallel_table_scan_size = 0; SET LOCAL max_parallel_workers_per_gather = 2;
             SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off",
        )
        .unwrap();
        for (user, org, expected) in [("user_a", "org_a", 10_002), ("user_b", "org_b", 10_001)] {
            as_member(user, org);
            let plan = Spi::connect(|client| {
                client
                    .select(
                        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT count(*) FROM params_docs",
                        None,
                        &[],
                    )
                    .unwrap()
                    .map(|row| row.get::<String>(1).unwrap().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            // PostgreSQL 15 names the parameters a Gather evaluates for its workers; 18 does not.
            #[cfg(feature = "pg15")]
            assert!(plan.contains("Params Evaluated: $0"), "{plan}");
            assert!(!plan.contains("InitPlan") && plan.contains("Gather"), "{plan}");
            assert_eq!(
                Spi::get_one::<i64>("SELECT count(*) FROM params_docs").unwrap(),
                Some(expected),
                "{user}: {plan}"
            );
        }
    }

    #[pg_test]
    fn a_statement_planned_inside_a_parallel_worker_refuses_without_crashing() {
        protected_table();
        Spi::run(
            "CREATE FUNCTION params_in_worker() RETURNS text LANGUAGE plpgsql PARALLEL SAFE AS $$
                 DECLARE r text;
                 BEGIN SELECT (SELECT tenancy.workspace_id()) INTO r FROM generate_series(1, 1); RETURN r; END $$;
             GRANT EXECUTE ON FUNCTION params_in_worker() TO tenancy_test_params;
             SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
                                    THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'on', true);
             SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0",
        )
        .unwrap();
        as_member("user_a", "org_a");
        // The leader's own statements see the identity; a statement planned in a worker has no
        // transaction state to verify it with and refuses, as tenancy.workspace_id() does there.
        assert_eq!(ids("SELECT id FROM params_docs ORDER BY id"), [1, 3]);
        assert_eq!(
            sqlstate_of("SELECT params_in_worker() FROM generate_series(1, 1)").as_deref(),
            Some("28000")
        );
    }
}
