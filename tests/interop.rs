//! Interop with independent OPC UA servers: a Python asyncua server and a node-opcua server
//! (tests/peers/), each with an odd namespace (not at index 2), string/numeric/GUID/opaque node
//! ids and every built-in type, with fixed values and source timestamps. The gateway maps all
//! of them onto tests/fixtures/interop.aas.json; the test compares value by value what arrives
//! in MQTT, with the right xs type, quality, status code and source timestamp.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aas_gateway::config::Config;
use aas_gateway::pipeline::Gateway;
use common::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const NS: &str = "urn:interop:odd namespace/ä";
const SUBMODEL: &str = "urn:aas-gateway:test:sm:interop";
const TS: &str = "2024-01-02T03:04:05.678Z";
const GOOD: u32 = 0;
const UNCERTAIN_SENSOR_NOT_ACCURATE: u32 = 0x4093_0000;
const BAD_SENSOR_FAILURE: u32 = 0x808C_0000;

/// (element idShort, node id without namespace, extra rule settings)
const RULES: &[(&str, &str, &str)] = &[
    ("Boolean", "s=Types/Boolean", ""),
    ("SByte", "s=Types/SByte", ""),
    ("Byte", "s=Types/Byte", ""),
    ("Int16", "s=Types/Int16", ""),
    ("UInt16", "s=Types/UInt16", ""),
    ("Int32", "s=Types/Int32", ""),
    ("UInt32", "s=Types/UInt32", ""),
    ("Int64", "s=Types/Int64", ""),
    ("UInt64", "s=Types/UInt64", ""),
    ("Float", "s=Types/Float", ""),
    ("Double", "s=Types/Double", ""),
    ("DoubleNaN", "s=Types/DoubleNaN", ""),
    ("DoublePosInf", "s=Types/DoublePosInf", ""),
    ("FloatNegInf", "s=Types/FloatNegInf", ""),
    ("String", "s=Types/String", ""),
    ("DateTime", "s=Types/DateTime", ""),
    ("GuidNode", "g=72962B91-FA75-4AE6-8D28-B404DC7DAF63", ""),
    ("OpaqueNode", "b=AQID", ""),
    ("NumericNode", "i=1001", ""),
    ("StatusCodeValue", "i=1002", ""),
    ("DoubleArray", "s=Types/DoubleArray", ""),
    ("Int32Array", "s=Types/Int32Array", ""),
    ("StringArray", "s=Types/StringArray", ""),
    ("Range", "s=Types/Range", ""),
    ("Custom", "s=Types/Custom", ""),
    ("Uncertain", "s=Status/Uncertain", ""),
    ("Bad", "s=Status/Bad", ""),
    // A deadband of 2.5 on a counter that counts up by 1: the server may only report
    // changes of 3 or more.
    (
        "Counter",
        "s=Counter",
        "deadband_type = \"absolute\"\ndeadband_value = 2.5\n",
    ),
    (
        "CounterRead",
        "s=CounterRead",
        "mode = \"read\"\nread_interval_ms = 250\n",
    ),
    // Not on the server: reported, and the others keep running.
    ("Missing", "s=DoesNotExist", ""),
];

/// The fixed values both peers serve: (idShort, value, status code). Structures are checked
/// separately (their JSON text is compared as parsed JSON).
fn expected() -> Vec<(&'static str, Value, u32)> {
    vec![
        ("Boolean", json!(true), GOOD),
        ("SByte", json!(-128), GOOD),
        ("Byte", json!(255), GOOD),
        ("Int16", json!(-32768), GOOD),
        ("UInt16", json!(65535), GOOD),
        ("Int32", json!(-2147483648i64), GOOD),
        ("UInt32", json!(4294967295u64), GOOD),
        ("Int64", json!(i64::MIN), GOOD),
        ("UInt64", json!(u64::MAX), GOOD),
        ("Float", json!(3.5), GOOD),
        ("Double", json!(0.1 + 0.2), GOOD),
        ("DoubleNaN", json!("NaN"), GOOD),
        ("DoublePosInf", json!("INF"), GOOD),
        ("FloatNegInf", json!("-INF"), GOOD),
        ("String", json!("Grüße \"quoted\" ✓"), GOOD),
        ("DateTime", json!("2024-02-29T12:34:56.789Z"), GOOD),
        (
            "GuidNode",
            json!("12345678-9abc-def0-1234-56789abcdef0"),
            GOOD,
        ),
        ("OpaqueNode", json!("AAH+/w=="), GOOD),
        ("NumericNode", json!("Hallo Welt"), GOOD),
        ("StatusCodeValue", json!(BAD_SENSOR_FAILURE), GOOD),
        ("DoubleArray", json!([1.5, -2.25, 3e10]), GOOD),
        ("Int32Array", json!([-1, 0, 2147483647]), GOOD),
        ("StringArray", json!(["a", "b c"]), GOOD),
        ("Uncertain", json!(20.5), UNCERTAIN_SENSOR_NOT_ACCURATE),
    ]
}

/// The xs type each element has in the fixture, read from the fixture itself.
fn fixture_types() -> BTreeMap<String, String> {
    let text =
        std::fs::read_to_string(repo_root().join("tests/fixtures/interop.aas.json")).unwrap();
    let env: Value = serde_json::from_str(&text).unwrap();
    env["submodels"][0]["submodelElements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let t = e
                .get("valueType")
                .or_else(|| e.get("valueTypeListElement"))
                .unwrap();
            (
                e["idShort"].as_str().unwrap().to_string(),
                t.as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `security`: (security_policy, security_mode) of the connection.
async fn run_against(peer: &PeerServer, structures: &[(&str, Value)], security: (&str, &str)) {
    check_aas_file(&repo_root().join("tests/fixtures/interop.aas.json"));
    let broker = Mosquitto::start();
    let collector = MqttCollector::start(broker.port, "io/#").await;
    let mut toml = format!(
        r#"
[api]
listen = "127.0.0.1:0"
[aas]
environments = ["{root}/tests/fixtures/interop.aas.json"]
[[opcua]]
name = "peer"
endpoint = "{url}"
security_policy = "{policy}"
security_mode = "{mode}"
trust_server_certs = true
# node-opcua's certificate names the machine's host name, not 127.0.0.1.
verify_server_certs = false
publishing_interval_ms = 100
sampling_interval_ms = 50
pki_dir = "{pki}"
[mqtt]
port = {mqtt}
topic_prefix = "io"
"#,
        root = repo_root().display(),
        url = peer.url,
        policy = security.0,
        mode = security.1,
        pki = gateway_pki().display(),
        mqtt = broker.port,
    );
    for (element, id, extra) in RULES {
        toml += &format!(
            "[[mapping]]\nnode_id = \"nsu={NS};{id}\"\nsubmodel = \"{SUBMODEL}\"\npath = \"{element}\"\n{extra}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, toml).unwrap();
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(Config::load(&path).unwrap(), shutdown.clone())
        .await
        .unwrap();
    let api = format!("http://{}/api/v3.0", gateway.api_addr.unwrap());

    // Wait until every element (but Missing) has a message and the counters have moved a while.
    let latest = |msgs: &[(String, Value)]| -> BTreeMap<String, Vec<Value>> {
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (topic, body) in msgs {
            let Some(element) = topic.strip_prefix("io/InteropPeer/InteropValues/") else {
                continue; // the gateway's own state topic
            };
            out.entry(element.to_string())
                .or_default()
                .push(body.clone());
        }
        out
    };
    // Elements every peer must deliver: all but the missing node and the structures this
    // peer does not serve.
    let required = |e: &str| {
        e != "Missing"
            && (!matches!(e, "Range" | "Custom") || structures.iter().any(|(s, _)| *s == e))
    };
    let t0 = Instant::now();
    let by_element = loop {
        let got = latest(&collector.snapshot());
        let complete = RULES
            .iter()
            .filter(|(e, _, _)| required(e))
            .all(|(e, _, _)| got.contains_key(*e));
        let moving = got.get("Counter").is_some_and(|v| v.len() >= 5)
            && got.get("CounterRead").is_some_and(|v| v.len() >= 5);
        if complete && moving {
            break got;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "after 30 s: counters {:?} / {:?}; still missing: {:?}",
            got.get("Counter")
                .map(|v| v.iter().map(|b| b["value"].clone()).collect::<Vec<_>>()),
            got.get("CounterRead")
                .map(|v| v.iter().map(|b| b["value"].clone()).collect::<Vec<_>>()),
            RULES
                .iter()
                .map(|r| r.0)
                .filter(|e| !got.contains_key(*e) && required(e))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let types = fixture_types();
    let first = |e: &str| by_element[e][0].clone();
    for (element, value, status) in expected() {
        let body = first(element);
        assert_eq!(body["value"], value, "{element}: {body}");
        assert_eq!(body["statusCode"], status, "{element}: {body}");
        assert_eq!(body["valueType"], types[element], "{element}: {body}");
        assert_eq!(
            body["timestamp"], TS,
            "{element}: source timestamp kept: {body}"
        );
        assert!(body["serverTimestamp"].is_string(), "{element}: {body}");
        let quality = match status >> 30 {
            0 => "good",
            1 => "uncertain",
            _ => "bad",
        };
        assert_eq!(body["quality"], quality, "{element}: {body}");
    }
    // Bad without a value (asyncua drops it) or with one (node-opcua keeps it): either way the
    // status is visible and the value is not presented as good.
    let bad = first("Bad");
    assert_eq!(bad["quality"], "bad", "{bad}");
    assert_eq!(bad["statusCode"], BAD_SENSOR_FAILURE, "{bad}");
    assert!(
        bad["value"].is_null() || bad["value"] == json!(-1.0),
        "{bad}"
    );
    // Structures: OPC UA JSON encoding with named fields.
    for (element, body_fields) in structures {
        let body = first(element);
        let text = body["value"]
            .as_str()
            .unwrap_or_else(|| panic!("{element}: {body}"));
        let parsed: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{element}: {e}: {text}"));
        assert_eq!(&parsed["UaBody"], body_fields, "{element}: {text}");
        assert_eq!(body["valueType"], "xs:string");
    }
    // The deadband filter works on the server: the counter goes +1, +1, +8, ...; with a
    // deadband of 2.5 only the multiples of 10 may be reported after the initial value.
    let counters: Vec<u64> = by_element["Counter"]
        .iter()
        .map(|b| b["value"].as_u64().unwrap())
        .collect();
    assert!(
        counters.iter().skip(1).all(|v| v % 10 == 0) && counters.windows(2).all(|w| w[1] > w[0]),
        "deadband 2.5 not applied: {counters:?}"
    );
    // Read mode: increasing values, no duplicates.
    let reads: Vec<u64> = by_element["CounterRead"]
        .iter()
        .map(|b| b["value"].as_u64().unwrap())
        .collect();
    assert!(reads.windows(2).all(|w| w[1] > w[0]), "{reads:?}");
    assert!(!by_element.contains_key("Missing"));

    // The API serves the same values ($value, ValueOnly).
    let http = reqwest::Client::new();
    let sm = aas_gateway::api::encode_id(SUBMODEL);
    for (element, want) in [
        ("UInt64", json!(u64::MAX)),
        ("DoubleNaN", json!("NaN")),
        ("Int32Array", json!([-1, 0, 2147483647])),
    ] {
        let got: Value = http
            .get(format!(
                "{api}/submodels/{sm}/submodel-elements/{element}/$value"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let got = got.get(element).cloned().unwrap_or(got);
        assert_eq!(got, want, "API {element}");
    }
    shutdown.cancel();
    gateway.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncua_server_every_type_and_id_kind() {
    let peer = PeerServer::start(
        &repo_root().join(".venv/bin/python"),
        &[
            "tests/peers/asyncua_server.py".into(),
            free_port().to_string(),
        ],
    );
    run_against(
        &peer,
        &[
            ("Range", json!({"Low": 0.5, "High": 100})),
            (
                "Custom",
                json!({"Speed": 12.5, "Name": "spindle", "Active": true}),
            ),
        ],
        ("None", "None"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_opcua_server_every_type_and_id_kind() {
    let peer = PeerServer::start(
        std::path::Path::new("/usr/bin/node"),
        &[
            "tests/peers/node_opcua_server.js".into(),
            free_port().to_string(),
        ],
    );
    // node-opcua serves no custom structure here (its data type definition API differs too
    // much to build the same one); the standard Range structure is compared. Its operation
    // limits are tight (5 per call), so every batch is exercised; the channel is encrypted
    // with the policy no other test uses.
    run_against(
        &peer,
        &[("Range", json!({"Low": 0.5, "High": 100}))],
        ("Aes128Sha256RsaOaep", "SignAndEncrypt"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_opcua_server_signed_channel() {
    let peer = PeerServer::start(
        std::path::Path::new("/usr/bin/node"),
        &[
            "tests/peers/node_opcua_server.js".into(),
            free_port().to_string(),
        ],
    );
    run_against(
        &peer,
        &[("Range", json!({"Low": 0.5, "High": 100}))],
        ("Basic256Sha256", "Sign"),
    )
    .await;
}

/// A server that comes back with different namespace indexes (asyncua restarted with more
/// namespaces registered first): the gateway must resolve the `nsu=` ids again, or its
/// recreated monitored items would point at the wrong nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_indexes_that_change_across_a_restart_are_followed() {
    let port = free_port();
    let python = repo_root().join(".venv/bin/python");
    let script = "tests/peers/asyncua_server.py".to_string();
    let first = PeerServer::start(&python, &[script.clone(), port.to_string(), "0".into()]);
    let broker = Mosquitto::start();
    let collector = MqttCollector::start(broker.port, "ns/#").await;
    let mut toml = format!(
        r#"
[api]
enabled = false
[aas]
environments = ["{root}/tests/fixtures/interop.aas.json"]
[[opcua]]
name = "peer"
endpoint = "{url}"
publishing_interval_ms = 100
pki_dir = "{pki}"
[mqtt]
port = {mqtt}
topic_prefix = "ns"
"#,
        root = repo_root().display(),
        url = first.url,
        pki = gateway_pki().display(),
        mqtt = broker.port,
    );
    for (element, id) in [
        ("CounterRead", "s=CounterRead"),
        ("String", "s=Types/String"),
    ] {
        toml += &format!(
            "[[mapping]]\nnode_id = \"nsu={NS};{id}\"\nsubmodel = \"{SUBMODEL}\"\npath = \"{element}\"\n"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, toml).unwrap();
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(Config::load(&path).unwrap(), shutdown.clone())
        .await
        .unwrap();
    let count = |element: &str| {
        collector
            .snapshot()
            .iter()
            .filter(|(t, _)| t.ends_with(&format!("/{element}")))
            .count()
    };
    let t0 = Instant::now();
    while count("CounterRead") < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no values from the first server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(first);
    let strings_before = count("String");
    let counters_before = count("CounterRead");
    // Same port, test namespace now at index 7 instead of 4.
    let _second = PeerServer::start(&python, &[script, port.to_string(), "3".into()]);
    let t1 = Instant::now();
    while count("String") == strings_before || count("CounterRead") < counters_before + 5 {
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "no values after the namespace indexes changed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last_string = collector
        .snapshot()
        .into_iter()
        .rev()
        .find(|(t, _)| t.ends_with("/String"))
        .unwrap()
        .1;
    assert_eq!(last_string["value"], json!("Grüße \"quoted\" ✓"));
    eprintln!("namespace change: values again after {:?}", t1.elapsed());
    shutdown.cancel();
    gateway.wait().await.unwrap();
}
