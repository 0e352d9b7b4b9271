//! AAS Part 2 HTTP API (IDTA-01002 v3.0), read profile SSP-002 of the AAS Repository and the
//! Submodel Repository service specifications, under `/api/v3.0`.
//!
//! - Identifiers in paths are base64url without padding; idShortPaths are dotted with `[n]`
//!   list indices (URL-encoded in the path).
//! - Content modifiers `$metadata`, `$value` (ValueOnly), `$reference`, `$path`; query
//!   parameters `level`, `extent`, `limit`/`cursor` (paged results), filters `idShort`,
//!   `semanticId`, `assetIds`.
//! - Errors are Part 2 `Result` bodies with 400 (malformed id, path or parameter), 404 (unknown
//!   shell, submodel, element or route) or 405 (a write the API does not offer; write-back of `$value` is [`crate::writeback`]).
//!
//! [`routes`] parses the path, [`params`] the query, and [`crate::aas::view`] computes the
//! serialisations; this module only looks objects up and puts the pieces together.
//! [`gatekeeper`] is the middleware in front of every route (authentication, rate limit, roles).

#![warn(missing_docs)]

pub mod error;
pub mod gatekeeper;
pub mod params;
pub mod routes;
pub mod time_range;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::aas::view;
use crate::aas::{self, id_of, Environment, JsonRead};
use crate::history::History;
pub use error::ApiError;
use params::Params;
pub use params::{decode_id, encode_id};
use routes::{Modifier, Route, SubmodelOp};

/// Shared state of the API: the live environment.
pub type SharedEnvironment = Arc<crate::aas::live::LiveEnvironment>;

/// The service profiles this server implements (`GET /description`).
pub const PROFILES: [&str; 2] = [
    "https://admin-shell.io/aas/API/3/0/AssetAdministrationShellRepositoryServiceSpecification/SSP-002",
    "https://admin-shell.io/aas/API/3/0/SubmodelRepositoryServiceSpecification/SSP-002",
];

/// Replaces the port of a `host:port` listen address.
pub fn with_port(listen: &str, port: u16) -> String {
    match listen.rsplit_once(':') {
        Some((host, _)) => format!("{host}:{port}"),
        None => format!("{listen}:{port}"),
    }
}

/// Builds the router (without binding), so tests can serve it on any listener.
pub fn router(env: SharedEnvironment) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        // The URL `run` prints first: opening it shows what is served instead of a 404.
        .route("/api/v3.0", get(index))
        .route("/api/v3.0/", get(index))
        .route("/api/v3.0/{*rest}", any(handle))
        .fallback(|| async {
            ApiError::not_found("no such API route; the API lives under /api/v3.0")
        })
        // Browser dashboards on other origins read the API; writes need a bearer token (never a
        // cookie), so a page on another origin cannot write on a visitor's behalf.
        .layer(tower_http::cors::CorsLayer::permissive())
        .with_state(env)
}

/// `GET /api/v3.0`: the service description (as `/description`) and where to go from here.
async fn index() -> Json<Value> {
    Json(json!({
        "profiles": PROFILES,
        "routes": {
            "description": "/api/v3.0/description",
            "shells": "/api/v3.0/shells",
            "submodels": "/api/v3.0/submodels",
            "valueOnly": "/api/v3.0/submodels/{base64url(submodelId)}/$value",
            "serialization": "/api/v3.0/serialization",
            "writeBack": "PATCH /api/v3.0/submodels/{base64url(submodelId)}/submodel-elements/{idShortPath}/$value (mapping rules with writable = true; bearer token with role writer)",
            "health": "/health",
            "ready": "/ready",
            "metrics": "/metrics"
        }
    }))
}

async fn handle(
    State(env): State<SharedEnvironment>,
    history: Option<axum::Extension<Arc<History>>>,
    method: Method,
    Path(rest): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut resp = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not offered here: values come from OPC UA; only PATCH .../submodel-elements/{{idShortPath}}/$value of a writable mapping rule writes back"),
        )
        .into_response();
        resp.headers_mut().insert(
            header::ALLOW,
            header::HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        return resp;
    }
    let result = routes::parse(&rest).and_then(|route| {
        let params = Params::parse(&pairs)?;
        let env = env.read();
        let history = history.as_ref().map(|h| h.0.as_ref());
        if let Some(page) = time_range::time_range(history, &route, &params, &pairs)? {
            return Ok(Reply::Json(page));
        }
        serve(&env, history, route, &params)
    });
    match result {
        Ok(Reply::Json(v)) => Json(v).into_response(),
        Ok(Reply::Bytes(content_type, bytes)) => {
            ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// What a route answers with.
enum Reply {
    Json(Value),
    Bytes(String, Vec<u8>),
}

fn serve(
    env: &Environment,
    history: Option<&History>,
    route: Route,
    p: &Params,
) -> Result<Reply, ApiError> {
    Ok(Reply::Json(match route {
        Route::Description => json!({ "profiles": PROFILES }),
        Route::Serialization => serialization(env, history, p)?,
        Route::Shells(m) => {
            let shells = env
                .shells
                .iter()
                .filter(|s| matches_id_short(*s, &p.id_short) && matches_asset_ids(s, p));
            let items = match m {
                Modifier::Reference => shells
                    .map(|s| {
                        view::identifiable_reference(
                            "AssetAdministrationShell",
                            id_of(s).unwrap_or(""),
                        )
                    })
                    .collect(),
                _ => shells.cloned().collect(),
            };
            p.page(items)
        }
        Route::Shell(id, m) => {
            let shell = find_shell(env, &id)?;
            match m {
                Modifier::Reference => {
                    view::identifiable_reference("AssetAdministrationShell", &id)
                }
                _ => shell.clone(),
            }
        }
        Route::AssetInformation(id) => find_shell(env, &id)?
            .get("assetInformation")
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("shell {id:?} has no assetInformation")))?,
        Route::Thumbnail(id) => {
            let shell = find_shell(env, &id)?;
            let thumb = shell.pointer("/assetInformation/defaultThumbnail/path");
            return Err(ApiError::not_found(match thumb {
                Some(p) => format!("shell {id:?}: the thumbnail {p} is not stored in this gateway"),
                None => format!("shell {id:?} has no thumbnail"),
            }));
        }
        Route::SubmodelRefs(id) => {
            let refs = find_shell(env, &id)?
                .get("submodels")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            p.page(refs)
        }
        Route::ShellSubmodel(aas_id, sm_id, op) => {
            let shell = find_shell(env, &aas_id)?;
            if !shell_references(shell, &sm_id) {
                return Err(ApiError::not_found(format!(
                    "shell {aas_id:?} does not reference a submodel {sm_id:?}"
                )));
            }
            return submodel_op(env, history, &sm_id, op, p);
        }
        Route::Submodels(m) => {
            let sms = env.submodels.iter().filter(|s| {
                matches_id_short(*s, &p.id_short) && matches_semantic_id(*s, &p.semantic_id)
            });
            let items: Vec<Value> = match m {
                Modifier::Normal => sms
                    .map(|s| view::shape(served(history, s), p.level, p.extent))
                    .collect(),
                // Metadata and references carry no values: the stored skeleton serves them.
                Modifier::Metadata => sms
                    .map(|s| s.to_value_without("submodelElements"))
                    .collect(),
                Modifier::Value => sms
                    .map(|s| {
                        let shaped = view::shape(served(history, s), p.level, p.extent);
                        view::named_values(view::children(&shaped), p.extent)
                    })
                    .collect(),
                Modifier::Reference => sms
                    .map(|s| view::identifiable_reference("Submodel", id_of(s).unwrap_or("")))
                    .collect(),
                Modifier::Path => sms
                    .flat_map(|s| view::submodel_paths(&served(history, s), p.level))
                    .map(Value::String)
                    .collect(),
            };
            p.page(items)
        }
        Route::Submodel(sm_id, op) => return submodel_op(env, history, &sm_id, op, p),
    }))
}

fn submodel_op(
    env: &Environment,
    history: Option<&History>,
    sm_id: &str,
    op: SubmodelOp,
    p: &Params,
) -> Result<Reply, ApiError> {
    let stored = env
        .submodel(sm_id)
        .ok_or_else(|| ApiError::not_found(format!("no submodel with id {sm_id:?}")))?;
    // Element routes (the hot API path) find the element in the stored tree and materialise
    // only it; a Time Series submodel is served with its segments filled in.
    let elements_op = |path: &str| match history.and_then(|h| h.live_submodel(stored)) {
        Some(live) => find_served(sm_id, &live, path),
        None => find_served(sm_id, stored, path),
    };
    let bad = ApiError::bad_request;
    Ok(Reply::Json(match op {
        SubmodelOp::Submodel(m) => match m {
            Modifier::Normal => view::shape(served(history, stored), p.level, p.extent),
            Modifier::Metadata => stored.to_value_without("submodelElements"),
            Modifier::Value => {
                let shaped = view::shape(served(history, stored), p.level, p.extent);
                view::named_values(view::children(&shaped), p.extent)
            }
            Modifier::Reference => view::identifiable_reference("Submodel", sm_id),
            Modifier::Path => json!(view::submodel_paths(&served(history, stored), p.level)),
        },
        SubmodelOp::Elements(Modifier::Path) => {
            let paths = view::submodel_paths(&served(history, stored), p.level);
            p.page(paths.into_iter().map(Value::String).collect())
        }
        SubmodelOp::Elements(m) => {
            let shaped = view::shape(served(history, stored), p.level, p.extent);
            let top = view::children(&shaped);
            let items: Vec<Value> = match m {
                Modifier::Normal => top.to_vec(),
                // Elements without a value (Capability, Operation) have no such form: left out.
                Modifier::Metadata => top
                    .iter()
                    .filter_map(|e| view::element_metadata(e).ok())
                    .collect(),
                Modifier::Value => top
                    .iter()
                    .filter_map(|e| view::named_value_only(e, p.extent).ok())
                    .collect(),
                Modifier::Reference => top
                    .iter()
                    .enumerate()
                    .map(|(i, e)| view::element_reference(sm_id, &[(i, e)]))
                    .collect(),
                Modifier::Path => unreachable!("handled above"),
            };
            p.page(items)
        }
        SubmodelOp::Element(path, m) => {
            let (el, reference) = elements_op(&path)?;
            match m {
                Modifier::Normal => view::shape(el, p.level, p.extent),
                Modifier::Metadata => view::element_metadata(&el).map_err(bad)?,
                Modifier::Value => {
                    view::named_value_only(&view::shape(el, p.level, p.extent), p.extent)
                        .map_err(bad)?
                }
                Modifier::Reference => reference,
                Modifier::Path => json!(view::element_paths(&path, &el, p.level).map_err(bad)?),
            }
        }
        SubmodelOp::Attachment(path) => {
            let (el, _) = elements_op(&path)?;
            return attachment(&path, &el);
        }
    }))
}

/// The element at `path` of submodel `sm` (materialised) and its `$reference`.
fn find_served<T: JsonRead>(sm_id: &str, sm: &T, path: &str) -> Result<(Value, Value), ApiError> {
    let chain = aas::find_chain(sm, path)
        .map_err(|e| ApiError::not_found(format!("submodel {sm_id:?}: {e}")))?;
    let (_, el) = *chain
        .last()
        .expect("find_chain returns at least one element");
    Ok((el.to_value(), view::element_reference(sm_id, &chain)))
}

/// `GET .../attachment`: the bytes of a Blob; a File's content is not stored by this gateway.
fn attachment(path: &str, el: &Value) -> Result<Reply, ApiError> {
    use base64::Engine;
    let content_type = el
        .get("contentType")
        .and_then(Value::as_str)
        .unwrap_or("application/octet-stream")
        .to_string();
    match el.get("modelType").and_then(Value::as_str) {
        Some("Blob") => {
            let b64 = el.get("value").and_then(Value::as_str).unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| {
                    ApiError::not_found(format!("{path:?}: the Blob value is not valid base64"))
                })?;
            Ok(Reply::Bytes(content_type, bytes))
        }
        Some("File") => Err(ApiError::not_found(format!(
            "{path:?}: this gateway stores no file contents; the File refers to {}",
            el.get("value").and_then(Value::as_str).unwrap_or("nothing")
        ))),
        other => Err(ApiError::bad_request(format!(
            "{path:?} is a {}, not a File or Blob",
            other.unwrap_or("element")
        ))),
    }
}

/// `GET /serialization`: an environment with the requested shells and submodels (all when no
/// ids are given) and, unless `includeConceptDescriptions=false`, the concept descriptions.
fn serialization(
    env: &Environment,
    history: Option<&History>,
    p: &Params,
) -> Result<Value, ApiError> {
    for id in &p.aas_ids {
        find_shell(env, id)?;
    }
    for id in &p.submodel_ids {
        env.submodel(id)
            .ok_or_else(|| ApiError::not_found(format!("no submodel with id {id:?}")))?;
    }
    fn ids_wanted<T: JsonRead>(ids: &[String], v: &T) -> bool {
        ids.is_empty() || ids.iter().any(|i| id_of(v) == Some(i))
    }
    let wanted = ids_wanted::<Value>;
    let shells: Vec<&Value> = env
        .shells
        .iter()
        .filter(|s| wanted(&p.aas_ids, s))
        .collect();
    let submodels: Vec<Value> = env
        .submodels
        .iter()
        .filter(|s| ids_wanted(&p.submodel_ids, *s))
        .map(|s| served(history, s))
        .collect();
    let mut out = serde_json::Map::new();
    // Empty arrays would violate the metamodel (lists are non-empty when present).
    if !shells.is_empty() {
        out.insert("assetAdministrationShells".into(), json!(shells));
    }
    if !submodels.is_empty() {
        out.insert("submodels".into(), json!(submodels));
    }
    if p.include_concept_descriptions.unwrap_or(true) && !env.concept_descriptions.is_empty() {
        out.insert(
            "conceptDescriptions".into(),
            json!(env.concept_descriptions),
        );
    }
    Ok(Value::Object(out))
}

/// A submodel as served (materialised): Time Series submodels with their segments filled in
/// from the history store (built per request, bounded by `history.max_values_per_response`),
/// others as stored.
fn served(history: Option<&History>, sm: &aas::Node) -> Value {
    match history.and_then(|h| h.live_submodel(sm)) {
        Some(v) => v,
        None => sm.to_value(),
    }
}

fn find_shell<'e>(env: &'e Environment, id: &str) -> Result<&'e Value, ApiError> {
    env.shell(id)
        .ok_or_else(|| ApiError::not_found(format!("no shell with id {id:?}")))
}

fn shell_references(shell: &Value, sm_id: &str) -> bool {
    shell
        .get("submodels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| r.pointer("/keys/0/value").and_then(Value::as_str) == Some(sm_id))
}

fn matches_id_short<T: JsonRead>(v: &T, wanted: &Option<String>) -> bool {
    wanted
        .as_deref()
        .is_none_or(|w| v.get("idShort").and_then(T::as_str) == Some(w))
}

fn matches_semantic_id<T: JsonRead>(v: &T, wanted: &Option<String>) -> bool {
    wanted.as_deref().is_none_or(|w| {
        v.pointer("/semanticId/keys")
            .and_then(T::as_array)
            .into_iter()
            .flatten()
            .any(|k| k.get("value").and_then(T::as_str) == Some(w))
    })
}

/// A shell matches when every requested asset id is its globalAssetId (name `globalAssetId`)
/// or one of its specificAssetIds (same name and value).
fn matches_asset_ids(shell: &Value, p: &Params) -> bool {
    let info = shell.get("assetInformation");
    p.asset_ids.iter().all(|want| {
        if want.name == "globalAssetId" {
            return info
                .and_then(|i| i.get("globalAssetId"))
                .and_then(Value::as_str)
                == Some(want.value.as_str());
        }
        info.and_then(|i| i.get("specificAssetIds"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|s| {
                s.get("name").and_then(Value::as_str) == Some(want.name.as_str())
                    && s.get("value").and_then(Value::as_str) == Some(want.value.as_str())
            })
    })
}
