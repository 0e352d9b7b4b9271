//! `[[opcua]]`: one OPC UA server per entry, with its `validate()`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::conf::{redact, ConfigErrors};

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
    /// Checks this entry (`opcua[index]`); names are checked for uniqueness by the caller,
    /// which sees every entry. `resolve` makes a configured path absolute.
    pub fn validate(
        &self,
        index: usize,
        resolve: impl Fn(&Path) -> PathBuf,
        errors: &mut ConfigErrors,
    ) {
        let i = index;
        let s = self;
        let at = |field: &str| format!("opcua[{i}].{field}");
        if s.name.is_empty() {
            errors.push(at("name"), "must not be empty");
        }
        if !s.endpoint.starts_with("opc.tcp://") {
            errors.push(
                at("endpoint"),
                format!("{:?} is not an opc.tcp:// URL", s.endpoint),
            );
        }
        if super::security_policy_uri(&s.security_policy).is_none() {
            errors.push(
                at("security_policy"),
                format!(
                    "{:?} is not one of None, Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss",
                    s.security_policy
                ),
            );
        }
        if super::security_mode(&s.security_mode).is_none() {
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
            errors,
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
                if !resolve(f).is_file() {
                    errors.push(
                        at(field),
                        format!("{} does not exist", resolve(f).display()),
                    );
                }
            }
        }
    }

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

/// Checks a deadband setting at `at`.
pub fn check_deadband(errors: &mut ConfigErrors, at: &str, kind: DeadbandKind, value: f64) {
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

/// A node's own acquisition settings, each overriding the source's when set (a mapping rule's
/// `mode`, `queue_size`, … keys).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeOverrides {
    /// Overrides `mode`.
    pub mode: Option<AcquisitionMode>,
    /// Overrides `read_interval_ms`.
    pub read_interval_ms: Option<u64>,
    /// Overrides `sampling_interval_ms`.
    pub sampling_interval_ms: Option<u64>,
    /// Overrides `queue_size`.
    pub queue_size: Option<u32>,
    /// Overrides `discard_oldest`.
    pub discard_oldest: Option<bool>,
    /// Overrides `data_change_trigger`.
    pub data_change_trigger: Option<DataChangeTriggerKind>,
    /// Overrides `deadband_type`.
    pub deadband_type: Option<DeadbandKind>,
    /// Overrides `deadband_value`.
    pub deadband_value: Option<f64>,
}
