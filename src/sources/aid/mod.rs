//! Reading IDTA 02017 Asset Interfaces Description (AID 1.1) submodels: the OPC UA interfaces of
//! an AAS environment, each with its endpoint (`base`), channel security, user token kind and
//! data points (one property per node, its node id in the form's `href`).
//!
//! What comes out is protocol configuration, no AAS: an [`AidInterface`] turns into an
//! [`OpcUaSourceConfig`] ([`AidInterface::source_config`]), and `mapping::aimc` turns the AIMC
//! relations that point at its properties into mapping rules. Secrets are never in an AID: they
//! come from an `[[opcua]]` entry of the config whose `endpoint` is the interface's `base`.
//!
//! Every element is found by semanticId with the idShort as fallback ([`crate::aas::aid::is`]),
//! so the published templates' defects are read as intended. Interfaces whose `base` is not
//! `opc.tcp://` (HTTP, MQTT, Modbus) are skipped: only OPC UA is read.

use serde_json::Value;

use crate::aas::aid::{self, child, child_value, children, is};
use crate::sources::opcua::config::OpcUaSourceConfig;

/// One OPC UA interface of an AID submodel.
#[derive(Debug, Clone)]
pub struct AidInterface {
    /// Where it is: `<file>: submodels[i].submodelElements[j]`, for messages.
    pub at: String,
    /// Identifier of the AID submodel.
    pub submodel_id: String,
    /// idShort of the interface collection.
    pub id_short: String,
    /// `EndpointMetadata.base`, e.g. `opc.tcp://10.0.0.5:4840/`.
    pub base: String,
    /// `opcua_channel_sc.uav_securityMode` in the config's spelling (`None`, `Sign`,
    /// `SignAndEncrypt`), when the interface names one.
    pub security_mode: Option<String>,
    /// `opcua_channel_sc.uav_securityPolicy` in the config's spelling (`None`,
    /// `Basic256Sha256`, `Aes128Sha256RsaOaep`, `Aes256Sha256RsaPss`).
    pub security_policy: Option<String>,
    /// `opcua_authentication_sc.uav_userIdentityToken`: `Anonymous`, `UserName`,
    /// `Certificate` or `IssuedToken`.
    pub user_token: Option<String>,
    /// The data points.
    pub properties: Vec<AidProperty>,
}

/// One data point of an interface.
#[derive(Debug, Clone)]
pub struct AidProperty {
    /// Where it is, for messages.
    pub at: String,
    /// idShorts from below the interface down to the property, e.g.
    /// `["InteractionMetadata", "properties", "SpindleSpeed"]` (what a reference's keys name).
    pub path: Vec<String>,
    /// The node id of its form's `href`, percent-decoded; the error says what is wrong.
    pub node_id: Result<String, String>,
    /// `observable` (default true: OPC UA nodes can be monitored); `false` asks for cyclic reads.
    pub observable: bool,
    /// `type` (JSON Schema: boolean, integer, number, string, array, object, null), if given.
    pub data_type: Option<String>,
}

/// Everything wrong with the AIDs of a document, each with its path.
pub type Problems = Vec<(String, String)>;

/// Whether a submodel is an AID (1.0 or 1.1).
pub fn is_aid_submodel(sm: &Value) -> bool {
    is(sm, aid::AID_SUBMODEL, &["AssetInterfacesDescription"]) || is(sm, aid::AID_SUBMODEL_1_0, &[])
}

/// The OPC UA interfaces of every AID submodel in `doc` (an environment), `file` naming it in
/// messages. Problems of interfaces that cannot be read (no base, unknown security) go to
/// `problems`; their properties are still listed so that references to them resolve.
pub fn interfaces(doc: &Value, file: &str, problems: &mut Problems) -> Vec<AidInterface> {
    let mut out = Vec::new();
    let submodels = doc.get("submodels").and_then(Value::as_array);
    for (i, sm) in submodels.into_iter().flatten().enumerate() {
        if !is_aid_submodel(sm) {
            continue;
        }
        let Some(sm_id) = sm.get("id").and_then(Value::as_str) else {
            continue;
        };
        for (j, iface) in children(sm).iter().enumerate() {
            let at = format!("{file}: submodels[{i}].submodelElements[{j}]");
            if !is(iface, aid::AID_INTERFACE, &[]) && !iface_by_name(iface) {
                continue;
            }
            if let Some(found) = interface(iface, sm_id, &at, problems) {
                out.push(found);
            }
        }
    }
    out
}

/// Interfaces without a semanticId: tools name them `Interface…`.
fn iface_by_name(e: &Value) -> bool {
    e.get("idShort")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with("Interface"))
        && e.get("modelType").and_then(Value::as_str) == Some("SubmodelElementCollection")
}

fn interface(
    iface: &Value,
    sm_id: &str,
    at: &str,
    problems: &mut Problems,
) -> Option<AidInterface> {
    let id_short = iface.get("idShort").and_then(Value::as_str)?.to_string();
    let endpoint = child(iface, aid::AID_ENDPOINT_METADATA, &["EndpointMetadata"]);
    let base = endpoint
        .and_then(|e| child_value(e, aid::TD_BASE_URI, &["base"]))
        .unwrap_or_default()
        .to_string();
    if !base.starts_with("opc.tcp://") {
        // Another protocol (or an OPC UA interface without base): not ours unless the AIMC
        // points at it, which mapping::aimc reports.
        let opcua = aid::supplemental_ids(iface).any(|s| s == aid::WOT_OPCUA);
        if opcua || base.is_empty() && id_short.to_ascii_lowercase().contains("opc") {
            problems.push((
                format!("{at}.EndpointMetadata.base"),
                format!("{base:?} is not an opc.tcp:// URL"),
            ));
        }
        return None;
    }
    let defs =
        endpoint.and_then(|e| child(e, aid::TD_SECURITY_DEFINITIONS, &["securityDefinitions"]));
    let channel = defs.and_then(|d| child(d, aid::UAV_CHANNEL_SC, &["opcua_channel_sc"]));
    let auth = defs.and_then(|d| child(d, aid::UAV_AUTH_SC, &["opcua_authentication_sc"]));
    let mut security_mode = channel
        .and_then(|c| child_value(c, aid::UAV_SECURITY_MODE, &["uav_securityMode"]))
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let mut security_policy = channel
        .and_then(|c| child_value(c, aid::UAV_SECURITY_POLICY, &["uav_securityPolicy"]))
        .filter(|v| !v.is_empty())
        .map(policy_name);
    let user_token = auth
        .and_then(|a| child_value(a, aid::UAV_USER_IDENTITY_TOKEN, &["uav_userIdentityToken"]))
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let sec_at = format!("{at}.EndpointMetadata.securityDefinitions.opcua_channel_sc");
    if let Some(m) = &security_mode {
        if !matches!(m.as_str(), "None" | "Sign" | "SignAndEncrypt") {
            problems.push((
                format!("{sec_at}.uav_securityMode"),
                format!("{m:?} is not one of None, Sign, SignAndEncrypt"),
            ));
            security_mode = None;
        }
    }
    if let Some(p) = &security_policy {
        if !matches!(
            p.as_str(),
            "None" | "Basic256Sha256" | "Aes128Sha256RsaOaep" | "Aes256Sha256RsaPss"
        ) {
            problems.push((
                format!("{sec_at}.uav_securityPolicy"),
                format!("{p:?} is not one of None, Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss"),
            ));
            security_policy = None;
        }
    }
    if let Some(t) = &user_token {
        if !matches!(t.as_str(), "Anonymous" | "UserName" | "Certificate") {
            problems.push((
                format!("{at}.EndpointMetadata.securityDefinitions.opcua_authentication_sc.uav_userIdentityToken"),
                format!("{t:?} is not supported (Anonymous, UserName or Certificate)"),
            ));
        }
    }
    let mut properties = Vec::new();
    let interaction = children(iface).iter().enumerate().find(|(_, c)| {
        is(
            c,
            aid::AID_INTERACTION_METADATA,
            &["InteractionMetadata", "InterfaceMetadata"],
        )
    });
    if let Some((k, interaction)) = interaction {
        let ia_id = interaction["idShort"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let list = children(interaction)
            .iter()
            .enumerate()
            .find(|(_, c)| is(c, aid::TD_PROPERTY_AFFORDANCE, &["properties"]));
        if let Some((l, list)) = list {
            let prefix = vec![
                ia_id,
                list["idShort"].as_str().unwrap_or_default().to_string(),
            ];
            let here = format!("{at}.value[{k}].value[{l}]");
            collect_properties(list, &prefix, &here, &mut properties);
        }
    }
    Some(AidInterface {
        at: at.to_string(),
        submodel_id: sm_id.to_string(),
        id_short,
        base,
        security_mode,
        security_policy,
        user_token,
        properties,
    })
}

/// Property definitions below `list` (and nested `properties` of object-typed ones).
fn collect_properties(list: &Value, prefix: &[String], at: &str, out: &mut Vec<AidProperty>) {
    for (n, p) in children(list).iter().enumerate() {
        let Some(id_short) = p.get("idShort").and_then(Value::as_str) else {
            continue;
        };
        if p.get("modelType").and_then(Value::as_str) != Some("SubmodelElementCollection") {
            continue;
        }
        let here = format!("{at}.value[{n}]");
        let mut path = prefix.to_vec();
        path.push(id_short.to_string());
        let forms = child(p, aid::TD_FORMS, &["forms"]);
        if let Some(forms) = forms {
            let href = child_value(forms, aid::HCTL_HREF, &["href"]);
            let node_id = match href {
                None => Err("its forms have no href".to_string()),
                Some(h) => aid::node_id_from_href(h)
                    .ok_or_else(|| format!("href {h:?} names no node (expected /?id=<node id>)")),
            };
            let observable = child_value(p, aid::TD_OBSERVABLE, &["observable"])
                .map(|v| v != "false")
                .unwrap_or(true);
            out.push(AidProperty {
                at: here.clone(),
                path: path.clone(),
                node_id,
                observable,
                data_type: child_value(p, aid::RDF_TYPE, &["type"])
                    .filter(|t| !t.is_empty())
                    .map(str::to_string),
            });
        }
        // Nested properties of an object-typed property.
        if let Some((m, nested)) = children(p)
            .iter()
            .enumerate()
            .find(|(_, c)| c.get("idShort").and_then(Value::as_str) == Some("properties"))
        {
            let mut nested_prefix = path.clone();
            nested_prefix.push("properties".into());
            collect_properties(nested, &nested_prefix, &format!("{here}.value[{m}]"), out);
        }
    }
}

/// The config's spelling of a security policy: `Aes128_Sha256_RsaOaep` → `Aes128Sha256RsaOaep`;
/// a policy URI (`…/SecurityPolicy#Basic256Sha256`) → its name.
fn policy_name(v: &str) -> String {
    v.rsplit('#').next().unwrap_or(v).replace('_', "")
}

/// The endpoint in a comparable form: no trailing `/`, scheme and host in lower case.
pub fn normalize_endpoint(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            let mut s = format!(
                "{}://{}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase()
            );
            if !path.is_empty() {
                s.push('/');
                s.push_str(path);
            }
            s
        }
        None => url.to_string(),
    }
}

impl AidInterface {
    /// The source for this interface when the config has no `[[opcua]]` entry for its base:
    /// the AID's security, the config's defaults for everything else.
    pub fn source_config(&self, name: &str) -> OpcUaSourceConfig {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "endpoint": self.base,
            "security_policy": self.security_policy.as_deref().unwrap_or("None"),
            "security_mode": self.security_mode.as_deref().unwrap_or("None"),
        }))
        .expect("a minimal OPC UA source config deserialises")
    }

    /// The property that the keys below the interface name (a reference's keys after the
    /// submodel and interface keys).
    pub fn property(&self, path: &[&str]) -> Option<&AidProperty> {
        self.properties
            .iter()
            .find(|p| p.path.iter().map(String::as_str).eq(path.iter().copied()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_compare_without_trailing_slash_and_case() {
        assert_eq!(
            normalize_endpoint("opc.tcp://PLC1:4840/"),
            normalize_endpoint("OPC.TCP://plc1:4840")
        );
        assert_ne!(
            normalize_endpoint("opc.tcp://plc1:4840/a"),
            normalize_endpoint("opc.tcp://plc1:4840/b")
        );
    }

    #[test]
    fn policies_take_the_config_spelling() {
        assert_eq!(policy_name("Aes128_Sha256_RsaOaep"), "Aes128Sha256RsaOaep");
        assert_eq!(
            policy_name("http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"),
            "Basic256Sha256"
        );
    }

    /// An interface as the published AID 1.1 template writes it: the MQTT supplemental
    /// semanticId on the OPC UA interface, `td#base`, a trailing blank in the securityMode
    /// semanticId, a misspelt PropertyDefinition semanticId and an href without the leading `/`.
    #[test]
    fn the_published_templates_defects_are_read() {
        let doc = json!({"submodels": [{
        "id": "urn:aid", "idShort": "AID", "modelType": "Submodel",
        "semanticId": aid::model_ref(&[("Submodel", aid::AID_SUBMODEL)]),
        "submodelElements": [{
            "idShort": "InterfaceOPCUA", "modelType": "SubmodelElementCollection",
            "semanticId": aid::global_ref(aid::AID_INTERFACE),
            "supplementalSemanticIds": [aid::global_ref("http://www.w3.org/2011/mqtt")],
            "value": [
                {"idShort": "EndpointMetadata", "modelType": "SubmodelElementCollection",
                 "semanticId": aid::global_ref(aid::AID_ENDPOINT_METADATA),
                 "value": [
                    {"idShort": "base", "modelType": "Property", "valueType": "xs:anyURI",
                     "semanticId": aid::global_ref("https://www.w3.org/2019/wot/td#base"),
                     "value": "opc.tcp://127.0.0.1:4840"},
                    {"idShort": "securityDefinitions", "modelType": "SubmodelElementCollection",
                     "value": [{"idShort": "opcua_channel_sc", "modelType": "SubmodelElementCollection",
                        "value": [
                          {"idShort": "uav_securityMode", "modelType": "Property", "valueType": "xs:string",
                           "semanticId": aid::global_ref("http://opcfoundation.org/UA/WoT-Binding/securityMode "),
                           "value": "SignAndEncrypt"},
                          {"idShort": "uav_securityPolicy", "modelType": "Property", "valueType": "xs:string",
                           "value": "Aes256_Sha256_RsaPss"}]}]}]},
                {"idShort": "InteractionMetadata", "modelType": "SubmodelElementCollection",
                 "value": [{"idShort": "properties", "modelType": "SubmodelElementCollection",
                    "value": [{"idShort": "Speed", "modelType": "SubmodelElementCollection",
                       "semanticId": aid::global_ref("https://admin-shell.io/idta/AssetInterfaceDescription/1/0/PropertyDefinition"),
                       "value": [
                         {"idShort": "observable", "modelType": "Property", "valueType": "xs:boolean", "value": "false"},
                         {"idShort": "forms", "modelType": "SubmodelElementCollection", "value": [
                           {"idShort": "href", "modelType": "Property", "valueType": "xs:string",
                            "value": "?id=nsu=urn:x%23y;s=Speed"}]}]}]}]}
            ]}]}]});
        let mut problems = Vec::new();
        let found = interfaces(&doc, "f.json", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(found.len(), 1);
        let i = &found[0];
        assert_eq!(i.base, "opc.tcp://127.0.0.1:4840");
        assert_eq!(i.security_mode.as_deref(), Some("SignAndEncrypt"));
        assert_eq!(i.security_policy.as_deref(), Some("Aes256Sha256RsaPss"));
        let p = i
            .property(&["InteractionMetadata", "properties", "Speed"])
            .unwrap();
        assert_eq!(p.node_id.as_deref(), Ok("nsu=urn:x#y;s=Speed"));
        assert!(!p.observable);
        assert_eq!(
            p.at,
            "f.json: submodels[0].submodelElements[0].value[1].value[0].value[0]"
        );
        let cfg = i.source_config("s");
        assert_eq!(cfg.security_mode, "SignAndEncrypt");
    }
}
