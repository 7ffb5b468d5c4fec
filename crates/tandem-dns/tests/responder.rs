//! The responder over real sockets on 127.0.0.1, with hickory's client and
//! with raw packets.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use tandem_dns::{ActiveNode, GroupKind, Zone, ZoneGroup};

async fn udp_client(addr: std::net::SocketAddr) -> Client<TokioRuntimeProvider> {
    let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);
    client
}

async fn tcp_client(addr: std::net::SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, sender) = TcpClientStream::new(addr, None, None, TokioRuntimeProvider::default());
    let (client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
    tokio::spawn(bg);
    client
}

fn data(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect();
    v.sort();
    v
}

fn soa_serial(m: &Message) -> Option<u32> {
    m.authorities
        .iter()
        .chain(m.answers.iter())
        .find_map(|r| match &r.data {
            RData::SOA(SOA { serial, .. }) => Some(*serial),
            _ => None,
        })
}

#[tokio::test]
async fn every_record_type_over_udp_and_tcp_with_hickory_client() {
    let h = Harness::start(&input()).await;
    for mut client in [udp_client(h.addr).await, tcp_client(h.addr).await] {
        let mut ask = async |n: &str, t: RecordType| {
            let r = client.query(name(n), DNSClass::IN, t).await.unwrap();
            assert_eq!(r.response_code, ResponseCode::NoError, "{n} {t}");
            assert!(r.authoritative, "AA for {n} {t}");
            assert!(!r.recursion_available);
            r
        };
        let soa = ask("svc.example.", RecordType::SOA).await;
        assert_eq!(soa.answers.len(), 1);
        assert_eq!(soa_serial(&soa), Some(42));

        let ns = ask("svc.example.", RecordType::NS).await;
        assert_eq!(
            data(&ns.answers),
            [
                "svc.example. NS ns-n1.svc.example.",
                "svc.example. NS ns-n2.svc.example."
            ]
        );
        assert_eq!(
            data(&ns.additionals),
            [
                "ns-n1.svc.example. A 127.0.0.1",
                "ns-n1.svc.example. AAAA ::1",
                "ns-n2.svc.example. A 127.0.0.2"
            ]
        );

        let a = ask("web.svc.example.", RecordType::A).await;
        assert_eq!(data(&a.answers), ["web.svc.example. A 10.0.0.1"]);
        assert_eq!(a.answers[0].ttl, 1);
        let aaaa = ask("web.svc.example.", RecordType::AAAA).await;
        assert_eq!(data(&aaaa.answers), ["web.svc.example. AAAA 2001:db8::1"]);

        let clone = ask("api.svc.example.", RecordType::A).await;
        assert_eq!(
            data(&clone.answers),
            ["api.svc.example. A 10.0.1.1", "api.svc.example. A 10.0.1.2"]
        );
        assert_eq!(clone.answers[0].ttl, 5);

        let srv = ask("_web._tcp.svc.example.", RecordType::SRV).await;
        assert_eq!(
            data(&srv.answers),
            ["_web._tcp.svc.example. SRV 0 0 443 web.svc.example."]
        );
        assert_eq!(
            data(&srv.additionals),
            ["web.svc.example. A 10.0.0.1", "web.svc.example. AAAA 2001:db8::1"]
        );

        let txt = ask("_primary.web.svc.example.", RecordType::TXT).await;
        assert_eq!(data(&txt.answers), ["_primary.web.svc.example. TXT node=n1 epoch=5"]);
        let txt = ask("_primary.api.svc.example.", RecordType::TXT).await;
        assert_eq!(
            data(&txt.answers),
            [
                "_primary.api.svc.example. TXT node=n1 epoch=2",
                "_primary.api.svc.example. TXT node=n2 epoch=2"
            ]
        );

        // Static records; the CNAME is followed inside the zone.
        let cname = ask("www.svc.example.", RecordType::A).await;
        assert_eq!(
            data(&cname.answers),
            ["web.svc.example. A 10.0.0.1", "www.svc.example. CNAME web.svc.example."]
        );
        let cname = ask("www.svc.example.", RecordType::CNAME).await;
        assert_eq!(data(&cname.answers), ["www.svc.example. CNAME web.svc.example."]);
        let mx = ask("svc.example.", RecordType::MX).await;
        assert_eq!(data(&mx.answers), ["svc.example. MX 10 mail.svc.example."]);
        assert_eq!(data(&mx.additionals), ["mail.svc.example. A 10.0.0.25"]);
        let txt = ask("info.svc.example.", RecordType::TXT).await;
        assert_eq!(data(&txt.answers), ["info.svc.example. TXT hello worldsecond"]);
        match &txt.answers[0].data {
            RData::TXT(t) => assert_eq!(t.txt_data.len(), 2),
            other => panic!("{other:?}"),
        }
        let srv = ask("_sip._udp.svc.example.", RecordType::SRV).await;
        assert_eq!(
            data(&srv.answers),
            ["_sip._udp.svc.example. SRV 10 5 5060 mail.svc.example."]
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn group_not_running_is_nodata_with_the_soa() {
    let h = Harness::start(&input()).await;
    for (n, t) in [
        ("batch.svc.example.", RecordType::A),
        ("_primary.batch.svc.example.", RecordType::TXT),
        ("_batch._tcp.svc.example.", RecordType::SRV),
        ("web.svc.example.", RecordType::MX),
        ("_tcp.svc.example.", RecordType::A),
    ] {
        let r = udp(h.addr, &query(n, t, None)).await;
        assert_eq!(r.response_code, ResponseCode::NoError, "{n}");
        assert!(r.authoritative);
        assert!(r.answers.is_empty(), "{n}: {r}");
        assert_eq!(r.authorities.len(), 1);
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(r.authorities[0].ttl, 1, "negative TTL");
        assert_eq!(soa_serial(&r), Some(42));
    }
    let nx = udp(h.addr, &query("nothere.svc.example.", RecordType::A, None)).await;
    assert_eq!(nx.response_code, ResponseCode::NXDomain);
    assert!(nx.authoritative);
    assert_eq!(nx.authorities.len(), 1);
    assert_eq!(nx.authorities[0].ttl, 1);
    // Long names too (the NXDOMAIN answer depends on the name's length).
    let long = format!("{}.{}.svc.example.", "a".repeat(63), "b".repeat(60));
    let nx = udp(h.addr, &query(&long, RecordType::A, Some(1232))).await;
    assert_eq!(nx.response_code, ResponseCode::NXDomain);
    assert_eq!(nx.queries[0].name.to_ascii(), long);
    assert_eq!(nx.authorities[0].name.to_ascii(), ZONE);
    h.stop().await;
}

#[tokio::test]
async fn without_a_lease_dynamic_names_get_servfail_static_ones_answers() {
    let h = Harness::start(&input()).await;
    h.set_lease(false);
    for (n, t) in [
        ("web.svc.example.", RecordType::A),
        ("batch.svc.example.", RecordType::A),
        ("_primary.web.svc.example.", RecordType::TXT),
        ("_web._tcp.svc.example.", RecordType::SRV),
        ("www.svc.example.", RecordType::A), // static CNAME to a group
        ("nothere.svc.example.", RecordType::A),
    ] {
        for r in [
            udp(h.addr, &query(n, t, None)).await,
            tcp(h.addr, &query(n, t, Some(1232))).await,
        ] {
            assert_eq!(r.response_code, ResponseCode::ServFail, "{n} {t}");
            assert!(r.answers.is_empty());
            assert!(!r.authoritative);
        }
    }
    for (n, t) in [
        ("svc.example.", RecordType::SOA),
        ("svc.example.", RecordType::NS),
        ("ns-n1.svc.example.", RecordType::A),
        ("mail.svc.example.", RecordType::A),
        ("info.svc.example.", RecordType::TXT),
        ("svc.example.", RecordType::MX),
    ] {
        let r = udp(h.addr, &query(n, t, None)).await;
        assert_eq!(r.response_code, ResponseCode::NoError, "{n} {t}");
        assert!(!r.answers.is_empty(), "{n} {t}");
    }
    h.set_lease(true);
    let r = udp(h.addr, &query("web.svc.example.", RecordType::A, None)).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert_eq!(data(&r.answers), ["web.svc.example. A 10.0.0.1"]);
    h.stop().await;
}

#[tokio::test]
async fn outside_the_zone_refused_no_recursion_other_classes_refused() {
    let h = Harness::start(&input()).await;
    let mut q = query("example.com.", RecordType::A, None);
    q.metadata.recursion_desired = true;
    let r = udp(h.addr, &q).await;
    assert_eq!(r.response_code, ResponseCode::Refused);
    assert!(!r.authoritative);
    assert!(!r.recursion_available);
    assert!(r.recursion_desired, "RD copied");
    assert_eq!(r.queries, q.queries);
    // A name that merely ends like the zone is outside it.
    let r = udp(h.addr, &query("xsvc.example.", RecordType::A, None)).await;
    assert_eq!(r.response_code, ResponseCode::Refused);
    let r = udp(h.addr, &query(".", RecordType::NS, None)).await;
    assert_eq!(r.response_code, ResponseCode::Refused);
    let mut ch = query("web.svc.example.", RecordType::TXT, None);
    ch.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(udp(h.addr, &ch).await.response_code, ResponseCode::Refused);
    h.stop().await;
}

#[tokio::test]
async fn other_opcodes_notimp_and_several_questions_formerr() {
    let h = Harness::start(&input()).await;
    let mut notify = query("svc.example.", RecordType::SOA, None);
    notify.metadata.op_code = OpCode::Notify;
    let r = udp(h.addr, &notify).await;
    assert_eq!(r.response_code, ResponseCode::NotImp);
    assert_eq!(r.op_code, OpCode::Notify);
    let mut two = query("web.svc.example.", RecordType::A, None);
    two.add_query(hickory_proto::op::Query::query(name("api.svc.example."), RecordType::A));
    assert_eq!(udp(h.addr, &two).await.response_code, ResponseCode::FormErr);
    h.stop().await;
}

#[tokio::test]
async fn axfr_refused_by_default_and_served_to_an_allowed_client() {
    let h = Harness::start(&input()).await;
    let axfr = query(ZONE, RecordType::AXFR, None);
    let refused = tcp(h.addr, &axfr).await;
    assert_eq!(refused.response_code, ResponseCode::Refused);
    assert!(refused.answers.is_empty());
    assert_eq!(udp(h.addr, &axfr).await.response_code, ResponseCode::Refused);
    let mut client = tcp_client(h.addr).await;
    let mut stream = client.zone_transfer(name(ZONE), None);
    let first = stream.next().await.unwrap();
    assert!(first.is_err() || first.unwrap().response_code == ResponseCode::Refused);

    let mut allowed = input();
    allowed.allow_transfer = vec![IpAddr::from([127, 0, 0, 1])];
    let zone = Zone::build(&allowed).unwrap();
    let expected = zone.records().len() + 1; // SOA first and last
    h.zone_tx.send(Arc::new(zone)).unwrap();
    let mut client = tcp_client(h.addr).await;
    let mut stream = client.zone_transfer(name(ZONE), None);
    let mut records = Vec::new();
    while let Some(part) = stream.next().await {
        let part = part.unwrap();
        assert_eq!(part.response_code, ResponseCode::NoError);
        assert!(part.authoritative);
        records.extend(part.answers.clone());
    }
    assert_eq!(records.len(), expected);
    assert_eq!(records.first().unwrap().record_type(), RecordType::SOA);
    assert_eq!(records.last().unwrap().record_type(), RecordType::SOA);
    assert!(
        records
            .iter()
            .any(|r| r.data == RData::A(A("10.0.0.1".parse().unwrap())))
    );
    assert!(
        records
            .iter()
            .any(|r| r.data == RData::AAAA(AAAA("2001:db8::1".parse().unwrap())))
    );

    // Over UDP an allowed client is told to use TCP.
    let r = udp(h.addr, &axfr).await;
    assert!(r.truncation);
    assert_eq!(r.response_code, ResponseCode::NoError);
    // IXFR from a client that is up to date: our SOA alone.
    let mut ixfr = query(ZONE, RecordType::IXFR, None);
    let soa = Zone::build(&allowed).unwrap().records()[0].clone();
    assert_eq!(soa.2, "SOA");
    let current = Record::from_rdata(
        name(ZONE),
        300,
        RData::SOA(SOA::new(
            name("ns-n1.svc.example."),
            name("hostmaster.svc.example."),
            42,
            60,
            10,
            600,
            1,
        )),
    );
    ixfr.add_authority(current);
    let r = tcp(h.addr, &ixfr).await;
    assert_eq!(r.answers.len(), 1);
    assert_eq!(soa_serial(&r), Some(42));
    // Without a lease: SERVFAIL.
    h.set_lease(false);
    assert_eq!(tcp(h.addr, &axfr).await.response_code, ResponseCode::ServFail);
    h.stop().await;
}

fn big_clone_input(nodes: usize) -> tandem_dns::ZoneInput {
    let mut input = input();
    let mut big = ZoneGroup::new("big", GroupKind::Clone);
    big.active = (0..nodes)
        .map(|i| ActiveNode {
            node: format!("m{i}"),
            addrs: vec![IpAddr::from([10, 9, (i / 256) as u8, (i % 256) as u8])],
            epoch: 1,
        })
        .collect();
    input.groups.push(big);
    input
}

#[tokio::test]
async fn large_answers_truncated_over_udp_and_whole_over_tcp() {
    // 100 A records of 16 bytes: about 1.6 KB, more than any UDP limit here.
    let h = Harness::start(&big_clone_input(100)).await;
    for payload in [None, Some(1232), Some(4096)] {
        let r = udp(h.addr, &query("big.svc.example.", RecordType::A, payload)).await;
        assert!(r.truncation, "{payload:?}");
        assert!(r.answers.is_empty());
        assert_eq!(r.response_code, ResponseCode::NoError);
        assert_eq!(r.edns.is_some(), payload.is_some());
    }
    let r = tcp(h.addr, &query("big.svc.example.", RecordType::A, None)).await;
    assert!(!r.truncation);
    assert_eq!(r.answers.len(), 100);
    // And with hickory's client over TCP.
    let mut client = tcp_client(h.addr).await;
    let r = client
        .query(name("big.svc.example."), DNSClass::IN, RecordType::A)
        .await
        .unwrap();
    assert_eq!(r.answers.len(), 100);
    // Many TXT records too.
    h.stop().await;
}

#[tokio::test]
async fn edns_payload_size_is_honoured_and_opt_echoed() {
    // 40 A records: 12 + 21 + 40 * 16 = 673 bytes, between 512 and 1232.
    let h = Harness::start(&big_clone_input(40)).await;
    let q = |p| query("big.svc.example.", RecordType::A, p);
    let plain = udp(h.addr, &q(None)).await;
    assert!(plain.truncation);
    assert!(plain.edns.is_none());
    let small = udp(h.addr, &q(Some(600))).await;
    assert!(small.truncation);
    let ok = udp(h.addr, &q(Some(1232))).await;
    assert!(!ok.truncation);
    assert_eq!(ok.answers.len(), 40);
    let edns = ok.edns.as_ref().unwrap();
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(edns.version(), 0);
    assert!(!edns.flags().dnssec_ok);
    // Payload sizes under 512 count as 512; DO is copied.
    let mut tiny = query("web.svc.example.", RecordType::A, Some(100));
    tiny.edns.as_mut().unwrap().set_dnssec_ok(true);
    let r = udp(h.addr, &tiny).await;
    assert_eq!(r.answers.len(), 1);
    assert!(r.edns.as_ref().unwrap().flags().dnssec_ok);
    // EDNS version 1: BADVERS.
    let mut v1 = query("web.svc.example.", RecordType::A, Some(1232));
    v1.edns.as_mut().unwrap().set_version(1);
    let r = udp(h.addr, &v1).await;
    assert_eq!(u16::from(r.response_code), 16, "BADVERS (hickory names 16 BADSIG)");
    assert!(r.answers.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn additional_section_is_dropped_before_truncating() {
    // NS answer with many glue addresses: the NS records fit in 512 bytes, the glue does not.
    let mut input = input();
    input.nodes = (0..6)
        .map(|i| tandem_dns::ZoneNode {
            name: format!("node{i}"),
            addrs: (0..8).map(|j| IpAddr::from([192, 0, 2, i * 8 + j])).collect(),
        })
        .collect();
    let h = Harness::start(&input).await;
    let r = udp(h.addr, &query(ZONE, RecordType::NS, None)).await;
    assert!(!r.truncation);
    assert_eq!(r.answers.len(), 6);
    assert!(r.additionals.is_empty());
    let r = udp(h.addr, &query(ZONE, RecordType::NS, Some(1232))).await;
    assert_eq!(r.additionals.len(), 48);
    h.stop().await;
}

#[tokio::test]
async fn question_case_is_preserved_0x20() {
    let h = Harness::start(&input()).await;
    for n in [
        "WeB.SvC.ExAmPlE.",
        "NOTHERE.svc.EXAMPLE.",
        "_PRIMARY.web.svc.example.",
        "EXAMPLE.com.",
    ] {
        let q = query(n, RecordType::A, Some(1232));
        let bytes = q.to_vec().unwrap();
        let reply = udp_raw(h.addr, &bytes, Duration::from_secs(2)).await.unwrap();
        let question_len = bytes.len() - 12 - 11; // without header and OPT
        assert_eq!(reply[12..12 + question_len], bytes[12..12 + question_len], "{n}");
        let r = Message::from_vec(&reply).unwrap();
        assert_eq!(r.queries[0].name.to_ascii(), n);
    }
    // The answer's owner points at the question: an A answer is as small as Knot's.
    let q = query("web.svc.example.", RecordType::A, None);
    let reply = udp_raw(h.addr, &q.to_vec().unwrap(), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(reply.len(), 12 + 21 + 16);
    assert_eq!(reply[12 + 21..12 + 23], [0xC0, 0x0C]);
    h.stop().await;
}

#[tokio::test]
async fn malformed_packets_get_formerr_or_are_dropped_and_the_server_keeps_answering() {
    let h = Harness::start(&input()).await;
    let wait = Duration::from_millis(300);
    // Too short to carry an ID: dropped.
    assert_eq!(udp_raw(h.addr, &[], wait).await, None);
    assert_eq!(udp_raw(h.addr, &[1, 2, 3, 4, 5], wait).await, None);
    // A response: dropped (no loops).
    let mut resp = query("web.svc.example.", RecordType::A, None);
    resp.metadata.message_type = MessageType::Response;
    assert_eq!(udp_raw(h.addr, &resp.to_vec().unwrap(), wait).await, None);
    // Header says one question, none follows: FORMERR.
    let header = [0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let r = Message::from_vec(&udp_raw(h.addr, &header, wait).await.unwrap()).unwrap();
    assert_eq!((r.id, r.response_code), (0xABCD, ResponseCode::FormErr));
    assert!(r.recursion_desired);
    // A compression loop in the question: pointer to itself.
    let mut looped = header.to_vec();
    looped.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    let r = Message::from_vec(&udp_raw(h.addr, &looped, wait).await.unwrap()).unwrap();
    assert_eq!(r.response_code, ResponseCode::FormErr);
    // A label longer than the packet.
    let mut long = header.to_vec();
    long.extend_from_slice(&[40, b'a', b'b']);
    let r = Message::from_vec(&udp_raw(h.addr, &long, wait).await.unwrap()).unwrap();
    assert_eq!(r.response_code, ResponseCode::FormErr);
    // Two OPT records: FORMERR.
    let mut two_opt = query("web.svc.example.", RecordType::A, Some(1232)).to_vec().unwrap();
    two_opt[11] = 2;
    two_opt.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
    let r = Message::from_vec(&udp_raw(h.addr, &two_opt, wait).await.unwrap()).unwrap();
    assert_eq!(r.response_code, ResponseCode::FormErr);
    // Random garbage: whatever comes back parses; nothing stalls.
    let mut seed = 0x1234_5678_u64;
    for i in 0..500 {
        let len = (i % 60) + 12;
        let packet: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.send_to(&packet, h.addr).unwrap();
    }
    // Garbage over TCP: a length with nothing behind it, then a close.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        s.write_all(&[0x10, 0x00, 1, 2, 3]).await.unwrap();
    }
    let garbage = tcp_raw(
        h.addr,
        &[0xAB, 0xCD, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 0x0C, 0, 1, 0, 1],
        1,
    )
    .await;
    assert_eq!(
        Message::from_vec(&garbage[0]).unwrap().response_code,
        ResponseCode::FormErr
    );
    let r = udp(h.addr, &query("web.svc.example.", RecordType::A, None)).await;
    assert_eq!(data(&r.answers), ["web.svc.example. A 10.0.0.1"]);
    let r = tcp(h.addr, &query("web.svc.example.", RecordType::A, None)).await;
    assert_eq!(data(&r.answers), ["web.svc.example. A 10.0.0.1"]);
    let s = h.stats.snapshot();
    assert!(s.responses(1) >= 5, "{s:?}");
    assert!(s.dropped >= 3, "{s:?}");
    h.stop().await;
}

#[tokio::test]
async fn rate_limit_drops_and_slips_per_client_tcp_unaffected() {
    let h = Harness::start_with(&input(), |cfg| cfg.rate_limit_per_sec = Some(5)).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let q = query("web.svc.example.", RecordType::A, None);
    let bytes = q.to_vec().unwrap();
    for _ in 0..40 {
        socket.send_to(&bytes, h.addr).await.unwrap();
    }
    let (mut full, mut truncated) = (0u32, 0u32);
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await {
        let r = Message::from_vec(&buf[..n]).unwrap();
        if r.truncation {
            assert!(r.answers.is_empty());
            truncated += 1;
        } else {
            assert_eq!(r.answers.len(), 1);
            full += 1;
        }
    }
    // 5 tokens (plus refills if the burst is slow), then every second excess query slips.
    assert!((5..=12).contains(&full), "full {full}");
    assert!(
        ((40 - full) / 2).abs_diff(truncated) <= 1,
        "full {full}, truncated {truncated}"
    );
    let s = h.stats.snapshot();
    assert_eq!(
        s.rate_limited_dropped + s.rate_limited_slipped + full as u64,
        40,
        "{s:?}"
    );
    // TCP is not limited.
    for _ in 0..10 {
        let r = tcp(h.addr, &q).await;
        assert_eq!(r.answers.len(), 1);
    }
    h.stop().await;
}

#[tokio::test]
async fn a_zone_swap_changes_answers_and_serial() {
    let h = Harness::start(&input()).await;
    let r = udp(h.addr, &query("web.svc.example.", RecordType::A, None)).await;
    assert_eq!(data(&r.answers), ["web.svc.example. A 10.0.0.1"]);
    let moved = moved_input();
    assert!(!moved.same_content(&input()));
    h.zone_tx.send(Arc::new(Zone::build(&moved).unwrap())).unwrap();
    for r in [
        udp(h.addr, &query("web.svc.example.", RecordType::A, None)).await,
        udp(h.addr, &query("web.svc.example.", RecordType::A, None)).await,
        tcp(h.addr, &query("web.svc.example.", RecordType::A, None)).await,
    ] {
        assert_eq!(data(&r.answers), ["web.svc.example. A 10.0.0.2"]);
    }
    let txt = udp(h.addr, &query("_primary.web.svc.example.", RecordType::TXT, None)).await;
    assert_eq!(data(&txt.answers), ["_primary.web.svc.example. TXT node=n2 epoch=6"]);
    let soa = udp(h.addr, &query(ZONE, RecordType::SOA, None)).await;
    assert_eq!(soa_serial(&soa), Some(43));
    h.stop().await;
}

#[tokio::test]
async fn stats_count_queries_and_rcodes() {
    let h = Harness::start(&input()).await;
    udp(h.addr, &query("web.svc.example.", RecordType::A, None)).await;
    udp(h.addr, &query("nothere.svc.example.", RecordType::A, None)).await;
    tcp(h.addr, &query("example.org.", RecordType::A, None)).await;
    let s = h.stats.snapshot();
    assert_eq!((s.queries_udp, s.queries_tcp), (2, 1));
    assert_eq!((s.responses(0), s.responses(3), s.responses(5)), (1, 1, 1));
    assert_eq!(h.stats.queries(), 3);
    h.stop().await;
}

#[tokio::test]
async fn shutdown_stops_udp_and_tcp() {
    let h = Harness::start(&input()).await;
    let addr = h.addr;
    h.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let q = query("web.svc.example.", RecordType::A, None);
    assert_eq!(
        udp_raw(addr, &q.to_vec().unwrap(), Duration::from_millis(300)).await,
        None
    );
}

/// One framed query over an open TCP connection; None when the server
/// closed the connection instead of answering.
async fn tcp_ask(s: &mut tokio::net::TcpStream, m: &Message) -> Option<Message> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bytes = m.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    s.write_all(&framed).await.ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.ok()?;
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut reply).await.ok()?;
    Message::from_vec(&reply).ok()
}

#[tokio::test]
async fn tcp_connections_beyond_the_cap_are_closed() {
    let h = Harness::start_with(&input(), |cfg| {
        cfg.tcp_max_connections = 2;
        cfg.tcp_idle_timeout = Duration::from_secs(600);
    })
    .await;
    let q = query("web.svc.example.", RecordType::A, None);
    let mut first = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    // Both served (and so accepted before the third).
    assert!(tcp_ask(&mut first, &q).await.is_some());
    assert!(tcp_ask(&mut second, &q).await.is_some());
    let mut third = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    assert!(tcp_ask(&mut third, &q).await.is_none(), "a third connection is served");
    // The first two still are; once one closes, a new one is served again.
    assert!(tcp_ask(&mut first, &q).await.is_some());
    drop(first);
    let mut served = false;
    for _ in 0..100 {
        let mut again = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        if tcp_ask(&mut again, &q).await.is_some() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "no connection served after one of two closed");
    assert!(tcp_ask(&mut second, &q).await.is_some());
    h.stop().await;
}

/// The server runs on threads of its own: it answers while the runtime that
/// started it cannot run anything (here, a current-thread runtime blocked in
/// a system call), as it must while the agent's runtime is busy.
#[tokio::test]
async fn answers_while_the_runtime_that_started_it_is_blocked() {
    let h = Harness::start(&input()).await;
    // Answered once: the server has started (its task ran on this runtime).
    let q = query("web.svc.example.", RecordType::A, None);
    udp(h.addr, &q).await;
    let addr = h.addr;
    let bytes = q.to_vec().unwrap();
    let asker = std::thread::spawn(move || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        socket.send_to(&bytes, addr).unwrap();
        let mut buf = [0u8; 512];
        socket.recv(&mut buf).map(|n| buf[..n].to_vec())
    });
    // Blocks this runtime's only thread until the other thread has its answer.
    let reply = asker.join().unwrap().expect("no answer while the runtime was blocked");
    let r = Message::from_vec(&reply).unwrap();
    assert_eq!(data(&r.answers), ["web.svc.example. A 10.0.0.1"]);
    h.stop().await;
}

/// The CLI's stub resolver (hickory's client): the rcode and addresses, and
/// TCP when the answer is truncated over UDP.
#[tokio::test]
async fn the_stub_resolver_asks_again_over_tcp_when_truncated() {
    let h = Harness::start(&big_clone_input(100)).await;
    let addr = h.addr;
    // It blocks: off this runtime, which runs the server's task.
    let lookup = |name: &'static str, v6: bool| {
        tokio::task::spawn_blocking(move || tandem_dns::client::lookup(addr, name, v6, Duration::from_secs(5)).unwrap())
    };
    let big = lookup("big.svc.example.", false).await.unwrap();
    assert_eq!(big.rcode, "NOERROR");
    assert_eq!(big.addrs.len(), 100);
    let web = lookup("web.svc.example.", true).await.unwrap();
    assert_eq!(web.addrs, [ip("2001:db8::1")]);
    let nx = lookup("nothere.svc.example.", false).await.unwrap();
    assert_eq!((nx.rcode.as_str(), nx.addrs.len()), ("NXDOMAIN", 0));
    h.set_lease(false);
    let servfail = lookup("web.svc.example.", false).await.unwrap();
    assert_eq!(servfail.rcode, "SERVFAIL");
    let s = h.stats.snapshot();
    assert!(s.truncated >= 1 && s.queries_tcp >= 1, "{s:?}");
    h.stop().await;
}
