//! Wiring of the operations features into a running gateway: the audit log, the secured API
//! (gatekeeper + write-back + `/metrics` + `/ready`), HTTPS, and audit records of OPC UA
//! connects. Kept here so that `pipeline` only calls four functions.

#![warn(missing_docs)]

use std::sync::Arc;

use axum::Router;
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::api::gatekeeper::{gate, Gatekeeper};
use crate::api::SharedEnvironment;
use crate::audit::AuditLog;
use crate::config::Config;
use crate::mapping::Router as MappingRouter;
use crate::metrics::Observability;
use crate::security::tls::{PeerAddr, TlsListener};
use crate::security::Authenticator;
use crate::stats::PipelineStats;
use crate::writeback::{SessionState, WriteBack};

/// Opens the audit log (when enabled) and records the start and the loaded config's hash.
/// Also warns (log + audit) when a config with secrets is readable by other users.
pub fn open_audit(cfg: &Config) -> anyhow::Result<Option<Arc<AuditLog>>> {
    let perm_warning = cfg
        .file_path
        .as_deref()
        .and_then(|p| crate::security::check_config_permissions(p, cfg.has_secrets()));
    if !cfg.audit.enabled {
        return Ok(None);
    }
    let dir = cfg.resolve(&cfg.audit.dir);
    let audit = AuditLog::open(&dir, cfg.audit.clone())?;
    audit.record(
        "start",
        json!({"gateway": cfg.gateway.name, "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id()}),
    );
    audit.record(
        "config_loaded",
        json!({
            "file": cfg.file_path.as_ref().map(|p| p.display().to_string()),
            "sha256": cfg.file_sha256,
            "api_tokens": cfg.api.auth.tokens.len(),
            "tls": cfg.api.tls.is_some(),
        }),
    );
    if let Some(w) = perm_warning {
        audit.record("config_permissions", json!({"warning": w}));
    }
    info!(dir = %dir.display(), "audit log open");
    Ok(Some(audit))
}

/// The API router behind the gatekeeper, with write-back (`writeback`, the one the sinks'
/// commands use too), `/metrics` and `/ready` added.
pub fn secured_api(
    cfg: &Config,
    mapping: &Arc<MappingRouter>,
    api: Router,
    env: SharedEnvironment,
    stats: Arc<PipelineStats>,
    audit: Option<Arc<AuditLog>>,
    writeback: Arc<WriteBack>,
) -> anyhow::Result<Router> {
    let auth =
        Authenticator::from_config(&cfg.api.auth, &cfg.base_dir).map_err(|e| anyhow::anyhow!(e))?;
    if !auth.has_tokens() {
        info!("API: no tokens configured ([api.auth]): reads are open, write-back is refused");
    } else if auth.anonymous_read() {
        info!("API: anonymous reads are allowed (api.auth.anonymous_read = true)");
    }
    let tokens_configured = auth.has_tokens();
    let gatekeeper = Gatekeeper::new(
        auth,
        audit.clone(),
        cfg.api.rate_limit_per_s,
        cfg.api.max_body_bytes,
    );
    // Only sources with mapped nodes connect; the others must not hold readiness down.
    let active: Vec<_> = cfg
        .opcua
        .iter()
        .map(|s| s.name.clone())
        .zip(stats.sources.iter().cloned())
        .enumerate()
        .filter(|(i, _)| mapping.monitors_any(*i))
        .map(|(_, s)| s)
        .collect();
    let page = status_page(
        cfg,
        mapping,
        &env,
        &stats,
        &active,
        audit.as_deref(),
        tokens_configured,
    );
    let observability = Observability::new(stats, active, Some(gatekeeper.clone()));
    Ok(writeback
        .layer_onto(api)
        .merge(observability.routes())
        .merge(Arc::new(page).routes())
        .layer(axum::extract::DefaultBodyLimit::max(
            gatekeeper.max_body_bytes(),
        ))
        .layer(axum::middleware::from_fn_with_state(gatekeeper, gate))
        // The page itself is static and holds no data: served without a token, so that it can
        // ask for one. Its data comes from `/status/*`, behind the gatekeeper above.
        .merge(crate::web::assets()))
}

/// The status page's state: sources with their settings, the element index (built once here).
fn status_page(
    cfg: &Config,
    mapping: &Arc<MappingRouter>,
    env: &SharedEnvironment,
    stats: &Arc<PipelineStats>,
    active: &[(String, Arc<crate::sources::SourceStats>)],
    audit: Option<&AuditLog>,
    tokens_configured: bool,
) -> crate::web::StatusPage {
    let sources = cfg
        .opcua
        .iter()
        .zip(&stats.sources)
        .map(|(src, st)| crate::web::SourceInfo {
            name: src.name.clone(),
            endpoint: src.endpoint.clone(),
            security_policy: src.security_policy.clone(),
            security_mode: src.security_mode.clone(),
            active: active.iter().any(|(_, a)| Arc::ptr_eq(a, st)),
            stats: st.clone(),
        })
        .collect();
    // Time Series submodels hold records, not live values: the page leaves them out.
    let elements = {
        let tree = env.read();
        let time_series: std::collections::HashSet<String> = tree
            .submodels
            .iter()
            .filter_map(crate::aas::id_of)
            .filter(|id| {
                tree.submodel(id).is_some_and(|sm| {
                    sm.pointer("/semanticId/keys/0/value")
                        .and_then(|v| v.as_str())
                        == Some(crate::history::TIME_SERIES_SEMANTIC_ID)
                })
            })
            .map(str::to_string)
            .collect();
        crate::web::ElementIndex::build(&tree, &cfg.mapping, mapping, &|id| {
            time_series.contains(id)
        })
    };
    crate::web::StatusPage {
        status: crate::web::StatusSources::new(cfg.gateway.name.clone(), sources, stats.clone()),
        elements,
        env: env.clone(),
        audit_dir: audit.map(|a| a.dir().to_path_buf()),
        tokens_configured,
    }
}

/// Serves the API over HTTP or (with `[api.tls]`) HTTPS until shutdown.
pub fn serve_api(
    cfg: &Config,
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    // The status page's event streams end on shutdown (graceful shutdown waits for them).
    let app = app.layer(axum::Extension(crate::web::Shutdown(shutdown.clone())));
    let service = app.into_make_service_with_connect_info::<PeerAddr>();
    match &cfg.api.tls {
        Some(tls) => {
            let config = tls.server_config(&cfg.base_dir)?;
            let listener = TlsListener::new(listener, config)?;
            tasks.spawn(async move {
                if let Err(e) = axum::serve(listener, service)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
                {
                    error!(error = %e, "AAS API server failed");
                }
            });
            info!(url = %format!("https://{addr}/api/v3.0"), "AAS API listening (TLS)");
        }
        None => {
            tasks.spawn(async move {
                if let Err(e) = axum::serve(listener, service)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
                {
                    error!(error = %e, "AAS API server failed");
                }
            });
            info!(url = %format!("http://{addr}/api/v3.0"), "AAS API listening");
        }
    }
    Ok(())
}

/// Records each source's OPC UA connects and disconnects in the audit log.
pub fn follow_sources(
    cfg: &Config,
    stats: &PipelineStats,
    audit: &Arc<AuditLog>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    for (src, st) in cfg.opcua.iter().zip(&stats.sources) {
        let mut rx = st.session.subscribe();
        let (audit, stop) = (audit.clone(), shutdown.clone());
        let (name, endpoint) = (src.name.clone(), src.endpoint.clone());
        let (policy, mode) = (src.security_policy.clone(), src.security_mode.clone());
        tasks.spawn(async move {
            let mut last = "absent";
            loop {
                let now = match &*rx.borrow_and_update() {
                    // Not an event of its own: "connected" or "lost" follows.
                    SessionState::Connecting(_) => last,
                    SessionState::Absent => "absent",
                    SessionState::Connected(_) => "connected",
                    SessionState::Lost(_) => "lost",
                };
                if now != last {
                    let event = match now {
                        "connected" => "opcua_connected",
                        "lost" => "opcua_connection_lost",
                        _ => "opcua_disconnected",
                    };
                    audit.record(
                        event,
                        json!({"source": name, "endpoint": endpoint, "security_policy": policy, "security_mode": mode}),
                    );
                    last = now;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = rx.changed() => if changed.is_err() { return },
                }
            }
        });
    }
}
