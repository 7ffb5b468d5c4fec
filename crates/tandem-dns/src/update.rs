//! Pushing group records to a site's own DNS servers: RFC 2136 dynamic
//! updates signed with TSIG (RFC 8945), as a Windows failover cluster
//! updates its DNS.
//!
//! [`push`] makes the server's A/AAAA records of each `NAME.ZONE` equal to
//! the given addresses: one update message per name deletes both RRsets and
//! adds the new records, so each name changes atomically at the server. The
//! update carries no prerequisites, so sending it twice gives the same result:
//! hickory's client retransmits it over UDP until answered or the timeout
//! passes, and sends it over TCP if the answer comes back truncated.
//!
//! A success must come back signed with the same key (the answer's MAC is
//! checked); failures are reported with the server's RCODE and TSIG error
//! whether signed or not, since believing a forged failure costs nothing but
//! a retry. The key secret never appears in logs, errors or `Debug` output.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_net::NetError;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

use crate::transport::{self, rcode_name};

/// Allowed clock difference between Tandem and the server (TSIG fudge), seconds.
pub const TSIG_FUDGE: u16 = 300;

/// The HMAC a TSIG key uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TsigAlgorithmName {
    /// `hmac-sha256`.
    #[default]
    HmacSha256,
    /// `hmac-sha512`.
    HmacSha512,
}

impl TsigAlgorithmName {
    /// The name BIND and Knot use in their configuration (`hmac-sha256`).
    pub fn as_str(self) -> &'static str {
        match self {
            TsigAlgorithmName::HmacSha256 => "hmac-sha256",
            TsigAlgorithmName::HmacSha512 => "hmac-sha512",
        }
    }

    fn hickory(self) -> TsigAlgorithm {
        match self {
            TsigAlgorithmName::HmacSha256 => TsigAlgorithm::HmacSha256,
            TsigAlgorithmName::HmacSha512 => TsigAlgorithm::HmacSha512,
        }
    }
}

impl fmt::Display for TsigAlgorithmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TsigAlgorithmName {
    type Err = String;

    /// `hmac-sha256` or `hmac-sha512`, any case.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "hmac-sha256" => Ok(TsigAlgorithmName::HmacSha256),
            "hmac-sha512" => Ok(TsigAlgorithmName::HmacSha512),
            _ => Err(format!(
                "unsupported TSIG algorithm {s:?}: expected hmac-sha256 or hmac-sha512"
            )),
        }
    }
}

/// A DNS server that takes Tandem's updates for one zone.
#[derive(Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// The server's address (UDP, and TCP when an answer is truncated).
    pub server: SocketAddr,
    /// The zone, absolute (`"corp.example."`; a missing final dot is added).
    pub zone: String,
    /// The TSIG key's name, as the server knows it (`"tandem-key."`).
    pub key_name: String,
    /// The key's secret, raw bytes (the caller decodes the base64). Redacted
    /// in `Debug`.
    pub key_secret: Vec<u8>,
    /// The key's algorithm.
    pub algorithm: TsigAlgorithmName,
    /// How long one name's update may take, retransmissions included.
    pub timeout: Duration,
}

impl fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushTarget")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key_name", &self.key_name)
            .field("key_secret", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The records Tandem owns at the target for one name: `NAME.ZONE` A/AAAA
/// with these addresses (empty: the group is not running, no records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRecord {
    /// Relative to the zone (`"web"` for `web.corp.example.`).
    pub name: String,
    /// TTL of the records, whole seconds (at most 2^31-1).
    pub ttl: Duration,
    /// The addresses; A and AAAA records as they come.
    pub addrs: Vec<IpAddr>,
}

/// Why a push failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The target cannot be used (nothing was sent).
    #[error("DNS update to {server} for zone {zone}: {reason}")]
    InvalidTarget {
        /// The server.
        server: SocketAddr,
        /// The zone as given.
        zone: String,
        /// What is wrong (never the secret).
        reason: String,
    },
    /// Some names were not updated; the others were.
    #[error("{}", join(.0))]
    Names(Vec<NameError>),
}

fn join(errors: &[NameError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// A name that was not updated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DNS update of {name} at {server} (zone {zone}): {kind}")]
pub struct NameError {
    /// The server.
    pub server: SocketAddr,
    /// The zone, absolute.
    pub zone: String,
    /// The name, absolute (or as given when it is invalid).
    pub name: String,
    /// What went wrong.
    pub kind: NameErrorKind,
}

/// What went wrong with one name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameErrorKind {
    /// The record cannot be sent (bad name, TTL too large).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// No answer within the timeout.
    #[error("no answer within {0:?} (server down or unreachable, or a firewall drops DNS)")]
    Timeout(Duration),
    /// Sending or receiving failed (e.g. ICMP port unreachable: nothing listens there).
    #[error("network error: {0}")]
    Network(String),
    /// The server did not accept the signature.
    #[error("the server rejected the TSIG signature: {rcode}/{tsig_error} ({hint})")]
    Tsig {
        /// The RCODE (usually NOTAUTH).
        rcode: String,
        /// BADSIG, BADKEY, BADTIME, ...
        tsig_error: String,
        /// What to check.
        hint: &'static str,
    },
    /// The server refused or failed the update.
    #[error("the server answered {rcode} ({hint})")]
    Rcode {
        /// REFUSED, NOTAUTH, NOTZONE, SERVFAIL, ...
        rcode: String,
        /// What it usually means.
        hint: &'static str,
    },
    /// Not sent: the server did not answer an earlier name of the same push.
    #[error("not sent: the server did not answer the update of an earlier name")]
    NotSent,
    /// A success that is not signed with our key: not trusted.
    #[error("the answer's TSIG signature does not verify: {0}")]
    BadResponse(String),
}

/// Makes the target's A and AAAA records of each `NAME.ZONE` equal to
/// `records`: per name, one signed update message deleting both RRsets and
/// adding the new records (atomic at the server). Names are updated one after
/// another, each within `target.timeout`; every failure is returned, with the
/// server, zone, name and the server's RCODE/TSIG error when it answered.
/// Once an update times out (or fails on the network), the names after it
/// are not sent ([`NameErrorKind::NotSent`]).
pub async fn push(target: &PushTarget, records: &[PushRecord]) -> Result<(), PushError> {
    let invalid = |reason: String| PushError::InvalidTarget {
        server: target.server,
        zone: target.zone.clone(),
        reason,
    };
    let mut zone = Name::from_ascii(&target.zone).map_err(|e| invalid(format!("invalid zone name: {e}")))?;
    zone.set_fqdn(true);
    let zone = zone.to_lowercase();
    let key_name = Name::from_ascii(&target.key_name).map_err(|e| invalid(format!("invalid TSIG key name: {e}")))?;
    if target.key_secret.is_empty() {
        return Err(invalid("the TSIG key secret is empty".to_string()));
    }
    if target.timeout.is_zero() {
        return Err(invalid("the timeout is zero".to_string()));
    }
    let signer = TSigner::new(
        target.key_secret.clone(),
        target.algorithm.hickory(),
        key_name,
        TSIG_FUDGE,
    )
    .map_err(|e| invalid(format!("cannot use the TSIG key: {e}")))?;

    let mut errors = Vec::new();
    // After a timeout or a network error the server is taken as unreachable:
    // the other names are not sent, so a push takes at most one timeout more
    // than the answered updates.
    let mut unreachable = false;
    for record in records {
        let error = |name: String, kind| NameError {
            server: target.server,
            zone: zone.to_string(),
            name,
            kind,
        };
        let message = match update_message(&zone, record) {
            Ok(message) => message,
            Err(reason) => {
                errors.push(error(record.name.clone(), NameErrorKind::InvalidRecord(reason)));
                continue;
            }
        };
        let fqdn = message
            .updates()
            .first()
            .map(|r| r.name.to_string())
            .unwrap_or_default();
        if unreachable {
            errors.push(error(fqdn, NameErrorKind::NotSent));
            continue;
        }
        match exchange(target, &signer, message).await {
            Ok(()) => {
                tracing::debug!(server = %target.server, name = %fqdn, addrs = ?record.addrs, "DNS update applied")
            }
            Err(kind) => {
                unreachable = matches!(kind, NameErrorKind::Timeout(_) | NameErrorKind::Network(_));
                errors.push(error(fqdn, kind));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PushError::Names(errors))
    }
}

/// The update for one name: zone section `ZONE IN SOA`; updates: delete the
/// A RRset, delete the AAAA RRset, add each address.
fn update_message(zone: &Name, record: &PushRecord) -> Result<Message, String> {
    let relative = Name::from_ascii(&record.name).map_err(|e| format!("bad name {:?}: {e}", record.name))?;
    if relative.is_fqdn() || relative.num_labels() == 0 {
        return Err(format!(
            "name {:?} must be relative to the zone (e.g. \"web\")",
            record.name
        ));
    }
    let name = relative
        .append_domain(zone)
        .map_err(|e| format!("name {:?} does not fit under the zone: {e}", record.name))?;
    let ttl = u32::try_from(record.ttl.as_secs())
        .ok()
        .filter(|t| *t <= i32::MAX as u32)
        .ok_or_else(|| format!("TTL of {:?} is above 2^31-1 seconds", record.name))?;

    let mut message = Message::query();
    message.metadata.op_code = OpCode::Update;
    message.metadata.recursion_desired = false;
    let mut zone_query = Query::query(zone.clone(), RecordType::SOA);
    zone_query.set_query_class(DNSClass::IN);
    message.add_zone(zone_query);
    for rtype in [RecordType::A, RecordType::AAAA] {
        // RFC 2136 2.5.2: class ANY, TTL 0, no RDATA.
        let mut delete = Record::update0(name.clone(), 0, rtype);
        delete.dns_class = DNSClass::ANY;
        message.add_update(delete);
    }
    for addr in &record.addrs {
        let data = match addr {
            IpAddr::V4(a) => RData::A(A(*a)),
            IpAddr::V6(a) => RData::AAAA(AAAA(*a)),
        };
        message.add_update(Record::from_rdata(name.clone(), ttl, data));
    }
    Ok(message)
}

/// Signs and sends one update with hickory's client: over UDP, sent again
/// until answered or `target.timeout` passes; over TCP (signed and verified
/// by hickory, which picks the message ID there) when the answer is truncated.
async fn exchange(target: &PushTarget, signer: &TSigner, message: Message) -> Result<(), NameErrorKind> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| NameErrorKind::Network("the system clock is before 1970".to_string()))?
        .as_secs();
    let unsigned = message.clone();
    let mut signed = message;
    let mut verifier = signed
        .finalize(signer, now)
        .map_err(|e| NameErrorKind::InvalidRecord(format!("cannot sign the update: {e}")))?
        .ok_or_else(|| NameErrorKind::InvalidRecord("the update was not signed".to_string()))?;
    let failed = |e: NetError| match e {
        NetError::Timeout => NameErrorKind::Timeout(target.timeout),
        NetError::Proto(e) => NameErrorKind::InvalidRecord(format!("cannot encode the update: {e}")),
        e => NameErrorKind::Network(e.to_string()),
    };
    let resend_every = transport::retry_interval(target.timeout);
    let udp = transport::udp_client(target.server, target.timeout);
    let reply = transport::exchange(&udp, signed, resend_every).await.map_err(failed)?;
    if reply.metadata.truncation {
        let tcp = transport::tcp_client(target.server, target.timeout, Some(signer.clone()))
            .await
            .map_err(failed)?;
        let reply = transport::exchange(&tcp, unsigned, resend_every)
            .await
            .map_err(failed)?;
        return judge(&reply, || Ok(()));
    }
    if reply.metadata.message_type != MessageType::Response || reply.metadata.op_code != OpCode::Update {
        return Err(NameErrorKind::BadResponse(format!(
            "the answer is not an update response: {} {}",
            reply.metadata.message_type, reply.metadata.op_code
        )));
    }
    judge(&reply, || {
        verifier
            .verify(reply.as_buffer())
            .map(|_| ())
            .map_err(|e| NameErrorKind::BadResponse(e.to_string()))
    })
}

/// The outcome of an answer: a TSIG error, another RCODE, or a success whose
/// signature verifies.
fn judge(reply: &Message, verify: impl FnOnce() -> Result<(), NameErrorKind>) -> Result<(), NameErrorKind> {
    let rcode = reply.metadata.response_code;
    if let Some(error) = reply.signature().and_then(|sig| sig.data.error) {
        let (tsig_error, hint) = match error {
            TsigError::BadSig => ("BADSIG".to_string(), "wrong key secret or algorithm"),
            TsigError::BadKey => (
                "BADKEY".to_string(),
                "unknown key name or algorithm, or the key may not update this zone",
            ),
            TsigError::BadTime => ("BADTIME".to_string(), "the clocks differ by more than 300 s"),
            TsigError::BadTrunc => ("BADTRUNC".to_string(), "truncated MAC refused"),
            TsigError::Unknown(code) => (format!("TSIG error {code}"), "see the server's log"),
        };
        return Err(NameErrorKind::Tsig {
            rcode: rcode_name(rcode),
            tsig_error,
            hint,
        });
    }
    if rcode != ResponseCode::NoError {
        let hint = match u16::from(rcode) {
            5 => "the key is not allowed to update this zone, or updates are off",
            9 => "the server is not authoritative for the zone, or did not accept the key",
            10 => "the name is not in the zone",
            2 => "the server could not apply the update",
            1 => "the server could not parse the update",
            4 => "the server does not support dynamic updates",
            _ => "see the server's log",
        };
        return Err(NameErrorKind::Rcode {
            rcode: rcode_name(rcode),
            hint,
        });
    }
    if reply.signature().is_none() {
        return Err(NameErrorKind::BadResponse(
            "the success answer is not signed".to_string(),
        ));
    }
    verify()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> PushTarget {
        PushTarget {
            server: ([127, 0, 0, 1], 53).into(),
            zone: "Corp.Example".to_string(),
            key_name: "tandem-key.".to_string(),
            key_secret: b"very-secret-bytes".to_vec(),
            algorithm: TsigAlgorithmName::default(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn debug_redacts_the_secret() {
        let shown = format!("{:?}", target());
        assert!(
            !shown.contains("very-secret") && !shown.contains("118, 101, 114"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in [TsigAlgorithmName::HmacSha256, TsigAlgorithmName::HmacSha512] {
            assert_eq!(a.as_str().to_uppercase().parse::<TsigAlgorithmName>(), Ok(a));
        }
        assert!("hmac-md5".parse::<TsigAlgorithmName>().is_err());
    }

    #[test]
    fn message_deletes_both_rrsets_then_adds() {
        let zone = Name::from_ascii("corp.example.").unwrap_or_default();
        let record = PushRecord {
            name: "web".to_string(),
            ttl: Duration::from_secs(5),
            addrs: vec![
                [198, 18, 1, 1].into(),
                "2001:db8::1".parse().unwrap_or(IpAddr::from([0u8; 16])),
            ],
        };
        let m = update_message(&zone, &record).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.metadata.op_code, OpCode::Update);
        assert_eq!(m.zones().len(), 1);
        let ups: Vec<String> = m
            .updates()
            .iter()
            .map(|r| format!("{} {} {} {} {}", r.name, r.ttl, r.dns_class, r.record_type(), r.data))
            .collect();
        assert_eq!(
            ups,
            [
                "web.corp.example. 0 ANY A UPDATE",
                "web.corp.example. 0 ANY AAAA UPDATE",
                "web.corp.example. 5 IN A 198.18.1.1",
                "web.corp.example. 5 IN AAAA 2001:db8::1",
            ]
        );
    }

    #[test]
    fn bad_names_and_ttls_are_refused() {
        let zone = Name::from_ascii("corp.example.").unwrap_or_default();
        for (name, ttl) in [("web.", 1), ("", 1), ("a..b", 1), ("web", 1u64 << 31)] {
            let record = PushRecord {
                name: name.to_string(),
                ttl: Duration::from_secs(ttl),
                addrs: Vec::new(),
            };
            assert!(update_message(&zone, &record).is_err(), "{name:?} {ttl}");
        }
    }

    #[tokio::test]
    async fn invalid_targets_send_nothing() {
        let mut t = target();
        t.key_secret.clear();
        let e = push(&t, &[]).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("secret is empty") && e.contains("127.0.0.1:53"), "{e}");
        let mut t = target();
        t.zone = "a..b".to_string();
        assert!(matches!(push(&t, &[]).await, Err(PushError::InvalidTarget { .. })));
    }
}
