//! The shipped configs validate; a broken config gets every mistake named with its path.

mod common;

use std::process::Command;

use common::repo_root;

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
}

#[test]
fn shipped_demo_config_validates() {
    let out = gateway()
        .args(["validate", "-c"])
        .arg(repo_root().join("config/demo.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("OK: 1 OPC UA source(s), 11 mapping rule(s)"),
        "{stdout}"
    );
}

#[test]
fn three_mistakes_are_all_named_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("broken.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]
[[opcua]]
name = "sim"
endpoint = "opc.tcp://127.0.0.1:4840/"
[mqtt]
qos = 2
[[mapping]]
node_id = "ns=2;x=1"
submodel = "urn:aas-gateway:sim:sm:cnc1:operational-data"
path = "SpindleSpeed"
[[mapping]]
node_id = "nsu=urn:opcua-sim:cnc;s=CNC1.FeedRate"
submodel = "urn:aas-gateway:sim:sm:cnc1:operational-data"
path = "FeedRateTypo"
"#,
            root = repo_root().display()
        ),
    )
    .unwrap();
    let out = gateway()
        .args(["validate", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 error(s)"), "{stderr}");
    assert!(
        stderr.contains(r#"mapping[0].node_id: "ns=2;x=1" is not a NodeId"#),
        "{stderr}"
    );
    assert!(stderr.contains("mqtt.qos: 2 is not supported"), "{stderr}");
    assert!(
        stderr.contains(r#"mapping[1].path: "FeedRateTypo": no element "FeedRateTypo" here"#),
        "{stderr}"
    );
    // Each with the line it was set on.
    for located in [
        "broken.toml:8: mqtt.qos",
        "broken.toml:10: mapping[0].node_id",
        "broken.toml:16: mapping[1].path",
    ] {
        assert!(
            stderr.contains(located),
            "missing {located:?} in:\n{stderr}"
        );
    }
}

#[test]
fn syntax_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("typo.toml");
    std::fs::write(&cfg, "[mqtt]\nhots = \"x\"\n").unwrap();
    let out = gateway()
        .args(["validate", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("typo.toml:2: mqtt.hots: unknown key; did you mean `host`?"),
        "{stderr}"
    );
}

#[test]
fn env_overrides_apply() {
    let out = gateway()
        .args(["validate", "-c"])
        .arg(repo_root().join("config/demo.toml"))
        .env("AAS_GATEWAY__MQTT__PORT", "2883")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("MQTT 127.0.0.1:2883"), "{stdout}");
}

#[test]
fn a_broken_template_is_named_with_file_and_json_path() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("broken.aas.json");
    std::fs::write(
        &template,
        r#"{"submodels": [{"id": "urn:x", "idShort": "S", "modelType": "Submodel", "submodelElements": [
            {"modelType": "Property", "idShort": "Speed", "valueType": "xs:double", "value": "fast"},
            {"modelType": "Property", "idShort": "Speed", "valueType": "xs:double"}]}]}"#,
    )
    .unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        "[aas]\nenvironments = [\"broken.aas.json\"]\n[[opcua]]\nname = \"s\"\nendpoint = \"opc.tcp://127.0.0.1:4840/\"\n",
    )
    .unwrap();
    let out = gateway()
        .args(["validate", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("broken.aas.json"), "{stderr}");
    assert!(
        stderr
            .contains("submodels[0].submodelElements[0].value: \"fast\" is not a valid xs:double"),
        "{stderr}"
    );
    assert!(
        stderr.contains("submodels[0].submodelElements[1].idShort: \"Speed\" is used twice"),
        "{stderr}"
    );
}

#[test]
fn opcua_acquisition_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("broken.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]
[[opcua]]
name = "sim"
endpoint = "opc.tcp://127.0.0.1:4840/"
deadband_type = "percent"
deadband_value = 150.0
read_interval_ms = 0
user_certificate = "missing-user.der"
[[mapping]]
node_id = "nsu=urn:opcua-sim:cnc;s=CNC1.FeedRate"
submodel = "urn:aas-gateway:sim:sm:cnc1:operational-data"
path = "FeedRate"
mode = "read"
queue_size = 0
deadband_type = "absolute"
deadband_value = -1.0
"#,
            root = repo_root().display()
        ),
    )
    .unwrap();
    let out = gateway()
        .args(["validate", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for expected in [
        "opcua[0].deadband_value: 150 is a percentage and must be ≤ 100",
        "opcua[0].read_interval_ms: must be at least 1",
        "opcua[0].user_private_key: user_certificate and user_private_key go together",
        "opcua[0].user_certificate:",
        "mapping[0].queue_size: must be at least 1",
        "mapping[0].deadband_value: -1 must be a finite number ≥ 0",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}
