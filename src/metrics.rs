//! Observability endpoints: Prometheus `GET /metrics` (text exposition format 0.0.4, written by
//! hand: a dozen counters do not justify a metrics framework) and `GET /ready`.
//!
//! Everything shown is read from the counters the stages already keep (`PipelineStats`,
//! `SourceStats`, `SinkStats`, `OutboxStats`), so a scrape costs a few atomic loads and never
//! takes a lock on the data path.

#![warn(missing_docs)]

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::api::gatekeeper::Gatekeeper;
use crate::outbox::SinkBufferStatus;
use crate::sinks::SinkStats;
use crate::sources::SourceStats;
use crate::stats::PipelineStats;

/// A sink that has values waiting but confirmed none for this long is reported as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(30);

/// State of the observability endpoints.
pub struct Observability {
    stats: Arc<PipelineStats>,
    sources: Vec<(String, Arc<SourceStats>)>,
    gatekeeper: Option<Arc<Gatekeeper>>,
    /// Per sink: last confirmed count seen and when it last grew.
    progress: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Observability {
    /// `sources` are the sources that connect (name, counters); the sinks are those in
    /// `stats.sinks`, each reported under its own name.
    pub fn new(
        stats: Arc<PipelineStats>,
        sources: Vec<(String, Arc<SourceStats>)>,
        gatekeeper: Option<Arc<Gatekeeper>>,
    ) -> Arc<Observability> {
        Arc::new(Observability {
            stats,
            sources,
            gatekeeper,
            progress: Mutex::new(HashMap::new()),
        })
    }

    /// `/metrics` and `/ready`, to be merged into the API router.
    pub fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/ready", get(ready))
            .with_state(self)
    }

    fn buffer(&self, sink: &str) -> SinkBufferStatus {
        self.stats
            .outbox
            .as_ref()
            .and_then(|o| o.sink_status(sink))
            .unwrap_or_default()
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let s = &self.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        metric(
            &mut out,
            "aas_gateway_readings_total",
            "counter",
            "Values received from all OPC UA sources.",
            &[("", load(&s.readings))],
        );
        metric(
            &mut out,
            "aas_gateway_updates_total",
            "counter",
            "Values mapped onto submodel elements.",
            &[("", load(&s.updates))],
        );
        metric(
            &mut out,
            "aas_gateway_conversion_errors_total",
            "counter",
            "Values that did not fit the mapped element's type.",
            &[("", load(&s.conversion_errors))],
        );

        let per_source = |f: &dyn Fn(&SourceStats) -> u64| -> Vec<(String, u64)> {
            self.sources
                .iter()
                .map(|(n, st)| (n, st))
                .map(|(n, st)| (format!("source=\"{}\"", escape(n)), f(st)))
                .collect()
        };
        metric_owned(
            &mut out,
            "aas_gateway_source_notifications_total",
            "counter",
            "Data change notifications received, per source.",
            &per_source(&|st| load(&st.notifications)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_source_reconnects_total",
            "counter",
            "Reconnects of the OPC UA session, per source.",
            &per_source(&|st| load(&st.reconnects)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_source_sequence_gaps_total",
            "counter",
            "Notification messages lost between server and gateway, per source.",
            &per_source(&|st| load(&st.sequence_gaps)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_source_keep_alives_total",
            "counter",
            "Keep-alive publish responses (no data), per source.",
            &per_source(&|st| load(&st.keep_alives)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_source_overflows_total",
            "counter",
            "Values flagged with the overflow bit (the server's item queue dropped values), per source.",
            &per_source(&|st| load(&st.overflows)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_source_stalls_total",
            "counter",
            "Times the server sent neither data nor keep-alive within the silence timeout, per source.",
            &per_source(&|st| load(&st.stalls)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_source_publishing_pauses_total",
            "counter",
            "Times publishing was paused because the pipeline was saturated, per source.",
            &per_source(&|st| load(&st.publishing_pauses)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_source_publishing_paused",
            "gauge",
            "1 while the source's publishing is paused by back-pressure.",
            &per_source(&|st| load(&st.publishing_paused)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_source_handoff_waiting",
            "gauge",
            "Values waiting between the source and the pipeline.",
            &per_source(&|st| load(&st.handoff_waiting)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_source_handoff_dropped_total",
            "counter",
            "Values dropped between the source and the pipeline (a server ignoring the pause, or stop), per source.",
            &per_source(&|st| load(&st.handoff_dropped)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_source_unconvertible_total",
            "counter",
            "Values with no typed form (e.g. DiagnosticInfo), per source.",
            &per_source(&|st| load(&st.unconvertible)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_source_connected",
            "gauge",
            "1 when the source's OPC UA session is connected.",
            &per_source(&|st| st.session.is_connected() as u64),
        );

        let per_sink = |f: &dyn Fn(&SinkStats) -> u64| -> Vec<(String, u64)> {
            s.sinks
                .iter()
                .map(|(n, st)| (format!("sink=\"{}\"", escape(n)), f(st)))
                .collect()
        };
        let per_buffer = |f: &dyn Fn(&SinkBufferStatus) -> u64| -> Vec<(String, u64)> {
            s.sinks
                .iter()
                .map(|(n, _)| (format!("sink=\"{}\"", escape(n)), f(&self.buffer(n))))
                .collect()
        };
        metric_owned(
            &mut out,
            "aas_gateway_sink_received_total",
            "counter",
            "Values handed to each sink.",
            &per_sink(&|st| load(&st.received)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_sink_confirmed_total",
            "counter",
            "Values each sink's far side confirmed (MQTT PUBACK, ILP HTTP 2xx).",
            &per_sink(&|st| load(&st.confirmed)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_sink_errors_total",
            "counter",
            "Failed delivery attempts per sink (each is retried).",
            &per_sink(&|st| load(&st.errors)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_sink_retries_total",
            "counter",
            "Messages sent again because their confirmation did not come (timeout, reconnect).",
            &per_sink(&|st| load(&st.retries)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_sink_rejected_total",
            "counter",
            "Values a sink's far side cannot take (logged and skipped).",
            &per_sink(&|st| load(&st.rejected)),
        );
        metric_owned(
            &mut out,
            "aas_gateway_sink_connected",
            "gauge",
            "1 while the sink is connected to its far side.",
            &per_sink(&|st| st.connected.load(Ordering::Relaxed) as u64),
        );
        metric_owned(
            &mut out,
            "aas_gateway_sink_dropped_total",
            "counter",
            "Values a sink lost because it fell past its buffer bound (its oldest values).",
            &per_buffer(&|b| b.dropped),
        );
        metric_owned(
            &mut out,
            "aas_gateway_outbox_lag",
            "gauge",
            "Values in the outbox not yet confirmed by each sink.",
            &per_buffer(&|b| b.lag),
        );
        metric_owned(
            &mut out,
            "aas_gateway_sink_buffer_bytes",
            "gauge",
            "Bytes of outbox records waiting for each sink.",
            &per_buffer(&|b| b.bytes),
        );
        metric_owned(
            &mut out,
            "aas_gateway_sink_buffer_max_bytes",
            "gauge",
            "Each sink's buffer bound ([<sink>.buffer] max_bytes).",
            &per_buffer(&|b| b.max_bytes),
        );

        let name = "aas_gateway_end_to_end_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Source timestamp to confirmation by the sink.\n# TYPE {name} histogram"
        );
        for (sink, st) in &s.sinks {
            st.latency
                .render(&mut out, name, &format!("sink=\"{}\"", escape(sink)));
        }
        let (appended, dropped, depth, bytes, records) =
            s.outbox.as_ref().map_or((0, 0, 0, 0, 0), |o| {
                (
                    load(&o.stats.appended),
                    load(&o.stats.dropped),
                    load(&o.stats.depth),
                    load(&o.stats.bytes),
                    load(&o.stats.records),
                )
            });
        metric(
            &mut out,
            "aas_gateway_outbox_appended_total",
            "counter",
            "Values persisted in the durable outbox.",
            &[("", appended)],
        );
        metric(
            &mut out,
            "aas_gateway_outbox_dropped_total",
            "counter",
            "Values given up for some sink (sum of aas_gateway_sink_dropped_total).",
            &[("", dropped)],
        );
        metric(
            &mut out,
            "aas_gateway_outbox_records_total",
            "counter",
            "Records (dispatcher batches, one fsync each) persisted in the outbox.",
            &[("", records)],
        );
        metric(
            &mut out,
            "aas_gateway_outbox_bytes",
            "gauge",
            "Bytes of values held in the outbox file (all sinks).",
            &[("", bytes)],
        );
        metric(
            &mut out,
            "aas_gateway_outbox_depth",
            "gauge",
            "Values held in the outbox.",
            &[("", depth)],
        );
        if let Some(gk) = &self.gatekeeper {
            metric(
                &mut out,
                "aas_gateway_api_auth_failures_total",
                "counter",
                "API requests refused for a missing/invalid token or too small a role.",
                &[("", load(&gk.auth_failures))],
            );
            metric(
                &mut out,
                "aas_gateway_api_rate_limited_total",
                "counter",
                "API requests refused by the rate limit.",
                &[("", load(&gk.rate_limited))],
            );
        }
        out
    }

    /// Readiness: every source connected and no sink stalled.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let mut ready = true;
        let sources: Vec<_> = self
            .sources
            .iter()
            .map(|(name, st)| {
                let connected = st.session.is_connected();
                ready &= connected;
                json!({"name": name, "state": if connected { "connected" } else { "disconnected" },
                    // Back-pressure is visible, but not a reason to be unready: the session is fine.
                    "publishing_paused": st.is_paused()})
            })
            .collect();
        let now = Instant::now();
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        let sinks: Vec<_> = self
            .stats
            .sinks
            .iter()
            .map(|(name, st)| {
                let confirmed = st.confirmed.load(Ordering::Relaxed);
                let buffer = self.buffer(name);
                let entry = progress.entry(name.clone()).or_insert((confirmed, now));
                if confirmed != entry.0 {
                    *entry = (confirmed, now);
                }
                let state = if buffer.lag == 0 {
                    "idle"
                } else if now.duration_since(entry.1) < STALL_AFTER {
                    "delivering"
                } else {
                    "stalled"
                };
                ready &= state != "stalled";
                json!({
                    "name": name,
                    "state": state,
                    "connected": st.connected.load(Ordering::Relaxed),
                    "confirmed": confirmed,
                    "lag": buffer.lag,
                    "errors": st.errors.load(Ordering::Relaxed),
                    "retries": st.retries.load(Ordering::Relaxed),
                    "buffer": {
                        "bytes": buffer.bytes,
                        "max_bytes": buffer.max_bytes,
                        "when_full": buffer.when_full,
                        "dropping": buffer.dropping,
                        "dropped": buffer.dropped,
                    },
                })
            })
            .collect();
        (
            ready,
            json!({"ready": ready, "sources": sources, "sinks": sinks}),
        )
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let owned: Vec<(String, u64)> = samples.iter().map(|(l, v)| (l.to_string(), *v)).collect();
    metric_owned(out, name, kind, help, &owned);
}

fn metric_owned(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

async fn metrics(State(o): State<Arc<Observability>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        o.render(),
    )
        .into_response()
}

async fn ready(State(o): State<Arc<Observability>>) -> Response {
    let (ready, body) = o.readiness();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Upper bounds (seconds) of the end-to-end latency buckets.
pub const LATENCY_BUCKETS_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Latency from a value's source timestamp to the sink's confirmation, as a Prometheus
/// histogram. Lock-free (one atomic add per bucket hit), fixed size.
///
/// The source timestamp comes from the device's clock: a device clock that runs ahead or behind
/// shows up here too (values "from the future" count as 0).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [std::sync::atomic::AtomicU64; LATENCY_BUCKETS_S.len()],
    count: std::sync::atomic::AtomicU64,
    sum_micros: std::sync::atomic::AtomicU64,
}

impl LatencyHistogram {
    /// Records one value confirmed now whose source timestamp is `source_ts_nanos`.
    pub fn observe_since(&self, source_ts_nanos: i64, now_nanos: i64) {
        let micros = (now_nanos.saturating_sub(source_ts_nanos) / 1000).max(0) as u64;
        let secs = micros as f64 / 1e6;
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The current time in the nanoseconds `observe_since` expects.
    pub fn now_nanos() -> i64 {
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (b, bound) in self.buckets.iter().zip(LATENCY_BUCKETS_S) {
            cumulative += b.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_everything() {
        let h = LatencyHistogram::default();
        let now = 1_000_000_000_000;
        h.observe_since(now - 3_000_000, now); // 3 ms
        h.observe_since(now - 2_000_000_000, now); // 2 s
        h.observe_since(now - 1_000_000_000_000, now); // 1000 s: only +Inf
        h.observe_since(now + 5_000_000, now); // from the future: 0
        let mut out = String::new();
        h.render(&mut out, "x", "sink=\"s\"");
        assert!(out.contains("x_bucket{sink=\"s\",le=\"0.005\"} 2"), "{out}");
        assert!(out.contains("x_bucket{sink=\"s\",le=\"2.5\"} 3"), "{out}");
        assert!(out.contains("x_bucket{sink=\"s\",le=\"+Inf\"} 4"), "{out}");
        assert!(out.contains("x_count{sink=\"s\"} 4"), "{out}");
    }
}
