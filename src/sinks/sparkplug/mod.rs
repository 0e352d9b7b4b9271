//! Sparkplug B sink: the gateway as a Sparkplug B 3.0 Edge Node, each shell a Device.
//!
//! Topics `spBv1.0/<group_id>/{NBIRTH,NDEATH,NCMD}/<edge_node_id>` and
//! `spBv1.0/<group_id>/{DBIRTH,DDATA}/<edge_node_id>/<shell idShort>`; metric names
//! `<submodel idShort>/<idShortPath with />` (see [`payload`]). What it promises, and where:
//! - NBIRTH, then one DBIRTH per shell with every metric (alias, datatype, current value),
//!   then DDATA by alias; `seq` 0–255 wrapping over every message of a session ([`sink`]).
//! - NDEATH is the MQTT will and is also sent before a deliberate disconnect; its `bdSeq`
//!   continues across restarts and crashes ([`bdseq`]).
//! - `NCMD` `Node Control/Rebirth` = true: births again.
//! - DDEATH for a shell whose sources' connections are all lost, DBIRTH when one is back
//!   (source health from [`crate::sinks::SinkContext::sources_up`]).
//! - With `primary_host_id`, the node publishes only while that host's `STATE` says online;
//!   meanwhile values stay in the outbox and are sent, `is_historical`, when it is back.
//! - A value leaves the outbox only once the broker confirmed it (QoS 1 PUBACK).
//! - With `accept_writes`, a DCMD is written to OPC UA through the gateway's write-back
//!   ([`crate::sinks::ElementWriter`]: its checks and audit log).
//!
//! Why not the `srad` crate: it is a framework that owns the MQTT client, the publishing and the
//! node's state (metrics are pushed into its managers, it publishes when it decides), so a sink
//! could not publish from its outbox cursor, match PUBACKs to values, hold values while the
//! host is offline, or keep `bdSeq` on disk; it also brings its own rumqttc. `prost` with the
//! payload messages in [`proto`] is all the protocol needs.
//!
//! Files: [`config`] (`[sparkplug]` and its checks), [`proto`] (the protobuf messages),
//! [`payload`] (topics, names, datatypes, bodies), [`node`] (devices, aliases, newest values),
//! [`bdseq`] (the durable `bdSeq`), [`sink`] (sessions and delivery).

pub mod bdseq;
pub mod config;
pub mod node;
pub mod payload;
pub mod proto;
pub mod sink;

pub use config::SparkplugConfig;

use super::{BuildContext, Sink, SinkConfig, SinkContext, SinkTask};
use crate::outbox::BufferConfig;

/// The Sparkplug sink, configured.
pub struct SparkplugSink {
    cfg: SparkplugConfig,
    edge_node_id: String,
    tls: Option<rumqttc::TlsConfiguration>,
}

impl SinkConfig for SparkplugConfig {
    /// The sink when `[sparkplug] enabled`.
    fn build(&self, ctx: &BuildContext<'_>) -> anyhow::Result<Option<Box<dyn Sink>>> {
        if !self.enabled {
            return Ok(None);
        }
        let edge_node_id = self
            .edge_node_id
            .clone()
            .unwrap_or_else(|| ctx.gateway_name.to_string());
        if let Some(problem) = config::id_problem(&edge_node_id) {
            anyhow::bail!(
                "sparkplug.edge_node_id (the gateway name {edge_node_id:?} when unset): {problem}"
            );
        }
        let tls = crate::sinks::mqtt::tls_configuration(&self.tls_as_mqtt(), ctx.resolve)
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace("mqtt.", "sparkplug.")))?;
        Ok(Some(Box::new(SparkplugSink {
            cfg: self.clone(),
            edge_node_id,
            tls,
        })))
    }

    fn disable(&mut self) {
        self.enabled = false;
    }
}

impl Sink for SparkplugSink {
    fn name(&self) -> &'static str {
        sink::NAME
    }

    /// Its birth certificates name every element.
    fn needs_elements(&self) -> bool {
        true
    }

    fn destination(&self) -> String {
        self.cfg.destination()
    }

    fn buffer(&self) -> &BufferConfig {
        &self.cfg.buffer
    }

    fn start(self: Box<Self>, ctx: SinkContext) -> anyhow::Result<SinkTask> {
        Ok(Box::pin(sink::run(
            self.cfg,
            self.edge_node_id,
            self.tls,
            ctx,
        )))
    }
}
