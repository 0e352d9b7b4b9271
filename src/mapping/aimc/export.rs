//! The round trip: the `[[mapping]]` rules of a TOML-configured gateway written as AID 1.1 +
//! AIMC 1.0 submodels (`aas-gateway export --aid`), so that the exported environment carries its
//! own mapping and runs with only the secrets left in the TOML.
//!
//! One AID submodel holds an OPC UA interface per `[[opcua]]` source, one AIMC submodel a
//! MappingConfiguration per interface. What AIMC 1.0 cannot express is left out and listed:
//! `scale`/`offset`, `writable`, `history` (a `semantic_id` override is already in the served
//! element). A rule with `mode = "read"` becomes a property with `observable = false`.

use serde_json::{json, Value};

use crate::aas::aid::{self, aimc1_configuration, interface, model_ref, DataPoint, Endpoint};
use crate::aas::{find_chain, Environment, Node};
use crate::mapping::MappingRule;
use crate::sources::opcua::config::{AcquisitionMode, OpcUaSourceConfig};

/// Identifier of the exported AID submodel of gateway `name`.
pub fn aid_submodel_id(name: &str) -> String {
    format!("urn:aas-gateway:export:{}:aid", aid::id_short_from(name))
}

/// The AID and AIMC submodels for `rules` (the TOML's), and what was left out (one line per
/// rule, naming it).
pub fn export(
    gateway: &str,
    sources: &[OpcUaSourceConfig],
    rules: &[MappingRule],
    env: &Environment,
) -> (Vec<Value>, Vec<String>) {
    let aid_id = aid_submodel_id(gateway);
    let aimc_id = format!(
        "urn:aas-gateway:export:{}:aimc",
        aid::id_short_from(gateway)
    );
    let mut left_out = Vec::new();
    let mut interfaces = Vec::new();
    let mut configurations = Vec::new();
    let mut taken = std::collections::HashSet::new();
    for (s, source) in sources.iter().enumerate() {
        let mut points = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if rule.source_index(sources) != Some(s) || rule.transform_output {
                continue;
            }
            let mut dropped = Vec::new();
            if rule.scale.is_some() || rule.offset.is_some() {
                dropped.push("scale/offset");
            }
            if rule.writable {
                dropped.push("writable");
            }
            if rule.history {
                dropped.push("history");
            }
            if !dropped.is_empty() {
                left_out.push(format!(
                    "mapping[{i}]: {} cannot be expressed in AIMC 1.0; the rule is left out",
                    dropped.join(", ")
                ));
                continue;
            }
            let Some(sm) = env.submodel(&rule.submodel) else {
                continue;
            };
            let Ok(chain) = find_chain(sm, &rule.path) else {
                continue;
            };
            let mut keys: Vec<(&'static str, String)> = vec![("Submodel", rule.submodel.clone())];
            for (index, el) in &chain {
                let kind = model_type(el);
                let value = el
                    .get("idShort")
                    .and_then(Node::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| index.to_string());
                keys.push((kind, value));
            }
            let (_, element) = chain.last().expect("non-empty chain");
            let list =
                element.get("modelType").and_then(Node::as_str) == Some("SubmodelElementList");
            let xs = element
                .get(if list {
                    "valueTypeListElement"
                } else {
                    "valueType"
                })
                .and_then(Node::as_str)
                .unwrap_or("xs:string");
            let read = rule.mode == Some(AcquisitionMode::Read)
                || (rule.mode.is_none() && source.mode == AcquisitionMode::Read);
            points.push((
                read,
                DataPoint {
                    node_id: rule.node_id.clone(),
                    browse_path: format!("{}/{}", rule.submodel, rule.path.replace('.', "/")),
                    element_keys: keys,
                    aid_type: if list { "array" } else { aid::aid_type(xs) },
                    item_type: list.then(|| aid::aid_type(xs)),
                    unit: rule.unit.clone(),
                    range: None,
                },
            ));
        }
        if points.is_empty() {
            continue;
        }
        let token = if source.username.is_some() {
            "UserName"
        } else if source.user_certificate.is_some() {
            "Certificate"
        } else {
            "Anonymous"
        };
        let endpoint = Endpoint {
            base: source.endpoint.clone(),
            security_mode: source.security_mode.clone(),
            security_policy: source.security_policy.clone(),
            user_token: token.into(),
        };
        let iface_id = aid::unique_id_short(&format!("Interface_{}", source.name), &mut taken);
        let data: Vec<DataPoint> = points.iter().map(|(_, p)| p.clone()).collect();
        let mut iface = interface(&endpoint, &aid_id, &iface_id, &source.name, &data);
        // Cyclically read nodes are not observable.
        if let Some(props) = iface
            .pointer_mut("/value/2/value/0/value")
            .and_then(Value::as_array_mut)
        {
            for (prop, (read, _)) in props.iter_mut().zip(&points) {
                if !*read {
                    continue;
                }
                for child in prop["value"].as_array_mut().into_iter().flatten() {
                    if child["idShort"] == "observable" {
                        child["value"] = json!("false");
                    }
                }
            }
        }
        configurations.push(aimc1_configuration(&aid_id, &iface, &data));
        interfaces.push(iface);
    }
    if interfaces.is_empty() {
        return (Vec::new(), left_out);
    }
    let submodels = vec![
        json!({
            "modelType": "Submodel",
            "id": aid_id,
            "idShort": "AssetInterfacesDescription",
            "semanticId": model_ref(&[("Submodel", aid::AID_SUBMODEL)]),
            "submodelElements": interfaces,
        }),
        json!({
            "modelType": "Submodel",
            "id": aimc_id,
            "idShort": "AssetInterfacesMappingConfiguration",
            "semanticId": aid::global_ref(aid::AIMC_SUBMODEL_1_0),
            "submodelElements": [{
                "idShort": "MappingConfigurations",
                "semanticId": aid::global_ref(aid::AIMC_CONFIGURATIONS),
                "modelType": "SubmodelElementList",
                "orderRelevant": false,
                "semanticIdListElement": aid::global_ref(aid::AIMC1_CONFIGURATION),
                "typeValueListElement": "SubmodelElementCollection",
                "value": configurations,
            }],
        }),
    ];
    (submodels, left_out)
}

/// The key type of an element (its `modelType`, as a `'static` key name).
fn model_type(el: &Node) -> &'static str {
    match el.get("modelType").and_then(Node::as_str) {
        Some("SubmodelElementCollection") => "SubmodelElementCollection",
        Some("SubmodelElementList") => "SubmodelElementList",
        Some("MultiLanguageProperty") => "MultiLanguageProperty",
        Some("Entity") => "Entity",
        _ => "Property",
    }
}
