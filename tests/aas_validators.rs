//! Independent AAS checkers (aas-core3.0, basyx-python-sdk, aas-test-engines; installed into
//! `.venv` by `.ci/peers.sh install`) accept the shipped templates and what the API serves.

mod common;

use std::process::Command;

use common::repo_root;

fn python() -> std::path::PathBuf {
    let p = repo_root().join(".venv/bin/python");
    assert!(
        p.is_file(),
        "{} missing: run `.ci/peers.sh install`",
        p.display()
    );
    p
}

fn check(files: &[std::path::PathBuf]) -> (bool, String) {
    let out = Command::new(python())
        .arg(repo_root().join("tests/validators/check_aas.py"))
        .args(["--check-refs", "--test-engines"])
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn shipped_templates_pass_all_checkers() {
    // The machine environments and the submodel templates under aas-templates/templates/.
    let files: Vec<_> = ["aas-templates", "aas-templates/templates"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(repo_root().join(dir)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert!(files.len() >= 6, "{files:?}");
    let (ok, text) = check(&files);
    println!("{text}");
    assert!(ok, "{text}");
}

#[test]
fn a_broken_environment_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"submodels":[{"modelType":"Submodel","id":"urn:x","submodelElements":[
            {"modelType":"Property","idShort":"N","valueType":"xs:int","value":"abc"}]}]}"#,
    )
    .unwrap();
    let (ok, text) = check(&[bad]);
    assert!(!ok, "a Property xs:int with value \"abc\" passed: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_environment_served_by_the_api_passes() {
    use aas_gateway::config::Config;
    use aas_gateway::pipeline::Gateway;

    let pki = tempfile::tempdir().unwrap();
    let sim = opcua_sim::Simulator::start(opcua_sim::SimOptions {
        port: 0,
        tick_ms: 200,
        pki_dir: pki.path().join("sim"),
        ..Default::default()
    })
    .await
    .unwrap();
    // The demo config as shipped, pointed at this simulator, without MQTT.
    let mut cfg = Config::load(&repo_root().join("config/demo.toml")).unwrap();
    cfg.opcua[0].endpoint = sim.endpoint_url();
    cfg.opcua[0].pki_dir = pki.path().join("gateway");
    cfg.mqtt.enabled = false;
    let outbox_dir = tempfile::tempdir().unwrap();
    cfg.outbox.dir = outbox_dir.path().to_path_buf();
    cfg.api.listen = "127.0.0.1:0".into();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gateway = Gateway::start(cfg, shutdown.clone()).await.unwrap();
    let api = format!("http://{}/api/v3.0", gateway.api_addr.unwrap());
    let http = reqwest::Client::new();
    // Wait until live values replaced the template's initial ones.
    let encoded = aas_gateway::api::encode_id("urn:aas-gateway:sim:sm:cnc1:operational-data");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v: serde_json::Value = http
            .get(format!(
                "{api}/submodels/{encoded}/submodel-elements/SpindleSpeed/$value"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["SpindleSpeed"].as_f64().is_some_and(|x| x != 0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no live value via the API"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let shells: serde_json::Value = http
        .get(format!("{api}/shells"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let submodels: serde_json::Value = http
        .get(format!("{api}/submodels"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let env = serde_json::json!({
        "assetAdministrationShells": shells["result"],
        "submodels": submodels["result"],
    });
    shutdown.cancel();
    gateway.wait().await.unwrap();
    sim.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("served.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&env).unwrap()).unwrap();
    let (ok, text) = check(&[file]);
    println!("{text}");
    assert!(ok, "{text}");
}
