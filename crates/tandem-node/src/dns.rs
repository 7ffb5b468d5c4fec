//! The node's DNS responder over the replicated state (invariant 5).
//!
//! Every applied state becomes a [`ZoneInput`] (pure data: which nodes run
//! which group healthily, with which addresses and epochs); a changed input
//! becomes a new prepared [`Zone`], published to the responder through a
//! `watch` channel. The responder answers group names only while this node
//! may act on its lease: it holds one and has applied the log as far as the
//! coordinator had when granting it, so its answers are never staler than
//! its lease; otherwise SERVFAIL, and resolvers ask another node.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tandem_core::spec::{GroupKind, Spec};
use tandem_core::{NodeInfo, NodeRole};
use tandem_dns::{
    ActiveNode, DnsConfig, GroupKind as DnsKind, LeaseCheck, Responder, StaticRecord, Stats, Zone, ZoneGroup,
    ZoneInput, ZoneNode,
};
use tandem_raft::store::AppliedState;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::node::NodeContext;

/// The zone's name: the spec's `[dns] zone`, else `CLUSTER.tandem.`.
pub fn zone_name(spec: &Spec, cluster: &str) -> String {
    spec.dns.zone.clone().unwrap_or_else(|| format!("{cluster}.tandem."))
}

/// A node's own address: the host part of its member address, if an IP.
fn node_addrs(info: &NodeInfo) -> Vec<IpAddr> {
    info.address
        .parse::<SocketAddr>()
        .map(|a| vec![a.ip()])
        .unwrap_or_default()
}

/// The zone's content for `state`, with `members` the current members.
pub fn zone_input(cluster: &str, state: &AppliedState, members: &[NodeInfo]) -> Result<ZoneInput, String> {
    let c = &state.cluster;
    let mut input = ZoneInput::new(zone_name(&c.spec, cluster));
    // The serial only has to rise with the content, and be the same on every
    // node for the same state: the state machine counts content changes.
    input.serial = u32::try_from(c.zone_serial % u64::from(u32::MAX)).unwrap_or(0) + 1;
    input.allow_transfer = c.spec.dns.allow_transfer.clone();
    input.nodes = members
        .iter()
        .map(|m| ZoneNode {
            name: m.name.clone(),
            addrs: node_addrs(m),
        })
        .collect();
    for r in &c.spec.dns.records {
        let rec = StaticRecord::new(&r.name, r.ttl, &r.rtype, &r.data)
            .map_err(|e| format!("dns.records: {} {} {:?}: {e}", r.name, r.rtype, r.data))?;
        input.static_records.push(rec);
    }
    for g in &c.spec.groups {
        let kind = match g.kind {
            GroupKind::Exclusive => DnsKind::Exclusive,
            GroupKind::Clone => DnsKind::Clone,
        };
        let mut zg = ZoneGroup::new(g.name.clone(), kind);
        zg.ttl = g.dns.ttl;
        zg.port = g.dns.port;
        if let Some(gs) = c.groups.get(&g.name) {
            // Only healthy: active at the current epoch (the one rule).
            for node in gs.active_nodes() {
                let Some(info) = members.iter().find(|m| m.name == *node) else {
                    continue;
                };
                if info.role == NodeRole::Witness {
                    continue;
                }
                let addrs = g.dns.addresses.get(node).cloned().unwrap_or_else(|| node_addrs(info));
                zg.active.push(ActiveNode {
                    node: node.clone(),
                    addrs,
                    epoch: gs.epoch,
                });
            }
        }
        input.groups.push(zg);
    }
    Ok(input)
}

/// Builds the zone `state` describes (for `tandem dns` and the responder).
pub fn build_zone(cluster: &str, state: &AppliedState, members: &[NodeInfo]) -> Result<Zone, String> {
    let input = zone_input(cluster, state, members)?;
    Zone::build(&input).map_err(|e| e.to_string())
}

fn members_of(state: &AppliedState) -> Vec<NodeInfo> {
    state
        .last_membership
        .membership()
        .nodes()
        .map(|(_, n)| n.clone())
        .collect()
}

/// Whether this node may answer dynamic names now from a zone built from
/// the state applied up to `zone_index`: it holds a lease and the zone it
/// serves (not only the state it applied) reflects the log as far as the
/// lease's grant requires. The zone is rebuilt a moment after the state is
/// applied; judging by the applied state alone, a node catching up after a
/// partition answered the old primary from its old zone for that moment
/// (the fault suite's DNS sampler saw it).
pub fn may_answer(ctx: &NodeContext, zone_index: u64) -> bool {
    ctx.liveness.may_act(ctx.clock.now(), zone_index)
}

/// The zone the responder serves, and the applied index it reflects.
pub struct ZonePublisher {
    tx: watch::Sender<Arc<Zone>>,
    index: Arc<AtomicU64>,
}

impl ZonePublisher {
    /// A publisher serving `zone` as the state at `index`, with no responder
    /// bound to it (the simulator follows the zone without a socket).
    pub fn new(zone: Zone, index: u64) -> Self {
        let (tx, _) = watch::channel(Arc::new(zone));
        Self {
            tx,
            index: Arc::new(AtomicU64::new(index)),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Zone>> {
        self.tx.subscribe()
    }

    /// Serves `zone` (if any: else the zone in service still holds) as the
    /// state at `index`.
    fn publish(&self, zone: Option<Zone>, index: u64) {
        if let Some(zone) = zone {
            let _ = self.tx.send(Arc::new(zone));
        }
        self.index.store(index, Ordering::SeqCst);
    }
}

/// The zone of the applied state at start (empty when it cannot be built),
/// and the applied index it reflects.
pub fn initial_zone(ctx: &NodeContext) -> Result<(Zone, u64), std::io::Error> {
    let state = ctx.state.borrow().clone();
    let index = state.last_applied.map_or(0, |l| l.index);
    let zone = build_zone(&ctx.cluster, &state, &members_of(&state))
        .or_else(|e| {
            warn!(error = %e, "the zone cannot be built from the current state; serving an empty zone");
            Zone::build(&ZoneInput::new(zone_name(&Spec::default(), &ctx.cluster))).map_err(|e| e.to_string())
        })
        .map_err(std::io::Error::other)?;
    Ok((zone, index))
}

/// Binds the responder on `listen` and serves until `shutdown`, rebuilding
/// the zone on every applied state whose zone content changed.
pub async fn bind_dns(
    ctx: NodeContext,
    listen: SocketAddr,
    rate_limit_per_sec: Option<u32>,
) -> Result<(Responder, ZonePublisher, Arc<Stats>), std::io::Error> {
    let (initial, initial_index) = initial_zone(&ctx)?;
    let (tx, rx) = watch::channel(Arc::new(initial));
    let index = Arc::new(AtomicU64::new(initial_index));
    let mut cfg = DnsConfig::new(listen);
    cfg.rate_limit_per_sec = rate_limit_per_sec;
    cfg.tcp_idle_timeout = Duration::from_secs(10);
    let check_ctx = ctx.clone();
    let check_index = index.clone();
    let responder = Responder::bind(
        cfg,
        rx,
        LeaseCheck::new(move || may_answer(&check_ctx, check_index.load(Ordering::SeqCst))),
    )
    .await?;
    let stats = responder.stats();
    Ok((responder, ZonePublisher { tx, index }, stats))
}

/// Follows the applied state and publishes a new zone when its content changes.
pub async fn follow_zone(ctx: NodeContext, zone: ZonePublisher, mut shutdown: watch::Receiver<bool>) {
    let mut state = ctx.state.clone();
    let mut last: Option<ZoneInput> = None;
    loop {
        let snapshot = state.borrow_and_update().clone();
        let index = snapshot.last_applied.map_or(0, |l| l.index);
        match zone_input(&ctx.cluster, &snapshot, &members_of(&snapshot)) {
            // The serial is part of the state: republish on its change too,
            // so every node serves the same serial for the same state.
            Ok(input)
                if last
                    .as_ref()
                    .is_none_or(|l| l.serial != input.serial || !l.same_content(&input)) =>
            {
                match Zone::build(&input) {
                    Ok(built) => {
                        info!(zone = %input.zone, serial = built.serial(), "zone updated");
                        zone.publish(Some(built), index);
                        last = Some(input);
                    }
                    Err(e) => withdraw(&zone, &input.zone, &e.to_string(), &mut last, index),
                }
            }
            // The zone in service already says what this state says.
            Ok(_) => zone.publish(None, index),
            Err(e) => withdraw(
                &zone,
                &zone_name(&snapshot.cluster.spec, &ctx.cluster),
                &e,
                &mut last,
                index,
            ),
        }
        tokio::select! {
            r = state.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// What one push target should hold: `GROUP` -> (ttl, addresses).
type Pushed = std::collections::BTreeMap<String, (Duration, Vec<IpAddr>)>;

fn push_records(input: &ZoneInput) -> Pushed {
    input
        .groups
        .iter()
        .map(|g| {
            let addrs = g.active.iter().flat_map(|a| a.addrs.iter().copied()).collect();
            (g.name.clone(), (g.ttl, addrs))
        })
        .collect()
}

/// Reads a TSIG secret: a file holding it in base64 (one line).
fn read_secret(path: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the TSIG key file {path}: {e}"))?;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("the TSIG key file {path} does not hold a base64 secret: {e}"))
}

/// On the coordinator: keeps every `[[dns.push]]` server's records of the
/// groups equal to what the cluster's own zone answers, with RFC 2136 updates
/// signed with TSIG, pushing only what changed and retrying what failed.
pub async fn run_dns_push(ctx: NodeContext, mut shutdown: watch::Receiver<bool>) {
    use tandem_dns::update::{PushRecord, PushTarget, push};
    let mut state = ctx.state.clone();
    // Per target (by its spec): what it holds as far as we know.
    let mut pushed: std::collections::BTreeMap<String, Pushed> = Default::default();
    let retry = Duration::from_secs(2);
    const RECONCILE: Duration = Duration::from_secs(60);
    let mut reconcile_at = ctx.clock.now();
    loop {
        if ctx.clock.now().since(reconcile_at) >= RECONCILE {
            // The servers may have been changed by others (or by a deposed
            // coordinator's late retry): push everything again now and then.
            pushed.clear();
            reconcile_at = ctx.clock.now();
        }
        let applied = ctx.state.borrow().last_applied.map_or(0, |l| l.index);
        // A deposed coordinator (a Raft leader that lost its quorum keeps
        // its role; CheckQuorum only refuses its writes) must not push: only while its own lease, which it
        // grants itself only on a recent quorum confirmation, is valid.
        let wait = if ctx.is_coordinator() && ctx.liveness.may_act(ctx.clock.now(), applied) {
            let snapshot = state.borrow_and_update().clone();
            let targets = snapshot.cluster.spec.dns.push.clone();
            pushed.retain(|k, _| targets.iter().any(|t| format!("{t:?}") == *k));
            let mut failed = false;
            if !targets.is_empty()
                && let Ok(input) = zone_input(&ctx.cluster, &snapshot, &members_of(&snapshot))
            {
                let want = push_records(&input);
                for t in &targets {
                    let key = format!("{t:?}");
                    let have = pushed.entry(key).or_default();
                    let changed: Vec<PushRecord> = want
                        .iter()
                        .filter(|(name, v)| have.get(*name) != Some(*v))
                        .map(|(name, (ttl, addrs))| PushRecord {
                            name: name.clone(),
                            ttl: *ttl,
                            addrs: addrs.clone(),
                        })
                        .collect();
                    if changed.is_empty() {
                        continue;
                    }
                    let secret = match read_secret(&t.key_file) {
                        Ok(s) => s,
                        Err(e) => {
                            error!(server = %t.server, zone = %t.zone, error = %e, "cannot push DNS records");
                            ctx.counters
                                .dns_push_failures
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            failed = true;
                            continue;
                        }
                    };
                    let target = PushTarget {
                        server: t.server,
                        zone: t.zone.clone(),
                        key_name: t.key_name.clone(),
                        key_secret: secret,
                        algorithm: t.algorithm.parse().unwrap_or_default(),
                        timeout: t.timeout,
                    };
                    match push(&target, &changed).await {
                        Ok(()) => {
                            info!(server = %t.server, zone = %t.zone, names = changed.len(), "pushed DNS records");
                            for r in changed {
                                have.insert(r.name, (r.ttl, r.addrs));
                            }
                        }
                        Err(e) => {
                            warn!(server = %t.server, zone = %t.zone, error = %e, "pushing DNS records failed; retrying");
                            ctx.counters
                                .dns_push_failures
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            failed = true;
                        }
                    }
                }
            }
            Some(if failed { retry } else { RECONCILE })
        } else {
            // A new coordinator does not know what the servers hold: it pushes everything.
            pushed.clear();
            Some(ctx.timing.election_timeout * 2)
        };
        tokio::select! {
            r = state.changed() => if r.is_err() { return },
            _ = async { match wait { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The zone cannot be built from the current state: serving the previous
/// one would answer primaries that may have changed, so serve an empty zone
/// (SOA only; group names do not exist) until it can be built again.
fn withdraw(zone: &ZonePublisher, name: &str, error: &str, last: &mut Option<ZoneInput>, index: u64) {
    error!(%error, "the zone cannot be built from the current state; serving it empty until it can");
    // When not even an empty zone can be built, nothing new is in service
    // and the old zone's index stands.
    if let Ok(empty) = Zone::build(&ZoneInput::new(name.to_string())) {
        zone.publish(Some(empty), index);
    }
    *last = None;
}
