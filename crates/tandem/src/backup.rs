//! `tandem backup create | verify | show`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tandem_proto::v1 as pb;
use tandem_raft::backup::{self, Header};

use crate::client::{connect, failed};
use crate::output::rfc3339_ms;
use crate::{Connection, Failure, Outcome, OutputFormat};

/// The file name `create` picks when none is given.
fn default_name(h: &Header) -> PathBuf {
    PathBuf::from(format!("tandem-backup-{}-{}.jsonl", h.cluster, h.index))
}

/// Asks the coordinator for a backup, verifies it here (checksum, format,
/// scratch load) and writes it to a new file, atomically.
pub async fn create(conn: &Connection, output_file: Option<PathBuf>, output: OutputFormat) -> Outcome {
    if let Some(path) = &output_file
        && path.exists()
    {
        return Err(Failure::input(format!(
            "{}: already exists; not overwritten (choose another name)",
            path.display()
        )));
    }
    let start = Instant::now();
    let client = connect(conn).await?;
    let mut client = client.max_decoding_message_size(tandem_raft::network::MAX_MESSAGE);
    let reply = client
        .create_backup(pb::CreateBackupRequest {})
        .await
        .map_err(|e| failed("backup create", e))?
        .into_inner();
    let verified = backup::verify(&reply.data, None)
        .await
        .map_err(|e| Failure::runtime(format!("backup create: the backup received does not verify: {e}")))?;
    let h = &verified.header;
    let path = output_file.unwrap_or_else(|| default_name(h));
    backup::write_new(&path, &reply.data).map_err(|e| Failure::input(e.to_string()))?;
    let elapsed_ms = start.elapsed().as_millis() as u64;
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({
                "file": path.display().to_string(),
                "bytes": reply.data.len(),
                "cluster": h.cluster,
                "index": h.index,
                "term": h.term,
                "taken_by": h.taken_by,
                "taken_unix_ms": h.taken_unix_ms,
                "sha256": h.sha256,
                "verified": true,
                "coordinator_ms": reply.elapsed_ms,
                "elapsed_ms": elapsed_ms,
            })
        ),
        OutputFormat::Table => println!(
            "wrote {} ({} bytes): cluster {}, index {}, term {}, taken by {}; verified",
            path.display(),
            reply.data.len(),
            h.cluster,
            h.index,
            h.term,
            h.taken_by
        ),
    }
    Ok(())
}

/// Verifies a backup file offline; a problem exits with 2 and is named.
pub async fn verify(file: &Path, cluster: Option<&str>, output: OutputFormat) -> Outcome {
    let b = backup::verify_file(file)
        .await
        .map_err(|e| Failure::input(format!("backup verify: {e}")))?;
    let h = &b.header;
    if let Some(expected) = cluster
        && h.cluster != expected
    {
        return Err(Failure::input(format!(
            "backup verify: {}: a backup of cluster {:?}, not of {expected:?}",
            file.display(),
            h.cluster
        )));
    }
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({
                "file": file.display().to_string(),
                "verified": true,
                "cluster": h.cluster,
                "index": h.index,
                "term": h.term,
                "sha256": h.sha256,
            })
        ),
        OutputFormat::Table => println!(
            "{}: verified (cluster {}, index {}, term {}, sha256 {})",
            file.display(),
            h.cluster,
            h.index,
            h.term,
            h.sha256
        ),
    }
    Ok(())
}

/// What a backup file holds, from its header (after the same verification
/// as `verify`: a file that does not verify shows nothing).
pub async fn show(file: &Path, output: OutputFormat) -> Outcome {
    let b = backup::verify_file(file)
        .await
        .map_err(|e| Failure::input(format!("backup show: {e}")))?;
    let h = &b.header;
    let c = &h.counts;
    let members: Vec<String> = b
        .state
        .last_membership
        .membership()
        .nodes()
        .map(|(_, n)| n.name.clone())
        .collect();
    match output {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(h).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("file".into(), file.display().to_string().into());
                o.insert("taken_at".into(), rfc3339_ms(h.taken_unix_ms).into());
                o.insert("member_names".into(), members.into());
            }
            println!("{v}");
        }
        OutputFormat::Table => {
            println!("file          {}", file.display());
            println!("cluster       {}", h.cluster);
            println!("index         {} (term {})", h.index, h.term);
            println!("taken         {} by {}", rfc3339_ms(h.taken_unix_ms), h.taken_by);
            println!("version       tandem {}", h.tandem_version);
            println!(
                "members       {} ({} voters): {}",
                c.members,
                c.voters,
                members.join(", ")
            );
            println!("spec          version {}", c.spec_version);
            println!("groups        {}", c.groups);
            println!("resources     {}", c.resources);
            println!("fence devices {}", c.fence_devices);
            println!("events        {}", c.events);
            println!("transitions   {}", c.transitions);
            println!("sha256        {}", h.sha256);
        }
    }
    Ok(())
}
