//! The summary the page shows at the top: the gateway's counters, each source and each sink.
//! Read from the counters the stages already keep (a few atomic loads and one short outbox
//! lock per sink), so a page open on many screens costs next to nothing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use crate::metrics::STALL_AFTER;
use crate::sources::{SourceState, SourceStats};
use crate::stats::PipelineStats;

/// A source as the page shows it: its settings (no secrets) and its counters.
pub struct SourceInfo {
    /// Its name.
    pub name: String,
    /// Its endpoint URL.
    pub endpoint: String,
    /// `None`, `Basic256Sha256`, ...
    pub security_policy: String,
    /// `None`, `Sign`, `SignAndEncrypt`.
    pub security_mode: String,
    /// False when no mapping rule uses it (it is not started).
    pub active: bool,
    /// Its counters and health.
    pub stats: Arc<SourceStats>,
}

/// Per sink: the last confirmed count, when it was taken, the rate between the last two
/// samples, and when the count last grew.
#[derive(Clone, Copy)]
struct Sample {
    confirmed: u64,
    at: Instant,
    per_s: f64,
    progressed: Instant,
}

/// What the summary is computed from.
pub struct StatusSources {
    /// The gateway's name.
    pub gateway: String,
    /// Sources in config order.
    pub sources: Vec<SourceInfo>,
    /// The pipeline's, sinks' and outbox's counters.
    pub stats: Arc<PipelineStats>,
    samples: Mutex<HashMap<String, Sample>>,
    started: Instant,
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// Age in seconds of a wall-clock time in ns (`None` for 0 = never).
fn age_s(nanos: i64, now: i64) -> Option<f64> {
    (nanos != 0).then(|| (now.saturating_sub(nanos)).max(0) as f64 / 1e9)
}

impl StatusSources {
    /// `sources` in config order; sinks and the outbox come from `stats`.
    pub fn new(
        gateway: String,
        sources: Vec<SourceInfo>,
        stats: Arc<PipelineStats>,
    ) -> StatusSources {
        StatusSources {
            gateway,
            sources,
            stats,
            samples: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    /// The summary as JSON (see the README's status page section for the fields).
    pub fn summary(&self) -> Value {
        let now = now_nanos();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let sources: Vec<Value> = self
            .sources
            .iter()
            .map(|s| {
                let st = &s.stats;
                let health = st.health.snapshot();
                let state = if s.active {
                    st.state()
                } else {
                    SourceState::Idle
                };
                let reason = match state {
                    SourceState::Failed => health.failed.clone(),
                    SourceState::Connected | SourceState::Idle => None,
                    _ => health.problem.as_ref().map(|(m, _)| m.clone()),
                };
                json!({
                    "name": s.name,
                    "endpoint": s.endpoint,
                    "securityPolicy": s.security_policy,
                    "securityMode": s.security_mode,
                    "state": state,
                    "reason": reason,
                    "lastProblem": health.problem.as_ref().map(|(m, at)| json!({"message": m, "ageS": age_s(*at, now)})),
                    "lastDataAgeS": age_s(health.last_data_nanos, now),
                    "values": load(&st.notifications),
                    "reconnects": load(&st.reconnects),
                    "stalls": load(&st.stalls),
                    "sequenceGaps": load(&st.sequence_gaps),
                    "overflows": load(&st.overflows),
                    "publishingPaused": st.is_paused(),
                    "handoffDropped": load(&st.handoff_dropped),
                    "rejectedNodes": health.rejected,
                    "rejectedTotal": health.rejected_total,
                })
            })
            .collect();

        let at = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let sinks: Vec<Value> = self
            .stats
            .sinks
            .iter()
            .map(|(name, st)| {
                let confirmed = load(&st.confirmed);
                let sample = samples.entry(name.clone()).or_insert(Sample {
                    confirmed,
                    at,
                    per_s: 0.0,
                    progressed: at,
                });
                // A new rate at most once a second, so that many viewers do not make it noisy.
                let dt = at.duration_since(sample.at).as_secs_f64();
                if dt >= 0.9 {
                    sample.per_s = confirmed.saturating_sub(sample.confirmed) as f64 / dt;
                    if confirmed != sample.confirmed {
                        sample.progressed = at;
                    }
                    sample.confirmed = confirmed;
                    sample.at = at;
                }
                let buffer = self
                    .stats
                    .outbox
                    .as_ref()
                    .and_then(|o| o.sink_status(name))
                    .unwrap_or_default();
                let connected = st.connected.load(Ordering::Relaxed);
                let state = if !connected {
                    "disconnected"
                } else if buffer.lag == 0 {
                    "idle"
                } else if at.duration_since(sample.progressed) < STALL_AFTER {
                    "delivering"
                } else {
                    "stalled"
                };
                json!({
                    "name": name,
                    "state": state,
                    "connected": connected,
                    "confirmed": confirmed,
                    "confirmedPerS": (sample.per_s * 10.0).round() / 10.0,
                    "lag": buffer.lag,
                    "oldestUnconfirmedAgeS": age_s(buffer.oldest_unconfirmed_ts, now),
                    "bufferBytes": buffer.bytes,
                    "bufferMaxBytes": buffer.max_bytes,
                    "whenFull": buffer.when_full,
                    "dropping": buffer.dropping,
                    "dropped": buffer.dropped,
                    "errors": load(&st.errors),
                    "retries": load(&st.retries),
                    "rejected": load(&st.rejected),
                })
            })
            .collect();
        drop(samples);
        let s = &self.stats;
        json!({
            "gateway": self.gateway,
            "version": env!("CARGO_PKG_VERSION"),
            "uptimeS": self.started.elapsed().as_secs(),
            "readings": load(&s.readings),
            "updates": load(&s.updates),
            "conversionErrors": load(&s.conversion_errors),
            "sources": sources,
            "sinks": sinks,
        })
    }
}
