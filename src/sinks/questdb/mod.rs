//! QuestDB sink over the InfluxDB Line Protocol (questdb-rs).
//!
//! Layout ("narrow": one row per value, so every value keeps its own timestamp and quality):
//! table `<table_prefix><submodel idShort>`, symbols `asset` (shell idShort), `element`
//! (idShortPath) and `quality` (good/uncertain/bad); columns `value_double`, `value_long`,
//! `value_bool` or `value_str` (whichever fits the element's type; arrays as JSON text in
//! `value_str`), `status` (OPC UA status code); designated timestamp = OPC UA source timestamp.
//! Dedup key for at-least-once delivery: (table, asset, element, timestamp).
//!
//! Files: [`config`] (`[questdb]` and its checks), [`sink`] (rows and the delivery thread).

pub mod config;
pub mod sink;

pub use config::QuestDbConfig;
pub use sink::{append_row, RowWriter};

use super::{BuildContext, Sink, SinkConfig, SinkContext, SinkTask};
use crate::outbox::BufferConfig;

/// The QuestDB/ILP sink, configured.
pub struct QuestDbSink {
    cfg: QuestDbConfig,
}

impl SinkConfig for QuestDbConfig {
    /// The sink when `[questdb] enabled`.
    fn build(&self, _ctx: &BuildContext<'_>) -> anyhow::Result<Option<Box<dyn Sink>>> {
        if !self.enabled {
            tracing::info!(
                "QuestDB sink is off (questdb.enabled = false): values go to MQTT and the API only"
            );
            return Ok(None);
        }
        Ok(Some(Box::new(QuestDbSink { cfg: self.clone() })))
    }

    fn disable(&mut self) {
        self.enabled = false;
    }
}

impl Sink for QuestDbSink {
    fn name(&self) -> &'static str {
        "questdb"
    }

    fn destination(&self) -> String {
        self.cfg.destination()
    }

    fn buffer(&self) -> &BufferConfig {
        &self.cfg.buffer
    }

    fn start(self: Box<Self>, ctx: SinkContext) -> anyhow::Result<SinkTask> {
        if self.cfg.is_tcp() {
            tracing::warn!(
                destination = %self.cfg.destination(),
                "QuestDB/ILP over tcp:: has no confirmation: values in flight when the server drops the connection are lost (at most once); use http:: for confirmed delivery"
            );
        }
        let thread = sink::spawn(self.cfg, ctx, tokio::runtime::Handle::current())?;
        Ok(Box::pin(async move {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_names_protocol_and_address_without_secrets() {
        let cfg = QuestDbConfig {
            conf: "https::addr=db.plant:9000;username=u;password=secret;".into(),
            ..Default::default()
        };
        assert_eq!(cfg.destination(), "https::db.plant:9000");
        assert!(!cfg.is_tcp());
        let tcp = QuestDbConfig {
            conf: "tcp::addr=127.0.0.1:9009;".into(),
            ..Default::default()
        };
        assert!(tcp.is_tcp());
    }
}
