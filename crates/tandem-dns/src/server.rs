//! The server: hickory-server's `Server` with Tandem's [`DnsHandler`], on a
//! tokio runtime of its own (its own threads), so that a flood of queries
//! cannot delay Raft's heartbeats or the executor on the agent's runtime.
//!
//! hickory-server owns the sockets: the UDP receive and send loops (one per
//! `SO_REUSEPORT` socket, so the kernel spreads the datagrams over the
//! runtime's threads), the TCP accept loop with its connection cap, framing,
//! idle timeouts, and the graceful shutdown.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::handler::DnsHandler;
use crate::query::DEFAULT_MAX_UDP_PAYLOAD;
use crate::stats::Stats;
use crate::{LeaseCheck, Zone};

const SOCKET_BUFFER: usize = 4 << 20;
/// Answers queued per TCP connection (a zone transfer is a few messages).
const TCP_RESPONSE_BUFFER: usize = 64;

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// UDP and TCP, the same address (port 0: any free port, the same for both).
    pub listen: SocketAddr,
    /// Queries per second per client (IPv4 address, IPv6 /64) over UDP, a token
    /// bucket holding one second's worth; `None` = off. Over the limit a query
    /// is dropped, except every second one, which gets an empty answer with TC
    /// so that a real client (whose address a flood may be spoofing) retries
    /// over TCP, which is not limited.
    pub rate_limit_per_sec: Option<u32>,
    /// A TCP connection is closed after this long without a complete query.
    pub tcp_idle_timeout: Duration,
    /// The server's threads, and as many UDP sockets (`SO_REUSEPORT`); 0 =
    /// one per CPU.
    pub udp_workers: usize,
    /// Largest UDP answer to EDNS clients (advertised in OPT). Default 1232.
    pub max_udp_payload: u16,
    /// TCP connections served at once; more are closed at once.
    pub tcp_max_connections: usize,
}

impl DnsConfig {
    /// Defaults: no rate limit, 10 s TCP idle timeout, a thread and a UDP
    /// socket per CPU, 1232-byte UDP answers, 256 TCP connections.
    pub fn new(listen: SocketAddr) -> DnsConfig {
        DnsConfig {
            listen,
            rate_limit_per_sec: None,
            tcp_idle_timeout: Duration::from_secs(10),
            udp_workers: 0,
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
            tcp_max_connections: 256,
        }
    }
}

/// The DNS server: bound sockets, ready to [`run`](Responder::run).
pub struct Responder {
    cfg: DnsConfig,
    udp: Vec<UdpSocket>,
    tcp: std::net::TcpListener,
    local: SocketAddr,
    threads: usize,
    handler: DnsHandler,
    stats: Arc<Stats>,
}

fn context(what: &str, addr: SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("DNS: {what} {addr}: {e}"))
}

fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| context("creating a UDP socket for", addr, e))?;
    if reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(|e| context("setting SO_REUSEPORT for", addr, e))?;
    }
    // Best effort: a larger queue absorbs bursts.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into()).map_err(|e| context("binding UDP", addr, e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| context("setting UDP non-blocking", addr, e))?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| context("creating a TCP socket for", addr, e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| context("setting SO_REUSEADDR for", addr, e))?;
    socket.bind(&addr.into()).map_err(|e| context("binding TCP", addr, e))?;
    socket.listen(1024).map_err(|e| context("listening on TCP", addr, e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| context("setting TCP non-blocking", addr, e))?;
    Ok(socket.into())
}

type Bound = (Vec<UdpSocket>, std::net::TcpListener, SocketAddr);

fn bind_all(listen: SocketAddr, sockets: usize) -> io::Result<Bound> {
    let reuse = sockets > 1;
    let first = udp_socket(listen, reuse)?;
    let local = first
        .local_addr()
        .map_err(|e| context("reading the address of UDP", listen, e))?;
    let mut udp = vec![first];
    for _ in 1..sockets {
        udp.push(udp_socket(local, reuse)?);
    }
    let tcp = tcp_listener(local)?;
    Ok((udp, tcp, local))
}

impl Responder {
    /// Binds UDP and TCP on `cfg.listen` (with port 0, one free port for both).
    pub async fn bind(
        cfg: DnsConfig,
        zone: watch::Receiver<Arc<Zone>>,
        lease: LeaseCheck,
    ) -> Result<Responder, io::Error> {
        let threads = match cfg.udp_workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let mut attempt = 0;
        let (udp, tcp, local) = loop {
            attempt += 1;
            match bind_all(cfg.listen, threads) {
                Ok(bound) => break bound,
                // Port 0: the UDP port we got may be taken for TCP; try another.
                Err(e) if cfg.listen.port() == 0 && e.kind() == io::ErrorKind::AddrInUse && attempt < 20 => {}
                Err(e) => return Err(e),
            }
        };
        let stats = Arc::new(Stats::new(threads + 1));
        let handler = DnsHandler::new(zone, lease, stats.clone(), cfg.rate_limit_per_sec, cfg.max_udp_payload);
        Ok(Responder {
            cfg,
            udp,
            tcp,
            local,
            threads,
            handler,
            stats,
        })
    }

    /// The bound address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves until `shutdown` turns true (or its sender is dropped), on a
    /// runtime of its own; returns once the sockets are closed.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let local = self.local;
        let (done_tx, done_rx) = oneshot::channel();
        let spawned = std::thread::Builder::new().name("dns".into()).spawn(move || {
            self.serve(shutdown);
            let _ = done_tx.send(());
        });
        if let Err(e) = spawned {
            error!(error = %e, %local, "DNS: cannot start the server's thread");
            return;
        }
        if done_rx.await.is_err() {
            error!(%local, "DNS: the server's thread panicked");
        }
    }

    /// On the server's thread: builds its runtime and serves until `shutdown`.
    fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let Responder {
            cfg,
            udp,
            tcp,
            local,
            threads,
            handler,
            stats: _,
        } = self;
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("dns-worker")
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, %local, "DNS: cannot start the server's runtime");
                return;
            }
        };
        runtime.block_on(async move {
            let mut server = Server::new(handler);
            let sockets = udp.len();
            for socket in udp {
                match tokio::net::UdpSocket::from_std(socket) {
                    Ok(s) => server.register_socket(s),
                    Err(e) => error!(error = %e, %local, "DNS: cannot register a UDP socket"),
                }
            }
            match tokio::net::TcpListener::from_std(tcp) {
                Ok(listener) => server.register_listener_with_max_connections(
                    listener,
                    cfg.tcp_idle_timeout,
                    TCP_RESPONSE_BUFFER,
                    cfg.tcp_max_connections.max(1),
                ),
                Err(e) => error!(error = %e, %local, "DNS: cannot register the TCP listener"),
            }
            info!(%local, threads, udp_sockets = sockets, rate_limit = ?cfg.rate_limit_per_sec, "DNS responder serving");
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
            if let Err(e) = server.shutdown_gracefully().await {
                warn!(error = %e, %local, "DNS: the server stopped with an error");
            }
        });
        // Connections still open end with the runtime.
        runtime.shutdown_timeout(Duration::from_secs(1));
        info!(%local, "DNS responder stopped");
    }
}
