//! A minimal stub resolver for the CLI and the demo: asks one server over
//! UDP, retransmitting, and again over TCP when the answer comes back
//! truncated (the exchanges are [`transport`](crate::transport)'s).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_net::NetError;
use hickory_net::client::ClientHandle;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use crate::transport::{rcode_name, tcp_client, udp_client};

/// What a server answered to an A/AAAA question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// As DNS tools print it: NOERROR, SERVFAIL, NXDOMAIN, REFUSED, ...
    pub rcode: String,
    pub addrs: Vec<IpAddr>,
}

/// Asks `server` for the A (or, with `v6`, AAAA) records of `name`, within
/// `timeout` (over UDP, and as long again over TCP if the answer was
/// truncated). Blocks; callable from plain code and from inside a tokio
/// runtime alike (it runs on a thread and a runtime of its own).
pub fn lookup(server: SocketAddr, name: &str, v6: bool, timeout: Duration) -> Result<Lookup, String> {
    let qname = Name::from_str(name).map_err(|e| format!("{name:?} is not a domain name: {e}"))?;
    let rtype = if v6 { RecordType::AAAA } else { RecordType::A };
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime for the lookup: {e}"))?;
            runtime.block_on(ask(server, qname, rtype, timeout))
        })
        .join()
        .map_err(|_| "the lookup panicked".to_string())?
    })
}

async fn ask(server: SocketAddr, qname: Name, rtype: RecordType, timeout: Duration) -> Result<Lookup, String> {
    let failed = |e: NetError| match e {
        NetError::Timeout => format!("no answer from {server} within {timeout:?}"),
        e => format!("asking {server}: {e}"),
    };
    let mut client = udp_client(server, timeout);
    let mut reply = client.query(qname.clone(), DNSClass::IN, rtype).await.map_err(failed)?;
    if reply.truncation {
        let mut client = tcp_client(server, timeout, None).await.map_err(failed)?;
        reply = client.query(qname, DNSClass::IN, rtype).await.map_err(failed)?;
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
    let rcode = rcode_name(reply.response_code);
    Ok(Lookup { rcode, addrs })
}
