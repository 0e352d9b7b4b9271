//! Settings of the outbox (`[outbox]`) and of each sink's buffer in it (`[<sink>.buffer]`).

use std::path::PathBuf;

use serde::Deserialize;

use crate::core::conf::ConfigErrors;

/// What a sink's buffer does when the sink falls past its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// The sink loses its oldest values (its cursor jumps past them), like retention in Kafka:
    /// the other sinks, the live AAS values and the OPC UA sessions never wait for it. Every
    /// value lost is counted per sink, logged once per episode, audited and shown in `/ready`.
    #[default]
    DropOldest,
    /// The dispatcher waits until the sink has room again: back-pressure reaches the OPC UA
    /// server's queues, and every other sink and the live values wait too.
    Block,
}

impl FullPolicy {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FullPolicy::DropOldest => "drop_oldest",
            FullPolicy::Block => "block",
        }
    }
}

/// Largest share of the outbox one sink may hold by default, bytes (256 MiB: about 7 M values
/// of a double).
pub const DEFAULT_SINK_MAX_BYTES: u64 = 256 << 20;

/// Outbox settings (`[outbox]`): where it lives, the global caps, and the defaults of every
/// sink's `[<sink>.buffer]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Directory of the outbox file `outbox.redb`, relative to the config file. Two gateways
    /// need two directories.
    pub dir: PathBuf,
    /// Global cap: most values the outbox file holds for all sinks together. Past it, the oldest
    /// record is given up for every sink still behind it (counted per sink).
    pub max_entries: u64,
    /// Global cap: most bytes of values the outbox file holds for all sinks together (the file
    /// itself is somewhat larger: B-tree pages and free space).
    pub max_bytes: u64,
    /// Default `when_full` of every sink's buffer: `drop_oldest` (default) or `block`.
    pub when_full: FullPolicy,
    /// Default `max_age_s` of every sink's buffer: values older than this (by source timestamp)
    /// are given up for that sink and counted; 0 = no age limit.
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
            max_bytes: 1 << 30,
            when_full: FullPolicy::DropOldest,
            max_age_s: 0,
            cache_mib: 4,
        }
    }
}

impl OutboxConfig {
    /// Checks the settings; every problem goes into `errors` with its path.
    pub fn validate(&self, errors: &mut ConfigErrors) {
        if self.max_entries == 0 {
            errors.push("outbox.max_entries", "must be at least 1");
        }
        if self.max_bytes < 1 << 20 {
            errors.push("outbox.max_bytes", "must be at least 1048576 (1 MiB)");
        }
    }
}

/// A sink's own bound in the outbox (`[mqtt.buffer]`, `[questdb.buffer]`, ...). A key left out
/// takes the `[outbox]` default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Most bytes of values this sink may have waiting (not yet confirmed); default 256 MiB,
    /// never more than `[outbox] max_bytes`. A value of a double costs about 40 bytes.
    pub max_bytes: Option<u64>,
    /// Values older than this (source timestamp) are given up for this sink; 0 = no limit.
    /// Default: `[outbox] max_age_s`. Applies under `block` too (an explicit age limit).
    pub max_age_s: Option<u64>,
    /// `drop_oldest` or `block`; default: `[outbox] when_full`.
    pub when_full: Option<FullPolicy>,
}

impl BufferConfig {
    /// Checks the settings of `[<section>.buffer]`.
    pub fn validate(&self, section: &str, errors: &mut ConfigErrors) {
        if self.max_bytes.is_some_and(|b| b < 4096) {
            errors.push(
                format!("{section}.buffer.max_bytes"),
                "must be at least 4096 (bytes; 268435456 = 256 MiB)",
            );
        }
    }

    /// The effective bound, with the `[outbox]` defaults filled in.
    pub fn resolve(&self, outbox: &OutboxConfig) -> SinkBuffer {
        SinkBuffer {
            max_bytes: self
                .max_bytes
                .unwrap_or(DEFAULT_SINK_MAX_BYTES)
                .min(outbox.max_bytes),
            max_age_s: self.max_age_s.unwrap_or(outbox.max_age_s),
            when_full: self.when_full.unwrap_or(outbox.when_full),
        }
    }
}

/// A sink's effective bound and policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkBuffer {
    /// Most bytes of values waiting for the sink.
    pub max_bytes: u64,
    /// Oldest value kept for the sink, seconds (0 = no limit).
    pub max_age_s: u64,
    /// What happens past `max_bytes`.
    pub when_full: FullPolicy,
}

impl Default for SinkBuffer {
    fn default() -> Self {
        BufferConfig::default().resolve(&OutboxConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_buffer_takes_the_outbox_defaults_and_never_more_than_the_global_cap() {
        let outbox = OutboxConfig {
            when_full: FullPolicy::Block,
            max_age_s: 60,
            max_bytes: 1 << 20,
            ..Default::default()
        };
        let unset = BufferConfig::default().resolve(&outbox);
        assert_eq!(unset.when_full, FullPolicy::Block);
        assert_eq!(unset.max_age_s, 60);
        assert_eq!(unset.max_bytes, 1 << 20, "capped by [outbox] max_bytes");
        let own = BufferConfig {
            max_bytes: Some(8192),
            max_age_s: Some(0),
            when_full: Some(FullPolicy::DropOldest),
        }
        .resolve(&outbox);
        assert_eq!(
            own,
            SinkBuffer {
                max_bytes: 8192,
                max_age_s: 0,
                when_full: FullPolicy::DropOldest
            }
        );
        assert_eq!(
            SinkBuffer::default().when_full,
            FullPolicy::DropOldest,
            "the default no longer blocks"
        );
    }
}
