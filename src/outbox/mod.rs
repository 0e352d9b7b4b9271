//! Durable outbox between the dispatcher and the sinks: a log of batch records on redb, read by
//! every sink through its own cursor, each sink with its own bound.
//!
//! Why redb: pure Rust (no C toolchain on edge boxes), ACID with a stable file format, and a
//! B-tree keyed by record id is exactly a persistent log with cheap deletes.
//!
//! Layout and rules:
//! - **Records, not values.** Each dispatcher batch (every reading batch that was waiting,
//!   merged: group commit) becomes one record, written with one fsync while the dispatcher maps
//!   and publishes the next batch (one write at a time: the next waits for it). A value is
//!   encoded once; a sink decodes a record once ([`codec`]).
//! - **Sent while written, confirmed once durable.** The sinks may read the newest record while
//!   its fsync is under way (a busy disk took tens of milliseconds, which every value waited);
//!   a confirmation that reaches into it is held back until it is on disk, so a cursor never
//!   points past what the file holds. A crash in between re-sends those values: at least once.
//!   The gateway-added latency of a value ends at its confirmation, not at that fsync.
//! - **Cursors are written behind the confirmations.** A confirmation moves the cursor in memory
//!   at once (room for a blocked append, the lag); the file learns it with the next write of
//!   cursors, which a sink's confirmation loop leaves to the background
//!   ([`OutboxAcker::confirm`]) so that it never waits for the disk between two PUBACKs.
//! - **Per-sink cursors** `(record, offset)` = the first value the sink has not had confirmed.
//!   A sink acknowledges in order only what its far side confirmed (PUBACK, HTTP 2xx). A record is
//!   deleted once no sink needs it any more.
//! - **Per-sink bounds** ([`SinkBuffer`]: bytes and age) and policies. Under `drop_oldest` a sink
//!   past its bound skips its oldest *unread* records: the skipped values are counted for that
//!   sink alone, logged once per episode and reported through [`Outbox::sink_status`]; the other
//!   sinks keep everything. Under `block` the dispatcher waits for room ([`Outbox::append`]).
//!   Values a sink already handed to its far side (in flight) are never skipped: they are
//!   confirmed or re-sent.
//! - **Global caps** (`[outbox] max_entries`, `max_bytes`) bound the file as a whole; past them
//!   the oldest record is given up for every sink still behind it (counted per sink).
//! - **Destinations.** Each sink's destination (broker, ILP address) is stored beside its cursor.
//!   When a sink now points elsewhere, its old cursor is dropped with a WARN line saying how many
//!   values the old destination will not get: a backlog meant for one broker is never sent to
//!   another (e.g. a demo opening a factory's outbox). A sink new to the file starts with the
//!   values written from then on.
//! - After a crash, sinks resume from their cursors: delivery is at least once; duplicates are
//!   limited to what was sent but not yet acknowledged (dedup key: element + source timestamp).
//!   Cursor updates are committed without fsync (a lost one means a re-send, never a loss) and
//!   become durable with the next record.

pub mod codec;
mod config;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use tokio::sync::Notify;
use tracing::{error, info, warn};

pub use config::{BufferConfig, FullPolicy, OutboxConfig, SinkBuffer, DEFAULT_SINK_MAX_BYTES};

use crate::core::latency::{LatencyHistogram, ADDED_LATENCY_BUCKETS_S};
use crate::model::{ElementTarget, SubmodelUpdate};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const TARGETS: TableDefinition<u32, &str> = TableDefinition::new("targets");
/// Sink name → (record, offset) of its first unconfirmed value.
const SINK_CURSORS: TableDefinition<&str, (u64, u32)> = TableDefinition::new("sink_cursors");
/// Sink name → its destination when the cursor was written.
const SINK_DESTINATIONS: TableDefinition<&str, &str> = TableDefinition::new("sink_destinations");
/// The per-value layout of earlier versions, migrated into records on open.
const V1_ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const V1_CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");

/// Largest number of values merged into one record.
pub const MAX_RECORD_VALUES: usize = 50_000;

/// Values of the newest records kept in memory as appended (the newest record always is), so
/// that sinks that keep up never read back or decode what was just written. About 64 bytes a
/// value: 6.4 MB at this bound.
pub const RECENT_VALUES: usize = 2 * MAX_RECORD_VALUES;

/// The values of one record, in order, shared by every sink that reads it (one decode, no copy
/// per sink: a [`Delivery`] is a range of it).
#[derive(Debug, Default)]
pub struct RecordValues {
    values: Vec<SubmodelUpdate>,
    /// Record offset of each value, present only when damaged entries were left out on
    /// decoding (otherwise value `i` is at offset `i`).
    offsets: Option<Vec<u32>>,
    /// When the readings reached the gateway (`None`: read back from the file).
    received: Option<std::time::Instant>,
}

impl RecordValues {
    /// Values of readings that reached the gateway at `received`.
    pub fn new(values: Vec<SubmodelUpdate>, received: std::time::Instant) -> RecordValues {
        RecordValues {
            values,
            offsets: None,
            received: Some(received),
        }
    }

    /// The values, in order.
    pub fn values(&self) -> &[SubmodelUpdate] {
        &self.values
    }

    /// Index of the first value at or after record offset `offset`.
    fn index_of(&self, offset: u32) -> usize {
        match &self.offsets {
            None => (offset as usize).min(self.values.len()),
            Some(o) => o.partition_point(|x| *x < offset),
        }
    }

    /// Record offset of value `index` (`index` < len).
    fn offset_of(&self, index: usize) -> u32 {
        match &self.offsets {
            None => index as u32,
            Some(o) => o[index],
        }
    }
}

/// A range of one record's values handed to a sink: derefs to the slice, so it reads like a
/// `&[SubmodelUpdate]`, without copying any value.
#[derive(Debug, Clone)]
pub struct DeliveryValues {
    record: Arc<RecordValues>,
    range: std::ops::Range<usize>,
}

impl std::ops::Deref for DeliveryValues {
    type Target = [SubmodelUpdate];
    fn deref(&self) -> &[SubmodelUpdate] {
        &self.record.values[self.range.clone()]
    }
}

impl<'a> IntoIterator for &'a DeliveryValues {
    type Item = &'a SubmodelUpdate;
    type IntoIter = std::slice::Iter<'a, SubmodelUpdate>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Errors of the outbox. Each names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Another process holds the file.
    #[error("another gateway uses {0}: stop it, or give this one its own `[outbox] dir`")]
    Locked(PathBuf),
    /// The directory cannot be created.
    #[error("outbox.dir: cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The storage failed (disk full, damaged file, ...).
    #[error("outbox {path}: {message}")]
    Storage {
        /// The file.
        path: PathBuf,
        /// What redb said.
        message: String,
    },
    /// A background task failed.
    #[error("outbox: {0}")]
    Task(String),
}

type Result<T> = std::result::Result<T, OutboxError>;

/// A position in the log: value `offset` of record `record`. Ordered by record, then offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Record id.
    pub record: u64,
    /// Index of the value in the record.
    pub offset: u32,
}

impl Pos {
    fn start_of(record: u64) -> Pos {
        Pos { record, offset: 0 }
    }
}

/// A sink as the outbox knows it.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// Cursor name (`mqtt`, `questdb`, ...).
    pub name: String,
    /// Where the sink delivers (no secrets): a sink pointed elsewhere does not inherit the old
    /// destination's backlog.
    pub destination: String,
    /// Its bound and policy.
    pub buffer: SinkBuffer,
}

/// A sink's buffer as reported to `/metrics`, `/ready` and the logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkBufferStatus {
    /// Values appended but not yet confirmed by the sink (in flight + unread, minus skipped).
    pub lag: u64,
    /// Bytes of records waiting for the sink.
    pub bytes: u64,
    /// Values the sink lost to its bound (or the global caps) since start.
    pub dropped: u64,
    /// True while the sink is past its bound and losing its oldest values.
    pub dropping: bool,
    /// Its bound.
    pub max_bytes: u64,
    /// Its policy.
    pub when_full: &'static str,
    /// Source timestamp (ns since the epoch) of the newest value in the oldest record the sink
    /// has not finished: the oldest unconfirmed value is at least this old. 0 = nothing waits.
    pub oldest_unconfirmed_ts: i64,
}

/// Counters of the outbox as a whole.
#[derive(Debug, Default)]
pub struct OutboxStats {
    /// Values persisted.
    pub appended: AtomicU64,
    /// Records persisted (a commit writes every record published since the last: one fsync).
    pub records: AtomicU64,
    /// Values given up for at least one sink (sum over sinks; see the per-sink counts).
    pub dropped: AtomicU64,
    /// Values held in the file.
    pub depth: AtomicU64,
    /// Bytes of values held in the file.
    pub bytes: AtomicU64,
}

/// Called on buffer episodes (`event`, details), e.g. to write the audit log.
pub type EventHook = Arc<dyn Fn(&'static str, serde_json::Value) + Send + Sync>;

struct RecordMeta {
    count: u32,
    /// When the earliest of its readings reached the gateway (`None` for records of an earlier
    /// run): confirmations of its values are observed as the gateway's added latency.
    received: Option<std::time::Instant>,
    bytes: u64,
    newest_ts: i64,
    /// Values and bytes of every record appended before this one (since open): positions turn
    /// into value counts by subtraction.
    values_before: u64,
    bytes_before: u64,
}

/// A stretch of values a sink skipped while values before it were still in flight.
#[derive(Debug, Clone, Copy)]
struct Gap {
    start: Pos,
    end: Pos,
    values: u64,
}

struct SinkState {
    spec: SinkSpec,
    /// First value not confirmed (the durable cursor).
    acked: Pos,
    /// First value not yet handed to the sink.
    read: Pos,
    /// Skipped stretches between `acked` and `read`, in order.
    gaps: VecDeque<Gap>,
    dropped: u64,
    /// `dropped` when the current episode began.
    episode: Option<u64>,
    /// Arrival at the gateway → confirmation by this sink's far side, per value.
    added_latency: Arc<LatencyHistogram>,
    /// A confirmation that reached into the record still being written: applied once that
    /// record is on disk (a cursor never points past what the file holds).
    confirmed_early: Option<Pos>,
    /// Values before this had their added latency observed. A confirmation is observed when
    /// the sink reports it, not when the cursor may move: the far side has the value then, and
    /// the fsync of its record (which only holds the cursor back) is not the value's wait.
    observed: Pos,
}

struct State {
    records: BTreeMap<u64, RecordMeta>,
    /// Id the next record gets; also the log's head.
    next_record: u64,
    /// Every record below this id is on disk; the newer ones were handed to the sinks before
    /// their write (see [`Outbox::publish`]).
    durable_below: u64,
    /// Values and bytes appended since open, including records that were deleted.
    values_total: u64,
    bytes_total: u64,
    /// Values and bytes held in the file.
    held_values: u64,
    held_bytes: u64,
    sinks: Vec<SinkState>,
    closed: bool,
    /// Cursor moves and deletions made in memory and not yet written to the file.
    unwritten: Unwritten,
}

/// What [`Outbox::write_pending`] has still to write (see [`OutboxAcker::confirm`]).
#[derive(Default)]
struct Unwritten {
    /// Records no sink needs any more, already gone from memory, still in the file.
    gone: Vec<u64>,
    /// A cursor moved since the last write.
    cursors: bool,
    /// A background write is under way (it takes whatever is pending when it is done).
    busy: bool,
}

impl Unwritten {
    fn is_empty(&self) -> bool {
        self.gone.is_empty() && !self.cursors
    }
}

struct Targets {
    /// Element targets by id, including those of earlier runs still referenced by records.
    by_id: Vec<Option<TargetSlot>>,
    /// Id by a hash of the JSON form, to reuse ids across restarts (a hit is checked against the
    /// target itself: a hash is 8 bytes where the JSON was a few hundred, for every element).
    ids: HashMap<u64, u32>,
    /// Registered but not yet written (go with the next record).
    unsaved: Vec<(u32, String)>,
}

/// A record visible to the sinks that is not on disk yet.
struct PendingWrite {
    id: u64,
    values: Arc<RecordValues>,
    record: Vec<u8>,
    new_targets: Vec<(u32, String)>,
}

/// An element target of the outbox's table.
enum TargetSlot {
    /// Registered by this run: the router's own target.
    Live(&'static ElementTarget),
    /// Read from the file at open and not (yet) registered by this run. Made `'static` only
    /// when a record read back refers to it first: a restart whose config still has the
    /// target then keeps no second copy of it for the rest of the process.
    /// Boxed: a slot is two words for the many live targets (100k elements: 1.6 MB of slots
    /// instead of the 20 MB an inline target would make every slot).
    Stored(Box<StoredTarget>),
}

/// A target read from the file (see [`TargetSlot::Stored`]).
struct StoredTarget {
    target: ElementTarget,
    leaked: std::sync::OnceLock<&'static ElementTarget>,
}

const _: () = assert!(std::mem::size_of::<Option<TargetSlot>>() <= 16);

impl TargetSlot {
    /// The target, to read.
    fn get(&self) -> &ElementTarget {
        match self {
            TargetSlot::Live(t) => t,
            TargetSlot::Stored(stored) => &stored.target,
        }
    }

    /// The target for an update (see [`ElementTarget::leak`]).
    fn for_update(&self) -> &'static ElementTarget {
        match self {
            TargetSlot::Live(t) => t,
            TargetSlot::Stored(stored) => {
                stored.leaked.get_or_init(|| stored.target.clone().leak())
            }
        }
    }
}

/// The durable log shared by the dispatcher (writer) and the sinks (readers).
pub struct Outbox {
    db: Database,
    path: PathBuf,
    cfg: OutboxConfig,
    state: Mutex<State>,
    targets: RwLock<Targets>,
    /// The values of the newest records as appended (see [`RECENT_VALUES`]): a sink that keeps
    /// up reads them from here, neither reading the file nor decoding.
    recent: Mutex<VecDeque<(u64, Arc<RecordValues>)>>,
    /// Serialises appends (records in id order); holds the records published but not yet
    /// written (see [`Outbox::publish`]). Held only to publish or to take the records for a
    /// write, never during the write itself: the next group is published (and sent) while the
    /// previous one is being written.
    writer: tokio::sync::Mutex<Vec<PendingWrite>>,
    /// Held by the [`Outbox::commit`] under way: one write at a time, so records reach the
    /// file in id order and a failed write's records go back before the newer ones.
    committing: tokio::sync::Mutex<()>,
    /// Woken when a record was appended or the outbox closed.
    appended: Notify,
    /// Woken when a sink confirmed or skipped values (room for a blocked append).
    space: Notify,
    /// Held while cursors and deletions are written: what is taken from [`State::unwritten`] is
    /// written in the order it was taken (an older cursor never overwrites a newer one).
    writing: Mutex<()>,
    hook: Option<EventHook>,
    /// Counters of the whole file.
    pub stats: OutboxStats,
}

/// Turns any redb error into [`OutboxError::Storage`] naming the file.
trait StorageContext<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T, E: Into<redb::Error>> StorageContext<T> for std::result::Result<T, E> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| OutboxError::Storage {
            path: path.to_path_buf(),
            message: e.into().to_string(),
        })
    }
}

/// Hash of a target's JSON form within this process (the map is rebuilt at every open).
fn json_hash(json: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    json.hash(&mut h);
    h.finish()
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl State {
    fn head(&self) -> Pos {
        Pos::start_of(self.next_record)
    }

    /// (values, bytes) appended before `p` since open; bytes count whole records.
    fn before(&self, p: Pos) -> (u64, u64) {
        match self.records.range(p.record..).next() {
            Some((&id, r)) if id == p.record => (r.values_before + p.offset as u64, r.bytes_before),
            Some((_, r)) => (r.values_before, r.bytes_before),
            None => (self.values_total, self.bytes_total),
        }
    }

    fn values_between(&self, a: Pos, b: Pos) -> u64 {
        self.before(b).0.saturating_sub(self.before(a).0)
    }

    /// The position just past record `id`.
    fn after(id: u64) -> Pos {
        Pos::start_of(id + 1)
    }

    fn lag(&self, s: &SinkState) -> u64 {
        let skipped: u64 = s.gaps.iter().map(|g| g.values).sum();
        self.values_between(s.acked, self.head())
            .saturating_sub(skipped)
    }

    /// Bytes of the records a sink has not finished with (from its cursor on).
    fn bytes_waiting(&self, from: Pos) -> u64 {
        self.bytes_total.saturating_sub(self.before(from).1)
    }

    /// Observes the gateway-added latency of the values sink `i` has just had confirmed,
    /// `[from, upto)`: per record, (now − its arrival) for each of its values in that stretch.
    /// Stretches the sink skipped (its bound) were never delivered and are left out; records of
    /// an earlier run have no arrival time and are left out too.
    fn observe_added_latency(&self, i: usize, from: Pos, upto: Pos) {
        let now = std::time::Instant::now();
        let sink = &self.sinks[i];
        for (&id, r) in self.records.range(from.record..=upto.record) {
            let Some(received) = r.received else { continue };
            let start = Pos {
                record: id,
                offset: if id == from.record { from.offset } else { 0 },
            };
            let end = Pos {
                record: id,
                offset: if id == upto.record {
                    upto.offset.min(r.count)
                } else {
                    r.count
                },
            };
            if end <= start {
                continue;
            }
            let mut n = (end.offset - start.offset) as u64;
            for g in &sink.gaps {
                let (a, b) = (g.start.max(start), g.end.min(end));
                if a < b {
                    n = n.saturating_sub((b.offset - a.offset) as u64);
                }
            }
            if n > 0 {
                let micros = now.saturating_duration_since(received).as_micros() as u64;
                sink.added_latency.observe_micros(micros, n);
            }
        }
    }

    /// Observes the added latency of what sink `i` has had confirmed up to `upto` and was not
    /// observed yet (each value once, also when its confirmation is applied later).
    fn observe_up_to(&mut self, i: usize, upto: Pos) {
        let from = self.sinks[i].acked.max(self.sinks[i].observed);
        if upto > from {
            self.observe_added_latency(i, from, upto);
            self.sinks[i].observed = upto;
        }
    }

    /// Is record `id` still needed by some sink?
    fn needed(&self, id: u64) -> bool {
        self.sinks.iter().any(|s| {
            if s.acked >= Self::after(id) {
                return false;
            }
            if s.read <= Pos::start_of(id) || s.acked.record >= id {
                return true;
            }
            // Between acked and read: needed unless a gap covers it whole.
            !s.gaps
                .iter()
                .any(|g| g.start <= Pos::start_of(id) && g.end >= Self::after(id))
        })
    }

    /// Removes the records no sink needs from memory; returns their ids (to delete on disk).
    fn collect(&mut self) -> Vec<u64> {
        let limit = self
            .sinks
            .iter()
            .map(|s| s.read.record)
            .min()
            .unwrap_or(self.next_record);
        let candidates: Vec<u64> = self.records.range(..limit).map(|(id, _)| *id).collect();
        let mut gone = Vec::new();
        for id in candidates {
            if !self.needed(id) {
                let r = self.records.remove(&id).expect("listed");
                self.held_values -= r.count as u64;
                self.held_bytes -= r.bytes;
                gone.push(id);
            }
        }
        gone
    }

    /// Moves sink `i` past everything before `to` it has not read yet; returns the values lost
    /// (values already counted in an earlier skip are not counted again).
    fn skip(&mut self, i: usize, mut to: Pos) -> u64 {
        let from = self.sinks[i].read;
        if to <= from {
            return 0;
        }
        // A stretch skipped before (then re-read from the cursor) is merged into this one.
        let mut already = 0;
        let mut j = 0;
        while j < self.sinks[i].gaps.len() {
            let g = self.sinks[i].gaps[j];
            if g.start >= from && g.start < to {
                to = to.max(g.end);
                already += g.values;
                self.sinks[i].gaps.remove(j);
            } else {
                j += 1;
            }
        }
        let values = self.values_between(from, to).saturating_sub(already);
        let s = &mut self.sinks[i];
        s.read = to;
        if s.acked == from {
            // Nothing in flight: the cursor itself moves.
            s.acked = to;
            s.confirm(to);
        } else {
            let at = s
                .gaps
                .iter()
                .position(|g| g.start > from)
                .unwrap_or(s.gaps.len());
            s.gaps.insert(
                at,
                Gap {
                    start: from,
                    end: to,
                    values: values + already,
                },
            );
        }
        s.dropped += values;
        values
    }
}

impl SinkState {
    /// Records a confirmation up to `upto`; skipped stretches right after it are passed too.
    fn confirm(&mut self, upto: Pos) -> bool {
        if upto < self.acked {
            return false;
        }
        let moved = upto > self.acked;
        self.acked = upto;
        while let Some(g) = self.gaps.front().copied() {
            if g.start <= self.acked {
                self.acked = self.acked.max(g.end);
                self.gaps.pop_front();
            } else {
                break;
            }
        }
        if self.read < self.acked {
            self.read = self.acked;
        }
        moved
    }
}

impl Outbox {
    /// Opens (or creates) `<dir>/outbox.redb` for the given sinks.
    pub fn open(
        dir: &Path,
        cfg: OutboxConfig,
        sinks: &[SinkSpec],
        hook: Option<EventHook>,
    ) -> Result<Arc<Outbox>> {
        std::fs::create_dir_all(dir).map_err(|source| OutboxError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("outbox.redb");
        let db = redb::Builder::new()
            .set_cache_size(cfg.cache_mib.max(1).saturating_mul(1 << 20))
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => OutboxError::Locked(path.clone()),
                e => OutboxError::Storage {
                    path: path.clone(),
                    message: format!("cannot open: {e}"),
                },
            })?;
        migrate_v1(&db, &path)?;

        let txn = db.begin_write().at(&path)?;
        let (records, targets, stored) = {
            txn.open_table(RECORDS).at(&path)?;
            txn.open_table(TARGETS).at(&path)?;
            txn.open_table(SINK_DESTINATIONS).at(&path)?;
            txn.open_table(SINK_CURSORS).at(&path)?;
            let mut records = BTreeMap::new();
            let (mut values, mut bytes) = (0u64, 0u64);
            for row in txn.open_table(RECORDS).at(&path)?.iter().at(&path)? {
                let (k, v) = row.at(&path)?;
                let (id, v) = (k.value(), v.value());
                let (count, newest_ts) = codec::record_header(v).unwrap_or_else(|e| {
                    error!(path = %path.display(), record = id, "outbox: damaged record header ({e}); its values will be skipped");
                    (0, i64::MIN)
                });
                records.insert(
                    id,
                    RecordMeta {
                        count,
                        received: None,
                        bytes: v.len() as u64,
                        newest_ts,
                        values_before: values,
                        bytes_before: bytes,
                    },
                );
                values += count as u64;
                bytes += v.len() as u64;
            }
            let mut targets = Targets {
                by_id: Vec::new(),
                ids: HashMap::new(),
                unsaved: Vec::new(),
            };
            for row in txn.open_table(TARGETS).at(&path)?.iter().at(&path)? {
                let (id, json) = row.at(&path)?;
                let (id, json) = (id.value(), json.value().to_string());
                match serde_json::from_str::<ElementTarget>(&json) {
                    Ok(t) => {
                        // Hashed as this version writes it, not as stored: a target written by
                        // an earlier version (which also stored each element's MQTT topic) is
                        // found again, instead of getting a second id and a second copy.
                        let current = serde_json::to_string(&t).unwrap_or(json);
                        let idx = id as usize;
                        if targets.by_id.len() <= idx {
                            targets.by_id.resize_with(idx + 1, || None);
                        }
                        let _ = t.outbox_id.set(id);
                        targets.by_id[idx] = Some(TargetSlot::Stored(Box::new(StoredTarget {
                            target: t,
                            leaked: Default::default(),
                        })));
                        targets.ids.insert(json_hash(&current), id);
                    }
                    Err(e) => {
                        error!(id, error = %e, "outbox: unreadable element target; its values will be skipped")
                    }
                }
            }
            let mut stored: HashMap<String, (Pos, Option<String>)> = HashMap::new();
            for row in txn.open_table(SINK_CURSORS).at(&path)?.iter().at(&path)? {
                let (k, v) = row.at(&path)?;
                let (record, offset) = v.value();
                stored.insert(k.value().to_string(), (Pos { record, offset }, None));
            }
            for row in txn
                .open_table(SINK_DESTINATIONS)
                .at(&path)?
                .iter()
                .at(&path)?
            {
                let (k, v) = row.at(&path)?;
                if let Some(e) = stored.get_mut(k.value()) {
                    e.1 = Some(v.value().to_string());
                }
            }
            (records, targets, stored)
        };
        let next_record = records.last_key_value().map_or(0, |(id, _)| id + 1);
        let (values_total, bytes_total) = records.last_key_value().map_or((0, 0), |(_, r)| {
            (r.values_before + r.count as u64, r.bytes_before + r.bytes)
        });
        let mut state = State {
            held_values: records.values().map(|r| r.count as u64).sum(),
            held_bytes: records.values().map(|r| r.bytes).sum(),
            records,
            next_record,
            durable_below: next_record,
            values_total,
            bytes_total,
            sinks: Vec::new(),
            closed: false,
            unwritten: Unwritten::default(),
        };
        let head = state.head();
        for spec in sinks {
            let start = match stored.get(&spec.name) {
                Some((pos, dest))
                    if dest.is_none() || dest.as_deref() == Some(&spec.destination) =>
                {
                    // Never behind the oldest record held (those were deleted as confirmed).
                    let oldest = state
                        .records
                        .keys()
                        .next()
                        .map_or(head, |id| Pos::start_of(*id));
                    (*pos).max(oldest).min(head)
                }
                Some((pos, Some(old))) => {
                    let lost = state.values_between(*pos, head);
                    warn!(
                        path = %path.display(),
                        sink = %spec.name,
                        was = %old,
                        now = %spec.destination,
                        values = lost,
                        "outbox: this sink now delivers elsewhere; the values it still held for its old destination are not sent to the new one (its old cursor is dropped)"
                    );
                    if let Some(h) = &hook {
                        h(
                            "outbox_cursor_dropped",
                            serde_json::json!({
                                "sink": spec.name, "was": old, "now": spec.destination, "values": lost,
                                "file": path.display().to_string(),
                            }),
                        );
                    }
                    head
                }
                _ => {
                    if state.held_values > 0 {
                        info!(sink = %spec.name, held = state.held_values, "outbox: this sink is new here and starts with the values written from now on");
                    }
                    head
                }
            };
            state.sinks.push(SinkState {
                spec: spec.clone(),
                acked: start,
                read: start,
                gaps: VecDeque::new(),
                dropped: 0,
                episode: None,
                added_latency: Arc::new(LatencyHistogram::with_bounds(&ADDED_LATENCY_BUCKETS_S)),
                confirmed_early: None,
                observed: start,
            });
        }
        for name in stored.keys() {
            if !sinks.iter().any(|s| &s.name == name) {
                info!(sink = %name, "outbox: this sink is no longer configured; its cursor is removed");
            }
        }
        let gone = state.collect();
        {
            let mut cursors = txn.open_table(SINK_CURSORS).at(&path)?;
            let mut dests = txn.open_table(SINK_DESTINATIONS).at(&path)?;
            for name in stored.keys() {
                cursors.remove(name.as_str()).at(&path)?;
                dests.remove(name.as_str()).at(&path)?;
            }
            for s in &state.sinks {
                cursors
                    .insert(s.spec.name.as_str(), (s.acked.record, s.acked.offset))
                    .at(&path)?;
                dests
                    .insert(s.spec.name.as_str(), s.spec.destination.as_str())
                    .at(&path)?;
            }
            let mut records = txn.open_table(RECORDS).at(&path)?;
            for id in gone {
                records.remove(id).at(&path)?;
            }
        }
        txn.commit().at(&path)?;
        if state.held_values > 0 {
            info!(path = %path.display(), values = state.held_values, "outbox: resuming with values not yet confirmed by every sink");
        }
        let outbox = Arc::new(Outbox {
            db,
            path,
            cfg,
            targets: RwLock::new(targets),
            recent: Mutex::new(VecDeque::new()),
            writer: tokio::sync::Mutex::new(Vec::new()),
            committing: tokio::sync::Mutex::new(()),
            appended: Notify::new(),
            space: Notify::new(),
            writing: Mutex::new(()),
            hook,
            stats: OutboxStats::default(),
            state: Mutex::new(state),
        });
        outbox.publish_gauges(&outbox.state.lock().expect("outbox state"));
        Ok(outbox)
    }

    /// The outbox file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn publish_gauges(&self, s: &State) {
        self.stats.depth.store(s.held_values, Ordering::Relaxed);
        self.stats.bytes.store(s.held_bytes, Ordering::Relaxed);
    }

    fn sink_index(&self, sink: &str) -> usize {
        self.state
            .lock()
            .expect("outbox state")
            .sinks
            .iter()
            .position(|s| s.spec.name == sink)
            .unwrap_or_else(|| panic!("outbox: sink {sink} was not given to Outbox::open"))
    }

    /// A reader for `sink`, starting at its first unconfirmed value (in-flight values of an
    /// earlier reader are read again: a sink that starts over re-sends what was not confirmed).
    pub fn reader(self: &Arc<Self>, sink: &str) -> OutboxReader {
        let index = self.sink_index(sink);
        {
            let mut state = self.state.lock().expect("outbox state");
            let s = &mut state.sinks[index];
            // What was skipped stays skipped: reading jumps over each gap it meets.
            s.read = s.acked;
        }
        OutboxReader {
            outbox: self.clone(),
            index,
            sink: sink.to_string(),
            cache: None,
        }
    }

    /// No more appends: readers finish once they have read everything.
    pub fn close(&self) {
        self.state.lock().expect("outbox state").closed = true;
        self.appended.notify_waiters();
        // Make non-durable cursor commits durable.
        if let Ok(txn) = self.db.begin_write() {
            let _ = txn.commit();
        }
    }

    /// Persists `batch` (received now) as one record; see [`Self::append_values`].
    pub async fn append(self: &Arc<Self>, batch: &[SubmodelUpdate]) -> Result<()> {
        let values = RecordValues::new(batch.to_vec(), std::time::Instant::now());
        self.append_values(&Arc::new(values)).await
    }

    /// Persists `values` as one record: [`Self::publish`], then [`Self::commit`]. Called again
    /// with the same values after a failed write, it writes them again (never a second copy).
    pub async fn append_values(self: &Arc<Self>, values: &Arc<RecordValues>) -> Result<()> {
        let retry = {
            let pending = self.writer.lock().await;
            pending.iter().any(|p| Arc::ptr_eq(&p.values, values))
        };
        if !retry {
            self.publish(values).await;
        }
        self.commit().await.map(|_| ())
    }

    /// Hands `values` to the sinks as the next record, before it is on disk; [`Self::commit`]
    /// writes it. Under a `block` sink this first waits until that sink has room; cancelling
    /// the future while it waits publishes nothing.
    ///
    /// Why before the disk: a value leaves for its sinks without waiting for the fsync (on a
    /// busy disk, tens of milliseconds) or for the rest of its group to be mapped. A sink's
    /// confirmation of it takes effect only once it is on disk, so a cursor never points past
    /// what the file holds; a crash before the commit re-sends what was confirmed meanwhile.
    pub async fn publish(self: &Arc<Self>, values: &Arc<RecordValues>) {
        if values.values.is_empty() {
            return;
        }
        let mut pending = self.writer.lock().await;
        let (record, new_targets) = self.encode(&values.values);
        self.wait_for_room(values.values.len() as u64, record.len() as u64)
            .await;
        let id = self.publish_record(&record, values.clone());
        self.appended.notify_waiters();
        pending.push(PendingWrite {
            id,
            values: values.clone(),
            record,
            new_targets,
        });
    }

    /// Writes every published record not yet on disk in one transaction (one fsync: group
    /// commit); returns how many values it wrote. On an error they stay published and the next
    /// call writes them again.
    ///
    /// Records published while the write is under way wait for the next call: publishing does
    /// not wait for the disk (see [`Self::writer`]). A call made meanwhile waits for the one
    /// under way, so records are written in id order.
    pub async fn commit(self: &Arc<Self>) -> Result<u64> {
        let _one_at_a_time = self.committing.lock().await;
        let records = std::mem::take(&mut *self.writer.lock().await);
        if records.is_empty() {
            return Ok(0);
        }
        let values: usize = records.iter().map(|p| p.values.values.len()).sum();
        let this = self.clone();
        let (result, records) = tokio::task::spawn_blocking(move || {
            let result = this.write_records(&records);
            (result, records)
        })
        .await
        .map_err(|e| OutboxError::Task(e.to_string()))?;
        if let Err(e) = result {
            // Back in front of those published meanwhile: the next call writes all, in order.
            let mut pending = self.writer.lock().await;
            let newer = std::mem::replace(&mut *pending, records);
            pending.extend(newer);
            return Err(e);
        }
        Ok(values as u64)
    }

    fn encode(&self, batch: &[SubmodelUpdate]) -> (Vec<u8>, Vec<(u32, String)>) {
        let mut record = Vec::with_capacity(codec::RECORD_HEADER + batch.len() * 40);
        codec::begin_record(&mut record);
        for u in crate::model::prefetch_targets(batch) {
            let target = match u.target.outbox_id.get() {
                Some(id) => *id,
                None => self.register_target(u.target),
            };
            codec::push_ref(
                &codec::EntryRef {
                    target,
                    status: u.status,
                    source_ts_nanos: u.source_ts_nanos,
                    server_ts_nanos: u.server_ts_nanos,
                    value: &u.value,
                },
                &mut record,
            );
        }
        let new_targets = std::mem::take(&mut self.targets.write().expect("targets").unsaved);
        (record, new_targets)
    }

    fn register_target(&self, target: &'static ElementTarget) -> u32 {
        let json = serde_json::to_string(target).expect("targets serialise");
        let hash = json_hash(&json);
        let mut t = self.targets.write().expect("outbox targets");
        let known = t.ids.get(&hash).copied().filter(|&id| {
            // The same hash for another target (practically never): it gets an id of its own.
            let same =
                |old: &TargetSlot| serde_json::to_string(old.get()).is_ok_and(|old| old == json);
            matches!(t.by_id.get(id as usize), Some(Some(old)) if same(old))
        });
        let id = match known {
            Some(id) => id,
            None => {
                let id = t.by_id.len() as u32;
                t.by_id.push(None);
                t.ids.insert(hash, id);
                t.unsaved.push((id, json));
                id
            }
        };
        // Later values of this target reuse the id and decode to this same target.
        let _ = target.outbox_id.set(id);
        t.by_id[id as usize] = Some(TargetSlot::Live(target));
        id
    }

    /// Waits while a `block` sink (or the global caps, when some sink blocks) has no room for
    /// `values`/`bytes` more.
    async fn wait_for_room(&self, values: u64, bytes: u64) {
        let mut warned = false;
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            let full = {
                let s = self.state.lock().expect("outbox state");
                let mut full = None;
                for sink in s
                    .sinks
                    .iter()
                    .filter(|x| x.spec.buffer.when_full == FullPolicy::Block)
                {
                    let waiting = s.bytes_waiting(sink.acked);
                    let waiting_values = s.lag(sink);
                    // A record larger than the bound is let through once the sink is empty.
                    // The global value cap counts here too: a `block` sink never loses values
                    // to it (see `enforce_bounds`).
                    if waiting > 0
                        && (waiting + bytes > sink.spec.buffer.max_bytes
                            || waiting_values + values > self.cfg.max_entries)
                    {
                        full = Some((sink.spec.name.clone(), waiting));
                        break;
                    }
                }
                full
            };
            let Some((sink, waiting)) = full else { return };
            if !warned {
                warn!(
                    sink = %sink,
                    bytes_waiting = waiting,
                    "outbox: a sink with when_full = \"block\" is full; holding the dispatcher (and with it the live values and the OPC UA sources) until it catches up"
                );
                warned = true;
            }
            space.await;
        }
    }

    /// Makes a record visible to the sinks (before it is on disk); returns its id.
    fn publish_record(&self, record: &[u8], values: Arc<RecordValues>) -> u64 {
        let (count, newest_ts) = codec::record_header(record).expect("encoded here");
        let mut s = self.state.lock().expect("outbox state");
        let id = s.next_record;
        let bytes = record.len() as u64;
        let meta = RecordMeta {
            count,
            received: values.received,
            bytes,
            newest_ts,
            values_before: s.values_total,
            bytes_before: s.bytes_total,
        };
        s.records.insert(id, meta);
        s.next_record = id + 1;
        s.values_total += count as u64;
        s.bytes_total += bytes;
        s.held_values += count as u64;
        s.held_bytes += bytes;
        self.keep_recent(&s, id, values);
        id
    }

    /// Writes published records (in id order) in one transaction, then applies the
    /// confirmations that waited for them and the bounds.
    fn write_records(&self, pending: &[PendingWrite]) -> Result<()> {
        let Some(last) = pending.last() else {
            return Ok(());
        };
        let txn = self.db.begin_write().at(&self.path)?;
        {
            let mut records = txn.open_table(RECORDS).at(&self.path)?;
            let mut targets = txn.open_table(TARGETS).at(&self.path)?;
            for p in pending {
                records.insert(p.id, p.record.as_slice()).at(&self.path)?;
                for (tid, json) in &p.new_targets {
                    targets.insert(*tid, json.as_str()).at(&self.path)?;
                }
            }
        }
        txn.commit().at(&self.path)?;
        let count: usize = pending.iter().map(|p| p.values.values.len()).sum();
        self.stats
            .appended
            .fetch_add(count as u64, Ordering::Relaxed);
        self.stats
            .records
            .fetch_add(pending.len() as u64, Ordering::Relaxed);

        // The records are durable: confirmations of them count now, then the bounds apply.
        let (moved, mut events) = {
            let mut s = self.state.lock().expect("outbox state");
            s.durable_below = last.id + 1;
            // Records the sinks read before they were on disk may go now.
            Self::let_go_of_read(&s, &mut self.recent.lock().expect("outbox recent"));
            let durable = Pos::start_of(s.durable_below);
            let mut events = Vec::new();
            let mut confirmed = false;
            for i in 0..s.sinks.len() {
                let Some(upto) = s.sinks[i].confirmed_early.take() else {
                    continue;
                };
                // A confirmation that reaches into a record published after these (being
                // sent while these were written) counts up to the file's end; the rest waits
                // for that record's write.
                if upto > durable {
                    s.sinks[i].confirmed_early = Some(upto);
                }
                let (moved, event) = self.apply_confirmation(&mut s, i, upto.min(durable));
                confirmed |= moved;
                events.extend(event);
            }
            let (more, skipped, mut gone) = self.enforce_bounds(&mut s);
            events.extend(more);
            gone.extend(s.collect());
            self.publish_gauges(&s);
            let moved = !gone.is_empty() || skipped || confirmed;
            s.unwritten.gone.extend(gone);
            s.unwritten.cursors |= skipped || confirmed;
            (moved, events)
        };
        for (event, details) in events.drain(..) {
            if let Some(h) = &self.hook {
                h(event, details);
            }
        }
        if moved {
            self.space.notify_waiters();
        }
        self.write_pending()
    }

    /// Applies every sink's bound and the global caps after an append; returns the episodes
    /// that began (for the audit log).
    /// Also returns whether a cursor moved and the records deleted from memory on the way.
    #[allow(clippy::type_complexity)]
    fn enforce_bounds(
        &self,
        s: &mut State,
    ) -> (Vec<(&'static str, serde_json::Value)>, bool, Vec<u64>) {
        let mut gone = Vec::new();
        let mut events = Vec::new();
        let newest = s.next_record.saturating_sub(1);
        let age_now = now_nanos();
        let mut lost = vec![0u64; s.sinks.len()];
        for (i, lost) in lost.iter_mut().enumerate() {
            let buffer = s.sinks[i].spec.buffer;
            let age_limit = (buffer.max_age_s > 0)
                .then(|| age_now - (buffer.max_age_s as i64).saturating_mul(1_000_000_000));
            loop {
                let read = s.sinks[i].read;
                let Some((&oldest, meta)) = s.records.range(read.record..).next() else {
                    break;
                };
                let too_old = age_limit.is_some_and(|limit| meta.newest_ts < limit);
                let too_big = buffer.when_full == FullPolicy::DropOldest
                    && s.bytes_waiting(read) > buffer.max_bytes
                    && oldest != newest;
                if !(too_old || too_big) {
                    break;
                }
                *lost += s.skip(i, State::after(oldest));
            }
        }
        // Global caps: the oldest record goes for every `drop_oldest` sink behind it, unless a
        // sink has values of it in flight (bounded: a few windows) or is a `block` sink (it
        // never loses values; its own wait keeps it under the caps).
        while s.held_values > self.cfg.max_entries || s.held_bytes > self.cfg.max_bytes {
            let Some(&oldest) = s.records.keys().next() else {
                break;
            };
            if oldest == newest
                || s.sinks.iter().any(|x| {
                    x.acked.record <= oldest
                        && (x.read > Pos::start_of(oldest)
                            || x.spec.buffer.when_full == FullPolicy::Block)
                })
            {
                break;
            }
            for (i, lost) in lost.iter_mut().enumerate() {
                *lost += s.skip(i, State::after(oldest));
            }
            let deleted = s.collect();
            let done = deleted.contains(&oldest);
            gone.extend(deleted);
            if !done {
                break;
            }
        }
        let skipped = lost.iter().any(|n| *n > 0);
        for (i, n) in lost.into_iter().enumerate() {
            if n == 0 {
                continue;
            }
            self.stats.dropped.fetch_add(n, Ordering::Relaxed);
            let sink = &mut s.sinks[i];
            if sink.episode.is_none() {
                sink.episode = Some(sink.dropped - n);
                error!(
                    sink = %sink.spec.name,
                    max_bytes = sink.spec.buffer.max_bytes,
                    max_age_s = sink.spec.buffer.max_age_s,
                    dropped = n,
                    "sink is past its buffer bound: its OLDEST values are dropped for this sink only (counted in /metrics; logged again when the episode ends)"
                );
                events.push((
                    "sink_buffer_overflow",
                    serde_json::json!({"sink": sink.spec.name, "max_bytes": sink.spec.buffer.max_bytes,
                        "max_age_s": sink.spec.buffer.max_age_s, "dropped_total": sink.dropped}),
                ));
            }
        }
        (events, skipped, gone)
    }

    /// Ends the drop episode of sink `i` once it is back under half its bound.
    fn end_episode(&self, s: &mut State, i: usize) -> Option<(&'static str, serde_json::Value)> {
        let start = s.sinks[i].episode?;
        let waiting = s.bytes_waiting(s.sinks[i].read);
        let sink = &s.sinks[i];
        if waiting > sink.spec.buffer.max_bytes / 2 {
            return None;
        }
        let lost = sink.dropped - start;
        warn!(sink = %sink.spec.name, dropped = lost, dropped_total = sink.dropped, "sink is back within its buffer bound; values lost in this episode");
        let event = (
            "sink_buffer_recovered",
            serde_json::json!({"sink": sink.spec.name, "dropped": lost, "dropped_total": sink.dropped}),
        );
        s.sinks[i].episode = None;
        Some(event)
    }

    /// Writes the cursor moves and deletions made in memory since the last write (one
    /// transaction, no fsync: see the module docs). On an error they stay pending for the next.
    fn write_pending(&self) -> Result<()> {
        let _writing = self.writing.lock().expect("outbox writing");
        let (gone, cursors) = {
            let mut s = self.state.lock().expect("outbox state");
            let gone = std::mem::take(&mut s.unwritten.gone);
            let cursors: Vec<(String, Pos)> = if std::mem::take(&mut s.unwritten.cursors) {
                s.sinks
                    .iter()
                    .map(|x| (x.spec.name.clone(), x.acked))
                    .collect()
            } else {
                Vec::new()
            };
            (gone, cursors)
        };
        if gone.is_empty() && cursors.is_empty() {
            return Ok(());
        }
        let result = self.persist(&gone, &cursors);
        if result.is_err() {
            let mut s = self.state.lock().expect("outbox state");
            s.unwritten.gone.extend(gone);
            s.unwritten.cursors |= !cursors.is_empty();
        }
        result
    }

    /// Writes what is pending ([`Self::write_pending`]) on a blocking thread, without waiting
    /// for it; one such write at a time, which takes everything pending when it is done (so
    /// confirmations arriving meanwhile cost one write, not one each). A failed write is
    /// logged and left pending for the next confirmation or commit. Outside a Tokio runtime it
    /// writes at once.
    fn write_later(self: &Arc<Self>) {
        {
            let mut s = self.state.lock().expect("outbox state");
            if s.unwritten.is_empty() || s.unwritten.busy {
                return;
            }
            s.unwritten.busy = true;
        }
        let this = self.clone();
        let work = move || loop {
            let failed = this.write_pending().err();
            if let Some(e) = &failed {
                error!(error = %e, "outbox: cannot record the sinks' positions; values may be sent again after a restart");
            }
            let mut s = this.state.lock().expect("outbox state");
            if failed.is_some() || s.unwritten.is_empty() {
                s.unwritten.busy = false;
                return;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(work)),
            Err(_) => work(),
        }
    }

    /// Writes cursors and deletes records (no fsync: see the module docs).
    fn persist(&self, gone: &[u64], cursors: &[(String, Pos)]) -> Result<()> {
        let mut txn = self.db.begin_write().at(&self.path)?;
        txn.set_durability(redb::Durability::None).at(&self.path)?;
        {
            let mut records = txn.open_table(RECORDS).at(&self.path)?;
            for id in gone {
                records.remove(*id).at(&self.path)?;
            }
            let mut table = txn.open_table(SINK_CURSORS).at(&self.path)?;
            for (name, pos) in cursors {
                table
                    .insert(name.as_str(), (pos.record, pos.offset))
                    .at(&self.path)?;
            }
        }
        txn.commit().at(&self.path)
    }

    /// [`Self::confirm`], then writes the cursor (and deletions) before returning.
    fn ack_blocking(&self, index: usize, upto: Pos) -> Result<()> {
        self.confirm(index, upto);
        self.write_pending()
    }

    /// Sink `index` had everything before `upto` confirmed by its far side: observes the added
    /// latency now and moves the cursor in memory (room for a blocked append at once); the file
    /// learns it with the next [`Self::write_pending`]. A confirmation that reaches into the
    /// record still being written moves the cursor only once that record is on disk.
    fn confirm(&self, index: usize, upto: Pos) {
        let event = {
            let mut s = self.state.lock().expect("outbox state");
            if upto > Pos::start_of(s.durable_below) {
                // The far side has the values now, whatever the disk does.
                s.observe_up_to(index, upto);
                // Reaches into the record still being written: counts once it is on disk.
                let early = &mut s.sinks[index].confirmed_early;
                *early = Some(early.map_or(upto, |p| p.max(upto)));
                return;
            }
            let (moved, event) = self.apply_confirmation(&mut s, index, upto);
            if !moved {
                return;
            }
            let gone = s.collect();
            s.unwritten.gone.extend(gone);
            s.unwritten.cursors = true;
            self.publish_gauges(&s);
            event
        };
        if let (Some((event, details)), Some(h)) = (event, &self.hook) {
            h(event, details);
        }
        self.space.notify_waiters();
    }

    /// Sink `index` confirmed everything before `upto` (on disk): observes the added latency,
    /// moves its cursor and ends its drop episode when it is back within its bound. Returns
    /// whether the cursor moved, and the episode's end event.
    fn apply_confirmation(
        &self,
        s: &mut State,
        index: usize,
        upto: Pos,
    ) -> (bool, Option<(&'static str, serde_json::Value)>) {
        s.observe_up_to(index, upto);
        if !s.sinks[index].confirm(upto) {
            return (false, None);
        }
        (true, self.end_episode(s, index))
    }

    /// Keeps the values of record `id` (just appended) for the sinks to read, and lets go of
    /// those every sink has read, and of older ones beyond [`RECENT_VALUES`]. The newest stays
    /// until every sink has read it, and every record not yet on disk stays (the file cannot
    /// give it back; at most two dispatcher groups, the one being written and the next, each
    /// [`MAX_RECORD_VALUES`]).
    fn keep_recent(&self, s: &State, id: u64, values: Arc<RecordValues>) {
        let mut recent = self.recent.lock().expect("outbox recent");
        recent.push_back((id, values));
        Self::let_go_of_read(s, &mut recent);
    }

    /// Lets go of the oldest recent records that every sink has read (see [`Self::keep_recent`]).
    /// Also called when a sink has read a record, not only at the next append: a burst's
    /// values then go once the sinks have them, instead of staying until the next burst,
    /// when they would be held beside it (5 MB at 100k values a burst).
    fn let_go_of_read(s: &State, recent: &mut VecDeque<(u64, Arc<RecordValues>)>) {
        let mut held: usize = recent.iter().map(|(_, v)| v.values.len()).sum();
        while let Some((oldest, v)) = recent.front() {
            if *oldest >= s.durable_below {
                break;
            }
            let read_by_all = s.sinks.iter().all(|x| x.read.record > *oldest);
            // The newest stays for the sinks still to read it, however large.
            let within = held <= RECENT_VALUES || recent.len() == 1;
            if within && !read_by_all && s.records.contains_key(oldest) {
                break;
            }
            held -= v.values.len();
            recent.pop_front();
        }
    }

    /// The values of record `id` if it is one of the newest, as appended.
    fn recent(&self, id: u64) -> Option<Arc<RecordValues>> {
        let recent = self.recent.lock().expect("outbox recent");
        recent
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, v)| v.clone())
    }

    /// The gateway-added latency of `sink`: arrival of a value's readings at the gateway →
    /// the sink's confirmation (`None` for a name the outbox does not know).
    pub fn added_latency(&self, sink: &str) -> Option<Arc<LatencyHistogram>> {
        let s = self.state.lock().expect("outbox state");
        let x = s.sinks.iter().find(|x| x.spec.name == sink)?;
        Some(x.added_latency.clone())
    }

    /// Values appended but not yet confirmed by `sink` (skipped ones excluded).
    pub fn lag(&self, sink: &str) -> u64 {
        self.sink_status(sink).map_or(0, |s| s.lag)
    }

    /// The buffer of `sink` (`None` for a name the outbox does not know).
    pub fn sink_status(&self, sink: &str) -> Option<SinkBufferStatus> {
        let s = self.state.lock().expect("outbox state");
        let x = s.sinks.iter().find(|x| x.spec.name == sink)?;
        let lag = s.lag(x);
        let oldest_unconfirmed_ts = if lag == 0 {
            0
        } else {
            s.records
                .range(x.acked.record..)
                .next()
                .map_or(0, |(_, r)| r.newest_ts)
        };
        Some(SinkBufferStatus {
            lag,
            oldest_unconfirmed_ts,
            bytes: s.bytes_waiting(x.acked),
            dropped: x.dropped,
            dropping: x.episode.is_some(),
            max_bytes: x.spec.buffer.max_bytes,
            when_full: x.spec.buffer.when_full.as_str(),
        })
    }

    /// Reads and decodes record `id` (`None` when it is gone).
    fn load(&self, id: u64) -> Result<Option<Arc<RecordValues>>> {
        if let Some(v) = self.recent(id) {
            return Ok(Some(v));
        }
        let txn = self.db.begin_read().at(&self.path)?;
        let table = txn.open_table(RECORDS).at(&self.path)?;
        let Some(bytes) = table.get(id).at(&self.path)? else {
            return Ok(None);
        };
        let entries = match codec::decode_record(bytes.value()) {
            Ok(e) => e,
            Err(e) => {
                error!(path = %self.path.display(), record = id, "outbox: damaged record skipped: {e}");
                return Ok(Some(Arc::new(RecordValues::default())));
            }
        };
        let targets = self.targets.read().expect("outbox targets");
        let count = entries.len();
        let (mut values, mut offsets) = (Vec::with_capacity(count), Vec::new());
        let decoded = entries.into_iter().enumerate().map(|(i, e)| {
            let e = e
                .map_err(|e| error!(record = id, index = i, "outbox: damaged value skipped: {e}"))
                .ok()?;
            let Some(Some(target)) = targets.by_id.get(e.target as usize) else {
                error!(
                    record = id,
                    target = e.target,
                    "outbox: value refers to an unknown element; skipped"
                );
                return None;
            };
            Some(SubmodelUpdate {
                target: target.for_update(),
                value: e.value,
                status: e.status,
                source_ts_nanos: e.source_ts_nanos,
                server_ts_nanos: e.server_ts_nanos,
            })
        });
        for (i, v) in decoded.enumerate() {
            if let Some(v) = v {
                values.push(v);
                offsets.push(i as u32);
            }
        }
        // Offsets are needed only where damaged values left holes.
        let offsets = (values.len() != count).then_some(offsets);
        Ok(Some(Arc::new(RecordValues {
            values,
            offsets,
            received: None,
        })))
    }
}

/// Converts the per-value layout of earlier versions into records (once). Every sink of the old
/// file then starts at the first value the slowest one had not confirmed (at least once).
fn migrate_v1(db: &Database, path: &Path) -> Result<()> {
    let read = db.begin_read().at(path)?;
    let has_v1 = read
        .list_tables()
        .at(path)?
        .any(|t| t.name() == V1_ENTRIES.name());
    drop(read);
    if !has_v1 {
        return Ok(());
    }
    let txn = db.begin_write().at(path)?;
    let mut migrated = 0u64;
    {
        let old_cursors: Vec<(String, u64)> = txn
            .open_table(V1_CURSORS)
            .at(path)?
            .iter()
            .at(path)?
            .filter_map(|r| r.ok())
            .map(|(k, v)| (k.value().to_string(), v.value()))
            .collect();
        let min_acked = old_cursors.iter().map(|(_, v)| *v).min().unwrap_or(0);
        let entries = txn.open_table(V1_ENTRIES).at(path)?;
        let mut records = txn.open_table(RECORDS).at(path)?;
        let mut id = records.last().at(path)?.map_or(0, |(k, _)| k.value() + 1);
        let first = id;
        let mut rec = Vec::new();
        codec::begin_record(&mut rec);
        let mut n = 0;
        for row in entries.range(min_acked + 1..).at(path)? {
            let (_, v) = row.at(path)?;
            let e = match codec::decode(v.value()) {
                Ok(e) => e,
                Err(_) => continue,
            };
            codec::push_entry(&e, &mut rec);
            n += 1;
            migrated += 1;
            if n == MAX_RECORD_VALUES {
                records.insert(id, rec.as_slice()).at(path)?;
                id += 1;
                codec::begin_record(&mut rec);
                n = 0;
            }
        }
        if n > 0 {
            records.insert(id, rec.as_slice()).at(path)?;
        }
        drop(entries);
        let mut cursors = txn.open_table(SINK_CURSORS).at(path)?;
        for (name, _) in &old_cursors {
            cursors.insert(name.as_str(), (first, 0)).at(path)?;
        }
    }
    txn.delete_table(V1_ENTRIES).at(path)?;
    txn.delete_table(V1_CURSORS).at(path)?;
    txn.commit().at(path)?;
    info!(path = %path.display(), values = migrated, "outbox: converted the file of an earlier version (values not yet confirmed are kept)");
    Ok(())
}

/// What a sink got from [`OutboxReader::next_batch`].
#[derive(Debug)]
pub struct Delivery {
    /// The values, in order (a range of the record they belong to, not a copy).
    pub values: DeliveryValues,
    /// The position just past the last value: acknowledge it once all were confirmed.
    pub end: Pos,
}

/// A sink's view of the outbox.
pub struct OutboxReader {
    outbox: Arc<Outbox>,
    index: usize,
    sink: String,
    /// The record read last, decoded.
    cache: Option<(u64, Arc<RecordValues>)>,
}

impl OutboxReader {
    /// The next values in order (at most `max`, from one record), waiting for new ones; `None`
    /// once the outbox is closed and everything was read.
    pub async fn next_batch(&mut self, max: usize) -> Result<Option<Delivery>> {
        loop {
            let appended = self.outbox.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let (from, record, closed) = {
                let mut s = self.outbox.state.lock().expect("outbox state");
                let sink = &mut s.sinks[self.index];
                // Stretches skipped earlier (drop_oldest) are not read again.
                for g in &sink.gaps {
                    if g.start <= sink.read && sink.read < g.end {
                        sink.read = g.end;
                    }
                }
                let from = sink.read;
                let record = s.records.range(from.record..).next().map(|(id, _)| *id);
                (from, record, s.closed)
            };
            let Some(id) = record else {
                if closed {
                    return Ok(None);
                }
                appended.await;
                continue;
            };
            let cached = match &self.cache {
                Some((cached, values)) if *cached == id => Some(values.clone()),
                // Just appended: the values as the dispatcher made them (no read, no decode).
                _ => self.outbox.recent(id),
            };
            let values = match cached {
                Some(v) => {
                    self.cache = Some((id, v.clone()));
                    v
                }
                None => {
                    let outbox = self.outbox.clone();
                    let loaded = tokio::task::spawn_blocking(move || outbox.load(id))
                        .await
                        .map_err(|e| OutboxError::Task(e.to_string()))??;
                    match loaded {
                        Some(v) => {
                            self.cache = Some((id, v.clone()));
                            v
                        }
                        // Deleted under us: the sink was moved past it; look again.
                        None => continue,
                    }
                }
            };
            let start = if id == from.record {
                values.index_of(from.offset)
            } else {
                0
            };
            let end = (start + max.max(1)).min(values.values.len());
            let end_pos = if end == values.values.len() {
                State::after(id)
            } else {
                Pos {
                    record: id,
                    offset: values.offset_of(end),
                }
            };
            {
                let mut s = self.outbox.state.lock().expect("outbox state");
                let sink = &mut s.sinks[self.index];
                if sink.read != from {
                    // Skipped past (drop_oldest) while we read: what we read is not ours.
                    continue;
                }
                sink.read = end_pos;
                if end_pos.record > id {
                    // Read to its end: the record may go as soon as every sink has it.
                    let mut recent = self.outbox.recent.lock().expect("outbox recent");
                    Outbox::let_go_of_read(&s, &mut recent);
                }
            }
            if end_pos.record > id {
                // Not read again (the cache serves a record read in several deliveries).
                self.cache = None;
            }
            let start = start.min(end);
            if start == end {
                // Only damaged values (logged): the next delivery's acknowledgement covers them.
                continue;
            }
            return Ok(Some(Delivery {
                values: DeliveryValues {
                    record: values,
                    range: start..end,
                },
                end: end_pos,
            }));
        }
    }

    fn ack_blocking_inner(&self, upto: Pos) -> Result<()> {
        self.outbox.ack_blocking(self.index, upto)
    }

    /// Marks everything before `upto` as confirmed by the far side.
    pub async fn ack(&self, upto: Pos) -> Result<()> {
        self.acker().ack(upto).await
    }

    /// Blocking variant of [`Self::ack`] for sinks that run on their own thread.
    pub fn ack_blocking(&self, upto: Pos) -> Result<()> {
        self.ack_blocking_inner(upto)
    }

    /// The sink's cursor name.
    pub fn sink(&self) -> &str {
        &self.sink
    }

    /// A handle that acknowledges for this sink, for a task apart from the one reading.
    pub fn acker(&self) -> OutboxAcker {
        OutboxAcker {
            outbox: self.outbox.clone(),
            index: self.index,
        }
    }
}

/// Acknowledges values for one sink (see [`OutboxReader::acker`]).
pub struct OutboxAcker {
    outbox: Arc<Outbox>,
    index: usize,
}

impl OutboxAcker {
    /// Marks everything before `upto` as confirmed by the far side, without waiting for the
    /// file: the added latency is observed and the cursor moves in memory now, and the cursor is
    /// written in the background (coalesced with the confirmations that come meanwhile). For a
    /// sink's confirmation loop, which must not wait for a disk another write holds (the
    /// dispatcher's fsync) before it can take the next PUBACKs. [`Self::ack`] once at the end
    /// makes sure the last position is written.
    pub fn confirm(&self, upto: Pos) {
        self.outbox.confirm(self.index, upto);
        self.outbox.write_later();
    }

    /// Marks everything before `upto` as confirmed by the far side and writes the cursor.
    pub async fn ack(&self, upto: Pos) -> Result<()> {
        let outbox = self.outbox.clone();
        let index = self.index;
        tokio::task::spawn_blocking(move || outbox.ack_blocking(index, upto))
            .await
            .map_err(|e| OutboxError::Task(e.to_string()))?
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("path", &self.path)
            .field("stats", &self.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests;
