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
use std::time::Duration;

use tandem_core::groups::Phase;
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
    input.serial = u32::try_from(c.zone_serial % u64::from(u32::MAX)).unwrap_or(1).max(1);
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
            // Only healthy: assigned now, and running at the current epoch.
            for node in &gs.assigned {
                let running = gs
                    .reports
                    .get(node)
                    .is_some_and(|r| r.epoch == gs.epoch && r.phase == Phase::Running);
                let Some(info) = members.iter().find(|m| m.name == *node) else {
                    continue;
                };
                if !running || info.role == NodeRole::Witness {
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

/// Whether this node may answer dynamic names now.
pub fn may_answer(ctx: &NodeContext) -> bool {
    let applied = ctx.state.borrow().last_applied.map_or(0, |l| l.index);
    ctx.liveness.may_act(ctx.clock.now(), applied)
}

/// Binds the responder on `listen` and serves until `shutdown`, rebuilding
/// the zone on every applied state whose zone content changed.
pub async fn bind_dns(
    ctx: NodeContext,
    listen: SocketAddr,
    rate_limit_per_sec: Option<u32>,
) -> Result<(Responder, watch::Sender<Arc<Zone>>, Arc<Stats>), std::io::Error> {
    let initial = {
        let state = ctx.state.borrow().clone();
        build_zone(&ctx.cluster, &state, &members_of(&state))
            .or_else(|e| {
                warn!(error = %e, "the zone cannot be built from the current state; serving an empty zone");
                Zone::build(&ZoneInput::new(zone_name(&Spec::default(), &ctx.cluster))).map_err(|e| e.to_string())
            })
            .map_err(std::io::Error::other)?
    };
    let (tx, rx) = watch::channel(Arc::new(initial));
    let mut cfg = DnsConfig::new(listen);
    cfg.rate_limit_per_sec = rate_limit_per_sec;
    cfg.tcp_idle_timeout = Duration::from_secs(10);
    let check_ctx = ctx.clone();
    let responder = Responder::bind(cfg, rx, LeaseCheck::new(move || may_answer(&check_ctx))).await?;
    let stats = responder.stats();
    Ok((responder, tx, stats))
}

/// Follows the applied state and publishes a new zone when its content changes.
pub async fn follow_zone(ctx: NodeContext, tx: watch::Sender<Arc<Zone>>, mut shutdown: watch::Receiver<bool>) {
    let mut state = ctx.state.clone();
    let mut last: Option<ZoneInput> = None;
    loop {
        let snapshot = state.borrow_and_update().clone();
        match zone_input(&ctx.cluster, &snapshot, &members_of(&snapshot)) {
            // The serial is part of the state: republish on its change too,
            // so every node serves the same serial for the same state.
            Ok(input)
                if last
                    .as_ref()
                    .is_none_or(|l| l.serial != input.serial || !l.same_content(&input)) =>
            {
                match Zone::build(&input) {
                    Ok(zone) => {
                        info!(zone = %input.zone, serial = zone.serial(), "zone updated");
                        let _ = tx.send(Arc::new(zone));
                        last = Some(input);
                    }
                    Err(e) => error!(error = %e, "the zone cannot be built; the previous one is served"),
                }
            }
            Ok(_) => {}
            Err(e) => error!(error = %e, "the zone cannot be built; the previous one is served"),
        }
        tokio::select! {
            r = state.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}
