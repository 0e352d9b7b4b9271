//! Tests of the aggregate config: sections that load together, the registry.

use super::Config;
use crate::aas::Environment;
use crate::core::XsType;
use crate::mapping::Router;

#[test]
fn buffer_sections_load_and_bad_values_are_named_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
            &path,
            "[mqtt.buffer]\nmax_bytes = 100\nwhen_full = \"block\"\n[questdb]\nenabled = true\n[questdb.buffer]\nmax_age_s = 3600\n",
        )
        .unwrap();
    let cfg = Config::load(&path).unwrap();
    assert_eq!(
        cfg.mqtt.buffer.when_full,
        Some(crate::outbox::FullPolicy::Block)
    );
    assert_eq!(cfg.questdb.buffer.max_age_s, Some(3600));
    let errors = cfg.validate().unwrap_err().to_string();
    assert!(errors.contains("mqtt.buffer.max_bytes"), "{errors}");

    std::fs::write(&path, "[questdb.buffer]\nmax_byte = 1\n").unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("max_byte"), "{err}");
}

#[test]
fn the_registry_builds_one_source_per_configured_entry_idle_when_unmapped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
            &path,
            "[aas]\nenvironments = []\n\
             [[opcua]]\nname = \"a\"\nendpoint = \"opc.tcp://127.0.0.1:1/\"\n\
             [[opcua]]\nname = \"b\"\nendpoint = \"opc.tcp://127.0.0.1:2/\"\n\
             [[mapping]]\nsource = \"b\"\nnode_id = \"ns=2;s=X\"\nsubmodel = \"urn:x\"\npath = \"X\"\n",
        )
        .unwrap();
    let config = Config::load(&path).unwrap();
    let aas = dir.path().join("aas.json");
    std::fs::write(
        &aas,
        r#"{"assetAdministrationShells": [], "submodels": [{"id": "urn:x", "idShort": "S",
                "modelType": "Submodel", "submodelElements": [{"idShort": "X",
                "modelType": "Property", "valueType": "xs:double"}]}]}"#,
    )
    .unwrap();
    let env = Environment::load_files(&[aas]).unwrap();
    let router = Router::build(&config.mapping, &config.opcua, &env).unwrap();
    assert_eq!(router.rule_targets()[0].value_type, XsType::Double);
    let built = config.build_sources(&std::sync::Arc::new(router)).unwrap();
    let names: Vec<_> = built.iter().map(|s| (s.name(), s.is_idle())).collect();
    assert_eq!(names, [("a", true), ("b", false)]);
}

#[test]
fn off_by_default_and_bad_values_are_named_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, "").unwrap();
    let cfg = Config::load(&path).unwrap();
    assert!(!cfg.sparkplug.enabled, "existing configs stay unchanged");

    std::fs::write(
        &path,
        "[sparkplug]\nenabled = true\ngroup_id = \"a/b\"\nedge_node_id = \"\"\nqos = 2\n\
         primary_host_id = \"scada#1\"\nca_file = \"missing.pem\"\n\
         [sparkplug.buffer]\nmax_bytes = 100\n",
    )
    .unwrap();
    let cfg = Config::load(&path).unwrap();
    let errors = cfg.validate().unwrap_err().to_string();
    for field in [
        "sparkplug.group_id",
        "sparkplug.edge_node_id",
        "sparkplug.qos",
        "sparkplug.primary_host_id",
        "sparkplug.buffer.max_bytes",
        "sparkplug.ca_file",
    ] {
        assert!(errors.contains(field), "{field} missing in: {errors}");
    }

    std::fs::write(&path, "[sparkplug]\ngroup = \"x\"\n").unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("sparkplug.group"), "{err}");
}
