//! Calibration on a workspace of several topics (issue 36): its queries are drawn like each
//! topic's rows, not between the topics, so that an index which finds every neighbour of its
//! users' queries at pgvector's default `ef_search` is used, and `tenancy.nearest` still meets the
//! target on queries the calibration never saw. Before, calibration's queries (the workspace's
//! mean plus the difference of two random rows) fell between the topics and measured such a
//! workspace below 0.99 at every `ef_search`: `nearest` scanned it exactly, 14× slower in
//! `scripts/bench-recall`.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;

const DIMENSIONS: usize = 64;
const TOPICS: u64 = 8;

#[test]
fn a_workspace_of_topics_is_calibrated_on_its_topics() {
    let mut db = protected_vector_table(
        "recall_topics",
        DIMENSIONS,
        8_000,
        |id| topic_point(id, DIMENSIONS, TOPICS),
        |id| cloud_point(id, DIMENSIONS),
    );
    db.batch_execute(
        "ANALYZE recall_topics;
         SELECT tenancy.create_vector_index('recall_topics', 'embedding', 'ws_acme')",
    )
    .unwrap();
    let (strategy, ladder): (String, String) = {
        let row = db
            .query_one(
                "SELECT strategy, CAST(ladder AS text) FROM tenancy.vector_indexes
                  WHERE table_name = CAST('recall_topics' AS regclass)",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    let ef_search: i32 = strategy
        .strip_prefix("hnsw_workspace (ef_search ")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the index is used at 0.99, not {strategy}; calibration {ladder}"));
    assert!(ef_search <= 100, "{strategy}; calibration {ladder}");
    // Queries drawn like the topics' rows, none of them a row, none seen by the calibration.
    let queries: Vec<Vec<f32>> = (1_000_000..1_000_030)
        .map(|seed| topic_point(seed, DIMENSIONS, TOPICS))
        .collect();
    let (recall, used) = measured_recall_of("recall_topics", 0.99, &queries);
    assert_eq!(used, "hnsw_workspace");
    // 30 queries of 10 neighbours: a standard error of about 0.006 at 0.99.
    assert!(recall >= 0.97, "recall {recall} at 0.99; calibration {ladder}");
}
