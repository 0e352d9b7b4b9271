//! Wiring: sources → dispatcher (mapping + AAS store) → sinks, plus the API.
//!
//! Sources feed the dispatcher over a bounded channel; the dispatcher writes every batch durably
//! into the outbox (one record per group of waiting batches), which each sink reads at its own
//! pace through its own cursor. A slow or unreachable sink uses its own share of the outbox on
//! disk (`[<sink>.buffer]`), never memory, and never holds the dispatcher, the other sinks or
//! the live values, unless it is configured `when_full = "block"`.
//!
//! The pipeline knows sources and sinks only through their traits; the config's registry
//! ([`Config::build_sources`], [`Config::build_sinks`]) builds them from their sections.
//!
//! Shutdown runs front to back and is bounded in every state: the token stops the sources
//! (abandoned after [`SOURCES_STOP`]), the dispatcher persists what it has (giving up after
//! [`DISPATCH_STOP`] when a `block` sink stays full) and closes the outbox, and each sink
//! delivers what is left within its drain time; whatever is unconfirmed stays in the outbox for
//! the next start. [`Gateway::wait`] returns within [`SHUTDOWN_BOUND`] of the signal.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
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
use crate::model::{ReadingBatch, SubmodelUpdate};
use crate::outbox::{EventHook, Outbox, RecordValues, MAX_RECORD_VALUES};
use crate::sinks::{self, Sink, SinkContext, SinkStats};

pub use crate::stats::PipelineStats;

/// How long stopping sources may take before they are abandoned.
pub const SOURCES_STOP: Duration = Duration::from_secs(5);
/// How long the dispatcher keeps trying to persist after shutdown (a `block` sink that stays
/// full, a failing disk) before it gives up on the values it holds (counted, logged).
pub const DISPATCH_STOP: Duration = Duration::from_secs(5);
/// Upper bound from the shutdown signal to [`Gateway::wait`] returning.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(30);

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
    // Errors of rules and sources from AID + AIMC name the AAS element they came from.
    cfg.finish_check(check_unlocated(cfg).map_err(|e| cfg.relabel_all(e)))
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
    let built = Router::build(&cfg.mapping, &cfg.opcua, &env).and_then(|mut router| {
        router.add_transforms(&cfg.transforms, &cfg.opcua)?;
        Ok(router)
    });
    errors.0.extend(cfg.check_aid_types(&env).0);
    match built {
        Ok(router) if errors.is_empty() => {
            // semantic_id overrides go into the served AAS, so AAS and sinks agree.
            for (rule, route) in cfg.mapping.iter().zip(&router.routes) {
                if let Some(id) = &rule.semantic_id {
                    env.set_semantic_id(&route.location, id);
                }
            }
            let history = History::install(
                &cfg.history,
                &cfg.mapping,
                &cfg.questdb.table_prefix,
                &mut env,
                &router,
            )?
            .map(Arc::new);
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
    cfg.disable_sinks();
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
    sources: JoinSet<(String, Result<(), crate::sources::SourceError>)>,
    tasks: JoinSet<()>,
    sink_tasks: JoinSet<()>,
    audit: Option<Arc<crate::audit::AuditLog>>,
}

impl Gateway {
    /// Checks the config, loads the AAS, binds the API and starts every stage.
    pub async fn start(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<Gateway> {
        let (env, router, history) =
            check_with_history(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        let router = Arc::new(router);
        let environment: SharedEnvironment =
            Arc::new(LiveEnvironment::with_rules(env, router.clone()));
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
        let sinks = cfg.build_sinks()?;
        let sink_names: Vec<String> = sinks.iter().map(|s| s.name().to_string()).collect();
        // Without a sink there is nothing to deliver later: no outbox (and no file lock, so
        // `export --live` works beside a running gateway).
        let outbox = if sinks.is_empty() {
            info!("no sink enabled: values are served by the API only; no outbox");
            None
        } else {
            let specs: Vec<_> = sinks
                .iter()
                .map(|s| sinks::spec(s.as_ref(), &cfg.outbox))
                .collect();
            let hook: Option<EventHook> = audit.clone().map(|a| {
                let hook: EventHook = Arc::new(move |event, details| a.record(event, details));
                hook
            });
            let (dir, ocfg) = (cfg.resolve(&cfg.outbox.dir), cfg.outbox.clone());
            let outbox =
                tokio::task::spawn_blocking(move || Outbox::open(&dir, ocfg, &specs, hook))
                    .await??;
            info!(path = %outbox.path().display(), sinks = ?sink_names, "durable outbox open");
            Some(outbox)
        };
        stats.outbox = outbox.clone();
        let mut sink_tasks = JoinSet::new();
        // Only for sinks that ask (2.4 MB at 100k elements otherwise held for nothing).
        let elements: Arc<[sinks::SinkElement]> = if sinks.iter().any(|s| s.needs_elements()) {
            router
                .routes
                .iter()
                .map(|r| sinks::SinkElement {
                    target: r.target,
                    list: r.location.kind == crate::aas::ElementKind::PropertyList,
                    source: r.source as usize,
                })
                .collect()
        } else {
            Arc::new([])
        };
        // Source health for the sinks; fed from each source's session once sources exist.
        let (sources_up_tx, sources_up) = tokio::sync::watch::channel(vec![true; cfg.opcua.len()]);
        let writer: Arc<std::sync::OnceLock<Arc<dyn sinks::ElementWriter>>> = Default::default();
        for sink in sinks {
            let sink_stats = Arc::new(SinkStats::default());
            stats
                .sinks
                .push((sink.name().to_string(), sink_stats.clone()));
            let ctx = SinkContext {
                outbox: outbox.clone().expect("an outbox exists when a sink does"),
                stats: sink_stats,
                shutdown: shutdown.clone(),
                gateway_name: cfg.gateway.name.clone(),
                elements: elements.clone(),
                sources_up: sources_up.clone(),
                writer: writer.clone(),
            };
            sink_tasks.spawn(Sink::start(sink, ctx)?);
        }

        let (reading_tx, reading_rx) = mpsc::channel::<ReadingBatch>(capacity);
        let mut sources = JoinSet::new();
        // Every configured source of every kind (see the config's registry); their stats stay
        // in config order, also for sources no rule uses (those are not started).
        for source in cfg.build_sources(&router)? {
            stats.sources.push(source.stats());
            if source.is_idle() {
                continue;
            }
            let name = source.name().to_string();
            let fut = source.run(reading_tx.clone(), shutdown.clone());
            sources.spawn(async move { (name, fut.await) });
        }
        drop(reading_tx);
        follow_source_health(&stats.sources, sources_up_tx, &shutdown, &mut tasks);
        // Sinks that take commands write through the same checks and audit as the API.
        // One write-back for the sinks' commands and the API (it indexes every rule).
        let writeback = crate::writeback::WriteBack::new(
            &cfg.mapping,
            router.clone(),
            cfg.opcua
                .iter()
                .map(|s| s.name.clone())
                .zip(stats.sources.iter().cloned())
                .collect(),
            environment.clone(),
            audit.clone(),
        );
        let _ = writer.set(writeback.clone() as Arc<dyn sinks::ElementWriter>);

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
                audit.clone(),
                writeback,
            )?;
            // The status page's trend lines read the history store through the same extension.
            let app = match &history {
                Some(h) => app.layer(axum::Extension(h.clone())),
                None => app,
            };
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
            shutdown.clone(),
        ));
        tasks.spawn(report(stats.clone(), shutdown.clone()));

        Ok(Gateway {
            api_addr,
            stats,
            environment,
            history,
            shutdown,
            sources,
            tasks,
            sink_tasks,
            audit,
        })
    }

    /// Runs until shutdown (or until every source failed), then drains the pipeline.
    /// Returns an error when every source ended with an unrecoverable error. Once shutdown was
    /// requested it returns within [`SHUTDOWN_BOUND`], whatever state the peers are in.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let total = self.sources.len();
        let mut failures = Vec::new();
        let shutdown = self.shutdown.clone();
        let sources_stop = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SOURCES_STOP).await;
        };
        tokio::pin!(sources_stop);
        loop {
            let joined = tokio::select! {
                j = self.sources.join_next() => match j {
                    Some(j) => j,
                    None => break,
                },
                _ = &mut sources_stop => {
                    warn!(sources = self.sources.len(), "OPC UA sources did not stop within {SOURCES_STOP:?}; abandoning them");
                    self.sources.abort_all();
                    break;
                }
            };
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
        let stopping = tokio::time::Instant::now();
        self.shutdown.cancel();
        let tasks = &mut self.tasks;
        let sink_tasks = &mut self.sink_tasks;
        let drained = tokio::time::timeout(SHUTDOWN_BOUND.saturating_sub(SOURCES_STOP), async {
            while tasks.join_next().await.is_some() {}
            while sink_tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                after_s = stopping.elapsed().as_secs(),
                "stopping took too long; leaving the rest (unconfirmed values stay in the outbox)"
            );
            self.tasks.abort_all();
            self.sink_tasks.abort_all();
        }
        let unpersisted = self.stats.unpersisted.load(Ordering::Relaxed);
        if unpersisted > 0 {
            error!(values = unpersisted, "values received during shutdown could not be persisted (a `block` sink stayed full); they are lost");
        }
        if let Some(audit) = self.audit.take() {
            audit.record(
                "stop",
                serde_json::json!({"failed_sources": failures.len(), "unpersisted": unpersisted}),
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

/// Values mapped before they are handed to the sinks as one record: a large group (a publish
/// response of 10k values) starts leaving while the rest of it is still being mapped, and the
/// whole group is still written with one fsync (see [`Outbox::publish`]).
pub const CHUNK_VALUES: usize = 2_000;

/// Maps readings to updates, applies them to the AAS store and persists them in the outbox,
/// from which every sink reads. Every batch waiting in the channel is taken at once and
/// persisted with one fsync (group commit), handed to the sinks a chunk at a time as it is
/// mapped ([`CHUNK_VALUES`]). Closes the outbox when the sources are done, or
/// [`DISPATCH_STOP`] after shutdown when it cannot persist any more.
///
/// A group's write runs while the next group is mapped and published: a burst that arrives
/// during a slow fsync (tens of milliseconds were seen) reaches the sinks at once instead of
/// after it. The next write waits for the one under way (one at a time, in order), so at most
/// two groups are unwritten, and a sink's confirmation counts only once its record is on disk
/// (see [`Outbox::publish`]).
async fn dispatch(
    mut rx: mpsc::Receiver<ReadingBatch>,
    router: Arc<Router>,
    env: SharedEnvironment,
    outbox: Option<Arc<Outbox>>,
    stats: Arc<PipelineStats>,
    history: Option<Arc<History>>,
    shutdown: CancellationToken,
) {
    let mut mapper = Mapper {
        routes: crate::mapping::RouteTable::new(&router),
        stats: &stats,
        seen: vec![false; router.routes.len()],
        reported: HashSet::new(),
        routed: Routed::default(),
    };
    let mut transforms = router.transform_runtime();
    let give_up = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DISPATCH_STOP).await;
    };
    tokio::pin!(give_up);
    let mut persist = Persist {
        outbox: outbox.clone(),
        stats: &stats,
        writing: None,
        unwritten: 0,
    };
    let mut group: Vec<ReadingBatch> = Vec::new();
    loop {
        let first = tokio::select! {
            // A write that ends while nothing arrives is checked at once (a failed one is
            // retried now, not when the next values come).
            done = persist.written(), if persist.writing.is_some() => {
                if !persist.check(done, &mut give_up).await {
                    return persist.give_up(0);
                }
                continue;
            }
            first = rx.recv() => match first {
                Some(first) => first,
                None => break,
            },
        };
        let mut waiting = first.len();
        // The group's arrival is its earliest batch's: the added latency is not understated.
        let mut received = first.received;
        group.push(first);
        while waiting < MAX_RECORD_VALUES {
            match rx.try_recv() {
                Ok(more) => {
                    waiting += more.len();
                    received = received.min(more.received);
                    group.push(more);
                }
                Err(_) => break,
            }
        }
        stats.readings.fetch_add(waiting as u64, Ordering::Relaxed);
        let mut hand_off = HandOff {
            env: &env,
            history: history.as_deref(),
            outbox: outbox.as_ref(),
            stats: &stats,
            received,
            published: 0,
        };
        // Values of transformation inputs become the values of its outputs, which then take
        // the same path as every other reading (no extra work without transformations).
        let mut outputs = Vec::new();
        let mut stopped = false;
        for reading in group.drain(..).flatten() {
            if transforms.is_input(reading.rule) {
                match transforms.feed(&reading) {
                    Some(more) => outputs.extend(more),
                    None => {
                        stats.conversion_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                continue;
            }
            mapper.map(reading);
            if mapper.routed.len() >= CHUNK_VALUES && !stopped {
                stopped = !hand_off.publish(&mut mapper.routed, &mut give_up).await;
            }
        }
        for reading in outputs {
            mapper.map(reading);
        }
        if !stopped {
            stopped = !hand_off.publish(&mut mapper.routed, &mut give_up).await;
        }
        if outbox.is_none() {
            continue;
        }
        persist.unwritten += hand_off.published;
        if stopped {
            // Out of time while a `block` sink had no room: what was mapped is not persisted.
            return persist.give_up(mapper.routed.len() as u64);
        }
        // One write at a time: the one under way (the group before) ends first; a failing
        // disk is retried, never skipped, until shutdown ran out of time.
        if !persist.finish(&mut give_up).await {
            return persist.give_up(0);
        }
        persist.start();
    }
    if !persist.finish(&mut give_up).await {
        return persist.give_up(0);
    }
    if let Some(outbox) = outbox {
        outbox.close();
    }
}

/// The dispatcher's writes of the outbox: one under way at a time, run by a task of its own
/// so that the dispatcher maps and publishes the next group meanwhile.
struct Persist<'a> {
    outbox: Option<Arc<Outbox>>,
    stats: &'a PipelineStats,
    /// The write under way.
    writing: Option<tokio::task::JoinHandle<Result<u64, crate::outbox::OutboxError>>>,
    /// Values published to the outbox and not yet written (the group being written and the
    /// one published since): what shutdown loses when it runs out of time.
    unwritten: u64,
}

impl Persist<'_> {
    /// Starts writing every record published so far.
    fn start(&mut self) {
        if let Some(outbox) = self.outbox.clone() {
            self.writing = Some(tokio::spawn(async move { outbox.commit().await }));
        }
    }

    /// The end of the write under way (pending forever without one: for a `select!` that
    /// polls it only `if self.writing.is_some()`).
    async fn written(&mut self) -> Result<u64, crate::outbox::OutboxError> {
        match &mut self.writing {
            Some(task) => {
                let done = task
                    .await
                    .map_err(|e| crate::outbox::OutboxError::Task(e.to_string()))
                    .and_then(|r| r);
                self.writing = None;
                done
            }
            None => std::future::pending().await,
        }
    }

    /// Waits for the write under way, if any, and [`Self::check`]s it. False when shutdown
    /// ran out of time first.
    async fn finish(
        &mut self,
        give_up: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> bool {
        if self.writing.is_none() {
            return true;
        }
        let done = tokio::select! {
            done = self.written() => done,
            _ = give_up.as_mut() => return false,
        };
        self.check(done, give_up).await
    }

    /// Counts a finished write; after a failure writes again (with backoff) until it
    /// succeeds. False when shutdown ran out of time first.
    async fn check(
        &mut self,
        mut done: Result<u64, crate::outbox::OutboxError>,
        give_up: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> bool {
        let Some(outbox) = self.outbox.clone() else {
            return true;
        };
        let mut backoff = crate::core::Backoff::new();
        loop {
            let e = match done {
                Ok(values) => {
                    self.unwritten = self.unwritten.saturating_sub(values);
                    return true;
                }
                Err(e) => e,
            };
            let wait = backoff.next_delay();
            error!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot persist values in the outbox; retrying");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = give_up.as_mut() => return false,
            }
            done = tokio::select! {
                r = outbox.commit() => r,
                _ = give_up.as_mut() => return false,
            };
        }
    }

    /// Shutdown ran out of time: counts what was not written (and `unpublished` more) as
    /// lost, and closes the outbox.
    fn give_up(&mut self, unpublished: u64) {
        // A write still under way is left to end as it may; its values count as not
        // persisted (should they reach the file after all, they are sent after the next
        // start), as they did when shutdown gave up during a write before.
        drop(self.writing.take());
        self.stats
            .unpersisted
            .fetch_add(self.unwritten + unpublished, Ordering::Relaxed);
        if let Some(outbox) = &self.outbox {
            outbox.close();
        }
    }
}

/// Readings → updates, through the router; counts the rules that produced a value and the
/// readings that could not be mapped (logged once per rule).
struct Mapper<'a> {
    routes: crate::mapping::RouteTable<'a>,
    stats: &'a PipelineStats,
    seen: Vec<bool>,
    reported: HashSet<u32>,
    /// Mapped and not yet handed on.
    routed: Routed,
}

/// Mapped updates and their rules, side by side: the updates become the outbox record as they
/// are (moved, not copied out of pairs), the rules are only for the live store.
#[derive(Default)]
struct Routed {
    rules: Vec<u32>,
    updates: Vec<SubmodelUpdate>,
}

impl Routed {
    fn len(&self) -> usize {
        self.updates.len()
    }

    fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }
}

impl<'a> Mapper<'a> {
    fn map(&mut self, reading: crate::core::Reading) {
        let rule = reading.rule;
        match self.routes.route(reading) {
            Ok(update) => {
                if let Some(first @ false) = self.seen.get_mut(rule as usize) {
                    *first = true;
                    self.stats.rules_with_value.fetch_add(1, Ordering::Relaxed);
                }
                self.routed.rules.push(rule);
                self.routed.updates.push(update);
            }
            Err(e) => {
                self.stats.conversion_errors.fetch_add(1, Ordering::Relaxed);
                if self.reported.insert(rule) {
                    warn!("value not mapped (logged once per rule, counted always): {e}");
                }
            }
        }
    }
}

/// Where mapped updates go: the live AAS, the history and the outbox.
struct HandOff<'a> {
    env: &'a SharedEnvironment,
    history: Option<&'a History>,
    outbox: Option<&'a Arc<Outbox>>,
    stats: &'a PipelineStats,
    /// When the group's earliest readings reached the gateway.
    received: std::time::Instant,
    /// Values of the group published to the outbox (not on disk before the group's commit).
    published: u64,
}

impl HandOff<'_> {
    /// Applies `routed` to the live AAS and the history and publishes it to the sinks as one
    /// record (written by the next commit), leaving `routed` empty. False when shutdown ran
    /// out of time while a `block` sink had no room (nothing was published then).
    async fn publish(
        &mut self,
        routed: &mut Routed,
        give_up: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> bool {
        if routed.is_empty() {
            return true;
        }
        // Parked per element; written into the AAS tree when the API reads it.
        self.env.record_with_status(
            routed
                .rules
                .iter()
                .zip(&routed.updates)
                .map(|(&rule, update)| {
                    (rule, &update.value, update.status, update.source_ts_nanos)
                }),
        );
        if let Some(h) = self.history {
            h.record(&routed.updates);
        }
        routed.rules.clear();
        let mut batch = std::mem::replace(&mut routed.updates, Vec::with_capacity(CHUNK_VALUES));
        // A record is kept for a while (the sinks' recent window): a group's last, short chunk
        // must not keep a whole chunk's capacity. A full chunk has none to spare (no copy).
        batch.shrink_to_fit();
        self.stats
            .updates
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let Some(outbox) = self.outbox else {
            return true;
        };
        // Shared with the sinks as they are (no copy, no decode for a sink that keeps up).
        let values = Arc::new(RecordValues::new(batch, self.received));
        tokio::select! {
            _ = outbox.publish(&values) => {
                self.published += values.values().len() as u64;
                true
            }
            _ = give_up.as_mut() => {
                self.stats
                    .unpersisted
                    .fetch_add(values.values().len() as u64, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Keeps `up[i]` = "source `i` is not known to be lost": false while its session is lost, or
/// once it ended after having been connected. A source still connecting for the first time
/// counts as up (nothing it sent can be stale yet).
fn follow_source_health(
    sources: &[Arc<crate::sources::SourceStats>],
    up: tokio::sync::watch::Sender<Vec<bool>>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    use crate::writeback::SessionState;
    for (i, st) in sources.iter().enumerate() {
        let mut rx = st.session.subscribe();
        let (up, stop) = (up.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut was_connected = false;
            loop {
                let now = match &*rx.borrow_and_update() {
                    SessionState::Connected(_) => {
                        was_connected = true;
                        true
                    }
                    SessionState::Lost(_) => false,
                    SessionState::Absent => !was_connected,
                    SessionState::Connecting(_) => true,
                };
                up.send_if_modified(|v| match v.get_mut(i) {
                    Some(x) if *x != now => {
                        *x = now;
                        true
                    }
                    _ => false,
                });
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = rx.changed() => if changed.is_err() { return },
                }
            }
        });
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
        let confirmed: Vec<String> = stats
            .sinks
            .iter()
            .map(|(name, st)| format!("{name}={}", st.confirmed.load(Ordering::Relaxed)))
            .collect();
        info!(
            values_per_s = (updates - last) as f64 / 10.0,
            values_total = updates,
            confirmed = %confirmed.join(","),
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
