//! Observability endpoints: Prometheus `GET /metrics` and `GET /ready`.
//!
//! `/metrics` is encoded by `prometheus-client` (the Prometheus project's Rust client): the
//! gateway's families are one [`Collector`] that reads the counters the stages already keep
//! (`PipelineStats`, `SourceStats`, `SinkStats`, `OutboxStats`, the latency histograms in
//! [`crate::core::LatencyHistogram`]) when a scrape comes. The data path keeps its plain atomics,
//! and a scrape costs a few atomic loads and never takes a lock on the data path.
//!
//! Every scraper that accepts the Prometheus text format 0.0.4 gets it, Prometheus included
//! (it accepts both and would prefer OpenMetrics): that is what the Go client does by default,
//! and it keeps every series exactly as before (OpenMetrics writes histogram bounds as
//! `le="1.0"` where the text format writes `le="1"`, which a Prometheus before 3.0 would store as
//! new series). A client that accepts only OpenMetrics gets OpenMetrics 1.0. Both carry the same
//! sample names (`…_total` for counters) and labels.

#![warn(missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use serde_json::json;

use crate::api::gatekeeper::Gatekeeper;
use crate::core::LatencySnapshot;
use crate::outbox::{OutboxStats, SinkBufferStatus};
use crate::sinks::SinkStats;
use crate::sources::SourceStats;
use crate::stats::PipelineStats;

/// A sink that has values waiting but confirmed none for this long is reported as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(30);

/// `Content-Type` of the OpenMetrics 1.0 text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (`text/plain; version=0.0.4`): for every client that
    /// accepts it.
    PrometheusText,
    /// OpenMetrics 1.0 text (`application/openmetrics-text`): for a client that accepts only it.
    OpenMetrics,
}

impl Format {
    /// The format for a request's `Accept` header values: the Prometheus text format when the
    /// client accepts it (`text/plain`, `text/*`, `*/*` or no `Accept` at all), else OpenMetrics
    /// when it accepts that, else the Prometheus text format anyway (as the Go client does,
    /// rather than a 406). A media range with `q=0` is refused, as HTTP says.
    pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Format {
        let mut ranges = Vec::new();
        for range in accept.into_iter().flat_map(|v| v.split(',')) {
            let mut params = range.split(';').map(str::trim);
            let kind = params.next().unwrap_or_default().to_ascii_lowercase();
            let refused = params.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if !kind.is_empty() && !refused {
                ranges.push(kind);
            }
        }
        let accepts = |kinds: &[&str]| ranges.iter().any(|r| kinds.contains(&r.as_str()));
        if ranges.is_empty() || accepts(&["text/plain", "text/*", "*/*"]) {
            Format::PrometheusText
        } else if accepts(&["application/openmetrics-text", "application/*"]) {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::PrometheusText => PROMETHEUS_TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// What a scrape reads: the counters the stages keep. The registry's only collector, and the
/// input of `/ready`.
#[derive(Debug)]
struct Counters {
    stats: Arc<PipelineStats>,
    sources: Vec<(String, Arc<SourceStats>)>,
    gatekeeper: Option<Arc<Gatekeeper>>,
}

/// State of the observability endpoints.
pub struct Observability {
    counters: Arc<Counters>,
    registry: Registry,
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
        let counters = Arc::new(Counters {
            stats,
            sources,
            gatekeeper,
        });
        let mut registry = Registry::default();
        registry.register_collector(Box::new(counters.clone()));
        Arc::new(Observability {
            counters,
            registry,
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

    /// Renders every metric in `format`. Fails only if a value cannot be encoded (none of ours).
    pub fn render(&self, format: Format) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8192);
        match format {
            Format::PrometheusText => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)?
            }
        }
        Ok(out)
    }

    /// Readiness: every source connected and no sink stalled.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let mut ready = true;
        let sources: Vec<_> = self
            .counters
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
            .counters
            .stats
            .sinks
            .iter()
            .map(|(name, st)| {
                let confirmed = st.confirmed.load(Ordering::Relaxed);
                let buffer = self.counters.buffer(name);
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

impl Counters {
    fn buffer(&self, sink: &str) -> SinkBufferStatus {
        self.stats
            .outbox
            .as_ref()
            .and_then(|o| o.sink_status(sink))
            .unwrap_or_default()
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// How a family's samples are typed.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// The samples of one family.
enum Samples<'a> {
    /// One sample without labels.
    One(u64),
    /// One sample per `(label value, value)`, under the label named by the first field.
    Labelled(&'static str, Vec<(&'a str, u64)>),
}

/// Writes one family. `name` is the sample name users see (and their dashboards query): for a
/// counter it ends in `_total`, which prometheus-client appends by itself, so it is cut off here
/// (OpenMetrics names the family without it; the Prometheus text format with it). A family
/// without samples (no source configured) is left out, as prometheus-client's own registry does.
/// A latency histogram family in seconds, one histogram per sink (nothing without sinks).
fn latency_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    per_sink: &[(&str, LatencySnapshot)],
) -> std::fmt::Result {
    if per_sink.is_empty() {
        return Ok(());
    }
    let mut metric =
        enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (sink, h) in per_sink {
        metric
            .encode_family(&[("sink", *sink)])?
            .encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
    }
    Ok(())
}

fn family(
    enc: &mut DescriptorEncoder,
    kind: Kind,
    name: &str,
    help: &str,
    samples: Samples,
) -> std::fmt::Result {
    if matches!(&samples, Samples::Labelled(_, v) if v.is_empty()) {
        return Ok(());
    }
    let (name, metric_type) = match kind {
        Kind::Counter => (
            name.strip_suffix("_total")
                .expect("counter names end in _total"),
            MetricType::Counter,
        ),
        Kind::Gauge => (name, MetricType::Gauge),
    };
    let mut metric = enc.encode_descriptor(name, help, None, metric_type)?;
    // Gauges are counts and flags, far below i64::MAX; clamped so that encoding cannot fail.
    let value = |m: MetricEncoder, v: u64| match kind {
        Kind::Counter => ConstCounter::new(v).encode(m),
        Kind::Gauge => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m),
    };
    match samples {
        Samples::One(v) => value(metric, v),
        Samples::Labelled(key, values) => {
            for (label, v) in values {
                value(metric.encode_family(&[(key, label)])?, v)?;
            }
            Ok(())
        }
    }
}

impl Collector for Counters {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        use Kind::{Counter, Gauge};
        use Samples::One;
        let enc = &mut enc;
        let s = &self.stats;
        family(
            enc,
            Counter,
            "aas_gateway_readings_total",
            "Values received from all OPC UA sources.",
            One(load(&s.readings)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_updates_total",
            "Values mapped onto submodel elements.",
            One(load(&s.updates)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_conversion_errors_total",
            "Values that did not fit the mapped element's type.",
            One(load(&s.conversion_errors)),
        )?;

        let per_source = |f: fn(&SourceStats) -> u64| {
            Samples::Labelled(
                "source",
                self.sources
                    .iter()
                    .map(|(n, st)| (n.as_str(), f(st)))
                    .collect(),
            )
        };
        family(
            enc,
            Counter,
            "aas_gateway_source_notifications_total",
            "Data change notifications received, per source.",
            per_source(|st| load(&st.notifications)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_source_reconnects_total",
            "Reconnects of the OPC UA session, per source.",
            per_source(|st| load(&st.reconnects)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_source_sequence_gaps_total",
            "Notification messages lost between server and gateway, per source.",
            per_source(|st| load(&st.sequence_gaps)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_source_keep_alives_total",
            "Keep-alive publish responses (no data), per source.",
            per_source(|st| load(&st.keep_alives)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_source_overflows_total",
            "Values flagged with the overflow bit (the server's item queue dropped values), per source.",
            per_source(|st| load(&st.overflows)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_source_stalls_total",
            "Times the server sent neither data nor keep-alive within the silence timeout, per source.",
            per_source(|st| load(&st.stalls)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_source_publishing_pauses_total",
            "Times publishing was paused because the pipeline was saturated, per source.",
            per_source(|st| load(&st.publishing_pauses)),
        )?;
        family(
            enc,
            Gauge,
            "aas_gateway_source_publishing_paused",
            "1 while the source's publishing is paused by back-pressure.",
            per_source(|st| load(&st.publishing_paused)),
        )?;
        family(
            enc,
            Gauge,
            "aas_gateway_source_handoff_waiting",
            "Values waiting between the source and the pipeline.",
            per_source(|st| load(&st.handoff_waiting)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_source_handoff_dropped_total",
            "Values dropped between the source and the pipeline (a server ignoring the pause, or stop), per source.",
            per_source(|st| load(&st.handoff_dropped)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_source_unconvertible_total",
            "Values with no typed form (e.g. DiagnosticInfo), per source.",
            per_source(|st| load(&st.unconvertible)),
        )?;
        family(
            enc,
            Gauge,
            "aas_gateway_source_connected",
            "1 when the source's OPC UA session is connected.",
            per_source(|st| st.session.is_connected() as u64),
        )?;

        let per_sink = |f: fn(&SinkStats) -> u64| {
            Samples::Labelled(
                "sink",
                s.sinks.iter().map(|(n, st)| (n.as_str(), f(st))).collect(),
            )
        };
        let per_buffer = |f: fn(&SinkBufferStatus) -> u64| {
            Samples::Labelled(
                "sink",
                s.sinks
                    .iter()
                    .map(|(n, _)| (n.as_str(), f(&self.buffer(n))))
                    .collect(),
            )
        };
        family(
            enc,
            Counter,
            "aas_gateway_sink_received_total",
            "Values handed to each sink.",
            per_sink(|st| load(&st.received)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_sink_confirmed_total",
            "Values each sink's far side confirmed (MQTT PUBACK, ILP HTTP 2xx).",
            per_sink(|st| load(&st.confirmed)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_sink_errors_total",
            "Failed delivery attempts per sink (each is retried).",
            per_sink(|st| load(&st.errors)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_sink_retries_total",
            "Messages sent again because their confirmation did not come (timeout, reconnect).",
            per_sink(|st| load(&st.retries)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_sink_rejected_total",
            "Values a sink's far side cannot take (logged and skipped).",
            per_sink(|st| load(&st.rejected)),
        )?;
        family(
            enc,
            Gauge,
            "aas_gateway_sink_connected",
            "1 while the sink is connected to its far side.",
            per_sink(|st| st.connected.load(Ordering::Relaxed) as u64),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_sink_dropped_total",
            "Values a sink lost because it fell past its buffer bound (its oldest values).",
            per_buffer(|b| b.dropped),
        )?;
        family(
            enc,
            Gauge,
            "aas_gateway_outbox_lag",
            "Values in the outbox not yet confirmed by each sink.",
            per_buffer(|b| b.lag),
        )?;
        family(
            enc,
            Gauge,
            "aas_gateway_sink_buffer_bytes",
            "Bytes of outbox records waiting for each sink.",
            per_buffer(|b| b.bytes),
        )?;
        family(
            enc,
            Gauge,
            "aas_gateway_sink_buffer_max_bytes",
            "Each sink's buffer bound ([<sink>.buffer] max_bytes).",
            per_buffer(|b| b.max_bytes),
        )?;

        // Named with their unit: the samples are `aas_gateway_end_to_end_latency_seconds_*`.
        let end_to_end: Vec<_> = s
            .sinks
            .iter()
            .map(|(sink, st)| (sink.as_str(), st.latency.snapshot()))
            .collect();
        latency_family(
            enc,
            "aas_gateway_end_to_end_latency",
            "Source timestamp to confirmation by the sink.",
            &end_to_end,
        )?;
        // The gateway's own share of it, apart from the device's publishing interval.
        let added: Vec<_> = s
            .outbox
            .iter()
            .flat_map(|o| {
                s.sinks.iter().filter_map(|(sink, _)| {
                    Some((sink.as_str(), o.added_latency(sink)?.snapshot()))
                })
            })
            .collect();
        latency_family(
            enc,
            "aas_gateway_sink_added_latency",
            "Arrival of a value's OPC UA response at the gateway to confirmation by the sink.",
            &added,
        )?;

        let outbox = |f: fn(&OutboxStats) -> u64| One(s.outbox.as_ref().map_or(0, |o| f(&o.stats)));
        family(
            enc,
            Counter,
            "aas_gateway_outbox_appended_total",
            "Values persisted in the durable outbox.",
            outbox(|o| load(&o.appended)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_outbox_dropped_total",
            "Values given up for some sink (sum of aas_gateway_sink_dropped_total).",
            outbox(|o| load(&o.dropped)),
        )?;
        family(
            enc,
            Counter,
            "aas_gateway_outbox_records_total",
            "Records (dispatcher batches, one fsync each) persisted in the outbox.",
            outbox(|o| load(&o.records)),
        )?;
        family(
            enc,
            Gauge,
            "aas_gateway_outbox_bytes",
            "Bytes of values held in the outbox file (all sinks).",
            outbox(|o| load(&o.bytes)),
        )?;
        family(
            enc,
            Gauge,
            "aas_gateway_outbox_depth",
            "Values held in the outbox.",
            outbox(|o| load(&o.depth)),
        )?;
        if let Some(gk) = &self.gatekeeper {
            family(
                enc,
                Counter,
                "aas_gateway_api_auth_failures_total",
                "API requests refused for a missing/invalid token or too small a role.",
                One(load(&gk.auth_failures)),
            )?;
            family(
                enc,
                Counter,
                "aas_gateway_api_rate_limited_total",
                "API requests refused by the rate limit.",
                One(load(&gk.rate_limited)),
            )?;
        }
        Ok(())
    }
}

/// `GET /metrics`: the format the scraper's `Accept` asks for.
async fn metrics(State(o): State<Arc<Observability>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    match o.render(format) {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(_) => {
            tracing::error!("could not encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family users' dashboards know, with its type, as the Prometheus text format names
    /// it (the sample names; OpenMetrics names counter families without `_total`).
    const FAMILIES: &[(&str, &str)] = &[
        ("aas_gateway_readings_total", "counter"),
        ("aas_gateway_updates_total", "counter"),
        ("aas_gateway_conversion_errors_total", "counter"),
        ("aas_gateway_source_notifications_total", "counter"),
        ("aas_gateway_source_reconnects_total", "counter"),
        ("aas_gateway_source_sequence_gaps_total", "counter"),
        ("aas_gateway_source_keep_alives_total", "counter"),
        ("aas_gateway_source_overflows_total", "counter"),
        ("aas_gateway_source_stalls_total", "counter"),
        ("aas_gateway_source_publishing_pauses_total", "counter"),
        ("aas_gateway_source_publishing_paused", "gauge"),
        ("aas_gateway_source_handoff_waiting", "gauge"),
        ("aas_gateway_source_handoff_dropped_total", "counter"),
        ("aas_gateway_source_unconvertible_total", "counter"),
        ("aas_gateway_source_connected", "gauge"),
        ("aas_gateway_sink_received_total", "counter"),
        ("aas_gateway_sink_confirmed_total", "counter"),
        ("aas_gateway_sink_errors_total", "counter"),
        ("aas_gateway_sink_retries_total", "counter"),
        ("aas_gateway_sink_rejected_total", "counter"),
        ("aas_gateway_sink_connected", "gauge"),
        ("aas_gateway_sink_dropped_total", "counter"),
        ("aas_gateway_outbox_lag", "gauge"),
        ("aas_gateway_sink_buffer_bytes", "gauge"),
        ("aas_gateway_sink_buffer_max_bytes", "gauge"),
        ("aas_gateway_end_to_end_latency_seconds", "histogram"),
        ("aas_gateway_outbox_appended_total", "counter"),
        ("aas_gateway_outbox_dropped_total", "counter"),
        ("aas_gateway_outbox_records_total", "counter"),
        ("aas_gateway_outbox_bytes", "gauge"),
        ("aas_gateway_outbox_depth", "gauge"),
    ];

    /// Two sinks (one with a name that needs escaping), one source, no outbox.
    fn observability() -> Arc<Observability> {
        let mqtt = SinkStats::default();
        mqtt.received.store(5, Ordering::Relaxed);
        mqtt.confirmed.store(3, Ordering::Relaxed);
        let now = 1_000_000_000_000;
        mqtt.latency.observe_since(now - 3_000_000, now); // 3 ms
        mqtt.latency.observe_since(now - 2_000_000_000, now); // 2 s
        mqtt.latency.observe_since(now - 1_000_000_000_000, now); // 1000 s: only +Inf
        let odd = SinkStats::default();
        odd.errors.store(2, Ordering::Relaxed);
        let source = SourceStats::default();
        source.notifications.store(7, Ordering::Relaxed);
        let stats = PipelineStats {
            readings: AtomicU64::new(11),
            sinks: vec![
                ("mqtt".into(), Arc::new(mqtt)),
                ("a\"b\\c\nd".into(), Arc::new(odd)),
            ],
            ..Default::default()
        };
        Observability::new(
            Arc::new(stats),
            vec![("sim".into(), Arc::new(source))],
            None,
        )
    }

    #[test]
    fn prometheus_text_keeps_every_name_type_and_value() {
        let text = observability().render(Format::PrometheusText).unwrap();
        for (name, kind) in FAMILIES {
            assert!(
                text.contains(&format!("\n# TYPE {name} {kind}\n"))
                    || text.starts_with(&format!("# HELP {name} ")),
                "{name} {kind} missing:\n{text}"
            );
        }
        for line in [
            "# HELP aas_gateway_readings_total Values received from all OPC UA sources.",
            "aas_gateway_readings_total 11",
            "aas_gateway_source_notifications_total{source=\"sim\"} 7",
            "aas_gateway_source_connected{source=\"sim\"} 0",
            "aas_gateway_sink_received_total{sink=\"mqtt\"} 5",
            "aas_gateway_sink_confirmed_total{sink=\"mqtt\"} 3",
            // Label values are escaped as the format requires.
            "aas_gateway_sink_errors_total{sink=\"a\\\"b\\\\c\\nd\"} 2",
            // Buckets are cumulative, `le` as Prometheus' Go client writes it.
            "aas_gateway_end_to_end_latency_seconds_bucket{sink=\"mqtt\",le=\"0.005\"} 1",
            "aas_gateway_end_to_end_latency_seconds_bucket{sink=\"mqtt\",le=\"1\"} 1",
            "aas_gateway_end_to_end_latency_seconds_bucket{sink=\"mqtt\",le=\"2.5\"} 2",
            "aas_gateway_end_to_end_latency_seconds_bucket{sink=\"mqtt\",le=\"300\"} 2",
            "aas_gateway_end_to_end_latency_seconds_bucket{sink=\"mqtt\",le=\"+Inf\"} 3",
            "aas_gateway_end_to_end_latency_seconds_count{sink=\"mqtt\"} 3",
            "aas_gateway_end_to_end_latency_seconds_sum{sink=\"mqtt\"} 1002.003",
            "aas_gateway_outbox_depth 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // No API families without a gatekeeper, one `+Inf` bucket per sink, no OpenMetrics EOF.
        assert!(!text.contains("aas_gateway_api_"), "{text}");
        assert_eq!(text.matches("le=\"+Inf\"").count(), 2, "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let text = observability().render(Format::OpenMetrics).unwrap();
        for line in [
            "# HELP aas_gateway_readings Values received from all OPC UA sources.",
            "# TYPE aas_gateway_readings counter",
            "aas_gateway_readings_total 11",
            "# TYPE aas_gateway_end_to_end_latency_seconds histogram",
            "# UNIT aas_gateway_end_to_end_latency_seconds seconds",
            "aas_gateway_end_to_end_latency_seconds_bucket{le=\"1.0\",sink=\"mqtt\"} 1",
            "aas_gateway_sink_errors_total{sink=\"a\\\"b\\\\c\\nd\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.ends_with("\n# EOF\n"), "{text}");
    }

    #[test]
    fn accept_header_chooses_the_format() {
        use Format::{OpenMetrics, PrometheusText};
        // What Prometheus 2.x/3.x sends by default: it accepts the text format, so it gets it
        // (its series stay as they were).
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, format) in [
            (vec![prometheus], PrometheusText),
            (vec![], PrometheusText),
            (vec![""], PrometheusText),
            (vec!["*/*"], PrometheusText),
            (vec!["text/plain;version=0.0.4"], PrometheusText),
            (vec!["application/json"], PrometheusText),
            (
                vec!["application/openmetrics-text; version=1.0.0"],
                OpenMetrics,
            ),
            (
                vec!["application/json", "Application/OpenMetrics-Text"],
                OpenMetrics,
            ),
            (
                vec!["application/openmetrics-text, text/plain;q=0"],
                OpenMetrics,
            ),
            (vec!["application/openmetrics-text;q=0"], PrometheusText),
        ] {
            assert_eq!(Format::negotiate(accept.clone()), format, "{accept:?}");
        }
    }
}
