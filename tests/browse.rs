//! `aas-gateway browse` against the bundled simulator: the skeleton it prints must pass
//! `validate` as it is when AAS templates fill in the elements, and `run` must then deliver
//! live values; without templates the TODO blocks must be what `validate` complains about.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
}

async fn simulator(dir: &std::path::Path) -> opcua_sim::Simulator {
    opcua_sim::Simulator::start(opcua_sim::SimOptions {
        port: 0,
        tick_ms: 200,
        pki_dir: dir.join("sim-pki"),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn browse(url: &str, extra: &[&str]) -> String {
    let out = gateway()
        .args(["browse", url, "--pki-dir"])
        .arg(gateway_pki())
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "browse failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_output_validates_and_runs() {
    let sim_dir = tempfile::tempdir().unwrap();
    let sim = simulator(sim_dir.path()).await;
    let url = sim.endpoint_url();
    let template = repo_root().join("aas-templates/cnc1.aas.json");
    let url2 = url.clone();
    let text = tokio::task::spawn_blocking(move || {
        browse(
            &url2,
            &["--depth", "4", "--aas-template", template.to_str().unwrap()],
        )
    })
    .await
    .unwrap();

    // Every CNC1 operational variable is mapped with an nsu= id; variables of the other
    // machines with the same names (Conveyor1.Running) are not, so no element is fed twice.
    let active: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("node_id = "))
        .collect();
    for node in [
        "SpindleSpeed",
        "ProgramName",
        "AxisPositions",
        "PartCount",
        "Running",
    ] {
        let want = format!("node_id = \"nsu=urn:opcua-sim:cnc;s=CNC1.{node}\"");
        assert!(
            active.contains(&want.as_str()),
            "{want} missing in:\n{text}"
        );
    }
    assert!(
        !active.iter().any(|l| l.contains("Conveyor1")),
        "Conveyor1 mapped onto CNC1's elements:\n{text}"
    );
    assert!(text.contains("# Factory/CNC1/SpindleSpeed: Double, suggested valueType xs:double"));
    assert!(text.contains("# node_id = \"nsu=urn:opcua-sim:conveyor;s=Conveyor1.Speed\""));

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("browsed.toml");
    std::fs::write(&cfg, &text).unwrap();
    let out = gateway()
        .args(["validate", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "validate rejected the browse output:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `run` with it: live values in the API.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("AAS_GATEWAY__API__LISTEN", "127.0.0.1:0")
        .env("AAS_GATEWAY__MQTT__ENABLED", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let api = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("API URL within 30 s")
        .unwrap()
        .expect("a line");
    let sm = aas_gateway::api::encode_id("urn:aas-gateway:sim:sm:cnc1:operational-data");
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    loop {
        let v: serde_json::Value = http
            .get(format!(
                "{api}/submodels/{sm}/submodel-elements/ProgramName/$value"
            ))
            .send()
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
            "no live ProgramName: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().await.unwrap();

    // Without templates: TODO blocks, which validate names; depth and node limits hold.
    let url2 = url.clone();
    let raw =
        tokio::task::spawn_blocking(move || browse(&url2, &["--depth", "3", "--max-nodes", "12"]))
            .await
            .unwrap();
    assert!(raw.contains("submodel = \"TODO\""), "{raw}");
    assert!(raw.contains("# Stopped after 12 nodes"), "{raw}");
    let cfg2 = dir.path().join("raw.toml");
    std::fs::write(&cfg2, &raw).unwrap();
    let out = gateway()
        .args(["validate", "-c"])
        .arg(&cfg2)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("aas.environments"), "{err}");
    sim.stop().await;
}
