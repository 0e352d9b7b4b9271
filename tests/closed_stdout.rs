//! Every printing command ends quietly when its reader has gone (`aas-gateway export … | head`):
//! exit status 0, no panic message. `println!` panicked there ("failed printing to stdout:
//! Broken pipe", exit 101).
//!
//! The pipe's read end is closed before the command starts, so its first write fails with
//! EPIPE every time, whatever the machine's speed.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// Runs the gateway binary with `args`, stdout into a pipe nobody reads, and checks that it
/// ended quietly.
fn assert_quiet_on_closed_stdout(args: &[&str]) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run aas-gateway");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "aas-gateway {args:?} on a closed stdout printed:\n{stderr}"
    );
    assert!(
        out.status.success(),
        "aas-gateway {args:?} on a closed stdout ended with {}:\n{stderr}",
        out.status
    );
}

#[test]
fn export_validate_token_and_pki_list_end_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped demo config with the PKI in the test's own folder (pki list creates the
    // gateway's certificate there).
    let demo = std::fs::read_to_string(repo_root().join("config/demo.toml")).unwrap();
    let cfg = dir.path().join("demo.toml");
    std::fs::write(
        &cfg,
        demo.replace(
            "environments = [\"../aas-templates/cnc1.aas.json\"]",
            &format!(
                "environments = [\"{}\"]",
                repo_root().join("aas-templates/cnc1.aas.json").display()
            ),
        )
        .replace(
            "pki_dir = \"../pki\"",
            &format!("pki_dir = \"{}\"", dir.path().join("pki").display()),
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    assert_quiet_on_closed_stdout(&["export", "-c", cfg]);
    assert_quiet_on_closed_stdout(&["validate", "-c", cfg]);
    assert_quiet_on_closed_stdout(&["token", "new", "--role", "reader"]);
    assert_quiet_on_closed_stdout(&["pki", "list", "-c", cfg]);
}

#[test]
fn audit_export_and_verify_end_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let log = aas_gateway::audit::AuditLog::open(&audit_dir, Default::default()).unwrap();
    for i in 0..100 {
        log.record("test_event", serde_json::json!({ "n": i }));
    }
    log.flush();
    let audit_dir = audit_dir.to_str().unwrap();
    assert_quiet_on_closed_stdout(&["audit", "export", "--dir", audit_dir]);
    assert_quiet_on_closed_stdout(&["audit", "verify", "--dir", audit_dir]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), 500).await;
    let url = sim.endpoint_url();
    let pki = dir.path().join("pki");
    let pki = pki.to_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        assert_quiet_on_closed_stdout(&["browse", &url, "--pki-dir", &pki]);
    })
    .await
    .unwrap();
    sim.stop().await;
}
