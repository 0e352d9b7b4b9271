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

pub use config::{MessagePer, MqttConfig};
pub use payload::{basyx_payload, basyx_topic, payload, submodel_messages};
pub use sink::{state_topic, tls_configuration};

use super::{Sink, SinkContext, SinkTask};
use crate::outbox::BufferConfig;

/// The MQTT sink, configured.
pub struct MqttSink {
    cfg: MqttConfig,
    tls: Option<rumqttc::TlsConfiguration>,
}

/// Registry entry: the sink when `[mqtt] enabled`.
pub fn build(cfg: &crate::config::Config) -> anyhow::Result<Option<Box<dyn Sink>>> {
    if !cfg.mqtt.enabled {
        tracing::info!("MQTT sink is off (mqtt.enabled = false)");
        return Ok(None);
    }
    let tls = tls_configuration(&cfg.mqtt, |p| cfg.resolve(p))?;
    Ok(Some(Box::new(MqttSink {
        cfg: cfg.mqtt.clone(),
        tls,
    })))
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
