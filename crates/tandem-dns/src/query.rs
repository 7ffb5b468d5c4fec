//! Answering one query: a pure function from (zone, query bytes, context) to
//! response bytes.
//!
//! The fast path handles the common case (one question, opcode QUERY, at
//! most an OPT record) without allocating: it parses the header and the
//! question by hand, looks the lowercased name up in the zone's table of
//! prepared answers, and writes the ID, flags, the question exactly as asked
//! and the pre-encoded sections, whose owner names point at the question.
//! Everything else (and everything the fast parser does not like) goes to
//! the reference path, which parses and encodes with hickory-proto; the two
//! agree on every query the fast path takes (a property test checks it).

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use tracing::debug;

use crate::LeaseCheck;
use crate::zone::{Prepared, Sections, Zone, wire_key};

/// UDP payload size we advertise and use at most (the DNS flag day 2020 value).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;
/// Payload size without EDNS (RFC 1035).
const PLAIN_UDP: usize = 512;
/// Size of one AXFR message we aim for (well under 64 KiB).
const TRANSFER_CHUNK: usize = 16 * 1024;

const TYPE_OPT: u16 = 41;
const TYPE_IXFR: u16 = 251;
const TYPE_AXFR: u16 = 252;
const CLASS_IN: u16 = 1;
const RCODE_BADVERS: u16 = 16;

/// How the query came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: answers are limited to the payload size, truncated with TC.
    Udp,
    /// TCP: answers up to 64 KiB, zone transfers.
    Tcp,
}

/// What the responder needs to know about a query besides its bytes.
pub struct QueryContext<'a> {
    /// UDP or TCP.
    pub transport: Transport,
    /// The client's address (transfers are allowed per address).
    pub client: IpAddr,
    /// Whether this node may answer dynamic names now; asked only when the
    /// answer is dynamic.
    pub lease: &'a LeaseCheck,
    /// The largest UDP answer we send to an EDNS client (and advertise).
    pub max_udp_payload: u16,
}

/// What [`respond`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The response is in `out`.
    Reply {
        /// The response code, extended (BADVERS is 16).
        rcode: u16,
        /// Whether the TC bit is set.
        truncated: bool,
    },
    /// Nothing to send (too short to answer, or not a query).
    Drop,
    /// A zone transfer over TCP: send these messages in order.
    Transfer(Vec<Vec<u8>>),
}

/// Answers one query: writes the response into `out` (cleared first).
/// Never panics on any input.
pub fn respond(zone: &Zone, query: &[u8], ctx: &QueryContext<'_>, out: &mut Vec<u8>) -> Outcome {
    out.clear();
    let mut lower = [0u8; 255];
    match parse(query, &mut lower) {
        Parse::Drop => Outcome::Drop,
        Parse::Slow => respond_reference(zone, query, ctx, out),
        Parse::Fast(q) => answer(zone, &q, &lower, ctx, out),
    }
}

/// EDNS of a query, as the fast path needs it.
#[derive(Clone, Copy)]
struct EdnsInfo {
    payload: u16,
    version: u8,
    dnssec_ok: bool,
}

/// A query the fast path takes.
struct Fast<'q> {
    header: &'q [u8; 12],
    /// QNAME, QTYPE, QCLASS as received.
    question: &'q [u8],
    qname_len: usize,
    qtype: u16,
    qclass: u16,
    edns: Option<EdnsInfo>,
}

enum Parse<'q> {
    Fast(Fast<'q>),
    Slow,
    Drop,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    match b.get(at..at + 2) {
        Some([hi, lo]) => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

/// Parses the header and question by hand; the lowercased QNAME goes to
/// `lower`. Anything unusual is left to the reference path.
fn parse<'q>(query: &'q [u8], lower: &mut [u8; 255]) -> Parse<'q> {
    let Some(header) = query.first_chunk::<12>() else {
        return Parse::Drop;
    };
    if header[2] & 0x80 != 0 {
        // A response: never answer it (no loops between servers).
        return Parse::Drop;
    }
    let opcode = (header[2] >> 3) & 0x0F;
    let counts = [
        u16::from_be_bytes([header[4], header[5]]),
        u16::from_be_bytes([header[6], header[7]]),
        u16::from_be_bytes([header[8], header[9]]),
        u16::from_be_bytes([header[10], header[11]]),
    ];
    if opcode != 0 || counts[0] != 1 || counts[1] != 0 || counts[2] != 0 || counts[3] > 1 {
        return Parse::Slow;
    }
    match parse_rest(query, header, counts[3] == 1, lower) {
        Some(fast) => Parse::Fast(fast),
        None => Parse::Slow,
    }
}

fn parse_rest<'q>(
    query: &'q [u8],
    header: &'q [u8; 12],
    has_additional: bool,
    lower: &mut [u8; 255],
) -> Option<Fast<'q>> {
    let mut pos = 12;
    let mut lpos = 0;
    loop {
        let len = usize::from(*query.get(pos)?);
        if len == 0 {
            *lower.get_mut(lpos)? = 0;
            lpos += 1;
            pos += 1;
            break;
        }
        if len > 63 || lpos + len + 2 > lower.len() {
            // Compression pointer, extended label, or a name over 255 bytes.
            return None;
        }
        let label = query.get(pos + 1..pos + 1 + len)?;
        *lower.get_mut(lpos)? = len as u8;
        for (d, s) in lower.get_mut(lpos + 1..lpos + 1 + len)?.iter_mut().zip(label) {
            *d = s.to_ascii_lowercase();
        }
        lpos += 1 + len;
        pos += 1 + len;
    }
    let qtype = be16(query, pos)?;
    let qclass = be16(query, pos + 2)?;
    if qtype == TYPE_AXFR || qtype == TYPE_IXFR {
        return None;
    }
    let question = query.get(12..pos + 4)?;
    let mut edns = None;
    if has_additional {
        // Only an OPT record with the root name.
        let p = pos + 4;
        if *query.get(p)? != 0 || be16(query, p + 1)? != TYPE_OPT {
            return None;
        }
        let payload = be16(query, p + 3)?;
        let version = *query.get(p + 6)?;
        let dnssec_ok = *query.get(p + 7)? & 0x80 != 0;
        let rdlen = usize::from(be16(query, p + 9)?);
        let mut options = query.get(p + 11..p + 11 + rdlen)?;
        while !options.is_empty() {
            let len = usize::from(be16(options, 2)?);
            options = options.get(4 + len..)?;
        }
        edns = Some(EdnsInfo {
            payload,
            version,
            dnssec_ok,
        });
    }
    Some(Fast {
        header,
        question,
        qname_len: lpos,
        qtype,
        qclass,
        edns,
    })
}

/// The size limit for this response.
fn limit(ctx: &QueryContext<'_>, edns: Option<EdnsInfo>) -> usize {
    match (ctx.transport, edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, None) => PLAIN_UDP,
        (Transport::Udp, Some(e)) => usize::from(e.payload.min(ctx.max_udp_payload)).max(PLAIN_UDP),
    }
}

fn answer(zone: &Zone, q: &Fast<'_>, lower: &[u8; 255], ctx: &QueryContext<'_>, out: &mut Vec<u8>) -> Outcome {
    if let Some(e) = q.edns
        && e.version != 0
    {
        return write_reply(out, q, ctx, Head::error(RCODE_BADVERS), &[], false);
    }
    if q.qclass != CLASS_IN {
        return write_reply(out, q, ctx, Head::error(u16::from(ResponseCode::Refused)), &[], false);
    }
    let key = lower.get(..q.qname_len).unwrap_or_default();
    let prepared = match zone.lookup(key) {
        Some(entry) => entry.lookup(q.qtype),
        None => match zone.in_zone(key).then(|| zone.nx(q.qname_len)).flatten() {
            Some(p) => p,
            None => return write_reply(out, q, ctx, Head::error(u16::from(ResponseCode::Refused)), &[], false),
        },
    };
    if prepared.dynamic && !ctx.lease.is_valid() {
        return write_reply(out, q, ctx, Head::error(u16::from(ResponseCode::ServFail)), &[], false);
    }
    let room = limit(ctx, q.edns);
    let fixed = 12 + q.question.len() + if q.edns.is_some() { 11 } else { 0 };
    let head = Head {
        rcode: u16::from(prepared.rcode),
        aa: prepared.aa,
        an: prepared.an,
        ns: prepared.ns,
        ar: prepared.ar,
    };
    if fixed + prepared.body.len() <= room {
        write_reply(out, q, ctx, head, &prepared.body, false)
    } else if fixed + prepared.noadd_len <= room {
        let body = prepared.body.get(..prepared.noadd_len).unwrap_or_default();
        write_reply(out, q, ctx, Head { ar: 0, ..head }, body, false)
    } else {
        write_reply(
            out,
            q,
            ctx,
            Head {
                an: 0,
                ns: 0,
                ar: 0,
                ..head
            },
            &[],
            true,
        )
    }
}

/// Header fields of a response besides those copied from the query.
#[derive(Clone, Copy)]
struct Head {
    rcode: u16,
    aa: bool,
    an: u16,
    ns: u16,
    ar: u16,
}

impl Head {
    fn error(rcode: u16) -> Head {
        Head {
            rcode,
            aa: false,
            an: 0,
            ns: 0,
            ar: 0,
        }
    }
}

fn write_reply(out: &mut Vec<u8>, q: &Fast<'_>, ctx: &QueryContext<'_>, head: Head, body: &[u8], tc: bool) -> Outcome {
    let h = q.header;
    out.clear();
    out.extend_from_slice(&h[0..2]);
    // QR, opcode 0, AA, TC, RD copied; RA 0, Z 0, AD 0, CD copied.
    out.push(0x80 | if head.aa { 0x04 } else { 0 } | if tc { 0x02 } else { 0 } | (h[2] & 0x01));
    out.push((h[3] & 0x10) | (head.rcode & 0x0F) as u8);
    let ar = head.ar.saturating_add(u16::from(q.edns.is_some()));
    for c in [1, head.an, head.ns, ar] {
        out.extend_from_slice(&c.to_be_bytes());
    }
    out.extend_from_slice(q.question);
    out.extend_from_slice(body);
    if let Some(e) = q.edns {
        let [p0, p1] = ctx.max_udp_payload.max(PLAIN_UDP as u16).to_be_bytes();
        let ext = (head.rcode >> 4) as u8;
        out.extend_from_slice(&[0, 0, 41, p0, p1, ext, 0, if e.dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
    Outcome::Reply {
        rcode: head.rcode,
        truncated: tc,
    }
}

/// A truncated, empty answer (TC set) for a query the fast path can parse,
/// for rate limiting's "slip"; false when the query is unusual (then drop it).
pub(crate) fn slip_reply(query: &[u8], ctx: &QueryContext<'_>, out: &mut Vec<u8>) -> bool {
    let mut lower = [0u8; 255];
    match parse(query, &mut lower) {
        Parse::Fast(q) => {
            write_reply(out, &q, ctx, Head::error(0), &[], true);
            true
        }
        Parse::Slow | Parse::Drop => false,
    }
}

/// The reference path: parse and encode with hickory-proto. Used for every
/// query the fast path does not take (transfers, other opcodes, several
/// questions, TSIG, malformed packets), and by the tests as the oracle for
/// the fast path.
pub fn respond_reference(zone: &Zone, query: &[u8], ctx: &QueryContext<'_>, out: &mut Vec<u8>) -> Outcome {
    out.clear();
    let Some(header) = query.first_chunk::<12>() else {
        return Outcome::Drop;
    };
    if header[2] & 0x80 != 0 {
        return Outcome::Drop;
    }
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(e) => {
            debug!(client = %ctx.client, error = %e, "malformed DNS query");
            // FORMERR with the ID, opcode and RD of the header, no question.
            out.extend_from_slice(&header[0..2]);
            out.push(0x80 | (header[2] & 0x79));
            out.push(1); // FORMERR
            out.extend_from_slice(&[0; 8]);
            return Outcome::Reply {
                rcode: u16::from(ResponseCode::FormErr),
                truncated: false,
            };
        }
    };
    let mut response = Message::response(request.id, request.op_code);
    response.metadata.recursion_desired = request.recursion_desired;
    response.metadata.checking_disabled = request.checking_disabled;
    response.add_queries(request.queries.iter().cloned());
    let edns = request.edns.as_ref().map(|e| EdnsInfo {
        payload: e.max_payload(),
        version: e.version(),
        dnssec_ok: e.flags().dnssec_ok,
    });
    if let Some(e) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(ctx.max_udp_payload)
            .set_version(0)
            .set_dnssec_ok(e.dnssec_ok);
        response.set_edns(opt);
    }
    let room = limit(ctx, edns);
    let rcode = if edns.is_some_and(|e| e.version != 0) {
        Some(ResponseCode::BADVERS)
    } else if request.op_code != OpCode::Query {
        Some(ResponseCode::NotImp)
    } else if request.queries.len() != 1 {
        Some(ResponseCode::FormErr)
    } else {
        None
    };
    if let Some(rcode) = rcode {
        response.metadata.response_code = rcode;
        return encode(&response, room, out);
    }
    let Some(question) = request.queries.first() else {
        return Outcome::Drop;
    };
    if question.query_class != DNSClass::IN {
        response.metadata.response_code = ResponseCode::Refused;
        return encode(&response, room, out);
    }
    if matches!(question.query_type, RecordType::AXFR | RecordType::IXFR) {
        return transfer(zone, &request, question, ctx, response, room, out);
    }
    let key = wire_key(&question.name);
    let prepared = match zone.lookup(&key) {
        Some(entry) => entry.lookup(u16::from(question.query_type)),
        None => match zone.in_zone(&key).then(|| zone.nx(key.len())).flatten() {
            Some(p) => p,
            None => {
                response.metadata.response_code = ResponseCode::Refused;
                return encode(&response, room, out);
            }
        },
    };
    if prepared.dynamic && !ctx.lease.is_valid() {
        response.metadata.response_code = ResponseCode::ServFail;
        return encode(&response, room, out);
    }
    fill(&mut response, prepared);
    encode(&response, room, out)
}

fn fill(response: &mut Message, prepared: &Prepared) {
    let Sections {
        answers,
        authority,
        additional,
    } = &*prepared.sections;
    response.metadata.authoritative = prepared.aa;
    response.metadata.response_code = prepared.rcode;
    response.answers = answers.clone();
    response.authorities = authority.clone();
    response.additionals = additional.clone();
}

/// Encodes `response` within `room` bytes: whole, else without the
/// additional section, else truncated (TC, question and OPT only).
fn encode(response: &Message, room: usize, out: &mut Vec<u8>) -> Outcome {
    let rcode = u16::from(response.metadata.response_code);
    let fits = |m: &Message, out: &mut Vec<u8>| match m.to_vec() {
        Ok(bytes) if bytes.len() <= room => {
            *out = bytes;
            true
        }
        _ => false,
    };
    let truncated = response.metadata.truncation;
    if fits(response, out) {
        return Outcome::Reply { rcode, truncated };
    }
    if !response.additionals.is_empty() {
        let mut smaller = response.clone();
        smaller.additionals.clear();
        if fits(&smaller, out) {
            return Outcome::Reply { rcode, truncated };
        }
    }
    if fits(&response.truncate(), out) {
        return Outcome::Reply { rcode, truncated: true };
    }
    out.clear();
    Outcome::Drop
}

/// AXFR, and IXFR answered in full (RFC 1995 allows it), over TCP, to the
/// allowed clients only, and only while the lease is valid (the zone has
/// dynamic content). Over UDP an allowed client gets TC (use TCP).
fn transfer(
    zone: &Zone,
    request: &Message,
    question: &Query,
    ctx: &QueryContext<'_>,
    mut response: Message,
    room: usize,
    out: &mut Vec<u8>,
) -> Outcome {
    if !zone.transfer_allowed(ctx.client) || !zone.in_zone(&wire_key(&question.name)) {
        response.metadata.response_code = ResponseCode::Refused;
        return encode(&response, room, out);
    }
    if wire_key(&question.name) != wire_key(&zone.soa().name) {
        response.metadata.response_code = ResponseCode::NotAuth;
        return encode(&response, room, out);
    }
    if !ctx.lease.is_valid() {
        response.metadata.response_code = ResponseCode::ServFail;
        return encode(&response, room, out);
    }
    response.metadata.authoritative = true;
    if ctx.transport == Transport::Udp {
        response.metadata.truncation = true;
        return encode(&response, room, out);
    }
    // IXFR from a client as new as we are: our SOA alone (RFC 1995 4).
    let client_serial = request.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    });
    let current = match client_serial {
        Some(s) if question.query_type == RecordType::IXFR => serial_ge(s, zone.serial()),
        _ => false,
    };
    let soa = zone.soa().clone();
    let mut records: Vec<&Record> = vec![&soa];
    if !current {
        records.extend(zone.transfer_records());
        records.push(&soa);
    }
    let mut messages = Vec::new();
    let mut chunk: Vec<Record> = Vec::new();
    let mut size = 0;
    for r in records {
        let estimate = r.name.len() + 12 + rdata_estimate(&r.data);
        if !chunk.is_empty() && size + estimate > TRANSFER_CHUNK {
            match transfer_message(&response, std::mem::take(&mut chunk), messages.is_empty()) {
                Some(m) => messages.push(m),
                None => return Outcome::Drop,
            }
            size = 0;
        }
        size += estimate;
        chunk.push(r.clone());
    }
    match transfer_message(&response, chunk, messages.is_empty()) {
        Some(m) => messages.push(m),
        None => return Outcome::Drop,
    }
    Outcome::Transfer(messages)
}

fn rdata_estimate(data: &RData) -> usize {
    match data {
        RData::TXT(t) => t.txt_data.iter().map(|s| s.len() + 1).sum(),
        RData::SOA(SOA { .. }) => 64,
        _ => 32,
    }
}

fn transfer_message(template: &Message, records: Vec<Record>, first: bool) -> Option<Vec<u8>> {
    let mut m = Message::new(template.id, MessageType::Response, OpCode::Query);
    m.metadata = template.metadata;
    if first {
        m.add_queries(template.queries.iter().cloned());
    }
    if let Some(e) = &template.edns {
        m.set_edns(e.clone());
    }
    m.answers = records;
    m.to_vec().ok()
}

/// RFC 1982: whether serial `a` is at least `b`.
fn serial_ge(a: u32, b: u32) -> bool {
    a == b || (a.wrapping_sub(b) as i32) > 0
}
