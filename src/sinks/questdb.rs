//! QuestDB sink over the InfluxDB Line Protocol (questdb-rs), on a thread of its own because
//! the client is blocking.
//!
//! Layout ("narrow": one row per value, so every value keeps its own timestamp and quality):
//! table `<table_prefix><submodel idShort>`, symbols `asset` (shell idShort), `element`
//! (idShortPath) and `quality` (good/uncertain/bad); columns `value_double`, `value_long`,
//! `value_bool` or `value_str` (whichever fits the element's type; arrays as JSON text in
//! `value_str`), `status` (OPC UA status code); designated timestamp = OPC UA source timestamp.
//! Dedup key for at-least-once delivery: (table, asset, element, timestamp).
//!
//! Rows are flushed when `flush_rows` are buffered or the oldest is `flush_interval_ms` old. A
//! failed flush keeps the buffer and is retried with backoff; meanwhile no new batches are taken,
//! so the bounded channel in front of this sink fills and slows the pipeline instead of growing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use questdb::ingress::{Buffer, Sender, TimestampNanos};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::SinkStats;
use crate::config::QuestDbConfig;
use crate::model::{SubmodelUpdate, TypedValue, UpdateBatch};
use crate::sources::opcua::Backoff;

/// How long a final flush at shutdown keeps retrying before it reports the rows as not delivered.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(10);

/// Appends one update as one ILP row.
pub fn append_row(buf: &mut Buffer, table_prefix: &str, u: &SubmodelUpdate) -> questdb::Result<()> {
    let t = &u.target;
    if table_prefix.is_empty() {
        buf.table(t.submodel_id_short.as_str())?;
    } else {
        buf.table(format!("{table_prefix}{}", t.submodel_id_short).as_str())?;
    }
    buf.symbol("asset", t.shell_id_short.as_str())?
        .symbol("element", t.id_short_path.as_str())?
        .symbol("quality", u.quality().as_str())?;
    match &u.value {
        TypedValue::Float(f) => buf.column_f64("value_double", *f)?,
        TypedValue::Int(i) => buf.column_i64("value_long", *i)?,
        TypedValue::UInt(n) if *n <= i64::MAX as u64 => buf.column_i64("value_long", *n as i64)?,
        TypedValue::UInt(n) => buf.column_str("value_str", n.to_string())?,
        TypedValue::Bool(b) => buf.column_bool("value_bool", *b)?,
        TypedValue::Text(s) => buf.column_str("value_str", s)?,
        list @ TypedValue::List(_) => {
            buf.column_str("value_str", t.value_type.json(list).to_string())?
        }
        // Only the status column below: the row still records that the value was Bad.
        TypedValue::Null => buf,
    };
    buf.column_i64("status", u.status as i64)?;
    buf.at(TimestampNanos::new(u.source_ts_nanos))
}

/// Starts the sink thread; it ends when `rx` closes and the last rows are flushed.
pub fn spawn(
    cfg: QuestDbConfig,
    rx: mpsc::Receiver<UpdateBatch>,
    stats: Arc<SinkStats>,
    shutdown: CancellationToken,
    runtime: tokio::runtime::Handle,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("questdb-sink".into())
        .spawn(move || run(cfg, rx, stats, shutdown, runtime))
        .expect("spawn questdb sink thread")
}

fn run(
    cfg: QuestDbConfig,
    mut rx: mpsc::Receiver<UpdateBatch>,
    stats: Arc<SinkStats>,
    shutdown: CancellationToken,
    runtime: tokio::runtime::Handle,
) {
    let interval = Duration::from_millis(cfg.flush_interval_ms.max(1));
    let mut sender: Option<Sender> = None;
    let mut buffer: Option<Buffer> = None;
    // Updates not yet written into `buffer` because no sender (hence no buffer) exists yet.
    let mut rows = 0usize;
    let mut oldest: Option<Instant> = None;
    let mut closed = false;
    let mut backoff = Backoff::new();
    let mut logged_ok = false;
    let mut giving_up_since: Option<Instant> = None;
    while !closed || rows > 0 {
        // Connect (lazily, and again after a failure that requires a new connection).
        if sender.is_none() {
            match Sender::from_conf(&cfg.conf) {
                Ok(s) => {
                    if buffer.is_none() {
                        buffer = Some(s.new_buffer());
                    }
                    sender = Some(s);
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff.next_delay();
                    warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot open the QuestDB/ILP connection");
                    if closed
                        && shutdown.is_cancelled()
                        && give_up(&mut giving_up_since, &stats, rows)
                    {
                        return;
                    }
                    std::thread::sleep(wait);
                    continue;
                }
            }
        }
        let buf = buffer
            .as_mut()
            .expect("buffer exists once a sender was built");

        // Take more input unless a flush is due.
        let due = rows >= cfg.flush_rows
            || oldest.is_some_and(|t| t.elapsed() >= interval)
            || (closed && rows > 0);
        if !due && !closed {
            let wait = oldest.map_or(interval, |t| interval.saturating_sub(t.elapsed()));
            match runtime.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                Ok(Some(batch)) => {
                    for u in batch.iter() {
                        stats.received.fetch_add(1, Ordering::Relaxed);
                        let _ = buf.set_marker();
                        if let Err(e) = append_row(buf, &cfg.table_prefix, u) {
                            // A name ILP cannot carry: report the element, keep the rest.
                            stats.dropped.fetch_add(1, Ordering::Relaxed);
                            let _ = buf.rewind_to_marker();
                            warn!(error = %e, element = %u.target.id_short_path, "value cannot be written as an ILP row");
                            continue;
                        }
                        buf.clear_marker();
                        rows += 1;
                    }
                    if rows > 0 && oldest.is_none() {
                        oldest = Some(Instant::now());
                    }
                }
                Ok(None) => closed = true,
                Err(_elapsed) => {}
            }
            continue;
        }
        if rows == 0 {
            continue;
        }
        let s = sender.as_mut().expect("connected above");
        match s.flush(buf) {
            Ok(()) => {
                stats.confirmed.fetch_add(rows as u64, Ordering::Relaxed);
                if !logged_ok {
                    info!("writing to QuestDB/ILP");
                    logged_ok = true;
                }
                rows = 0;
                oldest = None;
                backoff.reset();
            }
            Err(e) => {
                // The buffer is kept on failure; retry it as it is.
                stats.errors.fetch_add(1, Ordering::Relaxed);
                let wait = backoff.next_delay();
                warn!(error = %e, rows, retry_in_ms = wait.as_millis() as u64, "QuestDB/ILP flush failed; retrying");
                if s.must_close() {
                    sender = None;
                }
                if closed && shutdown.is_cancelled() && give_up(&mut giving_up_since, &stats, rows)
                {
                    return;
                }
                std::thread::sleep(wait);
            }
        }
    }
}

/// At shutdown, retries stop after [`SHUTDOWN_RETRY`]; whatever is left is reported loudly.
fn give_up(since: &mut Option<Instant>, stats: &SinkStats, rows: usize) -> bool {
    let since = *since.get_or_insert_with(Instant::now);
    if since.elapsed() >= SHUTDOWN_RETRY {
        stats.dropped.fetch_add(rows as u64, Ordering::Relaxed);
        tracing::error!(
            rows,
            "QuestDB/ILP unreachable at shutdown: these rows were NOT stored"
        );
        true
    } else {
        false
    }
}
