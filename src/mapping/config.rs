//! `[[mapping]]`: one node → element rule per entry, with its `validate()`. Checks that need
//! the AAS templates (does the idShortPath exist? does the type fit?) run in
//! [`super::Router::build`].

use serde::Deserialize;

use crate::core::conf::ConfigErrors;
use crate::sources::opcua::config::{
    check_deadband, AcquisitionMode, DataChangeTriggerKind, DeadbandKind, NodeOverrides,
    OpcUaSourceConfig,
};
use crate::sources::opcua::node_ref::NodeRef;

/// One node → element rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    /// Name of the `[[opcua]]` source the node lives on (may be omitted when there is one source).
    #[serde(default)]
    pub source: Option<String>,
    /// OPC UA node id: `nsu=<namespace URI>;s=Name` (preferred: survives index changes),
    /// `ns=2;i=5`, `ns=2;g=<GUID>`, `ns=2;b=<base64>`.
    pub node_id: String,
    /// Identifier of the target submodel (as in the AAS environment).
    pub submodel: String,
    /// idShortPath of the target element in that submodel, e.g. `SpindleSpeed` or `Axes.X`.
    pub path: String,
    /// Multiply numeric values by this before storing them: `value * scale + offset`
    /// (e.g. `0.001` to turn W into kW). Only for elements of type xs:float, xs:double or
    /// xs:decimal, since a scaled value is rarely an integer.
    #[serde(default)]
    pub scale: Option<f64>,
    /// Add this after scaling (e.g. `-273.15` to turn K into °C). Same restriction as `scale`.
    #[serde(default)]
    pub offset: Option<f64>,
    /// Unit of the stored value (after scaling), e.g. `kW`, passed to the sinks with every
    /// value. Default: the IEC 61360 unit of the element's ConceptDescription, if any.
    #[serde(default)]
    pub unit: Option<String>,
    /// Semantic id (IRDI or IRI) to give the element instead of the template's, e.g. when the
    /// plant uses its own ECLASS property. Written into the served AAS and passed to the sinks.
    #[serde(default)]
    pub semantic_id: Option<String>,
    /// Overrides the source's `mode` for this node (`subscribe` or `read`).
    #[serde(default)]
    pub mode: Option<AcquisitionMode>,
    /// Overrides the source's `read_interval_ms` for this node (read mode).
    #[serde(default)]
    pub read_interval_ms: Option<u64>,
    /// Overrides the source's `sampling_interval_ms` for this node.
    #[serde(default)]
    pub sampling_interval_ms: Option<u64>,
    /// Overrides the source's `queue_size` for this node.
    #[serde(default)]
    pub queue_size: Option<u32>,
    /// Overrides the source's `discard_oldest` for this node.
    #[serde(default)]
    pub discard_oldest: Option<bool>,
    /// Overrides the source's `data_change_trigger` for this node.
    #[serde(default)]
    pub data_change_trigger: Option<DataChangeTriggerKind>,
    /// Overrides the source's `deadband_type` for this node.
    #[serde(default)]
    pub deadband_type: Option<DeadbandKind>,
    /// Overrides the source's `deadband_value` for this node.
    #[serde(default)]
    pub deadband_value: Option<f64>,
    /// Allow writing this element back to the node (`PATCH .../$value`, role `writer`).
    #[serde(default)]
    pub writable: bool,
    /// Keep the element's recent values and serve them as history: the shell gets an IDTA 02008
    /// Time Series Data submodel whose Records include this variable (see `[history]`). Only
    /// for Property elements (one value per record).
    #[serde(default)]
    pub history: bool,
    /// Not a config key: set on rules made from the sinks of an AIMC 2.x `Transformation`,
    /// whose element takes the transformation's output; their `node_id` is not monitored.
    #[serde(skip)]
    pub transform_output: bool,
}

impl MappingRule {
    /// Checks this rule (`mapping[index]`) against the configured sources.
    pub fn validate(&self, index: usize, sources: &[OpcUaSourceConfig], errors: &mut ConfigErrors) {
        let i = index;
        let rule = self;
        let at = |field: &str| format!("mapping[{i}].{field}");
        if let Err(e) = rule.node_id.parse::<NodeRef>() {
            errors.push(at("node_id"), e);
        }
        match &rule.source {
            Some(name) if !sources.iter().any(|s| &s.name == name) => errors.push(
                at("source"),
                format!("no [[opcua]] source is named {name:?}"),
            ),
            None if sources.len() > 1 => errors.push(
                at("source"),
                "required when more than one [[opcua]] source is configured",
            ),
            _ => {}
        }
        if rule.path.is_empty() {
            errors.push(at("path"), "must not be empty");
        }
        for (field, v) in [("scale", rule.scale), ("offset", rule.offset)] {
            if v.is_some_and(|v| !v.is_finite()) {
                errors.push(at(field), "must be a finite number");
            }
        }
        if rule.scale == Some(0.0) {
            errors.push(at("scale"), "0 would erase every value");
        }
        if rule.semantic_id.as_deref() == Some("") {
            errors.push(at("semantic_id"), "must not be empty");
        }
        if rule.read_interval_ms == Some(0) {
            errors.push(at("read_interval_ms"), "must be at least 1");
        }
        if rule.queue_size == Some(0) {
            errors.push(at("queue_size"), "must be at least 1");
        }
        if rule.deadband_type.is_some() || rule.deadband_value.is_some() {
            let source = rule.source_index(sources).map(|i| &sources[i]);
            let kind = rule
                .deadband_type
                .or(source.map(|s| s.deadband_type))
                .unwrap_or_default();
            let value = rule
                .deadband_value
                .or(source.map(|s| s.deadband_value))
                .unwrap_or_default();
            check_deadband(errors, &at("deadband_value"), kind, value);
        }
    }

    /// The source this rule refers to (its index in `sources`): by name, or the only one.
    pub fn source_index(&self, sources: &[OpcUaSourceConfig]) -> Option<usize> {
        match &self.source {
            Some(name) => sources.iter().position(|s| &s.name == name),
            None if sources.len() == 1 => Some(0),
            None => None,
        }
    }

    /// The acquisition settings this rule overrides for its node.
    pub fn node_overrides(&self) -> NodeOverrides {
        NodeOverrides {
            mode: self.mode,
            read_interval_ms: self.read_interval_ms,
            sampling_interval_ms: self.sampling_interval_ms,
            queue_size: self.queue_size,
            discard_oldest: self.discard_oldest,
            data_change_trigger: self.data_change_trigger,
            deadband_type: self.deadband_type,
            deadband_value: self.deadband_value,
        }
    }
}
