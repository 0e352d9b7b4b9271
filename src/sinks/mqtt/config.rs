//! `[mqtt]`: the MQTT sink's settings and their checks.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::conf::{redact, ConfigErrors};
use crate::outbox::BufferConfig;

/// What one MQTT value message carries (`mqtt.message_per`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MessagePer {
    /// One message per value, on the element's topic.
    #[default]
    Value,
    /// One message per submodel and delivery window, on the submodel's topic.
    Submodel,
}

/// MQTT sink settings. (`Debug` hides the password.)
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Publish to MQTT at all.
    pub enabled: bool,
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain).
    pub port: u16,
    /// Client id; defaults to the gateway name.
    pub client_id: Option<String>,
    /// First topic level; see the README's topic scheme.
    pub topic_prefix: String,
    /// QoS of value messages: 0 (at most once) or 1 (at least once, the default).
    pub qos: u8,
    /// Keep the last value on the broker for late subscribers.
    pub retain: bool,
    /// User name, if the broker requires one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// MQTT keep-alive, seconds.
    pub keep_alive_s: u64,
    /// Messages that may wait in the client's request queue; a full queue slows the pipeline.
    pub queue_capacity: usize,
    /// `"value"` (default): one message per value on the element's own topic. `"submodel"`:
    /// the values of one submodel that arrive together go in one message on
    /// `<topic_prefix>/<shell>/<submodel>` (a `values` array of the per-value payloads), which
    /// costs the broker a fraction per value: use it above roughly 20k values/s (see the
    /// README's Performance section).
    pub message_per: MessagePer,
    /// Also publish Eclipse BaSyx-compatible element events on
    /// `sm-repository/<basyx_repo_id>/submodels/<base64url submodel id>/submodelElements/<idShortPath>/updated`
    /// with the element's AAS JSON as payload, so BaSyx-style consumers can subscribe unchanged.
    pub basyx_events: bool,
    /// Repository id in BaSyx event topics.
    pub basyx_repo_id: String,
    /// Connect over TLS (MQTT over TLS, usually port 8883).
    pub tls: bool,
    /// PEM file with the CA certificate(s) the broker's certificate must chain to (relative to
    /// the config file); without it the operating system's trusted roots are used.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for brokers that require mutual TLS (with `client_key_file`).
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// Seconds to wait for the broker's PUBACK of a message (QoS 1) before the unconfirmed
    /// messages are sent again (counted in `aas_gateway_sink_retries_total`).
    pub puback_timeout_s: u64,
    /// This sink's share of the outbox (`[mqtt.buffer]`): `max_bytes`, `max_age_s`,
    /// `when_full`; unset keys take the `[outbox]` defaults.
    pub buffer: BufferConfig,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: true,
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: None,
            topic_prefix: "aas".into(),
            qos: 1,
            retain: false,
            username: None,
            password: None,
            keep_alive_s: 30,
            queue_capacity: 10_000,
            message_per: MessagePer::Value,
            basyx_events: false,
            basyx_repo_id: "aas-gateway".into(),
            tls: false,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            puback_timeout_s: 30,
            buffer: BufferConfig::default(),
        }
    }
}

impl MqttConfig {
    /// Checks the section; `resolve` turns config-relative paths into real ones.
    pub fn validate(&self, resolve: impl Fn(&Path) -> PathBuf, errors: &mut ConfigErrors) {
        if self.qos > 1 {
            errors.push(
                "mqtt.qos",
                format!("{} is not supported: use 0 or 1", self.qos),
            );
        }
        if self.host.is_empty() {
            errors.push("mqtt.host", "must not be empty");
        }
        if self.queue_capacity == 0 {
            errors.push("mqtt.queue_capacity", "must be at least 1");
        }
        if self.puback_timeout_s == 0 {
            errors.push("mqtt.puback_timeout_s", "must be at least 1");
        }
        for (field, file) in [
            ("mqtt.ca_file", &self.ca_file),
            ("mqtt.client_cert_file", &self.client_cert_file),
            ("mqtt.client_key_file", &self.client_key_file),
        ] {
            if let Some(f) = file {
                let p = resolve(f);
                if !p.is_file() {
                    errors.push(field, format!("{} does not exist", p.display()));
                }
            }
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            errors.push(
                "mqtt.client_key_file",
                "client_cert_file and client_key_file go together",
            );
        }
        if self.topic_prefix.contains(['+', '#']) {
            errors.push("mqtt.topic_prefix", "must not contain the wildcards + or #");
        }
        self.buffer.validate("mqtt", errors);
    }

    /// Where this sink delivers, without secrets (the outbox keeps its backlog per destination).
    pub fn destination(&self) -> String {
        format!(
            "mqtt{}://{}:{}",
            if self.tls { "s" } else { "" },
            self.host,
            self.port
        )
    }
}

impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("enabled", &self.enabled)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("topic_prefix", &self.topic_prefix)
            .field("qos", &self.qos)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("buffer", &self.buffer)
            .finish_non_exhaustive()
    }
}
