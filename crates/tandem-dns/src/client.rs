//! A minimal stub resolver for the CLI and the demo: one question over UDP,
//! with a timeout, answered by one server.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// What a server answered to an A/AAAA question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// As DNS tools print it: NOERROR, SERVFAIL, NXDOMAIN, REFUSED, ...
    pub rcode: String,
    pub addrs: Vec<IpAddr>,
}

/// Asks `server` for the A (or, with `v6`, AAAA) records of `name`.
pub fn lookup(server: SocketAddr, name: &str, v6: bool, timeout: Duration) -> Result<Lookup, String> {
    let qname = Name::from_str(name).map_err(|e| format!("{name:?} is not a domain name: {e}"))?;
    let rtype = if v6 { RecordType::AAAA } else { RecordType::A };
    let id: u16 = std::process::id() as u16 ^ 0x5a5a;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(qname, rtype));
    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(bind).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    socket.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    socket
        .send_to(&bytes, server)
        .map_err(|e| format!("cannot send to {server}: {e}"))?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, from) = socket
            .recv_from(&mut buf)
            .map_err(|e| format!("no answer from {server} within {timeout:?}: {e}"))?;
        let Some(reply) = buf.get(..n).and_then(|b| Message::from_vec(b).ok()) else {
            continue;
        };
        if from != server || reply.id != id {
            continue;
        }
        let addrs = reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        let rcode = crate::update::rcode_name(reply.response_code);
        return Ok(Lookup { rcode, addrs });
    }
}
