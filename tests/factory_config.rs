//! `config/factory.toml` (all four simulated machines) validates, fills every mapped element
//! from the simulator, and `aas-gateway export` writes environments the independent checkers
//! (aas-core3.0, basyx-python-sdk, aas-test-engines via tests/validators/check_aas.py) accept.

mod common;

use std::process::Command;

use common::repo_root;
use serde_json::Value;

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
}

fn check_aas(file: &std::path::Path) -> (bool, String) {
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/validators/check_aas.py"))
        .args(["--check-refs", "--test-engines"])
        .arg(file)
        .output()
        .expect(".venv missing: run `.ci/peers.sh install`");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The factory config pointed at `endpoint`, with absolute template paths, in `dir`.
fn factory_config_for(endpoint: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_root().join("config/factory.toml")).unwrap();
    let templates = repo_root().join("aas-templates");
    let text = text
        .replace("opc.tcp://127.0.0.1:4840/", endpoint)
        .replace("\"../aas-templates", &format!("\"{}", templates.display()))
        .replace(
            "pki_dir = \"../pki\"",
            &format!("pki_dir = \"{}\"", dir.join("pki").display()),
        );
    let path = dir.join("factory.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn factory_config_validates() {
    let out = gateway()
        .args(["validate", "-c"])
        .arg(repo_root().join("config/factory.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("56 mapping rule(s), 4 shell(s), 13 submodel(s)"),
        "{stdout}"
    );
}

#[test]
fn export_of_the_templates_passes_the_checkers() {
    let out = gateway()
        .args(["export", "-c"])
        .arg(repo_root().join("config/factory.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        env["assetAdministrationShells"].as_array().unwrap().len(),
        4
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.json");
    std::fs::write(&file, &out.stdout).unwrap();
    let (ok, text) = check_aas(&file);
    println!("{text}");
    assert!(ok, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_export_carries_simulator_values_and_passes_the_checkers() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_sim(dir.path(), 100).await;
    let cfg = factory_config_for(&sim.endpoint_url(), dir.path());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
        .args(["export", "--live", "30", "-c"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    sim.stop().await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env: Value = serde_json::from_slice(&out.stdout).unwrap();

    // Every machine's nameplate carries what its DI Identification nodes report (the simulator
    // README's values; the templates have no serial number and CNC1's names another maker).
    for (key, serial_prefix, manufacturer) in [
        ("cnc1", "CNC-", "Simulated Machine Tools GmbH"),
        ("imm1", "IMM-", "Simulated Plastics Machinery AG"),
        ("conveyor1", "CV-", "Simulated Conveying Systems Ltd"),
        ("meter1", "EM-", "Simulated Metering Inc."),
    ] {
        let nameplate = submodel(&env, &format!("urn:aas-gateway:sim:sm:{key}:nameplate"));
        let serial = element(nameplate, "SerialNumber")["value"]
            .as_str()
            .unwrap_or("");
        let digits = serial.strip_prefix(serial_prefix).unwrap_or("");
        assert!(
            digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()),
            "{key}: SerialNumber {serial:?}"
        );
        assert_eq!(
            element(nameplate, "ManufacturerName")["value"],
            serde_json::json!([{"language": "en", "text": manufacturer}]),
            "{key}"
        );
    }
    // Live process values arrived (the meter's power is never 0, the barrel is heating).
    let meter = submodel(&env, "urn:aas-gateway:sim:sm:meter1:operational-data");
    let power: f64 = element(meter, "ActivePower")["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(power > 1.0, "ActivePower {power}");
    let imm = submodel(&env, "urn:aas-gateway:sim:sm:imm1:operational-data");
    let zones = element(imm, "BarrelZoneTemperatures")["value"]
        .as_array()
        .unwrap();
    assert_eq!(zones.len(), 4);
    for z in zones {
        let t: f64 = z["value"].as_str().unwrap().parse().unwrap();
        assert!(t > 100.0, "barrel zone at {t} °C");
    }

    let file = dir.path().join("live.json");
    std::fs::write(&file, &out.stdout).unwrap();
    let (ok, text) = check_aas(&file);
    println!("{text}");
    assert!(ok, "{text}");
}

fn submodel<'e>(env: &'e Value, id: &str) -> &'e Value {
    env["submodels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no submodel {id}"))
}

fn element<'s>(sm: &'s Value, id_short: &str) -> &'s Value {
    sm["submodelElements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["idShort"] == id_short)
        .unwrap_or_else(|| panic!("no element {id_short}"))
}

#[test]
fn aasx_export_is_read_by_basyx_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("factory.aasx");
    let out = gateway()
        .args(["export", "-c"])
        .arg(repo_root().join("config/factory.toml"))
        .arg("--aasx")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // failsafe=False: any defect raises instead of being logged and skipped.
    let script = r#"
import sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
import basyx.aas.adapter.aasx as aasx
from basyx.aas import model
store = model.DictObjectStore()
with aasx.AASXReader(sys.argv[1], failsafe=False) as reader:
    reader.read_into(store, aasx.DictSupplementaryFileContainer())
shells = sum(isinstance(o, model.AssetAdministrationShell) for o in store)
submodels = sum(isinstance(o, model.Submodel) for o in store)
print(f"shells={shells} submodels={submodels}")
"#;
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("shells=4 submodels=13"), "{text}");
}
