//! Mapping rules against the shipped type-coverage template (`aas-templates/types.aas.json`, one
//! element per OPC UA built-in type): the node-type check, scale/offset, unit and semantic_id.

mod common;

use aas_gateway::config::Config;
use aas_gateway::mapping::{check_node_type, Router};
use aas_gateway::model::{Reading, TypedValue};
use aas_gateway::pipeline;
use common::repo_root;
use opcua::types::{DataTypeId, NodeId, Variant};

const SM: &str = "urn:aas-gateway:sim:sm:types:values";

/// A config over the types template with the given `[[mapping]]` tables appended.
fn config(rules: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let template = repo_root().join("aas-templates/types.aas.json");
    std::fs::write(
        &path,
        format!(
            r#"
[aas]
environments = ["{}"]
[[opcua]]
name = "sim"
endpoint = "opc.tcp://127.0.0.1:4840/"
[mqtt]
enabled = false
{rules}
"#,
            template.display()
        ),
    )
    .unwrap();
    let cfg = Config::load(&path).unwrap();
    (dir, cfg)
}

fn rule(node: &str, path: &str, extra: &str) -> String {
    format!(
        "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:types;s=Types.{node}\"\nsubmodel = \"{SM}\"\npath = \"{path}\"\n{extra}\n"
    )
}

fn router(rules: &str) -> Router {
    let (_dir, cfg) = config(rules);
    pipeline::check(&cfg).unwrap_or_else(|e| panic!("{e}")).1
}

fn dt(id: DataTypeId) -> NodeId {
    NodeId::new(0, id as u32)
}

#[test]
fn node_types_are_checked_against_element_types() {
    let r = router(
        &[
            rule("Boolean", "Boolean", ""),
            rule("Int32", "Int32", ""),
            rule("Double", "Double", ""),
            rule("String", "String", ""),
            rule("DateTime", "DateTime", ""),
            rule("LocalizedText", "LocalizedText", ""),
            rule("UInt16", "UInt16", ""),
        ]
        .concat(),
    );
    let [boolean, int32, double, string, datetime, mlp, uint16] = &r.routes[..] else {
        panic!("7 routes expected")
    };
    // Fits.
    for (route, ty) in [
        (boolean, DataTypeId::Boolean),
        (int32, DataTypeId::Int32),
        (int32, DataTypeId::Int16),
        (int32, DataTypeId::UInt16),
        (int32, DataTypeId::Enumeration),
        (double, DataTypeId::Double),
        (double, DataTypeId::Float),
        (double, DataTypeId::Int64),
        (string, DataTypeId::Double),
        (string, DataTypeId::LocalizedText),
        (datetime, DataTypeId::DateTime),
        (datetime, DataTypeId::UtcTime),
        (mlp, DataTypeId::LocalizedText),
        (uint16, DataTypeId::Byte),
    ] {
        assert_eq!(check_node_type(route, &dt(ty)), Ok(()), "{ty:?}");
    }
    // Does not fit: the message names both types and the element.
    let e = check_node_type(boolean, &dt(DataTypeId::Double)).unwrap_err();
    assert!(e.starts_with("Double node"), "{e}");
    assert!(
        e.contains("mapped to xs:boolean (TypeCoverage/Boolean)"),
        "{e}"
    );
    let e = check_node_type(int32, &dt(DataTypeId::Int64)).unwrap_err();
    assert!(
        e.contains("Int64 node") && e.contains("range is smaller"),
        "{e}"
    );
    assert!(check_node_type(int32, &dt(DataTypeId::UInt32)).is_err());
    assert!(check_node_type(int32, &dt(DataTypeId::Double)).is_err());
    assert!(check_node_type(uint16, &dt(DataTypeId::SByte)).is_err());
    assert!(check_node_type(datetime, &dt(DataTypeId::String)).is_err());
    assert!(check_node_type(double, &dt(DataTypeId::Boolean)).is_err());
    // Custom DataTypes (outside namespace 0) cannot be judged here; values are checked on arrival.
    assert_eq!(check_node_type(boolean, &NodeId::new(3, 3001u32)), Ok(()));
}

/// A reading as the OPC UA source emits it: the value already converted by the source.
fn reading(rule: u32, value: Variant) -> Reading {
    Reading {
        rule,
        value: aas_gateway::sources::opcua::convert::variant_to_typed(&value).unwrap(),
        status: 0,
        source_ts_nanos: 0,
        server_ts_nanos: 0,
    }
}

#[test]
fn scale_offset_unit_and_semantic_id_apply() {
    let r = router(
        &[
            rule(
                "Double",
                "Double",
                "scale = 0.001\noffset = -1.0\nunit = \"kW\"\nsemantic_id = \"0173-1#02-ABC123#001\"",
            ),
            rule("Float", "Float", ""),
        ]
        .concat(),
    );
    let (route, update) = r.route(reading(0, Variant::Double(2500.0))).unwrap();
    assert_eq!(update.value, TypedValue::Float(1.5));
    assert_eq!(route.target.unit(), Some("kW"));
    assert_eq!(route.target.semantic_id(), Some("0173-1#02-ABC123#001"));
    // Integers are scaled too; text is an error naming the node.
    let (_, update) = r.route(reading(0, Variant::Int32(1000))).unwrap();
    assert_eq!(update.value, TypedValue::Float(0.0));
    let e = r
        .route(reading(0, Variant::String("x".into())))
        .unwrap_err();
    assert!(
        e.contains("Types.Double") && e.contains("scale/offset need a number"),
        "{e}"
    );
    // The dispatcher's compact table converts exactly as the router does, errors included.
    let table = aas_gateway::mapping::RouteTable::new(&r);
    for (rule, value) in [
        (0, Variant::Double(2500.0)),
        (0, Variant::Int32(1000)),
        (0, Variant::String("x".into())),
        (1, Variant::Float(0.25)),
        (1, Variant::String("x".into())),
        (7, Variant::Float(0.25)),
    ] {
        let by_router = r.route(reading(rule, value.clone())).map(|(_, u)| u);
        let by_table = table.route(reading(rule, value.clone()));
        match (by_router, by_table) {
            (Ok(a), Ok(b)) => {
                // The same target, not an equal copy.
                assert_eq!(
                    (a.value, std::ptr::from_ref(a.target)),
                    (b.value, std::ptr::from_ref(b.target))
                )
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            (a, b) => panic!("rule {rule} {value:?}: router {a:?}, table {b:?}"),
        }
    }
    // Without overrides: the template's semanticId, no unit (the template has no CDs).
    let float = &r.routes[1];
    assert_eq!(
        float.target.semantic_id(),
        Some("urn:aas-gateway:sem:types:Float")
    );
    assert_eq!(float.target.unit(), None);
    // A numeric node passes the type check of a scaled rule; a text node does not.
    assert!(check_node_type(route, &dt(DataTypeId::UInt32)).is_ok());
    assert!(check_node_type(route, &dt(DataTypeId::String)).is_err());
}

#[test]
fn semantic_id_override_is_served() {
    let (_dir, cfg) = config(&rule(
        "Double",
        "Double",
        "semantic_id = \"0173-1#02-XYZ#001\"",
    ));
    let (env, _) = pipeline::check(&cfg).unwrap();
    let (_, el) = aas_gateway::aas::find_element(env.submodel(SM).unwrap(), "Double").unwrap();
    assert_eq!(
        el.to_value()["semanticId"]["keys"][0]["value"],
        "0173-1#02-XYZ#001"
    );
}

#[test]
fn scale_on_an_integer_element_is_a_config_error() {
    let (_dir, cfg) = config(
        &[
            rule("Int32", "Int32", "scale = 2.0"),
            rule("Double", "Double", "scale = 0.0"),
        ]
        .concat(),
    );
    let errors = pipeline::check(&cfg).err().unwrap().to_string();
    assert!(
        errors.contains("mapping[0].scale: Int32 is xs:int: scale/offset need an xs:float"),
        "{errors}"
    );
    assert!(
        errors.contains("mapping[1].scale: 0 would erase every value"),
        "{errors}"
    );
}

#[test]
fn units_default_to_the_concept_description() {
    // cnc1's SpindleSpeed has a ConceptDescription with unit 1/min.
    let (_dir, mut cfg) = config("");
    cfg.aas.environments = vec![repo_root().join("aas-templates/cnc1.aas.json")];
    cfg.mapping = vec![aas_gateway::config::MappingRule {
        source: None,
        node_id: "nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeed".into(),
        submodel: "urn:aas-gateway:sim:sm:cnc1:operational-data".into(),
        path: "SpindleSpeed".into(),
        scale: None,
        offset: None,
        unit: None,
        semantic_id: None,
        history: false,
        ..Default::default()
    }];
    let (_, r) = pipeline::check(&cfg).unwrap();
    assert_eq!(r.routes[0].target.unit(), Some("1/min"));
}

/// Against a live server: a Double node mapped onto an xs:boolean element is reported as a
/// mapping error naming both, and left out; the other rules keep delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_type_cannot_fit_is_named_and_left_out() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_sim(dir.path(), 200).await;
    let sm = "urn:aas-gateway:sim:sm:cnc1:operational-data";
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[api]
listen = "127.0.0.1:0"
[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]
[[opcua]]
name = "sim"
endpoint = "{url}"
pki_dir = "{pki}"
publishing_interval_ms = 200
[mqtt]
enabled = false
[[mapping]]
node_id = "nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeed"
submodel = "{sm}"
path = "Running"
[[mapping]]
node_id = "nsu=urn:opcua-sim:cnc;s=CNC1.FeedRate"
submodel = "{sm}"
path = "FeedRate"
"#,
            root = repo_root().display(),
            url = sim.endpoint_url(),
            pki = common::gateway_pki().display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("gateway.log");
    let mut child = common::KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
            .args(["run", "-c"])
            .arg(&cfg)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut url = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let api = url.trim().to_string();
    let encoded = aas_gateway::api::encode_id(sm);
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let v: serde_json::Value = http
            .get(format!(
                "{api}/submodels/{encoded}/submodel-elements/FeedRate/$value"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["FeedRate"].as_f64().is_some_and(|f| f != 0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "FeedRate never updated: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    child.wait().unwrap();
    sim.stop().await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("mapping[0]: Double node nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeed mapped to xs:boolean"),
        "{text}"
    );
    assert!(!text.contains("mapping[1]:"), "{text}");
}
