//! Onboarding a machine in three commands (issue #16), against the bundled simulator:
//! `browse URL --aas OUT` writes an AAS environment (operational data, nameplate, AID 1.1 +
//! AIMC 1.0) that the independent validators accept and `validate` passes unedited; `run` with
//! it serves the exact current value of every variable through the API and MQTT. The same
//! environment with one machine's mapping rewritten as AIMC 2.x, and its AID carrying the
//! published template's defects, runs too; broken references are named by JSON path.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use opcua::types::Variant;
use serde_json::{json, Value};

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
}

/// `browse URL --aas file`: returns stdout (the config).
fn browse_aas(url: &str, file: &Path) -> String {
    let out = gateway()
        .args(["browse", url, "--pki-dir"])
        .arg(gateway_pki())
        .arg("--aas")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "browse --aas failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `validate -c cfg`: (success, stdout + stderr).
fn validate(cfg: &Path) -> (bool, String) {
    let out = gateway()
        .args(["validate", "-c"])
        .arg(cfg)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The value a simulator variant must be served as, written independently of the gateway's
/// conversion code.
fn expected(v: &Variant) -> Value {
    use base64::Engine;
    match v {
        Variant::Boolean(b) => json!(b),
        Variant::SByte(i) => json!(i),
        Variant::Byte(i) => json!(i),
        Variant::Int16(i) => json!(i),
        Variant::UInt16(i) => json!(i),
        Variant::Int32(i) => json!(i),
        Variant::UInt32(i) => json!(i),
        Variant::Int64(i) => json!(i),
        Variant::UInt64(i) => json!(i),
        Variant::Float(f) => json!(f),
        Variant::Double(f) => json!(f),
        Variant::String(s) => json!(s.as_ref()),
        Variant::DateTime(dt) => json!(dt.as_chrono().to_rfc3339()),
        Variant::Guid(g) => json!(g.to_string().to_lowercase()),
        Variant::ByteString(b) => json!(base64::engine::general_purpose::STANDARD
            .encode(b.value.as_deref().unwrap_or_default())),
        Variant::LocalizedText(t) => json!([{"en": t.text.as_ref()}]),
        Variant::Array(a) => Value::Array(a.values.iter().map(expected).collect()),
        other => panic!("test does not expect {other:?}"),
    }
}

/// Equal, with numbers compared as numbers (a Float may print with more digits) and times as
/// instants.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                return x == y;
            }
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                return x == y;
            }
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-6 * x.abs().max(1.0)
        }
        (Value::String(x), Value::String(y)) => {
            x == y
                || matches!(
                    (
                        chrono::DateTime::parse_from_rfc3339(x),
                        chrono::DateTime::parse_from_rfc3339(y)
                    ),
                    (Ok(p), Ok(q)) if p == q
                )
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        _ => a == b,
    }
}

/// An MLP's value-only form `[{"en": text}]` as the plain text MQTT messages carry.
fn mlp_text(v: &Value) -> Value {
    v.pointer("/0/en").cloned().unwrap_or(Value::Null)
}

/// (submodel id, idShort, expected value) of every Good variable of the simulator's machines,
/// its submodel found in the generated environment by the machine's name.
fn expectations(sim: &opcua_sim::Simulator, env: &Value) -> Vec<(String, String, Value)> {
    let submodels = env["submodels"].as_array().unwrap();
    let mut out = Vec::new();
    for c in sim.snapshot() {
        if !c.status.is_good() || c.node_id.contains(".Identification.") {
            continue;
        }
        let (_, id) = c.node_id.split_once(";s=").unwrap();
        let (object, var) = id.split_once('.').unwrap();
        let suffix = format!(":{object}:sm:operational-data");
        let sm = submodels
            .iter()
            .filter_map(|s| s["id"].as_str())
            .find(|s| s.ends_with(&suffix))
            .unwrap_or_else(|| panic!("no operational data of {object}"));
        out.push((sm.to_string(), var.to_string(), expected(&c.value)));
    }
    out
}

/// Polls the API until every expectation holds (or fails after 30 s naming what differs).
async fn api_serves(api: &str, want: &[(String, String, Value)]) {
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    loop {
        let mut wrong = Vec::new();
        let mut cache: std::collections::HashMap<&str, Value> = Default::default();
        for (sm, path, value) in want {
            if !cache.contains_key(sm.as_str()) {
                let url = format!("{api}/submodels/{}/$value", aas_gateway::aas::encode_id(sm));
                let v: Value = http.get(url).send().await.unwrap().json().await.unwrap();
                cache.insert(sm, v);
            }
            let got = &cache[sm.as_str()][path];
            if !same(got, value) {
                wrong.push(format!("{sm} {path}: served {got}, simulator has {value}"));
            }
        }
        if wrong.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} of {} values differ, e.g.:\n{}",
            wrong.len(),
            want.len(),
            wrong[..wrong.len().min(10)].join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `run -c cfg --port 0` with extra environment; returns the child and the API base URL.
async fn run(cfg: &Path, env: &[(&str, String)], log: &Path) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
        .args(["run", "--port", "0", "-c"])
        .arg(cfg)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let api = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no API URL within 30 s:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "the gateway ended:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
    (child, api)
}

/// Rewrites the AIMC 1.0 submodel `aimc_id` as AIMC 2.0 (Sources/Sinks paired by id, one
/// property made non-observable with a polling interval) and gives the AID it points to the
/// published templates' defects (MQTT supplemental semanticId on the OPC UA interface,
/// `td#base`, hrefs without the leading `/`).
fn to_aimc2_with_defects(env: &mut Value, aimc_id: &str) {
    let mc =
        "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/2/0/MappingConfiguration";
    let sem = |s: &str| json!({"type": "ExternalReference", "keys": [{"type": "GlobalReference", "value": s}]});
    let submodels = env["submodels"].as_array_mut().unwrap();
    let aimc = submodels.iter_mut().find(|s| s["id"] == aimc_id).unwrap();
    let config = &aimc["submodelElements"][0]["value"][0];
    let aid_id = config["value"][0]["value"]["keys"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let relations = config["value"][1]["value"].as_array().unwrap().clone();
    let mut sources = Vec::new();
    let mut sinks = Vec::new();
    for (n, r) in relations.iter().enumerate() {
        let id = format!("S{n}");
        sources.push(json!({"modelType": "SubmodelElementCollection", "semanticId": sem(&format!("{mc}/Source")), "value": [
            {"idShort": "Source", "modelType": "ReferenceElement", "semanticId": sem(&format!("{mc}/Source/Source")), "value": r["first"]},
            {"idShort": "PollingInterval", "modelType": "Property", "valueType": "xs:double", "semanticId": sem(&format!("{mc}/Source/PollingInterval")), "value": "0.5"},
            {"idShort": "SourceId", "modelType": "Property", "valueType": "xs:string", "semanticId": sem(&format!("{mc}/Source/SourceId")), "value": id},
        ]}));
        sinks.push(json!({"modelType": "SubmodelElementCollection", "semanticId": sem(&format!("{mc}/Sink")), "value": [
            {"idShort": "Sink", "modelType": "ReferenceElement", "semanticId": sem(&format!("{mc}/Sink/Sink")), "value": r["second"]},
            {"idShort": "SinkId", "modelType": "Property", "valueType": "xs:string", "semanticId": sem(&format!("{mc}/Sink/SinkId")), "value": id},
        ]}));
    }
    aimc["semanticId"] =
        sem("https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/2/0/Submodel");
    aimc["submodelElements"][0]["value"] = json!([{
        "modelType": "SubmodelElementCollection", "semanticId": sem(mc),
        "value": [
            {"idShort": "DefaultPollingInterval", "modelType": "Property", "valueType": "xs:double", "semanticId": sem(&format!("{mc}/DefaultPollingInterval")), "value": "1.0"},
            {"idShort": "Sources", "modelType": "SubmodelElementList", "semanticId": sem(&format!("{mc}/Sources")), "typeValueListElement": "SubmodelElementCollection", "value": sources},
            {"idShort": "Sinks", "modelType": "SubmodelElementList", "semanticId": sem(&format!("{mc}/Sinks")), "typeValueListElement": "SubmodelElementCollection", "value": sinks},
        ]
    }]);
    let aid = submodels.iter_mut().find(|s| s["id"] == aid_id).unwrap();
    let iface = &mut aid["submodelElements"][0];
    iface["supplementalSemanticIds"] = json!([
        sem("http://www.w3.org/2011/mqtt"),
        sem("https://www.w3.org/2019/wot/td")
    ]);
    iface["value"][1]["value"][0]["semanticId"] = sem("https://www.w3.org/2019/wot/td#base");
    let props = iface["value"][2]["value"][0]["value"]
        .as_array_mut()
        .unwrap();
    for (n, p) in props.iter_mut().enumerate() {
        let values = p["value"].as_array_mut().unwrap();
        if n == 0 {
            // Not observable: read cyclically at the PollingInterval.
            for v in values.iter_mut() {
                if v["idShort"] == "observable" {
                    v["value"] = json!("false");
                }
            }
        }
        let forms = values.iter_mut().find(|v| v["idShort"] == "forms").unwrap();
        let href = &mut forms["value"][0]["value"];
        *href = json!(href.as_str().unwrap().trim_start_matches('/'));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_aas_validates_and_runs_unedited() {
    let dir = tempfile::tempdir().unwrap();
    // Values that stay put (no tick within the test), so "exact final value" is well defined.
    let sim = start_sim(dir.path(), 3_600_000).await;
    let url = sim.endpoint_url();
    let env_file = dir.path().join("machines.json");
    let (u, f) = (url.clone(), env_file.clone());
    let toml = tokio::task::spawn_blocking(move || browse_aas(&u, &f))
        .await
        .unwrap();
    assert!(toml.contains("[aas]"), "{toml}");
    assert!(!toml.contains("[[mapping]]"), "{toml}");

    // The independent validators accept it as written.
    let checked = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/validators/check_aas.py"))
        .args(["--check-refs", "--test-engines"])
        .arg(&env_file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let env: Value = serde_json::from_slice(&std::fs::read(&env_file).unwrap()).unwrap();
    let shells: Vec<&str> = env["assetAdministrationShells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["idShort"].as_str().unwrap())
        .collect();
    for machine in ["CNC1", "IMM1", "Conveyor1", "Meter1", "Types"] {
        assert!(shells.contains(&machine), "{machine} missing: {shells:?}");
    }
    // The nameplate comes from the Identification object.
    let plate = env["submodels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"].as_str().unwrap().ends_with(":CNC1:sm:nameplate"))
        .expect("CNC1 nameplate");
    let serial = plate["submodelElements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["idShort"] == "SerialNumber")
        .unwrap();
    assert!(
        serial["value"].as_str().unwrap().starts_with("CNC-"),
        "{serial}"
    );

    // validate, unedited.
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let want = expectations(&sim, &env);
    let (ok, text) = validate(&cfg);
    assert!(ok, "validate rejected the browse output:\n{text}\n{toml}");
    // One rule per AIMC relation, none from the TOML; every Good variable is among them.
    let relations: usize = env["submodels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["idShort"] == "AssetInterfacesMappingConfiguration")
        .map(|s| {
            s["submodelElements"][0]["value"][0]["value"][1]["value"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert!(
        want.len() >= 45 && relations >= want.len(),
        "{} {relations}",
        want.len()
    );
    assert!(
        text.contains(&format!(
            "1 OPC UA source(s), {relations} mapping rule(s), 5 shell(s)"
        )),
        "{text}"
    );

    // run: exact values through the API and MQTT.
    let broker = Mosquitto::start();
    let collector = MqttCollector::start(broker.port, "aas/#").await;
    let log = dir.path().join("run1.log");
    let (mut child, api) = run(
        &cfg,
        &[("AAS_GATEWAY__MQTT__PORT", broker.port.to_string())],
        &log,
    )
    .await;
    api_serves(&api, &want).await;
    let t0 = Instant::now();
    loop {
        let messages = collector.snapshot();
        let missing: Vec<String> = want
            .iter()
            .filter(|(sm, path, value)| {
                let machine = sm
                    .trim_end_matches(":sm:operational-data")
                    .rsplit(':')
                    .next()
                    .unwrap();
                let topic = format!("aas/{machine}/OperationalData/{path}");
                !messages
                    .iter()
                    .rev()
                    .find(|(t, _)| *t == topic)
                    .is_some_and(|(_, m)| {
                        same(&m["value"], value) || same(&m["value"], &mlp_text(value))
                    })
            })
            .map(|(sm, path, _)| format!("{sm} {path}"))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not over MQTT with the simulator's value: {missing:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().await.unwrap();

    // AIMC 2.x and the published templates' AID defects, for CNC1.
    let mut edited = env.clone();
    let aimc_id = env["submodels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .find(|s| s.ends_with(":CNC1:sm:aimc"))
        .unwrap()
        .to_string();
    to_aimc2_with_defects(&mut edited, &aimc_id);
    let edited_file = dir.path().join("edited.json");
    std::fs::write(&edited_file, serde_json::to_vec_pretty(&edited).unwrap()).unwrap();
    let cfg2 = dir.path().join("edited.toml");
    std::fs::write(
        &cfg2,
        toml.replace(
            &std::fs::canonicalize(&env_file)
                .unwrap()
                .display()
                .to_string(),
            &edited_file.display().to_string(),
        ),
    )
    .unwrap();
    let (ok, text) = validate(&cfg2);
    assert!(ok, "{text}");
    let log2 = dir.path().join("run2.log");
    let (mut child, api) = run(
        &cfg2,
        &[("AAS_GATEWAY__MQTT__ENABLED", "false".into())],
        &log2,
    )
    .await;
    api_serves(&api, &want).await;
    child.kill().await.unwrap();

    // Broken references: named by JSON path, every one.
    let mut broken = env.clone();
    let aimc = broken["submodels"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["id"] == aimc_id.as_str())
        .unwrap();
    let rels = &mut aimc["submodelElements"][0]["value"][0]["value"][1]["value"];
    let keys = rels[0]["first"]["keys"].as_array_mut().unwrap();
    keys.last_mut().unwrap()["value"] = json!("NoSuchProperty");
    let keys = rels[1]["second"]["keys"].as_array_mut().unwrap();
    keys.last_mut().unwrap()["value"] = json!("NoSuchElement");
    // And a type that cannot fit: the property of relation 2 said to be an array when its
    // element is not a list (or a boolean when it is).
    let rel2 = rels[2].clone();
    let prop_name = rel2["first"]["keys"].as_array().unwrap().last().unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let second_keys = rel2["second"]["keys"].as_array().unwrap();
    let is_list = second_keys.last().unwrap()["type"] == "SubmodelElementList";
    let wrong_type = if is_list { "boolean" } else { "array" };
    let aid_id = aimc_id.replace(":sm:aimc", ":sm:aid");
    let aid = broken["submodels"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["id"] == aid_id.as_str())
        .unwrap();
    let property = aid["submodelElements"][0]["value"][2]["value"][0]["value"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["idShort"] == prop_name.as_str())
        .unwrap();
    for v in property["value"].as_array_mut().unwrap() {
        if v["idShort"] == "type" {
            v["value"] = json!(wrong_type);
        }
    }
    let broken_file = dir.path().join("broken.json");
    std::fs::write(&broken_file, serde_json::to_vec_pretty(&broken).unwrap()).unwrap();
    let cfg3 = dir.path().join("broken.toml");
    std::fs::write(
        &cfg3,
        toml.replace(
            &std::fs::canonicalize(&env_file)
                .unwrap()
                .display()
                .to_string(),
            &broken_file.display().to_string(),
        ),
    )
    .unwrap();
    let (ok, text) = validate(&cfg3);
    assert!(!ok, "{text}");
    assert!(
        text.contains("submodelElements[0].value[0].value[1].value[0].first")
            && text.contains("AID property missing")
            && text.contains("NoSuchProperty"),
        "{text}"
    );
    assert!(
        text.contains("submodelElements[0].value[0].value[1].value[1].second")
            && text.contains("NoSuchElement"),
        "{text}"
    );
    assert!(
        text.contains("submodelElements[0].value[0].value[1].value[2].second")
            && text.contains(&format!(
                "the AID property's type {wrong_type:?} cannot fit the element"
            )),
        "{text}"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_aas_writes_an_aasx_that_runs() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), 3_600_000).await;
    let url = sim.endpoint_url();
    let file = dir.path().join("machines.aasx");
    let f = file.clone();
    let toml = tokio::task::spawn_blocking(move || browse_aas(&url, &f))
        .await
        .unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let (ok, text) = validate(&cfg);
    assert!(ok, "{text}");
    // The package's JSON is the environment the validators accept.
    let env = aas_gateway::aas::aasx::read_aasx(&file).unwrap();
    let json_file = dir.path().join("inside.json");
    std::fs::write(&json_file, serde_json::to_vec(&env).unwrap()).unwrap();
    check_aas_file(&json_file);
    let want = expectations(&sim, &env);
    let log = dir.path().join("run.log");
    let (mut child, api) = run(
        &cfg,
        &[("AAS_GATEWAY__MQTT__ENABLED", "false".into())],
        &log,
    )
    .await;
    api_serves(&api, &want).await;
    child.kill().await.unwrap();
    sim.stop().await;
}

/// The independent Python asyncua server with an odd namespace URI (blank, non-ASCII) at an
/// unusual index, string/numeric/GUID/opaque node ids, every scalar type, arrays and
/// structures: browse --aas → validators → validate → run serves its fixed values exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_aas_against_the_asyncua_peer() {
    let peer = PeerServer::start(
        &repo_root().join(".venv/bin/python"),
        &[
            "tests/peers/asyncua_server.py".into(),
            free_port().to_string(),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("peer.json");
    let (u, f) = (peer.url.clone(), file.clone());
    let toml = tokio::task::spawn_blocking(move || browse_aas(&u, &f))
        .await
        .unwrap();
    let checked = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/validators/check_aas.py"))
        .args(["--check-refs", "--test-engines"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // An independent AID reader (Eclipse Thingweb's AID → WoT TD converter) finds every
    // property with the node id we wrote, percent-encoding included.
    read_by_thingweb(&file);
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let (ok, text) = validate(&cfg);
    assert!(ok, "{text}\n{toml}");

    // Elements by the node id their description names (idShorts come from browse names).
    let env: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let op = env["submodels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["idShort"] == "OperationalData")
        .expect("an operational-data submodel");
    let sm = op["id"].as_str().unwrap().to_string();
    let element_of = |node: &str| -> String {
        op["submodelElements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                e["description"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_lowercase()
                    .ends_with(&format!(";{})", node.to_lowercase()))
            })
            .unwrap_or_else(|| panic!("no element for {node}"))["idShort"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let fixed = [
        ("s=Types/Boolean", json!(true)),
        ("s=Types/SByte", json!(-128)),
        ("s=Types/Byte", json!(255)),
        ("s=Types/Int16", json!(-32768)),
        ("s=Types/UInt16", json!(65535)),
        ("s=Types/Int32", json!(-2147483648i64)),
        ("s=Types/UInt32", json!(4294967295u64)),
        ("s=Types/Int64", json!(i64::MIN)),
        ("s=Types/UInt64", json!(u64::MAX)),
        ("s=Types/Float", json!(3.5)),
        ("s=Types/Double", json!(0.1 + 0.2)),
        ("s=Types/String", json!("Grüße \"quoted\" ✓")),
        ("s=Types/DateTime", json!("2024-02-29T12:34:56.789Z")),
        (
            "g=72962B91-FA75-4AE6-8D28-B404DC7DAF63",
            json!("12345678-9abc-def0-1234-56789abcdef0"),
        ),
        ("b=AQID", json!("AAH+/w==")),
        ("i=1001", json!([{"en": "Hallo Welt"}])),
        ("i=1002", json!(0x808C_0000u32)),
        ("s=Types/DoubleArray", json!([1.5, -2.25, 3e10])),
        ("s=Types/Int32Array", json!([-1, 0, 2147483647])),
        ("s=Types/StringArray", json!(["a", "b c"])),
    ];
    let want: Vec<(String, String, Value)> = fixed
        .iter()
        .map(|(node, v)| (sm.clone(), element_of(node), v.clone()))
        .collect();
    let log = dir.path().join("run.log");
    let (mut child, api) = run(
        &cfg,
        &[("AAS_GATEWAY__MQTT__ENABLED", "false".into())],
        &log,
    )
    .await;
    api_serves(&api, &want).await;
    // Structures arrive as their JSON text in an xs:string Property.
    let http = reqwest::Client::new();
    let url = format!(
        "{api}/submodels/{}/$value",
        aas_gateway::aas::encode_id(&sm)
    );
    let served: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    for (node, fields) in [
        ("s=Types/Range", json!({"Low": 0.5, "High": 100})),
        (
            "s=Types/Custom",
            json!({"Speed": 12.5, "Name": "spindle", "Active": true}),
        ),
    ] {
        let text = served[element_of(node)]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // The gateway's encoding of structures (as in tests/interop.rs): type id + body.
        assert_eq!(parsed["UaBody"], fields, "{node}: served {text:?}");
    }
    child.kill().await.unwrap();
}

/// AIMC 2.x with Lua transformations next to the generated AIMC 1.0: a unit conversion of two
/// sources into one sink produces the expected value; a transformation that loops and one that
/// fails are stopped and reported, and every other mapping keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aimc2_lua_transformations_run_and_faulty_ones_are_contained() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), 3_600_000).await;
    let env_file = dir.path().join("machines.json");
    let (u, f) = (sim.endpoint_url(), env_file.clone());
    let toml = tokio::task::spawn_blocking(move || browse_aas(&u, &f))
        .await
        .unwrap();
    let mut env: Value = serde_json::from_slice(&std::fs::read(&env_file).unwrap()).unwrap();
    let want = expectations(&sim, &env);
    let submodels = env["submodels"].as_array_mut().unwrap();
    let aid_id = submodels
        .iter()
        .filter_map(|s| s["id"].as_str())
        .find(|s| s.ends_with(":CNC1:sm:aid"))
        .unwrap()
        .to_string();
    let op = submodels
        .iter_mut()
        .find(|s| {
            s["id"]
                .as_str()
                .unwrap()
                .ends_with(":CNC1:sm:operational-data")
        })
        .unwrap();
    let op_id = op["id"].as_str().unwrap().to_string();
    for name in ["SpeedSum", "Looping", "Failing"] {
        op["submodelElements"]
            .as_array_mut()
            .unwrap()
            .push(json!({"idShort": name, "modelType": "Property", "valueType": "xs:double"}));
    }
    let mc =
        "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/2/0/MappingConfiguration";
    let prop_ref = |p: &str| {
        json!({"type": "ModelReference", "keys": [
            {"type": "Submodel", "value": aid_id},
            {"type": "SubmodelElementCollection", "value": "InterfaceOPCUA"},
            {"type": "SubmodelElementCollection", "value": "InteractionMetadata"},
            {"type": "SubmodelElementCollection", "value": "properties"},
            {"type": "SubmodelElementCollection", "value": p}]})
    };
    let config = |lua: &str, sources: &[(&str, &str)], sink: &str| {
        json!({"modelType": "SubmodelElementCollection", "value": [
            {"idShort": "Transformation", "modelType": "Blob", "contentType": "text/plain",
             "semanticId": {"type": "ExternalReference", "keys": [{"type": "GlobalReference", "value": format!("{mc}/Transformation")}]},
             "value": base64::engine::general_purpose::STANDARD.encode(lua)},
            {"idShort": "Sources", "modelType": "SubmodelElementList", "typeValueListElement": "SubmodelElementCollection",
             "value": sources.iter().map(|(id, p)| json!({"modelType": "SubmodelElementCollection", "value": [
                {"idShort": "Source", "modelType": "ReferenceElement", "value": prop_ref(p)},
                {"idShort": "SourceId", "modelType": "Property", "valueType": "xs:string", "value": id}]})).collect::<Vec<_>>()},
            {"idShort": "Sinks", "modelType": "SubmodelElementList", "typeValueListElement": "SubmodelElementCollection",
             "value": [{"modelType": "SubmodelElementCollection", "value": [
                {"idShort": "Sink", "modelType": "ReferenceElement", "value": {"type": "ModelReference", "keys": [
                    {"type": "Submodel", "value": op_id}, {"type": "Property", "value": sink}]}},
                {"idShort": "SinkId", "modelType": "Property", "valueType": "xs:string", "value": "Out"}]}]},
        ]})
    };
    submodels.push(json!({
        "modelType": "Submodel", "id": "urn:test:aimc2", "idShort": "AssetInterfacesMappingConfiguration",
        "semanticId": {"type": "ExternalReference", "keys": [{"type": "GlobalReference",
            "value": "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/2/0/Submodel"}]},
        "submodelElements": [{"idShort": "MappingConfigurations", "modelType": "SubmodelElementList",
            "typeValueListElement": "SubmodelElementCollection", "value": [
                config("function aimc_main(s) return { Out = (s.S + s.F) * 0.001 } end",
                    &[("S", "SpindleSpeed"), ("F", "FeedRate")], "SpeedSum"),
                config("function aimc_main(s) while true do end end", &[("S", "SpindleSpeed")], "Looping"),
                config("function aimc_main(s) error('no conversion for ' .. s.F) end", &[("F", "FeedRate")], "Failing"),
            ]}],
    }));
    std::fs::write(&env_file, serde_json::to_vec_pretty(&env).unwrap()).unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let (ok, text) = validate(&cfg);
    assert!(ok, "{text}");

    let log = dir.path().join("run.log");
    let (mut child, api) = run(
        &cfg,
        &[("AAS_GATEWAY__MQTT__ENABLED", "false".into())],
        &log,
    )
    .await;
    let number = |var: &str| {
        want.iter()
            .find(|(sm, p, _)| sm == &op_id && p == var)
            .map(|(_, _, v)| v.as_f64().unwrap())
            .unwrap()
    };
    let sum = (number("SpindleSpeed") + number("FeedRate")) * 0.001;
    let mut all = want.clone();
    all.push((op_id.clone(), "SpeedSum".into(), json!(sum)));
    api_serves(&api, &all).await;
    let http = reqwest::Client::new();
    let url = format!(
        "{api}/submodels/{}/$value",
        aas_gateway::aas::encode_id(&op_id)
    );
    let served: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    assert!(served.get("Looping").is_none_or(Value::is_null), "{served}");
    assert!(served.get("Failing").is_none_or(Value::is_null), "{served}");
    child.kill().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("time limit per call"), "{text}");
    assert!(text.contains("no conversion for"), "{text}");
    sim.stop().await;
}

/// The round trip: `export --aid` of a TOML-configured gateway writes its mapping as AID +
/// AIMC; a config with only that environment and the connection entry runs the same rules
/// (one left out with a warning: AIMC 1.0 has no scale/offset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_aid_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), 3_600_000).await;
    let connection = format!(
        "[[opcua]]\nname = \"sim\"\nendpoint = \"{}\"\npki_dir = \"{}\"\n",
        sim.endpoint_url(),
        gateway_pki().display()
    );
    let mut toml = format!(
        "[gateway]\nname = \"round-trip\"\n[aas]\nenvironments = [\"{}\"]\n{connection}",
        repo_root().join("aas-templates/cnc1.aas.json").display()
    );
    for node in cnc::NODES {
        toml += &format!(
            "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:cnc;s=CNC1.{node}\"\nsubmodel = \"{}\"\npath = \"{node}\"\n",
            cnc::SUBMODEL
        );
    }
    toml += &format!(
        "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeedSetpoint\"\nsubmodel = \"{}\"\npath = \"SpindleSpeedSetpoint\"\nscale = 2.0\n",
        cnc::SUBMODEL
    );
    let first = dir.path().join("first.toml");
    std::fs::write(&first, &toml).unwrap();
    let out = gateway()
        .args(["export", "--aid", "-c"])
        .arg(&first)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("mapping[10]: scale/offset cannot be expressed in AIMC 1.0"),
        "{stderr}"
    );
    let exported = dir.path().join("exported.json");
    std::fs::write(&exported, &out.stdout).unwrap();
    check_aas_file(&exported);

    let second = dir.path().join("second.toml");
    std::fs::write(
        &second,
        format!(
            "[aas]\nenvironments = [\"{}\"]\n{connection}",
            exported.display()
        ),
    )
    .unwrap();
    let (ok, text) = validate(&second);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "1 OPC UA source(s), {} mapping rule(s)",
            cnc::NODES.len()
        )),
        "{text}"
    );
    let env: Value = serde_json::from_slice(&std::fs::read(&exported).unwrap()).unwrap();
    let want: Vec<_> = expectations_of(&sim, "CNC1", cnc::SUBMODEL)
        .into_iter()
        .filter(|(_, p, _)| cnc::NODES.contains(&p.as_str()))
        .collect();
    assert_eq!(want.len(), cnc::NODES.len(), "{want:?}");
    assert!(env["submodels"].as_array().unwrap().len() >= 4);
    let log = dir.path().join("run.log");
    let (mut child, api) = run(
        &second,
        &[("AAS_GATEWAY__MQTT__ENABLED", "false".into())],
        &log,
    )
    .await;
    api_serves(&api, &want).await;
    child.kill().await.unwrap();
    sim.stop().await;
}

/// (submodel, idShort, value) of the Good variables of one simulated machine, mapped onto
/// `submodel` by name.
fn expectations_of(
    sim: &opcua_sim::Simulator,
    object: &str,
    submodel: &str,
) -> Vec<(String, String, Value)> {
    sim.snapshot()
        .into_iter()
        .filter(|c| c.status.is_good())
        .filter_map(|c| {
            let (_, id) = c.node_id.split_once(";s=")?;
            let var = id.strip_prefix(&format!("{object}."))?;
            (!var.contains('.'))
                .then(|| (submodel.to_string(), var.to_string(), expected(&c.value)))
        })
        .collect()
}

/// Converts the AID submodels of `file` with @thingweb/aas-aid (tests/peers/aas-aid, installed
/// by `.ci/peers.sh install`) and checks that each resulting WoT Thing Description has exactly
/// our properties, with the endpoint as base and hrefs naming the same node ids.
fn read_by_thingweb(file: &Path) {
    use aas_gateway::aas::aid::node_id_from_href;
    let peer = repo_root().join("tests/peers/aas-aid");
    assert!(
        peer.join("node_modules/@thingweb/aas-aid").is_dir(),
        "{} has no node_modules: run `.ci/peers.sh install`",
        peer.display()
    );
    let out = Command::new("node")
        .arg(peer.join("aid2td.js"))
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tds: Value = serde_json::from_slice(&out.stdout).unwrap();
    let env: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let mut checked = 0;
    for sm in env["submodels"].as_array().unwrap() {
        if sm["idShort"] != "AssetInterfacesDescription" {
            continue;
        }
        let td = &tds[sm["id"].as_str().unwrap()];
        let iface = &sm["submodelElements"][0];
        let base = iface["value"][1]["value"][0]["value"].as_str().unwrap();
        assert_eq!(td["base"], base, "{td}");
        let ours = iface["value"][2]["value"][0]["value"].as_array().unwrap();
        assert_eq!(
            td["properties"].as_object().unwrap().len(),
            ours.len(),
            "{td}"
        );
        for p in ours {
            let name = p["idShort"].as_str().unwrap();
            let forms = p["value"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["idShort"] == "forms")
                .unwrap();
            let href = forms["value"][0]["value"].as_str().unwrap();
            let theirs = td["properties"][name]["hrefs"][0]
                .as_str()
                .unwrap_or_else(|| panic!("{name} missing in the TD: {td}"));
            assert!(theirs.starts_with(base.trim_end_matches('/')), "{theirs}");
            assert_eq!(
                node_id_from_href(theirs),
                node_id_from_href(href),
                "{name}: TD href {theirs}, ours {href}"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} properties checked");
}
