//! The durable Raft log and state machine: one redb database per node, in
//! `DATA_DIR/tandem.redb`.
//!
//! Safety invariant "durable acknowledgements": a node killed at any instant
//! restarts with everything it acknowledged. So every change is one redb write
//! transaction committed with the default `Durability::Immediate` (fsync)
//! before openraft hears that it happened (`append` calls its callback, every
//! other method returns).
//!
//! Tables:
//! * `log`: log index -> JSON of the [`Entry`].
//! * `meta`: the vote, the committed and last purged log ids, and the
//!   [`Identity`] the directory belongs to.
//! * `state_machine`: the whole [`AppliedState`] as JSON. It is small (a
//!   bounded event log), so rewriting it on every apply batch keeps the state
//!   machine and its last applied log id in step without a replay on restart.
//! * `snapshot`: the current snapshot's meta and data.
//!
//! redb calls block, so they run on tokio's blocking threads.

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use openraft::storage::{EntryResponder, IOFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder};
use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tandem_core::state::{Applied, ClusterState};
use tokio::sync::watch;

use crate::{Entry, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig, Vote};

/// What a snapshot travels and is installed as: the JSON of an
/// [`AppliedState`], exactly the state machine record.
pub type SnapshotData = Vec<u8>;

const DB_FILE: &str = "tandem.redb";

type KeyValue = TableDefinition<'static, &'static str, &'static [u8]>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: KeyValue = TableDefinition::new("meta");
const STATE_MACHINE: KeyValue = TableDefinition::new("state_machine");
const SNAPSHOT: KeyValue = TableDefinition::new("snapshot");

// Keys of `META`.
const IDENTITY: &str = "identity";
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
// Key of `STATE_MACHINE`.
const APPLIED: &str = "applied";
// Keys of `SNAPSHOT`.
const SNAPSHOT_META: &str = "meta";
const SNAPSHOT_DATA: &str = "data";

/// What a data directory belongs to; written on first open, checked on every
/// later open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub cluster: String,
    pub node_name: String,
    pub node_id: u64,
}

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory holds another node's (or cluster's) Raft state; using it
    /// would make this node claim votes and log entries it never had.
    #[error(
        "data directory {} belongs to {}, not to {}; point node.data_dir elsewhere or empty it",
        dir.display(),
        describe(found, expected),
        describe(expected, found)
    )]
    WrongIdentity {
        dir: PathBuf,
        found: Box<Identity>,
        expected: Box<Identity>,
    },
    /// The database cannot be created, opened or read.
    #[error("cannot use {}: {reason}", path.display())]
    Storage { path: PathBuf, reason: String },
}

/// `node "a" of cluster "c"`, with the node id only when the names alone
/// would not show the difference from `other`.
fn describe(identity: &Identity, other: &Identity) -> String {
    let Identity {
        cluster,
        node_name,
        node_id,
    } = identity;
    if cluster == &other.cluster && node_name == &other.node_name {
        format!("node {node_name:?} (id {node_id}) of cluster {cluster:?}")
    } else {
        format!("node {node_name:?} of cluster {cluster:?}")
    }
}

/// The node's database. Cheap to clone; all clones, log stores and state
/// machines share one open database.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    /// The database file, for error messages.
    path: PathBuf,
}

impl Store {
    /// Opens (creating if missing) the database in `data_dir` and checks that
    /// it belongs to `identity`; on first open it records `identity`.
    ///
    /// The whole file is integrity-checked on open so that a damaged file is
    /// an error here rather than a panic later; the file is small, so the
    /// check is cheap. Blocks on file I/O (it fsyncs), so call it at startup
    /// or from a blocking thread.
    pub fn open(data_dir: &Path, identity: &Identity) -> Result<Store, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|e| OpenError::Storage {
            path: data_dir.to_owned(),
            reason: e.to_string(),
        })?;
        let path = data_dir.join(DB_FILE);
        let storage_error = |reason: String| OpenError::Storage {
            path: path.clone(),
            reason,
        };
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => storage_error(
                    "another process has it open (is another Tandem node using this data directory?)".to_owned(),
                ),
                e => storage_error(e.to_string()),
            })?;
        match claim(&db, identity) {
            Ok(None) => Ok(Store { db: Arc::new(db), path }),
            Ok(Some(found)) => Err(OpenError::WrongIdentity {
                dir: data_dir.to_owned(),
                found: Box::new(found),
                expected: Box::new(identity.clone()),
            }),
            Err(e) => Err(storage_error(e.to_string())),
        }
    }

    /// A scratch database in memory, never on disk (for loading a backup
    /// into a state machine of its own to check it).
    pub fn open_in_memory(identity: &Identity) -> Result<Store, OpenError> {
        let path = PathBuf::from("(in memory)");
        let storage_error = |e: &dyn std::fmt::Display| OpenError::Storage {
            path: path.clone(),
            reason: e.to_string(),
        };
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| storage_error(&e))?;
        match claim(&db, identity) {
            Ok(_) => Ok(Store { db: Arc::new(db), path }),
            Err(e) => Err(storage_error(&e)),
        }
    }

    /// The Raft log and vote.
    pub fn log_store(&self) -> LogStore {
        LogStore { db: self.db.clone() }
    }

    /// The state machine as last applied before the node stopped. Installing
    /// a snapshot writes the state together with the snapshot, so the stored
    /// state is never behind the stored snapshot.
    pub async fn state_machine(&self) -> Result<StateMachine, io::Error> {
        let state = read(&self.db, |txn| {
            let table = txn.open_table(STATE_MACHINE)?;
            Ok(get_json::<AppliedState>(&table, APPLIED)?.unwrap_or_default())
        })
        .await
        .map_err(io_error("read the state machine"))?;
        let state = Arc::new(state);
        let (published, _) = watch::channel(state.clone());
        Ok(StateMachine {
            db: self.db.clone(),
            state,
            published,
        })
    }

    /// True when the Raft log or vote has ever been written (the node was
    /// initialized or joined before).
    pub fn has_raft_state(&self) -> Result<bool, OpenError> {
        let has_state = || -> Result<bool, DbError> {
            let txn = self.db.begin_read()?;
            let meta = txn.open_table(META)?;
            Ok(!txn.open_table(LOG)?.is_empty()? || meta.get(VOTE)?.is_some() || meta.get(LAST_PURGED)?.is_some())
        };
        has_state().map_err(|e| OpenError::Storage {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}

/// Creates the tables and records `identity` if the database has none yet.
/// Returns the identity found when it is another one.
fn claim(db: &Database, identity: &Identity) -> Result<Option<Identity>, DbError> {
    let txn = db.begin_write()?;
    {
        txn.open_table(LOG)?;
        txn.open_table(STATE_MACHINE)?;
        txn.open_table(SNAPSHOT)?;
        let mut meta = txn.open_table(META)?;
        match get_json::<Identity>(&meta, IDENTITY)? {
            Some(found) if found != *identity => return Ok(Some(found)),
            Some(_) => {}
            None => put_json(&mut meta, IDENTITY, identity)?,
        }
    }
    txn.commit()?;
    Ok(None)
}

/// The Raft log and vote; also its own log reader.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        read(&self.db, move |txn| {
            let log = txn.open_table(LOG)?;
            log.range::<u64>(range)?
                .map(|item| {
                    let (index, entry) = item?;
                    decode_entry(index.value(), entry.value())
                })
                .collect()
        })
        .await
        .map_err(io_error("read the log"))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        read(&self.db, |txn| get_json(&txn.open_table(META)?, VOTE))
            .await
            .map_err(io_error("read the vote"))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        read(&self.db, |txn| {
            let last_purged_log_id = get_json(&txn.open_table(META)?, LAST_PURGED)?;
            let last_log_id = match txn.open_table(LOG)?.last()? {
                Some((index, entry)) => Some(decode_entry(index.value(), entry.value())?.log_id),
                None => last_purged_log_id,
            };
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        })
        .await
        .map_err(io_error("read the log"))
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        write(&self.db, move |txn| put_json(&mut txn.open_table(META)?, VOTE, &vote))
            .await
            .map_err(io_error("write the vote"))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        write(&self.db, move |txn| {
            put_json(&mut txn.open_table(META)?, COMMITTED, &committed)
        })
        .await
        .map_err(io_error("write the commit index"))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        read(&self.db, |txn| {
            let committed = get_json::<Option<LogId>>(&txn.open_table(META)?, COMMITTED)?;
            Ok(committed.flatten())
        })
        .await
        .map_err(io_error("read the commit index"))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        write(&self.db, move |txn| {
            let mut log = txn.open_table(LOG)?;
            for entry in &entries {
                let index = entry.log_id.index;
                log.insert(index, encode(entry, "log entry")?.as_slice())?;
            }
            Ok(())
        })
        .await
        .map_err(io_error("append to the log"))?;
        // Only now, with the entries on disk, may openraft count this node's
        // copy toward a quorum.
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let keep_through = last_log_id.map(|l| l.index);
        write(&self.db, move |txn| {
            let mut log = txn.open_table(LOG)?;
            match keep_through {
                Some(index) => log.retain_in(index.saturating_add(1).., |_, _| false)?,
                None => log.retain(|_, _| false)?,
            }
            Ok(())
        })
        .await
        .map_err(io_error("truncate the log"))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        write(&self.db, move |txn| {
            put_json(&mut txn.open_table(META)?, LAST_PURGED, &log_id)?;
            txn.open_table(LOG)?.retain_in(..=log_id.index, |_, _| false)?;
            Ok(())
        })
        .await
        .map_err(io_error("purge the log"))
    }
}

/// Everything the state machine holds: what Raft needs back on restart (last
/// applied log id and membership) and Tandem's [`ClusterState`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub cluster: ClusterState,
}

/// The replicated state machine, persisted after every apply batch; also its
/// own snapshot builder (a clone holds a frozen copy of the state).
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    /// Replaced, never mutated in place, so that snapshot builders and
    /// subscribers holding the previous `Arc` keep a consistent view.
    state: Arc<AppliedState>,
    published: watch::Sender<Arc<AppliedState>>,
}

impl StateMachine {
    /// Follows the applied state: updated after every apply batch and
    /// snapshot install, once it is on disk.
    pub fn subscribe(&self) -> watch::Receiver<Arc<AppliedState>> {
        self.published.subscribe()
    }

    /// Applies `entries` in order, persists the result (one durable write
    /// for the batch) and publishes it; what each entry's command returned,
    /// in order.
    pub async fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<Vec<Applied>, io::Error> {
        // Work on a copy: if persisting fails, memory must not run ahead of disk.
        let mut next = AppliedState::clone(&self.state);
        let replies = entries
            .into_iter()
            .map(|entry| {
                next.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => Applied::default(),
                    EntryPayload::Normal(command) => next.cluster.apply(&command),
                    EntryPayload::Membership(membership) => {
                        next.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                        Applied::default()
                    }
                }
            })
            .collect();
        let next = Arc::new(next);
        let to_store = next.clone();
        write(&self.db, move |txn| {
            let bytes = encode(&*to_store, "applied state")?;
            txn.open_table(STATE_MACHINE)?.insert(APPLIED, bytes.as_slice())?;
            Ok(())
        })
        .await
        .map_err(io_error("write the state machine"))?;
        self.publish(next);
        Ok(replies)
    }

    fn publish(&mut self, state: Arc<AppliedState>) {
        self.state = state.clone();
        self.published.send_replace(state);
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.state.last_applied, self.state.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            batch.push(entry);
            responders.push(responder);
        }
        let replies = self.apply_entries(batch).await?;
        // Answer the writers only once what they wrote is on disk.
        for (responder, reply) in responders.into_iter().zip(replies) {
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, data: SnapshotData) -> Result<(), io::Error> {
        let state: AppliedState = serde_json::from_slice(&data).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the snapshot sent by the coordinator cannot be decoded: {e}"),
            )
        })?;
        if state.last_applied != meta.last_log_id || state.last_membership != meta.last_membership {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the snapshot's data does not match its meta",
            ));
        }
        let meta = meta.clone();
        write(&self.db, move |txn| {
            // The snapshot data is exactly the state machine record.
            txn.open_table(STATE_MACHINE)?.insert(APPLIED, data.as_slice())?;
            let mut snapshots = txn.open_table(SNAPSHOT)?;
            put_json(&mut snapshots, SNAPSHOT_META, &meta)?;
            snapshots.insert(SNAPSHOT_DATA, data.as_slice())?;
            Ok(())
        })
        .await
        .map_err(io_error("install a snapshot"))?;
        tracing::info!(
            last_log_index = state.last_applied.map_or(0, |l| l.index),
            "installed a snapshot sent by the coordinator"
        );
        self.publish(Arc::new(state));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        read(&self.db, |txn| {
            let snapshots = txn.open_table(SNAPSHOT)?;
            let Some(meta) = get_json(&snapshots, SNAPSHOT_META)? else {
                return Ok(None);
            };
            let data = snapshots
                .get(SNAPSHOT_DATA)?
                .ok_or(DbError::Missing("the snapshot's data"))?
                .value()
                .to_vec();
            Ok(Some(Snapshot { meta, snapshot: data }))
        })
        .await
        .map_err(io_error("read the snapshot"))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let state = self.state.clone();
        let (meta, data) = write(&self.db, move |txn| {
            let data = encode(&*state, "applied state")?;
            let mut snapshots = txn.open_table(SNAPSHOT)?;
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.last_membership.clone(),
            };
            // Builders run concurrently with the state machine: a newer
            // snapshot may have been installed meanwhile; keep that one.
            let stored: Option<SnapshotMeta> = get_json(&snapshots, SNAPSHOT_META)?;
            if stored.is_none_or(|stored| stored.last_log_id <= meta.last_log_id) {
                put_json(&mut snapshots, SNAPSHOT_META, &meta)?;
                snapshots.insert(SNAPSHOT_DATA, data.as_slice())?;
            }
            Ok((meta, data))
        })
        .await
        .map_err(io_error("write a snapshot"))?;
        tracing::debug!(
            last_log_index = meta.last_log_id.map_or(0, |l| l.index),
            bytes = data.len(),
            "built a snapshot"
        );
        Ok(Snapshot { meta, snapshot: data })
    }
}

/// A failure inside the database layer; reported to openraft as an
/// `io::Error` or to the caller of [`Store::open`] as an [`OpenError`].
#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error(transparent)]
    Redb(#[from] redb::Error),
    #[error("cannot encode the {what}: {error}")]
    Encode {
        what: &'static str,
        error: serde_json::Error,
    },
    #[error("{what} in the database is corrupt: {error}")]
    Corrupt { what: String, error: serde_json::Error },
    #[error("{0} is missing from the database")]
    Missing(&'static str),
    #[error("database task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// redb has one error type per operation; all of them convert to `redb::Error`.
macro_rules! from_redb_errors {
    ($($error:ty),*) => {$(
        impl From<$error> for DbError {
            fn from(error: $error) -> Self {
                DbError::Redb(error.into())
            }
        }
    )*};
}
from_redb_errors!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Converts a [`DbError`] into the `io::Error` openraft expects, saying what
/// failed: `io_error("append to the log")`.
fn io_error(doing: &'static str) -> impl FnOnce(DbError) -> io::Error {
    move |e| io::Error::other(format!("cannot {doing}: {e}"))
}

/// Runs `f` in a read transaction on a blocking thread.
async fn read<T, F>(db: &Arc<Database>, f: F) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnOnce(&ReadTransaction) -> Result<T, DbError> + Send + 'static,
{
    let db = db.clone();
    tokio::task::spawn_blocking(move || f(&db.begin_read()?))
        .await
        .map_err(DbError::Task)?
}

/// Runs `f` in a write transaction on a blocking thread and commits it
/// durably (redb's default `Durability::Immediate` fsyncs) before returning.
async fn write<T, F>(db: &Arc<Database>, f: F) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnOnce(&WriteTransaction) -> Result<T, DbError> + Send + 'static,
{
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        let txn = db.begin_write()?;
        let out = f(&txn)?;
        txn.commit()?;
        Ok(out)
    })
    .await
    .map_err(DbError::Task)?
}

fn encode<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, DbError> {
    serde_json::to_vec(value).map_err(|error| DbError::Encode { what, error })
}

fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry, DbError> {
    serde_json::from_slice(bytes).map_err(|error| DbError::Corrupt {
        what: format!("log entry {index}"),
        error,
    })
}

fn get_json<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, DbError> {
    let Some(value) = table.get(key)? else {
        return Ok(None);
    };
    serde_json::from_slice(value.value())
        .map(Some)
        .map_err(|error| DbError::Corrupt {
            what: format!("record {key:?}"),
            error,
        })
}

fn put_json<T: Serialize>(
    table: &mut Table<&'static str, &'static [u8]>,
    key: &'static str,
    value: &T,
) -> Result<(), DbError> {
    table.insert(key, encode(value, key)?.as_slice())?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::{Membership, StorageError};
    use tandem_core::state::Command;
    use tempfile::TempDir;

    use super::*;
    use tandem_core::NodeInfo;

    fn identity(cluster: &str, node_name: &str) -> Identity {
        Identity {
            cluster: cluster.into(),
            node_name: node_name.into(),
            node_id: 1,
        }
    }

    struct TempStore;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for TempStore {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), &identity("test", "n1")).unwrap();
            let state_machine = store.state_machine().await.unwrap();
            Ok((dir, store.log_store(), state_machine))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_openraft_storage_suite() {
        Suite::test_all(TempStore).await.unwrap();
    }

    #[test]
    fn refuses_a_directory_of_another_cluster_or_node() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), &identity("prod", "site-b")).unwrap());

        let err = Store::open(dir.path(), &identity("demo", "site-a")).err().unwrap();
        assert!(matches!(err, OpenError::WrongIdentity { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "data directory {} belongs to node \"site-b\" of cluster \"prod\", \
                 not to node \"site-a\" of cluster \"demo\"; point node.data_dir elsewhere or empty it",
                dir.path().display()
            )
        );

        let err = Store::open(dir.path(), &identity("prod", "site-a"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("node \"site-b\" of cluster \"prod\", not to node \"site-a\" of cluster \"prod\""),
            "{err}"
        );

        let other_id = Identity {
            node_id: 2,
            ..identity("prod", "site-b")
        };
        let err = Store::open(dir.path(), &other_id).err().unwrap().to_string();
        assert!(err.contains("(id 1)") && err.contains("(id 2)"), "{err}");

        // The rightful owner still gets in.
        Store::open(dir.path(), &identity("prod", "site-b")).unwrap();
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_while_the_first_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), &identity("prod", "site-a")).unwrap();
        let err = Store::open(dir.path(), &identity("prod", "site-a")).err().unwrap();
        assert!(matches!(err, OpenError::Storage { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&dir.path().join(DB_FILE).display().to_string()) && message.contains("another process"),
            "{message}"
        );
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(openraft::impls::leader_id_adv::LeaderId { term, node_id: 1 }, index)
    }

    fn note(index: u64) -> Entry {
        Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Normal(Command::Note {
                message: format!("note {index}"),
                actor: "op@host".into(),
                at_unix_ms: index,
            }),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn applied_and_snapshotted_state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let me = identity("prod", "site-a");
        let node = NodeInfo {
            name: "site-a".into(),
            address: "127.0.0.1:7400".into(),
            role: Default::default(),
        };
        let membership = Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Membership(
                Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, node)])).unwrap(),
            ),
        };
        let vote = Vote::new_committed(1, 1);

        let (expected, snapshot_meta) = {
            let store = Store::open(dir.path(), &me).unwrap();
            assert!(!store.has_raft_state().unwrap());
            let mut log = store.log_store();
            log.save_vote(&vote).await.unwrap();
            log.blocking_append([membership.clone(), note(2), note(3), note(4)])
                .await
                .unwrap();
            assert!(store.has_raft_state().unwrap());

            let mut sm = store.state_machine().await.unwrap();
            let mut applied = sm.subscribe();
            sm.apply_entries(vec![membership, note(2), note(3)]).await.unwrap();
            let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 3)));
            let replies = sm.apply_entries(vec![note(4)]).await.unwrap();
            assert_eq!(replies[0].event_seq, Some(2));

            assert!(applied.has_changed().unwrap());
            let state = applied.borrow_and_update().clone();
            assert_eq!(state.last_applied, Some(log_id(1, 4)));
            assert_eq!(state.cluster.events.len(), 3);
            (state, snapshot.meta)
        };

        let store = Store::open(dir.path(), &me).unwrap();
        assert!(store.has_raft_state().unwrap());
        let mut log = store.log_store();
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(log.try_get_log_entries(1..5).await.unwrap().len(), 4);

        let mut sm = store.state_machine().await.unwrap();
        assert_eq!(
            sm.applied_state().await.unwrap(),
            (expected.last_applied, expected.last_membership.clone())
        );
        assert_eq!(*sm.subscribe().borrow(), expected);
        let snapshot = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(snapshot.meta, snapshot_meta);

        // The snapshot alone restores the state as of its last log id.
        let follower_dir = tempfile::tempdir().unwrap();
        let mut follower = Store::open(follower_dir.path(), &identity("prod", "site-b"))
            .unwrap()
            .state_machine()
            .await
            .unwrap();
        follower
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        let installed = follower.subscribe().borrow().clone();
        assert_eq!(installed.last_applied, Some(log_id(1, 3)));
        assert_eq!(installed.cluster.events.len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_records_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &identity("prod", "site-a")).unwrap();
        let mut log = store.log_store();
        write(&store.db, |txn| {
            txn.open_table(LOG)?.insert(7, b"not json".as_slice())?;
            put_json(&mut txn.open_table(META)?, VOTE, &"not a vote")
        })
        .await
        .unwrap();

        let err = log.try_get_log_entries(..).await.unwrap_err().to_string();
        assert!(err.contains("log entry 7"), "{err}");
        assert!(log.get_log_state().await.is_err());
        let err = log.read_vote().await.unwrap_err().to_string();
        assert!(err.contains("record \"vote\""), "{err}");
    }
}
