//! The status page: what operators and commissioning engineers look at instead of JSON.
//!
//! `GET /` serves one HTML page with its script and style sheet; everything else it shows comes
//! from four small JSON endpoints under `/status/` that sit behind the API's gatekeeper like
//! every API route, so the page honours the API's tokens and roles:
//!
//! | endpoint | role | what |
//! |---|---|---|
//! | `GET /status/summary` | reader | gateway counters, each source and sink, the caller's role |
//! | `GET /status/events` | reader | the same summary as server-sent events, one `status` event a second |
//! | `GET /status/elements?q=&offset=&limit=` | reader | one page of elements with live value, unit, quality, timestamp, `writable` |
//! | `GET /status/audit?lines=` | admin | the tail of the audit log and `audit verify`'s verdict |
//! | `GET /status/trend?submodel=&path=` | reader | recent values of a history variable (the InternalSegment's store) |
//!
//! Writes go through the existing write-back (`PATCH .../submodel-elements/{path}/$value`),
//! so the page adds no write path of its own.
//!
//! Why hand-written vanilla JavaScript and CSS, embedded with `include_str!`: factory networks
//! are offline (no CDN), an edge box should not need a Node tool chain to build the gateway,
//! and CI should not either; a page of a few hundred lines with no framework is small enough to
//! read and loads fast on a 2-core box. The assets are static and reveal nothing, so they are
//! served without a token (the page asks for one when the JSON endpoints answer 401).
//!
//! Live updates: `EventSource` cannot send an `Authorization` header, so the page reads the
//! SSE stream with `fetch()` and a stream reader (bearer token in the header, never in the
//! URL, where it would end up in logs); when streaming is not possible it polls
//! `/status/summary` every 2 s.
//!
//! Scale: the element list is searched and paged on the server (100 rows a page by default,
//! at most 500), so a browser never holds 100k rows; the index of elements is built once at
//! start ([`elements::ElementIndex`]).

#![warn(missing_docs)]

pub mod elements;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::api::{ApiError, SharedEnvironment};
use crate::security::{Principal, Role};

pub use elements::ElementIndex;
pub use status::{SourceInfo, StatusSources};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The gateway's stop signal, given to the handlers as a request extension: an event stream
/// never ends by itself, and the server's graceful shutdown waits for every open connection,
/// so each stream ends when this is cancelled.
#[derive(Clone, Debug)]
pub struct Shutdown(pub tokio_util::sync::CancellationToken);

/// How often the event stream sends the summary.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// Everything the page's endpoints read.
pub struct StatusPage {
    /// Sources, sinks and counters.
    pub status: StatusSources,
    /// The elements, for search and paging.
    pub elements: ElementIndex,
    /// The live environment (values).
    pub env: SharedEnvironment,
    /// The audit log's folder, when the audit log is on.
    pub audit_dir: Option<PathBuf>,
    /// True when API tokens are configured (the page then offers a login).
    pub tokens_configured: bool,
}

impl StatusPage {
    /// The JSON endpoints (to be placed behind the gatekeeper, like the API).
    pub fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route("/status/summary", get(summary))
            .route("/status/events", get(events))
            .route("/status/elements", get(elements_page))
            .route("/status/audit", get(audit))
            .route("/status/trend", get(trend))
            .with_state(self)
    }
}

/// The page and its assets: static, no data, served without a token (merge them outside the
/// gatekeeper).
pub fn assets() -> Router {
    fn asset(body: &'static str, mime: &'static str) -> Response {
        (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response()
    }
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }),
        )
        // Outside the gatekeeper, but with the API's one error format (e.g. 405 for `POST /`).
        .layer(axum::middleware::map_response(
            crate::api::gatekeeper::as_part2_error,
        ))
}

fn role_of(principal: &Option<Extension<Principal>>) -> Option<Role> {
    principal.as_ref().and_then(|p| p.0.role)
}

fn summary_json(page: &StatusPage, principal: &Option<Extension<Principal>>) -> serde_json::Value {
    let mut s = page.status.summary();
    s["you"] = json!({
        "name": principal.as_ref().map(|p| p.0.name.clone()),
        "role": role_of(principal).map(|r| r.as_str()),
        "tokensConfigured": page.tokens_configured,
        "auditAvailable": page.audit_dir.is_some(),
    });
    s
}

async fn summary(
    State(page): State<Arc<StatusPage>>,
    principal: Option<Extension<Principal>>,
) -> Json<serde_json::Value> {
    Json(summary_json(&page, &principal))
}

async fn events(
    State(page): State<Arc<StatusPage>>,
    principal: Option<Extension<Principal>>,
    shutdown: Option<Extension<Shutdown>>,
) -> impl IntoResponse {
    let stop = shutdown.map(|s| s.0 .0).unwrap_or_default();
    let stream = futures::stream::unfold(
        (page, principal, None::<tokio::time::Interval>),
        move |(page, principal, interval)| {
            let stop = stop.clone();
            async move {
                let mut interval = match interval {
                    Some(i) => i,
                    None => {
                        let mut i = tokio::time::interval(EVENT_INTERVAL);
                        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        i
                    }
                };
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stop.cancelled() => return None,
                }
                let body = summary_json(&page, &principal).to_string();
                let event = Event::default().event("status").data(body);
                Some((
                    Ok::<_, std::convert::Infallible>(event),
                    (page, principal, Some(interval)),
                ))
            }
        },
    );
    // Proxies that buffer would hold the stream back; this asks nginx not to.
    (
        [("x-accel-buffering", "no")],
        Sse::new(stream).keep_alive(KeepAlive::default()),
    )
}

/// Query of `/status/elements`.
#[derive(Debug, Deserialize)]
struct ElementsQuery {
    /// Case-insensitive words, all of which must occur in shell, submodel or path.
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    limit: Option<usize>,
}

async fn elements_page(
    State(page): State<Arc<StatusPage>>,
    Query(query): Query<ElementsQuery>,
) -> Json<serde_json::Value> {
    let limit = query
        .limit
        .unwrap_or(elements::DEFAULT_PAGE)
        .clamp(1, elements::MAX_PAGE);
    Json(page.elements.page(&page.env, &query.q, query.offset, limit))
}

/// Query of `/status/trend`.
#[derive(Debug, Deserialize)]
struct TrendQuery {
    /// Submodel id (not encoded).
    submodel: String,
    /// idShortPath.
    path: String,
    #[serde(default)]
    max: Option<usize>,
}

/// Most points of one trend line.
const MAX_TREND_POINTS: usize = 1000;

/// Recent values of a history variable: `{unit, points: [[ms since the epoch, number or null,
/// quality]]}`, oldest first. Numbers only (booleans as 0/1); other values are `null`.
async fn trend(
    State(page): State<Arc<StatusPage>>,
    history: Option<Extension<Arc<crate::history::History>>>,
    Query(query): Query<TrendQuery>,
) -> Response {
    let found = page.elements.history_target(&query.submodel, &query.path);
    let (Some(Extension(history)), Some((target, unit))) = (history, found) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "{} of {} is no history variable (mapping rule `history = true`)",
                query.path, query.submodel
            ),
        )
        .into_response();
    };
    let max = query.max.unwrap_or(300).clamp(1, MAX_TREND_POINTS);
    let points: Vec<serde_json::Value> = history
        .recent(target, max)
        .unwrap_or_default()
        .into_iter()
        .map(|(ts, v, status)| {
            use crate::core::TypedValue as T;
            let n = match v {
                T::Float(f) if f.is_finite() => Some(f),
                T::Int(i) => Some(i as f64),
                T::UInt(u) => Some(u as f64),
                T::Bool(b) => Some(b as u8 as f64),
                _ => None,
            };
            json!([
                ts / 1_000_000,
                n,
                crate::core::Quality::from_status(status).as_str()
            ])
        })
        .collect();
    Json(json!({"unit": unit, "points": points})).into_response()
}

/// Query of `/status/audit`.
#[derive(Debug, Deserialize)]
struct AuditQuery {
    #[serde(default)]
    lines: Option<usize>,
}

/// Most audit lines the page asks for at once.
const MAX_AUDIT_LINES: usize = 200;

async fn audit(
    State(page): State<Arc<StatusPage>>,
    principal: Option<Extension<Principal>>,
    Query(query): Query<AuditQuery>,
) -> Response {
    if role_of(&principal) < Some(Role::Admin) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "the audit log is shown to tokens with the admin role only",
        )
        .into_response();
    }
    let Some(dir) = page.audit_dir.clone() else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "the audit log is off ([audit] enabled)",
        )
        .into_response();
    };
    let lines = query.lines.unwrap_or(50).min(MAX_AUDIT_LINES);
    // Reading files and hashing the whole chain is blocking work.
    let result = tokio::task::spawn_blocking(move || audit_view(&dir, lines)).await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The newest `lines` records (newest last) and the verdict of `audit verify`.
fn audit_view(dir: &std::path::Path, lines: usize) -> serde_json::Value {
    // A line being appended while we read looks broken; a real break is still there a moment
    // later.
    let verified = crate::audit::verify(dir).or_else(|_| {
        std::thread::sleep(Duration::from_millis(100));
        crate::audit::verify(dir)
    });
    let verdict = match verified {
        Ok(r) => {
            json!({"ok": true, "files": r.files, "lines": r.lines, "fromGenesis": r.from_genesis})
        }
        Err(e) => {
            json!({"ok": false, "file": e.file.display().to_string(), "line": e.line, "reason": e.reason})
        }
    };
    let mut tail: Vec<serde_json::Value> = Vec::new();
    let files = crate::audit::list_files(dir).unwrap_or_default();
    // Newest file first, until enough lines were collected.
    for (_, _, path) in files.iter().rev() {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut these: Vec<serde_json::Value> = text
            .lines()
            .rev()
            .take(lines - tail.len())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| json!({"raw": l})))
            .collect();
        these.reverse();
        these.append(&mut tail);
        tail = these;
        if tail.len() >= lines {
            break;
        }
    }
    json!({"verify": verdict, "tail": tail})
}
