//! MQTT sink: one message per value on `<prefix>/<shell>/<submodel>/<idShortPath with />`.
//!
//! Payload (JSON): `{"value": 8123.5, "valueType": "xs:double", "timestamp": "...Z",
//! "serverTimestamp": "...Z", "quality": "good", "statusCode": 0, "submodelId": "...",
//! "idShortPath": "..."}`.
//!
//! With `message_per = "submodel"` the values of one submodel in a delivery window go in one
//! message on `<prefix>/<shell>/<submodel>`: `{"submodelId": "...", "values": [{"idShortPath":
//! "...", "value": ..., ...}, ...]}`, each item the per-value payload without `submodelId`.
//!
//! The gateway's own state is retained on `<prefix>/_gateway/<name>/state` (`online` after
//! connecting, `offline` as last will).
//!
//! Files: [`config`] (`[mqtt]` and its checks), [`payload`] (bodies and topics), [`sink`] (the
//! delivery loop), [`confirm`] (PUBACKs matched to messages by packet id).

pub mod config;
pub mod confirm;
pub mod payload;
pub mod sink;
pub mod topic;

pub use config::{MessagePer, MqttConfig};
pub use payload::{basyx_payload, basyx_topic, payload, submodel_messages};
pub use sink::{state_topic, tls_configuration};

use super::{BuildContext, Sink, SinkConfig, SinkContext, SinkTask};
use crate::outbox::BufferConfig;

/// The MQTT sink, configured.
pub struct MqttSink {
    cfg: MqttConfig,
    tls: Option<rumqttc::TlsConfiguration>,
}

impl SinkConfig for MqttConfig {
    /// The sink when `[mqtt] enabled`.
    fn build(&self, ctx: &BuildContext<'_>) -> anyhow::Result<Option<Box<dyn Sink>>> {
        if !self.enabled {
            tracing::info!("MQTT sink is off (mqtt.enabled = false)");
            return Ok(None);
        }
        let tls = tls_configuration(self, ctx.resolve)?;
        Ok(Some(Box::new(MqttSink {
            cfg: self.clone(),
            tls,
        })))
    }

    fn disable(&mut self) {
        self.enabled = false;
    }
}

impl Sink for MqttSink {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn destination(&self) -> String {
        self.cfg.destination()
    }

    fn buffer(&self) -> &BufferConfig {
        &self.cfg.buffer
    }

    fn start(self: Box<Self>, ctx: SinkContext) -> anyhow::Result<SinkTask> {
        Ok(Box::pin(sink::run(self.cfg, self.tls, ctx)))
    }
}
