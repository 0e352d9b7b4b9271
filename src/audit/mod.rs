//! Tamper-evident audit log: append-only JSON lines of security-relevant events.
//!
//! Every line is one JSON object ending in `"prev_hash":"…","hash":"…"}` (in that order, the
//! hash last). `hash` = SHA-256 (hex) over the previous line's hash followed by the line's own
//! bytes with the `,"hash":"…"` part removed. The chain continues across files, so deleting,
//! reordering or editing a line — or a whole file in the middle — breaks it; [`verify`] finds
//! the first broken line. (Cutting lines off the *end* cannot be detected by a hash chain alone;
//! ship the log off the box, e.g. with the `export` command, if that matters.)
//!
//! Files are `audit-YYYYMMDD-NNNN.jsonl` in `audit.dir`, rotated at UTC midnight and at
//! `max_file_bytes`. A file is deleted only when its day is more than `retention_days` ago
//! (default 1095 days = 3 years), checked at start and at every rotation.
//!
//! `record` only queues a line (bounded); a writer thread writes each line with one `write` and
//! `fdatasync`s after every burst (group commit), so a line is on disk within one disk sync of
//! its event while request handlers never wait for the disk. The API's rate limit bounds how
//! fast failed logins can make lines; a full queue drops lines and says how many, in the log.

#![warn(missing_docs)]

mod hash;
pub use hash::sha256_hex;

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

/// `[audit]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Keep an audit log at all.
    pub enabled: bool,
    /// Directory of the audit files, relative to the config file (put it under the data dir).
    pub dir: PathBuf,
    /// Start a new file when the current one would grow beyond this many bytes.
    pub max_file_bytes: u64,
    /// Delete a file only when its day lies more than this many days back (default 3 years).
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            dir: PathBuf::from("audit"),
            max_file_bytes: 10 * 1024 * 1024,
            retention_days: 1095,
        }
    }
}

/// `prev_hash` of the very first line of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HASH_KEY: &str = ",\"hash\":\"";

struct Current {
    file: Option<File>,
    day: NaiveDate,
    counter: u32,
    size: u64,
    prev_hash: String,
}

/// Lines that may wait for the writer thread; beyond this, lines are counted and dropped (and
/// an `audit_lines_dropped` event with the count is written once the queue has room again), so
/// a flood of refused requests cannot grow memory.
pub const QUEUE_CAPACITY: usize = 4096;

enum Msg {
    Line(DateTime<Utc>, String, Value),
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// An open audit log; cheap to share (`Arc`). `record` only queues the line: a dedicated thread
/// hashes, writes and `fdatasync`s, so request handlers never wait for the disk.
pub struct AuditLog {
    dir: PathBuf,
    tx: Mutex<Option<std::sync::mpsc::SyncSender<Msg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

/// The writer thread's state: the chain head and the current file.
struct Writer {
    dir: PathBuf,
    cfg: AuditConfig,
    current: Current,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("dir", &self.dir).finish()
    }
}

/// The audit files in `dir`, oldest first, with their day and counter.
pub fn list_files(dir: &Path) -> std::io::Result<Vec<(NaiveDate, u32, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some((day, counter)) = parse_name(name) {
            out.push((day, counter, path));
        }
    }
    out.sort_by_key(|f| (f.0, f.1));
    Ok(out)
}

fn parse_name(name: &str) -> Option<(NaiveDate, u32)> {
    let rest = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    let (day, counter) = rest.split_once('-')?;
    Some((
        NaiveDate::parse_from_str(day, "%Y%m%d").ok()?,
        counter.parse().ok()?,
    ))
}

fn file_name(day: NaiveDate, counter: u32) -> String {
    format!("audit-{}-{counter:04}.jsonl", day.format("%Y%m%d"))
}

/// Splits a line into (body the hash covers, the stored hash).
fn split_line(line: &str) -> Result<(String, &str), String> {
    let at = line
        .rfind(HASH_KEY)
        .ok_or("no \"hash\" field at the end of the line")?;
    let rest = &line[at + HASH_KEY.len()..];
    let hash = rest
        .strip_suffix("\"}")
        .filter(|h| h.len() == 64)
        .ok_or("the line does not end in \"hash\":\"<64 hex>\"}")?;
    Ok((format!("{}}}", &line[..at]), hash))
}

fn chain_hash(prev: &str, body: &str) -> String {
    sha256_hex(format!("{prev}{body}").as_bytes())
}

/// Why the audit log cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct AuditError {
    /// What failed (`audit.dir: cannot create`, `audit: cannot read`).
    pub what: &'static str,
    /// The folder or file.
    pub path: std::path::PathBuf,
    /// The operating system's reason.
    #[source]
    pub source: std::io::Error,
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, continuing the chain of the newest file, deletes
    /// files past retention and starts the writer thread.
    pub fn open(dir: &Path, cfg: AuditConfig) -> Result<Arc<AuditLog>, AuditError> {
        let failed = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| AuditError { what, path, source }
        };
        fs::create_dir_all(dir).map_err(failed("audit.dir: cannot create", dir))?;
        let files = list_files(dir).map_err(failed("audit.dir: cannot list", dir))?;
        let today = Utc::now().date_naive();
        let (day, counter, size, prev_hash) = match files.last() {
            None => (today, 0, 0, GENESIS.to_string()),
            Some((day, counter, path)) => {
                let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                let last = last_line(path).map_err(failed("audit: cannot read", path))?;
                let prev = match last {
                    None => GENESIS.to_string(),
                    // A damaged last line (crash mid-write) is chained on as it is; `verify`
                    // reports it, and the new lines stay verifiable after it.
                    Some(l) => match split_line(&l) {
                        Ok((_, h)) => h.to_string(),
                        Err(_) => sha256_hex(l.as_bytes()),
                    },
                };
                (*day, *counter, size, prev)
            }
        };
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            cfg,
            current: Current {
                file: None,
                day,
                counter,
                size,
                prev_hash,
            },
        };
        writer.apply_retention(today);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(QUEUE_CAPACITY);
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let thread_dropped = dropped.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Group commit: write everything queued, then one fdatasync for all of it.
                    let mut next = Some(first);
                    while let Some(msg) = next.take() {
                        match msg {
                            Msg::Line(ts, event, fields) => {
                                let lost =
                                    thread_dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
                                if lost > 0 {
                                    writer.record(
                                        Utc::now(),
                                        "audit_lines_dropped",
                                        serde_json::json!({"count": lost}),
                                    );
                                }
                                writer.record(ts, &event, fields);
                            }
                            Msg::Flush(done) => {
                                writer.sync();
                                let _ = done.send(());
                            }
                        }
                        next = rx.try_recv().ok();
                    }
                    writer.sync();
                }
                if let Some(f) = writer.current.file.take() {
                    let _ = f.sync_all();
                }
            })
            .map_err(failed("audit: cannot start the writer thread for", dir))?;
        Ok(Arc::new(AuditLog {
            dir: dir.to_path_buf(),
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            dropped,
        }))
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues one event. `fields` (a JSON object) is merged into the line next to `ts` and
    /// `event`. Never blocks and never fails the caller: auditing must not stop the gateway;
    /// write errors and dropped lines are logged.
    pub fn record(&self, event: &str, fields: Value) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = tx.as_ref() else {
            return;
        };
        if tx
            .try_send(Msg::Line(Utc::now(), event.to_string(), fields))
            .is_err()
            && self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                == 0
        {
            tracing::error!(
                event,
                "audit: the writer is behind; lines are dropped (counted in the log)"
            );
        }
    }

    /// Waits until every queued line is on disk.
    pub fn flush(&self) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(tx) = tx {
            let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
            if tx.send(Msg::Flush(done_tx)).is_ok() {
                let _ = done_rx.recv();
            }
        }
    }
}

impl Drop for AuditLog {
    /// Writes what is queued and stops the writer thread.
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    fn apply_retention(&self, today: NaiveDate) {
        let Ok(files) = list_files(&self.dir) else {
            return;
        };
        let keep_from = today - chrono::Days::new(self.cfg.retention_days as u64);
        // Never delete the newest file: it anchors the chain of the lines to come.
        for (day, _, path) in files.iter().take(files.len().saturating_sub(1)) {
            if *day < keep_from {
                match fs::remove_file(path) {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), retention_days = self.cfg.retention_days, "audit: deleted a file past retention")
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "audit: cannot delete a file past retention")
                    }
                }
            }
        }
    }

    /// Makes the written lines durable.
    fn sync(&mut self) {
        if let Some(f) = &self.current.file {
            if let Err(e) = f.sync_data() {
                tracing::error!(error = %e, dir = %self.dir.display(), "audit: cannot sync the audit log to disk");
            }
        }
    }

    fn record(&mut self, ts: DateTime<Utc>, event: &str, fields: Value) {
        if let Err(e) = self.try_record(ts, event, fields) {
            tracing::error!(event, error = %e, dir = %self.dir.display(), "audit: cannot write the audit log");
        }
    }

    fn try_record(
        &mut self,
        now: DateTime<Utc>,
        event: &str,
        fields: Value,
    ) -> std::io::Result<()> {
        let mut map = Map::new();
        map.insert(
            "ts".into(),
            now.to_rfc3339_opts(SecondsFormat::Micros, true).into(),
        );
        map.insert("event".into(), event.into());
        if let Value::Object(extra) = fields {
            for (k, v) in extra {
                if k != "hash" && k != "prev_hash" && k != "ts" && k != "event" {
                    map.insert(k, v);
                }
            }
        }
        let cur = &mut self.current;
        map.insert("prev_hash".into(), cur.prev_hash.clone().into());
        let body = serde_json::to_string(&Value::Object(map)).map_err(std::io::Error::other)?;
        // The hash goes last, so the covered body is the line without it (see `split_line`).
        let hash = chain_hash(&cur.prev_hash, &body);
        let line = format!("{}{HASH_KEY}{hash}\"}}\n", &body[..body.len() - 1]);

        let today = now.date_naive();
        let too_big = cur.size > 0 && cur.size + line.len() as u64 > self.cfg.max_file_bytes;
        if cur.file.is_none() || today != cur.day || too_big {
            let (day, counter) = if today != cur.day {
                (today, 0)
            } else if too_big {
                (today, cur.counter + 1)
            } else {
                (cur.day, cur.counter)
            };
            let rotated = day != cur.day || counter != cur.counter;
            if rotated {
                if let Some(f) = cur.file.take() {
                    let _ = f.sync_all();
                }
            }
            let path = self.dir.join(file_name(day, counter));
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            cur.size = file.metadata()?.len();
            cur.file = Some(file);
            cur.day = day;
            cur.counter = counter;
            if rotated {
                self.apply_retention(today);
            }
        }
        let cur = &mut self.current;
        let file = cur.file.as_mut().expect("opened above");
        file.write_all(line.as_bytes())?;
        cur.size += line.len() as u64;
        cur.prev_hash = hash;
        Ok(())
    }
}

fn last_line(path: &Path) -> std::io::Result<Option<String>> {
    let mut last = None;
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        if !line.trim().is_empty() {
            last = Some(line);
        }
    }
    Ok(last)
}

/// What [`verify`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files checked.
    pub files: usize,
    /// Lines checked.
    pub lines: u64,
    /// True when the first line chains to [`GENESIS`]; false when older files were removed by
    /// retention and the chain starts at a remembered hash.
    pub from_genesis: bool,
}

/// The first place where the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// File of the broken line.
    pub file: PathBuf,
    /// 1-based line number in that file.
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// Checks every line of every file in `dir`, in order, against the hash chain.
pub fn verify(dir: &Path) -> Result<VerifyReport, VerifyError> {
    let files = list_files(dir).map_err(|e| VerifyError {
        file: dir.to_path_buf(),
        line: 0,
        reason: e.to_string(),
    })?;
    let mut prev: Option<String> = None;
    let mut report = VerifyReport {
        files: files.len(),
        lines: 0,
        from_genesis: true,
    };
    for (_, _, path) in &files {
        let fail = |line: u64, reason: String| VerifyError {
            file: path.clone(),
            line,
            reason,
        };
        let text = fs::read(path).map_err(|e| fail(0, e.to_string()))?;
        let text = String::from_utf8(text).map_err(|e| fail(0, format!("not UTF-8: {e}")))?;
        for (i, line) in text.lines().enumerate() {
            let n = i as u64 + 1;
            let (body, stored) = split_line(line).map_err(|e| fail(n, e.to_string()))?;
            let parsed: Map<String, Value> = serde_json::from_str(&body)
                .map_err(|e| fail(n, format!("not a JSON object: {e}")))?;
            let claimed_prev = parsed
                .get("prev_hash")
                .and_then(Value::as_str)
                .ok_or_else(|| fail(n, "no prev_hash".into()))?;
            match &prev {
                Some(p) if p != claimed_prev => {
                    return Err(fail(
                        n,
                        format!("prev_hash {claimed_prev} does not match the previous line's hash {p} (a line or file was removed, reordered or altered)"),
                    ))
                }
                None if claimed_prev != GENESIS => report.from_genesis = false,
                _ => {}
            }
            let computed = chain_hash(claimed_prev, &body);
            if computed != stored {
                return Err(fail(
                    n,
                    format!("hash {stored} does not match the line's content (computed {computed}): the line was altered"),
                ));
            }
            prev = Some(computed);
            report.lines += 1;
        }
    }
    Ok(report)
}

/// Writes the lines whose `ts` lies in `[from, to]` to `out`, oldest first.
pub fn export(
    dir: &Path,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    out: &mut dyn Write,
) -> Result<u64, String> {
    let files = list_files(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut count = 0;
    for (day, _, path) in files {
        // A file holds lines of its own day only (rotation at midnight UTC).
        if from.is_some_and(|f| day < f.date_naive()) || to.is_some_and(|t| day > t.date_naive()) {
            continue;
        }
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            let ts = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v.get("ts").and_then(Value::as_str).map(str::to_string))
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(|t| t.with_timezone(&Utc));
            let Some(ts) = ts else {
                continue;
            };
            if from.is_some_and(|f| ts < f) || to.is_some_and(|t| ts > t) {
                continue;
            }
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
            count += 1;
        }
    }
    Ok(count)
}

/// Parses `--from`/`--to`: RFC 3339 (`2026-11-25T10:00:00Z`) or a date (`2026-11-25`, start of
/// day UTC; as `to`, the end of that day).
pub fn parse_bound(s: &str, end_of_day: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("{s:?} is neither a date (2026-11-25) nor an RFC 3339 time"))?;
    let t = if end_of_day {
        day.and_hms_nano_opt(23, 59, 59, 999_999_999)
    } else {
        day.and_hms_opt(0, 0, 0)
    }
    .expect("valid time of day");
    Ok(t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(max: u64) -> AuditConfig {
        AuditConfig {
            max_file_bytes: max,
            ..Default::default()
        }
    }

    #[test]
    fn chain_survives_rotation_and_reopen_and_detects_edits() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = AuditLog::open(dir.path(), cfg(600)).unwrap();
            for i in 0..20 {
                log.record("test", json!({"i": i, "text": "x".repeat(50)}));
            }
        }
        let log = AuditLog::open(dir.path(), cfg(600)).unwrap();
        log.record("after_reopen", json!({}));
        log.flush();
        let files = list_files(dir.path()).unwrap();
        assert!(files.len() > 2, "rotated by size: {files:?}");
        let r = verify(dir.path()).unwrap();
        assert_eq!(r.lines, 21);
        assert!(r.from_genesis);

        // One changed byte in the middle of a line of the second file.
        let path = &files[1].2;
        let mut bytes = fs::read(path).unwrap();
        let at = bytes.iter().position(|b| *b == b'x').unwrap();
        bytes[at] = b'y';
        fs::write(path, &bytes).unwrap();
        let e = verify(dir.path()).unwrap_err();
        assert_eq!(&e.file, path);
        assert_eq!(e.line, 1);
    }

    #[test]
    fn removing_a_middle_file_breaks_the_chain_but_retention_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), cfg(300)).unwrap();
        for i in 0..12 {
            log.record("test", json!({"i": i, "pad": "p".repeat(60)}));
        }
        log.flush();
        let files = list_files(dir.path()).unwrap();
        assert!(files.len() >= 3);
        // Losing the oldest file (what retention does) keeps the rest verifiable.
        let first = fs::read(&files[0].2).unwrap();
        fs::remove_file(&files[0].2).unwrap();
        let r = verify(dir.path()).unwrap();
        assert!(!r.from_genesis);
        fs::write(&files[0].2, first).unwrap();
        fs::remove_file(&files[1].2).unwrap();
        let e = verify(dir.path()).unwrap_err();
        assert_eq!(e.file, files[2].2);
        assert!(e.reason.contains("prev_hash"), "{e}");
    }

    #[test]
    fn retention_deletes_only_files_older_than_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let today = Utc::now().date_naive();
        let old = today - chrono::Days::new(1096);
        let kept = today - chrono::Days::new(1094);
        for d in [old, kept] {
            fs::write(dir.path().join(file_name(d, 0)), "").unwrap();
        }
        let log = AuditLog::open(dir.path(), AuditConfig::default()).unwrap();
        log.record("x", json!({}));
        log.flush();
        let days: Vec<_> = list_files(dir.path())
            .unwrap()
            .into_iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(days, vec![kept, today]);
    }

    #[test]
    fn export_filters_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), AuditConfig::default()).unwrap();
        log.record("a", json!({}));
        let mid = Utc::now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        log.record("b", json!({}));
        log.flush();
        let mut out = Vec::new();
        assert_eq!(export(dir.path(), Some(mid), None, &mut out).unwrap(), 1);
        assert!(String::from_utf8(out).unwrap().contains("\"event\":\"b\""));
        assert!(
            parse_bound("2026-11-25", true).unwrap() > parse_bound("2026-11-25", false).unwrap()
        );
        assert!(parse_bound("yesterday", false).is_err());
    }
}
