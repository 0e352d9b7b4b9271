//! Mapping: OPC UA node → submodel element, resolved and type-checked once at start.
//!
//! [`Router::build`] checks every rule against the loaded AAS environment and reports all
//! problems at once (unknown submodel, missing idShortPath, element kinds that cannot hold a
//! value, a node mapped twice). At run time [`Router::route`] turns a [`Reading`] into a
//! [`SubmodelUpdate`] by index, coercing its protocol-free [`TypedValue`] to the element's
//! `xs:*` type.

#![warn(missing_docs)]

use std::sync::Arc;

use opcua::types::{DataTypeId, Identifier, NodeId};

use crate::aas::{ElementKind, ElementLocation, Environment, XsType};
use crate::config::{Config, ConfigErrors};
use crate::model::{ElementTarget, Reading, SubmodelUpdate, TypedValue};
use crate::sources::opcua::node_ref::NodeRef;
use crate::sources::opcua::{MonitorSettings, MonitoredNode};

/// One compiled rule.
#[derive(Debug)]
pub struct Route {
    /// Index of the `[[opcua]]` source the node lives on.
    pub source: usize,
    /// The node.
    pub node: NodeRef,
    /// Where its values go (shared by every update of this rule).
    pub target: Arc<ElementTarget>,
    /// The element's precomputed position in the store.
    pub location: ElementLocation,
    /// `value * scale + offset`, when the rule asks for it.
    pub linear: Option<Linear>,
}

/// A linear conversion `value * scale + offset` (unit changes, e.g. W → kW, K → °C).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Linear {
    /// Factor.
    pub scale: f64,
    /// Summand, applied after the factor.
    pub offset: f64,
}

impl Linear {
    /// Applies the conversion to a number or an array of numbers; anything else is an error.
    pub fn apply(self, v: TypedValue) -> Result<TypedValue, String> {
        let x = match v {
            TypedValue::Float(f) => f,
            TypedValue::Int(i) => i as f64,
            TypedValue::UInt(u) => u as f64,
            TypedValue::List(items) => {
                return items
                    .into_iter()
                    .map(|i| self.apply(i))
                    .collect::<Result<_, _>>()
                    .map(TypedValue::List)
            }
            other => return Err(format!("scale/offset need a number, got {other:?}")),
        };
        Ok(TypedValue::Float(x * self.scale + self.offset))
    }
}

/// All compiled rules, indexed by rule number (= position in `mapping`).
#[derive(Debug)]
pub struct Router {
    /// One route per `[[mapping]]` rule, in config order.
    pub routes: Vec<Route>,
}

/// The MQTT topic of an element: `<prefix>/<shell idShort>/<submodel idShort>/<path with / for .>`.
pub fn element_topic(prefix: &str, shell: &str, submodel: &str, path: &str) -> String {
    format!(
        "{}/{}",
        submodel_topic(prefix, shell, submodel),
        path.replace('.', "/")
    )
}

/// MQTT topic of a submodel's batched values (`mqtt.message_per = "submodel"`).
pub fn submodel_topic(prefix: &str, shell: &str, submodel: &str) -> String {
    if prefix.is_empty() {
        format!("{shell}/{submodel}")
    } else {
        format!("{prefix}/{shell}/{submodel}")
    }
}

impl Router {
    /// Compiles every rule against the environment; returns all problems at once.
    pub fn build(cfg: &Config, env: &Environment) -> Result<Router, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let mut routes = Vec::with_capacity(cfg.mapping.len());
        let mut seen = std::collections::HashMap::new();
        let index = env.top_level_index();
        for (i, rule) in cfg.mapping.iter().enumerate() {
            let at = |field: &str| format!("mapping[{i}].{field}");
            let node = match rule.node_id.parse::<NodeRef>() {
                Ok(n) => n,
                Err(e) => {
                    errors.push(at("node_id"), e);
                    continue;
                }
            };
            let Some(source) = cfg.source_index(rule) else {
                errors.push(at("source"), "does not name a configured [[opcua]] source");
                continue;
            };
            if let Some(first) = seen.insert((source, rule.node_id.clone()), i) {
                errors.push(
                    at("node_id"),
                    format!("{} is already mapped by mapping[{first}]", rule.node_id),
                );
            }
            let location = match env.locate_indexed(Some(&index), &rule.submodel, &rule.path) {
                Ok(l) => l,
                Err(e) => {
                    let field = if env.submodel(&rule.submodel).is_none() {
                        "submodel"
                    } else {
                        "path"
                    };
                    errors.push(at(field), e);
                    continue;
                }
            };
            let sm = env.submodel(&rule.submodel).expect("located above");
            let sm_id_short = sm
                .get("idShort")
                .and_then(|v| v.as_str())
                .unwrap_or("Submodel")
                .to_string();
            let shell = env
                .shell_of_submodel(&rule.submodel)
                .unwrap_or("unassigned")
                .to_string();
            let topic = element_topic(&cfg.mqtt.topic_prefix, &shell, &sm_id_short, &rule.path);
            let linear = match (rule.scale, rule.offset) {
                (None, None) => None,
                (scale, offset) => {
                    if !matches!(
                        location.value_type,
                        XsType::Float | XsType::Double | XsType::Decimal
                    ) || location.kind == ElementKind::MultiLanguageProperty
                    {
                        let field = if scale.is_some() { "scale" } else { "offset" };
                        errors.push(
                            at(field),
                            format!(
                                "{} is {}: scale/offset need an xs:float, xs:double or xs:decimal element",
                                rule.path, location.value_type
                            ),
                        );
                        continue;
                    }
                    Some(Linear {
                        scale: scale.unwrap_or(1.0),
                        offset: offset.unwrap_or(0.0),
                    })
                }
            };
            // Through the location: a search by name per rule is quadratic with 100k rules.
            let element = env.element(&location);
            let template_semantic_id = element
                .pointer("/semanticId/keys/0/value")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let unit = rule.unit.clone().or_else(|| {
                template_semantic_id
                    .as_deref()
                    .and_then(|id| env.concept_description_unit(id))
            });
            routes.push(Route {
                linear,
                source,
                node,
                target: Arc::new(ElementTarget {
                    submodel_id: rule.submodel.clone(),
                    submodel_id_short: sm_id_short,
                    shell_id_short: shell,
                    id_short_path: rule.path.clone(),
                    value_type: location.value_type,
                    topic,
                    outbox_id: Default::default(),
                    unit,
                    semantic_id: rule.semantic_id.clone().or(template_semantic_id),
                }),
                location,
            });
        }
        errors.into_result()?;
        Ok(Router { routes })
    }

    /// The nodes each source must monitor, with the rule's acquisition settings applied over
    /// the source's (`cfg` must be the config this router was built from).
    pub fn nodes_of_source(&self, source: usize, cfg: &Config) -> Vec<MonitoredNode> {
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.source == source)
            .map(|(i, r)| MonitoredNode {
                rule: i as u32,
                node: r.node.clone(),
                settings: MonitorSettings::resolve(&cfg.opcua[source], &cfg.mapping[i]),
            })
            .collect()
    }

    /// Converts one reading; an error names the node and element so the log says what to fix.
    pub fn route(&self, reading: Reading) -> Result<(&Route, SubmodelUpdate), String> {
        let route = self
            .routes
            .get(reading.rule as usize)
            .ok_or_else(|| format!("notification for unknown rule {}", reading.rule))?;
        let fail = |e: String| {
            format!(
                "{} -> {}/{}: {e}",
                route.node, route.target.submodel_id_short, route.target.id_short_path
            )
        };
        let mut value = reading.value;
        if let Some(linear) = route.linear {
            value = linear.apply(value).map_err(fail)?;
        }
        let value = route.location.value_type.coerce(value).map_err(fail)?;
        Ok((
            route,
            SubmodelUpdate {
                target: route.target.clone(),
                value,
                status: reading.status,
                source_ts_nanos: reading.source_ts_nanos,
                server_ts_nanos: reading.server_ts_nanos,
            },
        ))
    }
}

/// What kind of values an OPC UA built-in DataType carries, as far as the mapping cares.
#[derive(Debug, Clone, Copy, PartialEq)]
enum NodeValues {
    Boolean,
    /// Signed integers within this range.
    Signed(i128, i128),
    /// Unsigned integers up to this bound.
    Unsigned(i128),
    Float,
    Text,
    DateTime,
    Bytes,
}

fn node_values(dt: DataTypeId) -> Option<NodeValues> {
    use DataTypeId as D;
    use NodeValues::*;
    Some(match dt {
        D::Boolean => Boolean,
        D::SByte => Signed(i8::MIN as i128, i8::MAX as i128),
        D::Int16 => Signed(i16::MIN as i128, i16::MAX as i128),
        // Enumerations travel as Int32.
        D::Int32 | D::Enumeration => Signed(i32::MIN as i128, i32::MAX as i128),
        D::Int64 | D::Integer => Signed(i64::MIN as i128, i64::MAX as i128),
        D::Byte => Unsigned(u8::MAX as i128),
        D::UInt16 => Unsigned(u16::MAX as i128),
        D::UInt32 | D::StatusCode => Unsigned(u32::MAX as i128),
        D::UInt64 | D::UInteger => Unsigned(u64::MAX as i128),
        D::Float | D::Double | D::Number | D::Duration => Float,
        D::String
        | D::LocalizedText
        | D::QualifiedName
        | D::NodeId
        | D::ExpandedNodeId
        | D::Guid
        | D::XmlElement => Text,
        D::DateTime | D::UtcTime => DateTime,
        D::ByteString => Bytes,
        _ => return None,
    })
}

fn xs_range(t: XsType) -> Option<(i128, i128)> {
    Some(match t {
        XsType::Byte => (i8::MIN as i128, i8::MAX as i128),
        XsType::Short => (i16::MIN as i128, i16::MAX as i128),
        XsType::Int => (i32::MIN as i128, i32::MAX as i128),
        XsType::Long | XsType::Integer => (i64::MIN as i128, i64::MAX as i128),
        XsType::UnsignedByte => (0, u8::MAX as i128),
        XsType::UnsignedShort => (0, u16::MAX as i128),
        XsType::UnsignedInt => (0, u32::MAX as i128),
        XsType::UnsignedLong => (0, u64::MAX as i128),
        _ => return None,
    })
}

/// Checks that every value a node of OPC UA DataType `data_type` can send fits the element
/// `route` maps it to, e.g. `Double node mapped to xs:boolean` is an error, `UInt16` into
/// `xs:int` is fine, `Int64` into `xs:int` is not (values beyond ±2³¹ would be rejected at run
/// time). Wire it where the source has read the node's DataType attribute, and report the error
/// as a config error of that rule.
///
/// DataTypes outside namespace 0 (structures, custom enumerations) and abstract ones the
/// gateway does not know pass: their values are still checked on arrival, value by value.
pub fn check_node_type(route: &Route, data_type: &NodeId) -> Result<(), String> {
    let known = match (&data_type.identifier, data_type.namespace) {
        (Identifier::Numeric(n), 0) => DataTypeId::try_from(*n).ok(),
        _ => None,
    };
    let Some(dt) = known else { return Ok(()) };
    let Some(values) = node_values(dt) else {
        return Ok(());
    };
    let xs = route.location.value_type;
    let fail = |why: &str| {
        Err(format!(
            "{dt:?} node {} mapped to {xs} ({}/{}){why}",
            route.node, route.target.submodel_id_short, route.target.id_short_path
        ))
    };
    if route.linear.is_some()
        && !matches!(
            values,
            NodeValues::Float | NodeValues::Signed(..) | NodeValues::Unsigned(_)
        )
    {
        return fail(": scale/offset need a numeric node");
    }
    if route.linear.is_some() {
        return Ok(()); // numeric into xs:float/double/decimal, checked by Router::build
    }
    use NodeValues as V;
    let ok = match (values, xs) {
        // xs:string takes the text form of anything.
        (_, XsType::String) => true,
        (V::Boolean, XsType::Boolean) => true,
        (V::Boolean, t) => xs_range(t).is_some(),
        (V::Signed(lo, hi), t) if xs_range(t).is_some() => {
            let (tlo, thi) = xs_range(t).expect("checked");
            tlo <= lo && hi <= thi
        }
        (V::Unsigned(hi), t) if xs_range(t).is_some() => {
            let (_, thi) = xs_range(t).expect("checked");
            hi <= thi
        }
        (V::Signed(..) | V::Unsigned(_), XsType::Float | XsType::Double | XsType::Decimal) => true,
        (V::Float, XsType::Float | XsType::Double | XsType::Decimal) => true,
        (V::Text, XsType::AnyUri) => dt == DataTypeId::String,
        (V::DateTime, XsType::DateTime) => true,
        (V::Bytes, XsType::Base64Binary) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else if let (V::Signed(..) | V::Unsigned(_), Some(_)) = (values, xs_range(xs)) {
        fail(": the element's range is smaller than the node's")
    } else {
        fail("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_use_slashes_for_path_dots() {
        assert_eq!(
            element_topic("aas", "CNC1", "OperationalData", "Axes.X"),
            "aas/CNC1/OperationalData/Axes/X"
        );
        assert_eq!(element_topic("", "M", "S", "P"), "M/S/P");
    }
}
