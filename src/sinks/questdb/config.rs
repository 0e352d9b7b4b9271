//! `[questdb]`: the QuestDB/ILP sink's settings and their checks.

use std::fmt;

use serde::Deserialize;

use crate::core::conf::{redact_conf, ConfigErrors};
use crate::outbox::BufferConfig;

/// QuestDB (ILP) sink settings. (`Debug` hides `conf`, which may hold credentials.)
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuestDbConfig {
    /// Write to QuestDB at all.
    pub enabled: bool,
    /// questdb-rs configuration string, e.g. `http::addr=127.0.0.1:9000;` (HTTP: every flush is
    /// confirmed) or `tcp::addr=127.0.0.1:9009;`. Auth and TLS options go here too
    /// (`token=...;`, `username=...;password=...;`, `https::...`).
    pub conf: String,
    /// Flush when this many rows are buffered.
    pub flush_rows: usize,
    /// Flush at least this often, milliseconds, when rows are buffered. (Rows are flushed
    /// sooner as soon as nothing more waits in the outbox; this bounds how long they may wait
    /// while more keeps coming.)
    pub flush_interval_ms: u64,
    /// Prefix of table names; the table is `<prefix><submodel idShort>`.
    pub table_prefix: String,
    /// This sink's share of the outbox (`[questdb.buffer]`): `max_bytes`, `max_age_s`,
    /// `when_full`; unset keys take the `[outbox]` defaults.
    pub buffer: BufferConfig,
}

impl Default for QuestDbConfig {
    fn default() -> Self {
        QuestDbConfig {
            enabled: false,
            conf: "http::addr=127.0.0.1:9000;".into(),
            flush_rows: 5_000,
            flush_interval_ms: 1_000,
            table_prefix: String::new(),
            buffer: BufferConfig::default(),
        }
    }
}

impl QuestDbConfig {
    /// `conf` with passwords and tokens replaced by `<redacted>`, for output and logs.
    pub fn conf_redacted(&self) -> String {
        redact_conf(&self.conf)
    }

    /// Checks the section.
    pub fn validate(&self, errors: &mut ConfigErrors) {
        if let Err(e) = questdb::ingress::SenderBuilder::from_conf(&self.conf) {
            errors.push("questdb.conf", e);
        }
        if self.flush_rows == 0 {
            errors.push("questdb.flush_rows", "must be at least 1");
        }
        self.buffer.validate("questdb", errors);
    }

    /// True for ILP over TCP, which has no confirmation (at most once).
    pub fn is_tcp(&self) -> bool {
        let c = self.conf.trim_start();
        c.starts_with("tcp::") || c.starts_with("tcps::")
    }

    /// Where this sink delivers: the protocol and address of `conf`, without credentials.
    pub fn destination(&self) -> String {
        let (proto, rest) = self.conf.split_once("::").unwrap_or(("", &self.conf));
        let addr = rest
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.trim() == "addr")
            .map_or("", |(_, v)| v.trim());
        format!("{}::{addr}", proto.trim())
    }
}

impl fmt::Debug for QuestDbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuestDbConfig")
            .field("enabled", &self.enabled)
            .field("conf", &redact_conf(&self.conf))
            .field("flush_rows", &self.flush_rows)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("table_prefix", &self.table_prefix)
            .field("buffer", &self.buffer)
            .finish()
    }
}
