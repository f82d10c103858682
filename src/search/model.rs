//! What a search is about, shared by every file of the layer: the arguments of one call, the
//! searchable column it targets (as `tenancy._vector_target` checked it) and the strategies.

use pgrx::pg_sys;

/// The arguments of one call of `tenancy.nearest` (or `tenancy.nearest_strategy`, whose query
/// and k are placeholders).
pub struct Call {
    /// The row type of the table, from the type of the first argument.
    pub row_type: pg_sys::Oid,
    pub column: Option<String>,
    pub query: pg_sys::Datum,
    pub query_type: pg_sys::Oid,
    pub k: i32,
    pub metric: Option<String>,
}

/// A searchable column, as `tenancy._vector_target` checked it.
pub struct Target {
    pub rel: pg_sys::Oid,
    /// `schema.table`, quoted.
    pub rel_name: String,
    pub workspace_column: String,
    pub workspace_type: String,
    pub user_column: Option<String>,
    pub user_type: Option<String>,
    /// The column's type with its modifier, as an error names it (`vector(3)`).
    pub vector_type: String,
    /// The qualified base type (`public.vector`) and its OID.
    pub vector_base: String,
    pub vector_base_oid: pg_sys::Oid,
    pub dims: Option<i32>,
    /// The distance operator, qualified (`OPERATOR(public.<=>)`).
    pub op: String,
    /// A Citus distributed table (`pg_dist_partition`): its exact scan builds whole rows (see
    /// `strategy.rs`).
    pub distributed: bool,
}

/// Which plan answers a call.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Strategy {
    /// Every row of the scope through its B-tree, sorted by exact distance.
    Exact,
    /// The exact scan of a workspace of a few rows, whose rows are built as they are scanned.
    ExactSmall,
    /// The HNSW index shared by every workspace, filtered, its candidates re-ranked exactly.
    SharedHnsw,
    /// The workspace's own HNSW index (a partial index whose predicate is the workspace).
    WorkspaceHnsw,
}

impl Strategy {
    /// The name `tenancy.nearest_strategy` reports.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Exact | Strategy::ExactSmall => "exact",
            Strategy::SharedHnsw => "hnsw",
            Strategy::WorkspaceHnsw => "hnsw_workspace",
        }
    }

    /// Whether the strategy scans every row of the scope (no HNSW setting applies).
    pub fn is_exact(self) -> bool {
        matches!(self, Strategy::Exact | Strategy::ExactSmall)
    }
}
