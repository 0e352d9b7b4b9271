//! Mapping: OPC UA node → submodel element, resolved and type-checked once at start.
//!
//! [`Router::build`] checks every rule against the loaded AAS environment and reports all
//! problems at once (unknown submodel, missing idShortPath, element kinds that cannot hold a
//! value, a node mapped twice). At run time [`Router::route`] turns a [`Reading`] into a
//! [`SubmodelUpdate`] by index, converting the value to the element's `xs:*` type.

use std::sync::Arc;

use crate::aas::{ElementLocation, Environment};
use crate::config::{Config, ConfigErrors};
use crate::model::{ElementTarget, Reading, SubmodelUpdate};
use crate::sources::opcua::convert::variant_to_typed;
use crate::sources::opcua::node_ref::NodeRef;
use crate::sources::opcua::MonitoredNode;

/// One compiled rule.
#[derive(Debug)]
pub struct Route {
    pub source: usize,
    pub node: NodeRef,
    pub target: Arc<ElementTarget>,
    pub location: ElementLocation,
}

/// All compiled rules, indexed by rule number (= position in `mapping`).
#[derive(Debug)]
pub struct Router {
    pub routes: Vec<Route>,
}

/// The MQTT topic of an element: `<prefix>/<shell idShort>/<submodel idShort>/<path with / for .>`.
pub fn element_topic(prefix: &str, shell: &str, submodel: &str, path: &str) -> String {
    let path = path.replace('.', "/");
    if prefix.is_empty() {
        format!("{shell}/{submodel}/{path}")
    } else {
        format!("{prefix}/{shell}/{submodel}/{path}")
    }
}

impl Router {
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
            routes.push(Route {
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
                }),
                location,
            });
        }
        errors.into_result()?;
        Ok(Router { routes })
    }

    /// The nodes each source must monitor.
    pub fn nodes_of_source(&self, source: usize) -> Vec<MonitoredNode> {
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.source == source)
            .map(|(i, r)| MonitoredNode {
                rule: i as u32,
                node: r.node.clone(),
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
        let value = variant_to_typed(&reading.value).map_err(fail)?;
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
