//! Reports to the coordinator: what the executor and the hooks commit
//! about this node (`Command::Report`, `Command::HookRan`), proposed here
//! on the coordinator, else sent to it through `Peer/Report`.

use std::time::Duration;

use tandem_core::state::Command;
use tandem_proto::v1::RaftMessage;
use tandem_proto::v1::peer_client::PeerClient;
use tandem_raft::network::PeerCall;

use crate::node::NodeContext;
use crate::write::propose;

/// Commits a report: proposed here on the coordinator, else sent to it.
pub async fn send_report(ctx: &NodeContext, command: &Command) -> Result<(), String> {
    if ctx.is_coordinator() {
        let (_, applied) = propose(ctx, command.clone()).await.map_err(|e| e.to_string())?;
        return match applied.rejected {
            Some(why) => Err(why),
            None => Ok(()),
        };
    }
    let Some((_, coordinator)) = ctx.coordinator() else {
        return Err("no coordinator".into());
    };
    let json = serde_json::to_vec(command).map_err(|e| e.to_string())?;
    let message = RaftMessage {
        cluster: ctx.cluster.clone(),
        json,
        payload: Vec::new(),
    };
    if let Some(transport) = ctx.channels.transport() {
        return transport
            .call(&coordinator.address, PeerCall::Report(message), Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_string());
    }
    let channel = ctx.channels.get(&coordinator.address).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(message);
    req.set_timeout(Duration::from_secs(5));
    PeerClient::new(channel)
        .report(req)
        .await
        .map(|_| ())
        .map_err(|s| s.message().to_string())
}
