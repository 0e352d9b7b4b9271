//! Cyclic-read mode: for servers or nodes that cannot be subscribed (no subscription support,
//! or a node that rejects monitored items), the values are fetched with the Read service every
//! `read_interval_ms`, in batches of at most the server's MaxNodesPerRead.
//!
//! A value is reported when its value, status or source timestamp differs from the previous
//! read, so a slow-changing node does not flood the sinks with copies of the same sample.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use opcua::client::Session;
use opcua::types::{DataValue, NodeId, ReadValueId, StatusCode, TimestampsToReturn};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::{data_value_reading, report_unconvertible, MonitoredNode, SourceStats};
use crate::core::ReadingBatch;

/// Nodes read together: same interval, batched per call.
pub struct ReadGroup {
    /// The nodes with their resolved ids.
    pub nodes: Vec<(MonitoredNode, NodeId)>,
    /// Read period.
    pub interval: Duration,
    /// Nodes per Read call (the server's MaxNodesPerRead at most).
    pub batch_size: usize,
}

/// Reads the group's nodes every interval until `stop`. Nodes with a Bad status from the
/// server (e.g. BadNodeIdUnknown) are named once in the log; their status is still forwarded,
/// so the element shows Bad quality instead of a stale Good value.
pub async fn run(
    source: String,
    session: Arc<Session>,
    group: ReadGroup,
    encoder: super::convert::StructureEncoder,
    tx: mpsc::Sender<ReadingBatch>,
    stats: Arc<SourceStats>,
    stop: CancellationToken,
) {
    let ReadGroup {
        nodes,
        interval,
        batch_size,
    } = group;
    let mut last: Vec<Option<DataValue>> = vec![None; nodes.len()];
    let mut reported: HashSet<usize> = HashSet::new();
    let mut unconvertible_logged = HashSet::new();
    let mut failing = false;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut batch = ReadingBatch::new();
        for (chunk_no, chunk) in nodes.chunks(batch_size.max(1)).enumerate() {
            let ids: Vec<ReadValueId> = chunk
                .iter()
                .map(|(_, id)| ReadValueId::from(id.clone()))
                .collect();
            let values = match session.read(&ids, TimestampsToReturn::Both, 0.0).await {
                Ok(v) => v,
                Err(e) => {
                    // Usually the connection is down and the session is reconnecting: say so
                    // once, not every cycle.
                    if !failing {
                        warn!(source = %source, error = %e, "cyclic read failed; retrying every cycle");
                        failing = true;
                    }
                    break;
                }
            };
            failing = false;
            for (i, ((node, _), dv)) in chunk.iter().zip(values).enumerate() {
                let index = chunk_no * batch_size.max(1) + i;
                let status = dv.status.unwrap_or(StatusCode::Good);
                if status.is_bad() && reported.insert(index) {
                    error!(source = %source, node = %node.node, %status, "reading this node failed; the others keep running");
                }
                let changed = last[index].as_ref().is_none_or(|prev| {
                    prev.value != dv.value
                        || prev.status != dv.status
                        || prev.source_timestamp != dv.source_timestamp
                });
                if changed {
                    last[index] = Some(dv.clone());
                    match data_value_reading(node.rule, dv, &encoder) {
                        Ok(reading) => batch.push(reading),
                        Err(e) => report_unconvertible(
                            &source,
                            &stats,
                            &mut unconvertible_logged,
                            node.rule,
                            &e,
                        ),
                    }
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        stats
            .notifications
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.health.data_arrived();
        tokio::select! {
            _ = stop.cancelled() => return,
            r = tx.send(batch) => if r.is_err() { return },
        }
    }
}
