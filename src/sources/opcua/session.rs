//! One session to one server: client set-up (security, PKI, identity), the first connect with
//! backoff, and the task that drives async-opcua's event loop and reports what happens to it.
//!
//! Why the driver exists: async-opcua reconnects by itself, but (1) it retries rejected
//! credentials forever without a word, (2) restored subscriptions stay silent until
//! `trigger_publish_now()` is called, and (3) the caller must learn about new sessions to
//! re-resolve `nsu=` namespace indexes. The driver handles (1) and (2) and reports (3).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use opcua::client::{
    Client, ClientBuilder, IdentityToken, Session, SessionConnectMode, SessionPollResult,
};
use opcua::crypto::SecurityPolicy;
use opcua::types::{MessageSecurityMode, StatusCode, UserTokenPolicy, UserTokenType};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::OpcUaSourceConfig;
use crate::core::Backoff;

/// Maps a config name to the security policy URI, `None` if unknown.
pub fn security_policy_uri(name: &str) -> Option<&'static str> {
    match name {
        "None" => Some(SecurityPolicy::None.to_uri()),
        "Basic256Sha256" => Some(SecurityPolicy::Basic256Sha256.to_uri()),
        "Aes128Sha256RsaOaep" | "Aes128_Sha256_RsaOaep" => {
            Some(SecurityPolicy::Aes128Sha256RsaOaep.to_uri())
        }
        "Aes256Sha256RsaPss" | "Aes256_Sha256_RsaPss" => {
            Some(SecurityPolicy::Aes256Sha256RsaPss.to_uri())
        }
        _ => None,
    }
}

/// Maps a config name to the message security mode, `None` if unknown.
pub fn security_mode(name: &str) -> Option<MessageSecurityMode> {
    match name {
        "None" => Some(MessageSecurityMode::None),
        "Sign" => Some(MessageSecurityMode::Sign),
        "SignAndEncrypt" => Some(MessageSecurityMode::SignAndEncrypt),
        _ => None,
    }
}

/// Status codes after which retrying cannot help: the server does not accept who we are, or
/// we do not accept the server.
pub fn is_fatal(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BadIdentityTokenRejected
            | StatusCode::BadIdentityTokenInvalid
            | StatusCode::BadUserAccessDenied
            | StatusCode::BadCertificateInvalid
            | StatusCode::BadCertificateUntrusted
            | StatusCode::BadCertificateRevoked
            | StatusCode::BadCertificateUriInvalid
            | StatusCode::BadCertificateUseNotAllowed
            | StatusCode::BadCertificateHostNameInvalid
            | StatusCode::BadCertificateTimeInvalid
            | StatusCode::BadCertificateIssuerTimeInvalid
            | StatusCode::BadCertificateChainIncomplete
            | StatusCode::BadSecurityChecksFailed
            | StatusCode::BadSecurityPolicyRejected
    )
}

/// What to tell the operator for a fatal status.
pub fn describe_fatal(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BadIdentityTokenRejected
        | StatusCode::BadIdentityTokenInvalid
        | StatusCode::BadUserAccessDenied => {
            "the server rejected the user identity: check username/password or user_certificate"
        }
        StatusCode::BadCertificateHostNameInvalid => {
            "the server certificate does not name the host of the endpoint URL: use the host \
             name from the certificate in `endpoint`, or set verify_server_certs = false"
        }
        StatusCode::BadCertificateTimeInvalid | StatusCode::BadCertificateIssuerTimeInvalid => {
            "a certificate is expired or not yet valid: renew it or check the clocks"
        }
        StatusCode::BadCertificateUntrusted | StatusCode::BadSecurityChecksFailed => {
            "a certificate was not trusted: trust the server's certificate with \
             `aas-gateway pki trust` (it is in <pki_dir>/rejected) and/or the gateway's \
             certificate (<pki_dir>/own/cert.der) on the server"
        }
        _ => "the server and the gateway do not agree on security: check security_policy, security_mode and certificates",
    }
}

/// Builds the async-opcua client of one source. The gateway's own certificate and key are
/// created in `<pki_dir>/own` and `<pki_dir>/private` on first start.
pub fn build_client(cfg: &OpcUaSourceConfig, pki_dir: &Path) -> anyhow::Result<Client> {
    let _creating = super::pki::lock_for_key_creation(pki_dir)?;
    ClientBuilder::new()
        .application_name("aas-gateway")
        .application_uri("urn:aas-gateway")
        .product_uri("urn:aas-gateway")
        .pki_dir(pki_dir)
        .create_sample_keypair(true)
        .trust_server_certs(cfg.trust_server_certs)
        .verify_server_certs(cfg.verify_server_certs)
        // Retry forever: a server that is down for maintenance must not end the gateway.
        // Rejected identities are caught by the driver below instead.
        .session_retry_limit(-1)
        .session_retry_initial(Duration::from_millis(500))
        .session_retry_max(Duration::from_secs(10))
        .keep_alive_interval(Duration::from_secs(5))
        // The library transfers or recreates subscriptions on a new session (same node ids);
        // the source re-subscribes itself when namespace indexes changed.
        .recreate_subscriptions(true)
        .max_message_size(64 * 1024 * 1024)
        .max_chunk_count(1024)
        .max_array_length(1_000_000)
        .client()
        .map_err(|errors| {
            anyhow::anyhow!("source {}: client setup: {}", cfg.name, errors.join("; "))
        })
}

/// The identity token of a source: X.509 user certificate, user/password, or anonymous.
pub fn identity(cfg: &OpcUaSourceConfig) -> anyhow::Result<(IdentityToken, UserTokenPolicy)> {
    if let (Some(cert), Some(key)) = (&cfg.user_certificate, &cfg.user_private_key) {
        let token = IdentityToken::new_x509_path(cert, key).map_err(|e| {
            anyhow::anyhow!(
                "source {}: cannot load the user certificate {} / key {}: {e}",
                cfg.name,
                cert.display(),
                key.display()
            )
        })?;
        return Ok((
            token,
            UserTokenPolicy {
                token_type: UserTokenType::Certificate,
                ..UserTokenPolicy::anonymous()
            },
        ));
    }
    Ok(match (&cfg.username, &cfg.password) {
        (Some(u), Some(p)) => (
            IdentityToken::new_user_name(u.clone(), p.clone()),
            UserTokenPolicy {
                token_type: UserTokenType::UserName,
                ..UserTokenPolicy::anonymous()
            },
        ),
        _ => (IdentityToken::Anonymous, UserTokenPolicy::anonymous()),
    })
}

fn no_matching_endpoint(endpoints: &[opcua::types::EndpointDescription]) -> opcua::types::Error {
    opcua::types::Error::new(
        StatusCode::BadTcpEndpointUrlInvalid,
        format!(
            "the server offers {}",
            endpoints
                .iter()
                .map(|e| format!(
                    "{} {:?}",
                    SecurityPolicy::from_uri(e.security_policy_uri.as_ref()).to_str(),
                    e.security_mode
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// What the driver reports about the session.
#[derive(Debug)]
pub enum SessionEvent {
    /// Connected (first time or again); `NewSession` means the server lost the old session.
    Connected(SessionConnectMode),
    /// The connection broke; async-opcua is reconnecting.
    Lost(StatusCode),
    /// Retrying cannot help (see [`is_fatal`]).
    Fatal(StatusCode),
    /// async-opcua's event loop ended by itself; the source starts a fresh session.
    Ended(StatusCode),
}

/// A session with its running event-loop driver.
pub struct Connection {
    /// The session (usable once the first [`SessionEvent::Connected`] arrived).
    pub session: Arc<Session>,
    /// Events of the driver, in order.
    pub events: mpsc::UnboundedReceiver<SessionEvent>,
    driver: JoinHandle<()>,
}

impl Connection {
    /// Ends the session (deleting its subscriptions on the server) and the driver.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.session.disconnect()).await;
        self.driver.abort();
    }

    /// Drops a session the server never accepted: there is nothing to close politely, and
    /// waiting for a disconnect would only delay the error report.
    pub fn abandon(self) {
        self.driver.abort();
    }
}

/// Creates the session, retrying with backoff while the server is unreachable (its endpoints
/// cannot be fetched). `Ok(None)` on shutdown; an error only when retrying cannot help.
/// `on_retry` is told why each failed attempt failed (the status page shows it).
pub async fn open(
    client: &mut Client,
    cfg: &OpcUaSourceConfig,
    identity: &(IdentityToken, UserTokenPolicy),
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
    on_retry: &(dyn Fn(String) + Sync),
) -> anyhow::Result<Option<Connection>> {
    let name = &cfg.name;
    let policy = security_policy_uri(&cfg.security_policy)
        .ok_or_else(|| anyhow::anyhow!("source {name}: unknown security policy"))?;
    let mode = security_mode(&cfg.security_mode)
        .ok_or_else(|| anyhow::anyhow!("source {name}: unknown security mode"))?;
    let (session, event_loop) = loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            r = async {
                // Connect to the matching endpoint **at the configured address**: servers
                // often advertise an address the gateway cannot reach (a container's host
                // name, a NAT-internal IP or port); async-opcua only replaces the host, so a
                // port-forwarded or proxied server would be dialled at its internal port.
                let endpoints = client
                    .get_server_endpoints_from_url(cfg.endpoint.as_str())
                    .await?;
                let mut endpoint = Client::find_matching_endpoint(
                    &endpoints,
                    &cfg.endpoint,
                    SecurityPolicy::from_uri(policy),
                    mode,
                )
                .ok_or_else(|| no_matching_endpoint(&endpoints))?;
                endpoint.endpoint_url = cfg.endpoint.as_str().into();
                client.connect_to_endpoint_directly(endpoint, identity.0.clone())
            } => r,
        };
        match attempt {
            Ok(pair) => break pair,
            Err(e) if is_fatal(e.status()) => anyhow::bail!(
                "source {name}: {} refused the connection: {e} ({})",
                cfg.endpoint,
                describe_fatal(e.status())
            ),
            Err(e) if e.status() == StatusCode::BadTcpEndpointUrlInvalid => anyhow::bail!(
                "source {name}: {} offers no endpoint with security_policy {} / security_mode {}: {e}",
                cfg.endpoint, cfg.security_policy, cfg.security_mode
            ),
            Err(e) => {
                let wait = backoff.next_delay();
                warn!(source = %name, endpoint = %cfg.endpoint, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot reach the OPC UA server");
                on_retry(format!("cannot reach the OPC UA server: {e}"));
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    };

    let (tx, events) = mpsc::unbounded_channel();
    let loop_session = session.clone();
    let loop_name = name.clone();
    let driver = tokio::spawn(async move {
        let mut stream = std::pin::pin!(event_loop.enter());
        while let Some(event) = stream.next().await {
            let report = match event {
                Ok(SessionPollResult::Reconnected(mode)) => {
                    info!(source = %loop_name, ?mode, "connected to the OPC UA server");
                    // Without this, restored subscriptions stay silent (async-opcua pitfall).
                    loop_session.trigger_publish_now();
                    SessionEvent::Connected(mode)
                }
                Ok(SessionPollResult::ConnectionLost(status)) => {
                    warn!(source = %loop_name, %status, "connection to the OPC UA server lost; reconnecting");
                    SessionEvent::Lost(status)
                }
                Ok(SessionPollResult::ReconnectFailed(status)) if is_fatal(status) => {
                    SessionEvent::Fatal(status)
                }
                Ok(SessionPollResult::ReconnectFailed(status)) => {
                    warn!(source = %loop_name, %status, "connecting failed; retrying");
                    continue;
                }
                Ok(_) => continue,
                Err(status) if is_fatal(status) => SessionEvent::Fatal(status),
                Err(status) => SessionEvent::Ended(status),
            };
            let last = matches!(report, SessionEvent::Fatal(_) | SessionEvent::Ended(_));
            if tx.send(report).is_err() || last {
                return;
            }
        }
        let _ = tx.send(SessionEvent::Ended(StatusCode::BadConnectionClosed));
    });
    Ok(Some(Connection {
        session,
        events,
        driver,
    }))
}
