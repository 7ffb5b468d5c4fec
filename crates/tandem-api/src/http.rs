//! HTTP for load balancers, Prometheus and people (`[node] http_listen`).
//!
//! - `GET /healthz`: 200 while this node may act on its lease, else 503 with
//!   the reason; a small JSON body either way.
//! - `GET /primary/GROUP`: 200 where GROUP is active (assigned here at the
//!   current epoch, running at it, and this node may act on its lease: the
//!   rule the DNS responder answers by), 503 elsewhere, 404 for a group not
//!   in the spec. For HAProxy's `option httpchk`.
//! - `GET /metrics`: Prometheus metrics ([`crate::metrics`]).
//! - `GET /`: the live status page; `GET /api/status` its JSON once,
//!   `GET /api/stream` the same as Server-Sent Events on every change.
//!
//! Read-only and answered from local state, like the gRPC reads: nothing
//! here goes through Raft, so a failover never slows it down.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use serde::Serialize;
use tandem_core::spec::GroupKind;
use tandem_core::state::{ClusterState, Transition, TransitionOutcome};
use tandem_dns::Stats;
use tandem_node::node::NodeContext;
use tandem_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::context::ApiContext;
use crate::metrics::{self, Scrape, kind_str, node_state_str, phase_times, role_str};

/// The status page: one self-contained file (inline CSS and JS).
const STATUS_PAGE: &str = include_str!("status.html");

/// The stream sends nothing more often than this (changes are coalesced)...
const STREAM_MIN_GAP: Duration = Duration::from_millis(100);
/// ...and something at least this often.
const STREAM_MAX_QUIET: Duration = Duration::from_secs(2);

/// Events the status JSON carries (the most recent).
pub const STATUS_EVENTS: usize = 50;
/// Transitions the status JSON carries (the most recent).
pub const STATUS_TRANSITIONS: usize = 20;

#[derive(Clone)]
struct App {
    ctx: ApiContext,
    dns: Option<Arc<Stats>>,
    shutdown: watch::Receiver<bool>,
}

/// The routes, for [`serve`] and tests.
fn router(app: App) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/primary/{group}", get(primary))
        .route("/metrics", get(metrics_text))
        .route("/api/status", get(status_json))
        .route("/api/stream", get(stream))
        .fallback(not_found)
        .with_state(app)
}

/// Serves HTTP on `listener` until `shutdown`; open status streams end then too.
pub async fn serve(
    listener: TcpListener,
    ctx: ApiContext,
    dns: Option<Arc<Stats>>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut stop = shutdown.clone();
    let app = App { ctx, dns, shutdown };
    info!(http = %addr, "HTTP listening (healthz, primary, metrics, status page)");
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

/// Follows the applied state and counts events and transitions for
/// `/metrics` as they are applied (a scrape counts what is left), so an
/// event dropped from the bounded log before a scrape is still counted.
pub async fn follow_metrics(ctx: ApiContext, mut shutdown: watch::Receiver<bool>) {
    let mut state = ctx.node.state.clone();
    let mut raft = ctx.node.raft.watch();
    loop {
        let snapshot = state.borrow_and_update().clone();
        ctx.metrics.follow(&snapshot.cluster);
        let (term, leader) = {
            let v = raft.borrow_and_update();
            (v.term, v.leader)
        };
        ctx.metrics.follow_leader(term, leader);
        tokio::select! {
            r = state.changed() => if r.is_err() { return },
            r = raft.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// What this node knows about itself now.
struct Me {
    applied_index: u64,
    lease_valid: bool,
    lease_index: u64,
    may_act: bool,
    leaving: bool,
}

fn me(ctx: &NodeContext) -> Me {
    let now = ctx.clock.now();
    let applied_index = ctx.state.borrow().last_applied.map_or(0, |l| l.index);
    Me {
        applied_index,
        lease_valid: ctx.liveness.own_lease_valid(now),
        lease_index: ctx.liveness.lease_index(),
        may_act: ctx.liveness.may_act(now, applied_index),
        leaving: ctx.leaving.load(std::sync::atomic::Ordering::SeqCst),
    }
}

/// The body of `GET /healthz`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Health {
    pub node: String,
    pub role: String,
    pub lease_valid: bool,
    pub may_act: bool,
    pub coordinator: Option<String>,
    pub term: u64,
    pub applied_index: u64,
    /// Why the node is not healthy; absent when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a node with these facts may not act, if it may not.
fn unhealthy_reason(m: &Me, coordinator: Option<&str>) -> Option<String> {
    if m.leaving {
        return Some("the agent is stopping".into());
    }
    if !m.lease_valid {
        return Some(match coordinator {
            Some(c) => format!("no valid lease: coordinator {c} has not granted this node one recently"),
            None => "no valid lease: no coordinator known".into(),
        });
    }
    if !m.may_act {
        return Some(format!(
            "holds a lease but applied the log only up to index {}; the coordinator had applied {} when granting it",
            m.applied_index, m.lease_index
        ));
    }
    None
}

/// Why this node is not healthy now (`/healthz`'s 503 and the gRPC health
/// service's NOT_SERVING), or `None`: it holds a valid lease, may act on it
/// and is not stopping.
pub fn unhealthy(ctx: &NodeContext) -> Option<String> {
    unhealthy_reason(&me(ctx), coordinator_name(ctx).0.as_deref())
}

fn coordinator_name(ctx: &NodeContext) -> (Option<String>, u64) {
    let term = ctx.raft.term();
    (ctx.coordinator().map(|(_, i)| i.name), term)
}

async fn healthz(State(app): State<App>) -> Response {
    let ctx = &app.ctx.node;
    let m = me(ctx);
    let (coordinator, term) = coordinator_name(ctx);
    let reason = unhealthy_reason(&m, coordinator.as_deref());
    let body = Health {
        node: ctx.me.name.clone(),
        role: ctx.me.role.to_string(),
        lease_valid: m.lease_valid,
        may_act: m.may_act && !m.leaving,
        coordinator,
        term,
        applied_index: m.applied_index,
        reason,
    };
    let code = if body.reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(code, &body)
}

/// The body of `GET /primary/GROUP`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PrimaryAnswer {
    pub group: String,
    /// The node that answered.
    pub node: String,
    /// Whether the group is active on the answering node.
    pub active: bool,
    /// The node(s) the group is assigned to at its current epoch.
    pub primary: Option<String>,
    pub nodes: Vec<String>,
    pub epoch: u64,
    /// Why the group is not active here; absent when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Whether `group` runs healthily on `node` by the replicated state: it is
/// assigned there at the current epoch and the node's last report is
/// `running` at that epoch (the DNS rule). None for a group not in the spec;
/// otherwise the answer (with `active` still to be and-ed with `may_act`).
pub fn group_on_node(c: &ClusterState, group: &str, node: &str) -> Option<PrimaryAnswer> {
    let spec = c.spec.group(group)?;
    let gs = c.groups.get(group).cloned().unwrap_or_default();
    let report = gs.reports.get(node);
    let reason = if !gs.assigned.contains(node) {
        Some(match gs.assigned.iter().next() {
            Some(p) if spec.kind == GroupKind::Exclusive => format!("not assigned here; the primary is {p}"),
            Some(_) => "not assigned here".to_string(),
            None => "not assigned to any node".to_string(),
        })
    } else if !gs.active_on(node) {
        Some(format!(
            "assigned here at epoch {} but not running at it (last report: {})",
            gs.epoch,
            report.map_or("none".to_string(), |r| format!("{} at epoch {}", r.phase, r.epoch))
        ))
    } else {
        None
    };
    Some(PrimaryAnswer {
        group: group.to_string(),
        node: node.to_string(),
        active: reason.is_none(),
        primary: (spec.kind == GroupKind::Exclusive)
            .then(|| gs.assigned.iter().next().cloned())
            .flatten(),
        nodes: gs.assigned.iter().cloned().collect(),
        epoch: gs.epoch,
        reason,
    })
}

/// Whether every group of the spec is active on this node now.
fn active_groups(ctx: &NodeContext, c: &ClusterState, may_act: bool) -> BTreeMap<String, bool> {
    c.spec
        .groups
        .iter()
        .map(|g| {
            let active = may_act && group_on_node(c, &g.name, &ctx.me.name).is_some_and(|a| a.active);
            (g.name.clone(), active)
        })
        .collect()
}

async fn primary(State(app): State<App>, Path(group): Path<String>) -> Response {
    let ctx = &app.ctx.node;
    let state = ctx.state.borrow().clone();
    let Some(mut answer) = group_on_node(&state.cluster, &group, &ctx.me.name) else {
        let body = serde_json::json!({
            "group": group,
            "node": ctx.me.name,
            "reason": "no such group in the spec",
        });
        return json_response(StatusCode::NOT_FOUND, &body);
    };
    let m = me(ctx);
    if answer.active && (!m.may_act || m.leaving) {
        let (coordinator, _) = coordinator_name(ctx);
        answer.active = false;
        answer.reason = Some(format!(
            "running here, but this node may not act on its lease: {}",
            unhealthy_reason(&m, coordinator.as_deref()).unwrap_or_default()
        ));
    }
    let code = if answer.active {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(code, &answer)
}

/// Everything `/metrics` reads at scrape time.
fn scrape(app: &App) -> Scrape {
    let api = &app.ctx;
    let ctx = &api.node;
    let status = (*api.status_cache.get(ctx)).clone();
    let state = ctx.state.borrow().clone();
    api.metrics.follow(&state.cluster);
    let m = me(ctx);
    Scrape {
        role: ctx.me.role.to_string(),
        own_lease_valid: m.lease_valid,
        may_act: m.may_act,
        is_coordinator: ctx.is_coordinator(),
        active_here: active_groups(ctx, &state.cluster, m.may_act && !m.leaving),
        lease: ctx.liveness.counters.snapshot(),
        node: ctx.counters.snapshot_at(ctx.clock.unix_ms()),
        dns: app.dns.as_ref().map(|d| d.snapshot()),
        refused: api.auth_stats.snapshot(),
        raft_rpc_failures: ctx.raft.rpc_failures().snapshot(),
        process: crate::process::read(),
        status,
    }
}

/// OpenMetrics, or Prometheus' classic text format for a client that asks
/// for `text/plain` only (`promtool check metrics`).
async fn metrics_text(State(app): State<App>, headers: axum::http::HeaderMap) -> Response {
    let classic = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(metrics::wants_text_format);
    match app.ctx.metrics.render(&scrape(&app)) {
        Ok(text) if classic => (
            [(header::CONTENT_TYPE, metrics::TEXT_CONTENT_TYPE)],
            metrics::to_text_format(&text),
        )
            .into_response(),
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            warn!(error = %e, "cannot encode the metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics\n").into_response()
        }
    }
}

/// The status page's JSON: the cluster status ([`crate::status::build`]),
/// the recent failovers and switchovers and the last events.
#[derive(Debug, Serialize, PartialEq)]
pub struct StatusView {
    pub cluster: String,
    pub coordinator: Option<String>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub answered_by: String,
    /// Whether the answering node may act on its lease.
    pub may_act: bool,
    pub view_fresh: bool,
    pub at_unix_ms: u64,
    pub spec_version: u64,
    pub nodes: Vec<NodeView>,
    pub groups: Vec<GroupView>,
    pub fencing_needed: BTreeMap<String, String>,
    /// The most recent first.
    pub transitions: Vec<TransitionView>,
    /// The most recent first.
    pub events: Vec<EventView>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub role: &'static str,
    pub state: &'static str,
    pub address: String,
    pub voter: bool,
    pub lease_valid: bool,
    pub last_heartbeat_age_ms: Option<u64>,
    pub version: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct GroupView {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub primary: Option<String>,
    pub nodes: Vec<String>,
    pub epoch: u64,
    pub blocked_reason: String,
    pub reason: String,
    pub resources: Vec<ResourceView>,
    /// Why it has no eligible standby (the loss of its node would stop
    /// it), and since when; `None` while it has one.
    pub unprotected: Option<UnprotectedView>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct UnprotectedView {
    pub reason: String,
    pub since_unix_ms: u64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ResourceView {
    pub name: String,
    pub node: String,
    pub last_action: String,
    pub result: String,
    pub failures: u32,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct TransitionView {
    pub id: u64,
    pub group: String,
    pub kind: &'static str,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
    pub actor: String,
    pub epoch: u64,
    /// in_progress, completed or abandoned.
    pub outcome: &'static str,
    /// Why it was abandoned.
    pub outcome_reason: Option<String>,
    /// When its first reached phase was.
    pub started_unix_ms: Option<u64>,
    /// From the first reached phase to the last.
    pub duration_ms: Option<u64>,
    /// The reached phases in order.
    pub phases: Vec<PhaseView>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PhaseView {
    pub name: &'static str,
    pub at_unix_ms: u64,
    /// From the first reached phase.
    pub offset_ms: u64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct EventView {
    pub seq: u64,
    pub at_unix_ms: u64,
    pub actor: String,
    pub kind: &'static str,
    pub message: String,
}

impl TransitionView {
    pub fn new(t: &Transition) -> TransitionView {
        let times = phase_times(t);
        let first = times.first().map(|(_, at)| *at);
        let last = times.last().map(|(_, at)| *at);
        let (outcome, outcome_reason) = match &t.outcome {
            TransitionOutcome::InProgress => ("in_progress", None),
            TransitionOutcome::Completed => ("completed", None),
            TransitionOutcome::Abandoned(why) => ("abandoned", Some(why.clone())),
        };
        TransitionView {
            id: t.id,
            group: t.group.clone(),
            kind: kind_str(t.kind),
            from: t.from.clone(),
            to: t.to.clone(),
            reason: t.reason.clone(),
            actor: t.actor.clone(),
            epoch: t.epoch,
            outcome,
            outcome_reason,
            started_unix_ms: first,
            duration_ms: first.zip(last).map(|(f, l)| l.saturating_sub(f)),
            phases: times
                .iter()
                .map(|(name, at)| PhaseView {
                    name,
                    at_unix_ms: *at,
                    offset_ms: at.saturating_sub(first.unwrap_or(*at)),
                })
                .collect(),
        }
    }
}

impl StatusView {
    /// Maps a status and the replicated state to the page's JSON.
    pub fn new(s: &pb::ClusterStatus, c: &ClusterState, may_act: bool) -> StatusView {
        StatusView {
            cluster: s.cluster.clone(),
            coordinator: s.coordinator.clone(),
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            answered_by: s.answered_by.clone(),
            may_act,
            view_fresh: s.view_fresh,
            at_unix_ms: s.at_unix_ms,
            spec_version: s.spec_version,
            nodes: s
                .nodes
                .iter()
                .map(|n| NodeView {
                    name: n.name.clone(),
                    role: role_str(n.role),
                    state: node_state_str(n.state),
                    address: n.address.clone(),
                    voter: n.voter,
                    lease_valid: n.lease_valid,
                    last_heartbeat_age_ms: n.last_heartbeat_age_ms,
                    version: n.version.clone(),
                })
                .collect(),
            groups: s
                .groups
                .iter()
                .map(|g| GroupView {
                    name: g.name.clone(),
                    kind: g.kind.clone(),
                    state: g.state.clone(),
                    primary: g.primary.clone(),
                    nodes: g.nodes.clone(),
                    epoch: g.epoch,
                    blocked_reason: g.blocked_reason.clone(),
                    reason: g.reason.clone(),
                    resources: g
                        .resources
                        .iter()
                        .map(|r| ResourceView {
                            name: r.name.clone(),
                            node: r.node.clone(),
                            last_action: r.last_action.clone(),
                            result: r.result.clone(),
                            failures: r.failures,
                        })
                        .collect(),
                    unprotected: g.unprotected_since_unix_ms.map(|since| UnprotectedView {
                        reason: g.unprotected.clone(),
                        since_unix_ms: since,
                    }),
                })
                .collect(),
            fencing_needed: s.fencing_needed.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            transitions: c
                .transitions
                .iter()
                .rev()
                .take(STATUS_TRANSITIONS)
                .map(TransitionView::new)
                .collect(),
            events: c
                .events
                .iter()
                .rev()
                .take(STATUS_EVENTS)
                .map(|e| EventView {
                    seq: e.seq,
                    at_unix_ms: e.at_unix_ms,
                    actor: e.actor.clone(),
                    kind: crate::convert::event_kind_str(e.kind),
                    message: e.message.clone(),
                })
                .collect(),
        }
    }
}

/// The status page's JSON now.
fn status_view(api: &ApiContext) -> StatusView {
    let ctx = &api.node;
    let status = (*api.status_cache.get(ctx)).clone();
    let state = ctx.state.borrow().clone();
    let m = me(ctx);
    StatusView::new(&status, &state.cluster, m.may_act && !m.leaving)
}

async fn status_json(State(app): State<App>) -> Response {
    json_response(StatusCode::OK, &status_view(&app.ctx))
}

/// `GET /api/stream`: the status JSON at once, then on every change of the
/// applied state or of leases (at most every [`STREAM_MIN_GAP`]) and at
/// least every [`STREAM_MAX_QUIET`]. Ends when the agent stops.
async fn stream(State(app): State<App>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    struct Follow {
        ctx: ApiContext,
        state: watch::Receiver<Arc<tandem_raft::store::AppliedState>>,
        live: watch::Receiver<u64>,
        shutdown: watch::Receiver<bool>,
        last: Option<Instant>,
    }
    let follow = Follow {
        state: app.ctx.node.state.clone(),
        live: app.ctx.node.liveness.subscribe(),
        shutdown: app.shutdown.clone(),
        ctx: app.ctx,
        last: None,
    };
    let events = futures::stream::unfold(follow, |mut f| async move {
        if *f.shutdown.borrow() {
            return None;
        }
        if let Some(last) = f.last {
            tokio::select! {
                r = f.state.changed() => if r.is_err() { return None },
                r = f.live.changed() => if r.is_err() { return None },
                _ = tokio::time::sleep_until(last + STREAM_MAX_QUIET) => {}
                _ = f.shutdown.changed() => return None,
            }
            // Coalesce a burst of changes into one document.
            tokio::select! {
                _ = tokio::time::sleep_until(last + STREAM_MIN_GAP) => {}
                _ = f.shutdown.changed() => return None,
            }
        }
        f.state.borrow_and_update();
        f.live.borrow_and_update();
        f.last = Some(Instant::now());
        let event = match serde_json::to_string(&status_view(&f.ctx)) {
            Ok(json) => SseEvent::default().event("status").data(json),
            Err(e) => SseEvent::default().comment(format!("cannot encode the status: {e}")),
        };
        Some((Ok(event), f))
    });
    Sse::new(events)
}

async fn page() -> Response {
    let mut r = STATUS_PAGE.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Everything is inline and data is inserted as text, never as markup;
    // the policy also keeps the page from loading anything from elsewhere.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
             img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found; try /, /healthz, /primary/GROUP, /metrics, /api/status, /api/stream\n",
    )
        .into_response()
}

fn json_response<T: Serialize>(code: StatusCode, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(mut text) => {
            text.push('\n');
            let mut r = (code, text).into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            warn!(error = %e, "cannot encode a JSON answer");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the answer\n").into_response()
        }
    }
}

/// Binds the HTTP listener (so a taken port is an error at start).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::collections::BTreeSet;
    use tandem_core::groups::NodeReport;
    use tandem_core::groups::Phase;
    use tandem_core::state::{TransitionKind, TransitionPhases};

    fn state_with_web() -> ClusterState {
        let spec = tandem_core::spec::Spec::parse(
            "[[groups]]\nname = \"web\"\n\n[[groups.resources]]\nname = \"http\"\nagent = \"exec\"\ncommand = \"/bin/true\"\n",
            "spec.toml",
            &[],
        )
        .unwrap();
        let mut c = ClusterState {
            spec,
            ..Default::default()
        };
        let mut g = tandem_core::groups::GroupState::default();
        g.assign(&BTreeSet::from(["site-a".to_string()]), 2);
        c.groups.insert("web".into(), g);
        c
    }

    fn report(c: &mut ClusterState, node: &str, epoch: u64, phase: Phase) {
        c.groups.get_mut("web").unwrap().record_report(
            node,
            NodeReport {
                epoch,
                phase,
                resources: Vec::new(),
                at_unix_ms: 0,
            },
        );
    }

    #[test]
    fn a_group_is_active_only_where_assigned_and_running_at_the_current_epoch() {
        let mut c = state_with_web();
        assert!(group_on_node(&c, "nope", "site-a").is_none(), "not in the spec: 404");
        let a = group_on_node(&c, "web", "site-a").unwrap();
        assert!(!a.active);
        assert!(a.reason.unwrap().contains("last report: none"));
        report(&mut c, "site-a", 1, Phase::Running);
        assert!(
            !group_on_node(&c, "web", "site-a").unwrap().active,
            "running at an old epoch"
        );
        report(&mut c, "site-a", 2, Phase::Running);
        let a = group_on_node(&c, "web", "site-a").unwrap();
        assert!(a.active && a.reason.is_none(), "{a:?}");
        assert_eq!(a.primary.as_deref(), Some("site-a"));
        let b = group_on_node(&c, "web", "site-b").unwrap();
        assert!(!b.active);
        assert_eq!(b.reason.as_deref(), Some("not assigned here; the primary is site-a"));
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["primary"], "site-a");
        assert_eq!(json["epoch"], 2);
    }

    #[test]
    fn health_reasons_name_what_is_missing() {
        let mut m = Me {
            applied_index: 5,
            lease_valid: true,
            lease_index: 5,
            may_act: true,
            leaving: false,
        };
        assert_eq!(unhealthy_reason(&m, Some("site-b")), None);
        m.may_act = false;
        m.lease_index = 9;
        assert!(
            unhealthy_reason(&m, Some("site-b"))
                .unwrap()
                .contains("only up to index 5; the coordinator had applied 9")
        );
        m.lease_valid = false;
        assert!(unhealthy_reason(&m, None).unwrap().contains("no coordinator known"));
        m.leaving = true;
        assert_eq!(unhealthy_reason(&m, None).unwrap(), "the agent is stopping");
    }

    #[test]
    fn the_status_json_maps_the_status_transitions_and_last_events() {
        let mut c = state_with_web();
        for i in 0..60 {
            c.apply(&tandem_core::state::Command::Note {
                message: format!("<b>note {i}</b>"),
                actor: "op@host".into(),
                at_unix_ms: i,
            });
        }
        c.transitions.push_back(Transition {
            id: 7,
            group: "web".into(),
            kind: TransitionKind::Switchover,
            from: Some("site-a".into()),
            to: Some("site-b".into()),
            reason: "operator".into(),
            actor: "op@host".into(),
            epoch: 3,
            phases: TransitionPhases {
                detected_unix_ms: None,
                decided_unix_ms: Some(1_000),
                fenced_unix_ms: Some(1_200),
                started_unix_ms: Some(1_300),
                healthy_unix_ms: None,
                dns_unix_ms: None,
            },
            outcome: TransitionOutcome::Abandoned("site-b failed".into()),
        });
        let status = pb::ClusterStatus {
            cluster: "prod".into(),
            coordinator: Some("site-b".into()),
            term: 4,
            answered_by: "site-a".into(),
            nodes: vec![pb::NodeStatus {
                name: "witness".into(),
                role: pb::NodeRole::Witness.into(),
                state: pb::NodeState::Suspect.into(),
                ..Default::default()
            }],
            groups: vec![pb::GroupStatus {
                name: "web".into(),
                kind: "exclusive".into(),
                state: "running".into(),
                primary: Some("site-a".into()),
                nodes: vec!["site-a".into()],
                epoch: 2,
                resources: vec![pb::ResourceStatus {
                    name: "http".into(),
                    node: "site-a".into(),
                    last_action: "monitor".into(),
                    result: "ok".into(),
                    failures: 1,
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let view = StatusView::new(&status, &c, true);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["cluster"], "prod");
        assert_eq!(json["coordinator"], "site-b");
        assert_eq!(json["nodes"][0]["role"], "witness");
        assert_eq!(json["nodes"][0]["state"], "suspect");
        assert_eq!(json["groups"][0]["primary"], "site-a");
        assert_eq!(json["groups"][0]["resources"][0]["failures"], 1);
        let events = json["events"].as_array().unwrap();
        assert_eq!(events.len(), STATUS_EVENTS);
        assert_eq!(events[0]["message"], "<b>note 59</b>", "newest first, as text");
        assert_eq!(events[0]["kind"], "note");
        let t = &json["transitions"][0];
        assert_eq!(t["kind"], "switchover");
        assert_eq!(t["outcome"], "abandoned");
        assert_eq!(t["outcome_reason"], "site-b failed");
        assert_eq!(t["duration_ms"], 300);
        let phases: Vec<(String, u64)> = t["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["offset_ms"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            phases,
            vec![("decided".into(), 0), ("fenced".into(), 200), ("started".into(), 300)]
        );
    }

    #[test]
    fn the_status_page_is_self_contained() {
        let page = STATUS_PAGE.to_ascii_lowercase();
        assert!(page.contains("<meta name=\"viewport\""));
        for external in ["http://", "https://", "src=", "@import", "url("] {
            assert!(
                !page.contains(external),
                "the page refers to something outside it: {external}"
            );
        }
        assert!(!page.contains("innerhtml"), "data goes in as text, never as markup");
        assert!(page.contains("/api/stream"));
    }
}
