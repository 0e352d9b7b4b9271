//! End to end on real peers: bundled simulator → gateway → mosquitto + VictoriaMetrics (ILP) + API.
//! Every value the simulator produced inside the observation window must arrive in MQTT and in
//! the ILP server with the same value and the same source timestamp, and the API must serve them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aas_gateway::config::Config;
use aas_gateway::pipeline::Gateway;
use common::*;
use opcua::types::Variant;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// The CNC nodes the test maps, and the element each one feeds.
const NODES: &[(&str, &str)] = &[
    ("SpindleSpeed", "SpindleSpeed"),
    ("SpindleLoad", "SpindleLoad"),
    ("FeedRate", "FeedRate"),
    ("AxisPositions", "AxisPositions"),
    ("ProgramName", "ProgramName"),
    ("PartCount", "PartCount"),
    ("ExecutionState", "ExecutionState"),
    ("AlarmCode", "AlarmCode"),
    ("Running", "Running"),
    ("LastCycleEnd", "LastCycleEnd"),
];
const SUBMODEL: &str = "urn:aas-gateway:sim:sm:cnc1:operational-data";

/// The JSON value the simulator's variant must appear as — written independently of the
/// gateway's own conversion code.
fn expected_json(v: &Variant) -> Value {
    match v {
        Variant::Double(f) => json!(f),
        Variant::Float(f) => json!(f),
        Variant::Int32(i) => json!(i),
        Variant::UInt32(u) => json!(u),
        Variant::UInt16(u) => json!(u),
        Variant::Boolean(b) => json!(b),
        Variant::String(s) => json!(s.as_ref()),
        Variant::DateTime(dt) => json!(dt
            .as_chrono()
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        Variant::Array(a) => Value::Array(a.values.iter().map(expected_json).collect()),
        other => panic!("test does not expect {other:?}"),
    }
}

fn config_toml(endpoint: &str, mqtt_port: u16, ilp_conf: &str) -> String {
    let mut s = format!(
        r#"
[gateway]
name = "e2e-gateway"
[api]
listen = "127.0.0.1:0"
[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]
[[opcua]]
name = "sim"
endpoint = "{endpoint}"
publishing_interval_ms = 100
sampling_interval_ms = 0
queue_size = 20
pki_dir = "{pki}"
[mqtt]
port = {mqtt_port}
topic_prefix = "e2e"
[questdb]
enabled = true
conf = "{ilp_conf}"
flush_interval_ms = 200
"#,
        root = repo_root().display(),
        pki = std::env::temp_dir().join("aas-gateway-e2e-pki").display(),
    );
    for (node, path) in NODES {
        s += &format!(
            "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:cnc;s=CNC1.{node}\"\nsubmodel = \"{SUBMODEL}\"\npath = \"{path}\"\n"
        );
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_arrive_exactly_in_mqtt_ilp_and_api() {
    let broker = Mosquitto::start();
    let ilp = VictoriaMetrics::start();
    let sim = opcua_sim::Simulator::start(opcua_sim::SimOptions {
        port: 0,
        tick_ms: 200,
        pki_dir: std::env::temp_dir().join("aas-gateway-e2e-sim-pki"),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut changes = sim.subscribe_changes();
    let collector = MqttCollector::start(broker.port, "e2e/#").await;

    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg_path,
        config_toml(&sim.endpoint_url(), broker.port, &ilp.ilp_conf()),
    )
    .unwrap();
    let cfg = Config::load(&cfg_path).unwrap();
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(cfg, shutdown.clone()).await.unwrap();
    let api = format!("http://{}/api/v3.0", gateway.api_addr.unwrap());

    // Wait for the first value to arrive, then observe a window of several seconds.
    let t0 = tokio::time::Instant::now();
    while collector.snapshot().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no MQTT message within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let window_start = chrono::Utc::now().timestamp_nanos_opt().unwrap() + 500_000_000;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let window_end = chrono::Utc::now().timestamp_nanos_opt().unwrap() - 1_000_000_000;

    // The API serves live values while the gateway runs.
    let encoded = aas_gateway::api::encode_id(SUBMODEL);
    let http = reqwest::Client::new();
    let live: Value = http
        .get(format!(
            "{api}/submodels/{encoded}/submodel-elements/SpindleSpeed/$value"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        live["SpindleSpeed"].as_f64().is_some_and(|v| v > 0.0),
        "SpindleSpeed via API: {live}"
    );
    let whole: Value = http
        .get(format!("{api}/submodels/{encoded}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whole["id"], SUBMODEL);

    shutdown.cancel();
    gateway.wait().await.unwrap();

    // What the simulator produced in the window, per element: timestamp → expected value.
    let mut produced: BTreeMap<String, BTreeMap<i64, Value>> = BTreeMap::new();
    while let Ok(c) = changes.try_recv() {
        let Some(name) = c.node_id.strip_prefix("nsu=urn:opcua-sim:cnc;s=CNC1.") else {
            continue;
        };
        let Some((_, path)) = NODES.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        let ts = aas_gateway::sources::opcua::convert::datetime_nanos(&c.source_timestamp);
        if ts >= window_start && ts <= window_end {
            produced
                .entry(path.to_string())
                .or_default()
                .insert(ts, expected_json(&c.value));
        }
    }
    let total: usize = produced.values().map(BTreeMap::len).sum();
    assert!(
        total >= 50,
        "the simulator produced only {total} values in the window: {produced:?}"
    );

    // MQTT: every produced value, exactly (same value, same timestamp); nothing invented.
    let mut received: BTreeMap<String, BTreeMap<i64, Value>> = BTreeMap::new();
    for (topic, body) in collector.snapshot() {
        let Some(path) = topic.strip_prefix("e2e/CNC1/OperationalData/") else {
            continue;
        };
        let ts = parse_ts(body["timestamp"].as_str().unwrap());
        assert_eq!(body["quality"], "good", "{topic}: {body}");
        assert_eq!(body["submodelId"], SUBMODEL);
        if ts >= window_start && ts <= window_end {
            received
                .entry(path.replace('/', "."))
                .or_default()
                .insert(ts, body["value"].clone());
        }
    }
    assert_eq!(
        received, produced,
        "MQTT values differ from what the simulator produced"
    );

    // ILP: numeric elements, read back from VictoriaMetrics (which keeps milliseconds).
    let series = ilp.export("OperationalData_value_(double|long|bool)").await;
    let mut stored: BTreeMap<String, BTreeSet<(i64, String)>> = BTreeMap::new();
    for s in &series {
        assert_eq!(s.metric["asset"], "CNC1");
        let element = s.metric["element"].as_str().unwrap().to_string();
        for (v, ts) in s.values.iter().zip(&s.timestamps_ms) {
            let ts_ns = ts * 1_000_000;
            if ts_ns >= window_start && ts_ns <= window_end {
                stored
                    .entry(element.clone())
                    .or_default()
                    .insert((*ts, format!("{v}")));
            }
        }
    }
    let mut expected_ilp: BTreeMap<String, BTreeSet<(i64, String)>> = BTreeMap::new();
    for (path, values) in &produced {
        for (ts, v) in values {
            let number = match v {
                Value::Number(n) => n.as_f64().unwrap(),
                Value::Bool(b) => *b as u8 as f64,
                _ => continue, // strings and arrays go to value_str, which VictoriaMetrics cannot keep
            };
            expected_ilp
                .entry(path.clone())
                .or_default()
                .insert((ts / 1_000_000, format!("{number}")));
        }
    }
    assert!(!expected_ilp.is_empty());
    assert_eq!(
        stored, expected_ilp,
        "ILP values differ from what the simulator produced"
    );

    sim.stop().await;
}
