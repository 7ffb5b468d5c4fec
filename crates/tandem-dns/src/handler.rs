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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use hickory_proto::op::{Edns, Query};
    use hickory_proto::rr::{Name, Record, RecordType};
    use hickory_proto::serialize::binary::BinEncoder;
    use hickory_server::net::NetError;
    use hickory_server::net::runtime::TokioTime;
    use hickory_server::zone_handler::MessageResponse;

    use super::*;
    use crate::{ActiveNode, GroupKind, ZoneGroup, ZoneInput};

    /// Keeps what hickory would send.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Vec<u8>>>>);

    #[async_trait::async_trait]
    impl ResponseHandler for Capture {
        async fn send_response<'a>(
            &mut self,
            response: MessageResponse<
                '_,
                'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
            >,
        ) -> Result<ResponseInfo, NetError> {
            let mut bytes = Vec::new();
            let info = response.destructive_emit(&mut BinEncoder::new(&mut bytes))?;
            self.0.lock().map_err(|_| NetError::from("poisoned"))?.push(bytes);
            Ok(info)
        }
    }

    fn handler(allow_transfer: bool) -> DnsHandler {
        let mut input = ZoneInput::new("svc.example.");
        input.serial = 3;
        let mut web = ZoneGroup::new("web", GroupKind::Exclusive);
        web.active = vec![ActiveNode {
            node: "n1".into(),
            addrs: vec![IpAddr::from([10, 0, 0, 1])],
            epoch: 1,
        }];
        input.groups = vec![web];
        if allow_transfer {
            input.allow_transfer = vec![IpAddr::from([127, 0, 0, 1])];
        }
        let zone = Arc::new(Zone::build(&input).unwrap_or_else(|e| panic!("{e}")));
        let (_tx, rx) = watch::channel(zone);
        DnsHandler::new(rx, LeaseCheck::always(), Arc::new(Stats::new(1)), None, 1232)
    }

    async fn through_hickory(h: &DnsHandler, query: &Message, protocol: Protocol) -> Vec<Message> {
        let bytes = query.to_vec().unwrap_or_default();
        let src: SocketAddr = ([127, 0, 0, 1], 5353).into();
        let request = Request::from_bytes(bytes, src, protocol).unwrap_or_else(|e| panic!("{e}"));
        let capture = Capture::default();
        h.handle_request::<_, TokioTime>(&request, capture.clone()).await;
        let sent = capture.0.lock().map(|v| v.clone()).unwrap_or_default();
        sent.iter().filter_map(|b| Message::from_vec(b).ok()).collect()
    }

    fn raw(h: &DnsHandler, query: &Message, transport: Transport) -> Vec<Message> {
        let bytes = query.to_vec().unwrap_or_default();
        let sent = match h.answer(&bytes, IpAddr::from([127, 0, 0, 1]), transport) {
            RawResponse::Reply(m) => vec![m],
            RawResponse::Replies(ms) => ms,
            RawResponse::Drop | RawResponse::Parse => Vec::new(),
        };
        sent.iter().filter_map(|b| Message::from_vec(b).ok()).collect()
    }

    /// Transports without the raw path get the same answers, encoded by hickory.
    #[tokio::test]
    async fn handle_request_sends_what_the_raw_path_sends() {
        let h = handler(true);
        let mut queries = Vec::new();
        for (name, rtype) in [
            ("web.svc.example.", RecordType::A),
            ("WEB.svc.example.", RecordType::TXT),
            ("svc.example.", RecordType::NS),
            ("nothere.svc.example.", RecordType::A),
            ("example.com.", RecordType::A),
            ("svc.example.", RecordType::AXFR),
        ] {
            let mut q = Message::query();
            q.add_query(Query::query(Name::from_ascii(name).unwrap_or_default(), rtype));
            queries.push(q.clone());
            q.set_edns(Edns::new());
            queries.push(q);
        }
        for q in &queries {
            for (protocol, transport) in [(Protocol::Udp, Transport::Udp), (Protocol::Tcp, Transport::Tcp)] {
                let ours = raw(&h, q, transport);
                let theirs = through_hickory(&h, q, protocol).await;
                assert!(!ours.is_empty(), "{q}");
                assert_eq!(theirs.len(), ours.len(), "{q}");
                for (a, b) in theirs.iter().zip(&ours) {
                    assert_eq!(a.metadata, b.metadata, "{q}");
                    assert_eq!(a.queries, b.queries, "{q}");
                    assert_eq!(a.answers, b.answers, "{q}");
                    assert_eq!(a.authorities, b.authorities, "{q}");
                    assert_eq!(a.additionals, b.additionals, "{q}");
                    assert_eq!(a.edns, b.edns, "{q}");
                }
            }
        }
        // Refused transfer, for a client not on the list.
        let h = handler(false);
        let mut axfr = Message::query();
        axfr.add_query(Query::query(
            Name::from_ascii("svc.example.").unwrap_or_default(),
            RecordType::AXFR,
        ));
        let theirs = through_hickory(&h, &axfr, Protocol::Tcp).await;
        assert_eq!(theirs.len(), 1);
        assert_eq!(theirs[0].metadata.response_code, ResponseCode::Refused);
    }
}
