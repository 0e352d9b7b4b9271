//! `/metrics` as Prometheus reads it, after real traffic: the gateway binary with the bundled
//! simulator, mosquitto and VictoriaMetrics (ILP) as its sinks. Each scrape is parsed by the
//! Prometheus project's own Python parsers (`tests/validators/check_metrics.py`: the strict
//! OpenMetrics parser for `application/openmetrics-text`, the text-format parser for
//! `text/plain; version=0.0.4`), and the families, their labels and values are checked against
//! what the peers received.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use aas_gateway::core::{ADDED_LATENCY_BUCKETS_S, LATENCY_BUCKETS_S};
use aas_gateway::security::tokens::{generate_token, hash_token};
use common::cnc;
use common::*;

/// What Prometheus sends by default: it prefers OpenMetrics but accepts the text format, and gets
/// the text format (its series stay as they were).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// A client that takes only OpenMetrics.
const OPENMETRICS_ACCEPT: &str = "application/openmetrics-text; version=1.0.0";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every family, as both parsers name it (counters without `_total`), with its type and the
/// label its samples carry (`""`: one sample without labels).
const FAMILIES: &[(&str, &str, &str)] = &[
    ("aas_gateway_readings", "counter", ""),
    ("aas_gateway_updates", "counter", ""),
    ("aas_gateway_conversion_errors", "counter", ""),
    ("aas_gateway_source_notifications", "counter", "source"),
    ("aas_gateway_source_reconnects", "counter", "source"),
    ("aas_gateway_source_sequence_gaps", "counter", "source"),
    ("aas_gateway_source_keep_alives", "counter", "source"),
    ("aas_gateway_source_overflows", "counter", "source"),
    ("aas_gateway_source_stalls", "counter", "source"),
    ("aas_gateway_source_publishing_pauses", "counter", "source"),
    ("aas_gateway_source_publishing_paused", "gauge", "source"),
    ("aas_gateway_source_handoff_waiting", "gauge", "source"),
    ("aas_gateway_source_handoff_dropped", "counter", "source"),
    ("aas_gateway_source_unconvertible", "counter", "source"),
    ("aas_gateway_source_connected", "gauge", "source"),
    ("aas_gateway_sink_received", "counter", "sink"),
    ("aas_gateway_sink_confirmed", "counter", "sink"),
    ("aas_gateway_sink_errors", "counter", "sink"),
    ("aas_gateway_sink_retries", "counter", "sink"),
    ("aas_gateway_sink_rejected", "counter", "sink"),
    ("aas_gateway_sink_connected", "gauge", "sink"),
    ("aas_gateway_sink_dropped", "counter", "sink"),
    ("aas_gateway_outbox_lag", "gauge", "sink"),
    ("aas_gateway_sink_buffer_bytes", "gauge", "sink"),
    ("aas_gateway_sink_buffer_max_bytes", "gauge", "sink"),
    (
        "aas_gateway_end_to_end_latency_seconds",
        "histogram",
        "sink",
    ),
    (
        "aas_gateway_sink_added_latency_seconds",
        "histogram",
        "sink",
    ),
    ("aas_gateway_outbox_appended", "counter", ""),
    ("aas_gateway_outbox_dropped", "counter", ""),
    ("aas_gateway_outbox_records", "counter", ""),
    ("aas_gateway_outbox_bytes", "gauge", ""),
    ("aas_gateway_outbox_depth", "gauge", ""),
    ("aas_gateway_api_auth_failures", "counter", ""),
    ("aas_gateway_api_rate_limited", "counter", ""),
];

const SINKS: [&str; 2] = ["mqtt", "questdb"];

/// One family as the Python parser returned it.
#[derive(Debug, serde::Deserialize)]
struct Family {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    help: String,
    samples: Vec<Sample>,
}

#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape: its families by name.
struct Scrape {
    families: BTreeMap<String, Family>,
}

impl Scrape {
    /// The value of the sample `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.families
            .values()
            .flat_map(|f| &f.samples)
            .find(|s| s.name == name && s.labels == want)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
            .value
    }

    /// Every sample as (name, labels with `le` as a number) → value, to compare two formats
    /// (OpenMetrics writes `le="1.0"`, the text format `le="1"`).
    fn samples(&self) -> BTreeMap<(String, Vec<(String, String)>), f64> {
        let mut out = BTreeMap::new();
        for s in self.families.values().flat_map(|f| &f.samples) {
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v.parse::<f64>()) {
                        ("le", Ok(le)) => le.to_string(),
                        _ => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect();
            out.insert((s.name.clone(), labels), s.value);
        }
        out
    }
}

/// `GET /metrics` with `accept` (none when `None`): the content type and the parsed body.
async fn scrape(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    accept: Option<&str>,
) -> (String, Scrape) {
    let mut req = http.get(format!("{base}/metrics")).bearer_auth(token);
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    let body = resp.text().await.unwrap();
    (content_type.clone(), parse(&content_type, &body))
}

/// Parses `body` with the Prometheus project's Python parser for `content_type`.
fn parse(content_type: &str, body: &str) -> Scrape {
    let mut child = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/validators/check_metrics.py"))
        .arg(content_type)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tests/validators/check_metrics.py (.ci/peers.sh install)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics ({content_type}): {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: Vec<Family> = serde_json::from_slice(&out.stdout).unwrap();
    let mut by_name = BTreeMap::new();
    for f in families {
        let name = f.name.clone();
        assert!(
            by_name.insert(name.clone(), f).is_none(),
            "family {name} twice in {content_type}:\n{body}"
        );
    }
    Scrape { families: by_name }
}

/// Every expected family is there with its type, a HELP text and exactly the expected label
/// sets; no other family is.
fn check_families(scrape: &Scrape, format: &str) {
    let names: BTreeSet<&str> = scrape.families.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = FAMILIES.iter().map(|f| f.0).collect();
    assert_eq!(names, expected, "families in {format}");
    for (name, kind, label) in FAMILIES {
        let family = &scrape.families[*name];
        assert_eq!(family.kind, *kind, "type of {name} in {format}");
        assert!(!family.help.is_empty(), "HELP of {name} in {format}");
        let want: BTreeSet<Vec<(String, String)>> = match *label {
            "" => [vec![]].into(),
            "source" => [vec![("source".to_string(), "sim".to_string())]].into(),
            _ => SINKS
                .iter()
                .map(|s| vec![("sink".to_string(), s.to_string())])
                .collect(),
        };
        let got: BTreeSet<Vec<(String, String)>> = family
            .samples
            .iter()
            .map(|s| {
                s.labels
                    .iter()
                    .filter(|(k, _)| *k != "le")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .collect();
        assert_eq!(got, want, "label sets of {name} in {format}");
    }
}

/// Per sink: the histograms have every bound, cumulative counts, `+Inf` = `_count` = the
/// values the sink confirmed (end to end, counted with the confirmation); the gateway-added
/// latency, counted when the outbox takes the confirmation a moment later, has at most that many.
fn check_latency(scrape: &Scrape, format: &str) {
    check_histogram(
        scrape,
        format,
        "aas_gateway_end_to_end_latency_seconds",
        &LATENCY_BUCKETS_S,
        true,
    );
    check_histogram(
        scrape,
        format,
        "aas_gateway_sink_added_latency_seconds",
        &ADDED_LATENCY_BUCKETS_S,
        false,
    );
}

fn check_histogram(scrape: &Scrape, format: &str, name: &str, want_bounds: &[f64], exact: bool) {
    for sink in SINKS {
        let confirmed = scrape.value("aas_gateway_sink_confirmed_total", &[("sink", sink)]);
        let count = scrape.value(&format!("{name}_count"), &[("sink", sink)]);
        if exact {
            assert_eq!(
                count, confirmed,
                "{sink}: {name} count vs confirmed ({format})"
            );
        } else {
            assert!(
                count > 0.0 && count <= confirmed,
                "{sink}: {name} count {count} vs confirmed {confirmed} ({format})"
            );
        }
        let buckets: Vec<(f64, f64)> = scrape.families[name]
            .samples
            .iter()
            .filter(|s| s.name == format!("{name}_bucket") && s.labels["sink"] == sink)
            .map(|s| (s.labels["le"].parse::<f64>().unwrap(), s.value))
            .collect();
        let bounds: Vec<f64> = buckets.iter().map(|b| b.0).collect();
        let mut want = want_bounds.to_vec();
        want.push(f64::INFINITY);
        assert_eq!(bounds, want, "{sink}: bucket bounds ({format})");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{sink}: buckets not cumulative ({format}): {buckets:?}"
        );
        assert_eq!(buckets.last().unwrap().1, count, "{sink}: +Inf vs count");
        let sum = scrape.value(&format!("{name}_sum"), &[("sink", sink)]);
        assert!(sum >= 0.0 && sum.is_finite(), "{sink}: sum {sum}");
    }
}

fn config(
    endpoint: &str,
    mqtt_port: u16,
    ilp_conf: &str,
    dir: &std::path::Path,
    reader: &str,
) -> String {
    let mut s = format!(
        r#"
[gateway]
name = "metrics-{mqtt_port}"
[api]
listen = "127.0.0.1:0"
rate_limit_per_s = 0
[[api.auth.tokens]]
name = "prometheus"
role = "reader"
sha256 = "{reader}"
[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]
[[opcua]]
name = "sim"
endpoint = "{endpoint}"
publishing_interval_ms = 100
sampling_interval_ms = 0
queue_size = 20
pki_dir = "{pki}"
[outbox]
dir = "outbox"
[mqtt]
port = {mqtt_port}
topic_prefix = "t"
[questdb]
enabled = true
conf = "{ilp_conf}"
# Ten minutes and a million rows: the sinks must still settle within the test's 30 s,
# since rows are flushed as soon as nothing more waits in the outbox.
flush_interval_ms = 600000
flush_rows = 1000000
"#,
        reader = hash_token(reader),
        root = repo_root().display(),
        pki = dir.join("pki").display(),
    );
    for node in cnc::NODES {
        s += &format!(
            "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:cnc;s=CNC1.{node}\"\nsubmodel = \"{}\"\npath = \"{node}\"\n",
            cnc::SUBMODEL
        );
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_with_the_prometheus_parsers_after_real_traffic() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_sim(dir.path(), 100).await;
    let collector = MqttCollector::start(broker.port, "t/#").await;
    let reader = generate_token().unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        config(
            &sim.endpoint_url(),
            broker.port,
            &vm.ilp_conf(),
            dir.path(),
            &reader,
        ),
    )
    .unwrap();
    let (_gateway, api) = spawn_gateway(&cfg, &dir.path().join("gateway.log"));
    let base = format!("http://{api}");
    let http = reqwest::Client::new();

    // One refused scrape: counted in aas_gateway_api_auth_failures_total.
    let r = http
        .get(format!("{base}/metrics"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Values flow through both sinks; every source and sink is connected.
    let t0 = tokio::time::Instant::now();
    loop {
        let (content_type, s) = scrape(&http, &base, &reader, Some(OPENMETRICS_ACCEPT)).await;
        assert_eq!(content_type, OPENMETRICS);
        let flowing = SINKS.iter().all(|sink| {
            s.value("aas_gateway_sink_confirmed_total", &[("sink", sink)]) >= 30.0
                && s.value("aas_gateway_sink_connected", &[("sink", sink)]) == 1.0
        }) && s.value("aas_gateway_source_connected", &[("source", "sim")]) == 1.0;
        if flowing {
            check_families(&s, "OpenMetrics while running");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "values did not reach both sinks; gateway log:\n{}",
            std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Stop the values and let both sinks confirm everything: the counters then stand still.
    sim.stop().await;
    let t0 = tokio::time::Instant::now();
    let mut last = None;
    let (text, received) = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (content_type, s) = scrape(&http, &base, &reader, Some(PROMETHEUS_ACCEPT)).await;
        assert_eq!(content_type, TEXT, "what Prometheus gets");
        let received = collector
            .snapshot()
            .iter()
            .filter(|(t, _)| t.starts_with("t/CNC1/"))
            .count();
        let now: Vec<f64> = SINKS
            .iter()
            .flat_map(|sink| {
                [
                    s.value("aas_gateway_sink_confirmed_total", &[("sink", sink)]),
                    s.value("aas_gateway_outbox_lag", &[("sink", sink)]),
                ]
            })
            .chain([received as f64])
            .collect();
        let settled = SINKS
            .iter()
            .all(|sink| s.value("aas_gateway_outbox_lag", &[("sink", sink)]) == 0.0);
        if settled && last.as_ref() == Some(&now) {
            break (s, received as f64);
        }
        last = Some(now);
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the sinks did not settle: {last:?}"
        );
    };
    let (content_type, open) = scrape(&http, &base, &reader, Some(OPENMETRICS_ACCEPT)).await;
    assert_eq!(content_type, OPENMETRICS);
    // Without `Accept` (curl): the text format.
    assert_eq!(scrape(&http, &base, &reader, None).await.0, TEXT);

    for (scrape, format) in [(&text, "text 0.0.4"), (&open, "OpenMetrics")] {
        check_families(scrape, format);
        check_latency(scrape, format);
        // The counters agree with each other and with what the peers received.
        let appended = scrape.value("aas_gateway_outbox_appended_total", &[]);
        assert!(appended >= 30.0, "too few values to compare: {appended}");
        assert_eq!(scrape.value("aas_gateway_updates_total", &[]), appended);
        assert_eq!(
            scrape.value("aas_gateway_readings_total", &[]),
            scrape.value(
                "aas_gateway_source_notifications_total",
                &[("source", "sim")]
            )
        );
        assert_eq!(
            scrape.value("aas_gateway_sink_confirmed_total", &[("sink", "mqtt")]),
            received,
            "MQTT confirmed vs what the subscriber received ({format})"
        );
        for sink in SINKS {
            let labels = [("sink", sink)];
            for name in [
                "aas_gateway_sink_received_total",
                "aas_gateway_sink_confirmed_total",
            ] {
                assert_eq!(
                    scrape.value(name, &labels),
                    appended,
                    "{name} {sink} ({format})"
                );
            }
            for name in [
                "aas_gateway_sink_errors_total",
                "aas_gateway_sink_rejected_total",
                "aas_gateway_sink_dropped_total",
                "aas_gateway_outbox_lag",
            ] {
                assert_eq!(scrape.value(name, &labels), 0.0, "{name} {sink} ({format})");
            }
            assert!(scrape.value("aas_gateway_sink_buffer_max_bytes", &labels) > 0.0);
        }
        assert_eq!(
            scrape.value("aas_gateway_conversion_errors_total", &[]),
            0.0
        );
        assert_eq!(scrape.value("aas_gateway_outbox_dropped_total", &[]), 0.0);
        assert!(scrape.value("aas_gateway_outbox_records_total", &[]) >= 1.0);
        assert_eq!(
            scrape.value("aas_gateway_api_auth_failures_total", &[]),
            1.0
        );
        assert_eq!(scrape.value("aas_gateway_api_rate_limited_total", &[]), 0.0);
    }

    // Both formats carry the same samples and HELP texts (the source's counters may still move:
    // it keeps reconnecting to the stopped simulator).
    let stable = |s: &Scrape| {
        s.samples()
            .into_iter()
            .filter(|((name, _), _)| !name.starts_with("aas_gateway_source_"))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(stable(&text), stable(&open), "text 0.0.4 vs OpenMetrics");
    for (name, family) in &text.families {
        assert_eq!(family.help, open.families[name].help, "HELP of {name}");
    }
}
