//! The server's operation limits (`Server.ServerCapabilities.OperationLimits`).
//!
//! Servers cap how many nodes one service call may carry (Siemens S7-1500: 1,000); a call over
//! the cap fails as a whole with `BadTooManyOperations`. The gateway reads the caps after every
//! connect and sizes its batches to the smaller of the server's cap and its own config.

use opcua::client::Session;
use opcua::types::{AttributeId, NodeId, ReadValueId, TimestampsToReturn, VariableId, Variant};
use tracing::debug;

/// Per-call caps of one server; `None` = the server states no limit (0) or does not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationLimits {
    /// MaxNodesPerRead.
    pub max_nodes_per_read: Option<usize>,
    /// MaxMonitoredItemsPerCall.
    pub max_monitored_items_per_call: Option<usize>,
    /// MaxNodesPerBrowse.
    pub max_nodes_per_browse: Option<usize>,
}

impl OperationLimits {
    /// Batch size for Read calls: the smaller of `configured` and the server's cap.
    pub fn read_batch(&self, configured: usize) -> usize {
        cap(configured, self.max_nodes_per_read)
    }

    /// Batch size for CreateMonitoredItems calls.
    pub fn monitored_items_batch(&self, configured: usize) -> usize {
        cap(configured, self.max_monitored_items_per_call)
    }

    /// Batch size for Browse calls.
    pub fn browse_batch(&self, configured: usize) -> usize {
        cap(configured, self.max_nodes_per_browse)
    }
}

fn cap(configured: usize, server: Option<usize>) -> usize {
    server.map_or(configured, |s| s.min(configured)).max(1)
}

/// Reads the limits. Servers that do not expose them (optional nodes) get `None` for each; a
/// failed Read is not an error either, because the limits only make batching safer.
pub async fn read(session: &Session) -> OperationLimits {
    let ids = [
        VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
        VariableId::Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
        VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
    ];
    let nodes: Vec<ReadValueId> = ids
        .iter()
        .map(|id| ReadValueId {
            node_id: NodeId::from(*id),
            attribute_id: AttributeId::Value as u32,
            ..Default::default()
        })
        .collect();
    let values = match session.read(&nodes, TimestampsToReturn::Neither, 0.0).await {
        Ok(v) => v,
        Err(e) => {
            debug!("OperationLimits not readable ({e}); using the configured batch sizes");
            return OperationLimits::default();
        }
    };
    let get = |i: usize| -> Option<usize> {
        let v = values.get(i)?.value.as_ref()?;
        let n = match v {
            Variant::UInt32(n) => *n as usize,
            Variant::UInt16(n) => *n as usize,
            Variant::Int32(n) if *n > 0 => *n as usize,
            _ => return None,
        };
        (n > 0).then_some(n)
    };
    OperationLimits {
        max_nodes_per_read: get(0),
        max_monitored_items_per_call: get(1),
        max_nodes_per_browse: get(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smaller_cap_wins_and_zero_never_happens() {
        let l = OperationLimits {
            max_nodes_per_read: Some(100),
            max_monitored_items_per_call: None,
            max_nodes_per_browse: Some(5000),
        };
        assert_eq!(l.read_batch(1000), 100);
        assert_eq!(l.monitored_items_batch(1000), 1000);
        assert_eq!(l.browse_batch(1000), 1000);
        assert_eq!(cap(0, None), 1);
    }
}
