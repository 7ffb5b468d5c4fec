//! The query path on arbitrary bytes: `respond` (fast path, falling back to
//! the hickory reference path), the reference path alone, and `DnsHandler`
//! (what hickory-server's `Server` calls for every message), over UDP and
//! TCP, with and without a lease. It must never panic, and whatever it sends
//! must be a well-formed response with the query's ID, within the UDP size
//! limit.
#![no_main]

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType};
use hickory_server::server::RawResponse;
use libfuzzer_sys::fuzz_target;
use tandem_dns::{
    ActiveNode, DnsHandler, GroupKind, LeaseCheck, Outcome, QueryContext, StaticRecord, Stats, Transport, Zone,
    ZoneGroup, ZoneInput, ZoneNode, respond, respond_reference,
};

/// The handler over the same zone, with the lease valid or not.
fn handler(lease: bool) -> &'static DnsHandler {
    static HANDLERS: OnceLock<[DnsHandler; 2]> = OnceLock::new();
    let handlers = HANDLERS.get_or_init(|| {
        [true, false].map(|valid| {
            // The sender may go: the receiver keeps the last zone.
            let (_tx, rx) = tokio::sync::watch::channel(zone().clone());
            DnsHandler::new(rx, LeaseCheck::new(move || valid), Arc::new(Stats::new(1)), None, 1232)
        })
    });
    &handlers[usize::from(!lease)]
}

fn zone() -> &'static Arc<Zone> {
    static ZONE: OnceLock<Arc<Zone>> = OnceLock::new();
    ZONE.get_or_init(|| {
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        let mut input = ZoneInput::new("svc.example.");
        input.serial = 1;
        input.nodes = vec![ZoneNode { name: "n1".into(), addrs: vec![ip("127.0.0.1"), ip("::1")] }];
        let mut web = ZoneGroup::new("web", GroupKind::Exclusive);
        web.port = Some(443);
        web.active = vec![ActiveNode { node: "n1".into(), addrs: vec![ip("10.0.0.1")], epoch: 3 }];
        let mut big = ZoneGroup::new("big", GroupKind::Clone);
        big.active = (0..60u8)
            .map(|i| ActiveNode { node: format!("m{i}"), addrs: vec![IpAddr::from([10, 9, 0, i])], epoch: 1 })
            .collect();
        input.groups = vec![web, big, ZoneGroup::new("idle", GroupKind::Exclusive)];
        let ttl = Duration::from_secs(60);
        input.static_records = vec![
            StaticRecord::new("www", ttl, "CNAME", "web").expect("static"),
            StaticRecord::new("@", ttl, "MX", "10 mail").expect("static"),
            StaticRecord::new("mail", ttl, "A", "10.0.0.25").expect("static"),
            StaticRecord::new("info", ttl, "TXT", "hello").expect("static"),
        ];
        input.allow_transfer = vec![ip("127.0.0.1")];
        Arc::new(Zone::build(&input).expect("zone"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, packet)) = data.split_first() else { return };
    let lease = LeaseCheck::new(move || selector & 2 == 0);
    let ctx = QueryContext {
        transport: if selector & 1 == 0 { Transport::Udp } else { Transport::Tcp },
        client: if selector & 4 == 0 { IpAddr::from([127, 0, 0, 1]) } else { IpAddr::from([192, 0, 2, 1]) },
        lease: &lease,
        max_udp_payload: 1232,
    };
    let mut out = Vec::new();
    let outcome = if selector & 16 != 0 {
        match handler(selector & 2 == 0).answer(packet, ctx.client, ctx.transport) {
            RawResponse::Reply(bytes) => {
                out = bytes;
                let reply = Message::from_vec(&out).expect("our reply parses");
                Outcome::Reply { rcode: u16::from(reply.response_code), truncated: reply.truncation }
            }
            RawResponse::Replies(messages) => Outcome::Transfer(messages),
            RawResponse::Drop | RawResponse::Parse => Outcome::Drop,
        }
    } else if selector & 8 == 0 {
        respond(zone(), packet, &ctx, &mut out)
    } else {
        respond_reference(zone(), packet, &ctx, &mut out)
    };
    match outcome {
        Outcome::Reply { truncated, .. } => {
            let reply = Message::from_vec(&out).expect("our reply parses");
            assert_eq!(reply.message_type, MessageType::Response);
            assert_eq!(out.get(..2), packet.get(..2));
            assert_eq!(reply.truncation, truncated);
            if ctx.transport == Transport::Udp {
                assert!(out.len() <= 1232);
                if reply.edns.is_none() {
                    assert!(out.len() <= 512);
                }
            }
        }
        Outcome::Drop => {}
        Outcome::Transfer(messages) => {
            assert_eq!(ctx.transport, Transport::Tcp);
            for m in messages {
                Message::from_vec(&m).expect("transfer message parses");
            }
        }
    }
});
