//! `[history]`: how much recent history the gateway keeps per variable, and where the full
//! history can be queried.

use serde::Deserialize;

use crate::core::conf::ConfigErrors;

/// Settings of the Time Series Data submodels (IDTA 02008). History is on for every mapping
/// rule with `history = true`; without such a rule these settings are unused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Length of the recent window the `InternalSegment` holds, in seconds of source time:
    /// values older than the newest value of the same asset minus this are dropped.
    pub window_s: u64,
    /// Hard cap of values kept per variable, whatever the window (a fast-changing variable
    /// would otherwise fill memory): memory ≤ variables × this × ~48 bytes (+ text values).
    pub max_records_per_variable: usize,
    /// Most values (Record Properties, all variables together) one API response carries, so a
    /// response's size does not grow with variables × records: `Records` of the whole submodel
    /// shows the newest records that fit; a time-range page holds at most `limit` records and
    /// at most this many values (always at least one record).
    pub max_values_per_response: usize,
    /// Base URL of QuestDB's HTTP server; the `LinkedSegment` `Endpoint` is `<this>/exec`.
    pub questdb_http: String,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            window_s: 600,
            max_records_per_variable: 1_000,
            max_values_per_response: 10_000,
            questdb_http: "http://127.0.0.1:9000".into(),
        }
    }
}

impl HistoryConfig {
    /// Adds every problem of these settings to `errors`, with its path.
    pub fn validate(&self, errors: &mut ConfigErrors) {
        if self.window_s == 0 {
            errors.push("history.window_s", "must be at least 1");
        }
        if self.max_records_per_variable == 0 {
            errors.push("history.max_records_per_variable", "must be at least 1");
        }
        if self.max_values_per_response == 0 {
            errors.push("history.max_values_per_response", "must be at least 1");
        }
        if !(self.questdb_http.starts_with("http://") || self.questdb_http.starts_with("https://"))
        {
            errors.push(
                "history.questdb_http",
                format!(
                    "{:?} is not an http:// or https:// URL (QuestDB's HTTP port, e.g. http://questdb:9000)",
                    self.questdb_http
                ),
            );
        }
    }

    /// The `LinkedSegment` `Endpoint`: QuestDB's SQL-over-HTTP endpoint.
    pub fn endpoint(&self) -> String {
        format!("{}/exec", self.questdb_http.trim_end_matches('/'))
    }
}
