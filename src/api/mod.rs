//! AAS Part 2 HTTP API (IDTA-01002 v3), read profile, under `/api/v3.0`.
//!
//! Identifiers in paths are base64url (no padding); idShortPaths are dotted with `[n]` indices.
//! Errors are Part 2 `Result` bodies (`{"messages": [...]}`) with the matching HTTP status.
//! Lists use cursor pagination: `?limit=N&cursor=C` → `{"paging_metadata": {"cursor": ...}, "result": [...]}`.

use std::sync::{Arc, RwLock};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::aas::{self, Environment};

/// Shared state of the API: the live environment.
pub type SharedEnvironment = Arc<RwLock<Environment>>;

/// Builds the router (without binding), so tests can serve it on any listener.
pub fn router(env: SharedEnvironment) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/api/v3.0/description", get(description))
        .route("/api/v3.0/shells", get(list_shells))
        .route("/api/v3.0/shells/{aas_id}", get(get_shell))
        .route(
            "/api/v3.0/shells/{aas_id}/submodel-refs",
            get(get_submodel_refs),
        )
        .route("/api/v3.0/submodels", get(list_submodels))
        .route("/api/v3.0/submodels/{sm_id}", get(get_submodel))
        .route(
            "/api/v3.0/submodels/{sm_id}/$value",
            get(get_submodel_value),
        )
        .route(
            "/api/v3.0/submodels/{sm_id}/submodel-elements",
            get(list_elements),
        )
        .route(
            "/api/v3.0/submodels/{sm_id}/submodel-elements/{*path}",
            get(get_element),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such API route") })
        .layer(tower_http::cors::CorsLayer::permissive())
        .with_state(env)
}

/// A Part 2 error: status plus a `Result` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    text: String,
}

impl ApiError {
    pub fn new(status: StatusCode, text: impl Into<String>) -> Self {
        ApiError {
            status,
            text: text.into(),
        }
    }
    fn not_found(text: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, text)
    }
    fn bad_request(text: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, text)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "messages": [{
                "messageType": "Error",
                "text": self.text,
                "code": self.status.as_u16().to_string(),
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            }]
        });
        (self.status, Json(body)).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// Decodes a base64url identifier from a path segment (padding tolerated).
pub fn decode_id(encoded: &str) -> Result<String, ApiError> {
    let trimmed = encoded.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|_| {
            ApiError::bad_request(format!("{encoded:?} is not a base64url-encoded identifier"))
        })?;
    String::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request(format!("{encoded:?} does not decode to UTF-8 text")))
}

/// Encodes an identifier for use in a path.
pub fn encode_id(id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<usize>,
    cursor: Option<String>,
    #[serde(rename = "idShort")]
    id_short: Option<String>,
}

/// Cursor pagination over a full list (the cursor is the base64url offset of the next item);
/// `paging_metadata.cursor` is present only when more items remain.
fn page_of(items: Vec<Value>, params: &ListParams) -> ApiResult {
    let start = match &params.cursor {
        None => 0,
        Some(c) => decode_id(c)?.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!("{c:?} is not a cursor this server issued"))
        })?,
    };
    let limit = match params.limit {
        Some(0) => return Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) => n,
        None => usize::MAX,
    };
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(start).take(limit).collect();
    let next = start.saturating_add(page.len());
    let paging = if next < total {
        json!({"cursor": encode_id(&next.to_string())})
    } else {
        json!({})
    };
    Ok(Json(json!({"paging_metadata": paging, "result": page})))
}

fn matches_id_short(v: &Value, wanted: &Option<String>) -> bool {
    wanted
        .as_deref()
        .is_none_or(|w| v.get("idShort").and_then(Value::as_str) == Some(w))
}

async fn description() -> Json<Value> {
    Json(json!({
        "profiles": [
            "https://admin-shell.io/aas/API/3/0/AssetAdministrationShellRepositoryServiceSpecification/SSP-002",
            "https://admin-shell.io/aas/API/3/0/SubmodelRepositoryServiceSpecification/SSP-002"
        ]
    }))
}

async fn list_shells(
    State(env): State<SharedEnvironment>,
    Query(p): Query<ListParams>,
) -> ApiResult {
    let items: Vec<Value> = {
        let env = env.read().expect("environment lock");
        env.shells
            .iter()
            .filter(|s| matches_id_short(s, &p.id_short))
            .cloned()
            .collect()
    };
    page_of(items, &p)
}

async fn get_shell(State(env): State<SharedEnvironment>, Path(aas_id): Path<String>) -> ApiResult {
    let id = decode_id(&aas_id)?;
    let env = env.read().expect("environment lock");
    env.shell(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no shell with id {id:?}")))
}

async fn get_submodel_refs(
    State(env): State<SharedEnvironment>,
    Path(aas_id): Path<String>,
    Query(p): Query<ListParams>,
) -> ApiResult {
    let id = decode_id(&aas_id)?;
    let refs: Vec<Value> = {
        let env = env.read().expect("environment lock");
        let shell = env
            .shell(&id)
            .ok_or_else(|| ApiError::not_found(format!("no shell with id {id:?}")))?;
        shell
            .get("submodels")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    page_of(refs, &p)
}

async fn list_submodels(
    State(env): State<SharedEnvironment>,
    Query(p): Query<ListParams>,
) -> ApiResult {
    let items: Vec<Value> = {
        let env = env.read().expect("environment lock");
        env.submodels
            .iter()
            .filter(|s| matches_id_short(s, &p.id_short))
            .cloned()
            .collect()
    };
    page_of(items, &p)
}

fn with_submodel<T>(
    env: &SharedEnvironment,
    encoded: &str,
    f: impl FnOnce(&Value) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let id = decode_id(encoded)?;
    let env = env.read().expect("environment lock");
    let sm = env
        .submodel(&id)
        .ok_or_else(|| ApiError::not_found(format!("no submodel with id {id:?}")))?;
    f(sm)
}

async fn get_submodel(
    State(env): State<SharedEnvironment>,
    Path(sm_id): Path<String>,
) -> ApiResult {
    with_submodel(&env, &sm_id, |sm| Ok(Json(sm.clone())))
}

async fn get_submodel_value(
    State(env): State<SharedEnvironment>,
    Path(sm_id): Path<String>,
) -> ApiResult {
    with_submodel(&env, &sm_id, |sm| Ok(Json(aas::submodel_value_only(sm))))
}

async fn list_elements(
    State(env): State<SharedEnvironment>,
    Path(sm_id): Path<String>,
    Query(p): Query<ListParams>,
) -> ApiResult {
    let items = with_submodel(&env, &sm_id, |sm| {
        Ok(sm
            .get("submodelElements")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    })?;
    page_of(items, &p)
}

async fn get_element(
    State(env): State<SharedEnvironment>,
    Path((sm_id, path)): Path<(String, String)>,
) -> ApiResult {
    let (path, value_only) = match path.strip_suffix("/$value") {
        Some(p) => (p.to_string(), true),
        None => (path, false),
    };
    if path.contains('/') {
        return Err(ApiError::bad_request(format!(
            "{path:?}: idShortPaths use '.', not '/'"
        )));
    }
    with_submodel(&env, &sm_id, |sm| {
        let (_, el) = aas::find_element(sm, &path).map_err(ApiError::not_found)?;
        Ok(Json(if value_only {
            aas::value_only(el)
        } else {
            el.clone()
        }))
    })
}
