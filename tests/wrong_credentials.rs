//! A server that rejects the gateway's credentials must end that source with one clear error
//! within seconds, not a silent endless retry (async-opcua retries forever on its own).

mod common;

use std::time::{Duration, Instant};

use aas_gateway::config::Config;
use aas_gateway::pipeline::Gateway;
use common::*;
use tokio_util::sync::CancellationToken;

const SUBMODEL: &str = "urn:aas-gateway:sim:sm:cnc1:operational-data";

/// `pki` is the test's own directory: two gateways creating their key pair in the same
/// directory at the same moment would race.
fn config(
    pki: &std::path::Path,
    endpoint: &str,
    user: &str,
    password: &str,
    policy: &str,
    mode: &str,
) -> String {
    format!(
        r#"
[api]
enabled = false
[mqtt]
enabled = false
[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]
[[opcua]]
name = "secured"
endpoint = "{endpoint}"
security_policy = "{policy}"
security_mode = "{mode}"
trust_server_certs = true
username = "{user}"
password = "{password}"
pki_dir = "{pki}"
[[mapping]]
node_id = "nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeed"
submodel = "{SUBMODEL}"
path = "SpindleSpeed"
"#,
        root = repo_root().display(),
        pki = pki.display(),
    )
}

async fn simulator(dir: &std::path::Path) -> opcua_sim::Simulator {
    opcua_sim::Simulator::start(opcua_sim::SimOptions {
        port: 0,
        tick_ms: 200,
        pki_dir: dir.join("sim-pki"),
        users: vec![("operator".into(), "s3cret".into())],
        allow_anonymous: false,
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_ends_the_gateway_with_a_clear_error_within_seconds() {
    let sim_dir = tempfile::tempdir().unwrap();
    let sim = simulator(sim_dir.path()).await;
    for (policy, mode) in [("None", "None"), ("Basic256Sha256", "SignAndEncrypt")] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        std::fs::write(
            &path,
            config(
                dir.path(),
                &sim.endpoint_url(),
                "operator",
                "wrong",
                policy,
                mode,
            ),
        )
        .unwrap();
        let gateway = Gateway::start(Config::load(&path).unwrap(), CancellationToken::new())
            .await
            .unwrap();
        let t0 = Instant::now();
        let stats = gateway.stats.clone();
        let result = tokio::time::timeout(Duration::from_secs(15), gateway.wait())
            .await
            .unwrap_or_else(|_| panic!("{policy}/{mode}: the gateway still runs after 15 s"));
        let err = format!("{:#}", result.expect_err("wait() must fail"));
        eprintln!(
            "{policy}/{mode}: wrong password reported after {:?}",
            t0.elapsed()
        );
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{policy}/{mode}: took {:?}",
            t0.elapsed()
        );
        assert!(
            err.contains("secured") && err.contains(&sim.endpoint_url()),
            "the error names the source and endpoint: {err}"
        );
        assert!(
            err.contains("BadUserAccessDenied") || err.contains("BadIdentityTokenRejected"),
            "{err}"
        );
        assert!(
            err.contains("username/password"),
            "says what to check: {err}"
        );
        // The status page shows the source as failed, with the same reason.
        let source = &stats.sources[0];
        assert_eq!(
            source.state(),
            aas_gateway::sources::SourceState::Failed,
            "{policy}/{mode}"
        );
        let reason = source.health.snapshot().failed.unwrap_or_default();
        assert!(
            reason.contains("username/password") && reason.contains(&sim.endpoint_url()),
            "{policy}/{mode}: the failure's reason: {reason}"
        );
    }

    // The right password on the same server connects and delivers values (the test above must
    // fail because of the password, not because nothing can connect).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        config(
            dir.path(),
            &sim.endpoint_url(),
            "operator",
            "s3cret",
            "Basic256Sha256",
            "SignAndEncrypt",
        ),
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(Config::load(&path).unwrap(), shutdown.clone())
        .await
        .unwrap();
    let stats = gateway.stats.clone();
    let t0 = Instant::now();
    while stats.updates.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no value with the right password"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    gateway.wait().await.unwrap();
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_non_zero_on_a_wrong_password() {
    let sim_dir = tempfile::tempdir().unwrap();
    let sim = simulator(sim_dir.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        config(
            dir.path(),
            &sim.endpoint_url(),
            "operator",
            "wrong",
            "None",
            "None",
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
        .args(["run", "-c"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("aas-gateway run still runs after 15 s")
        .unwrap();
    let mut log = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut log)
        .await
        .unwrap();
    assert!(!status.success(), "exit status {status}; log:\n{log}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        log.contains("BadUserAccessDenied") || log.contains("BadIdentityTokenRejected"),
        "{log}"
    );
    // One clear error, not a retry loop: the rejection is reported once as an error line.
    let errors = log
        .lines()
        .filter(|l| l.contains("username/password"))
        .count();
    assert!(
        (1..=2).contains(&errors),
        "expected the error once (plus the exit line):\n{log}"
    );
    sim.stop().await;
}
