//! Tandem's `RequestHandler` for hickory-server: every message, as received,
//! goes to [`respond`] (prepared answers as bytes), behind the per-client
//! rate limit, and is counted.
//!
//! The server hands each message to [`RequestHandler::handle_raw`] before
//! parsing it, and sends the bytes returned as they are: the answers stay
//! exactly as [`respond`] writes them (owner names pointing at the question
//! as asked, the additional section dropped before truncating, FORMERR and
//! drops as the property tests pin them down), and messages too malformed to
//! parse are counted like the others. [`RequestHandler::handle_request`],
//! for transports without a raw path (none is registered today), sends the
//! same answer through hickory's encoder.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hickory_proto::op::{Header, HeaderCounts, Message, MessageType, Metadata, ResponseCode};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{RawResponse, Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::watch;
use tracing::debug;

use crate::LeaseCheck;
use crate::query::{Outcome, QueryContext, Transport, respond, slip_reply};
use crate::ratelimit::{RateLimiter, Verdict};
use crate::stats::Stats;
use crate::zone::Zone;

/// Answers DNS messages from the current zone (see the crate's
/// documentation for the behaviour).
pub struct DnsHandler {
    zone: watch::Receiver<Arc<Zone>>,
    lease: LeaseCheck,
    stats: Arc<Stats>,
    limiter: Option<RateLimiter>,
    max_udp_payload: u16,
}

impl DnsHandler {
    /// A handler answering from `zone` (swapped whole when it changes),
    /// dynamic names only while `lease` holds, UDP answers of at most
    /// `max_udp_payload` bytes to EDNS clients, UDP queries limited to
    /// `rate_limit_per_sec` per client when set; counting in `stats`.
    pub fn new(
        zone: watch::Receiver<Arc<Zone>>,
        lease: LeaseCheck,
        stats: Arc<Stats>,
        rate_limit_per_sec: Option<u32>,
        max_udp_payload: u16,
    ) -> DnsHandler {
        DnsHandler {
            zone,
            lease,
            stats,
            limiter: rate_limit_per_sec.map(RateLimiter::new),
            max_udp_payload,
        }
    }

    /// The answer to `message` from `client`: rate limit (UDP), answer, count.
    pub fn answer(&self, message: &[u8], client: IpAddr, transport: Transport) -> RawResponse {
        let shard = shard();
        let ctx = QueryContext {
            transport,
            client,
            lease: &self.lease,
            max_udp_payload: self.max_udp_payload,
        };
        let mut out = Vec::new();
        if transport == Transport::Udp
            && let Some(limiter) = &self.limiter
        {
            match limiter.check(client, Instant::now()) {
                Verdict::Allow => {}
                Verdict::Drop => {
                    self.stats.rate_limited(shard, false);
                    return RawResponse::Drop;
                }
                Verdict::Slip => {
                    self.stats.rate_limited(shard, true);
                    return if slip_reply(message, &ctx, &mut out) {
                        RawResponse::Reply(out)
                    } else {
                        RawResponse::Drop
                    };
                }
            }
        }
        let outcome = {
            let zone = self.zone.borrow();
            respond(&zone, message, &ctx, &mut out)
        };
        self.stats.record(shard, transport, &outcome);
        match outcome {
            Outcome::Reply { .. } => RawResponse::Reply(out),
            Outcome::Drop => RawResponse::Drop,
            Outcome::Transfer(messages) => RawResponse::Replies(messages),
        }
    }
}

/// UDP for UDP; TCP, TLS and the HTTP transports are streams, answered as TCP.
fn transport(protocol: Protocol) -> Transport {
    match protocol {
        Protocol::Udp => Transport::Udp,
        _ => Transport::Tcp,
    }
}

/// The counters' shard for this thread: threads take shards in turn, so the
/// server's threads rarely share one.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
    }
    SHARD.with(|s| {
        s.get().unwrap_or_else(|| {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            s.set(Some(n));
            n
        })
    })
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    fn handle_raw(&self, message: &[u8], src: SocketAddr, protocol: Protocol) -> RawResponse {
        self.answer(message, src.ip(), transport(protocol))
    }

    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let messages = match self.answer(request.as_slice(), request.src().ip(), transport(request.protocol())) {
            RawResponse::Reply(m) => vec![m],
            RawResponse::Replies(ms) => ms,
            RawResponse::Drop | RawResponse::Parse => Vec::new(),
        };
        let mut info = None;
        for bytes in messages {
            let message = match Message::from_vec(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    debug!(error = %e, "DNS: our own answer does not parse");
                    break;
                }
            };
            let mut builder = MessageResponseBuilder::from_message_request(request);
            if let Some(edns) = &message.edns {
                builder.edns(edns);
            }
            let reply = builder.build(
                message.metadata,
                message.answers.iter(),
                message.authorities.iter(),
                [],
                message.additionals.iter(),
            );
            match response.send_response(reply).await {
                Ok(sent) => info = Some(sent),
                Err(e) => {
                    debug!(error = %e, client = %request.src(), "DNS: sending an answer failed");
                    break;
                }
            }
        }
        info.unwrap_or_else(|| {
            // Nothing sent: say so as hickory does for a failure.
            let mut metadata = Metadata::new(request.metadata.id, MessageType::Response, request.metadata.op_code);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        })
    }
}
