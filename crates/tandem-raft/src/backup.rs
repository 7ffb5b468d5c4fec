//! Backups of the cluster state: one file, a JSON header line then the JSON
//! payload, verified by loading it into a scratch state machine.
//!
//! The payload is exactly what the state machine stores and a snapshot
//! carries (an [`AppliedState`]: last applied log id, membership, the
//! cluster state), with every secret of the spec redacted. The header names
//! the cluster, the index and term the state is at, when and by whom it was
//! taken, the Tandem version, the payload's length and SHA-256, and counts
//! of what it holds, so `tandem backup show` needs no parsing of the payload
//! and a flipped byte anywhere is found.
//!
//! Verification ([`verify`]): the header parses and names this format, the
//! payload has the length and checksum the header says, it decodes, every
//! member's id is the one its name gives, the counts and index agree with
//! the payload, and the payload loads through the real state machine into a
//! scratch in-memory database ([`Store::open_in_memory`]) and reads back
//! equal; when the state it was taken from is at hand, it must equal that
//! state redacted.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tandem_core::membership::node_id;
use tandem_core::spec::{REDACTED, redact_source, redact_values};

use crate::SnapshotMeta;
use crate::store::{AppliedState, Identity, Store};
use openraft::storage::RaftStateMachine;

/// The first field of every header.
pub const FORMAT: &str = "tandem-backup";
/// The payload layout this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The first line of a backup file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub format_version: u32,
    /// The cluster's name (its identity: node ids derive from names).
    pub cluster: String,
    /// The node (the coordinator) that took it.
    pub taken_by: String,
    /// The log index and term the state is at (the last applied entry).
    pub index: u64,
    pub term: u64,
    /// Wall-clock time it was taken, in milliseconds since the epoch.
    pub taken_unix_ms: u64,
    /// The version of the Tandem that took it.
    pub tandem_version: String,
    pub payload_bytes: u64,
    /// Lowercase hex SHA-256 of the payload.
    pub sha256: String,
    pub counts: Counts,
}

/// What a backup holds, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub members: u64,
    pub voters: u64,
    pub spec_version: u64,
    pub groups: u64,
    pub resources: u64,
    pub fence_devices: u64,
    pub events: u64,
    pub transitions: u64,
}

impl Counts {
    pub fn of(state: &AppliedState) -> Counts {
        let membership = state.last_membership.membership();
        let spec = &state.cluster.spec;
        Counts {
            members: membership.nodes().count() as u64,
            voters: membership.voter_ids().count() as u64,
            spec_version: state.cluster.spec_version,
            groups: spec.groups.len() as u64,
            resources: spec.groups.iter().map(|g| g.resources.len() as u64).sum(),
            fence_devices: spec.fencing.devices.len() as u64,
            events: state.cluster.events.len() as u64,
            transitions: state.cluster.transitions.len() as u64,
        }
    }
}

/// A decoded backup.
#[derive(Debug, Clone)]
pub struct Backup {
    pub header: Header,
    pub state: AppliedState,
}

/// Who takes a backup, for its header.
#[derive(Debug, Clone)]
pub struct Taker {
    pub cluster: String,
    pub node: String,
    pub taken_unix_ms: u64,
}

/// Why a backup cannot be taken, read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a Tandem backup: {0}")]
    Format(String),
    #[error("the payload is damaged: {0}")]
    Checksum(String),
    #[error("the backup does not agree with itself: {0}")]
    Inconsistent(String),
    #[error("loading it into a scratch state machine failed: {0}")]
    Load(String),
    #[error("it differs from the state it was taken from: {0}")]
    Differs(String),
    #[error("{0}")]
    Encode(String),
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
}

/// The state as a backup holds it: every secret fence parameter value
/// replaced by [`REDACTED`], in the spec, its source text and anywhere else
/// in the state.
pub fn redact(state: &AppliedState) -> Result<AppliedState, BackupError> {
    let spec = &state.cluster.spec;
    let secrets: Vec<String> = spec
        .fencing
        .devices
        .values()
        .flat_map(|d| d.secret_values())
        .map(str::to_string)
        .collect();
    let mut out = state.clone();
    out.cluster.spec_source = redact_source(&state.cluster.spec_source, spec);
    for device in out.cluster.spec.fencing.devices.values_mut() {
        let secret: Vec<String> = device
            .params
            .iter()
            .filter(|(name, value)| !value.is_empty() && device.is_secret(name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in secret {
            device.params.insert(name, REDACTED.to_string());
        }
    }
    if secrets.is_empty() {
        return Ok(out);
    }
    // Anything else that may carry a secret (an exec device's command line,
    // an event's message): a pass over the text, as JSON writes it too.
    let text = serde_json::to_string(&out).map_err(|e| BackupError::Encode(format!("cannot encode the state: {e}")))?;
    let mut forms: Vec<String> = secrets.clone();
    for s in &secrets {
        let json = serde_json::to_string(s).unwrap_or_default();
        forms.push(json.trim_matches('"').to_string());
    }
    let forms: Vec<&str> = forms.iter().map(String::as_str).collect();
    if forms.iter().any(|f| !f.is_empty() && text.contains(f)) {
        let swept = redact_values(&text, &forms);
        out = serde_json::from_str(&swept)
            .map_err(|e| BackupError::Encode(format!("cannot redact a secret out of the state: {e}")))?;
    }
    Ok(out)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The backup file's bytes for `state` (redacted here).
pub fn encode(state: &AppliedState, taker: &Taker) -> Result<Vec<u8>, BackupError> {
    let state = redact(state)?;
    let payload =
        serde_json::to_vec(&state).map_err(|e| BackupError::Encode(format!("cannot encode the state: {e}")))?;
    let last = state
        .last_applied
        .ok_or_else(|| BackupError::Encode("the state machine has applied nothing yet".into()))?;
    let header = Header {
        format: FORMAT.to_string(),
        format_version: FORMAT_VERSION,
        cluster: taker.cluster.clone(),
        taken_by: taker.node.clone(),
        index: last.index,
        term: last.leader_id.term,
        taken_unix_ms: taker.taken_unix_ms,
        tandem_version: env!("CARGO_PKG_VERSION").to_string(),
        payload_bytes: payload.len() as u64,
        sha256: sha256_hex(&payload),
        counts: Counts::of(&state),
    };
    let mut out =
        serde_json::to_vec(&header).map_err(|e| BackupError::Encode(format!("cannot encode the header: {e}")))?;
    out.push(b'\n');
    out.extend_from_slice(&payload);
    out.push(b'\n');
    Ok(out)
}

/// Only the header (for `show` without decoding the payload); checks nothing
/// beyond its own format.
pub fn header(bytes: &[u8]) -> Result<Header, BackupError> {
    let line = match bytes.iter().position(|&b| b == b'\n') {
        Some(end) => &bytes[..end],
        None => {
            return Err(BackupError::Format(
                "no header line (the file has no line break)".into(),
            ));
        }
    };
    let header: Header = serde_json::from_slice(line)
        .map_err(|e| BackupError::Format(format!("the first line is not a backup header: {e}")))?;
    if header.format != FORMAT {
        return Err(BackupError::Format(format!(
            "format is {:?}, expected {FORMAT:?}",
            header.format
        )));
    }
    if header.format_version != FORMAT_VERSION {
        return Err(BackupError::Format(format!(
            "format_version {} is not one this Tandem reads ({FORMAT_VERSION})",
            header.format_version
        )));
    }
    Ok(header)
}

/// Decodes a backup and checks it against itself: checksum, length, member
/// identities, index and counts.
pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
    let header = header(bytes)?;
    let start = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |p| p + 1);
    let mut payload = &bytes[start..];
    if payload.last() == Some(&b'\n') {
        payload = &payload[..payload.len() - 1];
    }
    if payload.len() as u64 != header.payload_bytes {
        return Err(BackupError::Checksum(format!(
            "the payload is {} bytes, the header says {} (truncated or extended)",
            payload.len(),
            header.payload_bytes
        )));
    }
    let sum = sha256_hex(payload);
    if sum != header.sha256 {
        return Err(BackupError::Checksum(format!(
            "SHA-256 of the payload is {sum}, the header says {}",
            header.sha256
        )));
    }
    let state: AppliedState = serde_json::from_slice(payload)
        .map_err(|e| BackupError::Inconsistent(format!("the payload does not decode: {e}")))?;
    if header.cluster.is_empty() {
        return Err(BackupError::Inconsistent("the header names no cluster".into()));
    }
    for (id, node) in state.last_membership.membership().nodes() {
        if *id != node_id(&node.name) {
            return Err(BackupError::Inconsistent(format!(
                "member {:?} has id {id}, its name gives {}",
                node.name,
                node_id(&node.name)
            )));
        }
    }
    let last = state
        .last_applied
        .ok_or_else(|| BackupError::Inconsistent("the payload has no last applied index".into()))?;
    if (last.index, last.leader_id.term) != (header.index, header.term) {
        return Err(BackupError::Inconsistent(format!(
            "the payload is at index {} term {}, the header says index {} term {}",
            last.index, last.leader_id.term, header.index, header.term
        )));
    }
    let counts = Counts::of(&state);
    if counts != header.counts {
        return Err(BackupError::Inconsistent(format!(
            "the payload holds {counts:?}, the header says {:?}",
            header.counts
        )));
    }
    Ok(Backup { header, state })
}

/// Loads `backup` into a scratch state machine on an in-memory database, the
/// way a snapshot is installed, and reads it back from that database.
pub async fn load_scratch(backup: &Backup) -> Result<AppliedState, BackupError> {
    let identity = Identity {
        cluster: backup.header.cluster.clone(),
        node_name: "(scratch)".into(),
        node_id: 0,
    };
    let store = Store::open_in_memory(&identity).map_err(|e| BackupError::Load(e.to_string()))?;
    let mut sm = store
        .state_machine()
        .await
        .map_err(|e| BackupError::Load(e.to_string()))?;
    let meta = SnapshotMeta {
        last_log_id: backup.state.last_applied,
        last_membership: backup.state.last_membership.clone(),
    };
    let data = serde_json::to_vec(&backup.state).map_err(|e| BackupError::Load(e.to_string()))?;
    sm.install_snapshot(&meta, data)
        .await
        .map_err(|e| BackupError::Load(e.to_string()))?;
    // Read back from the database, not from memory.
    let reloaded = store
        .state_machine()
        .await
        .map_err(|e| BackupError::Load(e.to_string()))?;
    let loaded = reloaded.subscribe().borrow().as_ref().clone();
    if loaded != backup.state {
        return Err(BackupError::Load(
            "the state read back from the scratch state machine differs from the payload".into(),
        ));
    }
    let mut probe = reloaded;
    let (applied, _) = probe
        .applied_state()
        .await
        .map_err(|e| BackupError::Load(e.to_string()))?;
    if applied.map(|l| l.index) != Some(backup.header.index) {
        return Err(BackupError::Load(format!(
            "the scratch state machine is at {:?}, the backup at index {}",
            applied.map(|l| l.index),
            backup.header.index
        )));
    }
    Ok(loaded)
}

/// Full verification of a backup's bytes; with `taken_from`, also that it
/// holds exactly that state (redacted).
pub async fn verify(bytes: &[u8], taken_from: Option<&AppliedState>) -> Result<Backup, BackupError> {
    let backup = decode(bytes)?;
    load_scratch(&backup).await?;
    if let Some(original) = taken_from {
        let expected = redact(original)?;
        if expected != backup.state {
            let what = if expected.last_applied != backup.state.last_applied {
                format!(
                    "index {:?} against {:?}",
                    backup.state.last_applied.map(|l| l.index),
                    expected.last_applied.map(|l| l.index)
                )
            } else {
                "same index, other content".to_string()
            };
            return Err(BackupError::Differs(what));
        }
    }
    Ok(backup)
}

/// Writes `bytes` to a new file `path`, atomically (a temporary file in the
/// same directory, fsync'ed, then linked to its name, which fails if the
/// name exists) and never over an existing file.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let fail = |reason: String| BackupError::File {
        path: path.to_owned(),
        reason,
    };
    if path.exists() {
        return Err(fail("already exists; not overwritten (choose another name)".into()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| fail("is not a file name".into()))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(fail("already exists; not overwritten (choose another name)".into()))
        }
        Err(e) => Err(fail(format!("cannot write it: {e}"))),
    }
}

/// Reads a backup file and verifies it ([`verify`]); errors name the file.
pub async fn verify_file(path: &Path) -> Result<Backup, BackupError> {
    let bytes = std::fs::read(path).map_err(|e| BackupError::File {
        path: path.to_owned(),
        reason: format!("cannot read it: {e}"),
    })?;
    verify(&bytes, None).await.map_err(|e| BackupError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::Membership;
    use tandem_core::NodeInfo;
    use tandem_core::membership::NodeRole;
    use tandem_core::state::Command;

    use super::*;
    use crate::StoredMembership;

    const SPEC: &str = r#"
[[groups]]
name = "web"
[[groups.resources]]
name = "app"
agent = "exec"
command = "/bin/sleep"
args = ["infinity"]

[fencing.devices.ipmi]
agent = "exec"
command = ["/bin/true", "hunter2-secret"]
params = { password = "hunter2-secret", ip = "10.0.0.1" }

[fencing.nodes.b]
levels = [["ipmi"]]
"#;

    fn state() -> AppliedState {
        let mut cluster = tandem_core::state::ClusterState::default();
        let spec = tandem_core::spec::Spec::parse(SPEC, "spec.toml", &nodes_info()).unwrap();
        cluster.apply(&Command::ApplySpec {
            spec,
            source: SPEC.into(),
            expected_version: 0,
            summary: vec![],
            actor: "test".into(),
            at_unix_ms: 1,
        });
        let nodes: BTreeMap<u64, NodeInfo> = nodes_info().into_iter().map(|n| (node_id(&n.name), n)).collect();
        let voters: BTreeSet<u64> = nodes.keys().copied().collect();
        let log_id = |index| crate::LogId::new(openraft::impls::leader_id_adv::LeaderId { term: 3, node_id: 1 }, index);
        AppliedState {
            last_applied: Some(log_id(7)),
            last_membership: StoredMembership::new(Some(log_id(1)), Membership::new(vec![voters], nodes).unwrap()),
            cluster,
        }
    }

    fn nodes_info() -> Vec<NodeInfo> {
        ["a", "b"]
            .iter()
            .map(|n| NodeInfo {
                name: n.to_string(),
                address: format!("{n}:1"),
                role: NodeRole::Member,
            })
            .collect()
    }

    fn taker() -> Taker {
        Taker {
            cluster: "c".into(),
            node: "a".into(),
            taken_unix_ms: 5,
        }
    }

    #[tokio::test]
    async fn round_trip_redacts_and_verifies() {
        let s = state();
        let bytes = encode(&s, &taker()).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("hunter2-secret"), "{text}");
        assert!(text.contains("10.0.0.1"));
        let b = verify(&bytes, Some(&s)).await.unwrap();
        assert_eq!(b.header.index, 7);
        assert_eq!(b.header.term, 3);
        assert_eq!(b.header.counts.groups, 1);
        assert_eq!(b.header.counts.members, 2);
    }

    #[tokio::test]
    async fn any_flipped_payload_byte_is_found() {
        let bytes = encode(&state(), &taker()).unwrap();
        let start = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        for i in (start..bytes.len() - 1).step_by(37) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let e = verify(&bad, None).await.unwrap_err();
            assert!(matches!(e, BackupError::Checksum(_)), "byte {i}: {e}");
        }
    }

    #[tokio::test]
    async fn a_backup_of_another_state_differs() {
        let s = state();
        let bytes = encode(&s, &taker()).unwrap();
        let mut other = s.clone();
        other.cluster.spec_version += 1;
        let e = verify(&bytes, Some(&other)).await.unwrap_err();
        assert!(matches!(e, BackupError::Differs(_)), "{e}");
    }

    /// The figure for a large spec: 1,000 groups of 10 resources. Prints
    /// the size and the time to encode, verify (decode, checksum, scratch
    /// load, compare) and write; asserts the round trip.
    #[tokio::test]
    async fn a_10000_resource_spec_round_trips_with_its_figures() {
        let mut text = String::from(
            "[fencing.devices.ipmi]\nagent = \"exec\"\ncommand = [\"/bin/true\"]\n\
             params = { password = \"hunter2-secret\" }\n\n[fencing.nodes.b]\nlevels = [[\"ipmi\"]]\n",
        );
        for g in 0..1000 {
            text.push_str(&format!("\n[[groups]]\nname = \"g{g}\"\n"));
            for r in 0..10 {
                text.push_str(&format!(
                    "[[groups.resources]]\nname = \"r{r}\"\nagent = \"exec\"\ncommand = \"/bin/sleep\"\nargs = [\"{g}{r}\"]\n"
                ));
            }
        }
        let spec = tandem_core::spec::Spec::parse(&text, "big.toml", &nodes_info()).unwrap();
        let mut s = state();
        s.cluster.apply(&Command::ApplySpec {
            spec,
            source: text,
            expected_version: 1,
            summary: vec![],
            actor: "test".into(),
            at_unix_ms: 2,
        });
        assert_eq!(Counts::of(&s).resources, 10_000);
        let t = std::time::Instant::now();
        let bytes = encode(&s, &taker()).unwrap();
        let encoded = t.elapsed();
        let t = std::time::Instant::now();
        let b = verify(&bytes, Some(&s)).await.unwrap();
        let verified = t.elapsed();
        let dir = tempfile::tempdir().unwrap();
        let t = std::time::Instant::now();
        write_new(&dir.path().join("big.jsonl"), &bytes).unwrap();
        let written = t.elapsed();
        assert_eq!(b.header.counts.resources, 10_000);
        assert!(!String::from_utf8_lossy(&bytes).contains("hunter2-secret"));
        println!(
            "backup of a 10,000-resource spec: {} bytes; encode {:?}, verify (checksum, decode, scratch load, compare) {:?}, write+fsync {:?}",
            bytes.len(),
            encoded,
            verified,
            written
        );
    }

    #[test]
    fn a_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tbk");
        write_new(&path, b"one").unwrap();
        let e = write_new(&path, b"two").unwrap_err().to_string();
        assert!(e.contains("b.tbk") && e.contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
