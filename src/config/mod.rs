//! Typed configuration: a TOML file plus `AAS_GATEWAY__SECTION__KEY` environment overrides
//! (`AAS_GATEWAY__OPCUA__0__PASSWORD` for a key of the first `[[opcua]]` entry).
//!
//! Loading ([`load`]) checks syntax, keys and types; [`Config::validate`] then checks meaning.
//! Both report **every** problem with its path (`mapping[3].node_id: ...`) and where it was
//! set (`gateway.toml:12` or the environment variable), so a plant engineer fixes a config in
//! one round instead of one error at a time. Checks that need the AAS templates (does the
//! idShortPath exist? does the type fit?) run in [`crate::mapping::Router::build`].

mod de;
pub mod load;
pub mod tree;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::sources::opcua::node_ref::NodeRef;

// The sinks' sections live in their own folders; re-exported so the loader sees one config.
pub use crate::sinks::mqtt::{MessagePer, MqttConfig};
pub use crate::sinks::questdb::QuestDbConfig;
pub use crate::sinks::sparkplug::SparkplugConfig;

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
    /// Sparkplug B sink (off by default).
    #[serde(default)]
    pub sparkplug: SparkplugConfig,
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
    /// History as AAS: Time Series Data submodels for rules with `history = true`.
    #[serde(default)]
    pub history: crate::history::HistoryConfig,
    /// Directory the config file lives in: relative paths in the config are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// What loading found wrong (only after [`Config::load_lenient`]); reported together with
    /// the semantic errors by [`Config::finish_check`].
    #[serde(skip)]
    pub load_report: load::LoadReport,
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
    /// Requests per second the API accepts from each client (burst: twice that); 0 = no
    /// limit. A client is a token holder, or, without a valid token, a source address.
    /// `/health` and `/ready` are not limited.
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
    /// Password for `username`. Prefer the environment, `AAS_GATEWAY__OPCUA__<i>__PASSWORD`
    /// with `<i>` this entry's position among the `[[opcua]]` entries (0 = the first), or a
    /// config file readable only by the gateway.
    #[serde(default)]
    pub password: Option<String>,
    /// Directory of the gateway's own certificate and trusted/rejected server certificates.
    #[serde(default = "default_pki_dir")]
    pub pki_dir: PathBuf,
    /// Trust any server certificate (for commissioning only; logs a warning).
    #[serde(default)]
    pub trust_server_certs: bool,
    /// Check the server certificate's host name, application URI and validity dates (on top of
    /// trust). `false` for servers whose certificate names another host than the endpoint URL
    /// (e.g. a certificate for `plc1` reached as `10.0.0.5`); logs a warning.
    #[serde(default = "default_true")]
    pub verify_server_certs: bool,
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
    /// Monitored items created (or nodes read) per call, at most; the server's own
    /// `OperationLimits` (MaxMonitoredItemsPerCall, MaxNodesPerRead) lower it further when smaller
    /// (e.g. S7-1500: 1000).
    #[serde(default = "default_batch_size")]
    pub create_batch_size: usize,
    /// How values are acquired: `subscribe` (monitored items, the default) or `read` (cyclic
    /// Read every `read_interval_ms`, for servers or nodes that cannot be subscribed).
    #[serde(default)]
    pub mode: AcquisitionMode,
    /// Period of cyclic reads in `read` mode, milliseconds.
    #[serde(default = "default_read_interval_ms")]
    pub read_interval_ms: u64,
    /// When a monitored item's server queue is full: drop the oldest value (`true`, default) or
    /// the newest.
    #[serde(default = "default_true")]
    pub discard_oldest: bool,
    /// DataChangeFilter trigger: `status`, `status_value` (the OPC UA default) or
    /// `status_value_timestamp` (also report a new source timestamp with an unchanged value).
    #[serde(default)]
    pub data_change_trigger: DataChangeTriggerKind,
    /// DataChangeFilter deadband: `none` (default), `absolute` or `percent` (of the node's
    /// EURange; the server rejects it for nodes without one, and that node is reported).
    #[serde(default)]
    pub deadband_type: DeadbandKind,
    /// Deadband width: absolute units, or percent (0–100) of the EURange.
    #[serde(default)]
    pub deadband_value: f64,
    /// Publishing intervals without data after which the server sends a keep-alive.
    #[serde(default = "default_keep_alive_count")]
    pub keep_alive_count: u32,
    /// A server that sends neither data nor keep-alive for this long (milliseconds) is
    /// considered stalled: the gateway logs it and reconnects. Default: 3 × keep_alive_count ×
    /// publishing_interval_ms, at least 5 s.
    #[serde(default)]
    pub silence_timeout_ms: Option<u64>,
    /// X.509 user identity token: certificate file (DER or PEM) of the user. Goes with
    /// `user_private_key`; mutually exclusive with `username`.
    #[serde(default)]
    pub user_certificate: Option<PathBuf>,
    /// Private key (PEM) of `user_certificate`.
    #[serde(default)]
    pub user_private_key: Option<PathBuf>,
    /// Read the server's data type definitions after connecting, so that its own structures
    /// (ExtensionObjects) become JSON with named fields instead of base64 bytes.
    #[serde(default = "default_true")]
    pub load_data_types: bool,
    /// Back-pressure: when more than this many values wait for the pipeline (a sink that
    /// blocks, a slow disk), publishing of the subscription is paused (SetPublishingMode) until
    /// they have entered it. The server keeps sampling into each item's queue (`queue_size`
    /// values; beyond that it drops and flags the overflow, counted) and sends keep-alives, so
    /// the session stays healthy. Memory for waiting values is bounded by twice this plus ten
    /// publish responses (`max_notifications_per_publish`); values beyond that are dropped and
    /// counted (`aas_gateway_source_handoff_dropped_total`).
    #[serde(default = "default_pause_publishing_above")]
    pub pause_publishing_above: usize,
}

impl OpcUaSourceConfig {
    /// The hand-off's hard bound in values (see `pause_publishing_above`).
    pub fn handoff_max_values(&self) -> usize {
        self.pause_publishing_above
            .saturating_mul(2)
            .saturating_add((self.max_notifications_per_publish as usize).saturating_mul(10))
    }

    /// The silence after which the server is considered stalled (see `silence_timeout_ms`).
    pub fn silence_timeout(&self) -> std::time::Duration {
        let ms = self.silence_timeout_ms.unwrap_or_else(|| {
            (3 * self.keep_alive_count.max(1) as u64 * self.publishing_interval_ms).max(5_000)
        });
        std::time::Duration::from_millis(ms)
    }
}

/// How a node's values are acquired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcquisitionMode {
    /// Monitored items in a subscription: the server reports changes.
    #[default]
    Subscribe,
    /// Cyclic Read service calls: for servers or nodes that cannot be subscribed.
    Read,
}

/// What counts as a data change (OPC UA DataChangeTrigger).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataChangeTriggerKind {
    /// Only a status change is reported.
    Status,
    /// A status or value change is reported (the OPC UA default).
    #[default]
    StatusValue,
    /// A status, value or source timestamp change is reported.
    StatusValueTimestamp,
}

/// Deadband of a DataChangeFilter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadbandKind {
    /// Every change is reported.
    #[default]
    None,
    /// Changes smaller than `deadband_value` (in the node's units) are suppressed.
    Absolute,
    /// Changes smaller than `deadband_value` percent of the node's EURange are suppressed.
    Percent,
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
fn default_pause_publishing_above() -> usize {
    50_000
}
fn default_max_notifications_per_publish() -> u32 {
    10_000
}
fn default_batch_size() -> usize {
    1000
}
fn default_read_interval_ms() -> u64 {
    1000
}
fn default_true() -> bool {
    true
}
fn default_keep_alive_count() -> u32 {
    10
}

/// One node → element rule.
#[derive(Debug, Clone, Default, Deserialize)]
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
    /// Multiply numeric values by this before storing them: `value * scale + offset`
    /// (e.g. `0.001` to turn W into kW). Only for elements of type xs:float, xs:double or
    /// xs:decimal, since a scaled value is rarely an integer.
    #[serde(default)]
    pub scale: Option<f64>,
    /// Add this after scaling (e.g. `-273.15` to turn K into °C). Same restriction as `scale`.
    #[serde(default)]
    pub offset: Option<f64>,
    /// Unit of the stored value (after scaling), e.g. `kW`, passed to the sinks with every
    /// value. Default: the IEC 61360 unit of the element's ConceptDescription, if any.
    #[serde(default)]
    pub unit: Option<String>,
    /// Semantic id (IRDI or IRI) to give the element instead of the template's, e.g. when the
    /// plant uses its own ECLASS property. Written into the served AAS and passed to the sinks.
    #[serde(default)]
    pub semantic_id: Option<String>,
    /// Overrides the source's `mode` for this node (`subscribe` or `read`).
    #[serde(default)]
    pub mode: Option<AcquisitionMode>,
    /// Overrides the source's `read_interval_ms` for this node (read mode).
    #[serde(default)]
    pub read_interval_ms: Option<u64>,
    /// Overrides the source's `sampling_interval_ms` for this node.
    #[serde(default)]
    pub sampling_interval_ms: Option<u64>,
    /// Overrides the source's `queue_size` for this node.
    #[serde(default)]
    pub queue_size: Option<u32>,
    /// Overrides the source's `discard_oldest` for this node.
    #[serde(default)]
    pub discard_oldest: Option<bool>,
    /// Overrides the source's `data_change_trigger` for this node.
    #[serde(default)]
    pub data_change_trigger: Option<DataChangeTriggerKind>,
    /// Overrides the source's `deadband_type` for this node.
    #[serde(default)]
    pub deadband_type: Option<DeadbandKind>,
    /// Overrides the source's `deadband_value` for this node.
    #[serde(default)]
    pub deadband_value: Option<f64>,
    /// Allow writing this element back to the node (`PATCH .../$value`, role `writer`).
    #[serde(default)]
    pub writable: bool,
    /// Keep the element's recent values and serve them as history: the shell gets an IDTA 02008
    /// Time Series Data submodel whose Records include this variable (see `[history]`). Only
    /// for Property elements (one value per record).
    #[serde(default)]
    pub history: bool,
}

fn check_deadband(errors: &mut ConfigErrors, at: &str, kind: DeadbandKind, value: f64) {
    match kind {
        DeadbandKind::None => {}
        _ if !value.is_finite() || value < 0.0 => {
            errors.push(at, format!("{value} must be a finite number ≥ 0"))
        }
        DeadbandKind::Percent if value > 100.0 => {
            errors.push(at, format!("{value} is a percentage and must be ≤ 100"))
        }
        _ => {}
    }
}

/// Shown instead of a secret in `Debug` output (and so in logs).
pub(crate) const REDACTED: &str = "<redacted>";

pub(crate) fn redact(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| REDACTED)
}

/// Hides `password=` / `token=` values in a questdb-rs config string.
pub(crate) fn redact_conf(conf: &str) -> String {
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

/// Every problem found in a config, each with the path of the offending setting.
#[derive(Debug, Default)]
pub struct ConfigErrors(pub Vec<String>);

impl ConfigErrors {
    /// Adds `path: message`.
    pub fn push(&mut self, path: impl fmt::Display, message: impl fmt::Display) {
        self.0.push(format!("{path}: {message}"));
    }
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// `Ok` when nothing was found.
    pub fn into_result(self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

/// Most errors [`ConfigErrors`] prints: a generated config with one typo in 100k mapping rules
/// gets the count and the first ones, not 100k lines.
const MAX_SHOWN_ERRORS: usize = 200;

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} error(s) in the configuration:", self.0.len())?;
        for e in self.0.iter().take(MAX_SHOWN_ERRORS) {
            writeln!(f, "  - {e}")?;
        }
        if self.0.len() > MAX_SHOWN_ERRORS {
            writeln!(
                f,
                "  … and {} more (the first {MAX_SHOWN_ERRORS} are shown)",
                self.0.len() - MAX_SHOWN_ERRORS
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads a TOML file and applies `AAS_GATEWAY__...` environment overrides
    /// (e.g. `AAS_GATEWAY__MQTT__HOST=broker`, `AAS_GATEWAY__OPCUA__0__PASSWORD=...`).
    ///
    /// Fails when a key is unknown, a value has the wrong type or an override names nothing;
    /// the error then lists all of these together with [`Config::validate`]'s findings, each
    /// with `file:line` (or the variable) and its path.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let cfg = Config::load_lenient(path)?;
        if cfg.load_report.problems.is_empty() {
            return Ok(cfg);
        }
        match cfg.finish_check(cfg.validate()) {
            Ok(()) => Ok(cfg),
            Err(errors) => anyhow::bail!("{}: {errors}", path.display()),
        }
    }

    /// Like [`Config::load`], but a config with unknown keys or wrong values still loads: a
    /// wrong value is replaced by its type's zero, and the problems wait in
    /// [`Config::load_report`] until [`Config::finish_check`] reports them with the semantic
    /// ones (what `aas-gateway validate` does). Fails only on an unreadable file or a TOML
    /// syntax error.
    pub fn load_lenient(path: &Path) -> anyhow::Result<Config> {
        load::load_lenient(path)
    }

    /// True when the config holds passwords or credentials (then it must not be readable by
    /// other users; see [`crate::security::check_config_permissions`]).
    pub fn has_secrets(&self) -> bool {
        self.opcua.iter().any(|s| s.password.is_some())
            || self.mqtt.password.is_some()
            || self.sparkplug.password.is_some()
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
            if s.read_interval_ms == 0 {
                errors.push(at("read_interval_ms"), "must be at least 1");
            }
            if s.keep_alive_count == 0 {
                errors.push(at("keep_alive_count"), "must be at least 1");
            }
            if s.pause_publishing_above == 0 {
                errors.push(at("pause_publishing_above"), "must be at least 1");
            }
            check_deadband(
                &mut errors,
                &at("deadband_value"),
                s.deadband_type,
                s.deadband_value,
            );
            if s.user_certificate.is_some() != s.user_private_key.is_some() {
                errors.push(
                    at("user_private_key"),
                    "user_certificate and user_private_key go together",
                );
            }
            if s.user_certificate.is_some() && s.username.is_some() {
                errors.push(
                    at("user_certificate"),
                    "choose one identity: username/password or user_certificate",
                );
            }
            for (field, file) in [
                ("user_certificate", &s.user_certificate),
                ("user_private_key", &s.user_private_key),
            ] {
                if let Some(f) = file {
                    if !self.resolve(f).is_file() {
                        errors.push(
                            at(field),
                            format!("{} does not exist", self.resolve(f).display()),
                        );
                    }
                }
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
            for (field, v) in [("scale", rule.scale), ("offset", rule.offset)] {
                if v.is_some_and(|v| !v.is_finite()) {
                    errors.push(at(field), "must be a finite number");
                }
            }
            if rule.scale == Some(0.0) {
                errors.push(at("scale"), "0 would erase every value");
            }
            if rule.semantic_id.as_deref() == Some("") {
                errors.push(at("semantic_id"), "must not be empty");
            }
            if rule.read_interval_ms == Some(0) {
                errors.push(at("read_interval_ms"), "must be at least 1");
            }
            if rule.queue_size == Some(0) {
                errors.push(at("queue_size"), "must be at least 1");
            }
            if rule.deadband_type.is_some() || rule.deadband_value.is_some() {
                let source = self.source_index(rule).map(|i| &self.opcua[i]);
                let kind = rule
                    .deadband_type
                    .or(source.map(|s| s.deadband_type))
                    .unwrap_or_default();
                let value = rule
                    .deadband_value
                    .or(source.map(|s| s.deadband_value))
                    .unwrap_or_default();
                check_deadband(&mut errors, &at("deadband_value"), kind, value);
            }
        }
        if self.mqtt.enabled {
            self.mqtt.validate(|p| self.resolve(p), &mut errors);
        }
        if self.questdb.enabled {
            self.questdb.validate(&mut errors);
        }
        if self.sparkplug.enabled {
            self.sparkplug.validate(|p| self.resolve(p), &mut errors);
        }
        self.history.validate(&mut errors);
        self.outbox.validate(&mut errors);
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
