//! The durable Raft log and state machine: one redb database per node, in
//! `DATA_DIR/tandem.redb`.
//!
//! Safety invariant "durable acknowledgements": a node killed at any instant
//! restarts with everything it acknowledged. So every change to the log, the
//! vote and the committed log id is one redb write transaction committed
//! with `Durability::Immediate` (fsync) before openraft hears that it
//! happened (`append` calls its callback, every other method returns).
//! The state machine's own records are written without an fsync: openraft
//! saves the committed log id (fsync'ed) before it applies, and a durable
//! redb commit makes every earlier commit durable too, so after a crash the
//! stored state is at worst a few entries behind the committed log id, and
//! [`Store::state_machine`] applies those entries again from the log.
//!
//! Storage layout 2 (`meta["layout"] = 2`), the state machine written per
//! change (O(change) per apply, not O(state)):
//! * `log`: log index -> JSON of the [`Entry`].
//! * `meta`: the layout, the vote, the committed and last purged log ids,
//!   and the [`Identity`] the directory belongs to.
//! * `sm`: the last applied log id (`applied`), the last membership
//!   (`membership`), the spec with its source (`spec`, written only when the
//!   spec version moves) and everything else of the [`ClusterState`] that is
//!   not in a table of its own (`rest`: counters, fencing, standby,
//!   maintenance, moves, protection warnings; written when its bytes change).
//! * `sm_groups`: group name -> its [`tandem_core::groups::GroupState`].
//! * `sm_events`: event sequence number -> the event (a bounded ring: the
//!   events the state dropped are deleted).
//! * `sm_transitions`: transition id -> the transition (bounded likewise).
//! * `snapshot`: the current snapshot's meta and data (the JSON of the whole
//!   [`AppliedState`]).
//!
//! Layout 1 (releases before it, no `layout` key) kept the whole applied
//! state as one JSON record, `state_machine["applied"]`, rewritten on every
//! apply; [`Store::open`] migrates it to layout 2 once. A newer layout is
//! refused ([`OpenError::NewerLayout`]).
//!
//! redb calls block, so they run on tokio's blocking threads.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use openraft::storage::{EntryResponder, IOFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder};
use redb::{
    Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tandem_core::spec::Spec;
use tandem_core::state::{Applied, ClusterState, Transition};
use tokio::sync::watch;

use crate::{Entry, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig, Vote};

/// What a snapshot travels and is installed as: the JSON of an
/// [`AppliedState`].
pub type SnapshotData = Vec<u8>;

const DB_FILE: &str = "tandem.redb";

/// The storage layout this release writes.
pub const LAYOUT: u64 = 2;

type KeyValue = TableDefinition<'static, &'static str, &'static [u8]>;
type ByNumber = TableDefinition<'static, u64, &'static [u8]>;

const LOG: ByNumber = TableDefinition::new("log");
const META: KeyValue = TableDefinition::new("meta");
const SNAPSHOT: KeyValue = TableDefinition::new("snapshot");
// Layout 2's state machine.
const SM: KeyValue = TableDefinition::new("sm");
const SM_GROUPS: KeyValue = TableDefinition::new("sm_groups");
const SM_EVENTS: ByNumber = TableDefinition::new("sm_events");
const SM_TRANSITIONS: ByNumber = TableDefinition::new("sm_transitions");
// Layout 1's state machine: the whole applied state under `applied`.
const LAYOUT_1_STATE_MACHINE: KeyValue = TableDefinition::new("state_machine");
const LAYOUT_1_APPLIED: &str = "applied";

// Keys of `META`.
const IDENTITY: &str = "identity";
const LAYOUT_KEY: &str = "layout";
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
// Keys of `SM`.
const SM_APPLIED: &str = "applied";
const SM_MEMBERSHIP: &str = "membership";
const SM_SPEC: &str = "spec";
const SM_REST: &str = "rest";
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
    /// A newer release wrote the database in a layout this one cannot read.
    #[error(
        "{} was written by a newer Tandem release (storage layout {found}; this release reads layouts 1 to {LAYOUT}): \
         run a release that reads layout {found} on this node; to go back to this release instead, remove the node \
         from the cluster, empty node.data_dir and add it again (it receives the cluster's state from the coordinator)",
        path.display()
    )]
    NewerLayout { path: PathBuf, found: u64 },
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
    /// The one thread that writes the log, the vote and the committed log id.
    writer: Arc<LogWriter>,
    /// The database file, for error messages.
    path: PathBuf,
    /// The layout this open migrated the database from, if it did.
    migrated_from: Option<u64>,
}

impl Store {
    /// Opens (creating if missing) the database in `data_dir` and checks that
    /// it belongs to `identity`; on first open it records `identity`. A
    /// database in layout 1 is migrated to layout 2 (once, logged); a newer
    /// layout is refused.
    ///
    /// The whole file is integrity-checked on open so that a damaged file is
    /// an error here rather than a panic later. Blocks on file I/O (it
    /// fsyncs), so call it at startup or from a blocking thread.
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
            Ok(Claimed::Ours { migrated_from }) => {
                if let Some(from) = migrated_from {
                    tracing::info!(
                        path = %path.display(),
                        "migrated the data directory from storage layout {from} to {LAYOUT} (once: the state \
                         machine is now written per change)"
                    );
                }
                let db = Arc::new(db);
                let writer = LogWriter::start(&db).map_err(|e| storage_error(e.to_string()))?;
                Ok(Store {
                    db,
                    writer,
                    path,
                    migrated_from,
                })
            }
            Ok(Claimed::Theirs(found)) => Err(OpenError::WrongIdentity {
                dir: data_dir.to_owned(),
                found: Box::new(found),
                expected: Box::new(identity.clone()),
            }),
            Ok(Claimed::NewerLayout(found)) => Err(OpenError::NewerLayout { path, found }),
            Err(e) => Err(storage_error(e.to_string())),
        }
    }

    /// Opens the database on `backend` instead of a file (the simulator's
    /// disk: redb's `InMemoryBackend`, kept across a simulated crash), with
    /// the same identity check as [`Store::open`]. `name` stands for the
    /// path in messages.
    ///
    /// The log is written inline, with no writer thread: each log, vote and
    /// committed write happens at once, in order, and an append is
    /// acknowledged before it returns, since a thread's completion order is
    /// not decided by the simulator's seed.
    pub fn with_backend(
        backend: impl redb::StorageBackend,
        name: &str,
        identity: &Identity,
    ) -> Result<Store, OpenError> {
        let path = PathBuf::from(name);
        let storage_error = |reason: String| OpenError::Storage {
            path: path.clone(),
            reason,
        };
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| storage_error(e.to_string()))?;
        match claim(&db, identity) {
            Ok(Claimed::Ours { migrated_from }) => {
                let db = Arc::new(db);
                let writer = LogWriter::inline(&db);
                Ok(Store {
                    db,
                    writer,
                    path,
                    migrated_from,
                })
            }
            Ok(Claimed::Theirs(found)) => Err(OpenError::WrongIdentity {
                dir: path.clone(),
                found: Box::new(found),
                expected: Box::new(identity.clone()),
            }),
            Ok(Claimed::NewerLayout(found)) => Err(OpenError::NewerLayout { path, found }),
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
            Ok(Claimed::Ours { migrated_from }) => {
                let db = Arc::new(db);
                let writer = LogWriter::start(&db).map_err(|e| storage_error(&e))?;
                Ok(Store {
                    db,
                    writer,
                    path,
                    migrated_from,
                })
            }
            Ok(Claimed::Theirs(_)) | Ok(Claimed::NewerLayout(_)) => {
                Err(storage_error(&"a new in-memory database is already claimed"))
            }
            Err(e) => Err(storage_error(&e)),
        }
    }

    /// The layout this open migrated the database from (`Some(1)` on the
    /// first open of a layout 1 database), or `None`.
    pub fn migrated_from(&self) -> Option<u64> {
        self.migrated_from
    }

    /// The Raft log and vote.
    pub fn log_store(&self) -> LogStore {
        LogStore {
            db: self.db.clone(),
            writer: self.writer.clone(),
        }
    }

    /// The state machine as last applied before the node stopped. Entries
    /// the stored state is behind the stored committed log id (its records
    /// are written without an fsync; the committed log id and the log are
    /// fsync'ed) are applied again from the log here, so nothing applied
    /// before a crash is missing. Installing a snapshot writes the state
    /// together with the snapshot, so the stored state is never behind the
    /// stored snapshot.
    pub async fn state_machine(&self) -> Result<StateMachine, io::Error> {
        let (state, rest, committed) = read(&self.db, |txn| {
            let (state, rest) = load_state(txn)?;
            let committed = get_json::<Option<LogId>>(&txn.open_table(META)?, COMMITTED)?.flatten();
            Ok((state, rest, committed))
        })
        .await
        .map_err(io_error("read the state machine"))?;
        let state = Arc::new(state);
        let (published, _) = watch::channel(state.clone());
        let mut sm = StateMachine {
            db: self.db.clone(),
            state,
            published,
            rest: rest.into(),
            last_write: WriteStats::default(),
        };
        if let Some(committed) = committed
            && sm.state.last_applied < Some(committed)
        {
            let after = sm.state.last_applied.map_or(0, |l| l.index + 1);
            let entries = self.log_store().try_get_log_entries(after..=committed.index).await?;
            // Only a gapless run from the entry after the last applied one
            // (or from the first, if none was applied): if the log was
            // purged past it, openraft restores from the snapshot instead.
            let from = match (sm.state.last_applied, entries.first()) {
                (None, Some(first)) => first.log_id.index,
                _ => after,
            };
            let contiguous = entries
                .iter()
                .zip(from..)
                .take_while(|(e, index)| e.log_id.index == *index)
                .count();
            if contiguous > 0 {
                let entries: Vec<Entry> = entries.into_iter().take(contiguous).collect();
                tracing::info!(
                    from,
                    to = from + contiguous as u64 - 1,
                    "applying again committed log entries the stored state had not kept (written without an fsync \
                     before the node stopped)"
                );
                sm.apply_entries(entries).await?;
            }
        }
        Ok(sm)
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

/// What [`claim`] found.
enum Claimed {
    /// The database is this node's (now), in the current layout.
    Ours { migrated_from: Option<u64> },
    /// Another node's or cluster's.
    Theirs(Identity),
    /// This node's, in a layout newer than this release knows.
    NewerLayout(u64),
}

/// Creates the tables and records `identity` and the layout if the database
/// has none yet; checks the identity and the layout of one that has them,
/// and migrates layout 1 to the current one.
fn claim(db: &Database, identity: &Identity) -> Result<Claimed, DbError> {
    let txn = db.begin_write()?;
    let mut migrated_from = None;
    {
        txn.open_table(LOG)?;
        txn.open_table(SNAPSHOT)?;
        let mut meta = txn.open_table(META)?;
        let fresh = match get_json::<Identity>(&meta, IDENTITY)? {
            Some(found) if found != *identity => return Ok(Claimed::Theirs(found)),
            Some(_) => false,
            None => {
                put_json(&mut meta, IDENTITY, identity)?;
                true
            }
        };
        // A database without a layout is new, or was written by a release
        // before layouts were recorded: layout 1.
        let layout = get_json::<u64>(&meta, LAYOUT_KEY)?.unwrap_or(if fresh { LAYOUT } else { 1 });
        if layout > LAYOUT {
            return Ok(Claimed::NewerLayout(layout));
        }
        if layout < LAYOUT {
            migrate_layout_1(&txn)?;
            migrated_from = Some(layout);
        }
        put_json(&mut meta, LAYOUT_KEY, &LAYOUT)?;
        txn.open_table(SM)?;
        txn.open_table(SM_GROUPS)?;
        txn.open_table(SM_EVENTS)?;
        txn.open_table(SM_TRANSITIONS)?;
    }
    txn.commit()?;
    Ok(Claimed::Ours { migrated_from })
}

/// Layout 1 -> 2: the whole applied state, one record, becomes the per-part
/// records of layout 2 (in the caller's transaction, so a crash midway
/// leaves layout 1 as it was).
fn migrate_layout_1(txn: &WriteTransaction) -> Result<(), DbError> {
    let old: AppliedState = {
        let table = txn.open_table(LAYOUT_1_STATE_MACHINE)?;
        get_json(&table, LAYOUT_1_APPLIED)?.unwrap_or_default()
    };
    write_all(txn, &old, &mut WriteStats::default())?;
    txn.delete_table(LAYOUT_1_STATE_MACHINE)?;
    Ok(())
}

/// The Raft log and vote; also its own log reader.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    writer: Arc<LogWriter>,
}

/// One thread writes the log, the vote, the committed log id, truncations
/// and purges, in the order openraft asked, each fsync'ed (consecutive
/// appends share one transaction and one fsync). An append returns at once
/// and acknowledges to openraft from that thread after its fsync, so a slow
/// disk or a multi-MB entry never holds up Raft's own task (heartbeats and
/// votes go on meanwhile); its entries are readable at once from `pending`
/// until they are on disk.
///
/// In the simulator ([`Store::with_backend`]) there is no thread: every op
/// runs inline when it is sent, in order, and an append is acknowledged at
/// once, so a run depends on its seed alone.
struct LogWriter {
    /// Where ops go: the writer thread, or the database itself (inline).
    ops: Sink,
    /// Appended entries not yet on disk, by index, with the number of the
    /// append that wrote them (a later append of the same index after a
    /// truncation must not be removed by the earlier one's completion).
    pending: Arc<Mutex<Pending>>,
    next_append: AtomicU64,
}

enum Sink {
    Thread(Mutex<std::sync::mpsc::Sender<LogOp>>),
    Inline(std::sync::Weak<Database>),
}

/// Appended entries not yet on disk: index -> (number of the append, entry).
type Pending = BTreeMap<u64, (u64, Arc<Entry>)>;

type WriteOp = Box<dyn FnOnce(&WriteTransaction) -> Result<(), DbError> + Send>;

enum LogOp {
    Append {
        number: u64,
        entries: Vec<Arc<Entry>>,
        done: IOFlushed<TypeConfig>,
    },
    Write {
        write: WriteOp,
        done: tokio::sync::oneshot::Sender<Result<(), DbError>>,
    },
}

impl LogWriter {
    fn start(db: &Arc<Database>) -> io::Result<Arc<LogWriter>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let pending: Arc<Mutex<Pending>> = Arc::default();
        // Weak: the database closes when the last store handle goes, not
        // when this thread notices its channel closed.
        let db = Arc::downgrade(db);
        let shared = pending.clone();
        std::thread::Builder::new()
            .name("tandem-log-writer".into())
            .spawn(move || run_writer(&db, &rx, &shared))?;
        Ok(Arc::new(LogWriter {
            ops: Sink::Thread(Mutex::new(tx)),
            pending,
            next_append: AtomicU64::new(0),
        }))
    }

    /// A writer without a thread: each op runs when it is sent.
    fn inline(db: &Arc<Database>) -> Arc<LogWriter> {
        Arc::new(LogWriter {
            ops: Sink::Inline(Arc::downgrade(db)),
            pending: Arc::default(),
            next_append: AtomicU64::new(0),
        })
    }

    fn send(&self, op: LogOp) -> Result<(), DbError> {
        match &self.ops {
            Sink::Thread(ops) => {
                let ops = ops.lock().unwrap_or_else(|e| e.into_inner());
                ops.send(op).map_err(|_| DbError::Missing("the log writer thread"))
            }
            Sink::Inline(db) => {
                match op {
                    LogOp::Write { write, done } => write_op(db, write, done),
                    LogOp::Append { number, entries, done } => {
                        append_batch(db, vec![(number, entries, done)], &self.pending)
                    }
                }
                Ok(())
            }
        }
    }

    /// Runs `write` on the writer thread, after everything asked before,
    /// and waits until it is durable.
    async fn write(&self, write: WriteOp) -> Result<(), DbError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send(LogOp::Write { write, done })?;
        wait.await.map_err(|_| DbError::Missing("the log writer thread"))?
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn run_writer(db: &std::sync::Weak<Database>, ops: &std::sync::mpsc::Receiver<LogOp>, pending: &Mutex<Pending>) {
    let mut next = None;
    loop {
        let op = match next.take() {
            Some(op) => op,
            None => match ops.recv() {
                Ok(op) => op,
                Err(_) => return,
            },
        };
        match op {
            LogOp::Write { write, done } => write_op(db, write, done),
            LogOp::Append { number, entries, done } => {
                // Every append already queued goes into the same transaction.
                let mut batch = vec![(number, entries, done)];
                while let Ok(op) = ops.try_recv() {
                    match op {
                        LogOp::Append { number, entries, done } => batch.push((number, entries, done)),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                append_batch(db, batch, pending);
            }
        }
    }
}

/// Runs one write op and reports its result.
fn write_op(db: &std::sync::Weak<Database>, write: WriteOp, done: tokio::sync::oneshot::Sender<Result<(), DbError>>) {
    let result = match db.upgrade() {
        Some(db) => commit(&db, write),
        None => Err(DbError::Missing("the database")),
    };
    let _ = done.send(result);
}

/// Appends, each with its number, entries and acknowledgement.
type Batch = Vec<(u64, Vec<Arc<Entry>>, IOFlushed<TypeConfig>)>;

/// Writes the entries of `batch` in one transaction, then acknowledges
/// each append to openraft.
fn append_batch(db: &std::sync::Weak<Database>, batch: Batch, pending: &Mutex<Pending>) {
    let result = match db.upgrade() {
        Some(db) => commit(&db, |txn: &WriteTransaction| {
            let mut log = txn.open_table(LOG)?;
            for (_, entries, _) in &batch {
                for entry in entries {
                    log.insert(entry.log_id.index, encode(&**entry, "log entry")?.as_slice())?;
                }
            }
            Ok(())
        }),
        None => Err(DbError::Missing("the database")),
    };
    let failed = result.err().map(|e| e.to_string());
    if failed.is_none() {
        let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
        for (number, entries, _) in &batch {
            for entry in entries {
                if pending.get(&entry.log_id.index).is_some_and(|(n, _)| n == number) {
                    pending.remove(&entry.log_id.index);
                }
            }
        }
    }
    // Only now, with the entries on disk, may openraft count this
    // node's copy toward a quorum.
    for (_, _, done) in batch {
        done.io_completed(match &failed {
            None => Ok(()),
            Some(e) => Err(io::Error::other(format!("cannot append to the log: {e}"))),
        });
    }
}

/// One durable write transaction.
fn commit(db: &Database, write: impl FnOnce(&WriteTransaction) -> Result<(), DbError>) -> Result<(), DbError> {
    let txn = db.begin_write()?;
    write(&txn)?;
    txn.commit()?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        use std::ops::Bound;
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        // Entries just appended (what replication reads) come from memory.
        let from_memory: Vec<Arc<Entry>> = self
            .writer
            .pending()
            .range(range)
            .map(|(_, (_, e))| e.clone())
            .collect();
        let start = match range.0 {
            Bound::Included(i) => Some(i),
            Bound::Excluded(i) => i.checked_add(1),
            Bound::Unbounded => None,
        };
        let end = match range.1 {
            Bound::Included(i) => i.checked_add(1),
            Bound::Excluded(i) => Some(i),
            Bound::Unbounded => None,
        };
        if let (Some(start), Some(end)) = (start, end)
            && from_memory.len() as u64 == end.saturating_sub(start)
        {
            return Ok(from_memory.iter().map(|e| Entry::clone(e)).collect());
        }
        // Otherwise from disk, once every write asked before is done.
        self.writer
            .write(Box::new(|_| Ok(())))
            .await
            .map_err(io_error("read the log"))?;
        let mut entries = read(&self.db, move |txn| {
            let log = txn.open_table(LOG)?;
            log.range::<u64>(range)?
                .map(|item| {
                    let (index, entry) = item?;
                    Ok((index.value(), decode_entry(index.value(), entry.value())?))
                })
                .collect::<Result<BTreeMap<u64, Entry>, DbError>>()
        })
        .await
        .map_err(io_error("read the log"))?;
        // Appended since: newer than the disk.
        let newer: Vec<(u64, Arc<Entry>)> = self
            .writer
            .pending()
            .range(range)
            .map(|(index, (_, entry))| (*index, entry.clone()))
            .collect();
        for (index, entry) in newer {
            entries.insert(index, Entry::clone(&entry));
        }
        Ok(entries.into_values().collect())
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
        self.writer
            .write(Box::new(|_| Ok(())))
            .await
            .map_err(io_error("read the log"))?;
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
        self.writer
            .write(Box::new(move |txn| put_json(&mut txn.open_table(META)?, VOTE, &vote)))
            .await
            .map_err(io_error("write the vote"))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.writer
            .write(Box::new(move |txn| {
                put_json(&mut txn.open_table(META)?, COMMITTED, &committed)
            }))
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
        // Shared, not copied: an entry may be a multi-MB spec.
        let entries: Vec<Arc<Entry>> = entries.into_iter().map(Arc::new).collect();
        let number = self.writer.next_append.fetch_add(1, Ordering::Relaxed);
        {
            let mut pending = self.writer.pending();
            for entry in &entries {
                pending.insert(entry.log_id.index, (number, entry.clone()));
            }
        }
        // Acknowledged to openraft by the writer thread, after its fsync.
        self.writer
            .send(LogOp::Append {
                number,
                entries,
                done: callback,
            })
            .map_err(io_error("append to the log"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let keep_through = last_log_id.map(|l| l.index);
        self.writer
            .pending()
            .retain(|index, _| keep_through.is_some_and(|k| *index <= k));
        self.writer
            .write(Box::new(move |txn| {
                let mut log = txn.open_table(LOG)?;
                match keep_through {
                    Some(index) => log.retain_in(index.saturating_add(1).., |_, _| false)?,
                    None => log.retain(|_, _| false)?,
                }
                Ok(())
            }))
            .await
            .map_err(io_error("truncate the log"))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.writer.pending().retain(|index, _| *index > log_id.index);
        self.writer
            .write(Box::new(move |txn| {
                put_json(&mut txn.open_table(META)?, LAST_PURGED, &log_id)?;
                txn.open_table(LOG)?.retain_in(..=log_id.index, |_, _| false)?;
                Ok(())
            }))
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

/// The replicated state machine, persisted after every apply batch (what
/// the batch changed); also its own snapshot builder (a clone holds a frozen
/// copy of the state).
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    /// Replaced, never mutated in place, so that snapshot builders and
    /// subscribers holding the previous `Arc` keep a consistent view.
    state: Arc<AppliedState>,
    published: watch::Sender<Arc<AppliedState>>,
    /// The `rest` record as stored, written again only when it changes.
    rest: Arc<[u8]>,
    last_write: WriteStats,
}

/// What one write of the state machine wrote: records put or deleted, and
/// the bytes put.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub records: usize,
    pub bytes: usize,
}

impl StateMachine {
    /// Follows the applied state: updated after every apply batch and
    /// snapshot install, once it is written.
    pub fn subscribe(&self) -> watch::Receiver<Arc<AppliedState>> {
        self.published.subscribe()
    }

    /// What the last apply batch (or snapshot install) wrote.
    pub fn last_write(&self) -> WriteStats {
        self.last_write
    }

    /// Applies `entries` in order, writes what they changed (one write
    /// transaction for the batch, without an fsync: see the module's note)
    /// and publishes the result; what each entry's command returned, in
    /// order.
    pub async fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<Vec<Applied>, io::Error> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
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
        let rest: Arc<[u8]> = encode_rest(&mut next.cluster)
            .map_err(io_error("write the state machine"))?
            .into();
        let rest_changed = rest != self.rest;
        let next = Arc::new(next);
        let (before, after, rest_to_write) = (self.state.clone(), next.clone(), rest.clone());
        let stats = write_with(&self.db, Durability::None, move |txn| {
            let mut stats = WriteStats::default();
            let rest = rest_changed.then_some(&*rest_to_write);
            write_changes(txn, Some(&before), &after, rest, &mut stats)?;
            Ok(stats)
        })
        .await
        .map_err(io_error("write the state machine"))?;
        self.rest = rest;
        self.last_write = stats;
        self.publish(next);
        Ok(replies)
    }

    fn publish(&mut self, state: Arc<AppliedState>) {
        self.state = state.clone();
        self.published.send_replace(state);
    }
}

/// A spec and its source as stored in `sm["spec"]`.
#[derive(Serialize, Deserialize)]
struct SpecRecord<S, T> {
    spec: S,
    source: T,
}

/// The `rest` record: `cluster` without the parts stored in records of
/// their own (spec and source, groups, events, transitions). They are taken
/// out for the encoding and put back, so whatever field `ClusterState`
/// gains is in `rest` without a change here.
fn encode_rest(cluster: &mut ClusterState) -> Result<Vec<u8>, DbError> {
    let spec = std::mem::take(&mut cluster.spec);
    let source = std::mem::take(&mut cluster.spec_source);
    let groups = std::mem::take(&mut cluster.groups);
    let events = std::mem::take(&mut cluster.events);
    let transitions = std::mem::take(&mut cluster.transitions);
    let rest = encode(&*cluster, "cluster state");
    cluster.spec = spec;
    cluster.spec_source = source;
    cluster.groups = groups;
    cluster.events = events;
    cluster.transitions = transitions;
    rest
}

/// Reads the state machine of layout 2 and its `rest` record as stored.
fn load_state(txn: &ReadTransaction) -> Result<(AppliedState, Vec<u8>), DbError> {
    let sm = txn.open_table(SM)?;
    let last_applied = get_json::<Option<LogId>>(&sm, SM_APPLIED)?.flatten();
    let last_membership = get_json(&sm, SM_MEMBERSHIP)?.unwrap_or_default();
    let rest = sm.get(SM_REST)?.map(|v| v.value().to_vec()).unwrap_or_default();
    let mut cluster: ClusterState = if rest.is_empty() {
        ClusterState::default()
    } else {
        decode(&rest, || format!("record {SM_REST:?}"))?
    };
    if let Some(SpecRecord { spec, source }) = get_json::<SpecRecord<Spec, String>>(&sm, SM_SPEC)? {
        cluster.spec = spec;
        cluster.spec_source = source;
    }
    for item in txn.open_table(SM_GROUPS)?.iter()? {
        let (name, group) = item?;
        let name = name.value().to_owned();
        let group = decode(group.value(), || format!("group {name:?}"))?;
        cluster.groups.insert(name, group);
    }
    cluster.events = read_ring(&txn.open_table(SM_EVENTS)?, "event")?;
    cluster.transitions = read_ring(&txn.open_table(SM_TRANSITIONS)?, "transition")?;
    let state = AppliedState {
        last_applied,
        last_membership,
        cluster,
    };
    Ok((state, rest))
}

/// Every record of a table keyed by number, in key order.
fn read_ring<T: DeserializeOwned>(
    table: &impl ReadableTable<u64, &'static [u8]>,
    what: &str,
) -> Result<VecDeque<T>, DbError> {
    table
        .iter()?
        .map(|item| {
            let (key, value) = item?;
            decode(value.value(), || format!("{what} {}", key.value()))
        })
        .collect()
}

/// Writes `after` over whatever the state machine's tables hold: a migrated
/// database or an installed snapshot. Returns the `rest` record written.
fn write_all(txn: &WriteTransaction, after: &AppliedState, stats: &mut WriteStats) -> Result<Vec<u8>, DbError> {
    txn.open_table(SM)?.retain(|_, _| false)?;
    txn.open_table(SM_GROUPS)?.retain(|_, _| false)?;
    txn.open_table(SM_EVENTS)?.retain(|_, _| false)?;
    txn.open_table(SM_TRANSITIONS)?.retain(|_, _| false)?;
    let mut cluster = after.cluster.clone();
    let rest = encode_rest(&mut cluster)?;
    write_changes(txn, None, after, Some(&rest), stats)?;
    Ok(rest)
}

/// Writes what differs between `before` (as stored; `None`: empty tables)
/// and `after`: the applied log id, the membership if it moved, the spec if
/// its version moved, `rest` if given, each group that changed or left, the
/// events and transitions that are new, changed or dropped.
fn write_changes(
    txn: &WriteTransaction,
    before: Option<&AppliedState>,
    after: &AppliedState,
    rest: Option<&[u8]>,
    stats: &mut WriteStats,
) -> Result<(), DbError> {
    let mut counted = |bytes: Vec<u8>| {
        stats.records += 1;
        stats.bytes += bytes.len();
        bytes
    };
    {
        let mut sm = txn.open_table(SM)?;
        sm.insert(SM_APPLIED, counted(encode(&after.last_applied, SM_APPLIED)?).as_slice())?;
        if before.is_none_or(|b| b.last_membership != after.last_membership) {
            sm.insert(
                SM_MEMBERSHIP,
                counted(encode(&after.last_membership, SM_MEMBERSHIP)?).as_slice(),
            )?;
        }
        // The spec changes only with its version (`ApplySpec`).
        if before.is_none_or(|b| b.cluster.spec_version != after.cluster.spec_version) {
            let record = SpecRecord {
                spec: &after.cluster.spec,
                source: &after.cluster.spec_source,
            };
            sm.insert(SM_SPEC, counted(encode(&record, SM_SPEC)?).as_slice())?;
        }
        if let Some(rest) = rest {
            sm.insert(SM_REST, counted(rest.to_vec()).as_slice())?;
        }
    }
    let empty = ClusterState::default();
    let old = before.map_or(&empty, |b| &b.cluster);
    let new = &after.cluster;
    let mut removed = 0;
    {
        let mut groups = txn.open_table(SM_GROUPS)?;
        for (name, group) in &new.groups {
            if old.groups.get(name) != Some(group) {
                groups.insert(name.as_str(), counted(encode(group, "group state")?).as_slice())?;
            }
        }
        for name in old.groups.keys().filter(|n| !new.groups.contains_key(*n)) {
            groups.remove(name.as_str())?;
            removed += 1;
        }
    }
    {
        // Events are never changed once recorded: the new ones are those
        // numbered from the old next number on; the dropped ones are older
        // than the oldest kept.
        let mut events = txn.open_table(SM_EVENTS)?;
        let first_new = before.map_or(0, |b| b.cluster.next_event_seq);
        for event in new.events.iter().rev().take_while(|e| e.seq >= first_new) {
            events.insert(event.seq, counted(encode(event, "event")?).as_slice())?;
        }
        let oldest_kept = new.events.front().map_or(u64::MAX, |e| e.seq);
        for event in old.events.iter().take_while(|e| e.seq < oldest_kept) {
            events.remove(event.seq)?;
            removed += 1;
        }
    }
    {
        // Both in id order; a transition changes while it is in progress.
        let mut transitions = txn.open_table(SM_TRANSITIONS)?;
        for t in &new.transitions {
            if find(&old.transitions, t.id) != Some(t) {
                transitions.insert(t.id, counted(encode(t, "transition")?).as_slice())?;
            }
        }
        for t in &old.transitions {
            if find(&new.transitions, t.id).is_none() {
                transitions.remove(t.id)?;
                removed += 1;
            }
        }
    }
    stats.records += removed;
    Ok(())
}

/// The transition numbered `id` in `list` (in id order).
fn find(list: &VecDeque<Transition>, id: u64) -> Option<&Transition> {
    list.binary_search_by_key(&id, |t| t.id).ok().and_then(|i| list.get(i))
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
        let to_store = Arc::new(state);
        let stored = to_store.clone();
        let (stats, rest) = write(&self.db, move |txn| {
            let mut stats = WriteStats::default();
            let rest = write_all(txn, &stored, &mut stats)?;
            let mut snapshots = txn.open_table(SNAPSHOT)?;
            put_json(&mut snapshots, SNAPSHOT_META, &meta)?;
            snapshots.insert(SNAPSHOT_DATA, data.as_slice())?;
            Ok((stats, rest))
        })
        .await
        .map_err(io_error("install a snapshot"))?;
        self.rest = rest.into();
        self.last_write = stats;
        let state = to_store;
        tracing::info!(
            last_log_index = state.last_applied.map_or(0, |l| l.index),
            "installed a snapshot sent by the coordinator"
        );
        self.publish(state);
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
    redb::SetDurabilityError,
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

/// True on a current-thread runtime (the simulator, unit tests): there a
/// transaction runs inline, since a blocking thread's result would come
/// back at a moment no seed decides. A node runs on the multi-thread
/// runtime, where transactions go to the blocking pool.
pub(crate) fn inline() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// Runs `f` in a read transaction on a blocking thread.
async fn read<T, F>(db: &Arc<Database>, f: F) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnOnce(&ReadTransaction) -> Result<T, DbError> + Send + 'static,
{
    if inline() {
        return f(&db.begin_read()?);
    }
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
    write_with(db, Durability::Immediate, f).await
}

/// Runs `f` in a write transaction on a blocking thread (inline on a
/// current-thread runtime: [`inline`]) and commits it with `durability`
/// before returning (`None`: visible to later transactions, on disk once a
/// later durable commit is).
async fn write_with<T, F>(db: &Arc<Database>, durability: Durability, f: F) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnOnce(&WriteTransaction) -> Result<T, DbError> + Send + 'static,
{
    if inline() {
        let mut txn = db.begin_write()?;
        txn.set_durability(durability)?;
        let out = f(&txn)?;
        txn.commit()?;
        return Ok(out);
    }
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        let mut txn = db.begin_write()?;
        txn.set_durability(durability)?;
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

fn decode<T: DeserializeOwned>(bytes: &[u8], what: impl FnOnce() -> String) -> Result<T, DbError> {
    serde_json::from_slice(bytes).map_err(|error| DbError::Corrupt { what: what(), error })
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

    /// A spec of `groups` exclusive groups, each one resource of commands.
    fn spec_of(groups: usize) -> (tandem_core::spec::Spec, String) {
        let mut text = String::new();
        for g in 0..groups {
            text.push_str(&format!(
                "[[groups]]\nname = \"g{g}\"\n[[groups.resources]]\nname = \"r\"\nagent = \"exec\"\n\
                 start = \"true\"\nstop = \"true\"\nmonitor = \"true\"\n\n"
            ));
        }
        let nodes = [site_a()];
        let spec = tandem_core::spec::Spec::parse(&text, "spec.toml", &nodes).unwrap();
        (spec, text)
    }

    fn site_a() -> NodeInfo {
        NodeInfo {
            name: "site-a".into(),
            address: "127.0.0.1:7400".into(),
            role: Default::default(),
        }
    }

    fn entry(index: u64, command: Command) -> Entry {
        Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Normal(command),
        }
    }

    fn membership_entry(index: u64) -> Entry {
        Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Membership(
                Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, site_a())])).unwrap(),
            ),
        }
    }

    fn assign(group: &str, nodes: &[&str], epoch: u64) -> Command {
        Command::Assign {
            group: group.into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            epoch,
            reason: "test".into(),
            at_unix_ms: epoch,
            detected_unix_ms: None,
            planned: false,
        }
    }

    /// A state of `groups` groups, each assigned to site-a; the first
    /// `moved` of them released and given back (a transition each). Returns
    /// the next log index.
    async fn populate(sm: &mut StateMachine, groups: usize, moved: usize) -> u64 {
        let (spec, source) = spec_of(groups);
        let mut index = 1;
        let mut next = |command: Option<Command>| {
            let e = match command {
                None => membership_entry(index),
                Some(c) => entry(index, c),
            };
            index += 1;
            e
        };
        let mut batch = vec![
            next(None),
            next(Some(Command::ApplySpec {
                spec,
                source,
                expected_version: 0,
                summary: Vec::new(),
                actor: "op@host".into(),
                at_unix_ms: 1,
            })),
        ];
        for g in 0..groups {
            batch.push(next(Some(assign(&format!("g{g}"), &["site-a"], 1))));
        }
        sm.apply_entries(batch).await.unwrap();
        for g in 0..moved {
            let group = format!("g{g}");
            let batch = vec![
                next(Some(assign(&group, &[], 2))),
                next(Some(assign(&group, &["site-a"], 3))),
            ];
            sm.apply_entries(batch).await.unwrap();
        }
        index
    }

    fn report(group: &str, epoch: u64, at_unix_ms: u64) -> Command {
        Command::Report {
            node: "site-a".into(),
            group: group.into(),
            report: tandem_core::groups::NodeReport {
                epoch,
                phase: tandem_core::groups::Phase::Running,
                resources: Vec::new(),
                at_unix_ms,
            },
            failed_resource: None,
            fatal: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_writes_only_what_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let me = identity("prod", "site-a");
        let store = Store::open(dir.path(), &me).unwrap();
        let mut sm = store.state_machine().await.unwrap();
        // 2000 groups; 150 moves, more than the transitions kept.
        let mut index = populate(&mut sm, 2000, 150).await;
        let whole = encode(&*sm.subscribe().borrow().clone(), "state").unwrap().len();
        assert_eq!(
            sm.subscribe().borrow().cluster.transitions.len(),
            tandem_core::state::TRANSITIONS_KEPT
        );

        // One group's report: the applied log id, `rest` (counters), that
        // group, its events, perhaps its transition; nothing of the others.
        let events_before = sm.subscribe().borrow().cluster.next_event_seq;
        sm.apply_entries(vec![entry(index, report("g1999", 1, 5))])
            .await
            .unwrap();
        index += 1;
        let one_group = sm.last_write();
        let new_events = sm.subscribe().borrow().cluster.next_event_seq - events_before;
        // Each new event may push the oldest out of the full ring.
        assert!(
            one_group.records <= 4 + 2 * new_events as usize,
            "{one_group:?}, {new_events} new events"
        );
        assert!(
            one_group.bytes * 100 < whole,
            "a one-group commit wrote {one_group:?}; the whole state is {whole} bytes"
        );

        // A note: the applied log id, `rest`, its event and the oldest
        // dropped; no group, no spec.
        sm.apply_entries(vec![note_at(index)]).await.unwrap();
        index += 1;
        let note = sm.last_write();
        assert!(note.records <= 4, "{note:?}");
        assert!(note.bytes < 1000, "{note:?}");

        // The event log past its bound: the oldest go, one by one.
        for _ in 0..tandem_core::state::EVENT_LOG_CAPACITY {
            let batch = (0..10).map(|k| note_at(index + k)).collect();
            sm.apply_entries(batch).await.unwrap();
            index += 10;
            if sm.subscribe().borrow().cluster.next_event_seq > 2 * tandem_core::state::EVENT_LOG_CAPACITY as u64 {
                break;
            }
        }
        let ring = sm.last_write();
        // 10 new events, 10 dropped, the applied log id and `rest`.
        assert_eq!(ring.records, 22, "{ring:?}");

        // What was written per change reads back as the whole state.
        let expected = sm.subscribe().borrow().clone();
        assert_eq!(expected.cluster.events.len(), tandem_core::state::EVENT_LOG_CAPACITY);
        drop((sm, store));
        let store = Store::open(dir.path(), &me).unwrap();
        let rows = read(&store.db, |txn| {
            Ok((
                txn.open_table(SM_EVENTS)?.len()?,
                txn.open_table(SM_TRANSITIONS)?.len()?,
                txn.open_table(SM_GROUPS)?.len()?,
            ))
        })
        .await
        .unwrap();
        assert_eq!(rows, (1000, 100, 2000));
        let sm = store.state_machine().await.unwrap();
        assert_eq!(*sm.subscribe().borrow(), expected);
    }

    fn note_at(index: u64) -> Entry {
        entry(
            index,
            Command::Note {
                message: format!("note {index}"),
                actor: "op@host".into(),
                at_unix_ms: index,
            },
        )
    }

    /// Set in the child process of `a_crash_loses_no_applied_entry`: the
    /// data directory it writes to before it aborts.
    const CRASH_CHILD: &str = "TANDEM_STORE_CRASH_CHILD";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_loses_no_applied_entry() {
        let me = identity("prod", "site-a");
        if let Some(dir) = std::env::var_os(CRASH_CHILD) {
            // The child: what openraft does (append, save the committed log
            // id, apply), then it dies without closing anything.
            let dir = PathBuf::from(dir);
            let store = Store::open(&dir, &me).unwrap();
            let mut log = store.log_store();
            let mut sm = store.state_machine().await.unwrap();
            let entries: Vec<Entry> = [membership_entry(1)].into_iter().chain((2..=40).map(note_at)).collect();
            log.blocking_append(entries.clone()).await.unwrap();
            log.save_committed(Some(log_id(1, 40))).await.unwrap();
            for chunk in entries.chunks(5) {
                sm.apply_entries(chunk.to_vec()).await.unwrap();
            }
            let applied = sm.subscribe().borrow().clone();
            std::fs::write(dir.join("applied.json"), serde_json::to_vec(&*applied).unwrap()).unwrap();
            std::process::abort();
        }
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "store::tests::a_crash_loses_no_applied_entry",
                "--exact",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.code().is_none(), "the child did not die by its abort: {status}");
        let expected: AppliedState =
            serde_json::from_slice(&std::fs::read(dir.path().join("applied.json")).unwrap()).unwrap();
        assert_eq!(expected.last_applied, Some(log_id(1, 40)));

        let store = Store::open(dir.path(), &me).unwrap();
        let (stored, _) = read(&store.db, load_state).await.unwrap();
        assert!(
            stored.last_applied < expected.last_applied,
            "the unsynced state machine records survived the crash ({:?}), so this run shows nothing",
            stored.last_applied
        );
        let sm = store.state_machine().await.unwrap();
        assert_eq!(**sm.subscribe().borrow(), expected);
    }

    /// Writes a database as layout 1 wrote it: the identity, the log, and
    /// the whole applied state as one record.
    fn write_layout_1(dir: &Path, me: &Identity, state: &AppliedState, log: &[Entry]) {
        let db = Database::create(dir.join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            put_json(&mut meta, IDENTITY, me).unwrap();
            put_json(&mut meta, COMMITTED, &state.last_applied).unwrap();
            let mut table = txn.open_table(LOG).unwrap();
            for e in log {
                table
                    .insert(e.log_id.index, encode(e, "entry").unwrap().as_slice())
                    .unwrap();
            }
            let mut sm = txn.open_table(LAYOUT_1_STATE_MACHINE).unwrap();
            sm.insert(LAYOUT_1_APPLIED, encode(state, "state").unwrap().as_slice())
                .unwrap();
            txn.open_table(SNAPSHOT).unwrap();
        }
        txn.commit().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_layout_1_database_is_migrated_once() {
        // The state to migrate: groups, transitions, events.
        let scratch = tempfile::tempdir().unwrap();
        let mut sm = Store::open(scratch.path(), &identity("prod", "site-a"))
            .unwrap()
            .state_machine()
            .await
            .unwrap();
        let index = populate(&mut sm, 20, 5).await;
        sm.apply_entries(vec![note_at(index)]).await.unwrap();
        let expected = sm.subscribe().borrow().clone();
        drop(sm);

        let dir = tempfile::tempdir().unwrap();
        let me = identity("prod", "site-a");
        write_layout_1(dir.path(), &me, &expected, &[membership_entry(1)]);

        let store = Store::open(dir.path(), &me).unwrap();
        assert_eq!(store.migrated_from(), Some(1));
        let sm = store.state_machine().await.unwrap();
        assert_eq!(*sm.subscribe().borrow(), expected);
        let (layout, old_table) = read(&store.db, |txn| {
            let layout = get_json::<u64>(&txn.open_table(META)?, LAYOUT_KEY)?;
            let old = txn
                .list_tables()?
                .any(|t| redb::TableHandle::name(&t) == "state_machine");
            Ok((layout, old))
        })
        .await
        .unwrap();
        assert_eq!(layout, Some(LAYOUT));
        assert!(!old_table, "layout 1's record is still there");
        assert!(store.has_raft_state().unwrap());
        drop((sm, store));

        // Once: the next open finds layout 2 and the same state.
        let store = Store::open(dir.path(), &me).unwrap();
        assert_eq!(store.migrated_from(), None);
        assert_eq!(*store.state_machine().await.unwrap().subscribe().borrow(), expected);

        // A fresh directory starts in layout 2, nothing to migrate.
        let fresh = tempfile::tempdir().unwrap();
        assert_eq!(Store::open(fresh.path(), &me).unwrap().migrated_from(), None);
        assert_eq!(Store::open(fresh.path(), &me).unwrap().migrated_from(), None);
    }

    #[test]
    fn refuses_a_newer_layout() {
        let dir = tempfile::tempdir().unwrap();
        let me = identity("prod", "site-a");
        drop(Store::open(dir.path(), &me).unwrap());
        let db = Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        put_json(&mut txn.open_table(META).unwrap(), LAYOUT_KEY, &(LAYOUT + 1)).unwrap();
        txn.commit().unwrap();
        drop(db);

        let err = Store::open(dir.path(), &me).err().unwrap();
        assert!(matches!(err, OpenError::NewerLayout { found: 3, .. }), "{err:?}");
        let message = err.to_string();
        for part in [
            dir.path().join(DB_FILE).display().to_string(),
            "written by a newer Tandem release (storage layout 3; this release reads layouts 1 to 2)".into(),
            "run a release that reads layout 3 on this node".into(),
            "empty node.data_dir and add it again".into(),
        ] {
            assert!(message.contains(&part), "{message}");
        }
        // Refused without a change: still layout 3.
        let db = Database::create(dir.path().join(DB_FILE)).unwrap();
        let layout = get_json::<u64>(&db.begin_read().unwrap().open_table(META).unwrap(), LAYOUT_KEY).unwrap();
        assert_eq!(layout, Some(3));
    }
}
