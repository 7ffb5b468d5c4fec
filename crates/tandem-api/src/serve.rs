//! Serving a running node: the gRPC server (`tandem.v1.Tandem`,
//! `tandem.v1.Peer`, health and reflection, behind the authorization layer)
//! and HTTP, on listeners the caller bound. They end when the node stops.

use std::time::Duration;

use tandem_node::{Node, NodeContext};
use tandem_proto::v1::peer_server::PeerServer;
use tandem_proto::v1::tandem_server::TandemServer;
use tandem_raft::network::MAX_MESSAGE;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::ServerTlsConfig;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::warn;

use crate::auth::{AuthLayer, AuthPolicy};
use crate::context::ApiContext;
use crate::peer::PeerService;
use crate::service::TandemService;

/// The sockets to serve on, bound by the caller (so a taken port is its
/// error at start).
pub struct Listeners {
    pub grpc: TcpListener,
    /// `None`: no HTTP.
    pub http: Option<TcpListener>,
}

/// Who may call, and the server's TLS, as the caller read them.
pub struct Security {
    pub policy: AuthPolicy,
    /// `None`: plain TCP.
    pub server_tls: Option<ServerTlsConfig>,
}

/// Why serving did not start.
#[derive(Debug)]
pub enum ServeError {
    /// The TLS configuration was refused.
    Tls(tonic::transport::Error),
    /// The reflection service could not be built.
    Reflection(String),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Tls(e) => write!(f, "[tls]: {e}"),
            ServeError::Reflection(e) => write!(f, "cannot build the reflection service: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// The faces of a node, serving.
pub struct Serving {
    api: ApiContext,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    metrics: JoinHandle<()>,
    health: JoinHandle<()>,
}

/// Serves `node` on `listeners` until the node stops.
pub async fn serve(node: &Node, listeners: Listeners, security: Security) -> Result<Serving, ServeError> {
    let shutdown = node.shutdown_signal();
    // Counters are since start: what the state held when Raft started is the baseline.
    let api = ApiContext::new(node.context().clone(), &node.initial_state().cluster);
    let metrics = tokio::spawn(crate::http::follow_metrics(api.clone(), shutdown.clone()));
    let http = listeners.http.map(|l| {
        tokio::spawn(crate::http::serve(
            l,
            api.clone(),
            Some(node.dns_stats()),
            shutdown.clone(),
        ))
    });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Peers reach the Peer service whatever this node's lease; the server as
    // a whole ("") and the operator API follow the node's health.
    health_reporter.set_serving::<PeerServer<PeerService>>().await;
    let health = tokio::spawn(follow_health(api.node.clone(), health_reporter, shutdown.clone()));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tandem_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let mut stop = shutdown.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = security.server_tls {
        builder = builder.tls_config(tls).map_err(ServeError::Tls)?;
    }
    let server = builder
        .layer(AuthLayer::new(security.policy, api.auth_stats.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(TandemServer::new(TandemService::new(api.clone(), shutdown.clone())))
        .add_service(
            PeerServer::new(PeerService::new(api.node.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        // TCP_NODELAY on every accepted connection: without it a reply
        // written in more than one segment waits for the client's delayed
        // ACK (40 ms on Linux), which capped a poller at ~23 GetStatus/s.
        .serve_with_incoming_shutdown(TcpIncoming::from(listeners.grpc).with_nodelay(Some(true)), async move {
            let _ = stop.wait_for(|stop| *stop).await;
        });
    Ok(Serving {
        api,
        grpc: tokio::spawn(server),
        http,
        metrics,
        health,
    })
}

/// How often the gRPC health status is brought up to date with the lease.
const HEALTH_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Keeps the gRPC health service (`grpc.health.v1.Health`) telling the
/// truth: SERVING for the server ("") and `tandem.v1.Tandem` only while this
/// node holds a valid lease and may act on it, as `/healthz` answers 200;
/// NOT_SERVING otherwise, and from the moment the node stops.
async fn follow_health(ctx: NodeContext, reporter: HealthReporter, mut shutdown: watch::Receiver<bool>) {
    let mut serving: Option<bool> = None;
    loop {
        let stopping = *shutdown.borrow();
        let ok = !stopping && crate::http::unhealthy(&ctx).is_none();
        if serving != Some(ok) {
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            if ok {
                reporter.set_serving::<TandemServer<TandemService>>().await;
            } else {
                reporter.set_not_serving::<TandemServer<TandemService>>().await;
            }
            serving = Some(ok);
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(HEALTH_CHECK_EVERY) => {}
            _ = shutdown.changed() => {}
        }
    }
}

impl Serving {
    /// The faces' context.
    pub fn context(&self) -> &ApiContext {
        &self.api
    }

    /// Resolves when the gRPC server ended on its own, with why.
    pub async fn grpc_ended(&mut self) -> String {
        match (&mut self.grpc).await {
            Ok(Ok(())) => "no error".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        }
    }

    /// Once the node stopped: lets open requests drain, for at most two
    /// seconds per server, then closes.
    pub async fn stop(self) {
        let _ = self.metrics.await;
        let _ = self.health.await;
        if let Some(mut http) = self.http {
            match tokio::time::timeout(Duration::from_secs(2), &mut http).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "HTTP server ended with an error"),
                Ok(Err(e)) => warn!(error = %e, "HTTP server task failed"),
                Err(_) => {
                    warn!("HTTP server did not drain within 2 s; closing");
                    http.abort();
                }
            }
        }
        let mut server = self.grpc;
        if !server.is_finished() {
            match tokio::time::timeout(Duration::from_secs(2), &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "gRPC server ended with an error"),
                Ok(Err(e)) => warn!(error = %e, "gRPC server task failed"),
                Err(_) => {
                    warn!("gRPC server did not drain within 2 s; closing");
                    server.abort();
                }
            }
        }
    }
}
