//! `tandem.v1.Tandem`: the operator and dashboard API.
//!
//! Reads answer from this node's local state. Writes must be carried out by
//! the coordinator: a node that is not the coordinator forwards them there,
//! once (a forwarded request that lands on a non-coordinator is refused with
//! `UNAVAILABLE` so the caller can retry when the election is over).

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tandem_core::lease::NodeState;
use tandem_core::membership::node_id;
use tandem_core::operator::check_fence_confirm;
use tandem_core::spec::{Spec, diff};
use tandem_core::state::{Command, EventKind, TransitionKind, validate_note};
use tandem_core::whatif::{self, Hypothesis};
use tandem_core::{NodeId, NodeInfo};
use tandem_node::NodeContext;
use tandem_node::membership::{self, AddMember, DEFAULT_CATCH_UP, DEFAULT_HANDOVER};
use tandem_proto::v1 as pb;
use tandem_proto::v1::tandem_client::TandemClient;
use tandem_proto::v1::tandem_server::Tandem;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::context::ApiContext;
use crate::convert::{actor, event_to_pb, member_change_to_pb, role_from_pb, simulation_to_pb};
use crate::errors::membership_status;
use crate::{operate, spec_check, status};

/// Marks a request forwarded by another node, so it is never forwarded twice.
const FORWARDED: &str = "x-tandem-forwarded";
const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct TandemService {
    ctx: NodeContext,
    /// Ends status streams when the agent shuts down.
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// The last status built, answering GetStatus and every status stream.
    cache: Arc<status::StatusCache>,
    /// Bumped when the significant part of the status changed; started
    /// with the first status stream.
    changes: Arc<std::sync::OnceLock<watch::Receiver<u64>>>,
}

impl TandemService {
    pub fn new(api: ApiContext, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        TandemService {
            ctx: api.node,
            shutdown,
            cache: api.status_cache,
            changes: Arc::default(),
        }
    }

    /// Follows significant status changes, starting the one task that
    /// publishes them on first use.
    fn significant_changes(&self) -> watch::Receiver<u64> {
        self.changes
            .get_or_init(|| {
                let (tx, rx) = watch::channel(0);
                tokio::spawn(publish_changes(
                    self.ctx.clone(),
                    self.cache.clone(),
                    tx,
                    self.shutdown.clone(),
                ));
                rx
            })
            .clone()
    }

    /// `Ok(None)`: carry the request out here. `Ok(Some(client))`: forward it
    /// with this client to the coordinator.
    fn route<T>(&self, req: &Request<T>) -> Result<Option<TandemClient<tonic::transport::Channel>>, Status> {
        if self.ctx.is_coordinator() {
            return Ok(None);
        }
        if req.metadata().contains_key(FORWARDED) {
            return Err(Status::unavailable(
                "the coordinator changed while the request was forwarded; retry",
            ));
        }
        let Some((_, coordinator)) = self.ctx.coordinator() else {
            return Err(Status::unavailable(
                "there is no coordinator right now (election in progress, or no majority); retry",
            ));
        };
        let channel = self
            .ctx
            .channels
            .get(&coordinator.address)
            .map_err(|e| Status::unavailable(format!("cannot reach coordinator {}: {e}", coordinator.name)))?;
        Ok(Some(TandemClient::new(channel)))
    }

    /// A reply of the coordinator, with how far it has applied: a node that
    /// forwarded the request waits until it applied as far before it
    /// answers, so a caller reads its own write from the node it wrote
    /// through.
    fn answered<T>(&self, message: T) -> Response<T> {
        let mut r = Response::new(message);
        let applied = self.ctx.state.borrow().last_applied.map_or(0, |l| l.index);
        r.metadata_mut().insert(APPLIED_HEADER, applied.into());
        r
    }

    /// The coordinator's reply to a forwarded request, once this node has
    /// applied what the coordinator had when it answered (at most
    /// [`READ_YOUR_WRITES`]).
    async fn forwarded<T>(&self, reply: Result<Response<T>, Status>) -> Result<Response<T>, Status> {
        let reply = reply.map_err(forward_failed)?;
        let applied = reply
            .metadata()
            .get(APPLIED_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(index) = applied {
            let mut state = self.ctx.state.clone();
            let caught_up = state.wait_for(|s| s.last_applied.is_some_and(|l| l.index >= index));
            if tokio::time::timeout(READ_YOUR_WRITES, caught_up).await.is_err() {
                warn!(index, "answering a forwarded write before this node applied it");
            }
        }
        Ok(reply)
    }

    /// A client of member `name`, the new coordinator after a handover.
    fn route_to(&self, name: &str) -> Result<Option<TandemClient<tonic::transport::Channel>>, Status> {
        let Some((_, node)) = self.members().into_iter().find(|(_, n)| n.name == name) else {
            return Ok(None);
        };
        let channel = self
            .ctx
            .channels
            .get(&node.address)
            .map_err(|e| Status::unavailable(format!("cannot reach coordinator {name}: {e}")))?;
        Ok(Some(TandemClient::new(channel)))
    }

    fn members(&self) -> Vec<(NodeId, NodeInfo)> {
        self.ctx.members()
    }

    /// A node that may be fenced: a member, or a node some group may still
    /// run on.
    fn check_fence_target(&self, node: &str) -> Result<(), Status> {
        let known = self.members().iter().any(|(_, m)| m.name == node)
            || self
                .ctx
                .state
                .borrow()
                .cluster
                .groups
                .values()
                .any(|g| g.may_run().contains(node));
        if !known {
            return Err(Status::not_found(format!("no member named {node:?}")));
        }
        Ok(())
    }

    /// `text` parsed and validated in full, as `apply` commits it: the
    /// core's checks, each resource's agent, the DNS zone it makes, the
    /// fence devices. The error names the file and what is wrong.
    /// Every check of `spec_check` that apply makes, on this node against
    /// the members and the applied state now; the first problem refuses.
    async fn validated_spec(&self, text: String, file: &str) -> Result<Spec, Status> {
        let members: Vec<NodeInfo> = self.members().into_iter().map(|(_, n)| n).collect();
        let refused = |e: spec_check::SpecRefusal| Status::invalid_argument(e.to_string());
        // Parsing a large spec is CPU work: keep it off the async workers.
        let (name, parse_members) = (file.to_string(), members.clone());
        let spec = tokio::task::spawn_blocking(move || spec_check::parse(&text, &name, &parse_members))
            .await
            .map_err(|e| Status::internal(format!("spec validation failed: {e}")))?
            .map_err(refused)?;
        if let Some(e) = spec_check::check_resources(&spec, file, &self.ctx.ocf_root)
            .await
            .into_iter()
            .next()
        {
            return Err(refused(e));
        }
        // The zone must build (static records, names, sizes): checked now,
        // on the spec about to be committed.
        let state = self.ctx.state.borrow().clone();
        spec_check::check_zone(&spec, file, &self.ctx.cluster, &state, &members).map_err(refused)?;
        if let Some(e) = spec_check::check_fence_devices(&spec, file).into_iter().next() {
            return Err(refused(e));
        }
        Ok(spec)
    }

    async fn propose(&self, command: Command) -> Result<(u64, tandem_core::state::Applied), Status> {
        operate::propose(&self.ctx, command).await
    }
}

/// A forwarded call that failed on the way (the coordinator did not answer,
/// the connection broke) rather than being refused by the coordinator: say
/// so, and that a retry may meet a new coordinator.
fn forward_failed(s: Status) -> Status {
    if std::error::Error::source(&s).is_some() {
        Status::unavailable(format!(
            "the coordinator did not answer the forwarded request ({}); an election may be under way: retry",
            s.message()
        ))
    } else {
        s
    }
}

/// The request to send on to the coordinator: marked as forwarded, with the
/// caller's `authorization` (the coordinator checks the token again; under
/// TLS this node's own certificate also vouches for it).
fn forward_metadata<T>(req: Request<T>) -> Request<T> {
    let authorization = req.metadata().get("authorization").cloned();
    let mut r = Request::new(req.into_inner());
    r.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    if let Some(mut a) = authorization {
        a.set_sensitive(true);
        r.metadata_mut().insert("authorization", a);
    }
    r
}

/// The response header in which the coordinator says how far it applied.
const APPLIED_HEADER: &str = "x-tandem-applied";

/// How long a node that forwarded a write waits to apply it itself.
const READ_YOUR_WRITES: Duration = Duration::from_secs(2);

/// Requests that record who made them.
trait HasActor {
    fn actor_mut(&mut self) -> &mut String;
}

macro_rules! has_actor {
    ($($t:ty),*) => {$(
        impl HasActor for $t {
            fn actor_mut(&mut self) -> &mut String {
                &mut self.actor
            }
        }
    )*};
}

has_actor!(
    pb::AddMemberRequest,
    pb::RemoveMemberRequest,
    pb::TransferLeaderRequest,
    pb::AnnotateRequest,
    pb::ApplySpecRequest,
    pb::CleanupResourceRequest,
    pb::FenceNodeRequest,
    pb::MoveRequest,
    pb::SetStandbyRequest,
    pb::SetMaintenanceRequest
);

/// Adds how the caller authenticated to the actor it gave
/// (`alice@host (operator token)`), once, on the node that received the call
/// (a forwarded request already carries it). With security off, the actor
/// stays as given.
fn stamp_actor<T: HasActor>(mut req: Request<T>) -> Request<T> {
    if req.metadata().contains_key(FORWARDED) {
        return req;
    }
    if let Some(how) = req
        .extensions()
        .get::<crate::auth::Caller>()
        .and_then(crate::auth::Caller::describe)
    {
        let a = req.get_mut().actor_mut();
        *a = format!("{} ({how})", actor(a));
    }
    req
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<pb::ClusterStatus, Status>> + Send>>;

/// One status stream's state between two messages.
struct Watch {
    ctx: NodeContext,
    cache: Arc<status::StatusCache>,
    changes: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    max_interval: Duration,
    first: bool,
}

/// Builds the status whenever something it is built from changed (and
/// every two heartbeat intervals, as states also change as heartbeats
/// age), and bumps `changes` when its significant part changed. One such
/// task per node serves every status stream.
async fn publish_changes(
    ctx: NodeContext,
    cache: Arc<status::StatusCache>,
    changes: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The Raft view changes only with leadership or membership.
    let mut metrics = ctx.raft.watch();
    let mut state = ctx.state.clone();
    let mut liveness = ctx.liveness.subscribe();
    let mut poll = tokio::time::interval(ctx.timing.heartbeat_interval * 2);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<pb::ClusterStatus> = None;
    loop {
        let sig = status::significant(&cache.get(&ctx));
        if last.as_ref() != Some(&sig) {
            changes.send_modify(|v| *v = v.wrapping_add(1));
            last = Some(sig);
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            r = state.changed() => if r.is_err() { return },
            r = liveness.changed() => if r.is_err() { return },
            _ = poll.tick() => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[tonic::async_trait]
impl Tandem for TandemService {
    async fn get_status(&self, _req: Request<pb::GetStatusRequest>) -> Result<Response<pb::ClusterStatus>, Status> {
        Ok(Response::new((*self.cache.get(&self.ctx)).clone()))
    }

    type WatchStatusStream = StatusStream;

    async fn watch_status(
        &self,
        req: Request<pb::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        let max_interval = match req.get_ref().max_interval_ms {
            0 => DEFAULT_WATCH_INTERVAL,
            ms => Duration::from_millis(u64::from(ms)),
        };
        // No task and no queue per stream: the stream is polled when the
        // connection can take another message, and then waits for a
        // significant change (published once for all streams) or its interval.
        let watch = Watch {
            ctx: self.ctx.clone(),
            cache: self.cache.clone(),
            changes: self.significant_changes(),
            shutdown: self.shutdown.clone(),
            max_interval,
            first: true,
        };
        let stream = futures::stream::unfold(watch, |mut w| async move {
            if !w.first {
                tokio::select! {
                    r = w.changes.changed() => if r.is_err() { return None },
                    _ = tokio::time::sleep(w.max_interval) => {}
                    _ = w.shutdown.changed() => return None,
                }
            }
            w.first = false;
            w.changes.mark_unchanged();
            let s = (*w.cache.get(&w.ctx)).clone();
            Some((Ok(s), w))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn add_member(&self, req: Request<pb::AddMemberRequest>) -> Result<Response<pb::MemberChangeReply>, Status> {
        let req = stamp_actor(req);
        if let Some(mut c) = self.route(&req)? {
            return self.forwarded(c.add_member(forward_metadata(req)).await).await;
        }
        let req = req.into_inner();
        let role =
            role_from_pb(req.role).ok_or_else(|| Status::invalid_argument(format!("unknown role {}", req.role)))?;
        let catch_up = match req.catch_up_timeout_ms {
            0 => DEFAULT_CATCH_UP,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let add = AddMember {
            name: req.name,
            address: req.address,
            role,
            catch_up,
            actor: actor(&req.actor),
        };
        let change = membership::add_member(&self.ctx, add)
            .await
            .map_err(membership_status)?;
        Ok(self.answered(member_change_to_pb(change)))
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MemberChangeReply>, Status> {
        let req = stamp_actor(req);
        if let Some(mut c) = self.route(&req)? {
            return self.forwarded(c.remove_member(forward_metadata(req)).await).await;
        }
        if req.get_ref().name == self.ctx.me.name {
            // Removing the coordinator itself: hand the role over first, so
            // that writes never wait out an election, then let the new
            // coordinator remove this node.
            let handed = membership::hand_over(&self.ctx, None, DEFAULT_HANDOVER, "this node is being removed")
                .await
                .map_err(membership_status)?;
            let Some(mut c) = self.route_to(&handed.to)? else {
                return Err(Status::unavailable(
                    "the coordinator changed during the handover; retry",
                ));
            };
            return self.forwarded(c.remove_member(forward_metadata(req)).await).await;
        }
        let req = req.into_inner();
        let change = membership::remove_member(&self.ctx, req.name, actor(&req.actor))
            .await
            .map_err(membership_status)?;
        Ok(self.answered(member_change_to_pb(change)))
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderReply>, Status> {
        let req = stamp_actor(req);
        if let Some(mut c) = self.route(&req)? {
            return self.forwarded(c.transfer_leader(forward_metadata(req)).await).await;
        }
        let req = req.into_inner();
        let timeout = match req.timeout_ms {
            0 => DEFAULT_HANDOVER,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let why = format!("asked by {}", actor(&req.actor));
        let to = (!req.to.is_empty()).then_some(req.to.as_str());
        let handed = membership::hand_over(&self.ctx, to, timeout, &why)
            .await
            .map_err(membership_status)?;
        Ok(Response::new(pb::TransferLeaderReply {
            from: handed.from,
            to: handed.to,
            elapsed_ms: tandem_core::timing::duration_ms(handed.elapsed),
        }))
    }

    async fn annotate(&self, req: Request<pb::AnnotateRequest>) -> Result<Response<pb::AnnotateReply>, Status> {
        let req = stamp_actor(req);
        validate_note(&req.get_ref().message).map_err(Status::invalid_argument)?;
        if let Some(mut c) = self.route(&req)? {
            return self.forwarded(c.annotate(forward_metadata(req)).await).await;
        }
        let req = req.into_inner();
        let (log_index, applied) = self
            .propose(Command::Note {
                message: req.message,
                actor: actor(&req.actor),
                at_unix_ms: self.ctx.clock.unix_ms(),
            })
            .await?;
        Ok(self.answered(pb::AnnotateReply {
            event_seq: applied.event_seq.unwrap_or_default(),
            log_index,
        }))
    }

    async fn apply_spec(&self, req: Request<pb::ApplySpecRequest>) -> Result<Response<pb::ApplySpecReply>, Status> {
        let req = stamp_actor(req);
        if let Some(mut c) = self.route(&req)? {
            return self.forwarded(c.apply_spec(forward_metadata(req)).await).await;
        }
        let req = req.into_inner();
        let file = if req.file.is_empty() { "spec" } else { req.file.as_str() };
        let spec = self.validated_spec(req.spec.clone(), file).await?;
        let warnings = spec_check::warnings(&spec, file);
        let (current, version) = {
            let s = self.ctx.state.borrow();
            (s.cluster.spec.clone(), s.cluster.spec_version)
        };
        let changes = diff(&current, &spec);
        if req.dry_run {
            return Ok(self.answered(pb::ApplySpecReply {
                version,
                changes,
                applied: false,
                warnings,
            }));
        }
        let (_, applied) = self
            .propose(Command::ApplySpec {
                spec,
                source: req.spec,
                expected_version: version,
                summary: changes.clone(),
                actor: actor(&req.actor),
                at_unix_ms: self.ctx.clock.unix_ms(),
            })
            .await?;
        if let Some(why) = applied.rejected {
            return Err(Status::aborted(why));
        }
        for w in &warnings {
            warn!(version = version + 1, "spec applied with a warning: {w}");
        }
        Ok(self.answered(pb::ApplySpecReply {
            version: version + 1,
            changes,
            applied: true,
            warnings,
        }))
    }

    async fn get_spec(&self, _req: Request<pb::GetSpecRequest>) -> Result<Response<pb::GetSpecReply>, Status> {
        let s = self.ctx.state.borrow();
        Ok(Response::new(pb::GetSpecReply {
            version: s.cluster.spec_version,
            // Fence devices' passwords are replicated (any node may fence),
            // but never shown.
            spec: tandem_core::spec::redact_source(&s.cluster.spec_source, &s.cluster.spec),
        }))
    }

    async fn cleanup_resource(
        &self,
        req: Request<pb::CleanupResourceRequest>,
    ) -> Result<Response<pb::CleanupResourceReply>, Status> {
        let req = stamp_actor(req);
        if let Some(mut c) = self.route(&req)? {
            return self.forwarded(c.cleanup_resource(forward_metadata(req)).await).await;
        }
        let req = req.into_inner();
        let group = (!req.group.is_empty()).then_some(req.group);
        let node = (!req.node.is_empty()).then_some(req.node);
        {
            let s = self.ctx.state.borrow();
            if let Some(g) = &group
                && s.cluster.spec.group(g).is_none()
                && !s.cluster.groups.contains_key(g)
            {
                return Err(Status::not_found(format!("no group named {g:?}")));
            }
        }
        if let Some(n) = &node
            && !self.members().iter().any(|(_, m)| &m.name == n)
        {
            return Err(Status::not_found(format!("no member named {n:?}")));
        }
        let (log_index, _) = self
            .propose(Command::ClearFailures {
                group,
                node,
                actor: actor(&req.actor),
                at_unix_ms: self.ctx.clock.unix_ms(),
            })
            .await?;
        Ok(self.answered(pb::CleanupResourceReply { log_index }))
    }

    async fn fence_node(&self, req: Request<pb::FenceNodeRequest>) -> Result<Response<pb::FenceNodeReply>, Status> {
        let req = stamp_actor(req);
        if let Some(mut c) = self.route(&req)? {
            return self.forwarded(c.fence_node(forward_metadata(req)).await).await;
        }
        let req = req.into_inner();
        self.check_fence_target(&req.node)?;
        let has_devices = self.ctx.state.borrow().cluster.spec.fencing.has_devices(&req.node);
        if !has_devices {
            return Err(Status::failed_precondition(format!(
                "{} has no fence device in the spec; once it is off, record that with `tandem fence confirm {}`",
                req.node, req.node
            )));
        }
        let timeout = match req.timeout_ms {
            0 => Duration::from_secs(60),
            // From the network: bounded like every duration Tandem is given.
            ms => Duration::from_millis(ms).min(tandem_core::timing::MAX_DURATION),
        };
        let actor = actor(&req.actor);
        warn!(node = %req.node, %actor, "fencing requested by an operator");
        // Outcomes are recorded as events after this one (also when the
        // request joins one already pending).
        let after = {
            let s = self.ctx.state.borrow();
            s.cluster.events.back().map_or(0, |e| e.seq)
        };
        let (log_index, _) = self
            .propose(Command::FenceRequested {
                node: req.node.clone(),
                reason: format!("requested by {actor}"),
                actor: actor.clone(),
                at_unix_ms: self.ctx.clock.unix_ms(),
            })
            .await?;
        let (fenced, summary) = tokio::time::timeout(timeout, wait_for_fence_outcome(&self.ctx, &req.node, after))
            .await
            .map_err(|_| {
                let last = self.ctx.state.borrow().cluster.fence_failures.get(&req.node).cloned();
                Status::deadline_exceeded(format!(
                    "{} was not fenced within {timeout:?}{}; fencing goes on (see `tandem status` and `tandem events`)",
                    req.node,
                    last.map(|l| format!(" (last attempt: {l})")).unwrap_or_default()
                ))
            })?;
        Ok(self.answered(pb::FenceNodeReply {
            fenced,
            summary,
            log_index,
        }))
    }

    async fn confirm_fenced(&self, req: Request<pb::FenceNodeRequest>) -> Result<Response<pb::FenceNodeReply>, Status> {
        let req = stamp_actor(req);
        if let Some(mut c) = self.route(&req)? {
            return self.forwarded(c.confirm_fenced(forward_metadata(req)).await).await;
        }
        let req = req.into_inner();
        self.check_fence_target(&req.node)?;
        let now = self.ctx.clock.now();
        let members: BTreeSet<NodeId> = self.ctx.member_ids();
        let (view, _) = self.ctx.liveness.view(now, &members);
        let term = self.ctx.raft.term();
        let id = node_id(&req.node);
        // Until its lease certainly expired it may still run its groups on
        // its own authority.
        let seen = view.iter().find(|e| e.id == id);
        check_fence_confirm(
            &req.node,
            self.ctx.liveness.lease_certainly_expired(term, id, now),
            seen.map_or(NodeState::Suspect, |e| e.state),
            seen.and_then(|e| e.age),
        )
        .map_err(crate::errors::refusal_status)?;
        let actor = actor(&req.actor);
        warn!(node = %req.node, %actor, "an operator confirmed a node is off");
        let how = format!("confirmed off by {actor}");
        let (log_index, _) = self
            .propose(Command::Fenced {
                node: req.node.clone(),
                how: how.clone(),
                actor,
                at_unix_ms: self.ctx.clock.unix_ms(),
            })
            .await?;
        Ok(self.answered(pb::FenceNodeReply {
            fenced: true,
            summary: how,
            log_index,
        }))
    }

    async fn get_dns(&self, _req: Request<pb::GetDnsRequest>) -> Result<Response<pb::DnsZone>, Status> {
        let state = self.ctx.state.borrow().clone();
        let members: Vec<NodeInfo> = self.members().into_iter().map(|(_, n)| n).collect();
        let zone = tandem_node::dns::build_zone(&self.ctx.cluster, &state, &members).map_err(Status::internal)?;
        Ok(Response::new(pb::DnsZone {
            zone: zone.origin(),
            serial: zone.serial(),
            answering: tandem_node::dns::may_answer(&self.ctx, state.last_applied.map_or(0, |l| l.index)),
            records: zone
                .records()
                .into_iter()
                .map(|(name, ttl, rtype, data)| pb::DnsRecord {
                    name,
                    ttl,
                    r#type: rtype,
                    data,
                })
                .collect(),
            answered_by: self.ctx.me.name.clone(),
        }))
    }

    async fn list_events(&self, req: Request<pb::ListEventsRequest>) -> Result<Response<pb::ListEventsReply>, Status> {
        let req = req.into_inner();
        let state = self.ctx.state.borrow().clone();
        let events = state
            .cluster
            .events
            .iter()
            .filter(|e| operate::event_matches(e, &req))
            .map(event_to_pb)
            .collect();
        Ok(Response::new(pb::ListEventsReply { events }))
    }

    type SwitchoverStream = operate::MoveStream;

    async fn switchover(&self, req: Request<pb::MoveRequest>) -> Result<Response<Self::SwitchoverStream>, Status> {
        let req = stamp_actor(req);
        if let Some(mut c) = self.route(&req)? {
            let s = c
                .switchover(forward_metadata(req))
                .await
                .map_err(forward_failed)?
                .into_inner();
            return Ok(Response::new(Box::pin(s)));
        }
        let stream = operate::move_group(&self.ctx, req.into_inner(), TransitionKind::Switchover).await?;
        Ok(Response::new(stream))
    }

    type FailoverStream = operate::MoveStream;

    async fn failover(&self, req: Request<pb::MoveRequest>) -> Result<Response<Self::FailoverStream>, Status> {
        let req = stamp_actor(req);
        if let Some(mut c) = self.route(&req)? {
            let s = c
                .failover(forward_metadata(req))
                .await
                .map_err(forward_failed)?
                .into_inner();
            return Ok(Response::new(Box::pin(s)));
        }
        let stream = operate::move_group(&self.ctx, req.into_inner(), TransitionKind::Failover).await?;
        Ok(Response::new(stream))
    }

    async fn set_standby(&self, req: Request<pb::SetStandbyRequest>) -> Result<Response<pb::ModeReply>, Status> {
        let req = stamp_actor(req);
        if let Some(mut c) = self.route(&req)? {
            return self.forwarded(c.set_standby(forward_metadata(req)).await).await;
        }
        let req = req.into_inner();
        let own = req.on && req.node == self.ctx.me.name;
        let reply = operate::set_standby(&self.ctx, req).await?;
        if own && self.ctx.is_coordinator() {
            // A node put in standby is about to be worked on: it should not
            // coordinate either. Standby is committed whatever happens here.
            if let Err(e) = membership::hand_over(&self.ctx, None, DEFAULT_HANDOVER, "this node is in standby").await {
                warn!(error = %e.message(), "standby is on, but the coordinator role stayed here");
            }
        }
        Ok(self.answered(reply))
    }

    async fn set_maintenance(
        &self,
        req: Request<pb::SetMaintenanceRequest>,
    ) -> Result<Response<pb::ModeReply>, Status> {
        let req = stamp_actor(req);
        if let Some(mut c) = self.route(&req)? {
            return self.forwarded(c.set_maintenance(forward_metadata(req)).await).await;
        }
        Ok(self.answered(operate::set_maintenance(&self.ctx, req.into_inner()).await?))
    }

    type WatchEventsStream = operate::EventStream;

    async fn watch_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        Ok(Response::new(operate::watch_events(
            &self.ctx,
            req.into_inner(),
            self.shutdown.clone(),
        )))
    }

    async fn get_history(&self, req: Request<pb::GetHistoryRequest>) -> Result<Response<pb::GetHistoryReply>, Status> {
        Ok(Response::new(operate::history(&self.ctx, req.get_ref())))
    }

    async fn simulate(&self, req: Request<pb::SimulateRequest>) -> Result<Response<pb::SimulateReply>, Status> {
        let req = req.into_inner();
        let spec = match req.spec {
            None => None,
            Some(text) => {
                let file = if req.file.is_empty() { "spec" } else { req.file.as_str() };
                Some(self.validated_spec(text, file).await?)
            }
        };
        let what = Hypothesis {
            nodes_down: req.nodes_down.into_iter().collect(),
            standby: req.standby.into_iter().collect(),
            spec,
        };
        let facts = tandem_node::manager::node_facts(&self.ctx);
        let state = self.ctx.state.borrow().clone();
        let now = self.ctx.clock.unix_ms();
        // Placement played forward over a large spec is CPU work.
        let outcome = tokio::task::spawn_blocking(move || whatif::simulate(&state.cluster, &facts, &what, now))
            .await
            .map_err(|e| Status::internal(format!("simulation failed: {e}")))?
            .map_err(Status::invalid_argument)?;
        let spec_version = self.ctx.state.borrow().cluster.spec_version;
        Ok(Response::new(simulation_to_pb(
            outcome,
            self.ctx.me.name.clone(),
            spec_version,
        )))
    }

    async fn create_backup(
        &self,
        req: Request<pb::CreateBackupRequest>,
    ) -> Result<Response<pb::CreateBackupReply>, Status> {
        if let Some(c) = self.route(&req)? {
            let mut c = c.max_decoding_message_size(tandem_raft::network::MAX_MESSAGE);
            return c.create_backup(forward_metadata(req)).await.map_err(forward_failed);
        }
        let taken = tandem_node::backup::take(&self.ctx)
            .await
            .map_err(Status::unavailable)?;
        let h = &taken.backup.header;
        tracing::info!(
            index = h.index,
            bytes = taken.bytes.len(),
            elapsed_ms = taken.elapsed.as_millis() as u64,
            "backup taken and verified"
        );
        Ok(Response::new(pb::CreateBackupReply {
            index: h.index,
            term: h.term,
            cluster: h.cluster.clone(),
            taken_by: h.taken_by.clone(),
            elapsed_ms: tandem_core::timing::duration_ms(taken.elapsed),
            data: taken.bytes,
        }))
    }
}

/// Keeps the type used by the generated server in one place.
pub type Server = tandem_proto::v1::tandem_server::TandemServer<TandemService>;

/// Waits for the first fencing outcome of `node` recorded after event `after`:
/// `(true, how)` once fenced, `(false, why)` when an attempt failed.
async fn wait_for_fence_outcome(ctx: &NodeContext, node: &str, after: u64) -> (bool, String) {
    let mut state = ctx.state.clone();
    let fenced = format!("{node} fenced: ");
    let failed = format!("fencing {node} failed: ");
    loop {
        {
            let s = state.borrow_and_update();
            let fence_events = s
                .cluster
                .events
                .iter()
                .filter(|e| e.seq > after && e.kind == EventKind::Fence);
            for e in fence_events {
                if let Some(how) = e.message.strip_prefix(&fenced) {
                    return (true, how.to_string());
                }
                if let Some(why) = e.message.strip_prefix(&failed) {
                    return (false, why.to_string());
                }
            }
        }
        if state.changed().await.is_err() {
            return (false, "the agent is shutting down".into());
        }
    }
}
