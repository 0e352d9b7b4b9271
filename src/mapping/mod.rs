//! Mapping: OPC UA node → submodel element, resolved and type-checked once at start.
//!
//! [`Router::build`] checks every rule against the loaded AAS environment and reports all
//! problems at once (unknown submodel, missing idShortPath, element kinds that cannot hold a
//! value, a node mapped twice). At run time [`Router::route`] turns a [`Reading`] into a
//! [`SubmodelUpdate`] by index, coercing its protocol-free [`TypedValue`] to the element's
//! `xs:*` type.

#![warn(missing_docs)]

pub mod aimc;
pub mod config;
pub mod transform;

pub use config::MappingRule;

use std::sync::Arc;

use opcua::types::NodeId;

use crate::aas::{ElementKind, ElementLocation, Environment, XsType};
use crate::core::conf::ConfigErrors;
use crate::model::{ElementTarget, Reading, SubmodelNames, SubmodelUpdate, TypedValue};
use crate::sources::opcua::config::OpcUaSourceConfig;
use crate::sources::opcua::node_ref::NodeRef;
use crate::sources::opcua::{MonitorSettings, MonitoredNode};
use crate::sources::RuleTarget;

/// One compiled rule.
#[derive(Debug)]
pub struct Route {
    /// Index of the `[[opcua]]` source the node lives on (a `u32`: a route per mapped
    /// element, 56 bytes each with it, 64 with a `usize`).
    pub source: u32,
    /// The node (shared with the source's list of monitored nodes, not copied; all nodes of
    /// the rules live in one slice for the process's lifetime, see `Router::build`).
    pub node: &'static NodeRef,
    /// Where its values go (shared by every update of this rule; see [`ElementTarget::leak`]).
    pub target: &'static ElementTarget,
    /// The element's precomputed position in the store.
    pub location: ElementLocation,
    /// `value * scale + offset`, when the rule asks for it. Boxed: few rules scale, and a
    /// gateway holds a route per mapped element (8 bytes instead of 24 each).
    pub linear: Option<Box<Linear>>,
    /// Whether the source monitors `node` for this rule (not for the outputs of a
    /// transformation, whose values come from the transformation).
    pub monitored: bool,
}

// One per mapped element (100k and more).
const _: () = assert!(std::mem::size_of::<Route>() <= 56);

/// A node whose values feed an AIMC 2.x transformation instead of an element. Its readings
/// carry rule number `routes.len() + its index in [`Router::inputs`]`.
#[derive(Debug)]
pub struct InputRoute {
    /// Index of the `[[opcua]]` source the node lives on.
    pub source: usize,
    /// The node.
    pub node: &'static NodeRef,
    /// Index of the transformation in [`Router::transforms`].
    pub transform: usize,
    /// Its SourceId (the key of its value in the Lua table).
    pub source_id: String,
    /// Acquisition settings (cyclic read for non-observable properties).
    pub overrides: crate::sources::opcua::config::NodeOverrides,
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
    /// Nodes that feed transformations (see [`Router::add_transforms`]).
    pub inputs: Vec<InputRoute>,
    /// The AIMC 2.x transformations, compiled again by the dispatcher that runs them.
    pub transforms: Vec<transform::TransformSpec>,
}

impl Router {
    /// Compiles every rule against the environment; returns all problems at once.
    /// `sources` are the configured `[[opcua]]` entries the rules name.
    pub fn build(
        rules: &[MappingRule],
        sources: &[OpcUaSourceConfig],
        env: &Environment,
    ) -> Result<Router, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        // Each route with its target, joined once every rule compiled (see below).
        let mut compiled = Vec::with_capacity(rules.len());
        let mut targets = Vec::with_capacity(rules.len());
        let mut nodes = Vec::with_capacity(rules.len());
        let mut seen = std::collections::HashMap::new();
        let index = env.top_level_index();
        for (i, rule) in rules.iter().enumerate() {
            let at = |field: &str| format!("mapping[{i}].{field}");
            // A namespace URI is kept once per process (as are a submodel's names and the
            // labels: `SubmodelNames`, `ElementLabels`), not once per rule.
            let node = match rule.node_id.parse::<NodeRef>() {
                Ok(n) => n,
                Err(e) => {
                    errors.push(at("node_id"), e);
                    continue;
                }
            };
            let Some(source) = rule.source_index(sources) else {
                errors.push(at("source"), "does not name a configured [[opcua]] source");
                continue;
            };
            let duplicate = if rule.transform_output {
                None
            } else {
                seen.insert((source, rule.node_id.clone()), i)
            };
            if let Some(first) = duplicate {
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
            let submodel = SubmodelNames::shared(
                &rule.submodel,
                sm.get("idShort")
                    .and_then(|v| v.as_str())
                    .unwrap_or("Submodel"),
                env.shell_of_submodel(&rule.submodel)
                    .unwrap_or("unassigned"),
            );
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
                    Some(Box::new(Linear {
                        scale: scale.unwrap_or(1.0),
                        offset: offset.unwrap_or(0.0),
                    }))
                }
            };
            // Through the location: a search by name per rule is quadratic with 100k rules.
            let element = env.element(&location);
            let template_semantic_id = element
                .pointer("/semanticId/keys/0/value")
                .and_then(|v| v.as_str());
            let unit = match &rule.unit {
                Some(u) => Some(u.clone()),
                None => template_semantic_id.and_then(|id| env.concept_description_unit(id)),
            };
            let semantic_id = rule.semantic_id.as_deref().or(template_semantic_id);
            targets.push(ElementTarget::new(
                submodel,
                &rule.path,
                location.value_type,
                unit.as_deref(),
                semantic_id,
            ));
            nodes.push(node);
            compiled.push((source, location, linear, !rule.transform_output));
        }
        errors.into_result()?;
        // Every target in one allocation, in rule order (see `ElementTarget::leak`): values
        // arrive in about that order and the outbox and both sinks read each value's target,
        // so the CPU's prefetcher streams them; one allocation per target cost a cache miss
        // per value in each of them at 100k values/s.
        let targets: &'static [ElementTarget] = Box::leak(targets.into_boxed_slice());
        // The nodes likewise, for the same lifetime: the routes and the sources' lists of
        // monitored nodes refer to them (48 bytes a node; an `Arc` each cost 96 with its
        // counts and the allocator's rounding).
        let nodes: &'static [NodeRef] = Box::leak(nodes.into_boxed_slice());
        let routes = compiled
            .into_iter()
            .zip(targets.iter().zip(nodes))
            .map(
                |((source, location, linear, monitored), (target, node))| Route {
                    source: source as u32,
                    node,
                    target,
                    location,
                    linear,
                    monitored,
                },
            )
            .collect();
        Ok(Router {
            routes,
            inputs: Vec::new(),
            transforms: Vec::new(),
        })
    }

    /// Adds AIMC 2.x transformations: compiles each (a Lua error is reported at the
    /// transformation's JSON path) and monitors its source nodes.
    pub fn add_transforms(
        &mut self,
        specs: &[transform::TransformSpec],
        sources: &[OpcUaSourceConfig],
    ) -> Result<(), ConfigErrors> {
        let mut errors = ConfigErrors::default();
        for spec in specs {
            if let Err(e) = spec.compile() {
                errors.push(&spec.at, e);
                continue;
            }
            let t = self.transforms.len();
            for (source_id, rule) in &spec.inputs {
                let at = format!("{}.Sources.{source_id}", spec.at);
                let node = match rule.node_id.parse::<NodeRef>() {
                    // Few (a transformation's inputs): one allocation each is fine.
                    Ok(n) => &*Box::leak(Box::new(n)),
                    Err(e) => {
                        errors.push(&at, e);
                        continue;
                    }
                };
                let Some(source) = rule.source_index(sources) else {
                    errors.push(&at, "does not name a configured [[opcua]] source");
                    continue;
                };
                self.inputs.push(InputRoute {
                    source,
                    node,
                    transform: t,
                    source_id: source_id.clone(),
                    overrides: rule.node_overrides(),
                });
            }
            self.transforms.push(spec.clone());
        }
        errors.into_result()
    }

    /// The nodes source `source` (its index; `config` is its entry) must monitor, with each
    /// rule's acquisition settings applied over the source's (`rules` are the rules this
    /// router was built from).
    pub fn nodes_of_source(
        &self,
        source: usize,
        config: &OpcUaSourceConfig,
        rules: &[MappingRule],
    ) -> Vec<MonitoredNode> {
        let first_input = self.routes.len();
        // Nodes with the same settings share one copy: most rules override nothing, and a
        // copy per node was 32 bytes of 100k nodes.
        let mut last: Option<Arc<MonitorSettings>> = None;
        let mut shared = |settings: MonitorSettings| match &last {
            Some(l) if **l == settings => l.clone(),
            _ => last.insert(Arc::new(settings)).clone(),
        };
        let mut nodes: Vec<MonitoredNode> = self
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.source as usize == source && r.monitored)
            .map(|(i, r)| MonitoredNode {
                rule: i as u32,
                node: r.node,
                settings: shared(MonitorSettings::resolve(config, &rules[i].node_overrides())),
            })
            .collect();
        nodes.extend(
            self.inputs
                .iter()
                .enumerate()
                .filter(|(_, r)| r.source == source)
                .map(|(k, r)| MonitoredNode {
                    rule: (first_input + k) as u32,
                    node: r.node,
                    settings: shared(MonitorSettings::resolve(config, &r.overrides)),
                }),
        );
        nodes
    }

    /// Whether source `source` (its index) has a node to monitor: the same answer as
    /// `!nodes_of_source(..).is_empty()` without building the list (100k entries at scale).
    pub fn monitors_any(&self, source: usize) -> bool {
        self.routes
            .iter()
            .any(|r| r.source as usize == source && r.monitored)
            || self.inputs.iter().any(|r| r.source == source)
    }

    /// Converts one reading; an error names the node and element so the log says what to fix.
    /// (The dispatcher converts through a [`RouteTable`], which does the same with less memory
    /// traffic per value.)
    pub fn route(&self, reading: Reading) -> Result<(&Route, SubmodelUpdate), String> {
        let route = self
            .routes
            .get(reading.rule as usize)
            .ok_or_else(|| format!("notification for unknown rule {}", reading.rule))?;
        let update = convert(
            reading,
            route.target,
            route.linear.as_deref().copied(),
            route.location.value_type,
        )
        .map_err(|e| route.conversion_error(e))?;
        Ok((route, update))
    }
}

/// A reading's value through the rule's linear conversion and coerced to its element's type.
fn convert(
    reading: Reading,
    target: &'static ElementTarget,
    linear: Option<Linear>,
    value_type: XsType,
) -> Result<SubmodelUpdate, String> {
    let mut value = reading.value;
    if let Some(linear) = linear {
        value = linear.apply(value)?;
    }
    Ok(SubmodelUpdate {
        target,
        value: value_type.coerce(value)?,
        status: reading.status,
        source_ts_nanos: reading.source_ts_nanos,
        server_ts_nanos: reading.server_ts_nanos,
    })
}

/// What converting a reading needs of its rule, 16 bytes a rule in one array.
///
/// A [`Route`] is about 100 bytes and 100k of them do not stay in the CPU's caches between two
/// publishing intervals: reading each value's route from memory was the gateway's most costly
/// line (about 7 % of its CPU at 100k values/s, nearly all of it waiting for that load). Six
/// times fewer cache lines per value, in rule order (readings arrive sorted by rule).
#[derive(Debug)]
pub struct RouteTable<'r> {
    router: &'r Router,
    hot: Vec<HotRoute>,
    /// The few rules' linear conversions, addressed by [`HotRoute::linear`].
    linears: Vec<Linear>,
}

#[derive(Debug, Clone, Copy)]
struct HotRoute {
    target: &'static ElementTarget,
    /// Index into [`RouteTable::linears`], or [`NO_LINEAR`].
    linear: u32,
    value_type: XsType,
}

const NO_LINEAR: u32 = u32::MAX;

/// How many rules ahead [`RouteTable::route`] asks for the table: 8 cache lines.
const ROUTES_AHEAD: usize = 32;

const _: () = assert!(std::mem::size_of::<HotRoute>() <= 16);

impl<'r> RouteTable<'r> {
    /// The table of `router`'s routes.
    pub fn new(router: &'r Router) -> RouteTable<'r> {
        let mut linears = Vec::new();
        let hot = router
            .routes
            .iter()
            .map(|r| HotRoute {
                target: r.target,
                linear: match r.linear.as_deref() {
                    Some(&l) => {
                        linears.push(l);
                        (linears.len() - 1) as u32
                    }
                    None => NO_LINEAR,
                },
                value_type: r.location.value_type,
            })
            .collect();
        RouteTable {
            router,
            hot,
            linears,
        }
    }

    /// [`Router::route`] without the route.
    pub fn route(&self, reading: Reading) -> Result<SubmodelUpdate, String> {
        let rule = reading.rule as usize;
        // Readings come in rule order (see `in_mapping_order`): the rules a few values on are
        // asked for now, so that their load overlaps with this value's work. Even the 16-byte
        // entries missed the cache on about half the values without it.
        crate::model::prefetch(self.hot.as_ptr().wrapping_add(rule + ROUTES_AHEAD));
        let Some(&hot) = self.hot.get(rule) else {
            return Err(format!("notification for unknown rule {}", reading.rule));
        };
        let linear = self.linears.get(hot.linear as usize).copied();
        convert(reading, hot.target, linear, hot.value_type)
            .map_err(|e| self.router.routes[rule].conversion_error(e))
    }
}

/// Checks that every value a node of OPC UA DataType `data_type` can send fits the element
/// `route` maps it to (see [`crate::sources::opcua::typecheck`], where the OPC UA knowledge
/// lives), e.g. `Double node mapped to xs:boolean` is an error, `UInt16` into `xs:int` is fine.
pub fn check_node_type(route: &Route, data_type: &NodeId) -> Result<(), String> {
    crate::sources::opcua::typecheck::check_data_type(&route.rule_target(), data_type)
}

impl Route {
    /// A conversion error `e` of this rule, naming the node and the element.
    fn conversion_error(&self, e: String) -> String {
        format!(
            "{} -> {}/{}: {e}",
            self.node, self.target.submodel.id_short, self.target.id_short_path
        )
    }

    /// What a source needs to know about this rule's element to check its own types.
    pub fn rule_target(&self) -> RuleTarget {
        RuleTarget {
            node: self.node.to_string(),
            element: format!(
                "{}/{}",
                self.target.submodel.id_short, self.target.id_short_path
            ),
            value_type: self.location.value_type,
            linear: self.linear.is_some(),
        }
    }
}

/// The live store reads where each rule writes from the routes instead of copying 100k
/// locations.
impl crate::aas::live::RuleLocations for Router {
    fn rule_count(&self) -> usize {
        self.routes.len()
    }

    fn location(&self, rule: usize) -> &ElementLocation {
        &self.routes[rule].location
    }
}

impl Router {
    /// Per rule (by index), what its element takes: for the sources' own type checks.
    pub fn rule_targets(&self) -> Vec<RuleTarget> {
        (0..self.routes.len() + self.inputs.len())
            .filter_map(|rule| self.rule_target(rule))
            .collect()
    }

    /// What rule `rule` (a reading's rule number: routes first, then transformation inputs)
    /// takes; `None` for an unknown number. Built on demand: the node and element texts are
    /// only for messages, and a table of them for 100k rules would cost ~14 MB for the
    /// gateway's whole life.
    pub fn rule_target(&self, rule: usize) -> Option<RuleTarget> {
        if let Some(route) = self.routes.get(rule) {
            return Some(route.rule_target());
        }
        // Transformation inputs take any value: Lua gets it as it comes.
        let input = self.inputs.get(rule - self.routes.len())?;
        Some(RuleTarget {
            node: input.node.to_string(),
            element: format!("transformation input {}", input.source_id),
            value_type: XsType::String,
            linear: false,
        })
    }

    /// The transformations, compiled for the dispatcher (the specs compiled once already in
    /// [`Router::add_transforms`]).
    pub fn transform_runtime(&self) -> transform::Runtime {
        transform::Runtime::new(self)
    }
}
