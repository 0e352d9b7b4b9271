//! End to end on real peers: bundled simulator → gateway → mosquitto + VictoriaMetrics (ILP) + API.
//! Every value the simulator produced inside the observation window must arrive in MQTT and in
//! the ILP server with the same value and the same source timestamp, and the API must serve them.

mod common;

use std::time::Duration;

use aas_gateway::config::Config;
use aas_gateway::pipeline::Gateway;
use common::cnc::{self, now_nanos};
use common::*;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_arrive_exactly_in_mqtt_ilp_and_api() {
    let broker = Mosquitto::start();
    let ilp = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_sim(dir.path(), 200).await;
    let mut changes = sim.subscribe_changes();
    let collector = MqttCollector::start(broker.port, "#").await;

    let cfg_path = dir.path().join("gateway.toml");
    let toml = cnc::config_toml(
        &sim.endpoint_url(),
        broker.port,
        &ilp.ilp_conf(),
        &dir.path().join("pki"),
    )
    .replace(
        "topic_prefix = \"t\"",
        "topic_prefix = \"t\"\nbasyx_events = true",
    );
    std::fs::write(&cfg_path, toml).unwrap();
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(Config::load(&cfg_path).unwrap(), shutdown.clone())
        .await
        .unwrap();
    let api = format!("http://{}/api/v3.0", gateway.api_addr.unwrap());

    // Wait for the first value to arrive, then observe a window of several seconds.
    let t0 = tokio::time::Instant::now();
    while !collector
        .snapshot()
        .iter()
        .any(|(t, _)| t.starts_with("t/CNC1/"))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no MQTT message within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let window_start = now_nanos() + 500_000_000;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let window_end = now_nanos() - 1_000_000_000;

    // The API serves live values while the gateway runs.
    let encoded = aas_gateway::api::encode_id(cnc::SUBMODEL);
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
    assert_eq!(whole["id"], cnc::SUBMODEL);

    shutdown.cancel();
    gateway.wait().await.unwrap();

    let windows = [(window_start, window_end)];
    let produced = cnc::produced(&mut changes, &windows);
    let total: usize = produced.values().map(|v| v.len()).sum();
    assert!(
        total >= 50,
        "the simulator produced only {total} values in the window: {produced:?}"
    );

    // MQTT: every produced value, exactly (same value, same timestamp); nothing invented.
    let messages = collector.snapshot();
    // Our own gateway's state (another run's gateway may reach a broker that reuses its port).
    let own = format!(
        "t/_gateway/test-gateway-{}-{}/state",
        broker.port,
        std::process::id()
    );
    let state = messages.iter().find(|(t, _)| *t == own);
    assert_eq!(
        state.map(|(_, b)| b.clone()),
        Some(Value::from("online")),
        "gateway state message"
    );
    for (topic, body) in messages.iter().filter(|(t, _)| t.starts_with("t/CNC1/")) {
        assert_eq!(body["quality"], "good", "{topic}: {body}");
        assert_eq!(body["submodelId"], cnc::SUBMODEL);
    }
    let (received, duplicates) = cnc::received(&messages, "t/CNC1/OperationalData/", &windows);
    assert_eq!(
        received, produced,
        "MQTT values differ from what the simulator produced"
    );
    assert_eq!(duplicates, 0, "no duplicates without a failure");

    // BaSyx-compatible events mirror every value message, with the element as AAS JSON.
    let basyx_prefix = format!("sm-repository/aas-gateway/submodels/{encoded}/submodelElements/");
    let values: Vec<_> = messages
        .iter()
        .filter(|(t, _)| t.starts_with("t/CNC1/"))
        .collect();
    let events: Vec<_> = messages
        .iter()
        .filter(|(t, _)| t.starts_with(&basyx_prefix))
        .collect();
    assert_eq!(
        events.len(),
        values.len(),
        "one BaSyx event per value message"
    );
    let (topic, event) = events
        .iter()
        .find(|(t, _)| t.ends_with("/SpindleSpeed/updated"))
        .expect("a SpindleSpeed event");
    assert_eq!(event["modelType"], "Property", "{topic}: {event}");
    assert_eq!(event["idShort"], "SpindleSpeed");
    assert_eq!(event["valueType"], "xs:double");
    assert!(
        event["value"].as_str().unwrap().parse::<f64>().is_ok(),
        "{event}"
    );

    // ILP: numeric elements, read back from VictoriaMetrics (which keeps milliseconds).
    let expected = cnc::numeric_ms(&produced);
    assert!(!expected.is_empty());
    assert_eq!(
        cnc::stored(&ilp, &windows).await,
        expected,
        "ILP values differ from what the simulator produced"
    );

    sim.stop().await;
}

/// `mqtt.message_per = "submodel"`: the values of a submodel come as `values` arrays on the
/// submodel's topic; expanded, they are exactly what the simulator produced, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submodel_messages_carry_every_value_exactly() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_sim(dir.path(), 200).await;
    let mut changes = sim.subscribe_changes();
    let collector = MqttCollector::start(broker.port, "t/#").await;
    let toml = cnc::config_toml(
        &sim.endpoint_url(),
        broker.port,
        "http::addr=127.0.0.1:1;",
        &dir.path().join("pki"),
    )
    .replace(
        "topic_prefix = \"t\"",
        "topic_prefix = \"t\"\nmessage_per = \"submodel\"",
    );
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(&cfg_path, toml).unwrap();
    let mut cfg = Config::load(&cfg_path).unwrap();
    cfg.questdb.enabled = false;
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(cfg, shutdown.clone()).await.unwrap();

    let submodel_topic = "t/CNC1/OperationalData";
    let t0 = tokio::time::Instant::now();
    while !collector
        .snapshot()
        .iter()
        .any(|(t, _)| t == submodel_topic)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no submodel message within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let window_start = now_nanos() + 500_000_000;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window_end = now_nanos() - 1_000_000_000;
    shutdown.cancel();
    gateway.wait().await.unwrap();

    let windows = [(window_start, window_end)];
    let produced = cnc::produced(&mut changes, &windows);
    assert!(!produced.is_empty(), "the simulator produced nothing");
    let messages = collector.snapshot();
    assert!(
        !messages
            .iter()
            .any(|(t, _)| t.starts_with(&format!("{submodel_topic}/"))),
        "no per-value messages in this mode"
    );
    // Expanded into per-value form: (element topic, item).
    let mut expanded = Vec::new();
    for (_, body) in messages.iter().filter(|(t, _)| t == submodel_topic) {
        assert_eq!(body["submodelId"], cnc::SUBMODEL, "{body}");
        for item in body["values"].as_array().expect("a values array") {
            assert_eq!(item["quality"], "good", "{item}");
            let path = item["idShortPath"].as_str().unwrap().replace('.', "/");
            expanded.push((format!("{submodel_topic}/{path}"), item.clone()));
        }
    }
    let (received, duplicates) = cnc::received(&expanded, &format!("{submodel_topic}/"), &windows);
    assert_eq!(
        received, produced,
        "values in submodel messages differ from what the simulator produced"
    );
    assert_eq!(duplicates, 0, "no duplicates without a failure");
    sim.stop().await;
}
