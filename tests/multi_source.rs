//! Several endpoints at once, each with its own session; and the silence watch: a server that
//! hangs without closing the connection is detected and the gateway reconnects.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aas_gateway::config::Config;
use aas_gateway::pipeline::Gateway;
use common::*;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const CNC_SM: &str = "urn:aas-gateway:sim:sm:cnc1:operational-data";
const TYPES_SM: &str = "urn:aas-gateway:sim:sm:types:values";

async fn sim(dir: &std::path::Path, users: Vec<(String, String)>) -> opcua_sim::Simulator {
    opcua_sim::Simulator::start(opcua_sim::SimOptions {
        port: 0,
        tick_ms: 100,
        pki_dir: dir.join("sim-pki"),
        allow_anonymous: users.is_empty(),
        users,
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn api_value(api: &str, sm: &str, path: &str) -> Value {
    let v: Value = reqwest::get(format!(
        "{api}/submodels/{}/submodel-elements/{path}/$value",
        aas_gateway::api::encode_id(sm)
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    v.get(path).cloned().unwrap_or(v)
}

fn start_config(body: &str) -> Config {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("gw.toml");
    std::fs::write(
        &path,
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nenabled = false\n[aas]\nenvironments = [\"{root}/aas-templates/cnc1.aas.json\", \"{root}/aas-templates/types.aas.json\"]\n{body}",
            root = repo_root().display()
        ),
    )
    .unwrap();
    Config::load(&path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_endpoints_each_with_its_own_session_and_security() {
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = sim(da.path(), vec![]).await;
    let b = sim(db.path(), vec![("op".into(), "pw".into())]).await;
    let c = sim(dc.path(), vec![("op".into(), "pw".into())]).await;
    let pki = gateway_pki();
    let cfg = start_config(&format!(
        r#"
[[opcua]]
name = "a"
endpoint = "{a}"
publishing_interval_ms = 100
pki_dir = "{pki}"
[[opcua]]
name = "b"
endpoint = "{b}"
security_policy = "Aes256Sha256RsaPss"
security_mode = "SignAndEncrypt"
trust_server_certs = true
username = "op"
password = "pw"
publishing_interval_ms = 100
pki_dir = "{pki}"
[[opcua]]
name = "c-wrong-password"
endpoint = "{c}"
username = "op"
password = "nope"
pki_dir = "{pki}"
[[mapping]]
source = "a"
node_id = "nsu=urn:opcua-sim:cnc;s=CNC1.ProgramName"
submodel = "{CNC_SM}"
path = "ProgramName"
[[mapping]]
source = "b"
node_id = "nsu=urn:opcua-sim:types;s=Types.UInt32"
submodel = "{TYPES_SM}"
path = "UInt32"
[[mapping]]
source = "c-wrong-password"
node_id = "nsu=urn:opcua-sim:types;s=Types.Int32"
submodel = "{TYPES_SM}"
path = "Int32"
"#,
        a = a.endpoint_url(),
        b = b.endpoint_url(),
        c = c.endpoint_url(),
        pki = pki.display(),
    ));
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(cfg, shutdown.clone()).await.unwrap();
    let api = format!("http://{}/api/v3.0", gateway.api_addr.unwrap());
    let t0 = Instant::now();
    loop {
        let program = api_value(&api, CNC_SM, "ProgramName").await;
        let counter = api_value(&api, TYPES_SM, "UInt32").await;
        if program.as_str().is_some_and(|s| s.starts_with('O')) && counter.as_u64().is_some() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "values from both good endpoints: {program} / {counter}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The rejected source has ended; the others keep delivering (UInt32 counts every tick).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        gateway.stats.sources[2]
            .notifications
            .load(Ordering::Relaxed),
        0
    );
    let before = gateway.stats.sources[1]
        .notifications
        .load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        gateway.stats.sources[1]
            .notifications
            .load(Ordering::Relaxed)
            > before
    );
    shutdown.cancel();
    gateway
        .wait()
        .await
        .expect("one failed source of three is not a gateway failure");
    for s in [a, b, c] {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_hangs_silently_is_detected_and_reconnected() {
    let sim_dir = tempfile::tempdir().unwrap();
    let s = sim(sim_dir.path(), vec![]).await;
    let proxy = FreezingProxy::start(s.port()).await;
    let cfg = start_config(&format!(
        r#"
[[opcua]]
name = "hanging"
endpoint = "opc.tcp://127.0.0.1:{port}/"
publishing_interval_ms = 100
keep_alive_count = 5
silence_timeout_ms = 2000
pki_dir = "{pki}"
[[mapping]]
node_id = "nsu=urn:opcua-sim:types;s=Types.UInt32"
submodel = "{TYPES_SM}"
path = "UInt32"
"#,
        port = proxy.port,
        pki = gateway_pki().display(),
    ));
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(cfg, shutdown.clone()).await.unwrap();
    let stats = gateway.stats.sources[0].clone();
    let t0 = Instant::now();
    while stats.notifications.load(Ordering::Relaxed) < 10 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no values through the proxy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.freeze();
    let frozen_at = Instant::now();
    let frozen_count = stats.notifications.load(Ordering::Relaxed);
    // Detected after the 2 s silence timeout (not the minutes a TCP timeout would take) ...
    while stats.stalls.load(Ordering::Relaxed) == 0 {
        assert!(
            frozen_at.elapsed() < Duration::from_secs(6),
            "the silent server was not detected within 6 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let detected = frozen_at.elapsed();
    assert!(
        detected >= Duration::from_millis(1500),
        "detected too early: {detected:?}"
    );
    // ... and values flow again over a new connection.
    while stats.notifications.load(Ordering::Relaxed) < frozen_count + 10 {
        assert!(
            frozen_at.elapsed() < Duration::from_secs(20),
            "values did not resume after the reconnect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "silence watch: detected after {detected:?}, values again after {:?}",
        frozen_at.elapsed()
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), gateway.wait())
        .await
        .expect("shutdown within 10 s")
        .unwrap();
    s.stop().await;
}
