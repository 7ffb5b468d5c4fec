//! The zone: its input (pure data built by the agent from the replicated
//! state), validation, and the answers prepared for every name when the zone
//! is built.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::domain::Label;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// TTL of group-derived records when the caller has nothing better: short,
/// so that resolvers follow a failover within about a second.
pub const DEFAULT_GROUP_TTL: Duration = Duration::from_secs(1);
/// Negative-caching TTL (SOA MINIMUM, and the TTL of the SOA sent with
/// NODATA and NXDOMAIN answers) unless the input sets another.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// TTL of the SOA, the NS records and the name servers' addresses.
pub const INFRA_TTL: u32 = 300;
/// SOA timers for secondaries (seconds): refresh, retry, expire. Short,
/// because group records move on failover and we send no NOTIFY.
pub const SOA_REFRESH: i32 = 60;
/// See [`SOA_REFRESH`].
pub const SOA_RETRY: i32 = 10;
/// See [`SOA_REFRESH`].
pub const SOA_EXPIRE: i32 = 600;

const MAX_TTL: u64 = i32::MAX as u64;
const MAX_CNAME_CHAIN: usize = 8;

/// Everything the zone's content depends on, built by the agent from the
/// replicated state. Pure data: the same input gives the same [`Zone`], with
/// the same serial, on every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneInput {
    /// The zone's apex, absolute (`"svc.example."`); lowercased when built.
    pub zone: String,
    /// The SOA serial, taken as given. The agent sets it from the replicated
    /// state so that every node agrees: the Raft log index of the last
    /// change that altered this input, truncated to 32 bits (serial numbers
    /// compare with RFC 1982 arithmetic, so wrapping is fine). It must rise
    /// whenever the content changes; [`ZoneInput::same_content`] tells
    /// whether it did.
    pub serial: u32,
    /// Negative-caching TTL (SOA MINIMUM). Default 1 s.
    pub negative_ttl: Duration,
    /// Every node of the cluster: `ns-NAME.ZONE` NS records and their glue.
    pub nodes: Vec<ZoneNode>,
    /// Every service group; group-derived names are the dynamic ones.
    pub groups: Vec<ZoneGroup>,
    /// Fixed records from the configuration.
    pub static_records: Vec<StaticRecord>,
    /// Clients allowed to transfer the zone (AXFR, IXFR over TCP).
    pub allow_transfer: Vec<IpAddr>,
}

impl ZoneInput {
    /// An empty input for `zone` with serial 0 and default TTLs.
    pub fn new(zone: impl Into<String>) -> Self {
        ZoneInput {
            zone: zone.into(),
            serial: 0,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            nodes: Vec::new(),
            groups: Vec::new(),
            static_records: Vec::new(),
            allow_transfer: Vec::new(),
        }
    }

    /// Whether `other` describes the same zone content, serial aside: when
    /// it does, the agent may keep its current zone (and serial).
    pub fn same_content(&self, other: &ZoneInput) -> bool {
        let ZoneInput {
            zone,
            serial: _,
            negative_ttl,
            nodes,
            groups,
            static_records,
            allow_transfer,
        } = self;
        *zone == other.zone
            && *negative_ttl == other.negative_ttl
            && *nodes == other.nodes
            && *groups == other.groups
            && *static_records == other.static_records
            && *allow_transfer == other.allow_transfer
    }
}

/// A node of the cluster: name server `ns-NAME.ZONE` with these addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneNode {
    /// The node's name (a DNS label: lowercase letters, digits, `-`).
    pub name: String,
    /// Where the node answers DNS (A/AAAA glue of `ns-NAME.ZONE`).
    pub addrs: Vec<IpAddr>,
}

/// How a group runs: on one node at a time, or on several.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// One primary: `GROUP.ZONE` has the primary's service addresses.
    Exclusive,
    /// Runs on several nodes: `GROUP.ZONE` has one address set per node.
    Clone,
}

/// A service group and where it runs now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneGroup {
    /// The group's name (a DNS label); `GROUP.ZONE`.
    pub name: String,
    /// TTL of the group's records, whole seconds. Default 1 s.
    pub ttl: Duration,
    /// Exclusive or clone.
    pub kind: GroupKind,
    /// With a port: `_GROUP._tcp.ZONE SRV 0 0 PORT GROUP.ZONE.`
    pub port: Option<u16>,
    /// The nodes running the group (at most one for an exclusive group).
    /// Empty: not running, its names answer NODATA.
    pub active: Vec<ActiveNode>,
}

impl ZoneGroup {
    /// A group that is not running, with the default TTL and no port.
    pub fn new(name: impl Into<String>, kind: GroupKind) -> Self {
        ZoneGroup {
            name: name.into(),
            ttl: DEFAULT_GROUP_TTL,
            kind,
            port: None,
            active: Vec::new(),
        }
    }
}

/// A node where a group runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveNode {
    /// The node's name.
    pub node: String,
    /// The group's service addresses on that node.
    pub addrs: Vec<IpAddr>,
    /// The assignment's epoch (fencing token), shown in `_primary.GROUP.ZONE` TXT.
    pub epoch: u64,
}

/// A fixed record from the configuration, validated by [`StaticRecord::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticRecord {
    name: String,
    /// None: the apex.
    owner: Option<Name>,
    ttl: u32,
    rdata: RData,
}

impl StaticRecord {
    /// Parses a record. `name`: `"@"` for the apex, a name relative to the
    /// zone (`"www"`), or an absolute name inside the zone (`"www.svc.example."`).
    /// `rtype`: A, AAAA, CNAME, TXT, SRV or MX (any case). `data` in zone
    /// file syntax: `"10.0.0.1"`, `"web"` (CNAME target; relative names are
    /// relative to the zone), `"\"v=1\" \"two\""` or `"plain text"` (TXT),
    /// `"10 5 443 web"` (SRV), `"10 mail"` (MX).
    pub fn new(name: &str, ttl: Duration, rtype: &str, data: &str) -> Result<StaticRecord, ZoneError> {
        let err = |reason: String| ZoneError::InvalidStatic {
            name: name.to_string(),
            rtype: rtype.to_string(),
            data: data.to_string(),
            reason,
        };
        let owner = if name == "@" {
            None
        } else {
            let owner = Name::from_ascii(name).map_err(|e| err(format!("bad name: {e}")))?;
            if owner.num_labels() == 0 || !owner.iter().all(static_label_ok) {
                return Err(err("labels must be letters, digits, '-' or '_'".to_string()));
            }
            Some(owner.to_lowercase())
        };
        let ttl = ttl_secs(ttl).ok_or_else(|| err("TTL above 2^31-1 seconds".to_string()))?;
        let rtype_upper = rtype.to_ascii_uppercase();
        let record_type = match rtype_upper.as_str() {
            "A" => RecordType::A,
            "AAAA" => RecordType::AAAA,
            "CNAME" => RecordType::CNAME,
            "TXT" => RecordType::TXT,
            "SRV" => RecordType::SRV,
            "MX" => RecordType::MX,
            _ => return Err(err("type must be A, AAAA, CNAME, TXT, SRV or MX".to_string())),
        };
        let rdata = if record_type == RecordType::TXT && !data.trim_start().starts_with('"') {
            // Plain text: one string, split into character-strings of 255 bytes.
            let chunks = data
                .as_bytes()
                .chunks(255)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>();
            RData::TXT(TXT::new(if chunks.is_empty() { vec![String::new()] } else { chunks }))
        } else {
            RData::try_from_str(record_type, data).map_err(|e| err(e.to_string()))?
        };
        Ok(StaticRecord {
            name: name.to_string(),
            owner,
            ttl,
            rdata,
        })
    }

    /// The name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TTL in seconds.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// The record type.
    pub fn record_type(&self) -> RecordType {
        self.rdata.record_type()
    }

    /// The parsed data, in presentation format.
    pub fn data(&self) -> String {
        presentation(&self.rdata)
    }
}

/// Record data in zone file syntax; TXT strings quoted and escaped
/// (hickory's `Display` runs them together).
fn presentation(data: &RData) -> String {
    match data {
        RData::TXT(txt) => {
            let mut out = String::new();
            for (i, s) in txt.txt_data.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push('"');
                for b in s.iter() {
                    match *b {
                        b'"' | b'\\' => {
                            out.push('\\');
                            out.push(char::from(*b));
                        }
                        0x20..=0x7E => out.push(char::from(*b)),
                        other => out.push_str(&format!("\\{other:03}")),
                    }
                }
                out.push('"');
            }
            out
        }
        other => other.to_string(),
    }
}

fn static_label_ok(label: &[u8]) -> bool {
    label
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// Why a zone could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZoneError {
    /// The apex is not an absolute domain name.
    #[error("invalid zone name {zone:?}: {reason}")]
    InvalidZoneName {
        /// As given.
        zone: String,
        /// What is wrong.
        reason: String,
    },
    /// A node, group or active node name is not a DNS label.
    #[error(
        "invalid {what} name {name:?}: expected 1 to 60 lowercase letters, digits or '-', not starting or ending with '-'"
    )]
    InvalidLabel {
        /// "node", "group" or "active node".
        what: &'static str,
        /// As given.
        name: String,
    },
    /// A static record does not parse.
    #[error("invalid static record {name} {rtype} {data:?}: {reason}")]
    InvalidStatic {
        /// As given.
        name: String,
        /// As given.
        rtype: String,
        /// As given.
        data: String,
        /// What is wrong.
        reason: String,
    },
    /// Two things claim one name.
    #[error("name {name} is used twice: by {first} and by {second}")]
    NameClash {
        /// The name.
        name: String,
        /// The first user.
        first: String,
        /// The second user.
        second: String,
    },
    /// A static name is outside the zone.
    #[error("static record {name} is outside the zone {zone}")]
    OutsideZone {
        /// The name.
        name: String,
        /// The apex.
        zone: String,
    },
    /// A CNAME shares its name with other data, sits at the apex, or loops.
    #[error("CNAME at {name}: {reason}")]
    BadCname {
        /// The owner.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An exclusive group is active on several nodes.
    #[error("exclusive group {group} is active on {count} nodes")]
    ExclusiveOnSeveralNodes {
        /// The group.
        group: String,
        /// How many.
        count: usize,
    },
    /// A TTL does not fit (2^31-1 seconds at most).
    #[error("TTL of {what} is above 2^31-1 seconds")]
    TtlTooLarge {
        /// Whose.
        what: String,
    },
    /// An answer does not fit in a DNS message (64 KiB).
    #[error("the answer for {name} {rtype} does not fit in a DNS message: {reason}")]
    AnswerTooLarge {
        /// The name.
        name: String,
        /// The type.
        rtype: String,
        /// The encoder's error.
        reason: String,
    },
}

fn ttl_secs(d: Duration) -> Option<u32> {
    let s = d.as_secs();
    if s > MAX_TTL { None } else { u32::try_from(s).ok() }
}

/// Whether `name` is fit for a node or group: a DNS label (as tandem-core's
/// `valid_name`), short enough for `ns-NAME`.
pub(crate) fn valid_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 60
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// FNV-1a, for the name table: keys are short, the table is fixed once
/// built (no insertion by clients), so a keyed hash buys nothing here.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// The records of one answer, as hickory records (slow path, transfers).
#[derive(Debug, Default)]
pub(crate) struct Sections {
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
}

/// One prepared answer: the sections after the question, pre-encoded with
/// names compressed against the question (whose length is fixed per name).
#[derive(Debug)]
pub(crate) struct Prepared {
    pub rcode: ResponseCode,
    pub aa: bool,
    /// Depends on group state: answered only while the lease is valid.
    pub dynamic: bool,
    pub an: u16,
    pub ns: u16,
    pub ar: u16,
    /// Answer, authority and additional sections, wire format.
    pub body: Box<[u8]>,
    /// Length of `body` without the additional section (it comes last).
    pub noadd_len: usize,
    pub sections: Arc<Sections>,
}

#[derive(Debug)]
pub(crate) struct NameEntry {
    by_type: Vec<(u16, Prepared)>,
    other: Prepared,
}

impl NameEntry {
    #[inline]
    pub fn lookup(&self, qtype: u16) -> &Prepared {
        for (t, p) in &self.by_type {
            if *t == qtype {
                return p;
            }
        }
        &self.other
    }
}

/// A built zone: every answer prepared. Cheap to share (`Arc<Zone>`), swapped
/// whole through a `watch` channel when the input changes.
#[derive(Debug)]
pub struct Zone {
    apex: Name,
    apex_wire: Box<[u8]>,
    serial: u32,
    names: HashMap<Box<[u8]>, NameEntry, BuildHasherDefault<Fnv>>,
    /// NXDOMAIN answers by question name length (pointers depend on it).
    nx_by_len: Vec<Option<Prepared>>,
    soa: Record,
    /// Every record but the SOA, in transfer order.
    records: Vec<Record>,
    allow_transfer: Vec<IpAddr>,
}

/// Where a name comes from, for clash messages and rules.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
    Apex,
    NodeNs(String),
    Group(String),
    Static,
    Ent,
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::Apex => "the zone apex".to_string(),
            Origin::NodeNs(n) => format!("node {n}"),
            Origin::Group(g) => format!("group {g}"),
            Origin::Static => "a static record".to_string(),
            Origin::Ent => "an empty non-terminal".to_string(),
        }
    }
}

#[derive(Debug)]
struct Draft {
    origin: Origin,
    dynamic: bool,
    rrsets: BTreeMap<RecordType, Vec<Record>>,
}

/// The lowercase wire form of a name: the key of the name table.
pub(crate) fn wire_key(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

impl Zone {
    /// Validates the input and prepares every answer.
    pub fn build(input: &ZoneInput) -> Result<Zone, ZoneError> {
        Builder::new(input)?.build()
    }

    /// The SOA serial (as in the input).
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The apex, lowercase and absolute (`"svc.example."`).
    pub fn origin(&self) -> String {
        self.apex.to_ascii()
    }

    /// Every record, in transfer order (SOA first): name, TTL, type, data,
    /// in presentation format, for `tandem dns`.
    pub fn records(&self) -> Vec<(String, u32, String, String)> {
        std::iter::once(&self.soa)
            .chain(self.records.iter())
            .map(|r| {
                (
                    r.name.to_ascii(),
                    r.ttl,
                    r.record_type().to_string(),
                    presentation(&r.data),
                )
            })
            .collect()
    }

    pub(crate) fn lookup(&self, key: &[u8]) -> Option<&NameEntry> {
        self.names.get(key)
    }

    /// Whether the lowercase wire name `key` is at or below the apex.
    pub(crate) fn in_zone(&self, key: &[u8]) -> bool {
        let Some(start) = key.len().checked_sub(self.apex_wire.len()) else {
            return false;
        };
        if key.get(start..) != Some(&self.apex_wire[..]) {
            return false;
        }
        // The suffix must start at a label boundary.
        let mut pos = 0;
        while pos < start {
            match key.get(pos) {
                Some(len) => pos += 1 + usize::from(*len),
                None => return false,
            }
        }
        pos == start
    }

    pub(crate) fn nx(&self, qname_len: usize) -> Option<&Prepared> {
        self.nx_by_len.get(qname_len).and_then(Option::as_ref)
    }

    pub(crate) fn transfer_allowed(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.allow_transfer.contains(&client)
    }

    pub(crate) fn soa(&self) -> &Record {
        &self.soa
    }

    pub(crate) fn transfer_records(&self) -> &[Record] {
        &self.records
    }
}

struct Builder {
    apex: Name,
    serial: u32,
    negative_ttl: u32,
    soa: Record,
    drafts: BTreeMap<Name, Draft>,
    allow_transfer: Vec<IpAddr>,
}

fn name_under(label: &str, parent: &Name) -> Result<Name, ZoneError> {
    Name::from_ascii(label)
        .and_then(|n| n.append_domain(parent))
        .map_err(|e| ZoneError::InvalidZoneName {
            zone: parent.to_ascii(),
            reason: format!("{label}.{parent}: {e}"),
        })
}

fn addr_record(name: &Name, ttl: u32, addr: IpAddr) -> Record {
    let data = match addr {
        IpAddr::V4(a) => RData::A(A(a)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => RData::A(A(v4)),
            None => RData::AAAA(AAAA(a)),
        },
    };
    Record::from_rdata(name.clone(), ttl, data)
}

impl Builder {
    fn new(input: &ZoneInput) -> Result<Builder, ZoneError> {
        let bad_zone = |reason: String| ZoneError::InvalidZoneName {
            zone: input.zone.clone(),
            reason,
        };
        let apex = Name::from_ascii(&input.zone)
            .map_err(|e| bad_zone(e.to_string()))?
            .to_lowercase();
        if !apex.is_fqdn() || !input.zone.ends_with('.') {
            return Err(bad_zone("must be absolute (end with '.')".to_string()));
        }
        let negative_ttl = ttl_secs(input.negative_ttl).ok_or_else(|| ZoneError::TtlTooLarge {
            what: "the negative TTL".to_string(),
        })?;
        let mut nodes: Vec<&ZoneNode> = input.nodes.iter().collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mname = match nodes.first() {
            Some(n) => name_under(&format!("ns-{}", n.name), &apex)?,
            None => apex.clone(),
        };
        let rname = name_under("hostmaster", &apex)?;
        let soa = Record::from_rdata(
            apex.clone(),
            INFRA_TTL,
            RData::SOA(SOA::new(
                mname,
                rname,
                input.serial,
                SOA_REFRESH,
                SOA_RETRY,
                SOA_EXPIRE,
                negative_ttl,
            )),
        );
        let mut b = Builder {
            apex,
            serial: input.serial,
            negative_ttl,
            soa,
            drafts: BTreeMap::new(),
            allow_transfer: input.allow_transfer.iter().map(|a| a.to_canonical()).collect(),
        };
        b.claim(&b.apex.clone(), Origin::Apex, false)?;
        b.add(b.soa.clone());
        for node in &nodes {
            if !valid_label(&node.name) {
                return Err(ZoneError::InvalidLabel {
                    what: "node",
                    name: node.name.clone(),
                });
            }
            let ns_name = name_under(&format!("ns-{}", node.name), &b.apex)?;
            b.claim(&ns_name, Origin::NodeNs(node.name.clone()), false)?;
            b.add(Record::from_rdata(
                b.apex.clone(),
                INFRA_TTL,
                RData::NS(NS(ns_name.clone())),
            ));
            for addr in &node.addrs {
                b.add(addr_record(&ns_name, INFRA_TTL, *addr));
            }
        }
        for group in &input.groups {
            b.add_group(group)?;
        }
        for record in &input.static_records {
            b.add_static(record)?;
        }
        Ok(b)
    }

    /// Registers `name` for `origin`; a name has one origin, except that
    /// static records may sit at the apex and share names with each other.
    fn claim(&mut self, name: &Name, origin: Origin, dynamic: bool) -> Result<(), ZoneError> {
        if let Some(d) = self.drafts.get(name) {
            let ok = origin == Origin::Static && matches!(d.origin, Origin::Static | Origin::Apex);
            if !ok {
                return Err(ZoneError::NameClash {
                    name: name.to_ascii(),
                    first: d.origin.describe(),
                    second: origin.describe(),
                });
            }
            return Ok(());
        }
        self.drafts.insert(
            name.clone(),
            Draft {
                origin,
                dynamic,
                rrsets: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// Adds a record to a claimed name, without duplicates.
    fn add(&mut self, record: Record) {
        if let Some(d) = self.drafts.get_mut(&record.name) {
            let set = d.rrsets.entry(record.record_type()).or_default();
            if !set.iter().any(|r| r.data == record.data) {
                set.push(record);
            }
        }
    }

    fn add_group(&mut self, g: &ZoneGroup) -> Result<(), ZoneError> {
        if !valid_label(&g.name) {
            return Err(ZoneError::InvalidLabel {
                what: "group",
                name: g.name.clone(),
            });
        }
        let ttl = ttl_secs(g.ttl).ok_or_else(|| ZoneError::TtlTooLarge {
            what: format!("group {}", g.name),
        })?;
        if g.kind == GroupKind::Exclusive && g.active.len() > 1 {
            return Err(ZoneError::ExclusiveOnSeveralNodes {
                group: g.name.clone(),
                count: g.active.len(),
            });
        }
        for a in &g.active {
            if !valid_label(&a.node) {
                return Err(ZoneError::InvalidLabel {
                    what: "active node",
                    name: a.node.clone(),
                });
            }
        }
        let origin = Origin::Group(g.name.clone());
        let name = name_under(&g.name, &self.apex)?;
        let primary = name_under("_primary", &name)?;
        self.claim(&name, origin.clone(), true)?;
        self.claim(&primary, origin.clone(), true)?;
        let addrs: BTreeSet<IpAddr> = g
            .active
            .iter()
            .flat_map(|a| a.addrs.iter().map(|x| x.to_canonical()))
            .collect();
        for addr in addrs {
            self.add(addr_record(&name, ttl, addr));
        }
        let mut active: Vec<&ActiveNode> = g.active.iter().collect();
        active.sort_by(|a, b| a.node.cmp(&b.node));
        for a in active {
            let text = format!("node={} epoch={}", a.node, a.epoch);
            self.add(Record::from_rdata(
                primary.clone(),
                ttl,
                RData::TXT(TXT::new(vec![text])),
            ));
        }
        if let Some(port) = g.port {
            let srv = name_under(&format!("_{}._tcp", g.name), &self.apex)?;
            self.claim(&srv, origin, true)?;
            if !g.active.is_empty() {
                self.add(Record::from_rdata(srv, ttl, RData::SRV(SRV::new(0, 0, port, name))));
            }
        }
        Ok(())
    }

    /// `name` made absolute (relative names are relative to the apex) and lowercase.
    fn absolute(&self, name: &Name) -> Result<Name, ZoneError> {
        if name.is_fqdn() {
            return Ok(name.to_lowercase());
        }
        name.to_lowercase()
            .append_domain(&self.apex)
            .map_err(|e| ZoneError::OutsideZone {
                name: format!("{name} ({e})"),
                zone: self.apex.to_ascii(),
            })
    }

    fn add_static(&mut self, s: &StaticRecord) -> Result<(), ZoneError> {
        let owner = match &s.owner {
            None => self.apex.clone(),
            Some(owner) => self.absolute(owner)?,
        };
        if !self.apex.zone_of(&owner) {
            return Err(ZoneError::OutsideZone {
                name: owner.to_ascii(),
                zone: self.apex.to_ascii(),
            });
        }
        let rdata = match &s.rdata {
            RData::CNAME(CNAME(t)) => RData::CNAME(CNAME(self.absolute(t)?)),
            RData::MX(mx) => RData::MX(hickory_proto::rr::rdata::MX::new(
                mx.preference,
                self.absolute(&mx.exchange)?,
            )),
            RData::SRV(srv) => RData::SRV(SRV::new(
                srv.priority,
                srv.weight,
                srv.port,
                self.absolute(&srv.target)?,
            )),
            other => other.clone(),
        };
        self.claim(&owner, Origin::Static, false)?;
        self.add(Record::from_rdata(owner, s.ttl, rdata));
        Ok(())
    }

    fn check_rrsets(&mut self) -> Result<(), ZoneError> {
        for (name, d) in &mut self.drafts {
            if let Some(cnames) = d.rrsets.get(&RecordType::CNAME) {
                let reason = if d.origin == Origin::Apex {
                    Some("a CNAME cannot sit at the zone apex")
                } else if d.rrsets.len() > 1 {
                    Some("a CNAME cannot share its name with other records")
                } else if cnames.len() > 1 {
                    Some("only one CNAME per name")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(ZoneError::BadCname {
                        name: name.to_ascii(),
                        reason: reason.to_string(),
                    });
                }
            }
            // RFC 2181 5.2: one TTL per RRset; take the smallest.
            for set in d.rrsets.values_mut() {
                if let Some(min) = set.iter().map(|r| r.ttl).min() {
                    set.iter_mut().for_each(|r| r.ttl = min);
                }
            }
        }
        Ok(())
    }

    /// Empty non-terminals: names between a record's owner and the apex.
    /// Dynamic when every name below is.
    fn add_ents(&mut self) {
        let owners: Vec<(Name, bool)> = self.drafts.iter().map(|(n, d)| (n.clone(), d.dynamic)).collect();
        for (name, dynamic) in owners {
            let mut cur = name.base_name();
            while cur.num_labels() > self.apex.num_labels() {
                match self.drafts.get_mut(&cur) {
                    Some(d) if d.origin == Origin::Ent => d.dynamic &= dynamic,
                    Some(_) => {}
                    None => {
                        self.drafts.insert(
                            cur.clone(),
                            Draft {
                                origin: Origin::Ent,
                                dynamic,
                                rrsets: BTreeMap::new(),
                            },
                        );
                    }
                }
                cur = cur.base_name();
            }
        }
    }

    fn negative_soa(&self) -> Record {
        let mut soa = self.soa.clone();
        soa.ttl = soa.ttl.min(self.negative_ttl);
        soa
    }

    /// Resolves `name`/`qtype` over the drafts (following in-zone CNAMEs).
    fn resolve(&self, name: &Name, qtype: RecordType) -> Result<(ResponseCode, bool, Sections), ZoneError> {
        let mut sections = Sections::default();
        let mut dynamic = false;
        let mut cur = name.clone();
        let mut rcode = ResponseCode::NoError;
        for _ in 0..MAX_CNAME_CHAIN {
            let Some(d) = self.drafts.get(&cur) else {
                rcode = ResponseCode::NXDomain;
                sections.authority.push(self.negative_soa());
                break;
            };
            dynamic |= d.dynamic;
            if let (Some(cname), true) = (d.rrsets.get(&RecordType::CNAME), qtype != RecordType::CNAME) {
                sections.answers.extend(cname.iter().cloned());
                let Some(RData::CNAME(CNAME(target))) = cname.first().map(|r| &r.data) else {
                    break;
                };
                if !self.apex.zone_of(target) {
                    break;
                }
                cur = target.clone();
                continue;
            }
            let before = sections.answers.len();
            if qtype == RecordType::ANY {
                sections.answers.extend(d.rrsets.values().flatten().cloned());
            } else if let Some(set) = d.rrsets.get(&qtype) {
                sections.answers.extend(set.iter().cloned());
            }
            if sections.answers.len() == before {
                sections.authority.push(self.negative_soa());
            }
            break;
        }
        // Additional data: addresses of in-zone targets (dynamic ones only
        // in answers that are dynamic anyway).
        let mut targets: Vec<Name> = Vec::new();
        for r in &sections.answers {
            match &r.data {
                RData::NS(NS(t)) => targets.push(t.clone()),
                RData::MX(mx) => targets.push(mx.exchange.clone()),
                RData::SRV(srv) => targets.push(srv.target.clone()),
                _ => {}
            }
        }
        for t in targets {
            if let Some(d) = self.drafts.get(&t.to_lowercase())
                && (dynamic || !d.dynamic)
            {
                for rt in [RecordType::A, RecordType::AAAA] {
                    for r in d.rrsets.get(&rt).into_iter().flatten() {
                        if !sections.additional.contains(r) {
                            sections.additional.push(r.clone());
                        }
                    }
                }
            }
        }
        Ok((rcode, dynamic, sections))
    }

    fn prepare(
        &self,
        qname: &Name,
        qtype: RecordType,
        rcode: ResponseCode,
        dynamic: bool,
        sections: Sections,
    ) -> Result<Prepared, ZoneError> {
        let too_large = |e: hickory_proto::ProtoError| ZoneError::AnswerTooLarge {
            name: qname.to_ascii(),
            rtype: qtype.to_string(),
            reason: e.to_string(),
        };
        let mut msg = Message::response(0, OpCode::Query);
        msg.add_query(Query::query(qname.clone(), RecordType::A));
        msg.answers = sections.answers.clone();
        msg.authorities = sections.authority.clone();
        let noadd = msg.to_vec().map_err(too_large)?;
        msg.additionals = sections.additional.clone();
        let full = msg.to_vec().map_err(too_large)?;
        let start = 12 + wire_key(qname).len() + 4;
        let counts = |at: usize| {
            full.get(at..at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .unwrap_or(0)
        };
        let (an, ns, ar) = (counts(6), counts(8), counts(10));
        if usize::from(an) != sections.answers.len()
            || usize::from(ns) != sections.authority.len()
            || usize::from(ar) != sections.additional.len()
            || full.get(start..noadd.len()) != noadd.get(start..)
        {
            return Err(ZoneError::AnswerTooLarge {
                name: qname.to_ascii(),
                rtype: qtype.to_string(),
                reason: "records were left out when encoding".to_string(),
            });
        }
        Ok(Prepared {
            rcode,
            aa: true,
            dynamic,
            an,
            ns,
            ar,
            body: full.get(start..).unwrap_or_default().into(),
            noadd_len: noadd.len().saturating_sub(start),
            sections: Arc::new(sections),
        })
    }

    fn build(mut self) -> Result<Zone, ZoneError> {
        self.check_rrsets()?;
        self.check_cname_loops()?;
        self.add_ents();
        let mut names = HashMap::with_capacity_and_hasher(self.drafts.len(), BuildHasherDefault::<Fnv>::default());
        for (name, d) in &self.drafts {
            // Types with data here or at the end of a CNAME chain, and ANY.
            let mut types: BTreeSet<RecordType> = d.rrsets.keys().copied().collect();
            if let Some(target) = self.cname_chain_end(name) {
                types.extend(target.rrsets.keys().copied());
                types.insert(RecordType::CNAME);
            }
            types.insert(RecordType::ANY);
            let mut by_type = Vec::with_capacity(types.len());
            for t in types {
                let (rcode, dynamic, sections) = self.resolve(name, t)?;
                by_type.push((u16::from(t), self.prepare(name, t, rcode, dynamic, sections)?));
            }
            // Any other type: resolved as a type nobody has (NULL).
            let (rcode, dynamic, sections) = self.resolve(name, RecordType::NULL)?;
            let other = self.prepare(name, RecordType::NULL, rcode, dynamic, sections)?;
            names.insert(wire_key(name).into_boxed_slice(), NameEntry { by_type, other });
        }
        let nx_by_len = self.nx_answers()?;
        let apex_wire = wire_key(&self.apex).into_boxed_slice();
        let records = self
            .drafts
            .values()
            .flat_map(|d| d.rrsets.values().flatten())
            .filter(|r| r.record_type() != RecordType::SOA)
            .cloned()
            .collect();
        Ok(Zone {
            apex: self.apex,
            apex_wire,
            serial: self.serial,
            names,
            nx_by_len,
            soa: self.soa,
            records,
            allow_transfer: self.allow_transfer,
        })
    }

    fn cname_chain_end(&self, name: &Name) -> Option<&Draft> {
        let mut cur = self.drafts.get(name)?;
        let mut seen = 0;
        while let Some(RData::CNAME(CNAME(t))) = cur.rrsets.get(&RecordType::CNAME)?.first().map(|r| &r.data) {
            seen += 1;
            if seen > MAX_CNAME_CHAIN {
                return None;
            }
            match self.drafts.get(t) {
                Some(next) => cur = next,
                None => return None,
            }
            if !cur.rrsets.contains_key(&RecordType::CNAME) {
                return Some(cur);
            }
        }
        None
    }

    fn check_cname_loops(&self) -> Result<(), ZoneError> {
        for (name, d) in &self.drafts {
            if !d.rrsets.contains_key(&RecordType::CNAME) {
                continue;
            }
            let mut cur = name.clone();
            let mut steps = 0;
            while let Some(RData::CNAME(CNAME(t))) = self
                .drafts
                .get(&cur)
                .and_then(|d| d.rrsets.get(&RecordType::CNAME))
                .and_then(|s| s.first())
                .map(|r| &r.data)
            {
                steps += 1;
                if steps > MAX_CNAME_CHAIN {
                    return Err(ZoneError::BadCname {
                        name: name.to_ascii(),
                        reason: format!("the chain loops or is longer than {MAX_CNAME_CHAIN}"),
                    });
                }
                cur = t.to_lowercase();
            }
        }
        Ok(())
    }

    /// NXDOMAIN answers for every question name length: the SOA in the
    /// authority section is compressed against the apex at the end of the
    /// question, whose offset depends only on the name's length. The stand-in
    /// names use labels of 0xFF bytes, which no zone name contains, so no
    /// pointer can land inside them.
    fn nx_answers(&self) -> Result<Vec<Option<Prepared>>, ZoneError> {
        let apex_len = wire_key(&self.apex).len();
        let mut out = Vec::with_capacity(256);
        for len in 0..=255usize {
            if len < apex_len + 2 {
                out.push(None);
                continue;
            }
            let mut extra = len - apex_len;
            let mut labels = Vec::new();
            while extra > 0 {
                let mut n = 63.min(extra - 1);
                if extra - (n + 1) == 1 {
                    n -= 1;
                }
                labels.push(
                    Label::from_raw_bytes(&vec![0xFF; n]).map_err(|e| ZoneError::InvalidZoneName {
                        zone: self.apex.to_ascii(),
                        reason: e.to_string(),
                    })?,
                );
                extra -= n + 1;
            }
            let fake = Name::from_labels(labels)
                .and_then(|n| n.append_domain(&self.apex))
                .map_err(|e| ZoneError::InvalidZoneName {
                    zone: self.apex.to_ascii(),
                    reason: e.to_string(),
                })?;
            let sections = Sections {
                authority: vec![self.negative_soa()],
                ..Sections::default()
            };
            let mut p = self.prepare(&fake, RecordType::A, ResponseCode::NXDomain, true, sections)?;
            p.dynamic = true;
            out.push(Some(p));
        }
        Ok(out)
    }
}
