//! Sources and mapping rules from the served AAS: the AID 1.1 interfaces
//! ([`crate::sources::aid`]) and AIMC 1.0/2.x relations ([`crate::mapping::aimc`]) of the
//! environments in `[aas] environments` become `[[opcua]]` sources and `[[mapping]]` rules,
//! appended after the ones written in the TOML. The rest of the gateway cannot tell them apart.
//!
//! How the two combine (README "Configuration: AID + AIMC"):
//! - An AID interface whose `base` equals the `endpoint` of an `[[opcua]]` entry (ignoring a
//!   trailing `/` and case of scheme and host) is that source: the entry supplies what an AAS
//!   never holds (username, password, PKI directory, certificates) and the tuning (intervals,
//!   queue sizes). Its security applies when the entry leaves `security_policy`/`security_mode`
//!   at `None`; a different non-`None` value in the entry is a contradiction and rejected, as
//!   is a username when the AID says `Anonymous`.
//! - Other bases become sources of their own, named `aid:<host:port>`, with the AID's channel
//!   security and default settings. A base whose AID asks for `UserName`/`Certificate` needs an
//!   entry (the secrets), else it is rejected.
//! - Rules from the AIMC come after the `[[mapping]]` rules. An element fed by both, or a node
//!   mapped twice, is rejected (the router reports a node twice; this module the element twice).
//! - With AID + AIMC present, `[[opcua]]` and `[[mapping]]` are optional.
//!
//! Errors name the JSON path of the AAS element (`m.json: submodels[3]….second: …`) instead
//! of a `mapping[i]` the user never wrote ([`Config::relabel`]).

use std::collections::HashMap;

use crate::core::conf::ConfigErrors;
use crate::mapping::aimc;
use crate::sources::aid::{self, normalize_endpoint};

use super::Config;

/// What the served AAS added to the config.
#[derive(Debug, Clone, Default)]
pub struct FromAas {
    /// `[[opcua]]` entries written in the TOML (those after them came from an AID).
    pub toml_sources: usize,
    /// `[[mapping]]` rules written in the TOML (those after them came from an AIMC).
    pub toml_rules: usize,
    /// Where each added source came from (the first AID interface with its base).
    pub source_origins: Vec<String>,
    /// Where each added rule came from (its AIMC relation or sink).
    pub rule_origins: Vec<String>,
    /// The AID `type` of each added rule's property (`None` for transformation outputs).
    pub rule_aid_types: Vec<Option<String>>,
    /// What could not be read, each with its JSON path.
    pub problems: Vec<(String, String)>,
}

impl FromAas {
    /// Whether the AAS contributed any source or rule.
    pub fn is_empty(&self) -> bool {
        self.source_origins.is_empty() && self.rule_origins.is_empty()
    }
}

impl Config {
    /// Reads AID + AIMC from the environment files and appends their sources and rules (see
    /// the module docs). Files that cannot be read are left to the environment loader, which
    /// reports them.
    pub fn add_from_aas(&mut self) {
        let mut from = FromAas {
            toml_sources: self.opcua.len(),
            toml_rules: self.mapping.len(),
            ..Default::default()
        };
        let mut docs = Vec::new();
        for path in &self.aas.environments {
            let file = self.resolve(path);
            if let Ok(doc) = crate::aas::read_environment_file(&file) {
                docs.push((path.display().to_string(), doc));
            }
        }
        let mut interfaces = Vec::new();
        for (name, doc) in &docs {
            interfaces.extend(aid::interfaces(doc, name, &mut from.problems));
        }
        let mut rules = Vec::new();
        let mut transforms = Vec::new();
        for (name, doc) in &docs {
            let parsed = aimc::rules(doc, name, &interfaces, &mut from.problems);
            rules.extend(parsed.rules);
            transforms.extend(parsed.transforms);
        }
        if rules.is_empty() && transforms.is_empty() {
            self.from_aas = from;
            return;
        }
        // Rules of the TOML that rely on "the only source" keep meaning that source.
        if from.toml_sources == 1 {
            let only = self.opcua[0].name.clone();
            for rule in &mut self.mapping {
                rule.source.get_or_insert_with(|| only.clone());
            }
        }
        let toml_targets: HashMap<(String, String), usize> = self
            .mapping
            .iter()
            .enumerate()
            .map(|(i, r)| ((r.submodel.clone(), r.path.clone()), i))
            .collect();
        // Interface index → source name.
        let mut source_of: HashMap<usize, String> = HashMap::new();
        let mut by_base: HashMap<String, String> = HashMap::new();
        let used = rules.iter().map(|r| r.interface).chain(
            transforms
                .iter()
                .flat_map(|t| t.sources.iter().map(|s| s.1)),
        );
        for interface in used.collect::<Vec<_>>() {
            if source_of.contains_key(&interface) {
                continue;
            }
            let iface = &interfaces[interface];
            let base = normalize_endpoint(&iface.base);
            let name = match by_base.get(&base) {
                Some(name) => {
                    let s = self.opcua.iter().find(|s| &s.name == name).expect("added");
                    if iface
                        .security_mode
                        .as_deref()
                        .is_some_and(|m| m != s.security_mode)
                        || iface
                            .security_policy
                            .as_deref()
                            .is_some_and(|p| p != s.security_policy)
                    {
                        from.problems.push((
                            format!("{}.EndpointMetadata.securityDefinitions", iface.at),
                            format!(
                                "{} asks for other channel security than another AID interface of the same base",
                                iface.base
                            ),
                        ));
                    }
                    name.clone()
                }
                None => {
                    let name = self.source_for(interface, &interfaces, &mut from);
                    by_base.insert(base, name.clone());
                    name
                }
            };
            source_of.insert(interface, name);
        }
        for r in rules {
            let mut rule = r.rule;
            if let Some(&k) = toml_targets.get(&(rule.submodel.clone(), rule.path.clone())) {
                from.problems.push((
                    r.at.clone(),
                    format!(
                        "element {} of {} is also mapped by mapping[{k}] in the config",
                        rule.path, rule.submodel
                    ),
                ));
                continue;
            }
            rule.source = source_of.get(&r.interface).cloned();
            self.mapping.push(rule);
            from.rule_origins.push(r.at);
            from.rule_aid_types.push(r.aid_type);
        }
        // Transformations: their sinks become rules whose element takes the output (on the
        // first input's source, whose node they name without monitoring it).
        for t in transforms {
            let inputs: Vec<(String, crate::mapping::MappingRule)> = t
                .sources
                .into_iter()
                .map(|(id, interface, mut rule)| {
                    rule.source = source_of.get(&interface).cloned();
                    (id, rule)
                })
                .collect();
            let (first_source, first_node) =
                (inputs[0].1.source.clone(), inputs[0].1.node_id.clone());
            let mut outputs = Vec::new();
            for (id, at, mut rule) in t.sinks {
                if let Some(&k) = toml_targets.get(&(rule.submodel.clone(), rule.path.clone())) {
                    from.problems.push((
                        at,
                        format!(
                            "element {} of {} is also mapped by mapping[{k}] in the config",
                            rule.path, rule.submodel
                        ),
                    ));
                    continue;
                }
                rule.source = first_source.clone();
                rule.node_id = first_node.clone();
                outputs.push((id, self.mapping.len()));
                self.mapping.push(rule);
                from.rule_origins.push(at);
                from.rule_aid_types.push(None);
            }
            self.transforms
                .push(crate::mapping::transform::TransformSpec {
                    at: t.at,
                    code: t.code,
                    inputs,
                    outputs,
                });
        }
        self.from_aas = from;
    }

    /// The source of interface `i`: the `[[opcua]]` entry with its base (checked for
    /// contradictions, given the AID's security where it has none), or a new one.
    fn source_for(
        &mut self,
        i: usize,
        interfaces: &[aid::AidInterface],
        from: &mut FromAas,
    ) -> String {
        let iface = &interfaces[i];
        let base = normalize_endpoint(&iface.base);
        let entry = self.opcua[..from.toml_sources]
            .iter()
            .position(|s| normalize_endpoint(&s.endpoint) == base);
        let token = iface.user_token.as_deref().unwrap_or("Anonymous");
        if let Some(k) = entry {
            let s = &mut self.opcua[k];
            for (field, aid_value, value) in [
                ("security_mode", &iface.security_mode, &mut s.security_mode),
                (
                    "security_policy",
                    &iface.security_policy,
                    &mut s.security_policy,
                ),
            ] {
                match aid_value {
                    Some(a) if value == "None" => *value = a.clone(),
                    Some(a) if a != value => from.problems.push((
                        format!("opcua[{k}].{field}"),
                        format!(
                            "{value:?} contradicts the AID interface of {} ({}), which says {a:?}",
                            iface.base, iface.at
                        ),
                    )),
                    _ => {}
                }
            }
            if token == "Anonymous" && s.username.is_some() {
                from.problems.push((
                    format!("opcua[{k}].username"),
                    format!(
                        "the AID interface of {} ({}) says uav_userIdentityToken Anonymous",
                        iface.base, iface.at
                    ),
                ));
            }
            return s.name.clone();
        }
        if matches!(token, "UserName" | "Certificate") {
            from.problems.push((
                format!("{}.EndpointMetadata.securityDefinitions.opcua_authentication_sc", iface.at),
                format!(
                    "{} needs a {token} identity; secrets are never in the AAS: add an [[opcua]] entry with endpoint = {:?} and {}",
                    iface.base,
                    iface.base,
                    if token == "UserName" {
                        "username (password in AAS_GATEWAY__OPCUA__<i>__PASSWORD)"
                    } else {
                        "user_certificate and user_private_key"
                    }
                ),
            ));
        }
        let host = iface
            .base
            .trim_start_matches("opc.tcp://")
            .trim_end_matches('/');
        let mut name = format!("aid:{host}");
        while self.opcua.iter().any(|s| s.name == name) {
            name.push('_');
        }
        self.opcua.push(iface.source_config(&name));
        from.source_origins.push(iface.at.clone());
        name
    }

    /// Checks that each AIMC rule's AID property type fits its element in `env` (missing
    /// elements are the router's to report).
    pub fn check_aid_types(&self, env: &crate::aas::Environment) -> ConfigErrors {
        let mut errors = ConfigErrors::default();
        let from = &self.from_aas;
        for (k, aid_type) in from.rule_aid_types.iter().enumerate() {
            let (Some(t), Some(rule)) = (aid_type, self.mapping.get(from.toml_rules + k)) else {
                continue;
            };
            let Ok(loc) = env.locate(&rule.submodel, &rule.path) else {
                continue;
            };
            if let Err(e) = aimc::type_fits(t, loc.kind, loc.value_type) {
                errors.push(&from.rule_origins[k], e);
            }
        }
        errors
    }

    /// Reports what reading AID + AIMC found wrong.
    pub(super) fn check_from_aas(&self, errors: &mut ConfigErrors) {
        for (at, e) in &self.from_aas.problems {
            errors.push(at, e);
        }
    }

    /// An error about an added source or rule (`opcua[7].…`, `mapping[42].…`) rewritten to
    /// name the AAS element it came from; other errors are returned unchanged.
    pub fn relabel(&self, error: String) -> String {
        let from = &self.from_aas;
        let rewrite = |prefix: &str, first: usize, origins: &[String]| -> Option<String> {
            let rest = error.strip_prefix(prefix)?;
            let (index, rest) = rest.split_once(']')?;
            let index: usize = index.parse().ok()?;
            let origin = origins.get(index.checked_sub(first)?)?;
            let (field, message) = rest.split_once(": ").unwrap_or(("", rest));
            let field = field.trim_start_matches('.');
            let what = if prefix == "mapping[" {
                "AIMC rule"
            } else {
                "source from AID"
            };
            Some(format!("{origin}: {message} ({what}, {field})"))
        };
        rewrite("mapping[", from.toml_rules, &from.rule_origins)
            .or_else(|| rewrite("opcua[", from.toml_sources, &from.source_origins))
            .unwrap_or(error)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::Config;
    use crate::aas::aid::{self, global_ref, model_ref};
    use crate::config::AcquisitionMode;

    fn prop(id_short: &str, value: &str) -> Value {
        json!({"idShort": id_short, "modelType": "Property", "valueType": "xs:string", "value": value})
    }

    /// An AID with one OPC UA interface at `base` (channel security and token as given) and
    /// properties `(name, node id, observable)`.
    fn aid_submodel(base: &str, mode: &str, token: &str, props: &[(&str, &str, bool)]) -> Value {
        let properties: Vec<Value> = props
            .iter()
            .map(|(name, node, observable)| {
                json!({"idShort": name, "modelType": "SubmodelElementCollection",
                    "semanticId": global_ref(aid::AID_PROPERTY_DEFINITION),
                    "value": [prop("observable", &observable.to_string()),
                        {"idShort": "forms", "modelType": "SubmodelElementCollection",
                         "value": [prop("href", &aid::href_for(node))]}]})
            })
            .collect();
        json!({"id": "urn:aid", "idShort": "AID", "modelType": "Submodel",
            "semanticId": model_ref(&[("Submodel", aid::AID_SUBMODEL)]),
            "submodelElements": [{"idShort": "InterfaceOPCUA", "modelType": "SubmodelElementCollection",
                "semanticId": global_ref(aid::AID_INTERFACE),
                "value": [
                    {"idShort": "EndpointMetadata", "modelType": "SubmodelElementCollection", "value": [
                        prop("base", base),
                        {"idShort": "securityDefinitions", "modelType": "SubmodelElementCollection", "value": [
                            {"idShort": "opcua_channel_sc", "modelType": "SubmodelElementCollection",
                             "value": [prop("uav_securityMode", mode), prop("uav_securityPolicy", "Basic256Sha256")]},
                            {"idShort": "opcua_authentication_sc", "modelType": "SubmodelElementCollection",
                             "value": [prop("uav_userIdentityToken", token)]}]}]},
                    {"idShort": "InteractionMetadata", "modelType": "SubmodelElementCollection", "value": [
                        {"idShort": "properties", "modelType": "SubmodelElementCollection", "value": properties}]}]}]})
    }

    /// An AIMC 2.0 pairing AID property `name` with element `target` of `urn:op`.
    fn aimc2(pairs: &[(&str, &str)]) -> Value {
        let mc = aid::AIMC2_CONFIGURATION;
        let sources: Vec<Value> = pairs.iter().map(|(name, _)| json!({"modelType": "SubmodelElementCollection", "value": [
            {"idShort": "Source", "modelType": "ReferenceElement", "value": model_ref(&[
                ("Submodel", "urn:aid"), ("SubmodelElementCollection", "InterfaceOPCUA"),
                ("SubmodelElementCollection", "InteractionMetadata"), ("SubmodelElementCollection", "properties"),
                ("SubmodelElementCollection", name)])},
            {"idShort": "PollingInterval", "modelType": "Property", "valueType": "xs:double", "value": "0.5"},
            prop("SourceId", name)]})).collect();
        let sinks: Vec<Value> = pairs.iter().map(|(name, target)| json!({"modelType": "SubmodelElementCollection", "value": [
            {"idShort": "Sink", "modelType": "ReferenceElement", "value": model_ref(&[("Submodel", "urn:op"), ("Property", target)])},
            prop("SinkId", name)]})).collect();
        json!({"id": "urn:aimc", "idShort": "AIMC", "modelType": "Submodel",
            "semanticId": global_ref(aid::AIMC_SUBMODEL_2_0),
            "submodelElements": [{"idShort": "MappingConfigurations", "modelType": "SubmodelElementList",
                "typeValueListElement": "SubmodelElementCollection",
                "value": [{"modelType": "SubmodelElementCollection", "semanticId": global_ref(mc), "value": [
                    {"idShort": "Sources", "modelType": "SubmodelElementList", "typeValueListElement": "SubmodelElementCollection", "value": sources},
                    {"idShort": "Sinks", "modelType": "SubmodelElementList", "typeValueListElement": "SubmodelElementCollection", "value": sinks}]}]}]})
    }

    fn load(toml: &str, submodels: Vec<Value>) -> (Config, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let env = json!({"submodels": submodels});
        std::fs::write(dir.path().join("m.json"), env.to_string()).unwrap();
        let path = dir.path().join("gw.toml");
        std::fs::write(&path, format!("[aas]\nenvironments = [\"m.json\"]\n{toml}")).unwrap();
        (Config::load_lenient(&path).unwrap(), dir)
    }

    #[test]
    fn aid_and_aimc2_make_a_source_and_rules_non_observable_ones_read_cyclically() {
        let (cfg, _dir) = load(
            "",
            vec![
                aid_submodel(
                    "opc.tcp://PLC:4840/",
                    "SignAndEncrypt",
                    "Anonymous",
                    &[
                        ("Speed", "nsu=urn:x;s=Speed", true),
                        ("Temp", "ns=2;i=7", false),
                    ],
                ),
                aimc2(&[("Speed", "Speed"), ("Temp", "Temperature")]),
            ],
        );
        assert!(
            cfg.from_aas.problems.is_empty(),
            "{:?}",
            cfg.from_aas.problems
        );
        assert_eq!(cfg.opcua.len(), 1);
        assert_eq!(cfg.opcua[0].name, "aid:PLC:4840");
        assert_eq!(cfg.opcua[0].security_mode, "SignAndEncrypt");
        assert_eq!(cfg.opcua[0].security_policy, "Basic256Sha256");
        assert_eq!(cfg.mapping.len(), 2);
        let speed = &cfg.mapping[0];
        assert_eq!(
            (
                speed.node_id.as_str(),
                speed.submodel.as_str(),
                speed.path.as_str()
            ),
            ("nsu=urn:x;s=Speed", "urn:op", "Speed")
        );
        assert_eq!(speed.mode, None);
        let temp = &cfg.mapping[1];
        assert_eq!(temp.mode, Some(AcquisitionMode::Read));
        assert_eq!(temp.read_interval_ms, Some(500));
        assert_eq!(temp.source.as_deref(), Some("aid:PLC:4840"));
    }

    #[test]
    fn contradictions_and_missing_secrets_are_rejected_by_path() {
        // The entry for the base says Sign where the AID says SignAndEncrypt, and has a user
        // where the AID says Anonymous; a [[mapping]] feeds an element the AIMC feeds too.
        let (cfg, _dir) = load(
            "[[opcua]]\nname = \"plc\"\nendpoint = \"opc.tcp://plc:4840\"\nsecurity_mode = \"Sign\"\n\
             username = \"u\"\npassword = \"p\"\n\
             [[mapping]]\nnode_id = \"ns=2;s=Other\"\nsubmodel = \"urn:op\"\npath = \"Speed\"\n",
            vec![
                aid_submodel(
                    "opc.tcp://PLC:4840/",
                    "SignAndEncrypt",
                    "Anonymous",
                    &[("Speed", "nsu=urn:x;s=Speed", true), ("Temp", "ns=2;i=7", true)],
                ),
                aimc2(&[("Speed", "Speed"), ("Temp", "Temperature"), ("Nope", "X")]),
            ],
        );
        let errors = cfg.validate().unwrap_err().to_string();
        for expected in [
            "opcua[0].security_mode: \"Sign\" contradicts the AID interface",
            "opcua[0].username: the AID interface",
            "is also mapped by mapping[0] in the config",
            "m.json: submodels[1].submodelElements[0].value[0].value[1].value[2].SinkId: no Source has SourceId \"Nope\"",
            "AID property missing: interface \"InterfaceOPCUA\" of \"urn:aid\" has no property InteractionMetadata.properties.Nope",
        ] {
            assert!(errors.contains(expected), "missing {expected:?} in:\n{errors}");
        }
        // The one rule left goes to the TOML's source (no second source for the same base).
        assert_eq!(cfg.opcua.len(), 1);
        assert_eq!(cfg.mapping.len(), 2);
        assert_eq!(cfg.mapping[1].source.as_deref(), Some("plc"));

        // A UserName interface without an [[opcua]] entry: the secrets are missing.
        let (cfg, _dir) = load(
            "",
            vec![
                aid_submodel(
                    "opc.tcp://plc2:4840",
                    "None",
                    "UserName",
                    &[("A", "ns=2;i=1", true)],
                ),
                aimc2(&[("A", "A")]),
            ],
        );
        let errors = cfg.validate().unwrap_err().to_string();
        assert!(
            errors.contains("needs a UserName identity; secrets are never in the AAS"),
            "{errors}"
        );
    }
}
