//! Who may call what: the operator and viewer credentials, checked on every
//! gRPC call before it reaches a service.
//!
//! [`AuthLayer`] wraps the whole gRPC server. It classifies each call by its
//! path ([`classify`]): reads of `tandem.v1.Tandem` (status, events, spec,
//! DNS, history), every other `tandem.v1.Tandem` method and any unknown
//! service (operator calls: default deny, so a method added later is
//! protected without a change here), `tandem.v1.Peer` (node-to-node traffic:
//! a verified client certificate when TLS is on), and health and reflection
//! (open). Credentials are a bearer token (`authorization: Bearer TOKEN`,
//! compared in constant time) or a client certificate that rustls already
//! verified against the cluster's CA during the handshake.
//!
//! A refusal is answered with `UNAUTHENTICATED` or `PERMISSION_DENIED` and
//! the reason, counted in [`AuthStats`] per method and reason, and logged
//! (the first of each kind at once, then at most every 10 s per kind with a
//! count). Tokens are never logged: [`Secret`] has no way to print itself.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{Either, Ready, ready};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tracing::warn;

/// A token read from a file. It prints as `<redacted>` and compares in
/// constant time.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(token: impl Into<Vec<u8>>) -> Secret {
        Secret(token.into())
    }

    /// Whether `presented` is this token, in time independent of where they
    /// differ (the length may leak; tokens should be long and random).
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.len() == presented.len() && bool::from(self.0.ct_eq(presented))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What a call needs, by its gRPC path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Reads of `tandem.v1.Tandem`: open, or the viewer token when one is configured.
    Read,
    /// Everything else of `tandem.v1.Tandem`, and unknown services.
    Operator,
    /// `tandem.v1.Peer`: a verified client certificate when TLS is on.
    Peer,
    /// Health and reflection.
    Open,
}

/// `tandem.v1.Tandem` methods that only read (some may not exist yet; any
/// other method needs an operator credential).
pub const READS: &[&str] = &[
    "GetStatus",
    "WatchStatus",
    "ListEvents",
    "WatchEvents",
    "GetSpec",
    "GetDns",
    "GetHistory",
    "Simulate",
];

const TANDEM: &str = "tandem.v1.Tandem";
const PEER: &str = "tandem.v1.Peer";
const OPEN_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The class of the call at `path` (`/package.Service/Method`) and the name
/// it is counted under: the method for Tandem's own services, `other`
/// otherwise (an unknown path must not grow the counters without bound).
pub fn classify(path: &str) -> (Class, String) {
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", ""));
    let name = if (service == TANDEM || service == PEER) && plausible_method(method) {
        method.to_string()
    } else {
        "other".to_string()
    };
    let class = match service {
        TANDEM if READS.contains(&method) => Class::Read,
        TANDEM => Class::Operator,
        PEER => Class::Peer,
        s if OPEN_SERVICES.contains(&s) => Class::Open,
        _ => Class::Operator,
    };
    (class, name)
}

fn plausible_method(m: &str) -> bool {
    !m.is_empty() && m.len() <= 64 && m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Who the caller proved to be; put into the request's extensions for the
/// services (a write records it with its actor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credential needed and none given (security is off, or an open read).
    Anonymous,
    OperatorToken,
    ViewerToken,
    /// A client certificate verified against the cluster's CA, with its
    /// subject's common name when it has one.
    ClientCert(Option<String>),
}

impl Caller {
    /// How the caller authenticated, for the event log (`operator token`,
    /// `client cert CN=ops-alice`); `None` when it did not.
    pub fn describe(&self) -> Option<String> {
        match self {
            Caller::Anonymous => None,
            Caller::OperatorToken => Some("operator token".into()),
            Caller::ViewerToken => Some("viewer token".into()),
            Caller::ClientCert(Some(cn)) => Some(format!("client cert CN={cn}")),
            Caller::ClientCert(None) => Some("client cert".into()),
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// No token and no client certificate where one is needed.
    NoCredential,
    /// A bearer token that is neither the operator's nor the viewer's.
    InvalidToken,
    /// The viewer token on an operator call.
    ViewerNotAllowed,
    /// A peer call without a client certificate while TLS is on.
    NoClientCert,
}

impl Refusal {
    /// The label the refusal is counted under.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoCredential => "no_credential",
            Refusal::InvalidToken => "invalid_token",
            Refusal::ViewerNotAllowed => "viewer_not_allowed",
            Refusal::NoClientCert => "no_client_cert",
        }
    }

    /// The gRPC status sent back, with the reason a person can act on.
    pub fn status(self, class: Class, method: &str) -> Status {
        match (self, class) {
            (Refusal::ViewerNotAllowed, _) => Status::permission_denied(format!(
                "the viewer token may not call {method}: it needs an operator credential"
            )),
            (Refusal::NoClientCert, _) => Status::unauthenticated(
                "peer calls need a client certificate signed by the cluster's CA (this node serves TLS)",
            ),
            (Refusal::InvalidToken, _) => {
                Status::unauthenticated(format!("{method}: the bearer token is not valid on this cluster"))
            }
            (Refusal::NoCredential, Class::Read) => Status::unauthenticated(format!(
                "no credential: {method} needs a viewer or operator token (--token-file) or a client certificate"
            )),
            (Refusal::NoCredential, _) => Status::unauthenticated(format!(
                "no credential: {method} needs an operator token (--token-file) or a client certificate"
            )),
        }
    }
}

/// The node's rules: which tokens exist and whether it serves TLS.
#[derive(Debug, Clone, Default)]
pub struct AuthPolicy {
    pub operator_token: Option<Secret>,
    pub viewer_token: Option<Secret>,
    /// The server verifies client certificates (and peers must present one).
    pub tls: bool,
}

impl AuthPolicy {
    /// Whether operator calls need a credential. Without a token and
    /// without TLS, everything is open (the default, as in the demo).
    pub fn enforced(&self) -> bool {
        self.operator_token.is_some() || self.tls
    }

    /// Decides one call. `token`: the bearer token presented, if any.
    /// `cert`: `Some(cn)` when the caller presented a client certificate
    /// (rustls verified it against the CA during the handshake).
    pub fn decide(&self, class: Class, token: Option<&[u8]>, cert: Option<Option<String>>) -> Result<Caller, Refusal> {
        if class == Class::Open {
            return Ok(Caller::Anonymous);
        }
        if class == Class::Peer {
            return match (self.tls, cert) {
                (false, _) => Ok(Caller::Anonymous),
                (true, Some(cn)) => Ok(Caller::ClientCert(cn)),
                (true, None) => Err(Refusal::NoClientCert),
            };
        }
        let presented = match (cert, token) {
            (Some(cn), _) => Some(Ok(Caller::ClientCert(cn))),
            (None, Some(t)) => Some(self.token_caller(t)),
            (None, None) => None,
        };
        match class {
            Class::Read if self.viewer_token.is_none() => {
                // Reads are open; a wrong token does not make them less so.
                Ok(presented.and_then(Result::ok).unwrap_or(Caller::Anonymous))
            }
            Class::Read => presented.unwrap_or(Err(Refusal::NoCredential)),
            _ if !self.enforced() => Ok(presented.and_then(Result::ok).unwrap_or(Caller::Anonymous)),
            _ => match presented {
                None => Err(Refusal::NoCredential),
                Some(Ok(Caller::ViewerToken)) => Err(Refusal::ViewerNotAllowed),
                Some(other) => other,
            },
        }
    }

    fn token_caller(&self, token: &[u8]) -> Result<Caller, Refusal> {
        // Both are compared, so the time taken does not tell which matched.
        let operator = self.operator_token.as_ref().is_some_and(|s| s.matches(token));
        let viewer = self.viewer_token.as_ref().is_some_and(|s| s.matches(token));
        if operator {
            Ok(Caller::OperatorToken)
        } else if viewer {
            Ok(Caller::ViewerToken)
        } else {
            Err(Refusal::InvalidToken)
        }
    }
}

/// The token of an `authorization: Bearer TOKEN` header value.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value.get(7..)?.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// How often a refusal of one kind (method and reason) is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// How many (method, reason) pairs are counted separately at most.
const MAX_KINDS: usize = 256;

/// Refused calls, counted per method and reason.
#[derive(Debug, Default)]
pub struct AuthStats {
    refused: Mutex<BTreeMap<(String, &'static str), Counter>>,
}

#[derive(Debug, Default)]
struct Counter {
    count: u64,
    logged_at: Option<Instant>,
    /// Refusals since the last log line.
    unlogged: u64,
}

impl AuthStats {
    /// Counts one refusal. Returns `Some(n)` when it should be logged now,
    /// `n` being the refusals of that kind since the last log line
    /// (this one included).
    pub fn refused(&self, method: &str, refusal: Refusal, now: Instant) -> Option<u64> {
        let mut map = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = (method.to_string(), refusal.reason());
        // Method names come from callers: past a bound, new ones count as "other".
        if map.len() >= MAX_KINDS && !map.contains_key(&key) {
            key.0 = "other".to_string();
        }
        let c = map.entry(key).or_default();
        c.count += 1;
        c.unlogged += 1;
        if c.logged_at.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            return None;
        }
        c.logged_at = Some(now);
        Some(std::mem::take(&mut c.unlogged))
    }

    /// `(method, reason, count)` for every kind of refusal seen, sorted.
    pub fn snapshot(&self) -> Vec<(String, String, u64)> {
        let map = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|((m, r), c)| (m.clone(), r.to_string(), c.count))
            .collect()
    }
}

/// Wraps the gRPC server; see the module documentation.
#[derive(Clone)]
pub struct AuthLayer {
    policy: Arc<AuthPolicy>,
    stats: Arc<AuthStats>,
}

impl AuthLayer {
    pub fn new(policy: AuthPolicy, stats: Arc<AuthStats>) -> AuthLayer {
        AuthLayer {
            policy: Arc::new(policy),
            stats,
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            policy: self.policy.clone(),
            stats: self.stats.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    policy: Arc<AuthPolicy>,
    stats: Arc<AuthStats>,
}

impl<S> AuthService<S> {
    fn check<B>(&self, req: &http::Request<B>) -> Result<Caller, Status> {
        let (class, method) = classify(req.uri().path());
        let tls = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        let cert = tls
            .and_then(|t| t.peer_certs())
            .and_then(|certs| certs.first().map(|c| subject_cn(c.as_ref())));
        let token = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| bearer(v.as_bytes()).unwrap_or(b""));
        // A header that is not `Bearer TOKEN` counts as an invalid token.
        let token = token.map(|t| if t.is_empty() { b"\0".as_slice() } else { t });
        self.policy.decide(class, token, cert).map_err(|refusal| {
            if let Some(n) = self.stats.refused(&method, refusal, Instant::now()) {
                let remote = tls
                    .and_then(|t| t.get_ref().remote_addr())
                    .or_else(|| req.extensions().get::<TcpConnectInfo>().and_then(|t| t.remote_addr()));
                warn!(
                    method = %method,
                    reason = %refusal.reason(),
                    remote = ?remote,
                    refused_since_last_report = n,
                    "call refused"
                );
            }
            refusal.status(class, &method)
        })
    }
}

impl<S, B, ResBody> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.check(&req) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Either::Left(self.inner.call(req))
            }
            Err(status) => Either::Right(ready(Ok(status.into_http()))),
        }
    }
}

/// The common name of a DER certificate's subject, if it has one (printable
/// characters only, at most 64). A small DER walk; anything unexpected is `None`.
pub fn subject_cn(der: &[u8]) -> Option<String> {
    let (0x30, cert, _) = tlv(der)? else { return None };
    let (0x30, tbs, _) = tlv(cert)? else { return None };
    let (tag, _, after_version) = tlv(tbs)?;
    // version [0] is optional (absent in v1 certificates).
    let mut rest = if tag == 0xa0 { after_version } else { tbs };
    // serialNumber, signature, issuer, validity: skipped.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (0x30, mut subject, _) = tlv(rest)? else {
        return None;
    };
    let mut cn = None;
    // Name: a SEQUENCE of RDN SETs of AttributeTypeAndValue SEQUENCEs.
    while !subject.is_empty() {
        let (0x31, mut rdn, next) = tlv(subject)? else {
            return None;
        };
        subject = next;
        while !rdn.is_empty() {
            let (0x30, atv, next) = tlv(rdn)? else { return None };
            rdn = next;
            let (0x06, oid, value) = tlv(atv)? else { return None };
            if oid == [0x55, 0x04, 0x03] {
                let (tag, text, _) = tlv(value)?;
                // UTF8String, PrintableString, T61String, IA5String
                if matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) {
                    cn = Some(String::from_utf8_lossy(text).into_owned());
                }
            }
        }
    }
    let cn: String = cn?.chars().filter(|c| !c.is_control()).take(64).collect();
    (!cn.is_empty()).then_some(cn)
}

/// One DER element: (tag, content, what follows). Single-byte tags only.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use base64::Engine;

    fn policy(operator: Option<&str>, viewer: Option<&str>, tls: bool) -> AuthPolicy {
        AuthPolicy {
            operator_token: operator.map(Secret::new),
            viewer_token: viewer.map(Secret::new),
            tls,
        }
    }

    #[test]
    fn methods_are_classified_with_default_deny() {
        for read in READS {
            assert_eq!(classify(&format!("/tandem.v1.Tandem/{read}")).0, Class::Read, "{read}");
        }
        for op in [
            "ApplySpec",
            "Annotate",
            "AddMember",
            "RemoveMember",
            "TransferLeader",
            "CleanupResource",
            "FenceNode",
            "ConfirmFenced",
            "Switchover",
            "SetMaintenance",
            "SomethingAddedLater",
        ] {
            let (class, name) = classify(&format!("/tandem.v1.Tandem/{op}"));
            assert_eq!((class, name.as_str()), (Class::Operator, op));
        }
        assert_eq!(classify("/tandem.v1.Peer/Heartbeat"), (Class::Peer, "Heartbeat".into()));
        assert_eq!(classify("/grpc.health.v1.Health/Check").0, Class::Open);
        assert_eq!(
            classify("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").0,
            Class::Open
        );
        // Unknown services and garbage: operator, counted as "other".
        assert_eq!(classify("/evil.Service/Do"), (Class::Operator, "other".into()));
        assert_eq!(classify("nonsense"), (Class::Operator, "other".into()));
        assert_eq!(classify("/tandem.v1.Tandem/"), (Class::Operator, "other".into()));
        let long = format!("/tandem.v1.Tandem/{}", "A".repeat(100));
        assert_eq!(classify(&long), (Class::Operator, "other".into()));
        // Case matters in gRPC paths: a lowercase read is not a read.
        assert_eq!(classify("/tandem.v1.Tandem/getstatus").0, Class::Operator);
    }

    #[test]
    fn tokens_compare_exactly() {
        let s = Secret::new("s3cret-token");
        assert!(s.matches(b"s3cret-token"));
        assert!(!s.matches(b"s3cret-toke"));
        assert!(!s.matches(b"s3cret-tokeN"));
        assert!(!s.matches(b""));
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(bearer(b"Bearer abc"), Some(b"abc".as_slice()));
        assert_eq!(bearer(b"bearer  abc "), Some(b"abc".as_slice()));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bear"), None);
    }

    #[test]
    fn without_security_everything_is_open() {
        let p = AuthPolicy::default();
        assert!(!p.enforced());
        for class in [Class::Read, Class::Operator, Class::Peer, Class::Open] {
            assert_eq!(p.decide(class, None, None), Ok(Caller::Anonymous));
        }
    }

    #[test]
    fn operator_and_viewer_tokens() {
        let p = policy(Some("op"), Some("view"), false);
        use Class::*;
        // Reads need a credential when a viewer token is set.
        assert_eq!(p.decide(Read, None, None), Err(Refusal::NoCredential));
        assert_eq!(p.decide(Read, Some(b"view"), None), Ok(Caller::ViewerToken));
        assert_eq!(p.decide(Read, Some(b"op"), None), Ok(Caller::OperatorToken));
        assert_eq!(p.decide(Read, Some(b"nope"), None), Err(Refusal::InvalidToken));
        // Operator calls.
        assert_eq!(p.decide(Operator, None, None), Err(Refusal::NoCredential));
        assert_eq!(p.decide(Operator, Some(b"view"), None), Err(Refusal::ViewerNotAllowed));
        assert_eq!(p.decide(Operator, Some(b"nope"), None), Err(Refusal::InvalidToken));
        assert_eq!(p.decide(Operator, Some(b"op"), None), Ok(Caller::OperatorToken));
        // Without TLS peers are not checked; health stays open.
        assert_eq!(p.decide(Peer, None, None), Ok(Caller::Anonymous));
        assert_eq!(p.decide(Open, None, None), Ok(Caller::Anonymous));
        // Without a viewer token reads are open, whatever is presented.
        let p = policy(Some("op"), None, false);
        assert_eq!(p.decide(Read, None, None), Ok(Caller::Anonymous));
        assert_eq!(p.decide(Read, Some(b"nope"), None), Ok(Caller::Anonymous));
        assert_eq!(p.decide(Operator, Some(b"op"), None), Ok(Caller::OperatorToken));
    }

    #[test]
    fn client_certificates_count_as_operator_and_peers_need_one_under_tls() {
        let p = policy(None, Some("view"), true);
        assert!(p.enforced());
        let cert = Some(Some("alice".to_string()));
        let alice = Ok(Caller::ClientCert(Some("alice".into())));
        assert_eq!(p.decide(Class::Operator, None, cert.clone()), alice);
        assert_eq!(p.decide(Class::Read, None, cert.clone()), alice);
        assert_eq!(p.decide(Class::Peer, None, cert.clone()), alice);
        assert_eq!(p.decide(Class::Peer, Some(b"view"), None), Err(Refusal::NoClientCert));
        assert_eq!(p.decide(Class::Operator, None, None), Err(Refusal::NoCredential));
        assert_eq!(
            p.decide(Class::Operator, Some(b"view"), None),
            Err(Refusal::ViewerNotAllowed)
        );
        assert_eq!(
            Refusal::ViewerNotAllowed.status(Class::Operator, "ApplySpec").message(),
            "the viewer token may not call ApplySpec: it needs an operator credential"
        );
        assert_eq!(
            Refusal::NoCredential.status(Class::Operator, "Annotate").code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            Refusal::ViewerNotAllowed.status(Class::Operator, "Annotate").code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn refusals_are_counted_and_logging_is_rate_limited() {
        let stats = AuthStats::default();
        let t0 = Instant::now();
        assert_eq!(stats.refused("ApplySpec", Refusal::NoCredential, t0), Some(1));
        assert_eq!(
            stats.refused("ApplySpec", Refusal::NoCredential, t0 + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            stats.refused("ApplySpec", Refusal::NoCredential, t0 + Duration::from_secs(2)),
            None
        );
        assert_eq!(stats.refused("Annotate", Refusal::ViewerNotAllowed, t0), Some(1));
        assert_eq!(
            stats.refused("ApplySpec", Refusal::NoCredential, t0 + LOG_EVERY),
            Some(3)
        );
        assert_eq!(
            stats.snapshot(),
            vec![
                ("Annotate".into(), "viewer_not_allowed".into(), 1),
                ("ApplySpec".into(), "no_credential".into(), 4),
            ]
        );
        // Invented method names cannot grow the table without bound.
        for i in 0..1000 {
            stats.refused(&format!("Made{i}"), Refusal::NoCredential, t0);
        }
        let snapshot = stats.snapshot();
        assert!(snapshot.len() <= MAX_KINDS + 1, "{}", snapshot.len());
        assert!(snapshot.iter().any(|(m, _, n)| m == "other" && *n > 0));
    }

    fn der(pem: &str) -> Vec<u8> {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
    }

    /// `openssl x509 -req` without extensions: a v1 certificate (no version
    /// field), issuer CN=tandem-test-ca, subject O=ops, CN=alice.
    const V1_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBSDCB7gIUEHmeSkvvDVydI+wJrX4egKc7Y3QwCgYIKoZIzj0EAwIwLzEUMBIG
A1UECgwLVGFuZGVtIHRlc3QxFzAVBgNVBAMMDnRhbmRlbS10ZXN0LWNhMB4XDTI2
MTEyMjE2NTczNFoXDTM2MTExOTE2NTczNFowHjEMMAoGA1UECgwDb3BzMQ4wDAYD
VQQDDAVhbGljZTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABG6IEfl2IyFfqCqx
3xBOy+EkY6MtLnHucw9M0s8zjsH0TM8640aPi3KbAZaHDkNyrMU93BnJndxW/R9c
RGawsFMwCgYIKoZIzj0EAwIDSQAwRgIhANjyLvOKcPruSnUHA/pll1HbyFHBgjQ6
j1jAaLeOLh4/AiEAqsK4d6N3UK9+Tdl/1md7nxPI+9xhC3JOt4OtVGxjJTk=
-----END CERTIFICATE-----";

    /// A v3 node certificate with subjectAltName IP:127.0.0.1, subject CN=site-a.
    const V3_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBpTCCAUugAwIBAgIUEHmeSkvvDVydI+wJrX4egKc7Y3UwCgYIKoZIzj0EAwIw
LzEUMBIGA1UECgwLVGFuZGVtIHRlc3QxFzAVBgNVBAMMDnRhbmRlbS10ZXN0LWNh
MB4XDTI2MTEyMjE2NTczNloXDTM2MTExOTE2NTczNlowETEPMA0GA1UEAwwGc2l0
ZS1hMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEDd+mjzJWqggpyGIAUJSjytFv
wEbJ7PKhcOUFE3mOXvsO87mMphTzdmaiioar8nk/hOxtD62Hp4It7fyOa/OiOqNj
MGEwHwYDVR0RBBgwFocEfwAAAYIOc2l0ZS1hLmV4YW1wbGUwHQYDVR0OBBYEFEwg
JUIQDsvQkpOh/KiqkbxPDzfpMB8GA1UdIwQYMBaAFH+Tb7FYtRiaZs5WQxDcdK6v
10o6MAoGCCqGSM49BAMCA0gAMEUCID3O4PDnAptUJWtW0tVdnp2yZWSTyVVjUKgQ
49sjQDRQAiEAwPU3dByO974QXibGqCjrOJgokJcOhLQBbCCRFKp1/dM=
-----END CERTIFICATE-----";

    #[test]
    fn the_subject_common_name_is_read_from_certificates() {
        assert_eq!(subject_cn(&der(V1_CERT)).as_deref(), Some("alice"));
        assert_eq!(subject_cn(&der(V3_CERT)).as_deref(), Some("site-a"));
        // Truncated or garbage input is None, never a panic.
        let v3 = der(V3_CERT);
        for n in 0..v3.len() {
            let _ = subject_cn(&v3[..n]);
        }
        assert_eq!(subject_cn(b""), None);
        assert_eq!(subject_cn(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
