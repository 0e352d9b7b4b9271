//! `[sparkplug]`: the Sparkplug B sink's settings and their checks.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::conf::{redact, ConfigErrors};
use crate::outbox::BufferConfig;

/// Sparkplug B sink settings. (`Debug` hides the password.)
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SparkplugConfig {
    /// Publish Sparkplug B at all (off by default).
    pub enabled: bool,
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain).
    pub port: u16,
    /// MQTT client id; defaults to `<gateway name>-sparkplug` (the `[mqtt]` sink uses the
    /// gateway name itself, and two clients with one id on one broker throw each other out).
    pub client_id: Option<String>,
    /// Sparkplug group id: the second topic level, `spBv1.0/<group_id>/...`.
    pub group_id: String,
    /// Sparkplug edge node id (this gateway); defaults to the gateway name (`[gateway] name`).
    pub edge_node_id: Option<String>,
    /// Host id of the primary host application (e.g. Ignition's). When set, the gateway
    /// follows `spBv1.0/STATE/<primary_host_id>`: it publishes its births only while that host
    /// is online, and while it is offline keeps the values in the outbox and sends them, marked
    /// `is_historical`, once the host is back. Unset: publish whenever the broker is reachable.
    pub primary_host_id: Option<String>,
    /// QoS of births and data: 1 (default) or 0. Sparkplug 3.0 asks for 0; with 1 a value
    /// leaves the outbox only once the broker confirmed it (PUBACK), so a broken connection
    /// never loses one. With 0 a value counts as delivered once written to the connection.
    pub qos: u8,
    /// Accept device writes: a `DCMD` to `spBv1.0/<group_id>/DCMD/<edge_node_id>/<shell>`
    /// naming a metric (by name or alias) is written to the OPC UA node of that element, with
    /// the same checks (its mapping rule must say `writable = true`) and the same audit-log line
    /// as the API's write-back (`user` = `sparkplug:<shell>`, `via` = `sparkplug`). Off by
    /// default: anyone who may publish on the broker could otherwise write.
    pub accept_writes: bool,
    /// Connect over TLS (MQTT over TLS, usually port 8883).
    pub tls: bool,
    /// PEM file with the CA certificate(s) the broker's certificate must chain to (relative to
    /// the config file); without it the operating system's trusted roots are used.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for brokers that require mutual TLS (with `client_key_file`).
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// User name, if the broker requires one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// MQTT keep-alive, seconds.
    pub keep_alive_s: u64,
    /// Seconds to wait for the broker's PUBACK of a message (QoS 1); when one does not come
    /// the connection is dropped, and the node reconnects with a new `bdSeq` and births and
    /// sends the unconfirmed values again, marked historical.
    pub puback_timeout_s: u64,
    /// This sink's share of the outbox (`[sparkplug.buffer]`): `max_bytes`, `max_age_s`,
    /// `when_full`; unset keys take the `[outbox]` defaults. It also bounds what is kept while
    /// the primary host is offline.
    pub buffer: BufferConfig,
}

impl Default for SparkplugConfig {
    fn default() -> Self {
        SparkplugConfig {
            enabled: false,
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: None,
            group_id: "aas-gateway".into(),
            edge_node_id: None,
            primary_host_id: None,
            qos: 1,
            accept_writes: false,
            tls: false,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            username: None,
            password: None,
            keep_alive_s: 30,
            puback_timeout_s: 30,
            buffer: BufferConfig::default(),
        }
    }
}

/// Why a Sparkplug id (group, edge node, host) is not usable as a topic level, if it is not.
pub fn id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("must not be empty")
    } else if id.contains(['/', '+', '#']) {
        Some("must not contain /, + or # (it is one MQTT topic level)")
    } else {
        None
    }
}

impl SparkplugConfig {
    /// Checks the section; `resolve` turns config-relative paths into real ones.
    pub fn validate(&self, resolve: impl Fn(&Path) -> PathBuf, errors: &mut ConfigErrors) {
        for (field, file) in [
            ("sparkplug.ca_file", &self.ca_file),
            ("sparkplug.client_cert_file", &self.client_cert_file),
            ("sparkplug.client_key_file", &self.client_key_file),
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
                "sparkplug.client_key_file",
                "client_cert_file and client_key_file go together",
            );
        }
        if self.host.is_empty() {
            errors.push("sparkplug.host", "must not be empty");
        }
        if self.qos > 1 {
            errors.push(
                "sparkplug.qos",
                format!("{} is not supported: use 0 or 1", self.qos),
            );
        }
        if self.puback_timeout_s == 0 {
            errors.push("sparkplug.puback_timeout_s", "must be at least 1");
        }
        for (field, id) in [
            ("sparkplug.group_id", Some(&self.group_id)),
            ("sparkplug.edge_node_id", self.edge_node_id.as_ref()),
            ("sparkplug.primary_host_id", self.primary_host_id.as_ref()),
        ] {
            if let Some(problem) = id.and_then(|id| id_problem(id)) {
                errors.push(field, problem);
            }
        }
        if self.password.is_some() && self.username.is_none() {
            errors.push("sparkplug.password", "needs sparkplug.username");
        }
        self.buffer.validate("sparkplug", errors);
    }

    /// Where this sink delivers, without secrets (the outbox keeps its backlog per destination).
    pub fn destination(&self) -> String {
        format!(
            "sparkplug{}://{}:{}/{}",
            if self.tls { "s" } else { "" },
            self.host,
            self.port,
            self.group_id
        )
    }

    /// The TLS settings as the MQTT sink reads them (one implementation of the file handling).
    pub fn tls_as_mqtt(&self) -> crate::sinks::mqtt::MqttConfig {
        crate::sinks::mqtt::MqttConfig {
            tls: self.tls,
            ca_file: self.ca_file.clone(),
            client_cert_file: self.client_cert_file.clone(),
            client_key_file: self.client_key_file.clone(),
            ..Default::default()
        }
    }
}

impl fmt::Debug for SparkplugConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SparkplugConfig")
            .field("enabled", &self.enabled)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("group_id", &self.group_id)
            .field("edge_node_id", &self.edge_node_id)
            .field("primary_host_id", &self.primary_host_id)
            .field("qos", &self.qos)
            .field("accept_writes", &self.accept_writes)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("buffer", &self.buffer)
            .finish_non_exhaustive()
    }
}
