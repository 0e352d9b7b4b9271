//! Wiring: sources → dispatcher (mapping + AAS store) → sinks, plus the API.
//!
//! Every arrow is a bounded channel: when a sink cannot keep up, its channel fills, the
//! dispatcher waits, the source channel fills, and the OPC UA client stops taking publish
//! responses (the server queues). Memory stays bounded; nothing is dropped silently.
//!
//! Shutdown runs front to back: the token stops the sources, their channel closes, the
//! dispatcher drains it and closes the sink channels, and each sink flushes what it holds.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::aas::Environment;
use crate::api::{self, SharedEnvironment};
use crate::config::{Config, ConfigErrors};
use crate::mapping::Router;
use crate::model::{ReadingBatch, UpdateBatch};
use crate::sinks::{self, SinkStats};
use crate::sources::opcua::{self, SourceStats};

/// Counters of a running gateway.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Readings received from all sources.
    pub readings: AtomicU64,
    /// Readings turned into submodel updates.
    pub updates: AtomicU64,
    /// Readings whose value did not fit the mapped element (logged once per rule).
    pub conversion_errors: AtomicU64,
    pub sources: Vec<Arc<SourceStats>>,
    pub mqtt: Arc<SinkStats>,
    pub questdb: Arc<SinkStats>,
}

/// Checks a config completely: its own settings, the AAS environments and every mapping rule.
/// Returns all problems found, not just the first.
pub fn check(cfg: &Config) -> Result<(Environment, Router), ConfigErrors> {
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
    let env = match Environment::load_files(&files) {
        Ok(env) => env,
        Err(e) => {
            errors.push("aas.environments", e);
            return Err(errors);
        }
    };
    match Router::build(cfg, &env) {
        Ok(router) if errors.is_empty() => Ok((env, router)),
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

/// A started gateway.
pub struct Gateway {
    /// Where the AAS API listens (`None` when disabled).
    pub api_addr: Option<SocketAddr>,
    pub stats: Arc<PipelineStats>,
    pub environment: SharedEnvironment,
    shutdown: CancellationToken,
    sources: JoinSet<(String, anyhow::Result<()>)>,
    tasks: JoinSet<()>,
    questdb_thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Checks the config, loads the AAS, binds the API and starts every stage.
    pub async fn start(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<Gateway> {
        let (env, router) = check(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        let router = Arc::new(router);
        let environment: SharedEnvironment = Arc::new(RwLock::new(env));
        let capacity = cfg.gateway.channel_capacity;
        let mut tasks = JoinSet::new();

        let api_addr = if cfg.api.enabled {
            let listener = tokio::net::TcpListener::bind(&cfg.api.listen)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("api.listen: cannot listen on {}: {e}", cfg.api.listen)
                })?;
            let addr = listener.local_addr()?;
            let app = api::router(environment.clone());
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                {
                    error!(error = %e, "AAS API server failed");
                }
            });
            info!(url = %format!("http://{addr}/api/v3.0"), "AAS API listening");
            Some(addr)
        } else {
            None
        };

        let mut stats = PipelineStats::default();
        let mut sink_channels = Vec::new();
        if cfg.mqtt.enabled {
            let (tx, rx) = mpsc::channel(capacity);
            sink_channels.push(tx);
            tasks.spawn(sinks::mqtt::run(
                cfg.mqtt.clone(),
                cfg.gateway.name.clone(),
                rx,
                stats.mqtt.clone(),
                shutdown.clone(),
            ));
        } else {
            info!("MQTT sink is off (mqtt.enabled = false)");
        }
        let questdb_thread = if cfg.questdb.enabled {
            let (tx, rx) = mpsc::channel(capacity);
            sink_channels.push(tx);
            Some(sinks::questdb::spawn(
                cfg.questdb.clone(),
                rx,
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
        for (i, src) in cfg.opcua.iter().enumerate() {
            let source_stats = Arc::new(SourceStats::default());
            stats.sources.push(source_stats.clone());
            let nodes = router.nodes_of_source(i, &cfg);
            if nodes.is_empty() {
                warn!(source = %src.name, "no mapping rule uses this source; not connecting");
                continue;
            }
            let name = src.name.clone();
            let pki = cfg.resolve(&src.pki_dir);
            let fut = opcua::run_source(
                src.clone(),
                pki,
                nodes,
                reading_tx.clone(),
                source_stats,
                shutdown.clone(),
            );
            sources.spawn(async move { (name, fut.await) });
        }
        drop(reading_tx);

        let stats = Arc::new(stats);
        tasks.spawn(dispatch(
            reading_rx,
            router,
            environment.clone(),
            sink_channels,
            stats.clone(),
        ));
        tasks.spawn(report(stats.clone(), shutdown.clone()));

        Ok(Gateway {
            api_addr,
            stats,
            environment,
            shutdown,
            sources,
            tasks,
            questdb_thread,
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
        if total > 0 && failures.len() == total {
            anyhow::bail!("every OPC UA source failed:\n  {}", failures.join("\n  "));
        }
        Ok(())
    }
}

/// Maps readings to updates, applies them to the AAS store and hands them to every sink.
async fn dispatch(
    mut rx: mpsc::Receiver<ReadingBatch>,
    router: Arc<Router>,
    env: SharedEnvironment,
    sinks: Vec<mpsc::Sender<UpdateBatch>>,
    stats: Arc<PipelineStats>,
) {
    let mut reported = HashSet::new();
    while let Some(readings) = rx.recv().await {
        stats
            .readings
            .fetch_add(readings.len() as u64, Ordering::Relaxed);
        let mut routed = Vec::with_capacity(readings.len());
        for reading in readings {
            let rule = reading.rule;
            match router.route(reading) {
                Ok(pair) => routed.push(pair),
                Err(e) => {
                    stats.conversion_errors.fetch_add(1, Ordering::Relaxed);
                    if reported.insert(rule) {
                        warn!("value not mapped (logged once per rule, counted always): {e}");
                    }
                }
            }
        }
        {
            let mut env = env.write().expect("environment lock");
            for (route, update) in &routed {
                env.apply(&route.location, update);
            }
        }
        let batch: UpdateBatch = routed.into_iter().map(|(_, u)| u).collect();
        stats
            .updates
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for tx in &sinks {
            if tx.send(batch.clone()).await.is_err() {
                error!("a sink stopped unexpectedly; its values are not delivered");
            }
        }
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
        let updates = stats.updates.load(Ordering::Relaxed);
        info!(
            values_per_s = (updates - last) as f64 / 10.0,
            values_total = updates,
            mqtt_confirmed = stats.mqtt.confirmed.load(Ordering::Relaxed),
            questdb_confirmed = stats.questdb.confirmed.load(Ordering::Relaxed),
            conversion_errors = stats.conversion_errors.load(Ordering::Relaxed),
            "flowing"
        );
        last = updates;
    }
}
