//! `aas-gateway demo` as a new user runs it: two at once must both work (each keeps its state
//! in its own temporary directory; they used to share `data/outbox.redb` and the second failed
//! on its lock), and a healthy run logs no ERROR line (library noise is filtered) and no WARN
//! line before it is asked to stop.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SUBMODEL: &str = "urn:aas-gateway:sim:sm:cnc1:operational-data";

struct RunningDemo {
    child: KillOnDrop,
    url: String,
    stderr: std::thread::JoinHandle<String>,
}

/// Starts a demo in `cwd` with the default log levels, and waits for the API URL on its stdout.
fn start_demo(cwd: &std::path::Path) -> RunningDemo {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
            .args(["demo", "--port", "0"])
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aas-gateway demo"),
    );
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {} // keep the pipe drained
    });
    let url = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(url) => url,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "the demo printed no URL within 120 s; its log:\n{}",
                stderr.join().unwrap()
            );
        }
    };
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/api/v3.0"),
        "{url}"
    );
    RunningDemo { child, url, stderr }
}

/// Polls the SpindleSpeed value until two different values were seen (the live path works).
async fn wait_for_changing_values(url: &str) {
    let sm = aas_gateway::api::encode_id(SUBMODEL);
    let value_url = format!("{url}/submodels/{sm}/submodel-elements/SpindleSpeed/$value");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "{value_url}: values did not change within 90 s (seen {seen:?})"
        );
        if let Ok(resp) = client.get(&value_url).send().await {
            if resp.status().is_success() {
                seen.insert(resp.text().await.unwrap_or_default());
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// SIGINT (Ctrl-C), then the exit status and the whole log.
fn stop(mut demo: RunningDemo) -> (std::process::ExitStatus, String) {
    let _ = Command::new("kill")
        .args(["-INT", &demo.child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = demo.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop within 60 s of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, demo.stderr.join().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demos_side_by_side_both_serve_live_values_and_log_no_error() {
    // Both in one folder laid out like the repository (config/demo.toml, aas-templates/), as
    // two users of one checkout would run them; the demo's relative paths point into it.
    let dir = tempfile::tempdir().unwrap();
    for file in ["config/demo.toml", "aas-templates/cnc1.aas.json"] {
        let to = dir.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo_root().join(file), to).unwrap();
    }
    let a = start_demo(dir.path());
    let b = start_demo(dir.path());
    assert_ne!(a.url, b.url);
    wait_for_changing_values(&a.url).await;
    wait_for_changing_values(&b.url).await;
    // The URL printed first answers (it used to be a 404).
    let index = reqwest::get(&a.url).await.unwrap();
    assert!(index.status().is_success(), "{}: {}", a.url, index.status());
    let index: serde_json::Value = index.json().await.unwrap();
    assert!(index["profiles"].is_array(), "{index}");

    assert!(
        !dir.path().join("data").exists(),
        "the demo wrote state into the working copy: {:?}",
        std::fs::read_dir(dir.path().join("data")).map(|d| d.count())
    );
    for demo in [a, b] {
        let (status, log) = stop(demo);
        assert!(
            status.success(),
            "demo ended with {status}; its log:\n{log}"
        );
        let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert!(
            errors.is_empty(),
            "a healthy demo logged ERROR lines:\n{}",
            errors.join("\n")
        );
        let before_stop = log.split("stopping:").next().unwrap();
        let warnings: Vec<&str> = before_stop
            .lines()
            .filter(|l| l.contains(" WARN "))
            .collect();
        assert!(
            warnings.is_empty(),
            "a healthy demo logged WARN lines before it was stopped:\n{}",
            warnings.join("\n")
        );
    }
}

#[test]
fn a_busy_api_port_names_the_way_out() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
        .args(["demo", "--port", &port])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a busy port:\n{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("--port 0"),
        "the error should name the port and --port 0:\n{stderr}"
    );
}
