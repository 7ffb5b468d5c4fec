//! The sockets: UDP on dedicated threads (a blocking recv/send loop per
//! thread, never on the async runtime, so a flood of queries cannot delay
//! Raft's heartbeats), TCP as tokio tasks.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::query::{DEFAULT_MAX_UDP_PAYLOAD, Outcome, QueryContext, Transport, respond, slip_reply};
use crate::ratelimit::{RateLimiter, Verdict};
use crate::stats::Stats;
use crate::{LeaseCheck, Zone};

/// How often a UDP thread wakes up when idle to notice a shutdown.
const UDP_POLL: Duration = Duration::from_millis(200);
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams taken per system call, at most.
#[cfg(target_os = "linux")]
const BATCH: usize = 32;
/// Receive buffer per datagram: a query is small; a larger datagram is dropped.
const RECV_BUFFER: usize = 4096;

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
    /// UDP threads; 0 = one per CPU.
    pub udp_workers: usize,
    /// Largest UDP answer to EDNS clients (advertised in OPT). Default 1232.
    pub max_udp_payload: u16,
    /// TCP connections served at once; more are closed at once.
    pub tcp_max_connections: usize,
}

impl DnsConfig {
    /// Defaults: no rate limit, 10 s TCP idle timeout, a UDP thread per CPU,
    /// 1232-byte UDP answers, 256 TCP connections.
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
    tcp: TcpListener,
    local: SocketAddr,
    zone: watch::Receiver<Arc<Zone>>,
    lease: LeaseCheck,
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
    let socket: UdpSocket = socket.into();
    socket
        .set_read_timeout(Some(UDP_POLL))
        .map_err(|e| context("setting a read timeout on UDP", addr, e))?;
    Ok(socket)
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

impl Responder {
    /// Binds UDP and TCP on `cfg.listen` (with port 0, one free port for both).
    pub async fn bind(
        cfg: DnsConfig,
        zone: watch::Receiver<Arc<Zone>>,
        lease: LeaseCheck,
    ) -> Result<Responder, io::Error> {
        let workers = match cfg.udp_workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let mut attempt = 0;
        let (udp, tcp, local) = loop {
            attempt += 1;
            match bind_all(cfg.listen, workers) {
                Ok(bound) => break bound,
                // Port 0: the UDP port we got may be taken for TCP; try another.
                Err(e) if cfg.listen.port() == 0 && e.kind() == io::ErrorKind::AddrInUse && attempt < 20 => {}
                Err(e) => return Err(e),
            }
        };
        let tcp = TcpListener::from_std(tcp).map_err(|e| context("registering TCP", local, e))?;
        Ok(Responder {
            cfg,
            udp,
            tcp,
            local,
            zone,
            lease,
            stats: Arc::new(Stats::new(workers + 1)),
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

    /// Serves until `shutdown` turns true (or its sender is dropped).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let Responder {
            cfg,
            udp,
            tcp,
            local,
            zone,
            lease,
            stats,
        } = self;
        let stop = Arc::new(AtomicBool::new(false));
        let limiter = cfg.rate_limit_per_sec.map(|r| Arc::new(RateLimiter::new(r)));
        let workers = udp.len();
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        for (i, socket) in udp.into_iter().enumerate() {
            let worker = UdpWorker {
                index: i,
                socket,
                zone: zone.clone(),
                lease: lease.clone(),
                stats: stats.clone(),
                limiter: limiter.clone(),
                stop: stop.clone(),
                max_udp_payload: cfg.max_udp_payload,
            };
            match std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || worker.run())
            {
                Ok(t) => threads.push(t),
                Err(e) => error!(error = %e, "DNS: cannot start a UDP thread"),
            }
        }
        info!(%local, udp_threads = threads.len(), rate_limit = ?cfg.rate_limit_per_sec, "DNS responder serving");
        let permits = Arc::new(Semaphore::new(cfg.tcp_max_connections.max(1)));
        let mut connections = JoinSet::new();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                accepted = tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            debug!(%peer, "DNS: too many TCP connections, closing one");
                            continue;
                        };
                        let conn = TcpConn {
                            peer,
                            zone: zone.clone(),
                            lease: lease.clone(),
                            stats: stats.clone(),
                            idle: cfg.tcp_idle_timeout,
                            max_udp_payload: cfg.max_udp_payload,
                            worker: workers,
                        };
                        connections.spawn(async move {
                            conn.serve(stream).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // E.g. out of file descriptors: back off a little.
                        warn!(error = %e, "DNS: accepting a TCP connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        stop.store(true, Ordering::Relaxed);
        connections.shutdown().await;
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    error!("DNS: a UDP thread panicked");
                }
            }
        })
        .await;
        if let Err(e) = joined {
            error!(error = %e, "DNS: waiting for the UDP threads failed");
        }
        info!(%local, "DNS responder stopped");
    }
}

type Bound = (Vec<UdpSocket>, std::net::TcpListener, SocketAddr);

fn bind_all(listen: SocketAddr, workers: usize) -> io::Result<Bound> {
    let reuse = workers > 1;
    let first = udp_socket(listen, reuse)?;
    let local = first
        .local_addr()
        .map_err(|e| context("reading the address of UDP", listen, e))?;
    let mut udp = vec![first];
    for _ in 1..workers {
        udp.push(udp_socket(local, reuse)?);
    }
    let tcp = tcp_listener(local)?;
    Ok((udp, tcp, local))
}

struct UdpWorker {
    index: usize,
    socket: UdpSocket,
    zone: watch::Receiver<Arc<Zone>>,
    lease: LeaseCheck,
    stats: Arc<Stats>,
    limiter: Option<Arc<RateLimiter>>,
    stop: Arc<AtomicBool>,
    max_udp_payload: u16,
}

impl UdpWorker {
    /// Rate limit, answer, count: whether `out` should be sent to `peer`.
    fn handle(&self, zone: &Zone, query: &[u8], peer: SocketAddr, out: &mut Vec<u8>) -> bool {
        let ctx = QueryContext {
            transport: Transport::Udp,
            client: peer.ip(),
            lease: &self.lease,
            max_udp_payload: self.max_udp_payload,
        };
        if let Some(limiter) = &self.limiter {
            match limiter.check(peer.ip(), Instant::now()) {
                Verdict::Allow => {}
                Verdict::Drop => {
                    self.stats.rate_limited(self.index, false);
                    return false;
                }
                Verdict::Slip => {
                    self.stats.rate_limited(self.index, true);
                    return slip_reply(query, &ctx, out);
                }
            }
        }
        let outcome = respond(zone, query, &ctx, out);
        self.stats.record(self.index, Transport::Udp, &outcome);
        matches!(outcome, Outcome::Reply { .. })
    }

    fn refresh(&mut self, zone: &mut Arc<Zone>) {
        if self.zone.has_changed().unwrap_or(false) {
            *zone = self.zone.borrow_and_update().clone();
        }
    }

    /// One datagram per system call (other systems than Linux).
    #[cfg(not(target_os = "linux"))]
    fn run(mut self) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut out = Vec::with_capacity(4096);
        let mut zone = self.zone.borrow_and_update().clone();
        let mut last_error_log: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let (len, peer) = match self.socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if transient(&e) => continue,
                Err(e) => {
                    log_now_and_then(&mut last_error_log, || warn!(error = %e, "DNS: UDP receive failed"));
                    continue;
                }
            };
            self.refresh(&mut zone);
            let Some(query) = buf.get(..len) else { continue };
            if self.handle(&zone, query, peer, &mut out)
                && let Err(e) = self.socket.send_to(&out, peer)
            {
                log_now_and_then(
                    &mut last_error_log,
                    || debug!(error = %e, %peer, "DNS: UDP send failed"),
                );
            }
        }
    }

    /// Batches: `recvmmsg` takes every datagram waiting (up to [`BATCH`])
    /// in one system call, `sendmmsg` sends the answers in one.
    #[cfg(target_os = "linux")]
    fn run(mut self) {
        use std::io::{IoSlice, IoSliceMut};
        use std::os::fd::AsRawFd;

        use nix::errno::Errno;
        use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

        let fd = self.socket.as_raw_fd();
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; RECV_BUFFER]).collect();
        let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1024)).collect();
        let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut received: Vec<(usize, Option<SocketAddr>, bool)> = Vec::with_capacity(BATCH);
        let mut replies: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(BATCH);
        let mut zone = self.zone.borrow_and_update().clone();
        let mut last_error_log: Option<Instant> = None;
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        while !self.stop.load(Ordering::Relaxed) {
            received.clear();
            {
                let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
                match recvmmsg(fd, &mut recv_headers, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                    Ok(results) => {
                        for r in results {
                            let peer = r.address.as_ref().and_then(std_addr);
                            received.push((r.bytes, peer, r.flags.contains(MsgFlags::MSG_TRUNC)));
                        }
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => continue,
                    Err(e) => {
                        log_now_and_then(&mut last_error_log, || warn!(error = %e, "DNS: UDP receive failed"));
                        continue;
                    }
                }
            }
            self.refresh(&mut zone);
            replies.clear();
            for (i, (len, peer, truncated)) in received.iter().enumerate() {
                let (Some(peer), Some(buf), Some(out)) = (peer, bufs.get(i), outs.get_mut(i)) else {
                    continue;
                };
                let Some(query) = buf.get(..*len) else { continue };
                if *truncated {
                    // Larger than our buffer: no sane query is.
                    self.stats.record(self.index, Transport::Udp, &Outcome::Drop);
                    continue;
                }
                if self.handle(&zone, query, *peer, out) {
                    replies.push((i, SockaddrStorage::from(*peer)));
                }
            }
            let mut sent = 0;
            while sent < replies.len() {
                let pending = replies.get(sent..).unwrap_or_default();
                let iovs: Vec<[IoSlice<'_>; 1]> = pending
                    .iter()
                    .map(|(i, _)| [IoSlice::new(outs.get(*i).map(Vec::as_slice).unwrap_or_default())])
                    .collect();
                let addrs: Vec<Option<SockaddrStorage>> = pending.iter().map(|(_, a)| Some(*a)).collect();
                match sendmmsg(fd, &mut send_headers, &iovs, &addrs, no_cmsgs, MsgFlags::empty()) {
                    Ok(results) => sent += results.count().max(1),
                    Err(Errno::EINTR) => {}
                    Err(e) => {
                        // That answer cannot go out (e.g. unreachable): skip it.
                        log_now_and_then(&mut last_error_log, || debug!(error = %e, "DNS: UDP send failed"));
                        sent += 1;
                    }
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[cfg(target_os = "linux")]
fn std_addr(a: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        Some(SocketAddr::V4((*v4).into()))
    } else {
        a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
    }
}

/// Runs `log` at most every 10 s.
fn log_now_and_then(last: &mut Option<Instant>, log: impl FnOnce()) {
    let now = Instant::now();
    if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
        *last = Some(now);
        log();
    }
}

struct TcpConn {
    peer: SocketAddr,
    zone: watch::Receiver<Arc<Zone>>,
    lease: LeaseCheck,
    stats: Arc<Stats>,
    idle: Duration,
    max_udp_payload: u16,
    worker: usize,
}

impl TcpConn {
    async fn serve(self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let client: IpAddr = self.peer.ip();
        let mut query = Vec::new();
        let mut out = Vec::new();
        let mut frame = Vec::new();
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(self.idle, stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            query.resize(usize::from(u16::from_be_bytes(len)), 0);
            match tokio::time::timeout(self.idle, stream.read_exact(&mut query)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let zone = self.zone.borrow().clone();
            let ctx = QueryContext {
                transport: Transport::Tcp,
                client,
                lease: &self.lease,
                max_udp_payload: self.max_udp_payload,
            };
            let outcome = respond(&zone, &query, &ctx, &mut out);
            self.stats.record(self.worker, Transport::Tcp, &outcome);
            let messages = match &outcome {
                Outcome::Reply { .. } => std::slice::from_ref(&out),
                Outcome::Transfer(messages) => messages.as_slice(),
                Outcome::Drop => return,
            };
            for m in messages {
                let Ok(len) = u16::try_from(m.len()) else { return };
                frame.clear();
                frame.extend_from_slice(&len.to_be_bytes());
                frame.extend_from_slice(m);
                match tokio::time::timeout(self.idle, stream.write_all(&frame)).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
        }
    }
}
