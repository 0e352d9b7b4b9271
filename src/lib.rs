//! # aas-gateway
//!
//! An edge gateway that collects data from factory equipment over OPC UA, maps it onto Asset
//! Administration Shell (IDTA-01001 v3) submodels, serves the live AAS over the Part 2 HTTP API
//! and forwards every timestamped value to QuestDB (InfluxDB Line Protocol) and MQTT.
//!
//! ```text
//! OPC UA server ──subscription──▶ sources::opcua ──Reading──▶ pipeline::dispatch
//!                                                              │  mapping::Router (node → element, xs type)
//!                                                              ├─▶ aas::live (latest value per element) ◀── api (HTTP)
//!                                                              └─▶ outbox (redb, durable) ─┬─▶ sinks::mqtt      (rumqttc, QoS 1)
//!                                                                                          ├─▶ sinks::questdb   (questdb-rs, ILP/HTTP)
//!                                                                                          └─▶ sinks::sparkplug (Sparkplug B, prost)
//! ```
//!
//! Module map (arrows point down only, checked by `tests/module_graph.rs`; bottom to top:
//! `core` → `aas`, `model` → `audit`, `outbox`, `sources` → `sinks` → `mapping` → `history` →
//! `security` → `api` → `writeback` → `config` → `stats` → `metrics` → `web` → `ops` → `pipeline` →
//! `demo`):
//! - [`config`]: aggregates each component's config section (env overrides, `validate()` listing
//!   every error with its path) and holds the registry that builds sources and sinks.
//! - [`core`]: the leaf every module may use: `TypedValue`, `Quality`, `Reading`, `XsType`, `Backoff`,
//!   and the config loader's machinery (`core::conf`: `ConfigErrors`, the TOML tree).
//! - [`model`]: `SubmodelUpdate`, `ElementTarget` (and the core types re-exported): what the stages exchange.
//! - [`sources`]: the `Source` trait; [`sources::opcua`]: sessions, subscriptions, reconnects,
//!   node ids (`nsu=`), value conversion, back-pressure that never blocks a session, `browse`
//!   (also `--aas`: AAS + AID + AIMC); [`sources::aid`]: OPC UA interfaces read from AID.
//! - [`mapping`]: the `[[mapping]]` rules (or AIMC relations, [`mapping::aimc`]); compiles them
//!   against the AAS templates; routes readings to elements (the dispatcher through a compact
//!   [`mapping::RouteTable`]); AIMC 2.x Lua transformations.
//! - [`aas`]: the in-memory AAS environment, idShortPaths, `xs:*` types, ValueOnly form;
//!   submodels are kept as a compact tree ([`aas::tree`], about 200 bytes a Property) and
//!   turned into JSON only for what is served; [`aas::live`] parks live values per element and
//!   writes them into the tree when it is read.
//! - [`api`]: AAS Part 2 HTTP API (read profile) under `/api/v3.0`, with the time-range
//!   extension of Time Series submodels ([`api::time_range`]).
//! - [`outbox`]: durable log of batch records (redb) that each sink reads through its own cursor
//!   within its own bound; nothing is forgotten before the far side confirmed it, or counted.
//! - [`sinks`]: the `Sink` trait; MQTT, QuestDB and Sparkplug B, each in its own folder,
//!   acknowledge to the outbox what was confirmed.
//! - [`history`]: IDTA 02008 Time Series submodels: recent values from a bounded in-memory store,
//!   the full history linked to QuestDB.
//! - [`stats`]: the running gateway's counters (the pipeline's and each source's and sink's).
//! - [`pipeline`]: wires the stages with bounded channels; start/stop in order.
//! - [`security`]: API bearer tokens + roles, HTTPS (rustls); the API's gatekeeper middleware
//!   ([`api::gatekeeper`]) applies them.
//! - [`audit`]: tamper-evident (hash-chained) audit log with rotation, retention, verify, export.
//! - [`metrics`]: Prometheus `/metrics` and `/ready`.
//! - [`writeback`]: `PATCH .../$value` → OPC UA Write, through the source's announced session.
//! - [`web`]: the status page at `/` (embedded HTML/JS/CSS) and its `/status/*` JSON and
//!   server-sent events: sources, sinks, live values, write form, audit tail.
//! - [`ops`]: wires the above into the running gateway.
//! - `demo` (cargo feature `demo`, on by default): the zero-setup demo: bundled simulator +
//!   embedded MQTT broker + gateway.
//! - [`logging`]: log set-up, and the filter that keeps meaningless library lines out of it.

pub mod aas;
pub mod api;
pub mod audit;
pub mod config;
pub mod core;
#[cfg(feature = "demo")]
pub mod demo;
pub mod history;
pub mod logging;
pub mod mapping;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod outbox;
pub mod pipeline;
pub mod security;
pub mod sinks;
pub mod sources;
pub mod stats;
pub mod web;
pub mod writeback;

pub use logging::init_logging;
