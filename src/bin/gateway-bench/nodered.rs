//! The Node-RED baseline: node-red-contrib-opcua's client subscribes to the N scale variables
//! (bulk "multiple" subscribe, ids sent in chunks: one bulk subscribe of 40k ids times out and
//! kills Node-RED) and MQTT-out publishes each change at QoS 1 to mosquitto, stamped with the
//! source timestamp so the counting subscriber finds every loss.
//!
//! The contrib hard-codes `maxNotificationsPerPublish: 10` and monitored-item queue size 1; the
//! flow leaves both as they are, because that is what integrators get.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::peers::Mosquitto;
use crate::procs::{free_port, wait_for_port, Proc, Sampler};
use crate::subscriber::{now_nanos, Subscriber};
use crate::{BaselineRun, TempDir};

/// Node ids sent per "multiple" subscribe message.
const CHUNK: usize = 1000;

/// The namespace index of the scale variables (Node-RED's node ids need `ns=`).
async fn scale_namespace_index(url: &str, pki: &Path) -> Result<u16> {
    use opcua::client::{ClientBuilder, IdentityToken};
    use opcua::crypto::SecurityPolicy;
    use opcua::types::MessageSecurityMode;
    let mut client = ClientBuilder::new()
        .application_name("gateway-bench")
        .application_uri("urn:gateway-bench")
        .pki_dir(pki)
        .create_sample_keypair(false)
        .trust_server_certs(true)
        .session_retry_limit(0)
        .client()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (session, event_loop) = client
        .connect_to_matching_endpoint(
            (
                url,
                SecurityPolicy::None.to_str(),
                MessageSecurityMode::None,
            ),
            IdentityToken::Anonymous,
        )
        .await?;
    let h = event_loop.spawn();
    session.wait_for_connection().await;
    let ns = session
        .get_namespace_index(opcua_sim::SCALE_NAMESPACE)
        .await
        .map_err(|e| anyhow::anyhow!("namespace index: {e}"));
    let _ = session.disconnect().await;
    h.abort();
    ns
}

/// The flow: inject → chunker → OPC UA client (subscribe) → stamp → MQTT out.
fn flow(url: &str, ns: u16, n: usize, interval_ms: u64, mqtt_port: u16) -> serde_json::Value {
    let chunker = format!(
        r#"const n = {n}, chunk = {CHUNK};
for (let start = 0, k = 0; start < n; start += chunk, k++) {{
  const ids = [];
  for (let i = start; i < Math.min(n, start + chunk); i++) ids.push({{ nodeId: "ns={ns};s=Scale.V" + i }});
  // The first message creates the subscription; give it time before adding more items.
  setTimeout(() => node.send({{ topic: "multiple", payload: ids, interval: {interval_ms} }}), k === 0 ? 0 : 2000 + 300 * k);
}}
return null;"#
    );
    let stamp = r#"const dv = msg.payload;
const id = msg.topic.slice(msg.topic.lastIndexOf(".V") + 2);
msg.topic = "nodered/V" + id;
msg.payload = JSON.stringify({ value: dv.value.value, timestamp: new Date(dv.sourceTimestamp).toISOString() });
return msg;"#;
    json!([
        {"id": "tab", "type": "tab", "label": "bench"},
        {"id": "ep", "type": "OpcUa-Endpoint", "endpoint": url, "secpol": "None", "secmode": "None", "none": true, "login": false},
        {"id": "broker", "type": "mqtt-broker", "broker": "127.0.0.1", "port": mqtt_port.to_string(), "clientid": "node-red-bench",
         "protocolVersion": "4", "keepalive": "60", "cleansession": true, "autoConnect": true},
        {"id": "start", "type": "inject", "z": "tab", "once": true, "onceDelay": "2", "repeat": "", "topic": "", "payload": "", "payloadType": "date", "wires": [["chunker"]]},
        {"id": "chunker", "type": "function", "z": "tab", "func": chunker, "outputs": 1, "wires": [["client"]]},
        {"id": "client", "type": "OpcUa-Client", "z": "tab", "endpoint": "ep", "action": "subscribe", "time": interval_ms.to_string(), "timeUnit": "ms",
         "certificate": "n", "securitymode": "None", "securitypolicy": "None", "maxChunkCount": 1, "maxMessageSize": 8192,
         "receiveBufferSize": 8192, "sendBufferSize": 8192, "setstatusandtime": false, "keepsessionalive": false,
         "wires": [["stamp"], [], []]},
        {"id": "stamp", "type": "function", "z": "tab", "func": stamp, "outputs": 1, "wires": [["out"]]},
        {"id": "out", "type": "mqtt out", "z": "tab", "broker": "broker", "qos": "1", "retain": "false", "topic": "", "wires": []}
    ])
}

/// Runs Node-RED on one case and counts what reached the broker.
pub async fn run(
    install: &Path,
    url: &str,
    n: usize,
    interval_ms: u64,
    seconds: u64,
    tcp_nodelay: bool,
) -> Result<BaselineRun> {
    let red = install.join("node_modules/node-red/red.js");
    if !red.is_file() {
        bail!(
            "{} missing: run `.ci/peers.sh install-bench`",
            red.display()
        );
    }
    let dir = TempDir::new("nodered")?;
    let ns = scale_namespace_index(url, &dir.path.join("pki")).await?;
    let mosquitto = Mosquitto::start(&dir.path, tcp_nodelay)?;
    let sub = Subscriber::start(mosquitto.port, "bench-counter-nr", "nodered/#").await?;
    let user_dir = dir.path.join("user");
    std::fs::create_dir_all(&user_dir)?;
    // Node-RED loads nodes from <userDir>/node_modules.
    std::os::unix::fs::symlink(
        install.join("node_modules").canonicalize()?,
        user_dir.join("node_modules"),
    )?;
    std::fs::write(
        user_dir.join("flows.json"),
        serde_json::to_vec_pretty(&flow(url, ns, n, interval_ms, mosquitto.port))?,
    )?;
    let port = free_port();
    let mut cmd = Command::new("node");
    cmd.arg(&red)
        .arg("--userDir")
        .arg(&user_dir)
        .arg("--port")
        .arg(port.to_string())
        .arg("flows.json");
    let mut p = Proc::spawn("node-red", cmd, &dir.path.join("node-red.log"))?;
    wait_for_port(&mut p, port, Duration::from_secs(60))?;
    // Subscribing in chunks takes 2 s + 0.3 s per chunk; then let the flow settle.
    let chunks = n.div_ceil(CHUNK) as u64;
    tokio::time::sleep(Duration::from_millis(2000 + 2000 + 300 * chunks + 5000)).await;
    p.check_alive()?;
    if sub.messages() == 0 {
        bail!(
            "no value from Node-RED after subscribing; log:\n{}",
            crate::procs::tail(&p.log, 30)
        );
    }
    let window_start = now_nanos();
    let window_end = window_start + seconds as i64 * 1_000_000_000;
    sub.counts.lock().expect("counts").window = (window_start, window_end);
    let mut s = Sampler::start(p.pid(), Duration::from_millis(500));
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        p.check_alive().context("Node-RED died")?;
        s.sample();
    }
    let usage = s.finish();
    tokio::time::sleep(Duration::from_secs(5)).await; // let the last cycles arrive
    let (got, ticks) = sub
        .counts
        .lock()
        .expect("counts")
        .in_range(window_start, window_end);
    // Ticks of the window by the clock (Node-RED may miss whole cycles, so they cannot be
    // taken from what arrived): every interval_ms.
    let expected_ticks = (seconds * 1000 / interval_ms) as f64;
    let produced = expected_ticks * n as f64;
    p.stop(Duration::from_secs(5));
    Ok(BaselineRun {
        delivered_per_s: got as f64 / seconds as f64,
        delivered_pct: 100.0 * got as f64 / produced,
        usage,
        note: format!(
            "{} distinct source timestamps in {expected_ticks} ticks",
            ticks.len()
        ),
    })
}
