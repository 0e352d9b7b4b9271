//! Typed configuration: a TOML file plus `AAS_GATEWAY__SECTION__KEY` environment overrides
//! (`AAS_GATEWAY__OPCUA__0__PASSWORD` for a key of the first `[[opcua]]` entry).
//!
//! Loading ([`load`]) checks syntax, keys and types; [`Config::validate`] then checks meaning.
//! Both report **every** problem with its path (`mapping[3].node_id: ...`) and where it was
//! set (`gateway.toml:12` or the environment variable), so a plant engineer fixes a config in
//! one round instead of one error at a time. Checks that need the AAS templates (does the
//! idShortPath exist? does the type fit?) run in [`crate::mapping::Router::build`].
//!
//! This module sits above the components: each component owns its section and its
//! `validate()` (`sources/opcua/config.rs`, `mapping/config.rs`, `sinks/mqtt/config.rs`, …);
//! [`Config`] aggregates the sections, runs every `validate()` and collects the errors, and
//! [`registry`] builds the sources and sinks from their sections.

mod from_aas;
pub mod load;
mod registry;

pub use from_aas::FromAas;
#[cfg(test)]
mod tests;

pub use crate::core::conf::{redact, redact_conf, ConfigErrors, REDACTED};
// Each component owns its section; re-exported so that the whole config reads from one place.
pub use crate::mapping::MappingRule;
pub use crate::sources::opcua::config::{
    AcquisitionMode, DataChangeTriggerKind, DeadbandKind, OpcUaSourceConfig,
};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    /// The sources and rules the AAS environments' AID + AIMC submodels added (see
    /// [`Config::add_from_aas`]).
    #[serde(skip)]
    pub from_aas: FromAas,
    /// AIMC 2.x transformations (Lua) of the AAS environments; their outputs are rules in
    /// `mapping` (see [`Config::add_from_aas`]).
    #[serde(skip)]
    pub transforms: Vec<crate::mapping::transform::TransformSpec>,
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
                    errors.0.push(e.to_string()); // names its setting (api.tls.cert...)
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
            errors.push(
                "opcua",
                "no [[opcua]] source configured (and no AID + AIMC submodels in the AAS environments)",
            );
        }
        self.check_from_aas(&mut errors);
        let mut names = std::collections::HashSet::new();
        for (i, source) in self.opcua.iter().enumerate() {
            source.validate(i, |p| self.resolve(p), &mut errors);
            if !source.name.is_empty() && !names.insert(source.name.as_str()) {
                errors.push(
                    format!("opcua[{i}].name"),
                    format!("{:?} is used by another source", source.name),
                );
            }
        }
        for (i, rule) in self.mapping.iter().enumerate() {
            rule.validate(i, &self.opcua, &mut errors);
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
        self.relabel_all(errors).into_result()
    }

    /// [`Config::relabel`] for every error.
    pub fn relabel_all(&self, errors: ConfigErrors) -> ConfigErrors {
        ConfigErrors(errors.0.into_iter().map(|e| self.relabel(e)).collect())
    }

    /// The source a mapping rule refers to (its index in `opcua`).
    pub fn source_index(&self, rule: &MappingRule) -> Option<usize> {
        rule.source_index(&self.opcua)
    }
}
