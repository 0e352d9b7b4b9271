//! Operations and security on real peers (bundled simulator, mosquitto, the gateway binary):
//! tokens and roles, write-back to the simulator's setpoint, the audit log (checked and then
//! tampered with through the `aas-gateway audit verify` binary), `/metrics` against what an
//! MQTT subscriber received, and `/ready`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use aas_gateway::config::Config;
use aas_gateway::pipeline::Gateway;
use aas_gateway::security::tokens::{generate_token, hash_token};
use common::cnc;
use common::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const SETPOINT: &str = "nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeedSetpoint";

fn config(endpoint: &str, mqtt_port: u16, pki: &Path, reader: &str, writer: &str) -> String {
    let mut s = format!(
        r#"
[gateway]
name = "sec-gateway-{mqtt_port}"
[api]
listen = "127.0.0.1:0"
rate_limit_per_s = 0
[[api.auth.tokens]]
name = "dashboard"
role = "reader"
sha256 = "{reader}"
[[api.auth.tokens]]
name = "ops-writer"
role = "writer"
sha256 = "{writer}"
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
topic_prefix = "t"
[outbox]
dir = "outbox"
[audit]
dir = "audit"
[[mapping]]
node_id = "{SETPOINT}"
submodel = "{sm}"
path = "SpindleSpeedSetpoint"
writable = true
"#,
        reader = hash_token(reader),
        writer = hash_token(writer),
        root = repo_root().display(),
        pki = pki.display(),
        sm = cnc::SUBMODEL,
    );
    for node in cnc::NODES {
        s += &format!(
            "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:cnc;s=CNC1.{node}\"\nsubmodel = \"{}\"\npath = \"{node}\"\n",
            cnc::SUBMODEL
        );
    }
    s
}

/// Checks a Part 2 error body and returns its text.
async fn part2(resp: reqwest::Response, status: u16) -> String {
    assert_eq!(resp.status().as_u16(), status, "status of {}", resp.url());
    let body: Value = resp.json().await.expect("a JSON error body");
    let m = &body["messages"][0];
    assert_eq!(m["messageType"], "Error", "{body}");
    assert_eq!(m["code"], status.to_string(), "{body}");
    m["text"].as_str().unwrap().to_string()
}

fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name_and_labels} not in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

fn audit_lines(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for (_, _, path) in aas_gateway::audit::list_files(dir).unwrap() {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_write_back_audit_metrics_and_readiness() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_sim(dir.path(), 200).await;
    let mut changes = sim.subscribe_changes();
    let collector = MqttCollector::start(broker.port, "t/#").await;
    let (reader, writer) = (generate_token().unwrap(), generate_token().unwrap());
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg_path,
        config(
            &sim.endpoint_url(),
            broker.port,
            &dir.path().join("pki"),
            &reader,
            &writer,
        ),
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(Config::load(&cfg_path).unwrap(), shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", gateway.api_addr.unwrap());
    let sm = aas_gateway::api::encode_id(cnc::SUBMODEL);
    let element = |p: &str| format!("{base}/api/v3.0/submodels/{sm}/submodel-elements/{p}");
    let http = reqwest::Client::new();

    // Ready once the source is connected and values flow.
    let t0 = tokio::time::Instant::now();
    loop {
        let r = http.get(format!("{base}/ready")).send().await.unwrap();
        if r.status() == 200 {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["sources"][0]["state"], "connected", "{body}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "not ready within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No token: 401 with a Part 2 body and a Bearer challenge, on reads and on writes.
    let r = http
        .get(format!("{base}/api/v3.0/shells"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"aas-gateway\""
    );
    part2(r, 401).await;
    let r = http
        .patch(element("SpindleSpeedSetpoint/$value"))
        .json(&json!(11000))
        .send()
        .await
        .unwrap();
    part2(r, 401).await;
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    part2(r, 401).await;
    // A wrong token: 401 as well.
    let r = http
        .get(format!("{base}/api/v3.0/shells"))
        .bearer_auth(format!("{reader}x"))
        .send()
        .await
        .unwrap();
    part2(r, 401).await;

    // Reader: reads work, writes are 403.
    let r = http
        .get(element("SpindleSpeedSetpoint/$value"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .patch(element("SpindleSpeedSetpoint/$value"))
        .bearer_auth(&reader)
        .json(&json!(11000))
        .send()
        .await
        .unwrap();
    assert!(part2(r, 403).await.contains("writer"));

    // Writer: read-only mappings are 403, wrong types 400, server refusals 409 with the status.
    let patch = |path: &str, body: Value| {
        http.patch(element(path))
            .bearer_auth(&writer)
            .json(&body)
            .send()
    };
    let r = patch("SpindleSpeed/$value", json!(5)).await.unwrap();
    assert!(part2(r, 403).await.contains("read-only"));
    let r = patch("SpindleSpeedSetpoint/$value", json!("fast"))
        .await
        .unwrap();
    part2(r, 400).await;
    let r = patch("SpindleSpeedSetpoint/$value", json!(20000))
        .await
        .unwrap();
    assert!(part2(r, 409).await.contains("BadOutOfRange"));
    let r = patch("NoSuchElement/$value", json!(1)).await.unwrap();
    part2(r, 404).await;

    // A good write reaches the simulator's node.
    let r = patch("SpindleSpeedSetpoint/$value", json!(12345.5))
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    let t0 = tokio::time::Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), changes.recv()).await {
            Ok(Ok(c)) if c.node_id == SETPOINT => {
                assert_eq!(c.value, opcua::types::Variant::Double(12345.5));
                break;
            }
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            other => panic!("no setpoint change from the simulator: {other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    // ... and comes back through the subscription into the AAS.
    let t0 = tokio::time::Instant::now();
    loop {
        let v: Value = http
            .get(element("SpindleSpeedSetpoint/$value"))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // $value answers the Part 2 named ValueOnly form: {"SpindleSpeedSetpoint": 12345.5}.
        if v["SpindleSpeedSetpoint"] == json!(12345.5) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "API still shows {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Let some values flow, stop them, let the outbox drain; then the counters must equal what
    // MQTT delivered.
    collector
        .wait_for("t/CNC1/", 60, Duration::from_secs(20))
        .await;
    // Stop the values, let the outbox drain, then the counters must equal what MQTT delivered.
    sim.stop().await;
    let t0 = tokio::time::Instant::now();
    let mut last = (usize::MAX, 0u64);
    let metrics = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = http
            .get(format!("{base}/metrics"))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let received = collector
            .snapshot()
            .iter()
            .filter(|(t, _)| t.starts_with("t/CNC1/"))
            .count();
        let confirmed = metric(&text, "aas_gateway_sink_confirmed_total{sink=\"mqtt\"}");
        let lag = metric(&text, "aas_gateway_outbox_lag{sink=\"mqtt\"}");
        if lag == 0 && (received, confirmed) == last {
            break text;
        }
        last = (received, confirmed);
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "MQTT did not settle:\n{text}"
        );
    };
    let received = last.0 as u64;
    assert!(received >= 50, "too few values to compare: {received}");
    assert_eq!(
        metric(&metrics, "aas_gateway_sink_confirmed_total{sink=\"mqtt\"}"),
        received
    );
    assert_eq!(metric(&metrics, "aas_gateway_updates_total"), received);
    assert_eq!(
        metric(&metrics, "aas_gateway_outbox_appended_total"),
        received
    );
    assert_eq!(metric(&metrics, "aas_gateway_conversion_errors_total"), 0);
    // Every confirmed value has its end-to-end latency recorded. On loopback all of them arrive
    // within a second, except the initial values the server reports at subscription time: those
    // carry the (older) timestamp of their last change — one per mapped node at most.
    let latency = "aas_gateway_end_to_end_latency_seconds";
    assert_eq!(
        metric(&metrics, &format!("{latency}_count{{sink=\"mqtt\"}}")),
        received
    );
    let within_1s = metric(
        &metrics,
        &format!("{latency}_bucket{{sink=\"mqtt\",le=\"1\"}}"),
    );
    let initial = cnc::NODES.len() as u64 + 1;
    assert!(
        within_1s + initial >= received,
        "{within_1s} of {received} within 1 s"
    );
    println!(
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with(latency))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(metric(&metrics, "aas_gateway_api_auth_failures_total"), 5);
    assert_eq!(
        metric(
            &metrics,
            "aas_gateway_source_notifications_total{source=\"sim\"}"
        ),
        metric(&metrics, "aas_gateway_readings_total")
    );
    // Back-pressure counters are exposed; nothing was saturated here.
    for name in [
        "aas_gateway_source_publishing_pauses_total",
        "aas_gateway_source_publishing_paused",
        "aas_gateway_source_handoff_dropped_total",
        "aas_gateway_source_stalls_total",
    ] {
        assert_eq!(
            metric(&metrics, &format!("{name}{{source=\"sim\"}}")),
            0,
            "{name}"
        );
    }

    // Without its server the source is not ready any more.
    let t0 = tokio::time::Instant::now();
    loop {
        let r = http.get(format!("{base}/ready")).send().await.unwrap();
        if r.status() == 503 {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["sources"][0]["state"], "disconnected", "{body}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "still ready without a server"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    shutdown.cancel();
    gateway.wait().await.unwrap();

    // The audit log holds the run, in order, with who/what/old/new/result of every write.
    let audit_dir = dir.path().join("audit");
    let lines = audit_lines(&audit_dir);
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(&events[..2], ["start", "config_loaded"], "{events:?}");
    assert_eq!(
        lines[1]["sha256"],
        aas_gateway::security::sha256_hex(&std::fs::read(&cfg_path).unwrap())
    );
    assert!(events.contains(&"opcua_connected"), "{events:?}");
    assert!(events.contains(&"opcua_connection_lost"), "{events:?}");
    assert_eq!(events.last(), Some(&"stop"));
    assert_eq!(events.iter().filter(|e| **e == "auth_failure").count(), 4);
    assert_eq!(events.iter().filter(|e| **e == "access_denied").count(), 1);
    let writes: Vec<&Value> = lines.iter().filter(|l| l["event"] == "write").collect();
    assert_eq!(writes.len(), 5, "{writes:#?}");
    let good = writes.iter().find(|w| w["http_status"] == 204).unwrap();
    assert_eq!(good["user"], "ops-writer");
    assert_eq!(good["role"], "writer");
    assert_eq!(good["node"], SETPOINT);
    assert_eq!(good["path"], "SpindleSpeedSetpoint");
    assert_eq!(good["old"], json!(10000.0));
    assert_eq!(good["new"], json!(12345.5));
    assert_eq!(good["result"], "Good");
    let refused = writes.iter().find(|w| w["http_status"] == 409).unwrap();
    assert!(refused["result"]
        .as_str()
        .unwrap()
        .contains("BadOutOfRange"));
    // Secrets never reach the audit log.
    let raw =
        std::fs::read_to_string(&aas_gateway::audit::list_files(&audit_dir).unwrap()[0].2).unwrap();
    assert!(!raw.contains(&reader) && !raw.contains(&writer));

    // `audit verify` accepts the real log, and names the line after one changed byte.
    let bin = env!("CARGO_BIN_EXE_aas-gateway");
    let out = Command::new(bin)
        .args(["audit", "verify", "-c"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{} line(s)", lines.len())),
        "{stdout}"
    );

    let export = Command::new(bin)
        .args(["audit", "export", "--from", "2000-01-01", "-c"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(export.status.success());
    assert_eq!(
        String::from_utf8_lossy(&export.stdout).lines().count(),
        lines.len()
    );

    let file = &aas_gateway::audit::list_files(&audit_dir).unwrap()[0].2;
    let mut bytes = std::fs::read(file).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let write_line = text
        .lines()
        .position(|l| l.contains("\"http_status\":204"))
        .unwrap();
    let offset: usize = text
        .lines()
        .take(write_line)
        .map(|l| l.len() + 1)
        .sum::<usize>()
        + text
            .lines()
            .nth(write_line)
            .unwrap()
            .find("12345.5")
            .unwrap();
    bytes[offset] = b'9'; // 12345.5 -> 92345.5
    std::fs::write(file, bytes).unwrap();
    let out = Command::new(bin)
        .args(["audit", "verify", "--dir"])
        .arg(&audit_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("{}:{}:", file.display(), write_line + 1)),
        "{stdout}"
    );
}
