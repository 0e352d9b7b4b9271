//! Data sources behind one trait: a [`Source`] starts from its config section, emits typed
//! [`ReadingBatch`]es into the dispatcher's channel, reports its counters and health by name
//! ([`SourceStats`]) and stops on the cancellation token.
//!
//! The pipeline knows no source by name: each config section that describes sources
//! implements [`SourceConfig`], and `crate::config::Config::build_sources` (the registry; it
//! lives with the sections so that this module never depends on the aggregate config) asks
//! each for its sources. Adding a kind of source is its folder (config, code, tests), its
//! section in the config and one line there.
//!
//! Sources hand over protocol-free values: a [`crate::core::Reading`] carries a
//! [`crate::core::TypedValue`], quality/status and both timestamps, never a protocol type.
//!
//! Today: OPC UA client subscriptions and cyclic reads ([`opcua`]).

pub mod aid;
pub mod opcua;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::core::{ReadingBatch, XsType};

/// A running data source.
pub trait Source: Send {
    /// The name from its config section (logs, `/metrics`, `/ready`, mapping rules).
    fn name(&self) -> &str;

    /// Its counters and health, readable while it runs.
    fn stats(&self) -> Arc<SourceStats>;

    /// `true` when no mapping rule uses this source: it is listed, but not started.
    fn is_idle(&self) -> bool {
        false
    }

    /// Runs until `shutdown`, sending readings into `out` (the dispatcher's bounded channel).
    /// Returns an error only for problems retrying cannot fix (rejected credentials, a bad
    /// certificate); unreachable or restarting peers are retried.
    fn run(
        self: Box<Self>,
        out: mpsc::Sender<ReadingBatch>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), SourceError>>;
}

/// Why a source ended for good (retrying cannot fix it; the operator must).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The server refused the session: credentials, the gateway's certificate, a security
    /// policy it does not offer.
    #[error("source {source_name}: the session to {endpoint} ended: {status} ({hint})")]
    Refused {
        /// The source's name.
        source_name: String,
        /// Where it connects.
        endpoint: String,
        /// The server's status code.
        status: String,
        /// What to check.
        hint: String,
    },
    /// The source could not be set up (its certificate store, a setting the server rejects).
    #[error("source {source_name}: {reason:#}")]
    Setup {
        /// The source's name.
        source_name: String,
        /// What went wrong, with its causes.
        reason: anyhow::Error,
    },
}

/// What a mapping rule's element takes, for a source's own type checks (a source knows its
/// protocol's types, the mapping knows the elements; this is what they share).
#[derive(Debug, Clone)]
pub struct RuleTarget {
    /// The node/address as configured, for messages.
    pub node: String,
    /// `submodel idShort/idShortPath`, for messages.
    pub element: String,
    /// The element's value type.
    pub value_type: XsType,
    /// The rule applies `scale`/`offset` (the element is then xs:float/double/decimal).
    pub linear: bool,
}

/// Per mapping rule number, what its element takes (`None` for an unknown number). A function
/// rather than a table: the answer is needed only when a source connects, and a table would
/// hold two message texts per rule for the gateway's whole life.
pub type RuleTargets = Arc<dyn Fn(u32) -> Option<RuleTarget> + Send + Sync>;

/// What a config section builds its sources from, besides itself.
pub struct SourceContext<'a> {
    /// Makes a path from the config absolute (relative paths are relative to the config file).
    pub resolve: &'a dyn Fn(&Path) -> PathBuf,
    /// Per mapping rule (by index), what its element takes.
    pub targets: RuleTargets,
    /// Per `[[opcua]]` entry (by index), the nodes the mapping rules want from it, with their
    /// acquisition settings.
    pub opcua_nodes: &'a [Vec<opcua::MonitoredNode>],
}

/// A config section that describes sources (`[[opcua]]`): builds them, one per configured
/// entry, in config order.
pub trait SourceConfig {
    /// The sources; an entry no mapping rule uses is built idle (listed, not started).
    fn build(&self, ctx: &SourceContext<'_>) -> anyhow::Result<Vec<Box<dyn Source>>>;
}

/// Counters of one source, readable while it runs.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Values received (subscription notifications and changed cyclic reads).
    pub notifications: AtomicU64,
    /// Notification messages lost between server and gateway (publish sequence gaps).
    pub sequence_gaps: AtomicU64,
    /// Values with the overflow bit: the server's item queue dropped values before them.
    pub overflows: AtomicU64,
    /// Reconnects reported by the session (after the first connect).
    pub reconnects: AtomicU64,
    /// Times the server was silent for longer than the silence timeout.
    pub stalls: AtomicU64,
    /// Publish responses without data (keep-alives): the server is alive even when it has
    /// nothing to send, or while publishing is paused.
    pub keep_alives: AtomicU64,
    /// Times publishing was paused because the pipeline was saturated (see
    /// [`opcua::handoff`]).
    pub publishing_pauses: AtomicU64,
    /// 1 while publishing is paused.
    pub publishing_paused: AtomicU64,
    /// Values waiting in the hand-off to the pipeline now.
    pub handoff_waiting: AtomicU64,
    /// Values dropped at the hand-off: only when a server ignores the pause (beyond the
    /// hand-off's hard bound), or when stopping with values the pipeline did not take in time.
    pub handoff_dropped: AtomicU64,
    /// Values the source received but cannot represent (e.g. a DiagnosticInfo), logged once per
    /// mapping rule.
    pub unconvertible: AtomicU64,
    /// The session, announced for write-back, readiness and the audit log.
    pub session: opcua::slot::SessionSlot,
    /// What the status page shows besides the counters: when data last came, the last problem,
    /// why the source ended, the nodes the server rejected.
    pub health: SourceHealth,
}

/// Most rejected nodes a source keeps for display (the log names every one).
pub const MAX_REJECTED_SHOWN: usize = 200;

/// A node the source does not acquire, and why (the server's status or the mapping problem).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RejectedNode {
    /// The node as configured.
    pub node: String,
    /// The server's status code, or what does not fit.
    pub reason: String,
}

/// Health of a source beyond its counters, for the status page. Written rarely (problems,
/// state changes) except [`SourceHealth::data_arrived`], one relaxed store per batch.
#[derive(Debug, Default)]
pub struct SourceHealth {
    /// Wall-clock time (ns since the epoch) the last value arrived; 0 = never.
    last_data_nanos: AtomicI64,
    /// The last problem (message, wall-clock ns): a lost connection, an unreachable server.
    problem: Mutex<Option<(String, i64)>>,
    /// Why the source ended for good (it does not retry).
    failed: Mutex<Option<String>>,
    /// Nodes of the current session that are not acquired (at most [`MAX_REJECTED_SHOWN`]).
    rejected: Mutex<Vec<RejectedNode>>,
    /// All of them, also those beyond the shown list.
    rejected_total: AtomicU64,
}

/// A copy of [`SourceHealth`] at one moment.
#[derive(Debug, Clone, Default)]
pub struct HealthSnapshot {
    /// Wall-clock ns of the last value (0 = never).
    pub last_data_nanos: i64,
    /// The last problem and when it happened (wall-clock ns).
    pub problem: Option<(String, i64)>,
    /// Why the source ended for good.
    pub failed: Option<String>,
    /// Nodes not acquired (first [`MAX_REJECTED_SHOWN`]).
    pub rejected: Vec<RejectedNode>,
    /// Number of nodes not acquired.
    pub rejected_total: u64,
}

fn wall_clock_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

impl SourceHealth {
    /// Values arrived now.
    pub fn data_arrived(&self) {
        self.last_data_nanos
            .store(wall_clock_nanos(), Ordering::Relaxed);
    }
    /// Something went wrong that the source retries (shown with its time).
    pub fn problem(&self, message: impl Into<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((message.into(), wall_clock_nanos()));
    }
    /// The source ended for good.
    pub fn fail(&self, reason: impl Into<String>) {
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.into());
    }
    /// A new session starts acquiring: forget the previous session's rejected nodes.
    pub fn clear_rejected(&self) {
        self.rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.rejected_total.store(0, Ordering::Relaxed);
    }
    /// A node is not acquired.
    pub fn reject(&self, node: impl ToString, reason: impl ToString) {
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
        let mut list = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() < MAX_REJECTED_SHOWN {
            list.push(RejectedNode {
                node: node.to_string(),
                reason: reason.to_string(),
            });
        }
    }
    /// A copy for display.
    pub fn snapshot(&self) -> HealthSnapshot {
        HealthSnapshot {
            last_data_nanos: self.last_data_nanos.load(Ordering::Relaxed),
            problem: self
                .problem
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            failed: self
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            rejected: self
                .rejected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            rejected_total: self.rejected_total.load(Ordering::Relaxed),
        }
    }
}

/// Connection state of a source as the status page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    /// No mapping rule uses it: not started.
    Idle,
    /// Not connected yet since start.
    Connecting,
    /// Connected.
    Connected,
    /// Was connected; the connection is lost and being re-established.
    Reconnecting,
    /// Ended for good (see [`HealthSnapshot::failed`]).
    Failed,
}

impl SourceStats {
    /// Sets the "publishing paused" gauge.
    pub fn set_paused(&self, paused: bool) {
        self.publishing_paused
            .store(paused as u64, Ordering::Relaxed);
    }

    /// Whether publishing is paused by back-pressure now.
    pub fn is_paused(&self) -> bool {
        self.publishing_paused.load(Ordering::Relaxed) == 1
    }

    /// The connection state (for a source that was started).
    pub fn state(&self) -> SourceState {
        use opcua::slot::SessionState as S;
        if self
            .health
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return SourceState::Failed;
        }
        match self.session.state() {
            S::Connected(_) => SourceState::Connected,
            S::Lost(_) => SourceState::Reconnecting,
            // A new session after a lost one (or after a restart) is a reconnect too.
            S::Connecting(_) | S::Absent if self.session.was_connected() => {
                SourceState::Reconnecting
            }
            S::Connecting(_) | S::Absent => SourceState::Connecting,
        }
    }
}
