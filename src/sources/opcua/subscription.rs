//! The subscription of one source: monitored items with per-node sampling, queue and
//! DataChangeFilter, created in batches the server accepts, and the handler that turns
//! publish responses into [`crate::core::Reading`]s, handed off without ever waiting.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use opcua::client::{MonitoredItemMap, OnSubscriptionNotificationCore, Session};
use opcua::types::{
    DataChangeFilter, DataChangeNotification, DataChangeTrigger, DataValue, DeadbandType,
    ExtensionObject, MonitoredItemCreateRequest, MonitoredItemNotification, MonitoringMode,
    MonitoringParameters, NodeId, NotificationMessage, ReadValueId, TimestampsToReturn,
};
use tracing::{error, info, warn};

use super::config::{DataChangeTriggerKind, DeadbandKind, OpcUaSourceConfig};
use super::handoff::HandOff;
use super::limits::OperationLimits;
use super::{
    data_value_reading, report_unconvertible, Heartbeat, MonitorSettings, MonitoredNode,
    SourceStats,
};
use crate::core::ReadingBatch;

/// Hands a publish response's items to `take` in mapping-rule order, keeping the order of each
/// node's own values (a stable order; a response often holds several values of one node), as
/// `(rule, value)`.
///
/// Servers need not send a response's items in any order (async-opcua's server sends them in
/// hash order). Every later stage (mapping, outbox, both sinks) reads each value's rule and
/// element target: in rule order these reads walk the tables forwards, page by page, instead
/// of missing the cache and the TLB at a random place of a 100k-element table per value and
/// stage. A response that is in order already costs one pass.
///
/// Each node's own values keep their order (a queue of several values per item is
/// chronological). Only 8-byte keys (rule, position) are sorted; the items are then taken in
/// that order and converted straight into the batch, which is built once at its final size:
/// sorting the converted readings moved each of them twice more (and grew the batch by
/// doubling), a few percent of the gateway's CPU at 100k values/s.
pub fn in_mapping_order(
    mut items: Vec<MonitoredItemNotification>,
    mut take: impl FnMut(u32, DataValue),
) {
    // The client handle is rule + 1 (see `create_request`).
    let rule = |item: &MonitoredItemNotification| item.client_handle.saturating_sub(1);
    if items.is_sorted_by_key(rule) {
        for item in items {
            take(rule(&item), item.value);
        }
        return;
    }
    let mut keys: Vec<u64> = (0u64..)
        .zip(items.iter())
        .map(|(i, item)| (u64::from(rule(item)) << 32) | i)
        .collect();
    // Every key is distinct (its position is in it), so an unstable sort keeps the order of
    // equal rules.
    keys.sort_unstable();
    for k in keys {
        let item = &mut items[(k & u64::from(u32::MAX)) as usize];
        take((k >> 32) as u32, std::mem::take(&mut item.value));
    }
}

/// The DataChangeFilter for these settings; `None` when the OPC UA default (StatusValue, no
/// deadband) applies, so that servers without filter support still accept the item.
pub fn data_change_filter(s: &MonitorSettings) -> Option<DataChangeFilter> {
    if s.trigger == DataChangeTriggerKind::StatusValue && s.deadband == DeadbandKind::None {
        return None;
    }
    Some(DataChangeFilter {
        trigger: match s.trigger {
            DataChangeTriggerKind::Status => DataChangeTrigger::Status,
            DataChangeTriggerKind::StatusValue => DataChangeTrigger::StatusValue,
            DataChangeTriggerKind::StatusValueTimestamp => DataChangeTrigger::StatusValueTimestamp,
        },
        deadband_type: match s.deadband {
            DeadbandKind::None => DeadbandType::None,
            DeadbandKind::Absolute => DeadbandType::Absolute,
            DeadbandKind::Percent => DeadbandType::Percent,
        } as u32,
        deadband_value: s.deadband_value,
    })
}

/// The create request of one node. The client handle is rule + 1 (0 means "assign one for me"
/// to async-opcua), so a notification leads back to its mapping rule without a lookup.
pub fn create_request(node: &MonitoredNode, node_id: NodeId) -> MonitoredItemCreateRequest {
    let s = &node.settings;
    MonitoredItemCreateRequest {
        item_to_monitor: ReadValueId::from(node_id),
        monitoring_mode: MonitoringMode::Reporting,
        requested_parameters: MonitoringParameters {
            client_handle: node.rule + 1,
            sampling_interval: s.sampling_interval_ms,
            queue_size: s.queue_size,
            discard_oldest: s.discard_oldest,
            filter: data_change_filter(s)
                .map(ExtensionObject::from_message)
                .unwrap_or_else(ExtensionObject::null),
        },
    }
}

/// Creates the subscription and its monitored items in batches of at most the server's
/// MaxMonitoredItemsPerCall. Every node the server rejects is named in the log; the others run.
/// Returns the subscription id and the number of accepted items.
pub async fn create(
    session: &Arc<Session>,
    cfg: &OpcUaSourceConfig,
    items: &[(&MonitoredNode, NodeId)],
    limits: &OperationLimits,
    handler: NotificationHandler,
) -> anyhow::Result<(u32, usize)> {
    let stats = handler.stats.clone();
    let subscription_id = session
        .create_subscription(
            Duration::from_millis(cfg.publishing_interval_ms),
            // The lifetime count must be at least 3 × the keep-alive count (OPC UA Part 4).
            cfg.keep_alive_count.saturating_mul(3),
            cfg.keep_alive_count,
            cfg.max_notifications_per_publish,
            0,
            true,
            handler,
        )
        .await
        .map_err(|e| anyhow::anyhow!("source {}: CreateSubscription failed: {e}", cfg.name))?;

    let batch_size = limits.monitored_items_batch(cfg.create_batch_size);
    let mut accepted = 0usize;
    for batch in items.chunks(batch_size) {
        let requests = batch
            .iter()
            .map(|(node, id)| create_request(node, id.clone()))
            .collect();
        let results = session
            .create_monitored_items(subscription_id, TimestampsToReturn::Both, requests)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "source {}: CreateMonitoredItems ({} items) failed: {e}",
                    cfg.name,
                    batch.len()
                )
            })?;
        for ((node, _), result) in batch.iter().zip(&results) {
            let status = result.result.status_code;
            if status.is_good() {
                accepted += 1;
            } else {
                error!(source = %cfg.name, node = %node.node, %status, "the server rejected this node; the others keep running");
                stats.health.reject(node.node, status);
            }
        }
    }
    info!(
        source = %cfg.name,
        endpoint = %cfg.endpoint,
        monitored = accepted,
        rejected = items.len() - accepted,
        batch_size,
        "subscribed"
    );
    Ok((subscription_id, accepted))
}

/// Turns publish responses into reading batches and hands them off; never blocks (it runs
/// inside the session's event loop, see [`super::handoff`]).
pub struct NotificationHandler {
    /// Source name, for logs.
    pub source: String,
    /// Where readings go.
    pub handoff: Arc<HandOff>,
    /// Counters of the source.
    pub stats: Arc<SourceStats>,
    /// Beaten on every publish response, data or keep-alive (the silence watch reads it).
    pub heartbeat: Arc<Heartbeat>,
    /// Turns structures into JSON with the session's type knowledge.
    pub encoder: super::convert::StructureEncoder,
    /// Sequence number of the last message, to count lost ones.
    pub last_sequence: Option<u32>,
    /// Rules whose unconvertible value was already logged.
    pub unconvertible_logged: std::collections::HashSet<u32>,
}

impl OnSubscriptionNotificationCore for NotificationHandler {
    fn on_subscription_notification(
        &mut self,
        notification: NotificationMessage,
        _items: MonitoredItemMap<'_>,
    ) {
        self.heartbeat.beat();
        let Some(data) = notification.notification_data else {
            // keep-alive: it does not consume a sequence number
            self.stats.keep_alives.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Some(last) = self.last_sequence {
            let expected = last.wrapping_add(1);
            // A recreated subscription starts again at 1: not a gap.
            if notification.sequence_number > expected {
                let missing = notification.sequence_number.wrapping_sub(expected) as u64;
                self.stats
                    .sequence_gaps
                    .fetch_add(missing, Ordering::Relaxed);
                warn!(source = %self.source, expected, got = notification.sequence_number, "notification messages were lost between the server and the gateway");
            }
        }
        self.last_sequence = Some(notification.sequence_number);

        let mut batch = ReadingBatch::new();
        // The items of every data change notification (nearly always one: moved, not copied).
        let mut items: Vec<MonitoredItemNotification> = Vec::new();
        for obj in data {
            let Some(change) = obj.into_inner_as::<DataChangeNotification>() else {
                continue;
            };
            let Some(mut more) = change.monitored_items else {
                continue;
            };
            if items.is_empty() {
                items = more;
            } else {
                items.append(&mut more);
            }
        }
        batch.readings.reserve_exact(items.len());
        in_mapping_order(items, |rule, value| {
            if value.status.is_some_and(|s| s.overflow()) {
                // The server's queue for this item overflowed: values were dropped there.
                self.stats.overflows.fetch_add(1, Ordering::Relaxed);
            }
            match data_value_reading(rule, value, &self.encoder) {
                Ok(reading) => batch.push(reading),
                Err(e) => report_unconvertible(
                    &self.source,
                    &self.stats,
                    &mut self.unconvertible_logged,
                    rule,
                    &e,
                ),
            }
        });
        if batch.is_empty() {
            return;
        }
        self.stats
            .notifications
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.stats.health.data_arrived();
        // Hand off and return: waiting here would stop this session's keep-alives and
        // publishes. Back-pressure is the hand-off's job (it pauses publishing).
        self.handoff.push(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::opcua::config::AcquisitionMode;

    fn settings() -> MonitorSettings {
        MonitorSettings {
            mode: AcquisitionMode::Subscribe,
            read_interval_ms: 1000,
            sampling_interval_ms: 100.0,
            queue_size: 10,
            discard_oldest: true,
            trigger: DataChangeTriggerKind::StatusValue,
            deadband: DeadbandKind::None,
            deadband_value: 0.0,
        }
    }

    #[test]
    fn readings_go_in_rule_order_and_each_node_keeps_the_order_of_its_values() {
        let item = |rule: u32, n: i64| MonitoredItemNotification {
            client_handle: rule + 1,
            value: DataValue::value_only(n),
        };
        let order = |items: Vec<MonitoredItemNotification>| {
            let mut got = Vec::new();
            in_mapping_order(items, |rule, dv| {
                let Some(opcua::types::Variant::Int64(n)) = dv.value else {
                    panic!("{dv:?}")
                };
                got.push((rule, n));
            });
            got
        };
        let shuffled = [(7, 1), (2, 2), (7, 3), (0, 4), (2, 5), (7, 6)];
        assert_eq!(
            order(shuffled.iter().map(|&(r, n)| item(r, n)).collect()),
            [(0, 4), (2, 2), (2, 5), (7, 1), (7, 3), (7, 6)]
        );
        // In order already (also with repeats): as it came.
        let sorted = [(0, 1), (3, 2), (3, 3), (9, 4)];
        assert_eq!(
            order(sorted.iter().map(|&(r, n)| item(r, n)).collect()),
            sorted
        );
        assert_eq!(order(Vec::new()), []);
    }

    #[test]
    fn default_trigger_without_deadband_sends_no_filter() {
        assert_eq!(data_change_filter(&settings()), None);
    }

    #[test]
    fn deadband_and_trigger_make_a_filter() {
        let s = MonitorSettings {
            deadband: DeadbandKind::Percent,
            deadband_value: 2.5,
            trigger: DataChangeTriggerKind::StatusValueTimestamp,
            ..settings()
        };
        let f = data_change_filter(&s).unwrap();
        assert_eq!(f.deadband_type, 2);
        assert_eq!(f.deadband_value, 2.5);
        assert_eq!(f.trigger, DataChangeTrigger::StatusValueTimestamp);
        let node = MonitoredNode {
            rule: 4,
            node: Box::leak(Box::new("ns=2;s=X".parse().unwrap())),
            settings: Arc::new(s),
        };
        let req = create_request(&node, NodeId::new(2, "X"));
        assert_eq!(req.requested_parameters.client_handle, 5);
        assert!(req
            .requested_parameters
            .filter
            .inner_as::<DataChangeFilter>()
            .is_some());
    }
}
