//! Wiring: sources → dispatcher (mapping + AAS store) → sinks, plus the API.
//!
//! Sources feed the dispatcher over a bounded channel; the dispatcher writes every batch durably
//! into the outbox, which each sink reads at its own pace. A slow or unreachable sink makes the
//! outbox grow on disk (bounded by `outbox.max_entries`), never memory.
//!
//! Shutdown runs front to back: the token stops the sources, their channel closes, the
//! dispatcher drains it and closes the outbox, and each sink delivers what is left (up to a
//! drain timeout; the rest stays in the outbox for the next start).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::aas::live::LiveEnvironment;
use crate::aas::Environment;
use crate::api::{self, SharedEnvironment};
use crate::config::{Config, ConfigErrors};
use crate::history::History;
use crate::mapping::Router;
use crate::model::{ReadingBatch, UpdateBatch};
use crate::outbox::Outbox;
use crate::sinks::{self, SinkStats};
use crate::sources::SourceStats;

/// Counters of a running gateway.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Readings received from all sources.
    pub readings: AtomicU64,
    /// Readings turned into submodel updates.
    pub updates: AtomicU64,
    /// Readings whose value did not fit the mapped element (logged once per rule).
    pub conversion_errors: AtomicU64,
    /// Mapping rules that delivered at least one value since start.
    pub rules_with_value: AtomicU64,
    pub sources: Vec<Arc<SourceStats>>,
    pub mqtt: Arc<SinkStats>,
    pub questdb: Arc<SinkStats>,
    /// The durable outbox (set once started).
    pub outbox: Option<Arc<Outbox>>,
}

/// Outbox cursor names of the sinks.
pub const MQTT_SINK: &str = "mqtt";
pub const QUESTDB_SINK: &str = "questdb";

/// Checks a config completely: its own settings, the AAS environments and every mapping rule.
/// Returns all problems found, not just the first.
pub fn check(cfg: &Config) -> Result<(Environment, Router), ConfigErrors> {
    check_with_history(cfg).map(|(env, router, _)| (env, router))
}

/// [`check`], plus the history of rules with `history = true`; its Time Series submodels are
/// already in the returned environment.
pub fn check_with_history(
    cfg: &Config,
) -> Result<(Environment, Router, Option<Arc<History>>), ConfigErrors> {
    // Load problems join these, and every error gets its file:line.
    cfg.finish_check(check_unlocated(cfg))
}

fn check_unlocated(
    cfg: &Config,
) -> Result<(Environment, Router, Option<Arc<History>>), ConfigErrors> {
    let mut errors = match cfg.validate() {
        Ok(()) => ConfigErrors::default(),
        Err(e) => e,
    };
    let files: Vec<_> = cfg
        .aas
        .environments
        .iter()
        .map(|p| cfg.resolve(p))
        .collect();
    if files.iter().any(|f| !f.is_file()) {
        return Err(errors); // already reported by validate()
    }
    let mut env = match Environment::load_files(&files) {
        Ok(env) => env,
        Err(e) => {
            errors.push("aas.environments", e);
            return Err(errors);
        }
    };
    match Router::build(cfg, &env) {
        Ok(router) if errors.is_empty() => {
            // semantic_id overrides go into the served AAS, so AAS and sinks agree.
            for (rule, route) in cfg.mapping.iter().zip(&router.routes) {
                if let Some(id) = &rule.semantic_id {
                    env.set_semantic_id(&route.location, id);
                }
            }
            let history = History::install(cfg, &mut env, &router)?.map(Arc::new);
            Ok((env, router, history))
        }
        Ok(_) => Err(errors),
        Err(more) => {
            // Rule errors already found by validate() (bad node ids, unknown sources) would
            // appear twice; keep one of each.
            for e in more.0 {
                if !errors.0.contains(&e) {
                    errors.0.push(e);
                }
            }
            Err(errors)
        }
    }
}

/// Runs the gateway with the API and both sinks off until every mapping rule delivered a value
/// or `max_wait` passed, then returns the live environment as AAS v3 JSON (for
/// `aas-gateway export --live`). Elements whose node sent nothing keep their template value.
pub async fn snapshot_live(
    mut cfg: Config,
    max_wait: Duration,
) -> anyhow::Result<serde_json::Value> {
    // Only the store is wanted: no port is bound and nothing is sent anywhere.
    cfg.api.enabled = false;
    cfg.mqtt.enabled = false;
    cfg.questdb.enabled = false;
    let cfg_rules = cfg.mapping.len() as u64;
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(cfg, shutdown.clone()).await?;
    let environment = gateway.environment.clone();
    let stats = gateway.stats.clone();
    let rules = cfg_rules;
    let deadline = tokio::time::Instant::now() + max_wait;
    while stats.rules_with_value.load(Ordering::Relaxed) < rules
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = stats.rules_with_value.load(Ordering::Relaxed);
    if got < rules {
        warn!("{got} of {rules} mapping rules delivered a value within {max_wait:?}; the others keep their template values");
    }
    shutdown.cancel();
    gateway.wait().await?;
    let doc = environment.read().to_json();
    Ok(doc)
}

/// A started gateway.
pub struct Gateway {
    /// Where the AAS API listens (`None` when disabled).
    pub api_addr: Option<SocketAddr>,
    pub stats: Arc<PipelineStats>,
    pub environment: SharedEnvironment,
    /// Time Series submodels' store (`None` when no rule has `history = true`).
    pub history: Option<Arc<History>>,
    shutdown: CancellationToken,
    sources: JoinSet<(String, anyhow::Result<()>)>,
    tasks: JoinSet<()>,
    questdb_thread: Option<std::thread::JoinHandle<()>>,
    audit: Option<Arc<crate::audit::AuditLog>>,
}

impl Gateway {
    /// Checks the config, loads the AAS, binds the API and starts every stage.
    pub async fn start(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<Gateway> {
        let (env, router, history) =
            check_with_history(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        let router = Arc::new(router);
        let environment: SharedEnvironment = Arc::new(LiveEnvironment::new(
            env,
            router.routes.iter().map(|r| &r.location),
        ));
        let capacity = cfg.gateway.channel_capacity;
        let mut tasks = JoinSet::new();

        let audit = crate::ops::open_audit(&cfg)?;
        // Bound now so that a busy port fails the start at once; served once all stages exist.
        let api_listener = if cfg.api.enabled {
            Some(
                tokio::net::TcpListener::bind(&cfg.api.listen)
                    .await
                    .map_err(|e| {
                        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                            "; another program (perhaps another gateway or demo) uses that port: \
                             stop it, set another port in api.listen, or pass --port 0 to let \
                             the system pick a free one (the URL is printed on stdout)"
                        } else {
                            ""
                        };
                        anyhow::anyhow!(
                            "api.listen: cannot listen on {}: {e}{hint}",
                            cfg.api.listen
                        )
                    })?,
            )
        } else {
            None
        };
        let api_addr = match &api_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };

        let mut stats = PipelineStats::default();
        let mut sink_names = Vec::new();
        if cfg.mqtt.enabled {
            sink_names.push(MQTT_SINK);
        }
        if cfg.questdb.enabled {
            sink_names.push(QUESTDB_SINK);
        }
        // Without a sink there is nothing to deliver later: no outbox (and no file lock, so
        // `export --live` works beside a running gateway).
        let outbox = if sink_names.is_empty() {
            info!("no sink enabled: values are served by the API only; no outbox");
            None
        } else {
            let (dir, ocfg) = (cfg.resolve(&cfg.outbox.dir), cfg.outbox.clone());
            let names = sink_names.clone();
            let outbox =
                tokio::task::spawn_blocking(move || Outbox::open(&dir, ocfg, &names)).await??;
            info!(path = %outbox.path().display(), sinks = ?sink_names, "durable outbox open");
            Some(outbox)
        };
        stats.outbox = outbox.clone();
        if let Some(outbox) = outbox.as_ref().filter(|_| cfg.mqtt.enabled) {
            let tls = sinks::mqtt::tls_configuration(&cfg.mqtt, |p| cfg.resolve(p))?;
            tasks.spawn(sinks::mqtt::run(
                cfg.mqtt.clone(),
                tls,
                cfg.gateway.name.clone(),
                outbox.reader(MQTT_SINK),
                stats.mqtt.clone(),
                shutdown.clone(),
            ));
        } else {
            info!("MQTT sink is off (mqtt.enabled = false)");
        }
        let questdb_thread = if let Some(outbox) = outbox.as_ref().filter(|_| cfg.questdb.enabled) {
            Some(sinks::questdb::spawn(
                cfg.questdb.clone(),
                outbox.reader(QUESTDB_SINK),
                stats.questdb.clone(),
                shutdown.clone(),
                tokio::runtime::Handle::current(),
            ))
        } else {
            info!(
                "QuestDB sink is off (questdb.enabled = false): values go to MQTT and the API only"
            );
            None
        };

        let (reading_tx, reading_rx) = mpsc::channel::<ReadingBatch>(capacity);
        let mut sources = JoinSet::new();
        // Every configured source of every kind (see `sources::REGISTRY`); their stats stay in
        // config order, also for sources no rule uses (those are not started).
        let ctx = crate::sources::SourceContext {
            config: &cfg,
            targets: router.rule_targets().into(),
        };
        for source in crate::sources::build_all(&ctx)? {
            stats.sources.push(source.stats());
            if source.is_idle() {
                continue;
            }
            let name = source.name().to_string();
            let fut = source.run(reading_tx.clone(), shutdown.clone());
            sources.spawn(async move { (name, fut.await) });
        }
        drop(reading_tx);

        let stats = Arc::new(stats);
        if let Some(listener) = api_listener {
            let mut read_api = api::router(environment.clone());
            if let Some(h) = &history {
                // The Time Series routes read the history store through this extension.
                read_api = read_api.layer(axum::Extension(h.clone()));
            }
            let app = crate::ops::secured_api(
                &cfg,
                &router,
                read_api,
                environment.clone(),
                stats.clone(),
                &sink_names,
                audit.clone(),
            )?;
            crate::ops::serve_api(&cfg, listener, app, shutdown.clone(), &mut tasks)?;
        }
        if let Some(audit) = &audit {
            crate::ops::follow_sources(&cfg, &stats, audit, &shutdown, &mut tasks);
        }
        tasks.spawn(dispatch(
            reading_rx,
            router,
            environment.clone(),
            outbox,
            stats.clone(),
            history.clone(),
        ));
        tasks.spawn(report(stats.clone(), shutdown.clone()));
        crate::ops::release_free_memory();

        Ok(Gateway {
            api_addr,
            stats,
            environment,
            history,
            shutdown,
            sources,
            tasks,
            questdb_thread,
            audit,
        })
    }

    /// Runs until shutdown (or until every source failed), then drains the pipeline.
    /// Returns an error when every source ended with an unrecoverable error.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let total = self.sources.len();
        let mut failures = Vec::new();
        while let Some(joined) = self.sources.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(e))) => {
                    error!(source = %name, "{e:#}");
                    failures.push(format!("{e:#}"));
                }
                Err(e) => failures.push(format!("source task panicked: {e}")),
            }
        }
        // All sources have ended: either shutdown, or each failed. Either way, drain and stop.
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        if let Some(t) = self.questdb_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Some(audit) = self.audit.take() {
            audit.record(
                "stop",
                serde_json::json!({"failed_sources": failures.len()}),
            );
            // On disk before the process may exit.
            let _ = tokio::task::spawn_blocking(move || audit.flush()).await;
        }
        if total > 0 && failures.len() == total {
            anyhow::bail!("every OPC UA source failed:\n  {}", failures.join("\n  "));
        }
        Ok(())
    }
}

/// Maps readings to updates, applies them to the AAS store and persists them in the outbox,
/// from which every sink reads. Closes the outbox when the sources are done.
async fn dispatch(
    mut rx: mpsc::Receiver<ReadingBatch>,
    router: Arc<Router>,
    env: SharedEnvironment,
    outbox: Option<Arc<Outbox>>,
    stats: Arc<PipelineStats>,
    history: Option<Arc<History>>,
) {
    let mut reported = HashSet::new();
    let mut seen = vec![false; router.routes.len()];
    while let Some(readings) = rx.recv().await {
        stats
            .readings
            .fetch_add(readings.len() as u64, Ordering::Relaxed);
        let mut routed = Vec::with_capacity(readings.len());
        for reading in readings {
            let rule = reading.rule;
            match router.route(reading) {
                Ok((route, update)) => {
                    if let Some(first @ false) = seen.get_mut(rule as usize) {
                        *first = true;
                        stats.rules_with_value.fetch_add(1, Ordering::Relaxed);
                    }
                    routed.push((rule, route, update))
                }
                Err(e) => {
                    stats.conversion_errors.fetch_add(1, Ordering::Relaxed);
                    if reported.insert(rule) {
                        warn!("value not mapped (logged once per rule, counted always): {e}");
                    }
                }
            }
        }
        // Parked per element; written into the AAS tree when the API reads it.
        env.record(
            routed
                .iter()
                .map(|(rule, _, update)| (*rule, &update.value)),
        );
        if let Some(h) = &history {
            h.record(routed.iter().map(|(_, route, update)| (*route, update)));
        }
        let batch: UpdateBatch = routed.into_iter().map(|(_, _, u)| u).collect();
        stats
            .updates
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        // Persist before taking the next batch; a failing disk is retried, never skipped.
        let Some(outbox) = &outbox else { continue };
        let mut backoff = crate::core::Backoff::new();
        while let Err(e) = outbox.append(batch.clone()).await {
            let wait = backoff.next_delay();
            error!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot persist values in the outbox; retrying");
            tokio::time::sleep(wait).await;
        }
    }
    if let Some(outbox) = outbox {
        outbox.close();
    }
}

/// Logs what flows every 10 s, so an operator sees at a glance that data moves.
async fn report(stats: Arc<PipelineStats>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    let mut last = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        crate::ops::release_free_memory();
        let updates = stats.updates.load(Ordering::Relaxed);
        info!(
            values_per_s = (updates - last) as f64 / 10.0,
            values_total = updates,
            mqtt_confirmed = stats.mqtt.confirmed.load(Ordering::Relaxed),
            questdb_confirmed = stats.questdb.confirmed.load(Ordering::Relaxed),
            conversion_errors = stats.conversion_errors.load(Ordering::Relaxed),
            outbox_depth = stats
                .outbox
                .as_ref()
                .map_or(0, |o| o.stats.depth.load(Ordering::Relaxed)),
            outbox_dropped = stats
                .outbox
                .as_ref()
                .map_or(0, |o| o.stats.dropped.load(Ordering::Relaxed)),
            "flowing"
        );
        last = updates;
    }
}
