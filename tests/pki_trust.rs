//! The certificate workflow on a secured endpoint, through the binary: an unknown server
//! certificate stops the source at once with a hint and lands in `rejected/`; `pki list` shows
//! it with its thumbprint; `pki trust <thumbprint prefix>` moves it to `trusted/`; then `run`
//! connects and delivers values.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_server_certificate_then_pki_trust_then_values() {
    let sim_pki = tempfile::tempdir().unwrap();
    let sim = opcua_sim::Simulator::start(opcua_sim::SimOptions {
        port: 0,
        tick_ms: 200,
        pki_dir: sim_pki.path().to_path_buf(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    // The gateway's own certificate exists before the first start (as `pki list` makes it).
    aas_gateway::sources::opcua::pki::ensure_own_certificate(&pki).unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[api]
listen = "127.0.0.1:0"
[mqtt]
enabled = false
[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]
[[opcua]]
name = "secure"
endpoint = "{url}"
security_policy = "Aes256Sha256RsaPss"
security_mode = "SignAndEncrypt"
pki_dir = "{pki}"
[[mapping]]
node_id = "nsu=urn:opcua-sim:cnc;s=CNC1.ProgramName"
submodel = "urn:aas-gateway:sim:sm:cnc1:operational-data"
path = "ProgramName"
"#,
            root = repo_root().display(),
            url = sim.endpoint_url(),
            pki = pki.display(),
        ),
    )
    .unwrap();

    let cfg2 = cfg.clone();
    let (status, log, took) = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let out = gateway().args(["run", "-c"]).arg(&cfg2).output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).to_string(),
            t0.elapsed(),
        )
    })
    .await
    .unwrap();
    assert!(!status.success(), "{log}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(log.contains("BadCertificateUntrusted"), "{log}");
    assert!(
        log.contains("aas-gateway pki trust"),
        "says what to do: {log}"
    );

    let list = gateway()
        .args(["pki", "list", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    let thumb = list
        .lines()
        .find_map(|l| l.trim().strip_prefix("rejected "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no rejected certificate listed:\n{list}"))
        .to_string();
    assert!(list.contains("own "), "{list}");

    let trust = gateway()
        .args(["pki", "trust", "-c"])
        .arg(&cfg)
        .arg(&thumb[..10])
        .output()
        .unwrap();
    assert!(
        trust.status.success(),
        "{}",
        String::from_utf8_lossy(&trust.stderr)
    );
    assert!(pki.join("trusted").read_dir().unwrap().count() == 1);
    assert!(pki.join("rejected").read_dir().unwrap().count() == 0);

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
        .args(["run", "-c"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let api = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("API URL")
        .unwrap()
        .unwrap();
    let sm = aas_gateway::api::encode_id("urn:aas-gateway:sim:sm:cnc1:operational-data");
    let t0 = Instant::now();
    loop {
        let v: serde_json::Value = reqwest::get(format!(
            "{api}/submodels/{sm}/submodel-elements/ProgramName/$value"
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let v = v.get("ProgramName").cloned().unwrap_or(v);
        if v.as_str().is_some_and(|s| s.starts_with('O')) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no value after trusting: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().await.unwrap();
    sim.stop().await;
}
