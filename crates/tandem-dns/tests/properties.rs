//! Property tests of the query function: the fast path agrees with the
//! hickory reference path, and random or mutated packets never panic and
//! get either nothing or a well-formed response within the size limit.
//! (The same checks run under `cargo fuzz` in `fuzz/`.)
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::sync::OnceLock;

use common::*;
use hickory_proto::op::{Message, MessageType};
use proptest::prelude::*;
use tandem_dns::{
    ActiveNode, GroupKind, LeaseCheck, Outcome, QueryContext, Transport, Zone, ZoneGroup, respond, respond_reference,
};

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let mut input = input();
        let mut big = ZoneGroup::new("big", GroupKind::Clone);
        big.active = (0..40u8)
            .map(|i| ActiveNode {
                node: format!("m{i}"),
                addrs: vec![IpAddr::from([10, 9, 0, i])],
                epoch: 1,
            })
            .collect();
        input.groups.push(big);
        input.allow_transfer = vec![ip("127.0.0.1")];
        Zone::build(&input).unwrap()
    })
}

fn names() -> Vec<String> {
    let mut names: Vec<String> = zone().records().into_iter().map(|r| r.0).collect();
    names.sort();
    names.dedup();
    names.extend(
        [
            "_tcp.svc.example.",
            "_udp.svc.example.",
            "nothere.svc.example.",
            "a.b.c.web.svc.example.",
            "example.com.",
            "xsvc.example.",
            "example.",
            ".",
        ]
        .map(String::from),
    );
    names
}

const TYPES: [u16; 16] = [1, 28, 2, 6, 15, 16, 33, 5, 255, 10, 257, 0, 65535, 41, 252, 251];

/// A query in wire format, built by hand so that every field is controlled.
#[allow(clippy::too_many_arguments)]
fn build_query(
    id: u16,
    flags: u16,
    qname: &str,
    case_mask: u64,
    qtype: u16,
    qclass: u16,
    edns: Option<(u16, u8, bool, Vec<u8>)>,
) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&flags.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    let mut bit = 0;
    for label in qname.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        for b in label.bytes() {
            q.push(if case_mask >> (bit % 64) & 1 == 1 {
                b.to_ascii_uppercase()
            } else {
                b
            });
            bit += 1;
        }
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&qclass.to_be_bytes());
    if let Some((payload, version, dnssec_ok, options)) = edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&payload.to_be_bytes());
        q.extend_from_slice(&[0, version, if dnssec_ok { 0x80 } else { 0 }, 0]);
        q.extend_from_slice(&(options.len() as u16).to_be_bytes());
        q.extend_from_slice(&options);
    }
    q
}

fn ctx<'a>(tcp: bool, lease: &'a LeaseCheck, client: IpAddr) -> QueryContext<'a> {
    QueryContext {
        transport: if tcp { Transport::Tcp } else { Transport::Udp },
        client,
        lease,
        max_udp_payload: 1232,
    }
}

fn lease(valid: bool) -> LeaseCheck {
    LeaseCheck::new(move || valid)
}

fn same_response(fast: &[u8], reference: &[u8]) -> Result<(), TestCaseError> {
    let f = Message::from_vec(fast).map_err(|e| TestCaseError::fail(format!("fast answer does not parse: {e}")))?;
    let r = Message::from_vec(reference).unwrap();
    prop_assert_eq!(f.metadata, r.metadata);
    // The question exactly as asked, case included.
    prop_assert_eq!(
        f.queries
            .iter()
            .map(|q| (q.name.to_ascii(), q.query_type, q.query_class))
            .collect::<Vec<_>>(),
        r.queries
            .iter()
            .map(|q| (q.name.to_ascii(), q.query_type, q.query_class))
            .collect::<Vec<_>>()
    );
    prop_assert_eq!(&f.answers, &r.answers);
    prop_assert_eq!(&f.authorities, &r.authorities);
    prop_assert_eq!(&f.additionals, &r.additionals);
    prop_assert_eq!(&f.edns, &r.edns);
    // Compressed against the question: never larger.
    prop_assert!(
        fast.len() <= reference.len(),
        "fast {} > reference {}",
        fast.len(),
        reference.len()
    );
    Ok(())
}

/// Whatever `respond` does with `packet`, it is sane.
fn check_any(packet: &[u8], tcp: bool, valid: bool) -> Result<(), TestCaseError> {
    let lease = lease(valid);
    let client = ip("127.0.0.1");
    let ctx = ctx(tcp, &lease, client);
    let mut out = Vec::new();
    let outcome = respond(zone(), packet, &ctx, &mut out);
    let mut reference_out = Vec::new();
    let _ = respond_reference(zone(), packet, &ctx, &mut reference_out);
    match outcome {
        Outcome::Reply { truncated, .. } => {
            let m = Message::from_vec(&out)
                .map_err(|e| TestCaseError::fail(format!("reply does not parse: {e}: {out:?} to {packet:?}")))?;
            prop_assert_eq!(m.message_type, MessageType::Response);
            prop_assert_eq!(&out[..2], &packet[..2]);
            prop_assert_eq!(m.truncation, truncated);
            if !tcp {
                prop_assert!(out.len() <= 1232, "{} bytes over UDP", out.len());
                if m.edns.is_none() {
                    prop_assert!(out.len() <= 512, "{} bytes over UDP without EDNS", out.len());
                }
            }
        }
        Outcome::Drop => {}
        Outcome::Transfer(messages) => {
            prop_assert!(tcp);
            for m in messages {
                Message::from_vec(&m).unwrap();
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_agrees_with_the_hickory_reference(
        name_index in 0usize..64,
        case_mask in any::<u64>(),
        qtype in proptest::sample::select(TYPES.to_vec()),
        other_class in proptest::bool::weighted(0.05),
        id in any::<u16>(),
        rd in any::<bool>(),
        cd in any::<bool>(),
        edns in proptest::option::of((any::<u16>(), proptest::sample::select(vec![0u8, 0, 0, 1]), any::<bool>(),
            proptest::sample::select(vec![vec![], vec![0xFF, 0x00, 0, 2, 1, 2], vec![0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]]))),
        tcp in any::<bool>(),
        valid in proptest::bool::weighted(0.8),
        allowed in any::<bool>(),
    ) {
        let names = names();
        let qname = &names[name_index % names.len()];
        let flags = u16::from(rd) << 8 | u16::from(cd) << 4;
        let packet = build_query(id, flags, qname, case_mask, qtype, if other_class { 3 } else { 1 }, edns);
        let lease = lease(valid);
        let client = if allowed { ip("127.0.0.1") } else { ip("192.0.2.9") };
        let ctx = ctx(tcp, &lease, client);
        let (mut fast, mut reference) = (Vec::new(), Vec::new());
        let a = respond(zone(), &packet, &ctx, &mut fast);
        let b = respond_reference(zone(), &packet, &ctx, &mut reference);
        prop_assert_eq!(&a, &b);
        if let Outcome::Reply { .. } = a {
            same_response(&fast, &reference)?;
        }
        check_any(&packet, tcp, valid)?;
    }

    #[test]
    fn random_packets_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..700), tcp in any::<bool>(), valid in any::<bool>()) {
        check_any(&packet, tcp, valid)?;
    }

    #[test]
    fn mutated_queries_never_panic(
        name_index in 0usize..64,
        qtype in proptest::sample::select(TYPES.to_vec()),
        edns in any::<bool>(),
        mutations in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
        tcp in any::<bool>(),
    ) {
        let names = names();
        let qname = &names[name_index % names.len()];
        let mut packet = build_query(7, 0x0100, qname, 0, qtype, 1, edns.then(|| (4096, 0, false, vec![])));
        for (at, byte) in mutations {
            let at = at % packet.len();
            packet[at] = byte;
        }
        if let Some(cut) = cut {
            packet.truncate(cut % (packet.len() + 1));
        }
        check_any(&packet, tcp, true)?;
    }
}
