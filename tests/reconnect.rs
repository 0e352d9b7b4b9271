//! Server restarts: the bundled simulator is stopped and started again on the same port five
//! times while the gateway runs. After every restart values must flow again within a bounded
//! time, and inside each up-phase's window every value the server produced must arrive in MQTT,
//! exactly once, with its value and source timestamp — nothing lost, nothing invented.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aas_gateway::config::Config;
use aas_gateway::pipeline::Gateway;
use common::*;
use opcua::types::Variant;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const SUBMODEL: &str = "urn:aas-gateway:sim:sm:types:values";
/// Types.* nodes: every one changes at every simulator tick.
const NODES: &[&str] = &["Double", "Int32", "UInt32", "Boolean", "String"];
const RESTARTS: usize = 5;
const TICK_MS: u64 = 100;

fn expected_json(v: &Variant) -> Value {
    match v {
        Variant::Double(f) => json!(f),
        Variant::Int32(i) => json!(i),
        Variant::UInt32(u) => json!(u),
        Variant::Boolean(b) => json!(b),
        Variant::String(s) => json!(s.as_ref()),
        other => panic!("test does not expect {other:?}"),
    }
}

async fn start_sim(port: u16, pki_dir: &std::path::Path) -> opcua_sim::Simulator {
    opcua_sim::Simulator::start(opcua_sim::SimOptions {
        port,
        tick_ms: TICK_MS,
        pki_dir: pki_dir.to_path_buf(),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap()
}

/// node → (source timestamp → value)
type Values = BTreeMap<String, BTreeMap<i64, Value>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_resumes_after_every_server_restart_without_loss() {
    let broker = Mosquitto::start();
    let collector = MqttCollector::start(broker.port, "rc/#").await;
    // One PKI dir for every restart: the restarted server keeps its certificate.
    let sim_pki = tempfile::tempdir().unwrap();
    let first = start_sim(0, sim_pki.path()).await;
    let port = first.port();
    let endpoint = first.endpoint_url();
    let mut sim = Some(first);

    let mut toml = format!(
        r#"
[api]
enabled = false
[aas]
environments = ["{root}/aas-templates/types.aas.json"]
[[opcua]]
name = "sim"
endpoint = "{endpoint}"
publishing_interval_ms = 100
sampling_interval_ms = 0
queue_size = 20
pki_dir = "{pki}"
[mqtt]
port = {mqtt}
topic_prefix = "rc"
"#,
        root = repo_root().display(),
        endpoint = endpoint,
        pki = gateway_pki().display(),
        mqtt = broker.port,
    );
    for n in NODES {
        toml += &format!(
            "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:types;s=Types.{n}\"\nsubmodel = \"{SUBMODEL}\"\npath = \"{n}\"\n"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, toml).unwrap();
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(Config::load(&path).unwrap(), shutdown.clone())
        .await
        .unwrap();
    let stats = gateway.stats.clone();

    let received_of = |from: i64| -> Values {
        let mut out = Values::new();
        for (topic, body) in collector.snapshot() {
            let Some(node) = topic.strip_prefix("rc/Types/TypeCoverage/") else {
                continue;
            };
            let ts = parse_ts(body["timestamp"].as_str().unwrap());
            if ts >= from {
                let prev = out
                    .entry(node.to_string())
                    .or_default()
                    .insert(ts, body["value"].clone());
                assert!(prev.is_none(), "{node} at {ts} arrived twice");
            }
        }
        out
    };

    let mut resume_times = Vec::new();
    let mut checked_total = 0usize;
    for phase in 0..=RESTARTS {
        let mut changes = sim.as_ref().unwrap().subscribe_changes();
        let up_since = now_nanos();
        let t_up = Instant::now();
        // Values flow again: every node has delivered a value produced in this phase.
        let first_ts = loop {
            let got = received_of(up_since);
            if NODES.iter().all(|n| got.contains_key(*n)) {
                break NODES
                    .iter()
                    .map(|n| *got[*n].keys().next().unwrap())
                    .max()
                    .unwrap();
            }
            assert!(
                t_up.elapsed() < Duration::from_secs(20),
                "phase {phase}: values did not resume within 20 s (got {:?})",
                got.keys().collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        resume_times.push(t_up.elapsed());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let stop_at = now_nanos();
        sim.take().unwrap().stop().await;

        // The window: from the first value every node delivered after the restart (the
        // initial values of the new monitored items; anything the server produced before
        // them was never meant to arrive) to half a second before the stop (the last
        // publishing cycle may be cut off by the stop itself).
        let (from, to) = (first_ts, stop_at - 500_000_000);
        let mut produced = Values::new();
        while let Ok(c) = changes.try_recv() {
            let Some(node) = c.node_id.strip_prefix("nsu=urn:opcua-sim:types;s=Types.") else {
                continue;
            };
            if !NODES.contains(&node) {
                continue;
            }
            let ts = aas_gateway::sources::opcua::convert::datetime_nanos(&c.source_timestamp);
            if ts >= from && ts <= to {
                produced
                    .entry(node.to_string())
                    .or_default()
                    .insert(ts, expected_json(&c.value));
            }
        }
        // Give the last in-flight MQTT messages a moment, then compare.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let received: Values = received_of(from)
            .into_iter()
            .map(|(n, v)| (n, v.into_iter().filter(|(ts, _)| *ts <= to).collect()))
            .collect();
        let count: usize = produced.values().map(BTreeMap::len).sum();
        assert!(
            count >= NODES.len() * 15,
            "phase {phase}: only {count} values produced in the window"
        );
        assert_eq!(
            received, produced,
            "phase {phase}: received values differ from what the server produced"
        );
        checked_total += count;

        if phase < RESTARTS {
            tokio::time::sleep(Duration::from_millis(700)).await;
            sim = Some(start_sim(port, sim_pki.path()).await);
        }
    }
    eprintln!(
        "reconnect: {RESTARTS} restarts, {checked_total} values compared, resume times {:?}",
        resume_times
    );
    let reconnects = stats.sources[0]
        .reconnects
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        reconnects >= RESTARTS as u64,
        "reconnects counted: {reconnects}"
    );
    shutdown.cancel();
    gateway.wait().await.unwrap();
}
