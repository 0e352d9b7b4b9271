//! The ILP delivery loop, on a thread of its own because questdb-rs is blocking.
//!
//! Rows are read from the durable outbox and flushed when `flush_rows` are buffered, when the
//! oldest is `flush_interval_ms` old, or as soon as nothing more is waiting in the outbox (so a
//! value leaves at once when the sink keeps up, and batches grow only under load: the gateway's
//! added latency is not the flush interval); only a confirmed flush (HTTP 2xx) is acknowledged
//! to the outbox. A
//! failed flush keeps the buffer and is retried with backoff; meanwhile nothing new is read, and
//! the values wait on disk in the outbox, not in memory.

//!
//! Over `tcp::` ILP has no confirmation: a flush that reached the socket counts as confirmed,
//! and rows in flight when the server drops the connection are lost (at most once). The sink
//! says so at start; use `http::`/`https::` where every value matters.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use questdb::ingress::{Buffer, ColumnName, Sender, TableName, TimestampNanos};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::QuestDbConfig;
use crate::core::Backoff;
use crate::model::{SubmodelNames, SubmodelUpdate, TypedValue};
use crate::outbox::{OutboxReader, Pos};
use crate::sinks::{SinkContext, SinkStats};

/// The fixed column names of every row, checked once by a test rather than by the buffer on
/// every row (questdb-rs validates a name each time it is given as a `&str`).
mod col {
    pub const ASSET: &str = "asset";
    pub const ELEMENT: &str = "element";
    pub const QUALITY: &str = "quality";
    pub const VALUE_DOUBLE: &str = "value_double";
    pub const VALUE_LONG: &str = "value_long";
    pub const VALUE_STR: &str = "value_str";
    pub const VALUE_BOOL: &str = "value_bool";
    pub const STATUS: &str = "status";
    /// The length of the longest of them.
    pub const LONGEST: usize = VALUE_DOUBLE.len();
    #[cfg(test)]
    pub const ALL: [&str; 8] = [
        ASSET,
        ELEMENT,
        QUALITY,
        VALUE_DOUBLE,
        VALUE_LONG,
        VALUE_STR,
        VALUE_BOOL,
        STATUS,
    ];
}

/// A fixed column name of [`col`], not validated again (see the test
/// `fixed_column_names_are_valid`).
fn c(name: &'static str) -> ColumnName<'static> {
    ColumnName::new_unchecked(name)
}

/// Appends one update as one ILP row (see [`RowWriter`], which the sink uses to write many).
pub fn append_row(buf: &mut Buffer, table_prefix: &str, u: &SubmodelUpdate) -> questdb::Result<()> {
    RowWriter::new(table_prefix).append(buf, u)
}

/// Writes updates as ILP rows, checking a table name once rather than for every row.
///
/// Everything that can make a row fail is checked before the first byte of it is written (the
/// table name when it is first met, the timestamp on every row; the fixed column names at
/// construction), so the caller needs no rewind marker per row (questdb-rs takes a snapshot of
/// its state for each one). Only when a column name is longer than the buffer's name limit
/// (a server configured that way) does a row fail half written: [`Self::needs_marker`].
#[derive(Debug)]
pub struct RowWriter {
    /// `[questdb] table_prefix`.
    prefix: String,
    /// The table of the last row: its submodel idShort and its checked name (prefix +
    /// idShort). The values of a submodel come in runs (in mapping order), so this one entry
    /// serves nearly every row; questdb-rs checks a name given as `&str` on every row, and a
    /// prefix cost a `String` per row.
    table: Option<(&'static SubmodelNames, String)>,
    /// The buffer's longest name (table or column).
    max_name_len: usize,
}

impl RowWriter {
    /// A writer of tables named `<table_prefix><submodel idShort>` into buffers that take names
    /// of up to questdb-rs's default length (127).
    pub fn new(table_prefix: &str) -> RowWriter {
        RowWriter::with_max_name_len(table_prefix, 127)
    }

    /// A writer for a buffer whose names may be `max_name_len` long (`Sender::max_name_len`).
    pub fn with_max_name_len(table_prefix: &str, max_name_len: usize) -> RowWriter {
        RowWriter {
            prefix: table_prefix.to_string(),
            table: None,
            max_name_len,
        }
    }

    /// Whether a failing row may leave part of it in the buffer, so that the caller must set a
    /// marker before each row and rewind to it on an error: only with a name limit shorter
    /// than a fixed column name.
    pub fn needs_marker(&self) -> bool {
        col::LONGEST > self.max_name_len
    }

    /// Appends `u` as one row. An error (an invalid table name, a timestamp before 1970, ...)
    /// leaves the buffer as it was, unless [`Self::needs_marker`].
    pub fn append(&mut self, buf: &mut Buffer, u: &SubmodelUpdate) -> questdb::Result<()> {
        if u.source_ts_nanos < 0 {
            // What `Buffer::at` says, before the row is begun rather than at its end.
            return Err(questdb::Error::new(
                questdb::ErrorCode::InvalidTimestamp,
                format!(
                    "Timestamp {} is negative. It must be >= 0.",
                    u.source_ts_nanos
                ),
            ));
        }
        let t = u.target;
        let cached = self.table.as_ref().is_some_and(|(sm, _)| {
            std::ptr::eq(*sm, t.submodel) || sm.id_short == t.submodel.id_short
        });
        if !cached {
            let name = format!("{}{}", self.prefix, t.submodel.id_short);
            // An invalid name fails here, for every row of its table, and is not kept.
            TableName::new(&name)?;
            self.table = Some((t.submodel, name));
        }
        let (_, name) = self.table.as_ref().expect("set above");
        // Fails before writing (name length, call order).
        buf.table(TableName::new_unchecked(name))?;
        write_columns(buf, u)
    }
}

/// The symbols, value, status and timestamp of a row whose table is written.
fn write_columns(buf: &mut Buffer, u: &SubmodelUpdate) -> questdb::Result<()> {
    let t = u.target;
    buf.symbol(c(col::ASSET), &t.submodel.shell_id_short)?
        .symbol(c(col::ELEMENT), &*t.id_short_path)?
        .symbol(c(col::QUALITY), u.quality().as_str())?;
    match &u.value {
        TypedValue::Float(f) => buf.column_f64(c(col::VALUE_DOUBLE), *f)?,
        TypedValue::Int(i) => buf.column_i64(c(col::VALUE_LONG), *i)?,
        TypedValue::UInt(n) if *n <= i64::MAX as u64 => {
            buf.column_i64(c(col::VALUE_LONG), *n as i64)?
        }
        TypedValue::UInt(n) => buf.column_str(c(col::VALUE_STR), n.to_string())?,
        TypedValue::Bool(b) => buf.column_bool(c(col::VALUE_BOOL), *b)?,
        TypedValue::Text(s) => buf.column_str(c(col::VALUE_STR), s)?,
        // Text after coercion already; kept exact should one arrive uncoerced.
        v @ (TypedValue::DateTime(_) | TypedValue::Bytes(_)) => {
            buf.column_str(c(col::VALUE_STR), t.value_type.lexical(v))?
        }
        list @ TypedValue::List(_) => {
            buf.column_str(c(col::VALUE_STR), t.value_type.json(list).to_string())?
        }
        // Only the status column below: the row still records that the value was Bad.
        TypedValue::Null => buf,
    };
    buf.column_i64(c(col::STATUS), u.status as i64)?;
    buf.at(TimestampNanos::new(u.source_ts_nanos))
}

/// With rows buffered, how long a read may wait for more before the rows are flushed: long
/// enough to load a record from the file, far shorter than any publishing interval.
const LINGER: Duration = Duration::from_millis(5);

/// How long the sink keeps trying to deliver after shutdown was requested. What is still
/// unconfirmed then stays in the outbox and is written after the next start.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the sink thread; it ends when the outbox is closed and drained (or
/// [`DRAIN_TIMEOUT`] after `shutdown`).
pub fn spawn(
    cfg: QuestDbConfig,
    ctx: SinkContext,
    runtime: tokio::runtime::Handle,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let reader = ctx.outbox.reader("questdb");
    std::thread::Builder::new()
        .name("questdb-sink".into())
        .spawn(move || {
            run(cfg, reader, ctx.stats.clone(), ctx.shutdown, runtime);
            ctx.stats.connected.store(false, Ordering::Relaxed);
        })
}

fn run(
    cfg: QuestDbConfig,
    mut reader: OutboxReader,
    stats: Arc<SinkStats>,
    shutdown: CancellationToken,
    runtime: tokio::runtime::Handle,
) {
    let interval = Duration::from_millis(cfg.flush_interval_ms.max(1));
    let mut sender: Option<Sender> = None;
    let mut buffer: Option<Buffer> = None;
    // Made again with the limit of the sender that made the buffer.
    let mut rows_of = RowWriter::new(&cfg.table_prefix);
    let mut rows = 0usize;
    // Source timestamps of the buffered rows (at most flush_rows), for the latency histogram.
    let mut pending_ts: Vec<i64> = Vec::new();
    // Outbox position just past the last row in the buffer: acknowledged after a confirmed flush.
    let mut last_end: Option<Pos> = None;
    let mut oldest: Option<Instant> = None;
    let mut drained = false;
    // Nothing more was waiting in the outbox: what is buffered goes now.
    let mut idle = false;
    let mut backoff = Backoff::new();
    let mut logged_ok = false;
    let mut shutdown_at: Option<Instant> = None;
    let out_of_time = |shutdown_at: &mut Option<Instant>| {
        if shutdown.is_cancelled() {
            shutdown_at.get_or_insert_with(Instant::now).elapsed() >= DRAIN_TIMEOUT
        } else {
            false
        }
    };
    while !drained || rows > 0 {
        if out_of_time(&mut shutdown_at) {
            warn!(
                rows,
                "QuestDB/ILP did not confirm every value before shutdown; they stay in the outbox"
            );
            return;
        }
        // Connect (lazily, and again after a failure that requires a new connection).
        if sender.is_none() {
            match Sender::from_conf(&cfg.conf) {
                Ok(s) => {
                    stats.connected.store(true, Ordering::Relaxed);
                    if buffer.is_none() {
                        buffer = Some(s.new_buffer());
                        rows_of = RowWriter::with_max_name_len(&cfg.table_prefix, s.max_name_len());
                    }
                    sender = Some(s);
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff.next_delay();
                    warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot open the QuestDB/ILP connection");
                    std::thread::sleep(wait.min(Duration::from_secs(1)));
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
            || ((drained || idle) && rows > 0);
        if !due {
            let mut wait = oldest.map_or(interval, |t| interval.saturating_sub(t.elapsed()));
            if rows > 0 {
                // Rows are buffered: wait only long enough for a record that is there already
                // (read back from the file if the sink is behind), not for new values.
                wait = wait.min(LINGER);
            }
            let room = cfg.flush_rows - rows;
            let next = runtime
                .block_on(async { tokio::time::timeout(wait, reader.next_batch(room)).await });
            match next {
                Ok(Ok(Some(delivery))) => {
                    last_end = Some(delivery.end);
                    // Counted per delivery, not per value (an atomic add each).
                    stats
                        .received
                        .fetch_add(delivery.values.len() as u64, Ordering::Relaxed);
                    pending_ts.reserve(delivery.values.len());
                    for u in crate::model::prefetch_targets_and_paths(&delivery.values) {
                        // No rewind marker per row: a row that fails does so before any of it is
                        // written (see `RowWriter::append`).
                        let marked = rows_of.needs_marker() && buf.set_marker().is_ok();
                        if let Err(e) = rows_of.append(buf, u) {
                            // A value ILP cannot carry (e.g. an invalid name): say which, keep the rest.
                            stats.rejected.fetch_add(1, Ordering::Relaxed);
                            if marked {
                                let _ = buf.rewind_to_marker();
                            }
                            error!(error = %e, element = %u.target.id_short_path, "value cannot be written as an ILP row; skipped");
                            continue;
                        }
                        if marked {
                            buf.clear_marker();
                        }
                        rows += 1;
                        pending_ts.push(u.source_ts_nanos);
                    }
                    if rows > 0 && oldest.is_none() {
                        oldest = Some(Instant::now());
                    }
                    if rows == 0 {
                        if let Some(end) = last_end.take() {
                            // Everything in the batch was unwritable: move past it.
                            let _ = reader.ack_blocking(end);
                        }
                    }
                }
                Ok(Ok(None)) => drained = true,
                Ok(Err(e)) => {
                    error!(error = %e, "QuestDB sink cannot read the outbox; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(_elapsed) => idle = rows > 0,
            }
            continue;
        }
        idle = false;
        let s = sender.as_mut().expect("connected above");
        match s.flush(buf) {
            Ok(()) => {
                stats.connected.store(true, Ordering::Relaxed);
                stats.confirmed.fetch_add(rows as u64, Ordering::Relaxed);
                let now = crate::core::LatencyHistogram::now_nanos();
                stats.latency.observe_all_since(pending_ts.drain(..), now);
                if let Some(end) = last_end.take() {
                    if let Err(e) = reader.ack_blocking(end) {
                        error!(error = %e, "QuestDB sink cannot record its outbox position; values may be written again");
                    }
                }
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
                stats.connected.store(false, Ordering::Relaxed);
                let wait = backoff.next_delay();
                warn!(error = %e, rows, retry_in_ms = wait.as_millis() as u64, "QuestDB/ILP flush failed; retrying");
                if s.must_close() {
                    sender = None;
                }
                std::thread::sleep(wait.min(Duration::from_secs(2)));
                // Retry this buffer as it is before reading anything more.
                idle = true;
            }
        }
    }
}

#[cfg(test)]
mod column_tests {
    use super::*;
    use crate::model::ElementTarget;

    #[test]
    fn fixed_column_names_are_valid() {
        for name in super::col::ALL {
            questdb::ingress::ColumnName::new(name).expect(name);
        }
        let longest = super::col::ALL.iter().map(|c| c.len()).max().unwrap();
        assert_eq!(super::col::LONGEST, longest);
        assert!(RowWriter::with_max_name_len("gw_", longest - 1).needs_marker());
        assert!(!RowWriter::with_max_name_len("gw_", longest).needs_marker());
    }

    /// The rows of every value kind, byte for byte (the table layout is the product's
    /// interface), written without a marker; a timestamp before 1970 and a table name ILP
    /// does not take are refused before a byte of their row is written, and the rows after them
    /// are whole.
    #[test]
    fn every_value_kind_writes_its_row_and_refused_rows_leave_nothing() {
        use chrono::TimeZone;
        let target = |sm: &str, path: &str| ElementTarget::for_test("M 1", sm, path).leak();
        let at = |sm: &str, path: &str, value: TypedValue, status: u32, ts: i64| SubmodelUpdate {
            target: target(sm, path),
            value,
            status,
            source_ts_nanos: ts,
            server_ts_nanos: 7,
        };
        let t = 1_700_000_000_123_456_789;
        let updates = [
            at("Op", "A.b", TypedValue::Float(1.5), 0, t),
            at("Op", "N", TypedValue::Float(f64::NAN), 0, t),
            at("Op", "I", TypedValue::Int(-42), 0x4000_0000, t),
            at("Op", "U", TypedValue::UInt(7), 0, t),
            at("Op", "Big", TypedValue::UInt(u64::MAX), 0, t),
            at("Op", "B", TypedValue::Bool(true), 0, t),
            at("Op", "Old", TypedValue::Float(1.0), 0, -1),
            at("Op", "S,x=y", TypedValue::Text("a \"q\" b\\".into()), 0, 0),
            at("bad?", "X", TypedValue::Int(1), 0, t),
            at(
                "Op",
                "D",
                TypedValue::DateTime(chrono::Utc.timestamp_opt(1, 5).unwrap()),
                0,
                t,
            ),
            at("Op", "Raw", TypedValue::Bytes(vec![1, 2, 255]), 0, t),
            at(
                "Op",
                "L[0]",
                TypedValue::List(vec![TypedValue::Float(1.0), TypedValue::Float(2.5)]),
                0,
                t,
            ),
            at("Energy", "Gone", TypedValue::Null, 0x8000_0000, t),
        ];
        let mut buf = Buffer::new(questdb::ingress::ProtocolVersion::V1);
        let mut writer = RowWriter::new("gw_");
        let mut refused = 0;
        for u in &updates {
            let before = buf.as_bytes().len();
            if writer.append(&mut buf, u).is_err() {
                refused += 1;
                assert_eq!(buf.as_bytes().len(), before, "{u:?}");
            }
        }
        assert_eq!(refused, 2);
        let text = String::from_utf8(buf.as_bytes().to_vec()).unwrap();
        let expected = [
            "gw_Op,asset=M\\ 1,element=A.b,quality=good value_double=1.5,status=0i 1700000000123456789",
            "gw_Op,asset=M\\ 1,element=N,quality=good value_double=NaN,status=0i 1700000000123456789",
            "gw_Op,asset=M\\ 1,element=I,quality=uncertain value_long=-42i,status=1073741824i 1700000000123456789",
            "gw_Op,asset=M\\ 1,element=U,quality=good value_long=7i,status=0i 1700000000123456789",
            "gw_Op,asset=M\\ 1,element=Big,quality=good value_str=\"18446744073709551615\",status=0i 1700000000123456789",
            "gw_Op,asset=M\\ 1,element=B,quality=good value_bool=t,status=0i 1700000000123456789",
            "gw_Op,asset=M\\ 1,element=S\\,x\\=y,quality=good value_str=\"a \\\"q\\\" b\\\\\",status=0i 0",
            "gw_Op,asset=M\\ 1,element=D,quality=good value_str=\"1970-01-01T00:00:01.000000005Z\",status=0i 1700000000123456789",
            "gw_Op,asset=M\\ 1,element=Raw,quality=good value_str=\"AQL/\",status=0i 1700000000123456789",
            "gw_Op,asset=M\\ 1,element=L[0],quality=good value_str=\"[1.0,2.5]\",status=0i 1700000000123456789",
            "gw_Energy,asset=M\\ 1,element=Gone,quality=bad status=2147483648i 1700000000123456789",
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{text}");
    }

    fn update(submodel: &str, path: &str, v: f64) -> SubmodelUpdate {
        SubmodelUpdate {
            target: ElementTarget::for_test("M1", submodel, path).leak(),
            value: TypedValue::Float(v),
            status: 0,
            source_ts_nanos: 1_000,
            server_ts_nanos: 0,
        }
    }

    #[test]
    fn a_writer_checks_each_table_name_once_and_writes_what_single_rows_write() {
        let (op, energy, bad) = (
            update("Op", "X", 1.5),
            update("Energy", "P", 2.0),
            update("bad?name", "Y", 3.0),
        );
        // Runs, a switch back and forth, and a table name ILP does not take.
        let rows = [&op, &op, &energy, &bad, &op, &bad, &energy];
        let mut cached = Buffer::new(questdb::ingress::ProtocolVersion::V1);
        let mut single = Buffer::new(questdb::ingress::ProtocolVersion::V1);
        let mut writer = RowWriter::new("gw_");
        assert!(!writer.needs_marker());
        let mut rejected = 0;
        for u in rows {
            // No marker: a row that fails leaves the buffer as it was.
            let before = cached.as_bytes().to_vec();
            if writer.append(&mut cached, u).is_err() {
                rejected += 1;
                assert_eq!(cached.as_bytes(), &before[..]);
            }
            single.set_marker().unwrap();
            match append_row(&mut single, "gw_", u) {
                Ok(()) => single.clear_marker(),
                Err(_) => single.rewind_to_marker().unwrap(),
            }
        }
        assert_eq!(rejected, 2, "every row of the invalid table is rejected");
        let text = String::from_utf8(cached.as_bytes().to_vec()).unwrap();
        assert_eq!(text, String::from_utf8(single.as_bytes().to_vec()).unwrap());
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "gw_Op,asset=M1,element=X,quality=good value_double=1.5,status=0i 1000",
                "gw_Op,asset=M1,element=X,quality=good value_double=1.5,status=0i 1000",
                "gw_Energy,asset=M1,element=P,quality=good value_double=2.0,status=0i 1000",
                "gw_Op,asset=M1,element=X,quality=good value_double=1.5,status=0i 1000",
                "gw_Energy,asset=M1,element=P,quality=good value_double=2.0,status=0i 1000",
            ]
        );
    }
}
