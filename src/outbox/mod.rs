//! Durable outbox between the pipeline and the sinks (store-and-forward), on redb.
//!
//! Why redb: pure Rust (no C toolchain on edge boxes), ACID with a stable file format, and a
//! B-tree keyed by sequence number is exactly a persistent queue with cheap range deletes. An LSM
//! (fjall) would write faster at scale but adds compaction threads and memory we do not need at
//! edge rates.
//!
//! Rules:
//! - every batch is committed durably (fsync) before the dispatcher takes the next one;
//! - each sink reads in sequence order from its own cursor and acknowledges only what the far
//!   side confirmed (PUBACK, HTTP 2xx); an entry is deleted once every configured sink acked it;
//! - after a crash, sinks resume from their cursors: delivery is at least once, duplicates are
//!   limited to what was sent but not yet acknowledged (dedup key: element + source timestamp);
//! - the outbox is bounded by `max_entries` (and optionally `max_age_s`); when full it either
//!   blocks the pipeline or drops the oldest entries, and every dropped value is counted and logged.

pub mod codec;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Deserialize;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::model::{ElementTarget, SubmodelUpdate, UpdateBatch};
use codec::EntryData;

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const TARGETS: TableDefinition<u32, &str> = TableDefinition::new("targets");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");

/// What to do when the outbox holds `max_entries` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Stop taking new values until a sink catches up (the OPC UA server's queues fill instead).
    #[default]
    Block,
    /// Delete the oldest values to make room; each one is counted in `dropped` and logged.
    DropOldest,
}

/// Outbox settings (`[outbox]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Directory of the outbox file `outbox.redb`, relative to the config file.
    pub dir: PathBuf,
    /// Most values kept for the sinks; bounds disk use (roughly 40–100 bytes per value).
    pub max_entries: u64,
    /// Policy when `max_entries` is reached: `block` (default) or `drop_oldest`.
    pub when_full: FullPolicy,
    /// Values older than this (by source timestamp) are dropped and counted; 0 = no age limit.
    pub max_age_s: u64,
    /// Page cache of the outbox file, MiB. redb's own default (1 GiB) let the cache, and with it
    /// the gateway's memory, grow with every page a backlog ever touched.
    pub cache_mib: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            dir: PathBuf::from("data"),
            max_entries: 10_000_000,
            when_full: FullPolicy::Block,
            max_age_s: 0,
            cache_mib: 16,
        }
    }
}

/// Counters of the outbox.
#[derive(Debug, Default)]
pub struct OutboxStats {
    /// Values persisted.
    pub appended: AtomicU64,
    /// Values deleted before every sink confirmed them (full or too old).
    pub dropped: AtomicU64,
    /// Values currently held.
    pub depth: AtomicU64,
}

struct State {
    /// Sequence number of the oldest held entry (== `next` when empty).
    first: u64,
    /// Sequence number the next entry gets.
    next: u64,
    /// Target id by its JSON form, to reuse ids across restarts.
    target_ids: HashMap<String, u32>,
    /// Acknowledged sequence number per configured sink.
    cursors: HashMap<String, u64>,
    closed: bool,
}

/// The durable queue shared by the dispatcher (writer) and the sinks (readers).
pub struct Outbox {
    db: Database,
    path: PathBuf,
    cfg: OutboxConfig,
    state: Mutex<State>,
    /// Element targets by id, including those of earlier runs still referenced by entries.
    /// Separate from `state` so that readers decode without blocking the writer.
    targets: RwLock<Vec<Option<Arc<ElementTarget>>>>,
    /// Woken when entries were appended or the outbox closed.
    appended: Notify,
    /// Woken when entries were deleted (room for blocked appends).
    space: Notify,
    pub stats: OutboxStats,
}

type Result<T> = std::result::Result<T, anyhow::Error>;

impl Outbox {
    /// Opens (or creates) `<dir>/outbox.redb` for the given sinks.
    pub fn open(dir: &Path, cfg: OutboxConfig, sinks: &[&str]) -> Result<Arc<Outbox>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("outbox.dir: cannot create {}: {e}", dir.display()))?;
        let path = dir.join("outbox.redb");
        let db = redb::Builder::new()
            .set_cache_size(cfg.cache_mib.max(1).saturating_mul(1 << 20))
            .create(&path)
            .map_err(|e| {
                anyhow::anyhow!(
                    "outbox: cannot open {} (is another gateway using it?): {e}",
                    path.display()
                )
            })?;
        let txn = db.begin_write()?;
        {
            txn.open_table(ENTRIES)?;
            txn.open_table(TARGETS)?;
            txn.open_table(CURSORS)?;
        }
        txn.commit()?;

        let read = db.begin_read()?;
        let entries = read.open_table(ENTRIES)?;
        let first_held = entries.first()?.map(|(k, _)| k.value());
        let last_held = entries.last()?.map(|(k, _)| k.value());
        let held = entries.len()?;
        let mut targets = Vec::new();
        let mut target_ids = HashMap::new();
        for row in read.open_table(TARGETS)?.iter()? {
            let (id, json) = row?;
            let (id, json) = (id.value(), json.value().to_string());
            match serde_json::from_str::<ElementTarget>(&json) {
                Ok(t) => {
                    let idx = id as usize;
                    if targets.len() <= idx {
                        targets.resize(idx + 1, None);
                    }
                    let t = Arc::new(t);
                    let _ = t.outbox_id.set(id);
                    targets[idx] = Some(t);
                    target_ids.insert(json, id);
                }
                Err(e) => {
                    error!(id, error = %e, "outbox: unreadable element target; its entries will be skipped")
                }
            }
        }
        let stored_cursors: HashMap<String, u64> = read
            .open_table(CURSORS)?
            .iter()?
            .filter_map(|r| r.ok())
            .map(|(k, v)| (k.value().to_string(), v.value()))
            .collect();
        drop(entries);
        drop(read);

        let max_cursor = stored_cursors.values().copied().max().unwrap_or(0);
        let next = last_held.map_or(0, |l| l + 1).max(max_cursor + 1).max(1);
        let first = first_held.unwrap_or(next);
        // A sink without a cursor (new, or first start) starts at the oldest held entry.
        let cursors = sinks
            .iter()
            .map(|s| {
                (
                    s.to_string(),
                    stored_cursors.get(*s).copied().unwrap_or(first - 1),
                )
            })
            .collect();
        if held > 0 {
            info!(path = %path.display(), held, "outbox: resuming with values not yet confirmed by every sink");
        }
        let outbox = Arc::new(Outbox {
            db,
            path,
            cfg,
            state: Mutex::new(State {
                first,
                next,
                target_ids,
                cursors,
                closed: false,
            }),
            targets: RwLock::new(targets),
            appended: Notify::new(),
            space: Notify::new(),
            stats: OutboxStats::default(),
        });
        outbox.stats.depth.store(held, Ordering::Relaxed);
        // Entries every configured sink already acknowledged (e.g. a sink was removed) can go.
        outbox.collect_garbage()?;
        Ok(outbox)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A reader for `sink`, starting after its acknowledged position.
    pub fn reader(self: &Arc<Self>, sink: &str) -> OutboxReader {
        let state = self.state.lock().expect("outbox state");
        let acked = state.cursors.get(sink).copied().unwrap_or(state.first - 1);
        OutboxReader {
            outbox: self.clone(),
            sink: sink.to_string(),
            next: acked + 1,
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

    /// Persists a batch durably. With the `block` policy this waits while the outbox is full.
    pub async fn append(self: &Arc<Self>, batch: UpdateBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len() as u64;
        if self.cfg.when_full == FullPolicy::Block {
            let mut warned = false;
            loop {
                let space = self.space.notified();
                tokio::pin!(space);
                space.as_mut().enable();
                let held = {
                    let s = self.state.lock().expect("outbox state");
                    s.next - s.first
                };
                // A batch larger than the whole outbox is let through once it is empty.
                if held + n <= self.cfg.max_entries || held == 0 {
                    break;
                }
                if !warned {
                    warn!(
                        held,
                        max_entries = self.cfg.max_entries,
                        "outbox full: holding the pipeline until a sink catches up"
                    );
                    warned = true;
                }
                space.await;
            }
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.append_blocking(&batch)).await??;
        self.appended.notify_waiters();
        Ok(())
    }

    fn append_blocking(&self, batch: &[SubmodelUpdate]) -> Result<()> {
        let mut state = self.state.lock().expect("outbox state");
        let txn = self.db.begin_write()?;
        let mut dropped = 0u64;
        {
            let mut entries = txn.open_table(ENTRIES)?;
            let mut targets = txn.open_table(TARGETS)?;
            let mut buf = Vec::with_capacity(64);
            let mut seq = state.next;
            for u in batch {
                let target = match u.target.outbox_id.get() {
                    Some(id) => *id,
                    None => register_target(&mut state, &self.targets, &mut targets, &u.target)?,
                };
                buf.clear();
                codec::encode(
                    &EntryData {
                        target,
                        status: u.status,
                        source_ts_nanos: u.source_ts_nanos,
                        server_ts_nanos: u.server_ts_nanos,
                        value: u.value.clone(),
                    },
                    &mut buf,
                );
                entries.insert(seq, buf.as_slice())?;
                seq += 1;
            }
            state.next = seq;

            // Bounds: drop the oldest entries beyond max_entries (drop_oldest) or max_age_s.
            let held = state.next - state.first;
            if self.cfg.when_full == FullPolicy::DropOldest && held > self.cfg.max_entries {
                let excess = held - self.cfg.max_entries;
                let end = state.first + excess;
                entries.retain_in(state.first..end, |_, _| false)?;
                state.first = end;
                dropped += excess;
            }
            if self.cfg.max_age_s > 0 {
                let limit = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
                    - (self.cfg.max_age_s as i64).saturating_mul(1_000_000_000);
                let mut end = state.first;
                for row in entries.range(state.first..state.next)?.take(100_000) {
                    let (_, v) = row?;
                    let ts = v
                        .value()
                        .get(8..16)
                        .map(|b| i64::from_le_bytes(b.try_into().unwrap()));
                    if ts.is_some_and(|ts| ts < limit) {
                        end += 1;
                    } else {
                        break;
                    }
                }
                if end > state.first {
                    entries.retain_in(state.first..end, |_, _| false)?;
                    dropped += end - state.first;
                    state.first = end;
                }
            }
        }
        txn.commit()?;
        self.stats
            .appended
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.stats
            .depth
            .store(state.next - state.first, Ordering::Relaxed);
        if dropped > 0 {
            self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
            error!(
                dropped,
                dropped_total = self.stats.dropped.load(Ordering::Relaxed),
                max_entries = self.cfg.max_entries,
                max_age_s = self.cfg.max_age_s,
                "outbox full or values too old: the oldest values were DROPPED before every sink confirmed them"
            );
            // Readers behind the new start skip ahead.
            let skipped_to = state.first - 1;
            for cursor in state.cursors.values_mut() {
                *cursor = (*cursor).max(skipped_to);
            }
        }
        Ok(())
    }

    /// Reads up to `max` entries from `from`; also returns the last sequence number scanned
    /// (damaged entries are skipped, so it may be past the last one returned).
    #[allow(clippy::type_complexity)]
    fn read_blocking(
        &self,
        from: u64,
        max: usize,
    ) -> Result<(Vec<(u64, SubmodelUpdate)>, Option<u64>)> {
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        let targets = self.targets.read().expect("outbox targets");
        let mut out = Vec::with_capacity(max.min(4096));
        let mut scanned = None;
        for row in entries.range(from..)?.take(max) {
            let (k, v) = row?;
            let seq = k.value();
            scanned = Some(seq);
            let entry = match codec::decode(v.value()) {
                Ok(e) => e,
                Err(e) => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    error!(seq, path = %self.path.display(), "outbox: damaged entry skipped: {e}");
                    continue;
                }
            };
            let Some(Some(target)) = targets.get(entry.target as usize) else {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                error!(
                    seq,
                    target = entry.target,
                    "outbox: entry refers to an unknown element; skipped"
                );
                continue;
            };
            out.push((
                seq,
                SubmodelUpdate {
                    target: target.clone(),
                    value: entry.value,
                    status: entry.status,
                    source_ts_nanos: entry.source_ts_nanos,
                    server_ts_nanos: entry.server_ts_nanos,
                },
            ));
        }
        Ok((out, scanned))
    }

    fn ack_blocking(&self, sink: &str, upto: u64) -> Result<()> {
        let mut state = self.state.lock().expect("outbox state");
        let current = state.cursors.get(sink).copied().unwrap_or(0);
        if upto <= current {
            return Ok(());
        }
        state.cursors.insert(sink.to_string(), upto);
        let mut txn = self.db.begin_write()?;
        // Losing a cursor update in a crash only means re-sending (at least once), so it need
        // not wait for fsync; the next durable append commits it.
        txn.set_durability(redb::Durability::None)?;
        {
            let mut cursors = txn.open_table(CURSORS)?;
            cursors.insert(sink, upto)?;
        }
        self.delete_acknowledged(&mut state, &txn)?;
        txn.commit()?;
        drop(state);
        self.space.notify_waiters();
        Ok(())
    }

    /// Deletes entries every configured sink has acknowledged.
    fn delete_acknowledged(&self, state: &mut State, txn: &redb::WriteTransaction) -> Result<()> {
        let Some(min) = state.cursors.values().copied().min() else {
            return Ok(());
        };
        if min >= state.first {
            let mut entries = txn.open_table(ENTRIES)?;
            entries.retain_in(state.first..=min, |_, _| false)?;
            state.first = min + 1;
            self.stats
                .depth
                .store(state.next.saturating_sub(state.first), Ordering::Relaxed);
        }
        Ok(())
    }

    fn collect_garbage(&self) -> Result<()> {
        let mut state = self.state.lock().expect("outbox state");
        let txn = self.db.begin_write()?;
        self.delete_acknowledged(&mut state, &txn)?;
        txn.commit()?;
        Ok(())
    }

    /// Values appended but not yet acknowledged by `sink`.
    pub fn lag(&self, sink: &str) -> u64 {
        let s = self.state.lock().expect("outbox state");
        let acked = s.cursors.get(sink).copied().unwrap_or(s.first - 1);
        s.next - 1 - acked
    }
}

fn register_target(
    state: &mut State,
    targets: &RwLock<Vec<Option<Arc<ElementTarget>>>>,
    table: &mut redb::Table<u32, &str>,
    target: &Arc<ElementTarget>,
) -> Result<u32> {
    let json = serde_json::to_string(target.as_ref())?;
    let mut targets = targets.write().expect("outbox targets");
    let id = match state.target_ids.get(&json) {
        Some(id) => *id,
        None => {
            let id = targets.len() as u32;
            table.insert(id, json.as_str())?;
            targets.push(None);
            state.target_ids.insert(json, id);
            id
        }
    };
    // Later entries for this target reuse the id and decode to this same Arc.
    let _ = target.outbox_id.set(id);
    targets[id as usize] = Some(target.clone());
    Ok(id)
}

/// A sink's view of the outbox.
pub struct OutboxReader {
    outbox: Arc<Outbox>,
    sink: String,
    /// Next sequence number to read.
    next: u64,
}

impl OutboxReader {
    /// The next entries in order (at most `max`), waiting for new ones; `None` once the outbox
    /// is closed and everything was read.
    pub async fn next_batch(&mut self, max: usize) -> Result<Option<Vec<(u64, SubmodelUpdate)>>> {
        loop {
            let appended = self.outbox.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let (from, head, closed) = {
                let s = self.outbox.state.lock().expect("outbox state");
                // Entries dropped under us (drop_oldest): continue at the oldest one held.
                (self.next.max(s.first), s.next, s.closed)
            };
            if from < head {
                let outbox = self.outbox.clone();
                let (batch, scanned) =
                    tokio::task::spawn_blocking(move || outbox.read_blocking(from, max)).await??;
                self.next = scanned.map_or(head, |seq| seq + 1);
                if !batch.is_empty() {
                    return Ok(Some(batch));
                }
                continue;
            }
            if closed {
                return Ok(None);
            }
            appended.await;
        }
    }

    /// Marks everything up to and including `seq` as confirmed by the far side.
    pub async fn ack(&self, seq: u64) -> Result<()> {
        self.acker().ack(seq).await
    }

    /// Blocking variant of [`Self::ack`] for sinks that run on their own thread.
    pub fn ack_blocking(&self, seq: u64) -> Result<()> {
        self.outbox.ack_blocking(&self.sink, seq)
    }

    pub fn sink(&self) -> &str {
        &self.sink
    }

    /// A handle that acknowledges for this sink, for a task apart from the one reading.
    pub fn acker(&self) -> OutboxAcker {
        OutboxAcker {
            outbox: self.outbox.clone(),
            sink: self.sink.clone(),
        }
    }
}

/// Acknowledges entries for one sink (see [`OutboxReader::acker`]).
pub struct OutboxAcker {
    outbox: Arc<Outbox>,
    sink: String,
}

impl OutboxAcker {
    /// Marks everything up to and including `seq` as confirmed by the far side.
    pub async fn ack(&self, seq: u64) -> Result<()> {
        let outbox = self.outbox.clone();
        let sink = self.sink.clone();
        tokio::task::spawn_blocking(move || outbox.ack_blocking(&sink, seq)).await?
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
mod tests {
    use super::*;
    use crate::aas::XsType;
    use crate::model::TypedValue;

    fn target(path: &str) -> Arc<ElementTarget> {
        Arc::new(ElementTarget {
            submodel_id: "urn:sm".into(),
            submodel_id_short: "Op".into(),
            shell_id_short: "M1".into(),
            id_short_path: path.into(),
            value_type: XsType::Double,
            topic: format!("aas/M1/Op/{path}"),
            unit: None,
            semantic_id: None,
            outbox_id: Default::default(),
        })
    }

    fn batch(t: &Arc<ElementTarget>, from: i64, n: i64) -> UpdateBatch {
        (from..from + n)
            .map(|i| SubmodelUpdate {
                target: t.clone(),
                value: TypedValue::Float(i as f64),
                status: 0,
                source_ts_nanos: chrono::Utc::now().timestamp_nanos_opt().unwrap() + i,
                server_ts_nanos: 0,
            })
            .collect()
    }

    fn values(b: &[(u64, SubmodelUpdate)]) -> Vec<f64> {
        b.iter()
            .map(|(_, u)| match u.value {
                TypedValue::Float(f) => f,
                _ => panic!(),
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_sink_reads_in_order_and_entries_go_once_all_acked() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(dir.path(), OutboxConfig::default(), &["a", "b"]).unwrap();
        let t = target("X");
        ob.append(batch(&t, 0, 10)).await.unwrap();
        let mut a = ob.reader("a");
        let mut b = ob.reader("b");
        let got = a.next_batch(4).await.unwrap().unwrap();
        assert_eq!(values(&got), vec![0.0, 1.0, 2.0, 3.0]);
        a.ack(got.last().unwrap().0).await.unwrap();
        assert_eq!(
            ob.stats.depth.load(Ordering::Relaxed),
            10,
            "b has acked nothing yet"
        );
        let got_b = b.next_batch(100).await.unwrap().unwrap();
        assert_eq!(got_b.len(), 10);
        b.ack(got_b.last().unwrap().0).await.unwrap();
        assert_eq!(
            ob.stats.depth.load(Ordering::Relaxed),
            6,
            "only what both acked is gone"
        );
        assert_eq!(ob.lag("a"), 6);
        assert_eq!(ob.lag("b"), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unacknowledged_values_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t = target("X");
        {
            let ob = Outbox::open(dir.path(), OutboxConfig::default(), &["a"]).unwrap();
            ob.append(batch(&t, 0, 5)).await.unwrap();
            let mut r = ob.reader("a");
            let got = r.next_batch(2).await.unwrap().unwrap();
            r.ack(got[1].0).await.unwrap();
            ob.close();
        }
        let ob = Outbox::open(dir.path(), OutboxConfig::default(), &["a"]).unwrap();
        ob.close();
        let mut r = ob.reader("a");
        let got = r.next_batch(100).await.unwrap().unwrap();
        assert_eq!(values(&got), vec![2.0, 3.0, 4.0]);
        assert_eq!(
            got[0].1.target.id_short_path, "X",
            "the element target is restored"
        );
        assert!(
            r.next_batch(100).await.unwrap().is_none(),
            "closed and drained"
        );
        drop(r);
        drop(ob);
        // New values after the restart continue the sequence.
        let ob2 = Outbox::open(dir.path(), OutboxConfig::default(), &["a"]).unwrap();
        ob2.append(batch(&target("Y"), 100, 1)).await.unwrap();
        let seqs: Vec<u64> = ob2
            .reader("a")
            .next_batch(100)
            .await
            .unwrap()
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(seqs.len(), 4);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_oldest_counts_what_it_drops() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = OutboxConfig {
            max_entries: 10,
            when_full: FullPolicy::DropOldest,
            ..Default::default()
        };
        let ob = Outbox::open(dir.path(), cfg, &["a"]).unwrap();
        let t = target("X");
        ob.append(batch(&t, 0, 8)).await.unwrap();
        ob.append(batch(&t, 8, 8)).await.unwrap();
        assert_eq!(ob.stats.dropped.load(Ordering::Relaxed), 6);
        assert_eq!(ob.stats.depth.load(Ordering::Relaxed), 10);
        let got = ob.reader("a").next_batch(100).await.unwrap().unwrap();
        assert_eq!(values(&got), (6..16).map(|i| i as f64).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn block_policy_waits_until_a_sink_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = OutboxConfig {
            max_entries: 10,
            ..Default::default()
        };
        let ob = Outbox::open(dir.path(), cfg, &["a"]).unwrap();
        let t = target("X");
        ob.append(batch(&t, 0, 10)).await.unwrap();
        let blocked = tokio::spawn({
            let ob = ob.clone();
            let b = batch(&t, 10, 5);
            async move { ob.append(b).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !blocked.is_finished(),
            "append must wait while the outbox is full"
        );
        let mut r = ob.reader("a");
        let got = r.next_batch(6).await.unwrap().unwrap();
        r.ack(got.last().unwrap().0).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), blocked)
            .await
            .expect("append resumes after the ack")
            .unwrap()
            .unwrap();
        assert_eq!(ob.stats.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(ob.stats.depth.load(Ordering::Relaxed), 9);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn values_older_than_max_age_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = OutboxConfig {
            max_age_s: 60,
            ..Default::default()
        };
        let ob = Outbox::open(dir.path(), cfg, &["a"]).unwrap();
        let t = target("X");
        let mut old: Vec<SubmodelUpdate> = batch(&t, 0, 3).to_vec();
        for u in &mut old {
            u.source_ts_nanos -= 3_600_000_000_000;
        }
        ob.append(old.into()).await.unwrap();
        ob.append(batch(&t, 3, 2)).await.unwrap();
        assert_eq!(ob.stats.dropped.load(Ordering::Relaxed), 3);
        let got = ob.reader("a").next_batch(100).await.unwrap().unwrap();
        assert_eq!(values(&got), vec![3.0, 4.0]);
    }
}
