//! The vocabulary of IDTA 02017 Asset Interfaces Description (AID 1.1) and IDTA 02027 Asset
//! Interfaces Mapping Configuration (AIMC 1.0, 2.0/2.1), shared by the writer
//! (`aas-gateway browse --aas`, in `sources::opcua::browse_aas`) and the readers
//! (`sources::aid` for the interfaces, `mapping::aimc` for the mappings).
//!
//! Readers match an element by semanticId first and by idShort as a fallback, because the
//! published templates carry defects (see `shared/reference/standards.md`): trailing blanks in
//! semanticIds (`.../securityMode `), `td#base` for `td#baseURI`, `AssetInterfaceDescription`
//! without the `s`, `InterfaceMetadata` for `InteractionMetadata`, `WoT-Binding#browsePath`.
//! [`is`] implements that rule once.
//!
//! The OPC UA `href` of a property is `/?id=<nodeId>` (AID 1.1 Annex B), with `#` and `&`
//! (and here also `%`, blanks and non-ASCII) percent-encoded: [`href_for`] writes it,
//! [`node_id_from_href`] reads it back, with or without the leading `/`.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use std::collections::HashSet;

use serde_json::{json, Value};

/// AID 1.1 submodel.
pub const AID_SUBMODEL: &str =
    "https://admin-shell.io/idta/AssetInterfacesDescription/1/1/Submodel";
/// AID 1.0 submodel (no OPC UA binding in 1.0, but the structure is the same).
pub const AID_SUBMODEL_1_0: &str =
    "https://admin-shell.io/idta/AssetInterfacesDescription/1/0/Submodel";
/// One interface (SMC) of an AID submodel.
pub const AID_INTERFACE: &str =
    "https://admin-shell.io/idta/AssetInterfacesDescription/1/0/Interface";
/// Supplemental semanticId of an OPC UA interface.
pub const WOT_OPCUA: &str = "http://opcfoundation.org/UA/WoT-Binding/";
/// Supplemental semanticId of every interface.
pub const WOT_TD: &str = "https://www.w3.org/2019/wot/td";
/// `EndpointMetadata` SMC.
pub const AID_ENDPOINT_METADATA: &str =
    "https://admin-shell.io/idta/AssetInterfacesDescription/1/0/EndpointMetadata";
/// `InteractionMetadata` SMC.
pub const AID_INTERACTION_METADATA: &str =
    "https://admin-shell.io/idta/AssetInterfacesDescription/1/0/InteractionMetadata";
/// One data point (SMC) under `InteractionMetadata.properties`.
pub const AID_PROPERTY_DEFINITION: &str =
    "https://admin-shell.io/idta/AssetInterfacesDescription/1/0/PropertyDefinition";
/// `properties` SMC under `InteractionMetadata`.
pub const TD_PROPERTY_AFFORDANCE: &str = "https://www.w3.org/2019/wot/td#PropertyAffordance";
/// `base` of `EndpointMetadata`.
pub const TD_BASE_URI: &str = "https://www.w3.org/2019/wot/td#baseURI";
/// `title`.
pub const TD_TITLE: &str = "https://www.w3.org/2019/wot/td#title";
/// `contentType`.
pub const HCTL_CONTENT_TYPE: &str = "https://www.w3.org/2019/wot/hypermedia#forContentType";
/// `security` (list of references into `securityDefinitions`).
pub const TD_SECURITY: &str = "https://www.w3.org/2019/wot/td#hasSecurityConfiguration";
/// `securityDefinitions`.
pub const TD_SECURITY_DEFINITIONS: &str = "https://www.w3.org/2019/wot/td#definesSecurityScheme";
/// `scheme` of a security definition.
pub const WOTSEC_SCHEME: &str = "https://www.w3.org/2019/wot/security#SecurityScheme";
/// `opcua_channel_sc`.
pub const UAV_CHANNEL_SC: &str =
    "http://opcfoundation.org/UA/WoT-Binding/OPCUASecurityChannelScheme";
/// `opcua_authentication_sc`.
pub const UAV_AUTH_SC: &str =
    "http://opcfoundation.org/UA/WoT-Binding/OPCUASecurityAuthenticationScheme";
/// `uav_securityMode`.
pub const UAV_SECURITY_MODE: &str = "http://opcfoundation.org/UA/WoT-Binding/securityMode";
/// `uav_securityPolicy`.
pub const UAV_SECURITY_POLICY: &str = "http://opcfoundation.org/UA/WoT-Binding/securityPolicy";
/// `uav_userIdentityToken`.
pub const UAV_USER_IDENTITY_TOKEN: &str =
    "http://opcfoundation.org/UA/WoT-Binding/userIdentityToken";
/// `key` of a property.
pub const AID_KEY: &str = "https://admin-shell.io/idta/AssetInterfacesDescription/1/0/key";
/// `type` of a property.
pub const RDF_TYPE: &str = "https://www.w3.org/1999/02/22-rdf-syntax-ns#type";
/// `observable`.
pub const TD_OBSERVABLE: &str = "https://www.w3.org/2019/wot/td#isObservable";
/// `unit`.
pub const SCHEMA_UNIT: &str = "https://schema.org/unitCode";
/// `min_max`.
pub const AID_MIN_MAX: &str =
    "https://admin-shell.io/idta/AssetInterfacesDescription/1/0/minMaxRange";
/// `items` of an array property.
pub const JS_ITEMS: &str = "https://www.w3.org/2019/wot/json-schema#items";
/// `forms`.
pub const TD_FORMS: &str = "https://www.w3.org/2019/wot/td#hasForm";
/// `href` of a form.
pub const HCTL_HREF: &str = "https://www.w3.org/2019/wot/hypermedia#hasTarget";
/// `uav_browsePath` of a form.
pub const UAV_BROWSE_PATH: &str = "http://opcfoundation.org/UA/WoT-Binding/browsePath";

/// AIMC 1.0 submodel.
pub const AIMC_SUBMODEL_1_0: &str =
    "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/1/0/Submodel";
/// AIMC 2.0/2.1 submodel.
pub const AIMC_SUBMODEL_2_0: &str =
    "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/2/0/Submodel";
/// `MappingConfigurations` (both versions).
pub const AIMC_CONFIGURATIONS: &str =
    "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/1/0/MappingConfigurations";
/// AIMC 1.0 `MappingConfiguration`.
pub const AIMC1_CONFIGURATION: &str =
    "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/1/0/MappingConfiguration";
/// AIMC 1.0 `InterfaceReference`.
pub const AIMC1_INTERFACE_REFERENCE: &str =
    "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/1/0/InterfaceReference";
/// AIMC 1.0 `MappingSourceSinkRelations`.
pub const AIMC1_RELATIONS: &str =
    "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/1/0/MappingSourceSinkRelations";
/// AIMC 1.0 `MappingSourceSinkRelation`.
pub const AIMC1_RELATION: &str =
    "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/1/0/MappingSourceSinkRelation";
/// AIMC 2.x `MappingConfiguration`; its parts are `<this>/<Part>`.
pub const AIMC2_CONFIGURATION: &str =
    "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/2/0/MappingConfiguration";

/// IDTA 02006-3-0 Digital Nameplate submodel (the form the shipped templates use).
pub const NAMEPLATE_SUBMODEL: &str = "https://admin-shell.io/idta/nameplate/3/0/Nameplate";
/// The operational-data submodel of the shipped templates.
pub const OPERATIONAL_DATA_SUBMODEL: &str = "urn:aas-gateway:sem:submodel:OperationalData:1:0";
/// IEC 61360 data specification template (v3.0).
pub const IEC61360: &str =
    "https://admin-shell.io/DataSpecificationTemplates/DataSpecificationIec61360/3/0";

/// The first key value of an element's `semanticId`, trimmed (published templates carry
/// trailing blanks).
pub fn semantic_id(element: &Value) -> Option<&str> {
    element
        .pointer("/semanticId/keys/0/value")
        .and_then(Value::as_str)
        .map(str::trim)
}

/// Every supplemental semanticId's first key value, trimmed.
pub fn supplemental_ids(element: &Value) -> impl Iterator<Item = &str> {
    element
        .get("supplementalSemanticIds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.pointer("/keys/0/value").and_then(Value::as_str))
        .map(str::trim)
}

/// Whether `element` is the concept `sem` (semanticId, also when spelt like the published
/// templates' known misspellings), or, when its semanticId is missing or unknown, whether its
/// idShort is one of `id_shorts`.
pub fn is(element: &Value, sem: &str, id_shorts: &[&str]) -> bool {
    if let Some(s) = semantic_id(element) {
        if s == sem || misspelt(s) == sem {
            return true;
        }
    }
    element
        .get("idShort")
        .and_then(Value::as_str)
        .is_some_and(|i| id_shorts.contains(&i))
}

/// A semanticId with the known defects of the published files repaired.
fn misspelt(s: &str) -> String {
    s.replace("AssetInterfaceDescription/", "AssetInterfacesDescription/")
        .replace("td#base", "td#baseURI")
        .replace("td#baseURIURI", "td#baseURI")
        .replace("WoT-Binding#browsePath", "WoT-Binding/browsePath")
        .replace("/1/0/InterfaceMetadata", "/1/0/InteractionMetadata")
}

/// The children of a collection or list (`value`), or of a submodel (`submodelElements`).
pub fn children(element: &Value) -> &[Value] {
    element
        .get("submodelElements")
        .or_else(|| element.get("value"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The first child that [`is`] the concept.
pub fn child<'v>(element: &'v Value, sem: &str, id_shorts: &[&str]) -> Option<&'v Value> {
    children(element).iter().find(|c| is(c, sem, id_shorts))
}

/// The `value` of a Property child, trimmed.
pub fn child_value<'v>(element: &'v Value, sem: &str, id_shorts: &[&str]) -> Option<&'v str> {
    child(element, sem, id_shorts)?
        .get("value")?
        .as_str()
        .map(str::trim)
}

/// Characters percent-encoded in an OPC UA href: `#` and `&` as AID 1.1 requires, `%` so that
/// decoding gives back exactly what was written, and what a URL cannot hold as it is.
const HREF_ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// The AID href of a node: `/?id=<node id>` (node id in `nsu=`/`ns=` text form).
pub fn href_for(node_id: &str) -> String {
    format!("/?id={}", utf8_percent_encode(node_id, HREF_ENCODE))
}

/// The node id an href names: `/?id=…` or `?id=…` (other query parameters after `&` are
/// ignored), percent-decoded. `None` when the href carries no `id=`.
pub fn node_id_from_href(href: &str) -> Option<String> {
    let href = href.trim();
    let query = match href.find("?") {
        Some(i) => &href[i + 1..],
        None => return None,
    };
    let id = query.split('&').find_map(|part| part.strip_prefix("id="))?;
    let decoded = percent_decode_str(id).decode_utf8().ok()?.into_owned();
    (!decoded.is_empty()).then_some(decoded)
}

/// An ExternalReference with one GlobalReference key.
pub fn global_ref(value: &str) -> Value {
    json!({"type": "ExternalReference", "keys": [{"type": "GlobalReference", "value": value}]})
}

/// A ModelReference with the given `(type, value)` keys.
pub fn model_ref(keys: &[(&str, &str)]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(t, v)| json!({"type": t, "value": v}))
        .collect();
    json!({"type": "ModelReference", "keys": keys})
}

/// A Property with a semanticId.
pub fn property(id_short: &str, sem: &str, value_type: &str, value: Option<&str>) -> Value {
    let mut p = json!({
        "idShort": id_short,
        "semanticId": global_ref(sem),
        "valueType": value_type,
        "modelType": "Property",
    });
    if let Some(v) = value {
        p["value"] = json!(v);
    }
    p
}

/// A SubmodelElementCollection with a semanticId.
pub fn collection(id_short: &str, sem: &str, value: Vec<Value>) -> Value {
    let mut c = json!({
        "idShort": id_short,
        "semanticId": global_ref(sem),
        "modelType": "SubmodelElementCollection",
    });
    // The metamodel forbids empty lists: an empty collection has no `value`.
    if !value.is_empty() {
        c["value"] = Value::Array(value);
    }
    c
}

// ---- Builders (browse --aas, export --aid) ----

/// One data point of an AID interface and the element its AIMC relation feeds.
#[derive(Debug, Clone)]
pub struct DataPoint {
    /// Node id (`nsu=`/`ns=` text), written as the `/?id=` href.
    pub node_id: String,
    /// The property's `title` (a browse path); its last `/` segment is the `key`.
    pub browse_path: String,
    /// ModelReference keys of the target element, the first being `(Submodel, id)`.
    pub element_keys: Vec<(&'static str, String)>,
    /// AID `type`: boolean, integer, number, string or array.
    pub aid_type: &'static str,
    /// For arrays: the items' `type`.
    pub item_type: Option<&'static str>,
    /// `unit`, when known.
    pub unit: Option<String>,
    /// `min_max`, when known.
    pub range: Option<(f64, f64)>,
}

/// A valid idShort from free text, in the AAS 3.0 pattern aas-core3.0 and aas-test-engines
/// check (`[a-zA-Z][a-zA-Z0-9_]*`): other characters become `_`, a leading non-letter gets `N`.
pub fn id_short_from(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        s.insert(0, 'N');
    }
    if s.len() < 2 {
        s.push('_');
    }
    s
}

/// A unique, valid idShort for `name` among `taken`. Without `-`: the AAS 3.0 pattern that
/// aas-core3.0 and aas-test-engines check is `[a-zA-Z][a-zA-Z0-9_]*` (a GUID browse name
/// would otherwise fail them).
pub fn unique_id_short(name: &str, taken: &mut HashSet<String>) -> String {
    let base = id_short_from(name);
    let mut candidate = base.clone();
    let mut n = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{base}_{n}");
        n += 1;
    }
    candidate
}

/// The AID `type` (JSON Schema) of an xs type.
pub fn aid_type(xs: &str) -> &'static str {
    match xs {
        "xs:boolean" => "boolean",
        "xs:byte" | "xs:unsignedByte" | "xs:short" | "xs:unsignedShort" | "xs:int"
        | "xs:unsignedInt" | "xs:long" | "xs:unsignedLong" => "integer",
        "xs:float" | "xs:double" => "number",
        _ => "string",
    }
}

/// What an AID interface says about its endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `base`: the endpoint URL.
    pub base: String,
    /// `uav_securityMode`.
    pub security_mode: String,
    /// `uav_securityPolicy`.
    pub security_policy: String,
    /// `uav_userIdentityToken`: Anonymous, UserName or Certificate.
    pub user_token: String,
}

/// An AID 1.1 OPC UA interface (SMC `iface`) of submodel `aid_id` with one property per point.
pub fn interface(
    endpoint: &Endpoint,
    aid_id: &str,
    iface: &str,
    title: &str,
    mapped: &[DataPoint],
) -> Value {
    let sec_ref = |scheme: &str| {
        json!({
            "semanticId": global_ref(TD_SECURITY),
            "modelType": "ReferenceElement",
            "value": model_ref(&[
                ("Submodel", aid_id),
                ("SubmodelElementCollection", iface),
                ("SubmodelElementCollection", "EndpointMetadata"),
                ("SubmodelElementCollection", "securityDefinitions"),
                ("SubmodelElementCollection", scheme),
            ]),
        })
    };
    let token = endpoint.user_token.as_str();
    let endpoint = collection(
        "EndpointMetadata",
        AID_ENDPOINT_METADATA,
        vec![
            property("base", TD_BASE_URI, "xs:anyURI", Some(&endpoint.base)),
            property(
                "contentType",
                HCTL_CONTENT_TYPE,
                "xs:string",
                Some("application/octet-stream"),
            ),
            json!({
                "idShort": "security",
                "semanticId": global_ref(TD_SECURITY),
                "modelType": "SubmodelElementList",
                "orderRelevant": true,
                "semanticIdListElement": global_ref(TD_SECURITY),
                "typeValueListElement": "ReferenceElement",
                "value": [sec_ref("opcua_channel_sc"), sec_ref("opcua_authentication_sc")],
            }),
            collection(
                "securityDefinitions",
                TD_SECURITY_DEFINITIONS,
                vec![
                    collection(
                        "opcua_channel_sc",
                        UAV_CHANNEL_SC,
                        vec![
                            property("scheme", WOTSEC_SCHEME, "xs:string", Some("ua_channelsec")),
                            property(
                                "uav_securityMode",
                                UAV_SECURITY_MODE,
                                "xs:string",
                                Some(&endpoint.security_mode),
                            ),
                            property(
                                "uav_securityPolicy",
                                UAV_SECURITY_POLICY,
                                "xs:string",
                                Some(&endpoint.security_policy),
                            ),
                        ],
                    ),
                    collection(
                        "opcua_authentication_sc",
                        UAV_AUTH_SC,
                        vec![
                            property(
                                "scheme",
                                WOTSEC_SCHEME,
                                "xs:string",
                                Some("ua_authentication"),
                            ),
                            property(
                                "uav_userIdentityToken",
                                UAV_USER_IDENTITY_TOKEN,
                                "xs:string",
                                Some(token),
                            ),
                        ],
                    ),
                ],
            ),
        ],
    );
    let mut taken = HashSet::new();
    let properties: Vec<Value> = mapped
        .iter()
        .map(|m| {
            let id_short = unique_id_short(
                &m.element_keys[1..]
                    .iter()
                    .map(|(_, s)| s.as_str())
                    .collect::<Vec<_>>()
                    .join("_"),
                &mut taken,
            );
            let key = m.browse_path.rsplit('/').next().unwrap_or(&m.browse_path);
            let mut children = vec![
                property("key", AID_KEY, "xs:string", Some(key)),
                property("type", RDF_TYPE, "xs:string", Some(m.aid_type)),
                property("title", TD_TITLE, "xs:string", Some(&m.browse_path)),
                property("observable", TD_OBSERVABLE, "xs:boolean", Some("true")),
            ];
            if let Some(item) = m.item_type {
                children.push(collection(
                    "items",
                    JS_ITEMS,
                    vec![property("type", RDF_TYPE, "xs:string", Some(item))],
                ));
            }
            if let Some(u) = &m.unit {
                children.push(property("unit", SCHEMA_UNIT, "xs:string", Some(u)));
            }
            if let Some((lo, hi)) = m.range {
                children.push(json!({
                    "idShort": "min_max",
                    "semanticId": global_ref(AID_MIN_MAX),
                    "modelType": "Range",
                    "valueType": "xs:double",
                    "min": crate::core::XsType::Double.lexical(&crate::core::TypedValue::Float(lo)),
                    "max": crate::core::XsType::Double.lexical(&crate::core::TypedValue::Float(hi)),
                }));
            }
            children.push(collection(
                "forms",
                TD_FORMS,
                vec![
                    property("href", HCTL_HREF, "xs:string", Some(&href_for(&m.node_id))),
                    property(
                        "contentType",
                        HCTL_CONTENT_TYPE,
                        "xs:string",
                        Some("application/octet-stream"),
                    ),
                ],
            ));
            let mut p = collection(&id_short, AID_PROPERTY_DEFINITION, children);
            p["supplementalSemanticIds"] =
                json!([global_ref("https://www.w3.org/2019/wot/td#name")]);
            p
        })
        .collect();
    let interaction = collection(
        "InteractionMetadata",
        AID_INTERACTION_METADATA,
        vec![collection("properties", TD_PROPERTY_AFFORDANCE, properties)],
    );
    let mut iface_smc = collection(
        iface,
        AID_INTERFACE,
        vec![
            property("title", TD_TITLE, "xs:string", Some(title)),
            endpoint,
            interaction,
        ],
    );
    iface_smc["supplementalSemanticIds"] = json!([global_ref(WOT_OPCUA), global_ref(WOT_TD)]);
    iface_smc
}

/// An AIMC 1.0 MappingConfiguration for an interface made by [`interface`]: one relation per
/// point, AID property → its element.
pub fn aimc1_configuration(aid_id: &str, aid_iface: &Value, mapped: &[DataPoint]) -> Value {
    let iface = aid_iface["idShort"].as_str().unwrap_or("InterfaceOPCUA");
    let properties = aid_iface
        .pointer("/value/2/value/0/value")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let relations: Vec<Value> = mapped
        .iter()
        .zip(&properties)
        .map(|(m, p)| {
            let pid = p["idShort"].as_str().unwrap_or_default();
            let first = model_ref(&[
                ("Submodel", aid_id),
                ("SubmodelElementCollection", iface),
                ("SubmodelElementCollection", "InteractionMetadata"),
                ("SubmodelElementCollection", "properties"),
                ("SubmodelElementCollection", pid),
            ]);
            let keys: Vec<(&str, &str)> = m
                .element_keys
                .iter()
                .map(|(t, v)| (*t, v.as_str()))
                .collect();
            json!({
                "semanticId": global_ref(AIMC1_RELATION),
                "modelType": "RelationshipElement",
                "first": first,
                "second": model_ref(&keys),
            })
        })
        .collect();
    let mut config = json!({
        "semanticId": global_ref(AIMC1_CONFIGURATION),
        "modelType": "SubmodelElementCollection",
        "value": [
            {
                "idShort": "InterfaceReference",
                "semanticId": global_ref(AIMC1_INTERFACE_REFERENCE),
                "modelType": "ReferenceElement",
                "value": model_ref(&[("Submodel", aid_id), ("SubmodelElementCollection", iface)]),
            }
        ]
    });
    if !relations.is_empty() {
        config["value"].as_array_mut().expect("array").push(json!({
            "idShort": "MappingSourceSinkRelations",
            "semanticId": global_ref(AIMC1_RELATIONS),
            "modelType": "SubmodelElementList",
            "orderRelevant": false,
            "semanticIdListElement": global_ref(AIMC1_RELATION),
            "typeValueListElement": "RelationshipElement",
            "value": relations,
        }));
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrefs_round_trip_odd_node_ids() {
        for id in [
            "nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeed",
            "nsu=urn:interop:odd namespace/ä;s=Types/Boolean",
            "nsu=http://x/#frag&y;s=a%b+c",
            "ns=4;g=72962b91-fa75-4ae6-8d28-b404dc7daf63",
            "ns=4;b=AQID",
            "i=2258",
        ] {
            let href = href_for(id);
            assert!(href.starts_with("/?id="), "{href}");
            assert!(!href[5..].contains(['#', '&', ' ']), "{href}");
            assert_eq!(node_id_from_href(&href).as_deref(), Some(id), "{href}");
            // Without the leading slash, as some tools write it.
            assert_eq!(node_id_from_href(&href[1..]).as_deref(), Some(id));
        }
        assert_eq!(
            node_id_from_href("/?id=nsu=http://example.com/pump;s=PumpSpeed").as_deref(),
            Some("nsu=http://example.com/pump;s=PumpSpeed")
        );
        assert_eq!(
            node_id_from_href("?id=ns=2%3Bs%3DA%23B&x=1").as_deref(),
            Some("ns=2;s=A#B")
        );
        assert_eq!(node_id_from_href("/sampleDevice/properties/voltage"), None);
    }

    #[test]
    fn matching_tolerates_the_published_defects() {
        let e = json!({"idShort": "uav_securityMode",
            "semanticId": global_ref("http://opcfoundation.org/UA/WoT-Binding/securityMode ")});
        assert!(is(&e, UAV_SECURITY_MODE, &[]));
        let e = json!({"idShort": "base", "semanticId": global_ref("https://www.w3.org/2019/wot/td#base")});
        assert!(is(&e, TD_BASE_URI, &[]));
        let e = json!({"idShort": "p", "semanticId": global_ref(
            "https://admin-shell.io/idta/AssetInterfaceDescription/1/0/PropertyDefinition")});
        assert!(is(&e, AID_PROPERTY_DEFINITION, &[]));
        let e = json!({"idShort": "InterfaceMetadata", "semanticId": global_ref(
            "https://admin-shell.io/idta/AssetInterfacesDescription/1/0/InterfaceMetadata")});
        assert!(is(&e, AID_INTERACTION_METADATA, &[]));
        // No semanticId: the idShort decides.
        assert!(is(&json!({"idShort": "href"}), HCTL_HREF, &["href"]));
        assert!(!is(&json!({"idShort": "other"}), HCTL_HREF, &["href"]));
    }
}
