//! The OPC UA source behind the [`Source`] trait: one per `[[opcua]]` entry.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::config::OpcUaSourceConfig;
use super::{run_source, MonitoredNode, TypeCheck};
use crate::core::ReadingBatch;
use crate::sources::{RuleTargets, Source, SourceConfig, SourceContext, SourceError, SourceStats};

/// One configured OPC UA server and the nodes the mapping wants from it.
pub struct OpcUaSource {
    cfg: OpcUaSourceConfig,
    pki_dir: std::path::PathBuf,
    nodes: Vec<MonitoredNode>,
    targets: RuleTargets,
    stats: Arc<SourceStats>,
}

impl SourceConfig for Vec<OpcUaSourceConfig> {
    /// A source per `[[opcua]]` entry, in config order.
    fn build(&self, ctx: &SourceContext<'_>) -> anyhow::Result<Vec<Box<dyn Source>>> {
        let mut out: Vec<Box<dyn Source>> = Vec::with_capacity(self.len());
        for (i, src) in self.iter().enumerate() {
            let nodes = ctx.opcua_nodes.get(i).cloned().unwrap_or_default();
            if nodes.is_empty() {
                warn!(source = %src.name, "no mapping rule uses this source; not connecting");
            }
            out.push(Box::new(OpcUaSource {
                cfg: src.clone(),
                pki_dir: (ctx.resolve)(&src.pki_dir),
                nodes,
                targets: ctx.targets.clone(),
                stats: Arc::new(SourceStats::default()),
            }));
        }
        Ok(out)
    }
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
    ) -> BoxFuture<'static, Result<(), SourceError>> {
        let targets = self.targets;
        let type_check: TypeCheck = Arc::new(move |rule, data_type| match targets(rule) {
            Some(t) => super::typecheck::check_data_type(&t, data_type),
            None => Err(format!("no mapping rule {rule}")),
        });
        let source_name = self.cfg.name.clone();
        let stats = self.stats.clone();
        run_source(
            self.cfg,
            self.pki_dir,
            self.nodes,
            type_check,
            out,
            self.stats,
            shutdown,
        )
        .map(move |result| {
            // A refusal is typed where it happens; anything else is a set-up problem.
            result
                .map_err(|e| match e.downcast::<SourceError>() {
                    Ok(typed) => typed,
                    Err(reason) => SourceError::Setup {
                        source_name,
                        reason,
                    },
                })
                .inspect_err(|e| stats.health.fail(e.to_string()))
        })
        .boxed()
    }
}
