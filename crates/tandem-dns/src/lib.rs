//! Tandem's authoritative DNS responder (DESIGN invariant 5: no stale answers).
//!
//! The agent builds a [`ZoneInput`] from the replicated state, turns it into
//! a [`Zone`] (every answer prepared, [`Zone::build`]), publishes it on a
//! `watch` channel, and runs a [`Responder`] that serves it over UDP and TCP.
//!
//! # Names
//!
//! - `ZONE`: SOA (serial from the input; MNAME `ns-FIRST.ZONE`, RNAME
//!   `hostmaster.ZONE`) and one NS `ns-NODE.ZONE` per node, with A/AAAA glue.
//! - `GROUP.ZONE`: A/AAAA of the primary's service addresses (exclusive
//!   group) or of every active node (clone group).
//! - `_primary.GROUP.ZONE`: TXT `"node=NAME epoch=N"`, one per active node.
//! - `_GROUP._tcp.ZONE` (groups with a port): `SRV 0 0 PORT GROUP.ZONE.`,
//!   with the addresses in the additional section.
//! - Static records (A, AAAA, CNAME, TXT, SRV, MX) from the configuration;
//!   in-zone CNAMEs are followed.
//!
//! # Behaviour
//!
//! - Authoritative only: AA set, RA clear, REFUSED for names outside the
//!   zone and for classes other than IN; NXDOMAIN and NODATA carry the SOA
//!   (TTL = the negative TTL) in the authority section. A group that is not
//!   running has its names but no data: NODATA.
//! - Dynamic (group-derived) answers, NXDOMAIN, and transfers are given only
//!   while the [`LeaseCheck`] says the node holds a lease; otherwise
//!   SERVFAIL, so resolvers ask another node. The SOA, NS, the name servers'
//!   addresses and static records are always answered.
//! - AXFR (and IXFR, answered in full) over TCP, only to `allow_transfer`
//!   clients; REFUSED to others; an allowed client asking over UDP gets TC.
//! - EDNS(0): an OPT in the answer when the query had one (payload
//!   [`DnsConfig::max_udp_payload`], DO copied), BADVERS for versions above 0.
//!   UDP answers fit the client's payload size (512 without EDNS): the
//!   additional section is dropped first, then the answer is truncated (TC)
//!   and the client retries over TCP.
//! - The question is echoed exactly as asked (0x20 case randomisation works).
//! - Malformed queries: FORMERR when the header is readable, dropped when
//!   it is not or when the packet is a response; other opcodes: NOTIMP.
//! - Rate limit per client over UDP (optional): see [`DnsConfig::rate_limit_per_sec`].
//! - ANY is answered with every RRset at the name (the zone is small; over
//!   UDP the size limit applies as for any answer).
//!
//! # Serving
//!
//! [`Responder`] runs hickory-server's `Server` with [`DnsHandler`], Tandem's
//! `RequestHandler`, on a tokio runtime of its own (its own threads), so a
//! flood of queries never delays Raft or the executor. hickory-server owns
//! the sockets (a UDP loop per `SO_REUSEPORT` socket, the TCP accept loop
//! with its connection cap, framing, idle timeouts, graceful shutdown); every
//! message goes, unparsed, to [`DnsHandler`] (hickory-server's raw hook, a
//! patch of ours until a release has it: `vendor/README.md`), which rate
//! limits, answers with [`respond`] and counts, and hickory sends the bytes
//! as they are. hickory logs nothing per query on that path.
//!
//! # Speed
//!
//! Answers are prepared per (lowercased name, type) when the zone is built,
//! pre-encoded with owner names as pointers to the question; a query costs a
//! hand parse of the header and question, one hash lookup and a copy.
//! `examples/dnsperf_vs_knot.rs` compares it with Knot DNS.

pub mod client;
mod handler;
mod query;
mod ratelimit;
mod server;
mod stats;
mod transport;
pub mod update;
mod zone;

use std::sync::Arc;

pub use handler::DnsHandler;
pub use query::{DEFAULT_MAX_UDP_PAYLOAD, Outcome, QueryContext, Transport, respond, respond_reference};
pub use server::{DnsConfig, Responder};
pub use stats::{RCODE_SLOTS, Stats, StatsSnapshot};
pub use zone::{
    ActiveNode, DEFAULT_GROUP_TTL, DEFAULT_NEGATIVE_TTL, GroupKind, INFRA_TTL, SOA_EXPIRE, SOA_REFRESH, SOA_RETRY,
    StaticRecord, Zone, ZoneError, ZoneGroup, ZoneInput, ZoneNode,
};

/// Whether this node may answer dynamic names now: it holds a valid lease
/// (and has applied the log far enough). Called on the query path for every
/// dynamic answer, so it must be cheap (e.g. compare `Instant::now()` with a
/// deadline kept in an atomic or a `watch`).
#[derive(Clone)]
pub struct LeaseCheck(Arc<dyn Fn() -> bool + Send + Sync>);

impl LeaseCheck {
    /// A check calling `f`.
    pub fn new(f: impl Fn() -> bool + Send + Sync + 'static) -> LeaseCheck {
        LeaseCheck(Arc::new(f))
    }

    /// Always valid (tests, benchmarks).
    pub fn always() -> LeaseCheck {
        LeaseCheck::new(|| true)
    }

    /// Whether the lease is valid now.
    #[inline]
    pub fn is_valid(&self) -> bool {
        (self.0)()
    }
}

impl std::fmt::Debug for LeaseCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LeaseCheck").field(&self.is_valid()).finish()
    }
}
