//! Membership changes, carried out on the coordinator: adding a node (as a
//! learner, waiting until it caught up, then promoting it through joint
//! consensus, or removing the learner again) and removing one (after the
//! core's check that both voter sets keep a majority up).
//!
//! A change runs in a task of its own: a caller that goes away must not
//! cancel it halfway (a learner left behind, or a joint configuration).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use tandem_core::config::{check_peer_address, valid_name};
use tandem_core::lease::NodeState;
use tandem_core::membership::{MembershipRefusal, check_voter_change, node_id};
use tandem_core::state::Command;
use tandem_core::{NodeId, NodeInfo, NodeRole};
use tandem_raft::{MemberChange as RaftChange, TransferError};
use tracing::{info, warn};

use crate::node::NodeContext;
use crate::write::{WriteError, propose};

/// How long a handover of the coordinator role may take unless the caller
/// says otherwise.
pub const DEFAULT_HANDOVER: Duration = Duration::from_secs(5);

/// A handover of the coordinator role, done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub from: String,
    pub to: String,
    pub elapsed: Duration,
}

/// Hands this node's coordinator role to the voter called `to`, or to the
/// most current other voter (a member before the witness), and waits at
/// most `timeout` until it leads. `why` is logged.
pub async fn hand_over(
    ctx: &NodeContext,
    to: Option<&str>,
    timeout: Duration,
    why: &str,
) -> Result<Handover, MembershipError> {
    let view = ctx.raft.view();
    let to = match to {
        None => successor(ctx).ok_or_else(|| {
            MembershipError::Refused(format!(
                "no other voter can take over (voters: {})",
                view.voter_names().join(", ")
            ))
        })?,
        Some(name) => match view.find(name) {
            Some((id, _)) => id,
            None => {
                return Err(MembershipError::NotFound(
                    MembershipRefusal::NotMember(name.to_owned()).to_string(),
                ));
            }
        },
    };
    let start = ctx.clock.now();
    info!(reason = %why, "handing the coordinator role over");
    let name_of = |id: NodeId| view.members.get(&id).map_or_else(|| id.to_string(), |n| n.name.clone());
    match ctx.raft.transfer_leadership(to, timeout).await {
        Ok(new) => {
            let done = Handover {
                from: ctx.me.name.clone(),
                to: name_of(new),
                elapsed: ctx.clock.now().since(start),
            };
            info!(to = %done.to, elapsed_ms = tandem_core::timing::duration_ms(done.elapsed), "coordinator role handed over");
            Ok(done)
        }
        Err(TransferError::NotLeader) => Err(MembershipError::Write(WriteError::Forward {
            coordinator: ctx.coordinator().map(|(_, n)| n),
            message: "this node is not the coordinator; retry".into(),
        })),
        Err(e @ TransferError::NotVoter(_)) => Err(MembershipError::Refused(e.to_string())),
        Err(e @ TransferError::TimedOut(..)) => Err(MembershipError::TimedOut(e.to_string())),
        Err(TransferError::Fatal(e)) => Err(MembershipError::Write(WriteError::Fatal(e))),
    }
}

/// The voter to hand the coordinator role to, the one rule for it: an up
/// node before one this coordinator has not heard from, a member before
/// the witness, then the one holding the most of the log, then the lower id.
/// `None`: no other voter.
fn successor(ctx: &NodeContext) -> Option<NodeId> {
    let view = ctx.raft.view();
    let up = up_nodes(ctx);
    let matched = ctx.raft.progress().matched.unwrap_or_default();
    view.voters
        .iter()
        .filter(|id| **id != ctx.id)
        .max_by_key(|id| {
            let member = view.members.get(id).is_some_and(|n| n.role != NodeRole::Witness);
            let held = matched.get(id).copied().flatten();
            (up.contains(id), member, held, std::cmp::Reverse(**id))
        })
        .copied()
}

/// How long a new node has to catch up unless the caller says otherwise.
pub const DEFAULT_CATCH_UP: Duration = Duration::from_secs(60);

/// A node to add.
#[derive(Debug, Clone)]
pub struct AddMember {
    pub name: String,
    pub address: String,
    pub role: NodeRole,
    /// How long it may take to replicate the entry that added it.
    pub catch_up: Duration,
    /// Who asked, as recorded in the event.
    pub actor: String,
}

/// A committed membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberChange {
    /// The voters' names after the change.
    pub voters: Vec<String>,
    /// The log index of the change, or of its event when that was recorded.
    pub log_index: u64,
}

/// Why a membership change was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipError {
    /// The request cannot be carried out as given (a name or an address no
    /// member can have).
    Invalid(String),
    /// The node, or its address, is a member already.
    Exists(String),
    /// There is no such member.
    NotFound(String),
    /// The change would break a rule (a majority must stay up; a voter must
    /// be left).
    Refused(String),
    /// The new node did not catch up within the caller's time.
    TimedOut(String),
    /// Raft did not commit the change.
    Write(WriteError),
    /// The change's task failed.
    Internal(String),
}

impl MembershipError {
    /// What to tell the caller.
    pub fn message(&self) -> &str {
        match self {
            MembershipError::Invalid(m)
            | MembershipError::Exists(m)
            | MembershipError::NotFound(m)
            | MembershipError::Refused(m)
            | MembershipError::TimedOut(m)
            | MembershipError::Internal(m) => m,
            MembershipError::Write(w) => w.message(),
        }
    }

    /// The same error (same kind, so the same advice) with another message.
    fn reworded(self, message: String) -> MembershipError {
        match self {
            MembershipError::Invalid(_) => MembershipError::Invalid(message),
            MembershipError::Exists(_) => MembershipError::Exists(message),
            MembershipError::NotFound(_) => MembershipError::NotFound(message),
            MembershipError::Refused(_) => MembershipError::Refused(message),
            MembershipError::TimedOut(_) => MembershipError::TimedOut(message),
            MembershipError::Internal(_) => MembershipError::Internal(message),
            MembershipError::Write(w) => MembershipError::Write(match w {
                WriteError::Retry(_) => WriteError::Retry(message),
                WriteError::Forward { coordinator, .. } => WriteError::Forward { coordinator, message },
                WriteError::Refused(_) => WriteError::Refused(message),
                WriteError::Fatal(_) => WriteError::Fatal(message),
            }),
        }
    }
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for MembershipError {}

impl From<WriteError> for MembershipError {
    fn from(e: WriteError) -> Self {
        MembershipError::Write(e)
    }
}

/// Adds a node (on the coordinator), in a task of its own.
pub async fn add_member(ctx: &NodeContext, req: AddMember) -> Result<MemberChange, MembershipError> {
    let ctx = ctx.clone();
    tokio::spawn(async move { add_member_here(&ctx, req).await })
        .await
        .map_err(|e| MembershipError::Internal(format!("membership change failed: {e}")))?
}

/// Removes the member named `name` (on the coordinator), in a task of its own.
pub async fn remove_member(ctx: &NodeContext, name: String, actor: String) -> Result<MemberChange, MembershipError> {
    let ctx = ctx.clone();
    tokio::spawn(async move { remove_member_here(&ctx, name, actor).await })
        .await
        .map_err(|e| MembershipError::Internal(format!("membership change failed: {e}")))?
}

async fn add_member_here(ctx: &NodeContext, req: AddMember) -> Result<MemberChange, MembershipError> {
    if !valid_name(&req.name) {
        return Err(MembershipError::Invalid(format!(
            "name {:?}: expected 1 to 63 lowercase letters, digits or '-'",
            req.name
        )));
    }
    check_peer_address(&req.address).map_err(|e| MembershipError::Invalid(format!("address: {e}")))?;
    let _guard = ctx.membership_lock.lock().await;
    let id = node_id(&req.name);
    for (other_id, other) in ctx.members() {
        if other.name == req.name || other_id == id {
            return Err(MembershipError::Exists(
                MembershipRefusal::AlreadyMember(req.name).to_string(),
            ));
        }
        if other.address == req.address {
            return Err(MembershipError::Exists(format!(
                "address {} is already used by member {:?}",
                req.address, other.name
            )));
        }
    }
    let voters = voters(ctx);
    let mut new_voters = voters.clone();
    new_voters.insert(id);
    // The new node counts as up: it must catch up before it becomes a voter.
    let mut up = up_nodes(ctx);
    up.insert(id);
    check_voter_change(&voters, &new_voters, &up).map_err(|e| MembershipError::Refused(e.to_string()))?;

    let node = NodeInfo {
        name: req.name.clone(),
        address: req.address.clone(),
        role: req.role,
    };
    let catch_up = req.catch_up;
    info!(node = %node, "adding node as a learner");
    let failure = match add_learner_and_wait(ctx, id, &node, catch_up).await {
        Ok(()) => None,
        Err(Some(e)) => Some(e),
        Err(None) => Some(MembershipError::TimedOut(format!(
            "node {:?} did not catch up within {} ms; is it running at {} with `join = true` and the same cluster name?",
            req.name,
            catch_up.as_millis(),
            req.address
        ))),
    };
    if let Some(e) = failure {
        warn!(node = %node, error = %e.message(), "add failed; removing the learner again");
        if let Err(undo) = ctx
            .raft
            .change_membership(RaftChange::RemoveNodes(BTreeSet::from([id])))
            .await
        {
            warn!(node = %node, error = %undo, "could not remove the learner after a failed add");
            let message = format!("{}; removing the learner again failed too: {undo}", e.message());
            return Err(e.reworded(message));
        }
        let message = format!("{} (the change was rolled back)", e.message());
        return Err(e.reworded(message));
    }
    info!(node = %node, "learner caught up; promoting to voter");
    let event = Command::NodeAdded {
        node,
        actor: req.actor,
        at_unix_ms: ctx.clock.unix_ms(),
    };
    change_and_record(ctx, RaftChange::AddVoters(BTreeSet::from([id])), event).await
}

/// Commits a membership change, then records its event. Removing the
/// coordinator itself ends its term: the event is then lost, the change is not.
async fn change_and_record(
    ctx: &NodeContext,
    change: RaftChange,
    event: Command,
) -> Result<MemberChange, MembershipError> {
    let mut log_index = ctx.raft.change_membership(change).await?;
    match propose(ctx, event).await {
        Ok((i, _)) => log_index = i,
        Err(e) => warn!(error = %e.message(), "membership changed, but its event could not be recorded"),
    }
    Ok(MemberChange {
        voters: voter_names(ctx),
        log_index,
    })
}

/// Adds `node` as a learner and waits until its log has caught up with
/// the entry that added it. `Err(None)`: it did not within `catch_up`.
/// (openraft's own blocking `add_learner` gives up after a short fixed
/// time and reports success anyway, so Tandem waits itself.)
async fn add_learner_and_wait(
    ctx: &NodeContext,
    id: NodeId,
    node: &NodeInfo,
    catch_up: Duration,
) -> Result<(), Option<MembershipError>> {
    let target = ctx
        .raft
        .add_learner(id, node.clone())
        .await
        .map_err(|e| Some(e.into()))?;
    let caught_up = ctx.raft.wait_caught_up(id, target, catch_up).await.ok_or(None)?;
    if caught_up {
        Ok(())
    } else {
        Err(Some(MembershipError::Write(WriteError::Retry(
            "this node stopped being the coordinator during the change; retry".into(),
        ))))
    }
}

async fn remove_member_here(ctx: &NodeContext, name: String, actor: String) -> Result<MemberChange, MembershipError> {
    let _guard = ctx.membership_lock.lock().await;
    settle(ctx).await;
    let members = ctx.members();
    let Some((id, node)) = members.iter().find(|(_, n)| n.name == name).cloned() else {
        let names: Vec<_> = members.iter().map(|(_, n)| n.name.as_str()).collect();
        return Err(MembershipError::NotFound(format!(
            "{}; members are {}",
            MembershipRefusal::NotMember(name.clone()),
            names.join(", ")
        )));
    };
    let voters = voters(ctx);
    let change = if voters.contains(&id) {
        let mut new_voters = voters.clone();
        new_voters.remove(&id);
        if new_voters.is_empty() {
            return Err(MembershipError::Refused(
                MembershipRefusal::NoVoterLeft(name).to_string(),
            ));
        }
        check_voter_change(&voters, &new_voters, &up_nodes(ctx))
            .map_err(|e| MembershipError::Refused(e.to_string()))?;
        RaftChange::RemoveVoters(BTreeSet::from([id]))
    } else {
        RaftChange::RemoveNodes(BTreeSet::from([id]))
    };
    info!(node = %node, "removing node");
    let event = Command::NodeRemoved {
        node,
        actor,
        at_unix_ms: ctx.clock.unix_ms(),
    };
    change_and_record(ctx, change, event).await
}

/// A coordinator elected a moment ago has heard nobody's heartbeat yet
/// (after a handover, for one): it waits until every node had a few
/// heartbeat intervals to reach it before it judges who is up.
async fn settle(ctx: &NodeContext) {
    let settled_after = ctx.timing.heartbeat_interval * 3;
    if let Some(age) = ctx.liveness.coordinating_for(ctx.clock.now())
        && age < settled_after
    {
        tokio::time::sleep(settled_after - age).await;
    }
}

/// The members this node sees up now.
fn up_nodes(ctx: &NodeContext) -> BTreeSet<NodeId> {
    let (view, _) = ctx.liveness.view(ctx.clock.now(), &ctx.member_ids());
    view.iter().filter(|e| e.state == NodeState::Up).map(|e| e.id).collect()
}

fn voters(ctx: &NodeContext) -> BTreeSet<NodeId> {
    ctx.raft.view().voters.clone()
}

fn voter_names(ctx: &NodeContext) -> Vec<String> {
    ctx.raft.view().voter_names()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolled_back_change_keeps_its_kind() {
        let e = MembershipError::TimedOut("slow".into());
        let e = e.reworded("slow (the change was rolled back)".into());
        assert_eq!(e, MembershipError::TimedOut("slow (the change was rolled back)".into()));
        let w = MembershipError::Write(WriteError::Retry("again".into())).reworded("again, later".into());
        assert_eq!(w.message(), "again, later");
        assert!(matches!(w, MembershipError::Write(WriteError::Retry(_))));
    }
}
