//! The edge build (`--no-default-features`, as the Dockerfile builds it) links no OPC UA server
//! and no MQTT broker: the demo's simulator and embedded broker, and the benchmark harness, are
//! behind the `demo` feature. Checked on cargo's own resolved dependency graph; `tests/run.sh`
//! also compiles that build (`cargo check --no-default-features`).

use std::process::Command;

/// `cargo tree` of the gateway's normal dependencies with the given feature flags, one
/// "name version features" line per crate.
fn dependency_lines(flags: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "-p",
            "aas-gateway",
            "-e",
            "normal",
        ])
        .args(["--prefix", "none", "-f", "{p} {f}"])
        .args(flags)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn links_server_or_broker(tree: &str) -> Vec<&str> {
    tree.lines()
        .filter(|l| {
            l.starts_with("rumqttd ")
                || l.starts_with("opcua-sim ")
                || l.starts_with("async-opcua-server ")
                || (l.starts_with("async-opcua ") && l.split([' ', ',']).any(|f| f == "server"))
        })
        .collect()
}

#[test]
fn the_edge_build_links_no_opc_ua_server_and_no_mqtt_broker() {
    let edge = dependency_lines(&["--no-default-features"]);
    assert!(
        edge.lines().any(|l| l.starts_with("rumqttc ")),
        "the MQTT client must stay: {edge}"
    );
    assert!(
        edge.lines().any(|l| l.starts_with("async-opcua-client ")),
        "the OPC UA client must stay: {edge}"
    );
    let found = links_server_or_broker(&edge);
    assert!(found.is_empty(), "the edge build links: {found:?}");
    // The check itself can fail: the default (demo) build does link both.
    let demo = dependency_lines(&[]);
    assert!(
        !links_server_or_broker(&demo).is_empty(),
        "the demo build should link the simulator and the broker: {demo}"
    );
}

/// The shipped binary allocates through jemalloc with the settings `src/main.rs` exports
/// (`MALLOC_CONF`). A misnamed export is silently ignored by jemalloc, leaving its defaults
/// (8 arenas on 2 cores, pages kept 10 s): jemalloc's own statistics say what it runs with.
#[cfg(target_os = "linux")]
#[test]
fn the_gateway_runs_on_jemalloc_with_its_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run aas-gateway");
    assert!(out.status.success(), "{out:?}");
    let stats = String::from_utf8_lossy(&out.stderr);
    for setting in [
        "opt.narenas: 1\n",
        "opt.background_thread: true",
        "opt.dirty_decay_ms: 250 ",
        "opt.muzzy_decay_ms: 0 ",
    ] {
        assert!(
            stats.contains(setting),
            "jemalloc does not run with `{setting}`:\n{stats}"
        );
    }
}
