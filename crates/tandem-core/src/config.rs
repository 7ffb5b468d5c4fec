//! The node configuration file (TOML, one per node), parsed and validated once.
//!
//! Every problem is reported as a [`ConfigError`] naming the file, the key and
//! what is expected. Unknown keys are refused rather than ignored, so a typo
//! never silently falls back to a default.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::membership::{NodeId, NodeInfo, NodeRole, node_id};
use crate::timing::{BadDuration, Timing};

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// The key in dotted form (`timing.lease`, `members[2].address`), or empty
    /// when the file as a whole could not be read as TOML.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: key `{}`: {}", self.file, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
    /// Straight into the systemd journal, each field a journal field.
    Journald,
}

/// A validated node configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub cluster: String,
    /// True for a node added to a running cluster with `tandem members add`:
    /// it never bootstraps a cluster of its own.
    pub join: bool,
    /// This node as the member list describes it.
    pub node: NodeInfo,
    pub node_id: NodeId,
    /// As written in the file; relative paths are resolved by the caller
    /// against the configuration file's directory.
    pub data_dir: PathBuf,
    pub grpc_listen: SocketAddr,
    pub dns_listen: SocketAddr,
    /// HTTP for load balancers, Prometheus and the status page; `None`: no
    /// HTTP server.
    pub http_listen: Option<SocketAddr>,
    /// The initial members, the same list on every node.
    pub members: Vec<NodeInfo>,
    pub timing: Timing,
    pub snapshot_after_entries: u64,
    /// A `tracing` filter (`info`, `tandem=debug,openraft=warn`); `RUST_LOG` wins.
    pub log_level: Option<String>,
    pub log_format: LogFormat,
    /// A watchdog device the agent feeds while it is healthy, and stops
    /// feeding when a stop of an exclusive group failed (the machine then
    /// resets when the device's timeout runs out).
    pub watchdog: Option<WatchdogConfig>,
    /// DNS queries answered per second per client address (IPv6: per /64)
    /// before the excess is dropped; `None`: no limit.
    pub dns_rate_limit: Option<u32>,
    /// Who may call the API (`[security]`); nothing is required by default.
    pub security: SecurityConfig,
    /// TLS for the API and node-to-node traffic (`[tls]`), with client
    /// certificates verified against `ca`.
    pub tls: Option<TlsFiles>,
    /// Scheduled backups taken by the coordinator (`[backup]`).
    pub backup: Option<BackupConfig>,
}

/// `[backup]`: where the coordinator writes verified backups, how often,
/// and how many it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupConfig {
    /// Relative paths are resolved by the caller, like `data_dir`.
    pub dir: PathBuf,
    pub interval: Duration,
    pub keep: u32,
}

/// How many scheduled backups are kept unless the configuration says otherwise.
pub const DEFAULT_BACKUP_KEEP: u32 = 24;

/// `[security]`: the token files (paths only: the binary reads them, the
/// core never holds a secret).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// When set, every call that changes anything needs this token
    /// (`authorization: Bearer TOKEN`) or a verified client certificate.
    pub operator_token_file: Option<PathBuf>,
    /// When set, reads need this token, the operator token or a verified
    /// client certificate; when absent, reads are open.
    pub viewer_token_file: Option<PathBuf>,
}

/// `[tls]`: PEM files. Relative paths are resolved by the caller against the
/// configuration file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate (chain), valid for its address in the member list.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signed every node's and operator's certificate.
    pub ca: PathBuf,
}

/// The DNS rate limit per client unless the configuration says otherwise.
pub const DEFAULT_DNS_RATE_LIMIT: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// `/dev/watchdog` (a hardware watchdog, or the `softdog` module).
    pub device: PathBuf,
    /// How often it is fed; well below the device's timeout.
    pub interval: Duration,
}

/// How often the watchdog is fed unless the configuration says otherwise.
pub const DEFAULT_WATCHDOG_INTERVAL: Duration = Duration::from_secs(1);

impl NodeConfig {
    /// The initial members by Raft id.
    pub fn members_by_id(&self) -> BTreeMap<NodeId, NodeInfo> {
        self.members.iter().map(|m| (node_id(&m.name), m.clone())).collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster: RawCluster,
    node: RawNode,
    members: Vec<RawMember>,
    #[serde(default)]
    timing: RawTiming,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    log: RawLog,
    watchdog: Option<RawWatchdog>,
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    security: RawSecurity,
    tls: Option<RawTls>,
    backup: Option<RawBackup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    dir: PathBuf,
    #[serde(default, deserialize_with = "duration")]
    interval: Option<Duration>,
    keep: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    operator_token_file: Option<PathBuf>,
    viewer_token_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDns {
    /// 0: no limit.
    rate_limit_per_client: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatchdog {
    device: PathBuf,
    #[serde(default, deserialize_with = "duration")]
    interval: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    #[serde(default)]
    join: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    #[serde(default)]
    role: NodeRole,
    data_dir: PathBuf,
    grpc_listen: String,
    dns_listen: String,
    http_listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    name: String,
    address: String,
    #[serde(default)]
    role: NodeRole,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTiming {
    #[serde(default, deserialize_with = "duration")]
    heartbeat_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    election_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    lease: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    clock_drift_margin: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    snapshot_after_entries: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    #[serde(default)]
    format: LogFormat,
}

/// Default number of log entries between two snapshots.
pub const DEFAULT_SNAPSHOT_AFTER_ENTRIES: u64 = 5000;

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    crate::timing::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(match e {
            BadDuration::Malformed => format!("expected a duration such as \"150ms\" or \"2s\", got {text:?}"),
            BadDuration::TooLong => crate::timing::too_long(&text),
        })
    })
}

/// Whether `name` is fit to name a node or a cluster: a DNS label.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

const NAME_EXPECTED: &str = "expected 1 to 63 lowercase letters, digits or '-', not starting or ending with '-'";

/// Checks a peer address: `HOST:PORT` with an IP address or a host name and
/// a port from 1 to 65535.
pub fn check_peer_address(address: &str) -> Result<(), String> {
    let expected = "expected HOST:PORT (for example \"10.0.0.1:7400\" or \"node1.example:7400\")";
    if address.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("{expected}, got {address:?}"));
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(format!("{expected}, got {address:?}"))
    }
}

impl NodeConfig {
    /// Parses and validates the text of a configuration file; `file` is used
    /// only in error messages.
    pub fn parse(text: &str, file: &str) -> Result<NodeConfig, ConfigError> {
        let err = |key: String, message: String| ConfigError {
            file: file.to_string(),
            key,
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml's message names the key and shows the offending line.
            err(String::new(), e.to_string().trim_end().replace('\n', "\n  "))
        })?;

        if !valid_name(&raw.cluster.name) {
            return Err(err(
                "cluster.name".into(),
                format!("{NAME_EXPECTED}, got {:?}", raw.cluster.name),
            ));
        }
        if !valid_name(&raw.node.name) {
            return Err(err(
                "node.name".into(),
                format!("{NAME_EXPECTED}, got {:?}", raw.node.name),
            ));
        }
        if raw.node.data_dir.as_os_str().is_empty() {
            return Err(err(
                "node.data_dir".into(),
                "expected a directory path, got an empty string".into(),
            ));
        }
        let listen = |key: &str, value: &str| {
            value.parse::<SocketAddr>().map_err(|_| {
                err(
                    format!("node.{key}"),
                    format!("expected IP:PORT (for example \"0.0.0.0:7400\" or \"[::]:7400\"), got {value:?}"),
                )
            })
        };
        let grpc_listen = listen("grpc_listen", &raw.node.grpc_listen)?;
        let dns_listen = listen("dns_listen", &raw.node.dns_listen)?;
        if grpc_listen == dns_listen {
            return Err(err(
                "node.dns_listen".into(),
                format!("expected an address other than node.grpc_listen, got the same {dns_listen}"),
            ));
        }
        let http_listen = match &raw.node.http_listen {
            None => None,
            Some(value) => {
                let http = listen("http_listen", value)?;
                for (other, addr) in [("grpc_listen", grpc_listen), ("dns_listen", dns_listen)] {
                    if http == addr {
                        return Err(err(
                            "node.http_listen".into(),
                            format!("expected an address other than node.{other}, got the same {http}"),
                        ));
                    }
                }
                Some(http)
            }
        };

        if raw.members.is_empty() {
            return Err(err("members".into(), "expected at least one [[members]] entry".into()));
        }
        let mut names = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        let mut ids = BTreeMap::new();
        let mut members = Vec::with_capacity(raw.members.len());
        for (i, m) in raw.members.iter().enumerate() {
            let key = |field: &str| format!("members[{i}].{field}");
            if !valid_name(&m.name) {
                return Err(err(key("name"), format!("{NAME_EXPECTED}, got {:?}", m.name)));
            }
            if !names.insert(m.name.as_str()) {
                return Err(err(
                    key("name"),
                    format!("expected unique member names, {:?} is listed twice", m.name),
                ));
            }
            check_peer_address(&m.address).map_err(|e| err(key("address"), e))?;
            if !addresses.insert(m.address.as_str()) {
                return Err(err(
                    key("address"),
                    format!("expected unique member addresses, {:?} is listed twice", m.address),
                ));
            }
            if let Some(other) = ids.insert(node_id(&m.name), m.name.as_str()) {
                return Err(err(
                    key("name"),
                    format!(
                        "the names {other:?} and {:?} hash to the same node id; rename one",
                        m.name
                    ),
                ));
            }
            members.push(NodeInfo {
                name: m.name.clone(),
                address: m.address.clone(),
                role: m.role,
            });
        }
        if !members.iter().any(|m| m.role == NodeRole::Member) {
            return Err(err(
                "members".into(),
                "expected at least one member with role \"member\"; all are witnesses".into(),
            ));
        }
        let Some(me) = members.iter().find(|m| m.name == raw.node.name).cloned() else {
            return Err(err(
                "members".into(),
                format!(
                    "expected this node ({:?}, from node.name) in the member list, found only {}",
                    raw.node.name,
                    members
                        .iter()
                        .map(|m| format!("{:?}", m.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        if me.role != raw.node.role {
            return Err(err(
                "node.role".into(),
                format!(
                    "expected the role the member list gives {:?} ({}), got {}",
                    me.name, me.role, raw.node.role
                ),
            ));
        }

        let defaults = Timing::default();
        let timing = Timing {
            heartbeat_interval: raw.timing.heartbeat_interval.unwrap_or(defaults.heartbeat_interval),
            election_timeout: raw.timing.election_timeout.unwrap_or(defaults.election_timeout),
            lease: raw.timing.lease.unwrap_or(defaults.lease),
            clock_drift_margin: raw.timing.clock_drift_margin.unwrap_or(defaults.clock_drift_margin),
        };
        timing
            .validate()
            .map_err(|(key, message)| err(format!("timing.{key}"), message))?;

        let snapshot_after_entries = raw
            .storage
            .snapshot_after_entries
            .unwrap_or(DEFAULT_SNAPSHOT_AFTER_ENTRIES);
        if snapshot_after_entries == 0 {
            return Err(err(
                "storage.snapshot_after_entries".into(),
                "expected a number greater than 0, got 0".into(),
            ));
        }

        if let Some(level) = &raw.log.level {
            let ok = ["error", "warn", "info", "debug", "trace"];
            if !ok.contains(&level.as_str()) {
                return Err(err(
                    "log.level".into(),
                    format!(
                        "expected one of {}, got {level:?} (use RUST_LOG for per-module filters)",
                        ok.join(", ")
                    ),
                ));
            }
        }

        let watchdog = match raw.watchdog {
            None => None,
            Some(w) => {
                if w.device.as_os_str().is_empty() {
                    return Err(err(
                        "watchdog.device".into(),
                        "expected a device path such as \"/dev/watchdog\", got an empty string".into(),
                    ));
                }
                let interval = w.interval.unwrap_or(DEFAULT_WATCHDOG_INTERVAL);
                if interval.is_zero() || interval > Duration::from_secs(60) {
                    return Err(err(
                        "watchdog.interval".into(),
                        format!("expected a duration between 1ms and 60s, got {interval:?}"),
                    ));
                }
                Some(WatchdogConfig {
                    device: w.device,
                    interval,
                })
            }
        };

        let path = |key: &str, value: &Option<PathBuf>, expected: &str| match value {
            Some(p) if p.as_os_str().is_empty() => {
                Err(err(key.into(), format!("expected {expected}, got an empty string")))
            }
            Some(p) => Ok(Some(p.clone())),
            None => Ok(None),
        };
        let token = "the path of a file holding the token (one line)";
        let security = SecurityConfig {
            operator_token_file: path("security.operator_token_file", &raw.security.operator_token_file, token)?,
            viewer_token_file: path("security.viewer_token_file", &raw.security.viewer_token_file, token)?,
        };
        let tls = match &raw.tls {
            None => None,
            Some(t) => {
                let required = |key: &str, value: &Option<PathBuf>, expected: &str| {
                    path(key, value, expected)?.ok_or_else(|| {
                        err(
                            key.into(),
                            format!("expected {expected} (cert, key and ca are all required in [tls])"),
                        )
                    })
                };
                Some(TlsFiles {
                    cert: required(
                        "tls.cert",
                        &t.cert,
                        "the path of this node's certificate (PEM), valid for its address in the member list",
                    )?,
                    key: required("tls.key", &t.key, "the path of this node's private key (PEM)")?,
                    ca: required(
                        "tls.ca",
                        &t.ca,
                        "the path of the CA certificate (PEM) that signed every node's and operator's certificate",
                    )?,
                })
            }
        };
        if let (Some(viewer), Some(operator)) = (&security.viewer_token_file, &security.operator_token_file)
            && viewer == operator
        {
            return Err(err(
                "security.viewer_token_file".into(),
                format!(
                    "expected a file other than security.operator_token_file, got the same {}",
                    viewer.display()
                ),
            ));
        }
        if security.viewer_token_file.is_some() && security.operator_token_file.is_none() && tls.is_none() {
            return Err(err(
                "security.viewer_token_file".into(),
                "needs security.operator_token_file or [tls] as well: otherwise no credential could make changes"
                    .into(),
            ));
        }

        if security.viewer_token_file.is_some()
            && let Some(http) = http_listen
            && !http.ip().is_loopback()
        {
            return Err(err(
                "node.http_listen".into(),
                format!(
                    "the HTTP endpoints (status page, /api, /metrics) answer reads without a token, but \
                     security.viewer_token_file requires one for reads: bind http_listen to a loopback address \
                     (behind a proxy that authenticates) or leave it out; got {http}"
                ),
            ));
        }

        let backup = match raw.backup {
            None => None,
            Some(b) => {
                if b.dir.as_os_str().is_empty() {
                    return Err(err(
                        "backup.dir".into(),
                        "expected the directory backups are written to, got an empty string".into(),
                    ));
                }
                let interval = b
                    .interval
                    .ok_or_else(|| err("backup.interval".into(), "expected a duration such as \"1h\"".into()))?;
                if interval < Duration::from_secs(1) {
                    return Err(err(
                        "backup.interval".into(),
                        format!("expected at least 1s, got {interval:?}"),
                    ));
                }
                let keep = match b.keep {
                    None => DEFAULT_BACKUP_KEEP,
                    Some(k) if (1..=10_000).contains(&k) => k as u32,
                    Some(k) => {
                        return Err(err(
                            "backup.keep".into(),
                            format!("expected a number from 1 to 10000, got {k}"),
                        ));
                    }
                };
                Some(BackupConfig {
                    dir: b.dir,
                    interval,
                    keep,
                })
            }
        };

        Ok(NodeConfig {
            backup,
            security,
            tls,
            watchdog,
            dns_rate_limit: match raw.dns.rate_limit_per_client {
                Some(0) => None,
                Some(n) => Some(n),
                None => Some(DEFAULT_DNS_RATE_LIMIT),
            },
            cluster: raw.cluster.name,
            join: raw.cluster.join,
            node_id: node_id(&me.name),
            node: me,
            data_dir: raw.node.data_dir,
            grpc_listen,
            dns_listen,
            http_listen,
            members,
            timing,
            snapshot_after_entries,
            log_level: raw.log.level,
            log_format: raw.log.format,
        })
    }
}

/// What `tandem config check` finds beyond each file's own validation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClusterCheck {
    /// Files that cannot belong to one cluster together, or a file whose
    /// node could not be reached where its members list says.
    pub errors: Vec<ConfigError>,
    /// Legal but probably unintended.
    pub warnings: Vec<ConfigError>,
}

/// Checks node configurations that were each parsed already: every one
/// alone (its gRPC listener where the member list says peers connect), and
/// all of them together as one cluster's files: the same cluster name,
/// member list and timing, a different node in each file, no two nodes
/// listening on the same specific address (two files that bind the same
/// IP:PORT would be on one host). `configs` are (file, config) pairs; the
/// first file is the reference the others are compared with.
pub fn check_cluster(configs: &[(String, NodeConfig)]) -> ClusterCheck {
    let mut out = ClusterCheck::default();
    let e = |file: &str, key: &str, message: String| ConfigError {
        file: file.to_string(),
        key: key.to_string(),
        message,
    };
    for (file, c) in configs {
        if let Some((i, m)) = c.members.iter().enumerate().find(|(_, m)| m.name == c.node.name)
            && let Ok(addr) = m.address.parse::<SocketAddr>()
        {
            if addr.port() != c.grpc_listen.port() {
                out.errors.push(e(
                    file,
                    "node.grpc_listen",
                    format!(
                        "expected port {} (members[{i}].address, where the other nodes connect to this one is {}), got {}",
                        addr.port(),
                        m.address,
                        c.grpc_listen
                    ),
                ));
            } else if !c.grpc_listen.ip().is_unspecified() && c.grpc_listen.ip() != addr.ip() {
                out.warnings.push(e(
                    file,
                    "node.grpc_listen",
                    format!(
                        "listens on {} but members[{i}].address says the other nodes connect to {}: \
                         fine only behind address translation",
                        c.grpc_listen, m.address
                    ),
                ));
            }
        }
    }
    let Some((first_file, first)) = configs.first() else {
        return out;
    };
    let show_members = |members: &[NodeInfo]| {
        let mut list: Vec<String> = members
            .iter()
            .map(|m| format!("{} {} {}", m.name, m.address, m.role))
            .collect();
        list.sort();
        list.join(", ")
    };
    let sorted = |members: &[NodeInfo]| {
        let mut list = members.to_vec();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    };
    let mut listeners: Vec<(SocketAddr, &str, &'static str)> = Vec::new();
    let mut nodes: BTreeMap<&str, &str> = BTreeMap::new();
    for (file, c) in configs {
        if c.cluster != first.cluster {
            out.errors.push(e(
                file,
                "cluster.name",
                format!(
                    "expected {:?}, the cluster of {first_file}, got {:?}",
                    first.cluster, c.cluster
                ),
            ));
        }
        if sorted(&c.members) != sorted(&first.members) {
            out.errors.push(e(
                file,
                "members",
                format!(
                    "expected the member list of {first_file} ({}), got {}",
                    show_members(&first.members),
                    show_members(&c.members)
                ),
            ));
        }
        let timing = [
            (
                "heartbeat_interval",
                c.timing.heartbeat_interval,
                first.timing.heartbeat_interval,
            ),
            (
                "election_timeout",
                c.timing.election_timeout,
                first.timing.election_timeout,
            ),
            ("lease", c.timing.lease, first.timing.lease),
            (
                "clock_drift_margin",
                c.timing.clock_drift_margin,
                first.timing.clock_drift_margin,
            ),
        ];
        for (key, got, expected) in timing {
            if got != expected {
                out.errors.push(e(
                    file,
                    &format!("timing.{key}"),
                    format!(
                        "expected {:?} as in {first_file} (every node must use the same timing), got {:?}",
                        humantime::format_duration(expected).to_string(),
                        humantime::format_duration(got).to_string()
                    ),
                ));
            }
        }
        if let Some(other) = nodes.insert(c.node.name.as_str(), file.as_str()) {
            out.errors.push(e(
                file,
                "node.name",
                format!(
                    "expected each file to configure a different node, {other} configures {:?} too",
                    c.node.name
                ),
            ));
        }
        let mine = [
            Some(("node.grpc_listen", c.grpc_listen)),
            Some(("node.dns_listen", c.dns_listen)),
            c.http_listen.map(|a| ("node.http_listen", a)),
        ];
        for (key, addr) in mine.into_iter().flatten() {
            if addr.ip().is_unspecified() {
                continue;
            }
            if let Some((_, other_file, other_key)) =
                listeners.iter().find(|(a, f, _)| *a == addr && *f != file.as_str())
            {
                out.errors.push(e(
                    file,
                    key,
                    format!(
                        "expected an address no other node listens on, got {addr}, which {other_file} binds too \
                         ({other_key}): two nodes cannot listen on one address"
                    ),
                ));
            }
            listeners.push((addr, file.as_str(), key));
        }
    }
    let missing: Vec<&str> = first
        .members
        .iter()
        .map(|m| m.name.as_str())
        .filter(|name| !nodes.contains_key(name))
        .collect();
    if configs.len() > 1 && !missing.is_empty() {
        out.warnings.push(e(
            first_file,
            "members",
            format!("no file given for {}: those nodes were not checked", missing.join(", ")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[cluster]
name = "demo"

[node]
name = "site-a"
role = "member"
data_dir = "/var/lib/tandem"
grpc_listen = "127.0.0.1:7401"
dns_listen = "127.0.0.1:5301"

[[members]]
name = "site-a"
address = "127.0.0.1:7401"

[[members]]
name = "site-b"
address = "127.0.0.1:7402"

[[members]]
name = "witness"
address = "127.0.0.1:7403"
role = "witness"

[timing]
heartbeat_interval = "50ms"
lease = "3s"
"#;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(text, "site-a.toml")
    }

    fn refused(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.cluster, "demo");
        assert_eq!(c.node.name, "site-a");
        assert_eq!(c.members.len(), 3);
        assert_eq!(c.members[2].role, NodeRole::Witness);
        assert_eq!(c.timing.lease, Duration::from_secs(3));
        assert_eq!(c.timing.election_timeout, Timing::default().election_timeout);
        assert_eq!(c.node_id, node_id("site-a"));
    }

    #[test]
    fn unknown_key_is_refused() {
        let msg = refused(&GOOD.replace("lease = \"3s\"", "lease = \"3s\"\nleese = \"1s\""));
        assert!(msg.starts_with("site-a.toml: "), "{msg}");
        assert!(msg.contains("unknown field `leese`"), "{msg}");
    }

    #[test]
    fn bad_duration_is_refused() {
        let msg = refused(&GOOD.replace("\"50ms\"", "\"fast\""));
        assert!(msg.contains("heartbeat_interval"), "{msg}");
        assert!(msg.contains("expected a duration such as \"150ms\""), "{msg}");
    }

    #[test]
    fn durations_beyond_a_year_are_refused_with_their_key() {
        for (from, to, key) in [
            ("\"50ms\"", "\"400000000000y\"", "heartbeat_interval"),
            (
                "lease = \"3s\"",
                "lease = \"3s\"\nclock_drift_margin = \"400000000000y\"",
                "clock_drift_margin",
            ),
            ("lease = \"3s\"", "lease = \"400000000000y\"", "lease"),
        ] {
            let msg = refused(&GOOD.replace(from, to));
            assert!(msg.starts_with("site-a.toml: ") && msg.contains(key), "{msg}");
            assert!(msg.contains("expected at most 365days, got \"400000000000y\""), "{msg}");
        }
    }

    #[test]
    fn backup_schedules_are_checked_with_their_key() {
        let ok = NodeConfig::parse(
            &format!("{GOOD}\n[backup]\ndir = \"backups\"\ninterval = \"1h\"\nkeep = 3\n"),
            "site-a.toml",
        )
        .unwrap();
        let b = ok.backup.unwrap();
        assert_eq!(
            (b.dir.to_str(), b.interval, b.keep),
            (Some("backups"), Duration::from_secs(3600), 3)
        );
        let default_keep = NodeConfig::parse(
            &format!("{GOOD}\n[backup]\ndir = \"b\"\ninterval = \"10m\"\n"),
            "site-a.toml",
        )
        .unwrap();
        assert_eq!(default_keep.backup.unwrap().keep, DEFAULT_BACKUP_KEEP);
        for (table, key, what) in [
            ("dir = \"\"\ninterval = \"1h\"", "backup.dir", "empty string"),
            ("dir = \"b\"", "backup.interval", "expected a duration"),
            ("dir = \"b\"\ninterval = \"10ms\"", "backup.interval", "at least 1s"),
            ("dir = \"b\"\ninterval = \"1h\"\nkeep = 0", "backup.keep", "got 0"),
        ] {
            let msg = refused(&format!("{GOOD}\n[backup]\n{table}\n"));
            assert!(msg.contains(&format!("key `{key}`")) && msg.contains(what), "{msg}");
        }
        let msg = refused(&format!("{GOOD}\n[backup]\ndir = \"b\"\ninterval = \"often\"\n"));
        assert!(msg.contains("interval"), "{msg}");
    }

    #[test]
    fn bad_addresses_are_refused() {
        let msg = refused(&GOOD.replace("grpc_listen = \"127.0.0.1:7401\"", "grpc_listen = \"localhost\""));
        assert!(msg.contains("key `node.grpc_listen`: expected IP:PORT"), "{msg}");
        let msg = refused(&GOOD.replace(
            "dns_listen = \"127.0.0.1:5301\"",
            "dns_listen = \"127.0.0.1:5301\"\nhttp_listen = \"*:8080\"",
        ));
        assert!(
            msg.contains("key `node.http_listen`: expected IP:PORT (for example \"0.0.0.0:7400\" or \"[::]:7400\"), got \"*:8080\""),
            "{msg}"
        );
        let msg = refused(&GOOD.replace(
            "dns_listen = \"127.0.0.1:5301\"",
            "dns_listen = \"127.0.0.1:5301\"\nhttp_listen = \"127.0.0.1:7401\"",
        ));
        assert!(
            msg.contains("key `node.http_listen`: expected an address other than node.grpc_listen"),
            "{msg}"
        );
        let c = parse(&GOOD.replace(
            "dns_listen = \"127.0.0.1:5301\"",
            "dns_listen = \"127.0.0.1:5301\"\nhttp_listen = \"127.0.0.1:8400\"",
        ))
        .unwrap();
        assert_eq!(c.http_listen, Some("127.0.0.1:8400".parse().unwrap()));
        assert_eq!(
            parse(GOOD).unwrap().http_listen,
            None,
            "no HTTP server unless configured"
        );
        let msg = refused(&GOOD.replace("\"127.0.0.1:7402\"", "\"127.0.0.1:99999\""));
        assert!(msg.contains("key `members[1].address`: expected HOST:PORT"), "{msg}");
        let msg = refused(&GOOD.replace("\"127.0.0.1:7402\"", "\"300.1.1.1:7402\""));
        assert!(msg.contains("members[1].address"), "{msg}");
        assert!(check_peer_address("node1.example:7400").is_ok());
    }

    #[test]
    fn duplicate_names_are_refused() {
        let msg = refused(&GOOD.replace("name = \"site-b\"", "name = \"site-a\""));
        assert!(
            msg.contains("key `members[1].name`: expected unique member names, \"site-a\" is listed twice"),
            "{msg}"
        );
    }

    #[test]
    fn node_missing_from_its_member_list_is_refused() {
        let msg = refused(&GOOD.replace("name = \"site-a\"\naddress", "name = \"site-c\"\naddress"));
        assert!(
            msg.contains("key `members`: expected this node (\"site-a\", from node.name) in the member list"),
            "{msg}"
        );
    }

    #[test]
    fn role_must_match_member_list() {
        let msg = refused(&GOOD.replace("role = \"member\"", "role = \"witness\""));
        assert!(msg.contains("key `node.role`"), "{msg}");
        let msg = refused(&GOOD.replace("role = \"member\"", "role = \"boss\""));
        assert!(msg.contains("unknown variant `boss`"), "{msg}");
    }

    #[test]
    fn unsafe_timing_is_refused() {
        let msg = refused(&GOOD.replace("lease = \"3s\"", "lease = \"200ms\""));
        assert!(msg.contains("key `timing.lease`: expected more than"), "{msg}");
    }

    #[test]
    fn bad_names_are_refused() {
        let msg = refused(&GOOD.replace("name = \"demo\"", "name = \"Demo Cluster\""));
        assert!(msg.contains("key `cluster.name`"), "{msg}");
    }

    #[test]
    fn security_and_tls_parse() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.security, SecurityConfig::default());
        assert_eq!(c.tls, None);
        let text = format!(
            "{GOOD}\n[security]\noperator_token_file = \"op.token\"\nviewer_token_file = \"/etc/tandem/viewer.token\"\n\n[tls]\ncert = \"a.pem\"\nkey = \"a.key\"\nca = \"ca.pem\"\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.security.operator_token_file, Some(PathBuf::from("op.token")));
        assert_eq!(
            c.security.viewer_token_file,
            Some(PathBuf::from("/etc/tandem/viewer.token"))
        );
        let tls = c.tls.unwrap();
        assert_eq!(
            (tls.cert, tls.key, tls.ca),
            ("a.pem".into(), "a.key".into(), "ca.pem".into())
        );
    }

    #[test]
    fn bad_security_and_tls_are_refused() {
        let msg = refused(&format!("{GOOD}\n[tls]\ncert = \"a.pem\"\nkey = \"a.key\"\n"));
        assert!(
            msg.contains("key `tls.ca`: expected the path of the CA certificate"),
            "{msg}"
        );
        let msg = refused(&format!("{GOOD}\n[security]\noperator_token_file = \"\"\n"));
        assert!(
            msg.contains("key `security.operator_token_file`: expected the path"),
            "{msg}"
        );
        let msg = refused(&format!(
            "{}\n[security]\noperator_token_file = \"o\"\nviewer_token_file = \"v\"\n",
            GOOD.replace(
                "dns_listen = \"127.0.0.1:5301\"",
                "dns_listen = \"127.0.0.1:5301\"\nhttp_listen = \"0.0.0.0:8080\""
            )
        ));
        assert!(
            msg.contains("key `node.http_listen`: the HTTP endpoints") && msg.contains("got 0.0.0.0:8080"),
            "{msg}"
        );
        let msg = refused(&format!("{GOOD}\n[security]\nviewer_token_file = \"v\"\n"));
        assert!(
            msg.contains("key `security.viewer_token_file`: needs security.operator_token_file"),
            "{msg}"
        );
        let msg = refused(&format!(
            "{GOOD}\n[security]\noperator_token_file = \"t\"\nviewer_token_file = \"t\"\n"
        ));
        assert!(msg.contains("expected a file other than"), "{msg}");
        let msg = refused(&format!("{GOOD}\n[security]\noperator_token = \"t\"\n"));
        assert!(msg.contains("unknown field `operator_token`"), "{msg}");
    }

    fn with(name: &str, grpc: &str, dns: &str) -> String {
        GOOD.replace("name = \"site-a\"\nrole", &format!("name = \"{name}\"\nrole"))
            .replace("grpc_listen = \"127.0.0.1:7401\"", &format!("grpc_listen = \"{grpc}\""))
            .replace("dns_listen = \"127.0.0.1:5301\"", &format!("dns_listen = \"{dns}\""))
    }

    fn check(files: &[(&str, String)]) -> ClusterCheck {
        let configs: Vec<(String, NodeConfig)> = files
            .iter()
            .map(|(f, t)| (f.to_string(), NodeConfig::parse(t, f).unwrap_or_else(|e| panic!("{e}"))))
            .collect();
        check_cluster(&configs)
    }

    #[test]
    fn a_cluster_s_files_check_together() {
        let a = ("a.toml", GOOD.to_string());
        let b = ("b.toml", with("site-b", "127.0.0.1:7402", "127.0.0.1:5302"));
        let w = (
            "w.toml",
            with("witness", "127.0.0.1:7403", "127.0.0.1:5303")
                .replace("role = \"member\"\ndata", "role = \"witness\"\ndata"),
        );
        let ok = check(&[a.clone(), b.clone(), w.clone()]);
        assert_eq!(ok, ClusterCheck::default());
        // Only two of three: a warning, not an error.
        let some = check(&[a.clone(), b.clone()]);
        assert!(some.errors.is_empty(), "{some:?}");
        assert!(
            some.warnings[0].to_string().contains("no file given for witness"),
            "{some:?}"
        );

        let other = ("b.toml", b.1.replace("name = \"demo\"", "name = \"other\""));
        let msg = check(&[a.clone(), other]).errors[0].to_string();
        assert_eq!(
            msg,
            "b.toml: key `cluster.name`: expected \"demo\", the cluster of a.toml, got \"other\""
        );

        let slow = ("b.toml", b.1.replace("lease = \"3s\"", "lease = \"4s\""));
        let msg = check(&[a.clone(), slow]).errors[0].to_string();
        assert!(
            msg.starts_with("b.toml: key `timing.lease`: expected \"3s\" as in a.toml"),
            "{msg}"
        );
        assert!(msg.ends_with("got \"4s\""), "{msg}");

        let moved = ("b.toml", b.1.replace("\"127.0.0.1:7403\"", "\"127.0.0.1:7404\""));
        let msg = check(&[a.clone(), moved]).errors[0].to_string();
        assert!(
            msg.starts_with("b.toml: key `members`: expected the member list of a.toml"),
            "{msg}"
        );
        assert!(msg.contains("witness 127.0.0.1:7404 witness"), "{msg}");

        let twice = check(&[a.clone(), ("a2.toml", a.1.clone())]);
        let msgs: Vec<String> = twice.errors.iter().map(ToString::to_string).collect();
        assert!(msgs.iter().any(|m| m.contains("a2.toml: key `node.name`: expected each file to configure a different node, a.toml configures \"site-a\" too")), "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.contains("a2.toml: key `node.grpc_listen`")
                && m.contains("127.0.0.1:7401, which a.toml binds too")),
            "{msgs:?}"
        );

        // The node must listen where its peers connect.
        let off = ("b.toml", with("site-b", "127.0.0.1:7499", "127.0.0.1:5302"));
        let msg = check(&[off]).errors[0].to_string();
        assert!(
            msg.starts_with("b.toml: key `node.grpc_listen`: expected port 7402"),
            "{msg}"
        );
        assert!(msg.ends_with("got 127.0.0.1:7499"), "{msg}");
        let any = ("b.toml", with("site-b", "0.0.0.0:7402", "0.0.0.0:5302"));
        assert_eq!(
            check(&[any.clone(), ("c.toml", with("site-a", "0.0.0.0:7401", "0.0.0.0:5302"))]).errors,
            vec![]
        );
    }

    #[test]
    fn the_shipped_examples_parse() {
        for (file, text) in [
            ("site-a.toml", include_str!("../../../deploy/examples/site-a.toml")),
            ("site-b.toml", include_str!("../../../deploy/examples/site-b.toml")),
            ("witness.toml", include_str!("../../../deploy/examples/witness.toml")),
        ] {
            let c = NodeConfig::parse(text, file).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.members.len(), 3, "{file}");
        }
    }
}
