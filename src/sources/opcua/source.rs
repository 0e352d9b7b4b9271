//! The OPC UA source behind the [`Source`] trait: one per `[[opcua]]` entry.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::node_ref::NodeRef;
use super::{run_source, MonitorSettings, MonitoredNode, TypeCheck};
use crate::config::{Config, OpcUaSourceConfig};
use crate::core::ReadingBatch;
use crate::sources::{RuleTarget, Source, SourceContext, SourceStats};

/// One configured OPC UA server and the nodes the mapping wants from it.
pub struct OpcUaSource {
    cfg: OpcUaSourceConfig,
    pki_dir: std::path::PathBuf,
    nodes: Vec<MonitoredNode>,
    targets: Arc<[RuleTarget]>,
    stats: Arc<SourceStats>,
}

/// The factory of the registry: a source per `[[opcua]]` entry, in config order.
pub fn build_sources(ctx: &SourceContext) -> anyhow::Result<Vec<Box<dyn Source>>> {
    let cfg = ctx.config;
    let mut out: Vec<Box<dyn Source>> = Vec::with_capacity(cfg.opcua.len());
    for (i, src) in cfg.opcua.iter().enumerate() {
        let nodes = nodes_of_source(cfg, i)?;
        if nodes.is_empty() {
            warn!(source = %src.name, "no mapping rule uses this source; not connecting");
        }
        out.push(Box::new(OpcUaSource {
            cfg: src.clone(),
            pki_dir: cfg.resolve(&src.pki_dir),
            nodes,
            targets: ctx.targets.clone(),
            stats: Arc::new(SourceStats::default()),
        }));
    }
    Ok(out)
}

/// The nodes source `index` must acquire: every mapping rule naming it, with the rule's
/// acquisition settings over the source's.
pub fn nodes_of_source(cfg: &Config, index: usize) -> anyhow::Result<Vec<MonitoredNode>> {
    let source = &cfg.opcua[index];
    let mut nodes = Vec::new();
    for (rule, m) in cfg.mapping.iter().enumerate() {
        if cfg.source_index(m) != Some(index) {
            continue;
        }
        let node: NodeRef = m
            .node_id
            .parse()
            .map_err(|e| anyhow::anyhow!("mapping[{rule}].node_id: {e}"))?;
        nodes.push(MonitoredNode {
            rule: rule as u32,
            node,
            settings: MonitorSettings::resolve(source, m),
        });
    }
    Ok(nodes)
}

impl Source for OpcUaSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }

    fn is_idle(&self) -> bool {
        self.nodes.is_empty()
    }

    fn run(
        self: Box<Self>,
        out: mpsc::Sender<ReadingBatch>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        let targets = self.targets;
        let type_check: TypeCheck =
            Arc::new(move |rule, data_type| match targets.get(rule as usize) {
                Some(t) => super::typecheck::check_data_type(t, data_type),
                None => Err(format!("no mapping rule {rule}")),
            });
        run_source(
            self.cfg,
            self.pki_dir,
            self.nodes,
            type_check,
            out,
            self.stats,
            shutdown,
        )
        .boxed()
    }
}
