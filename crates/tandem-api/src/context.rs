//! What the network faces of a node share: the node runtime's context and
//! what only the faces keep (metrics, refusal counts, the status cache).

use std::sync::Arc;

use tandem_core::state::ClusterState;
use tandem_node::NodeContext;

use crate::auth::AuthStats;
use crate::metrics::Metrics;
use crate::status::StatusCache;

/// The running node as the gRPC services and HTTP see it. Cheap to clone.
#[derive(Clone)]
pub struct ApiContext {
    /// The node runtime.
    pub node: NodeContext,
    /// Prometheus metrics that accumulate while the process runs.
    pub metrics: Arc<Metrics>,
    /// Calls refused for want of a credential, per method and reason.
    pub auth_stats: Arc<AuthStats>,
    /// The last status built: GetStatus, status streams, the HTTP status
    /// page and /metrics all answer from it, so many readers cost one build.
    pub status_cache: Arc<StatusCache>,
}

impl ApiContext {
    /// The faces' context around `node`. Counters are since start:
    /// `baseline`, the state when the node started, is not counted.
    pub fn new(node: NodeContext, baseline: &ClusterState) -> ApiContext {
        let metrics = Arc::new(Metrics::new());
        metrics.follow(baseline);
        ApiContext {
            node,
            metrics,
            auth_stats: Arc::new(AuthStats::default()),
            status_cache: Arc::default(),
        }
    }
}
