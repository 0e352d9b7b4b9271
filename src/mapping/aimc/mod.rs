//! Reading IDTA 02027 Asset Interfaces Mapping Configuration (AIMC) submodels into mapping
//! rules: which AID property (an OPC UA node, see [`crate::sources::aid`]) feeds which
//! submodel element.
//!
//! - **AIMC 1.0**: `MappingConfigurations` → `MappingConfiguration` → `MappingSourceSinkRelations`,
//!   a list of RelationshipElements whose `first` is the AID property and `second` the target.
//! - **AIMC 2.0/2.1**: `MappingConfiguration` → `Sources` (each a `Source` reference,
//!   `PollingInterval`, `SourceId`) and `Sinks` (a `Sink` reference, `SinkId`); without a
//!   `Transformation` a sink takes the source with its id. A `PollingInterval` (or the
//!   configuration's `DefaultPollingInterval`, seconds) applies to properties that are not
//!   `observable`: they are read cyclically at that period; observable ones are subscribed.
//!
//! The result is plain [`MappingRule`]s (plus where each came from, for messages), so the
//! router, the type checks and the sources treat them like `[[mapping]]` entries. The target
//! submodels must exist in the served environments; the router checks that, and the config
//! names the relation's JSON path in its errors.

pub mod export;

use std::collections::HashMap;

use serde_json::Value;

use crate::aas::aid::{self, child, child_value, children, is};
use crate::aas::ElementKind;
use crate::core::XsType;
use crate::mapping::MappingRule;
use crate::sources::aid::{AidInterface, AidProperty, Problems};
use crate::sources::opcua::config::AcquisitionMode;

/// An AIMC 2.x source: its AID property (interface, property) and polling interval (s).
type SourceEntry = ((usize, usize), Option<f64>);

/// A rule read from an AIMC relation.
#[derive(Debug, Clone)]
pub struct AimcRule {
    /// JSON path of the relation (AIMC 1.0) or sink (2.x), for messages.
    pub at: String,
    /// Index of the AID interface (in the list given to [`rules`]) the node lives on.
    pub interface: usize,
    /// The rule; `source` is left empty for the config to fill in.
    pub rule: MappingRule,
    /// The AID property's `type`, to check against the element ([`type_fits`]).
    pub aid_type: Option<String>,
}

/// An AIMC 2.x configuration with a Lua `Transformation`.
#[derive(Debug, Clone)]
pub struct AimcTransform {
    /// JSON path of the MappingConfiguration.
    pub at: String,
    /// The Lua code (the Blob's bytes).
    pub code: String,
    /// SourceId → (AID interface index, the rule monitoring its node; no element).
    pub sources: Vec<(String, usize, MappingRule)>,
    /// SinkId → (JSON path of the sink, the rule of its element, `transform_output` set;
    /// `source`/`node_id` to be filled in by the config).
    pub sinks: Vec<(String, String, MappingRule)>,
}

/// What the AIMC submodels of a document say.
#[derive(Debug, Default)]
pub struct Parsed {
    /// One rule per relation (1.0) or source/sink pair (2.x).
    pub rules: Vec<AimcRule>,
    /// 2.x configurations with a transformation.
    pub transforms: Vec<AimcTransform>,
}

/// Whether a submodel is an AIMC (1.0 or 2.x).
pub fn is_aimc_submodel(sm: &Value) -> bool {
    is(
        sm,
        aid::AIMC_SUBMODEL_1_0,
        &["AssetInterfacesMappingConfiguration"],
    ) || is(sm, aid::AIMC_SUBMODEL_2_0, &[])
}

/// The rules of every AIMC submodel in `doc`, resolved against `interfaces` (from every
/// environment). What cannot be resolved goes to `problems` with its JSON path.
pub fn rules(
    doc: &Value,
    file: &str,
    interfaces: &[AidInterface],
    problems: &mut Problems,
) -> Parsed {
    let mut out = Parsed::default();
    let submodels = doc.get("submodels").and_then(Value::as_array);
    for (i, sm) in submodels.into_iter().flatten().enumerate() {
        if !is_aimc_submodel(sm) {
            continue;
        }
        for (j, list) in children(sm).iter().enumerate() {
            if !is(list, aid::AIMC_CONFIGURATIONS, &["MappingConfigurations"]) {
                continue;
            }
            for (k, config) in children(list).iter().enumerate() {
                let at = format!("{file}: submodels[{i}].submodelElements[{j}].value[{k}]");
                configuration(config, &at, interfaces, problems, &mut out);
            }
        }
    }
    out
}

fn configuration(
    config: &Value,
    at: &str,
    interfaces: &[AidInterface],
    problems: &mut Problems,
    parsed: &mut Parsed,
) {
    let out = &mut parsed.rules;
    let mc = aid::AIMC2_CONFIGURATION;
    let part = |name: &str| format!("{mc}/{name}");
    let relations = children(config)
        .iter()
        .position(|c| is(c, aid::AIMC1_RELATIONS, &["MappingSourceSinkRelations"]));
    if let Some(r) = relations {
        for (n, rel) in children(&children(config)[r]).iter().enumerate() {
            let here = format!("{at}.value[{r}].value[{n}]");
            let (Some(first), Some(second)) = (rel.get("first"), rel.get("second")) else {
                problems.push((
                    here,
                    "a relation needs first (AID property) and second (target)".into(),
                ));
                continue;
            };
            let source = match resolve_property(first, interfaces) {
                Ok(s) => s,
                Err(e) => {
                    problems.push((format!("{here}.first"), e));
                    continue;
                }
            };
            push_rule(
                &format!("{here}.second"),
                source,
                second,
                None,
                interfaces,
                problems,
                out,
            );
        }
        return;
    }
    let sources_at = children(config)
        .iter()
        .position(|c| is(c, &part("Sources"), &["Sources"]));
    let sinks_at = children(config)
        .iter()
        .position(|c| is(c, &part("Sinks"), &["Sinks"]));
    let (Some(s), Some(k)) = (sources_at, sinks_at) else {
        problems.push((
            at.to_string(),
            "a MappingConfiguration needs MappingSourceSinkRelations (AIMC 1.0) or Sources and Sinks (AIMC 2.x)".into(),
        ));
        return;
    }; // The Blob's value is base64 of the Lua text; plain text is accepted too.
    let transformation = child(config, &part("Transformation"), &["Transformation"])
        .and_then(|t| t.get("value"))
        .and_then(Value::as_str)
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_else(|| v.to_string())
        });
    let mut transform_sources = Vec::new();
    let mut transform_sinks = Vec::new();
    let default_interval = child_value(
        config,
        &part("DefaultPollingInterval"),
        &["DefaultPollingInterval"],
    )
    .and_then(|v| v.parse::<f64>().ok());
    // SourceId → the AID properties (interface, property) with their polling intervals.
    let mut by_id: HashMap<String, Vec<SourceEntry>> = HashMap::new();
    for (n, src) in children(&children(config)[s]).iter().enumerate() {
        let here = format!("{at}.value[{s}].value[{n}]");
        let Some(id) = child_value(src, &part("Source/SourceId"), &["SourceId"]) else {
            problems.push((format!("{here}.SourceId"), "missing".into()));
            continue;
        };
        let Some(reference) =
            child(src, &part("Source/Source"), &["Source"]).and_then(|r| r.get("value"))
        else {
            problems.push((
                format!("{here}.Source"),
                "missing reference to an AID property".into(),
            ));
            continue;
        };
        let interval = child_value(src, &part("Source/PollingInterval"), &["PollingInterval"])
            .and_then(|v| v.parse::<f64>().ok())
            .or(default_interval);
        match resolve_property(reference, interfaces) {
            Ok(p) => {
                transform_sources.push((id.to_string(), p, interval));
                by_id.entry(id.to_string()).or_default().push((p, interval))
            }
            Err(e) => problems.push((format!("{here}.Source"), e)),
        }
    }
    for (n, sink) in children(&children(config)[k]).iter().enumerate() {
        let here = format!("{at}.value[{k}].value[{n}]");
        let Some(id) = child_value(sink, &part("Sink/SinkId"), &["SinkId"]) else {
            problems.push((format!("{here}.SinkId"), "missing".into()));
            continue;
        };
        let Some(reference) =
            child(sink, &part("Sink/Sink"), &["Sink"]).and_then(|r| r.get("value"))
        else {
            problems.push((
                format!("{here}.Sink"),
                "missing reference to the target element".into(),
            ));
            continue;
        };
        if transformation.is_some() {
            match target(reference) {
                Ok((submodel, path)) => transform_sinks.push((
                    id.to_string(),
                    format!("{here}.Sink"),
                    MappingRule {
                        submodel,
                        path,
                        transform_output: true,
                        ..Default::default()
                    },
                )),
                Err(e) => problems.push((format!("{here}.Sink"), e)),
            }
            continue;
        }
        match by_id.get(id).map(Vec::as_slice) {
            Some([(p, interval)]) => push_rule(
                &format!("{here}.Sink"),
                *p,
                reference,
                *interval,
                interfaces,
                problems,
                out,
            ),
            Some(more) if more.len() > 1 => problems.push((
                format!("{here}.SinkId"),
                format!("{id:?} is the SourceId of {} sources; without a Transformation a sink takes exactly one", more.len()),
            )),
            _ => problems.push((
                format!("{here}.SinkId"),                format!("no Source has SourceId {id:?}"),
            )),
        }
    }
    if let Some(code) = transformation {
        if transform_sources.is_empty() {
            problems.push((
                format!("{at}.Sources"),
                "a Transformation needs at least one source".into(),
            ));
            return;
        }
        parsed.transforms.push(AimcTransform {
            at: at.to_string(),
            code,
            sources: transform_sources
                .into_iter()
                .map(|(id, (i, p), interval)| {
                    (id, i, node_rule(&interfaces[i].properties[p], interval))
                })
                .collect(),
            sinks: transform_sinks,
        });
    }
}

/// The rule that acquires an AID property's node: subscribed, or read cyclically (every
/// `interval_s` when given) when the property is not observable.
fn node_rule(property: &AidProperty, interval_s: Option<f64>) -> MappingRule {
    let mut rule = MappingRule {
        node_id: property
            .node_id
            .clone()
            .expect("checked by resolve_property"),
        ..Default::default()
    };
    if !property.observable {
        rule.mode = Some(AcquisitionMode::Read);
        if let Some(s) = interval_s.filter(|s| s.is_finite() && *s > 0.0) {
            rule.read_interval_ms = Some(((s * 1000.0).round() as u64).max(1));
        }
    }
    rule
}

/// The AID property a reference names: `(interface index, property index)`.
fn resolve_property(
    reference: &Value,
    interfaces: &[AidInterface],
) -> Result<(usize, usize), String> {
    let keys = key_values(reference);
    let [(_, submodel), (_, iface), rest @ ..] = keys.as_slice() else {
        return Err(format!(
            "{} is not a reference to an AID property (Submodel, interface, …, property)",
            show(&keys)
        ));
    };
    let Some(i) = interfaces
        .iter()
        .position(|x| &x.submodel_id == submodel && &x.id_short == iface)
    else {
        return Err(format!(
            "{}: no OPC UA interface {iface:?} in an AID submodel {submodel:?}",
            show(&keys)
        ));
    };
    let path: Vec<&str> = rest.iter().map(|(_, v)| v.as_str()).collect();
    let Some(p) = interfaces[i]
        .properties
        .iter()
        .position(|p| p.path.iter().map(String::as_str).eq(path.iter().copied()))
    else {
        return Err(format!(
            "AID property missing: interface {iface:?} of {submodel:?} has no property {}",
            path.join(".")
        ));
    };
    if let Err(e) = &interfaces[i].properties[p].node_id {
        return Err(format!(
            "AID property {} ({}): {e}",
            path.join("."),
            interfaces[i].properties[p].at
        ));
    }
    Ok((i, p))
}

/// The target of a reference: submodel id and idShortPath (list items as `[n]`).
fn target(reference: &Value) -> Result<(String, String), String> {
    let keys = key_values(reference);
    let [(t, submodel), rest @ ..] = keys.as_slice() else {
        return Err("empty reference".into());
    };
    if t != "Submodel" || rest.is_empty() {
        return Err(format!(
            "{} is not a reference to a submodel element (Submodel, …, element)",
            show(&keys)
        ));
    }
    let mut path = String::new();
    let mut in_list = false;
    for (t, v) in rest {
        if in_list && v.parse::<usize>().is_ok() {
            path.push_str(&format!("[{v}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(v);
        }
        in_list = t == "SubmodelElementList";
    }
    Ok((submodel.clone(), path))
}

fn push_rule(
    at: &str,
    (i, p): (usize, usize),
    target_ref: &Value,
    interval_s: Option<f64>,
    interfaces: &[AidInterface],
    problems: &mut Problems,
    out: &mut Vec<AimcRule>,
) {
    let (submodel, path) = match target(target_ref) {
        Ok(t) => t,
        Err(e) => {
            problems.push((at.to_string(), e));
            return;
        }
    };
    let rule = MappingRule {
        submodel,
        path,
        ..node_rule(&interfaces[i].properties[p], interval_s)
    };
    out.push(AimcRule {
        at: at.to_string(),
        interface: i,
        rule,
        aid_type: interfaces[i].properties[p].data_type.clone(),
    });
}

/// Whether values of an AID property of JSON Schema `aid_type` fit an element of `kind` and
/// `xs` (the element's value type, for lists their items'): the error says why not. Unknown
/// types pass; the values are still checked one by one on arrival.
pub fn type_fits(aid_type: &str, kind: ElementKind, xs: XsType) -> Result<(), String> {
    let list = kind == ElementKind::PropertyList;
    let numeric =
        xs.int_range().is_some() || matches!(xs, XsType::Float | XsType::Double | XsType::Decimal);
    let fits = match aid_type {
        "array" => list,
        _ if list => false,
        "boolean" => matches!(xs, XsType::Boolean | XsType::String),
        "integer" => numeric || xs == XsType::String,
        "number" => {
            matches!(
                xs,
                XsType::Float | XsType::Double | XsType::Decimal | XsType::String
            )
        }
        "string" => !numeric && xs != XsType::Boolean,
        _ => true,
    };
    if fits {
        Ok(())
    } else {
        let element = if list {
            format!("a SubmodelElementList of {xs}")
        } else {
            xs.to_string()
        };
        Err(format!(
            "the AID property's type {aid_type:?} cannot fit the element ({element})"
        ))
    }
}

/// `(type, value)` of a reference's keys.
fn key_values(reference: &Value) -> Vec<(String, String)> {
    reference
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|k| {
            let s = |f: &str| {
                k.get(f)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            (s("type"), s("value"))
        })
        .collect()
}

fn show(keys: &[(String, String)]) -> String {
    let parts: Vec<String> = keys.iter().map(|(t, v)| format!("({t}){v}")).collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_that_cannot_fit_are_named() {
        let p = ElementKind::Property;
        assert!(type_fits("number", p, XsType::Double).is_ok());
        assert!(type_fits("integer", p, XsType::Float).is_ok());
        assert!(type_fits("string", p, XsType::DateTime).is_ok());
        assert!(type_fits("array", ElementKind::PropertyList, XsType::Int).is_ok());
        let e = type_fits("boolean", p, XsType::Double).unwrap_err();
        assert!(
            e.contains("\"boolean\" cannot fit the element (xs:double)"),
            "{e}"
        );
        assert!(type_fits("number", p, XsType::Int).is_err());
        assert!(type_fits("array", p, XsType::Double).is_err());
        assert!(type_fits("number", ElementKind::PropertyList, XsType::Double).is_err());
        assert!(type_fits("object", p, XsType::Int).is_ok());
    }

    #[test]
    fn targets_become_id_short_paths() {
        let r = aid::model_ref(&[
            ("Submodel", "urn:sm"),
            ("SubmodelElementCollection", "Axes"),
            ("SubmodelElementList", "Positions"),
            ("Property", "2"),
        ]);
        assert_eq!(
            target(&r).unwrap(),
            ("urn:sm".into(), "Axes.Positions[2]".into())
        );
        let bad = aid::model_ref(&[("Property", "X")]);
        assert!(target(&bad).is_err());
        assert!(target(&json!({})).is_err());
    }
}
