//! The registry: every kind of source and sink the gateway has, one line each, built from its
//! config section. It lives here, beside the sections, so that `sources` and `sinks` never
//! depend on the aggregate [`Config`] (arrows point down only), and so that the pipeline,
//! `/metrics` and `/ready` know no source or sink by name.
//!
//! Adding a sink: its folder under `src/sinks/` (config section implementing
//! [`SinkConfig`], code, tests), its field in [`Config`] and one line in
//! [`Config::sink_sections`] (and [`Config::sink_sections_mut`]).

use std::sync::Arc;

use crate::mapping::Router;
use crate::sinks::{BuildContext, Sink, SinkConfig};
use crate::sources::{Source, SourceConfig, SourceContext};

use super::Config;

impl Config {
    /// Every sink section, in delivery-start order.
    pub fn sink_sections(&self) -> [&dyn SinkConfig; 3] {
        [&self.mqtt, &self.questdb, &self.sparkplug]
    }

    /// Every sink section, to change (e.g. [`Config::disable_sinks`]).
    pub fn sink_sections_mut(&mut self) -> [&mut dyn SinkConfig; 3] {
        [&mut self.mqtt, &mut self.questdb, &mut self.sparkplug]
    }

    /// Turns every sink off (values are then served by the API only).
    pub fn disable_sinks(&mut self) {
        for section in self.sink_sections_mut() {
            section.disable();
        }
    }

    /// The enabled sinks, in [`Config::sink_sections`] order.
    pub fn build_sinks(&self) -> anyhow::Result<Vec<Box<dyn Sink>>> {
        let resolve = |p: &std::path::Path| self.resolve(p);
        let ctx = BuildContext {
            resolve: &resolve,
            gateway_name: &self.gateway.name,
        };
        let mut sinks = Vec::new();
        for section in self.sink_sections() {
            if let Some(sink) = section.build(&ctx)? {
                sinks.push(sink);
            }
        }
        Ok(sinks)
    }

    /// Every configured source of every kind, in config order, each with the nodes `router`
    /// (built from this config) maps; a source no rule uses is built idle.
    pub fn build_sources(&self, router: &Arc<Router>) -> anyhow::Result<Vec<Box<dyn Source>>> {
        let resolve = |p: &std::path::Path| self.resolve(p);
        let opcua_nodes: Vec<_> = self
            .opcua
            .iter()
            .enumerate()
            .map(|(i, source)| router.nodes_of_source(i, source, &self.mapping))
            .collect();
        let router = router.clone();
        let ctx = SourceContext {
            resolve: &resolve,
            targets: Arc::new(move |rule| router.rule_target(rule as usize)),
            opcua_nodes: &opcua_nodes,
        };
        let sections: [&dyn SourceConfig; 1] = [&self.opcua];
        let mut sources = Vec::new();
        for section in sections {
            sources.extend(section.build(&ctx)?);
        }
        Ok(sources)
    }
}
