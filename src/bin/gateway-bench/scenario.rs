//! The generated gateway setup for N scale variables: an AAS environment with one shell and one
//! submodel of N `xs:double` Properties `V<i>`, and a config mapping `Scale.V<i>` onto them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::json;

/// Submodel identifier of the generated environment.
pub const SUBMODEL_ID: &str = "urn:aas-gateway:bench:sm:scale";
/// idShort of the submodel: also the ILP table name (series `Scale_value_double`).
pub const SUBMODEL_ID_SHORT: &str = "Scale";
/// MQTT topic prefix of the gateway's values: `bench/Bench/Scale/V<i>`.
pub const TOPIC_PREFIX: &str = "bench";

/// Writes `bench.aas.json` into `dir`.
pub fn write_environment(dir: &Path, n: usize) -> Result<PathBuf> {
    let elements: Vec<_> = (0..n)
        .map(|i| {
            json!({
                "idShort": format!("V{i}"),
                "valueType": "xs:double",
                "modelType": "Property"
            })
        })
        .collect();
    let env = json!({
        "assetAdministrationShells": [{
            "idShort": "Bench",
            "id": "urn:aas-gateway:bench:aas",
            "assetInformation": {"assetKind": "Instance", "globalAssetId": "urn:aas-gateway:bench:asset"},
            "submodels": [{"type": "ModelReference", "keys": [{"type": "Submodel", "value": SUBMODEL_ID}]}],
            "modelType": "AssetAdministrationShell"
        }],
        "submodels": [{
            "idShort": SUBMODEL_ID_SHORT,
            "id": SUBMODEL_ID,
            "kind": "Instance",
            "submodelElements": elements,
            "modelType": "Submodel"
        }]
    });
    let path = dir.join("bench.aas.json");
    std::fs::write(&path, serde_json::to_vec(&env)?)?;
    Ok(path)
}

/// Everything the gateway config needs to know about one case.
pub struct GatewaySetup<'a> {
    pub n: usize,
    pub interval_ms: u64,
    pub endpoint: &'a str,
    pub mqtt_port: u16,
    pub ilp_conf: &'a str,
    /// `mqtt.message_per`: `value` or `submodel`.
    pub message_per: &'a str,
}

/// Writes `gateway.toml` (and the environment it refers to) into `dir`.
pub fn write_config(dir: &Path, s: &GatewaySetup) -> Result<PathBuf> {
    let env = write_environment(dir, s.n)?;
    // Publishing = the change interval; sampling 0 = report every change as the server gets it
    // (sampling at exactly the change interval aliased with the changes: the async-opcua server
    // then dropped ~0.03 % of them, seen as values missing from whole ticks). Queue 10 (≥ 2, see dependencies.md), at most
    // 10,000 notifications per publish (the measured sweet spot). The outbox keeps its default
    // durability: the benchmark measures the product as shipped.
    let mut toml = format!(
        r#"[gateway]
name = "bench-gateway"
[api]
listen = "127.0.0.1:0"
[aas]
environments = ["{env}"]
[[opcua]]
name = "sim"
endpoint = "{endpoint}"
publishing_interval_ms = {interval}
sampling_interval_ms = 0
queue_size = 10
max_notifications_per_publish = 10000
create_batch_size = 10000
pki_dir = "pki"
trust_server_certs = true
[mqtt]
port = {mqtt_port}
topic_prefix = "{TOPIC_PREFIX}"
qos = 1
message_per = "{message_per}"
[questdb]
enabled = true
conf = "{ilp_conf}"
[outbox]
dir = "outbox"
"#,
        env = env.display(),
        endpoint = s.endpoint,
        interval = s.interval_ms,
        mqtt_port = s.mqtt_port,
        ilp_conf = s.ilp_conf,
        message_per = s.message_per,
    );
    for i in 0..s.n {
        let _ = write!(
            toml,
            "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:scale;s=Scale.V{i}\"\nsubmodel = \"{SUBMODEL_ID}\"\npath = \"V{i}\"\n"
        );
    }
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}
