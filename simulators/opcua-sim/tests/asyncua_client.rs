//! The simulator read by an independent OPC UA stack: the Python asyncua client browses the
//! factory and reads every variable; every built-in type must come back with its own type.

use std::process::Command;

use opcua_sim::{SimOptions, Simulator};

fn python() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        p.is_file(),
        "{} missing: run `.ci/peers.sh install`",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncua_browses_and_reads_every_variable() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SimOptions {
        port: 0,
        tick_ms: 200,
        pki_dir: dir.path().join("pki"),
        ..Default::default()
    })
    .await
    .unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/asyncua_read_all.py");
    let url = sim.endpoint_url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .arg(url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    sim.stop().await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "asyncua client failed: {stderr}");
    let vars: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by_name = |name: &str| {
        vars.iter()
            .find(|v| {
                v["node"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(&format!("s=Types.{name}")))
            })
            .unwrap_or_else(|| panic!("Types.{name} not found by asyncua in {vars:?}"))
    };
    for (name, variant) in [
        ("Boolean", "Boolean"),
        ("SByte", "SByte"),
        ("Byte", "Byte"),
        ("Int16", "Int16"),
        ("UInt16", "UInt16"),
        ("Int32", "Int32"),
        ("UInt32", "UInt32"),
        ("Int64", "Int64"),
        ("UInt64", "UInt64"),
        ("Float", "Float"),
        ("Double", "Double"),
        ("String", "String"),
        ("DateTime", "DateTime"),
        ("Guid", "Guid"),
        ("ByteString", "ByteString"),
        ("LocalizedText", "LocalizedText"),
    ] {
        let v = by_name(name);
        assert_eq!(v["variant"], variant, "Types.{name}: {v}");
        assert_eq!(v["status"], "Good", "Types.{name}: {v}");
        assert_eq!(v["is_array"], false, "Types.{name}: {v}");
    }
    assert_eq!(by_name("DoubleArray")["is_array"], true);
    assert_eq!(by_name("Int32Array")["variant"], "Int32");
    assert_eq!(
        by_name("UncertainDouble")["status"],
        "UncertainSensorNotAccurate"
    );
    assert_eq!(by_name("BadDouble")["status"], "BadSensorFailure");
    // Every machine's variables were reachable and readable too.
    for machine in [
        "CNC1.SpindleSpeed",
        "IMM1.MouldTemperature",
        "Conveyor1.Speed",
        "Meter1.ActivePower",
    ] {
        let v = vars
            .iter()
            .find(|v| v["node"].as_str().is_some_and(|n| n.ends_with(machine)))
            .unwrap_or_else(|| panic!("{machine} not found by asyncua"));
        assert_eq!(v["status"], "Good", "{v}");
    }
    assert!(vars.len() >= 60, "only {} variables found", vars.len());
}
