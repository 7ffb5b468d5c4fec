//! The exchanges the stub resolver ([`client`](crate::client)) and the
//! RFC 2136 pushes ([`update`](crate::update)) share: hickory's client
//! (hickory-net) over UDP, retransmitting, and over TCP.
//!
//! Its UDP sockets are connected to the server, so an ICMP error (nothing
//! listens there) ends an exchange at once instead of at its timeout.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_net::NetError;
use hickory_net::client::Client;
use hickory_net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_net::runtime::{DnsUdpSocket, RuntimeProvider, TokioHandle, TokioRuntimeProvider, TokioTime};
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::{DnsExchange, DnsHandle, DnsMultiplexer, FirstAnswer};
use hickory_proto::op::{DnsRequest, DnsResponse, Message, ResponseCode};
use hickory_proto::rr::TSigner;
use tokio::io::{Interest, ReadBuf, Ready};

/// The tokio provider, with UDP sockets connected to the server.
#[derive(Clone, Default)]
pub(crate) struct Provider(TokioRuntimeProvider);

impl RuntimeProvider for Provider {
    type Handle = TokioHandle;
    type Timer = TokioTime;
    type Udp = ConnectedUdp;
    type Tcp = AsyncIoTokioAsStd<tokio::net::TcpStream>;

    fn create_handle(&self) -> Self::Handle {
        self.0.create_handle()
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Tcp, io::Error>>>> {
        self.0.connect_tcp(server_addr, bind_addr, timeout)
    }

    fn bind_udp(
        &self,
        local_addr: SocketAddr,
        server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Udp, io::Error>>>> {
        Box::pin(async move {
            let socket = tokio::net::UdpSocket::bind(local_addr).await?;
            socket.connect(server_addr).await?;
            Ok(ConnectedUdp {
                socket: Arc::new(socket),
                error: Mutex::new(None),
            })
        })
    }
}

type ErrorReady = Pin<Box<dyn Future<Output = io::Result<Ready>> + Send>>;

/// A UDP socket connected to the server (hickory's are not). Linux reports
/// an ICMP error for it (port unreachable: nothing listens there) as error
/// readiness, which a receive does not wait for: the receive here waits for
/// either, and fails with the error.
pub(crate) struct ConnectedUdp {
    socket: Arc<tokio::net::UdpSocket>,
    /// Waiting for error readiness, while a receive is pending.
    error: Mutex<Option<ErrorReady>>,
}

impl DnsUdpSocket for ConnectedUdp {
    type Time = TokioTime;

    fn poll_recv_from(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut read = ReadBuf::new(buf);
        if let Poll::Ready(received) = self.socket.poll_recv_from(cx, &mut read) {
            return Poll::Ready(received.map(|from| (read.filled().len(), from)));
        }
        let mut waiting = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let ready = waiting.get_or_insert_with(|| {
                let socket = self.socket.clone();
                Box::pin(async move { socket.ready(Interest::ERROR).await })
            });
            if ready.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            *waiting = None;
            match self.socket.take_error() {
                Ok(Some(e)) | Err(e) => return Poll::Ready(Err(e)),
                // No error after all: clear the readiness, wait again.
                Ok(None) => {
                    let _ = self
                        .socket
                        .try_io(Interest::ERROR, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
                }
            }
        }
    }

    fn poll_send_to(&self, cx: &mut Context<'_>, buf: &[u8], target: SocketAddr) -> Poll<io::Result<usize>> {
        self.socket.poll_send_to(cx, buf, target)
    }
}

/// A UDP client of `server`: each request is sent up to three times (at
/// `timeout / 3` intervals, 200 ms at least) and fails after `timeout`.
pub(crate) fn udp_client(server: SocketAddr, timeout: Duration) -> Client<Provider> {
    let stream = UdpClientStream::builder(server, Provider::default())
        .with_timeout(Some(timeout))
        .with_retry_interval_floor(u64::try_from(retry_interval(timeout).as_millis()).unwrap_or(u64::MAX))
        .build();
    let (client, background) = Client::<Provider>::from_sender(stream);
    tokio::spawn(background);
    client
}

/// How long to wait for an answer before sending a request again over UDP.
pub(crate) fn retry_interval(timeout: Duration) -> Duration {
    (timeout / 3).max(Duration::from_millis(200))
}

/// A TCP connection to `server` (within `timeout`, as is each request on it);
/// with `signer`, requests are signed and answers verified with TSIG.
pub(crate) async fn tcp_client(
    server: SocketAddr,
    timeout: Duration,
    signer: Option<TSigner>,
) -> Result<DnsExchange<Provider>, NetError> {
    let (connect, sender) = TcpClientStream::new(server, None, Some(timeout), Provider::default());
    let stream = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| NetError::Timeout)??;
    let mut multiplexer = DnsMultiplexer::new(stream, sender).with_timeout(timeout);
    if let Some(signer) = signer {
        multiplexer = multiplexer.with_signer(signer);
    }
    let (exchange, background) = DnsExchange::from_stream(multiplexer);
    tokio::spawn(background);
    Ok(exchange)
}

/// Sends `message` as it is (its ID, and its TSIG when signed) over `client`;
/// the first answer matching it, unverified.
pub(crate) async fn exchange(
    client: &impl DnsHandle,
    message: Message,
    retry_interval: Duration,
) -> Result<DnsResponse, NetError> {
    let mut request = DnsRequest::new(message, Default::default());
    request.options_mut().retry_interval = retry_interval;
    client.send(request).first_answer().await
}

/// RCODE as DNS tools print it.
pub(crate) fn rcode_name(rcode: ResponseCode) -> String {
    match u16::from(rcode) {
        0 => "NOERROR".to_string(),
        1 => "FORMERR".to_string(),
        2 => "SERVFAIL".to_string(),
        3 => "NXDOMAIN".to_string(),
        4 => "NOTIMP".to_string(),
        5 => "REFUSED".to_string(),
        6 => "YXDOMAIN".to_string(),
        7 => "YXRRSET".to_string(),
        8 => "NXRRSET".to_string(),
        9 => "NOTAUTH".to_string(),
        10 => "NOTZONE".to_string(),
        n => format!("RCODE{n}"),
    }
}
