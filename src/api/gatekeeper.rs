//! The API's gatekeeper, one axum middleware in front of every route:
//! body size → authentication → rate limit of that client → role check.
//!
//! - `GET`/`HEAD` need the `reader` role (or anonymous reads), anything that changes state
//!   needs `writer`; `/health` and `/ready` are open so that orchestrators can probe them.
//! - Refusals are Part 2 `Result` bodies (401 with `WWW-Authenticate: Bearer`, 403, 413, 429),
//!   counted, and recorded in the audit log with the client's address.
//! - The rate limit is per client, applied after authentication (`governor`, GCRA): a token
//!   holder is one client, whatever address it comes from; a request without a valid token is
//!   counted against its source address. So an anonymous flood or a password-guessing loop gets
//!   429 for itself while operators, write-back and the Prometheus scrape are still answered.
//!   Refusals beyond the limit are not written to the audit log (a flood would fill it).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiError;
use crate::audit::AuditLog;
use crate::security::tls::PeerAddr;
use crate::security::tokens::AuthError;
use crate::security::{Authenticator, Role};

/// Who a request counts against in the rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Client {
    /// A valid token's holder (the `name` of its `[[api.auth.tokens]]` entry).
    Token(String),
    /// Anonymous or invalid credentials, by source address.
    Address(IpAddr),
    /// Anonymous without a known address (in-process callers).
    Unknown,
}

/// Distinct clients remembered before the idle ones are forgotten: bounds the limiter's memory
/// under a flood from many addresses.
const MAX_TRACKED_CLIENTS: usize = 4096;

/// State of the gatekeeper, shared by all requests.
#[derive(Debug)]
pub struct Gatekeeper {
    auth: Authenticator,
    audit: Option<Arc<AuditLog>>,
    limiter: Option<DefaultKeyedRateLimiter<Client>>,
    max_body_bytes: usize,
    /// Requests refused for missing/invalid tokens or too small a role.
    pub auth_failures: AtomicU64,
    /// Requests refused by the rate limit.
    pub rate_limited: AtomicU64,
}

impl Gatekeeper {
    /// `rate_per_s` per client; 0 turns the rate limit off. The burst is twice the rate.
    pub fn new(
        auth: Authenticator,
        audit: Option<Arc<AuditLog>>,
        rate_per_s: u32,
        max_body_bytes: usize,
    ) -> Arc<Gatekeeper> {
        let limiter = NonZeroU32::new(rate_per_s).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            governor::RateLimiter::dashmap(Quota::per_second(rate).allow_burst(burst))
        });
        Arc::new(Gatekeeper {
            auth,
            audit,
            limiter,
            max_body_bytes,
            auth_failures: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        })
    }

    /// True when `client` is within its rate (or there is no limit); counts a refusal.
    fn within_rate(&self, client: Client) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        if limiter.len() > MAX_TRACKED_CLIENTS {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let ok = limiter.check_key(&client).is_ok();
        if !ok {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        ok
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
    let authenticated = gk.auth.authenticate(authorization);
    let client = match &authenticated {
        Ok(p) if p.role.is_some() && !anonymous => Client::Token(p.name.clone()),
        _ => match req.extensions().get::<ConnectInfo<PeerAddr>>() {
            Some(c) => Client::Address(c.0 .0.ip()),
            None => Client::Unknown,
        },
    };
    if !gk.within_rate(client) {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests from this client; retry in a second (api.rate_limit_per_s)",
        )
        .into_response();
    }
    let principal = match authenticated {
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
    fn each_client_has_its_own_rate() {
        let auth =
            Authenticator::from_config(&Default::default(), std::path::Path::new(".")).unwrap();
        // 1 per second, burst 2.
        let gk = Gatekeeper::new(auth, None, 1, 1024);
        let flood = Client::Address([10, 0, 0, 9].into());
        assert!((0..2).all(|_| gk.within_rate(flood.clone())));
        assert!(!gk.within_rate(flood.clone()), "past its burst");
        // Others are not affected by that client's flood.
        assert!(gk.within_rate(Client::Token("operator".into())));
        assert!(gk.within_rate(Client::Address([10, 0, 0, 10].into())));
        assert_eq!(gk.rate_limited.load(Ordering::Relaxed), 1);
        let unlimited = Gatekeeper::new(
            Authenticator::from_config(&Default::default(), std::path::Path::new(".")).unwrap(),
            None,
            0,
            1024,
        );
        assert!((0..100).all(|_| unlimited.within_rate(Client::Unknown)));
    }

    #[test]
    fn long_paths_are_cut_on_a_char_boundary() {
        let s = "é".repeat(300);
        assert!(truncate(&s).len() < 210);
    }
}
