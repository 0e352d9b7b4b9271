//! CI smoke version of the benchmark: the `gateway-bench` binary (both MQTT layouts) with 5,000 items changing
//! every second for 20 s, the simulator in-process, the debug gateway as a separate process,
//! both sinks on. Asserts zero loss in MQTT and ILP, not timing (debug build, shared CI box).
//! Needs mosquitto and VictoriaMetrics (`.ci/peers.sh install`).

use std::process::Command;

#[test]
fn five_thousand_items_for_twenty_seconds_lose_nothing_in_either_sink() {
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("smoke.md");
    let status = Command::new(env!("CARGO_BIN_EXE_gateway-bench"))
        .args(["--cases", "5000@1000", "--seconds", "20", "--no-bare"])
        .arg("--sim-in-process")
        .arg("--gateway")
        .arg(env!("CARGO_BIN_EXE_aas-gateway"))
        .arg("--out")
        .arg(&report)
        .arg("--assert-zero-loss")
        .status()
        .expect("run gateway-bench");
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    assert!(status.success(), "gateway-bench failed:\n{text}");
    assert!(text.contains("| 5000 @ 1000 ms |"), "{text}");
}
