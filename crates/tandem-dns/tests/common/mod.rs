//! Shared fixture: a zone, a responder on 127.0.0.1 port 0, raw UDP/TCP clients.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tandem_dns::{
    ActiveNode, DnsConfig, GroupKind, LeaseCheck, Responder, StaticRecord, Stats, Zone, ZoneGroup, ZoneInput, ZoneNode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;

pub const ZONE: &str = "svc.example.";

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Nodes n1, n2; exclusive `web` on n1 (port 443), clone `api` on n1 and n2
/// (port 8080), exclusive `batch` not running (port 9000); static records.
pub fn input() -> ZoneInput {
    let mut input = ZoneInput::new(ZONE);
    input.serial = 42;
    input.nodes = vec![
        ZoneNode {
            name: "n1".into(),
            addrs: vec![ip("127.0.0.1"), ip("::1")],
        },
        ZoneNode {
            name: "n2".into(),
            addrs: vec![ip("127.0.0.2")],
        },
    ];
    let mut web = ZoneGroup::new("web", GroupKind::Exclusive);
    web.port = Some(443);
    web.active = vec![ActiveNode {
        node: "n1".into(),
        addrs: vec![ip("10.0.0.1"), ip("2001:db8::1")],
        epoch: 5,
    }];
    let mut api = ZoneGroup::new("api", GroupKind::Clone);
    api.port = Some(8080);
    api.ttl = Duration::from_secs(5);
    api.active = vec![
        ActiveNode {
            node: "n2".into(),
            addrs: vec![ip("10.0.1.2")],
            epoch: 2,
        },
        ActiveNode {
            node: "n1".into(),
            addrs: vec![ip("10.0.1.1")],
            epoch: 2,
        },
    ];
    let mut batch = ZoneGroup::new("batch", GroupKind::Exclusive);
    batch.port = Some(9000);
    input.groups = vec![web, api, batch];
    let ttl = Duration::from_secs(300);
    input.static_records = vec![
        StaticRecord::new("www", ttl, "CNAME", "web").unwrap(),
        StaticRecord::new("@", ttl, "MX", "10 mail").unwrap(),
        StaticRecord::new("mail", ttl, "A", "10.0.0.25").unwrap(),
        StaticRecord::new("info", ttl, "TXT", "\"hello world\" \"second\"").unwrap(),
        StaticRecord::new("_sip._udp", ttl, "SRV", "10 5 5060 mail").unwrap(),
    ];
    input
}

/// [`input`] after `web` moved to n2 (10.0.0.2, epoch 6), serial 43.
pub fn moved_input() -> ZoneInput {
    let mut moved = input();
    moved.serial = 43;
    moved.groups[0].active = vec![ActiveNode {
        node: "n2".into(),
        addrs: vec![ip("10.0.0.2")],
        epoch: 6,
    }];
    moved
}

pub struct Harness {
    pub addr: SocketAddr,
    pub zone_tx: watch::Sender<Arc<Zone>>,
    pub lease: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    pub async fn start(input: &ZoneInput) -> Harness {
        Harness::start_with(input, |_| {}).await
    }

    pub async fn start_with(input: &ZoneInput, tune: impl FnOnce(&mut DnsConfig)) -> Harness {
        let zone = Arc::new(Zone::build(input).unwrap());
        let (zone_tx, zone_rx) = watch::channel(zone);
        let lease = Arc::new(AtomicBool::new(true));
        let flag = lease.clone();
        let mut cfg = DnsConfig::new("127.0.0.1:0".parse().unwrap());
        cfg.udp_workers = 2;
        tune(&mut cfg);
        let responder = Responder::bind(cfg, zone_rx, LeaseCheck::new(move || flag.load(Ordering::SeqCst)))
            .await
            .unwrap();
        let addr = responder.local_addr();
        let stats = responder.stats();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(responder.run(stop_rx));
        Harness {
            addr,
            zone_tx,
            lease,
            stats,
            stop,
            task: Some(task),
        }
    }

    pub fn set_lease(&self, valid: bool) {
        self.lease.store(valid, Ordering::SeqCst);
    }

    pub async fn stop(mut self) {
        self.stop.send(true).unwrap();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

pub fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// A query message (RD clear) with an optional EDNS payload size.
pub fn query(qname: &str, qtype: RecordType, edns_payload: Option<u16>) -> Message {
    let mut m = Message::query();
    m.add_query(Query::query(name(qname), qtype));
    if let Some(p) = edns_payload {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.set_edns(e);
    }
    m
}

/// Sends raw bytes over UDP; the reply's bytes, or None after `wait`.
pub async fn udp_raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, addr).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

pub async fn udp(addr: SocketAddr, m: &Message) -> Message {
    let bytes = udp_raw(addr, &m.to_vec().unwrap(), Duration::from_secs(2))
        .await
        .expect("no UDP answer");
    let reply = Message::from_vec(&bytes).unwrap();
    assert_eq!(reply.id, m.id);
    reply
}

/// Sends one message over TCP and reads `count` replies.
pub async fn tcp_raw(addr: SocketAddr, bytes: &[u8], count: usize) -> Vec<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).await.unwrap();
    let mut out = Vec::new();
    for _ in 0..count {
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut len))
            .await
            .unwrap()
            .unwrap();
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut msg).await.unwrap();
        out.push(msg);
    }
    out
}

pub async fn tcp(addr: SocketAddr, m: &Message) -> Message {
    let replies = tcp_raw(addr, &m.to_vec().unwrap(), 1).await;
    Message::from_vec(&replies[0]).unwrap()
}
