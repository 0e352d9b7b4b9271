//! The API's gatekeeper, one axum middleware in front of every route:
//! rate limit → body size → authentication → role check.
//!
//! - `GET`/`HEAD` need the `reader` role (or anonymous reads), anything that changes state
//!   needs `writer`; `/health` and `/ready` are open so that orchestrators can probe them.
//! - Refusals are Part 2 `Result` bodies (401 with `WWW-Authenticate: Bearer`, 403, 413, 429),
//!   counted, and recorded in the audit log with the client's address.
//! - The rate limit is one token bucket for all clients: its purpose is to keep a flood (or a
//!   password-guessing loop) from starving the gateway's two cores and from filling the audit
//!   log, not fairness between clients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::ApiError;
use crate::audit::AuditLog;
use crate::security::tls::PeerAddr;
use crate::security::tokens::AuthError;
use crate::security::{Authenticator, Role};

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// State of the gatekeeper, shared by all requests.
#[derive(Debug)]
pub struct Gatekeeper {
    auth: Authenticator,
    audit: Option<Arc<AuditLog>>,
    bucket: Option<Mutex<Bucket>>,
    max_body_bytes: usize,
    /// Requests refused for missing/invalid tokens or too small a role.
    pub auth_failures: AtomicU64,
    /// Requests refused by the rate limit.
    pub rate_limited: AtomicU64,
}

impl Gatekeeper {
    /// `rate_per_s = 0` turns the rate limit off; the burst is twice the rate (at least 1).
    pub fn new(
        auth: Authenticator,
        audit: Option<Arc<AuditLog>>,
        rate_per_s: u32,
        max_body_bytes: usize,
    ) -> Arc<Gatekeeper> {
        let bucket = (rate_per_s > 0).then(|| {
            let burst = (rate_per_s as f64 * 2.0).max(1.0);
            Mutex::new(Bucket {
                rate: rate_per_s as f64,
                burst,
                tokens: burst,
                last: Instant::now(),
            })
        });
        Arc::new(Gatekeeper {
            auth,
            audit,
            bucket,
            max_body_bytes,
            auth_failures: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        })
    }

    /// Largest accepted request body.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    fn refuse(&self, event: &str, status: StatusCode, text: String, req: &Request) -> Response {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
        let peer = req
            .extensions()
            .get::<ConnectInfo<PeerAddr>>()
            .map(|c| c.0 .0.to_string());
        tracing::info!(peer = ?peer, method = %req.method(), path = %truncate(req.uri().path()), "API: {text}");
        if let Some(audit) = &self.audit {
            audit.record(
                event,
                json!({
                    "peer": peer,
                    "method": req.method().as_str(),
                    "path": truncate(req.uri().path()),
                    "reason": text,
                }),
            );
        }
        let mut resp = ApiError::new(status, text).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"aas-gateway\""),
            );
        }
        resp
    }
}

/// Paths longer than this are cut in logs and audit lines (they are attacker-controlled).
fn truncate(s: &str) -> String {
    if s.len() <= 200 {
        s.to_string()
    } else {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// The role a request needs.
fn required_role(method: &Method) -> Role {
    if method == Method::GET || method == Method::HEAD {
        Role::Reader
    } else {
        Role::Writer
    }
}

/// The middleware (use with `axum::middleware::from_fn_with_state`).
pub async fn gate(State(gk): State<Arc<Gatekeeper>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    // Probes stay open and unlimited; CORS preflights carry no credentials by design.
    if path == "/health" || path == "/ready" || req.method() == Method::OPTIONS {
        return as_part2_error(next.run(req).await).await;
    }
    if let Some(bucket) = &gk.bucket {
        let ok = bucket.lock().unwrap_or_else(|p| p.into_inner()).take();
        if !ok {
            gk.rate_limited.fetch_add(1, Ordering::Relaxed);
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests; retry in a second (api.rate_limit_per_s)",
            )
            .into_response();
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > gk.max_body_bytes as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {} bytes (api.max_body_bytes)",
                gk.max_body_bytes
            ),
        )
        .into_response();
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}invalid"));
    let anonymous = authorization.is_none();
    let principal = match gk.auth.authenticate(authorization) {
        Ok(p) => p,
        Err(AuthError::Invalid) => {
            return gk.refuse(
                "auth_failure",
                StatusCode::UNAUTHORIZED,
                "the bearer token is not valid".into(),
                &req,
            )
        }
        Err(AuthError::Missing) => {
            return gk.refuse(
                "auth_failure",
                StatusCode::UNAUTHORIZED,
                "a bearer token is required".into(),
                &req,
            )
        }
    };
    let needed = required_role(req.method());
    match principal.role {
        None => {
            return gk.refuse(
                "auth_failure",
                StatusCode::UNAUTHORIZED,
                "a bearer token is required (Authorization: Bearer <token>)".into(),
                &req,
            )
        }
        Some(_) if needed > Role::Reader && anonymous => {
            return gk.refuse(
                "auth_failure",
                StatusCode::UNAUTHORIZED,
                format!("{} needs a token with the {needed} role", req.method()),
                &req,
            )
        }
        Some(role) if role < needed => {
            let text = format!(
                "{} ({role}) may not {}: the {needed} role is needed",
                principal.name,
                req.method()
            );
            return gk.refuse("access_denied", StatusCode::FORBIDDEN, text, &req);
        }
        Some(_) => {}
    }
    req.extensions_mut().insert(principal);
    as_part2_error(next.run(req).await).await
}

/// Turns error responses that are not JSON — axum's own rejections (a query string that does
/// not parse, 405 for an unknown method, 413 from the body limit) — into Part 2 `Result`
/// bodies with the same status, so that clients get one error format from every route.
pub async fn as_part2_error(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
    };
    let mut out = ApiError::new(status, text).into_response();
    for name in [header::ALLOW, header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refuses() {
        let mut b = Bucket {
            rate: 1.0,
            burst: 3.0,
            tokens: 3.0,
            last: Instant::now(),
        };
        assert!((0..3).all(|_| b.take()));
        assert!(!b.take());
    }

    #[test]
    fn long_paths_are_cut_on_a_char_boundary() {
        let s = "é".repeat(300);
        assert!(truncate(&s).len() < 210);
    }
}
