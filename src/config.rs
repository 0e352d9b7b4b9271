//! Typed configuration: a TOML file plus `AAS_GATEWAY__SECTION__KEY` environment overrides.
//!
//! Loading only checks syntax and types; [`Config::validate`] then checks meaning and reports
//! **every** problem with its path (`mapping[3].node_id: ...`), so a plant engineer fixes a
//! config in one round instead of one error at a time. Checks that need the AAS templates
//! (does the idShortPath exist? does the type fit?) run in [`crate::mapping::Router::build`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::sources::opcua::node_ref::NodeRef;

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// General settings of this gateway instance.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// The AAS HTTP API (Part 2, read profile).
    #[serde(default)]
    pub api: ApiConfig,
    /// Where the Asset Administration Shells come from.
    #[serde(default)]
    pub aas: AasConfig,
    /// OPC UA servers to collect from; each gets its own session.
    #[serde(default)]
    pub opcua: Vec<OpcUaSourceConfig>,
    /// Node → submodel element rules.
    #[serde(default)]
    pub mapping: Vec<MappingRule>,
    /// MQTT sink.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// QuestDB sink over the InfluxDB Line Protocol.
    #[serde(default)]
    pub questdb: QuestDbConfig,
    /// Durable store-and-forward queue between the pipeline and the sinks.
    #[serde(default)]
    pub outbox: crate::outbox::OutboxConfig,
    /// Tamper-evident audit log of security-relevant events.
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    /// Log output format.
    #[serde(default)]
    pub log: LogConfig,
    /// SHA-256 (hex) of the config file as loaded, for the audit log.
    #[serde(skip)]
    pub file_sha256: Option<String>,
    /// Path of the config file as loaded.
    #[serde(skip)]
    pub file_path: Option<PathBuf>,
    /// Directory the config file lives in: relative paths in the config are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// General settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Name of this gateway, used as MQTT client id and in logs.
    pub name: String,
    /// Capacity, in batches, of each channel between pipeline stages. A full channel slows the
    /// stage before it (back-pressure) instead of growing memory.
    pub channel_capacity: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            name: "aas-gateway".into(),
            channel_capacity: 64,
        }
    }
}

/// The AAS HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the API at all.
    pub enabled: bool,
    /// Listen address; port 0 picks a free port (printed at start).
    pub listen: String,
    /// Who may use the API: bearer tokens (hashed) and roles. Without tokens the API is open
    /// for reading and write-back is refused.
    pub auth: crate::security::AuthConfig,
    /// Serve HTTPS with this certificate (plain HTTP when absent).
    pub tls: Option<crate::security::tls::TlsConfig>,
    /// Largest accepted request body in bytes (larger ones get 413).
    pub max_body_bytes: usize,
    /// Requests per second the API accepts from all clients together (burst: twice that);
    /// 0 = no limit. `/health` and `/ready` are not limited.
    pub rate_limit_per_s: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            listen: "127.0.0.1:8080".into(),
            auth: Default::default(),
            tls: None,
            max_body_bytes: 64 * 1024,
            rate_limit_per_s: 1000,
        }
    }
}

/// `[log]`: how the gateway logs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default) or `json` (one JSON object per line; same as `--log-json`).
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// JSON lines for log collectors.
    Json,
}

/// Sources of the AAS environment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AasConfig {
    /// AAS v3 JSON environment files (shells + submodels), relative to the config file. Their
    /// contents are served as they are; mapped elements get live values.
    pub environments: Vec<PathBuf>,
}

/// One OPC UA server. (`Debug` hides the password.)
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaSourceConfig {
    /// Name that mapping rules use to refer to this source.
    pub name: String,
    /// Endpoint URL, e.g. `opc.tcp://10.0.0.5:4840/`.
    pub endpoint: String,
    /// Security policy: `None`, `Basic256Sha256`, `Aes128Sha256RsaOaep`, `Aes256Sha256RsaPss`.
    #[serde(default = "default_security_policy")]
    pub security_policy: String,
    /// Message security mode: `None`, `Sign`, `SignAndEncrypt`.
    #[serde(default = "default_security_mode")]
    pub security_mode: String,
    /// User name for a user/password token; anonymous when absent.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for `username`. Prefer the env override `AAS_GATEWAY__OPCUA__0__PASSWORD`... or a
    /// file readable only by the gateway.
    #[serde(default)]
    pub password: Option<String>,
    /// Directory of the gateway's own certificate and trusted/rejected server certificates.
    #[serde(default = "default_pki_dir")]
    pub pki_dir: PathBuf,
    /// Trust any server certificate (for commissioning only; logs a warning).
    #[serde(default)]
    pub trust_server_certs: bool,
    /// How often the server sends collected changes, in milliseconds.
    #[serde(default = "default_publishing_interval_ms")]
    pub publishing_interval_ms: u64,
    /// How often the server samples each node, in milliseconds (default: the publishing interval).
    #[serde(default)]
    pub sampling_interval_ms: Option<u64>,
    /// Server-side queue per monitored item; ≥ 2 so a change between two samples is not lost.
    #[serde(default = "default_queue_size")]
    pub queue_size: u32,
    /// Cap on notifications per publish response, so that large subscriptions do not exceed
    /// message size limits.
    #[serde(default = "default_max_notifications_per_publish")]
    pub max_notifications_per_publish: u32,
    /// Monitored items created per CreateMonitoredItems call (servers cap this, e.g. S7-1500: 1000).
    #[serde(default = "default_batch_size")]
    pub create_batch_size: usize,
}

fn default_security_policy() -> String {
    "None".into()
}
fn default_security_mode() -> String {
    "None".into()
}
fn default_pki_dir() -> PathBuf {
    PathBuf::from("pki")
}
fn default_publishing_interval_ms() -> u64 {
    1000
}
fn default_queue_size() -> u32 {
    10
}
fn default_max_notifications_per_publish() -> u32 {
    10_000
}
fn default_batch_size() -> usize {
    1000
}

/// One node → element rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    /// Name of the `[[opcua]]` source the node lives on (may be omitted when there is one source).
    #[serde(default)]
    pub source: Option<String>,
    /// OPC UA node id: `nsu=<namespace URI>;s=Name` (preferred: survives index changes),
    /// `ns=2;i=5`, `ns=2;g=<GUID>`, `ns=2;b=<base64>`.
    pub node_id: String,
    /// Identifier of the target submodel (as in the AAS environment).
    pub submodel: String,
    /// idShortPath of the target element in that submodel, e.g. `SpindleSpeed` or `Axes.X`.
    pub path: String,
    /// Allow writing this element back to the node (`PATCH .../$value`, role `writer`).
    #[serde(default)]
    pub writable: bool,
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
        }
    }
}

/// QuestDB (ILP) sink settings. (`Debug` hides `conf`, which may hold credentials.)
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuestDbConfig {
    /// Write to QuestDB at all.
    pub enabled: bool,
    /// questdb-rs configuration string, e.g. `http::addr=127.0.0.1:9000;` (HTTP: every flush is
    /// confirmed) or `tcp::addr=127.0.0.1:9009;`. Auth and TLS options go here too
    /// (`token=...;`, `username=...;password=...;`, `https::...`).
    pub conf: String,
    /// Flush when this many rows are buffered.
    pub flush_rows: usize,
    /// Flush at least this often, milliseconds, when rows are buffered.
    pub flush_interval_ms: u64,
    /// Prefix of table names; the table is `<prefix><submodel idShort>`.
    pub table_prefix: String,
}

impl Default for QuestDbConfig {
    fn default() -> Self {
        QuestDbConfig {
            enabled: false,
            conf: "http::addr=127.0.0.1:9000;".into(),
            flush_rows: 5_000,
            flush_interval_ms: 1_000,
            table_prefix: String::new(),
        }
    }
}

/// Shown instead of a secret in `Debug` output (and so in logs).
const REDACTED: &str = "<redacted>";

fn redact(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| REDACTED)
}

/// Hides `password=` / `token=` values in a questdb-rs config string.
fn redact_conf(conf: &str) -> String {
    conf.split(';')
        .map(|part| match part.split_once('=') {
            Some((k, _)) if ["password", "token", "token_x", "token_y"].contains(&k.trim()) => {
                format!("{k}={REDACTED}")
            }
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

impl fmt::Debug for OpcUaSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpcUaSourceConfig")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("security_policy", &self.security_policy)
            .field("security_mode", &self.security_mode)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("pki_dir", &self.pki_dir)
            .field("trust_server_certs", &self.trust_server_certs)
            .field("publishing_interval_ms", &self.publishing_interval_ms)
            .finish_non_exhaustive()
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
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for QuestDbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuestDbConfig")
            .field("enabled", &self.enabled)
            .field("conf", &redact_conf(&self.conf))
            .field("flush_rows", &self.flush_rows)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("table_prefix", &self.table_prefix)
            .finish()
    }
}

/// Every problem found in a config, each with the path of the offending setting.
#[derive(Debug, Default)]
pub struct ConfigErrors(pub Vec<String>);

impl ConfigErrors {
    pub fn push(&mut self, path: impl fmt::Display, message: impl fmt::Display) {
        self.0.push(format!("{path}: {message}"));
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_result(self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} error(s) in the configuration:", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads a TOML file and applies `AAS_GATEWAY__...` environment overrides
    /// (e.g. `AAS_GATEWAY__MQTT__HOST=broker`).
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("AAS_GATEWAY")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut cfg: Config = raw
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // The hash of exactly what was read goes into the audit log ("which config ran?").
        cfg.file_sha256 = std::fs::read(path)
            .ok()
            .map(|b| crate::security::sha256_hex(&b));
        cfg.file_path = Some(path.to_path_buf());
        cfg.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(cfg)
    }

    /// True when the config holds passwords or credentials (then it must not be readable by
    /// other users; see [`crate::security::check_config_permissions`]).
    pub fn has_secrets(&self) -> bool {
        self.opcua.iter().any(|s| s.password.is_some())
            || self.mqtt.password.is_some()
            || redact_conf(&self.questdb.conf) != self.questdb.conf
    }

    /// Resolves a path from the config relative to the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Checks everything that can be checked without the AAS templates or a server.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = ConfigErrors::default();
        if self.gateway.channel_capacity == 0 {
            errors.push("gateway.channel_capacity", "must be at least 1");
        }
        if self.api.enabled && self.api.listen.parse::<SocketAddr>().is_err() {
            errors.push(
                "api.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080",
                    self.api.listen
                ),
            );
        }
        if self.api.enabled {
            if let Err(e) =
                crate::security::Authenticator::from_config(&self.api.auth, &self.base_dir)
            {
                errors.0.push(e); // already names its setting (api.auth.tokens[i]...)
            }
            if let Some(tls) = &self.api.tls {
                if let Err(e) = tls.server_config(&self.base_dir) {
                    errors.0.push(e); // already names its setting (api.tls.cert...)
                }
            }
            if self.api.max_body_bytes == 0 {
                errors.push("api.max_body_bytes", "must be at least 1");
            }
        }
        if self.audit.enabled && self.audit.max_file_bytes < 4096 {
            errors.push("audit.max_file_bytes", "must be at least 4096");
        }
        if self.aas.environments.is_empty() {
            errors.push("aas.environments", "no AAS environment file given");
        }
        for (i, env) in self.aas.environments.iter().enumerate() {
            let p = self.resolve(env);
            if !p.is_file() {
                errors.push(
                    format!("aas.environments[{i}]"),
                    format!("{} does not exist", p.display()),
                );
            }
        }
        if self.opcua.is_empty() {
            errors.push("opcua", "no [[opcua]] source configured");
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.opcua.iter().enumerate() {
            let at = |field: &str| format!("opcua[{i}].{field}");
            if s.name.is_empty() {
                errors.push(at("name"), "must not be empty");
            } else if !names.insert(s.name.as_str()) {
                errors.push(
                    at("name"),
                    format!("{:?} is used by another source", s.name),
                );
            }
            if !s.endpoint.starts_with("opc.tcp://") {
                errors.push(
                    at("endpoint"),
                    format!("{:?} is not an opc.tcp:// URL", s.endpoint),
                );
            }
            if crate::sources::opcua::security_policy_uri(&s.security_policy).is_none() {
                errors.push(
                    at("security_policy"),
                    format!(
                        "{:?} is not one of None, Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss",
                        s.security_policy
                    ),
                );
            }
            if crate::sources::opcua::security_mode(&s.security_mode).is_none() {
                errors.push(
                    at("security_mode"),
                    format!(
                        "{:?} is not one of None, Sign, SignAndEncrypt",
                        s.security_mode
                    ),
                );
            }
            if s.username.is_some() != s.password.is_some() {
                errors.push(at("password"), "username and password go together");
            }
            if s.publishing_interval_ms == 0 {
                errors.push(at("publishing_interval_ms"), "must be at least 1");
            }
            if s.queue_size == 0 {
                errors.push(
                    at("queue_size"),
                    "must be at least 1 (2 or more recommended)",
                );
            }
            if s.create_batch_size == 0 {
                errors.push(at("create_batch_size"), "must be at least 1");
            }
        }
        for (i, rule) in self.mapping.iter().enumerate() {
            let at = |field: &str| format!("mapping[{i}].{field}");
            if let Err(e) = rule.node_id.parse::<NodeRef>() {
                errors.push(at("node_id"), e);
            }
            match &rule.source {
                Some(name) if !self.opcua.iter().any(|s| &s.name == name) => errors.push(
                    at("source"),
                    format!("no [[opcua]] source is named {name:?}"),
                ),
                None if self.opcua.len() > 1 => errors.push(
                    at("source"),
                    "required when more than one [[opcua]] source is configured",
                ),
                _ => {}
            }
            if rule.path.is_empty() {
                errors.push(at("path"), "must not be empty");
            }
        }
        if self.mqtt.enabled {
            if self.mqtt.qos > 1 {
                errors.push(
                    "mqtt.qos",
                    format!("{} is not supported: use 0 or 1", self.mqtt.qos),
                );
            }
            if self.mqtt.host.is_empty() {
                errors.push("mqtt.host", "must not be empty");
            }
            if self.mqtt.queue_capacity == 0 {
                errors.push("mqtt.queue_capacity", "must be at least 1");
            }
            if self.mqtt.topic_prefix.contains(['+', '#']) {
                errors.push("mqtt.topic_prefix", "must not contain the wildcards + or #");
            }
        }
        if self.questdb.enabled {
            if let Err(e) = questdb::ingress::SenderBuilder::from_conf(&self.questdb.conf) {
                errors.push("questdb.conf", e);
            }
            if self.questdb.flush_rows == 0 {
                errors.push("questdb.flush_rows", "must be at least 1");
            }
        }
        if self.outbox.max_entries == 0 {
            errors.push("outbox.max_entries", "must be at least 1");
        }
        errors.into_result()
    }

    /// The source a mapping rule refers to (its index in `opcua`).
    pub fn source_index(&self, rule: &MappingRule) -> Option<usize> {
        match &rule.source {
            Some(name) => self.opcua.iter().position(|s| &s.name == name),
            None if self.opcua.len() == 1 => Some(0),
            None => None,
        }
    }
}
