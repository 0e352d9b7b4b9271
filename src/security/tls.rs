//! HTTPS for the API: rustls (ring provider — the one questdb-rs and rumqttc already link, so no
//! second crypto library) behind axum's own `serve`, through a small [`Listener`].
//!
//! Why not axum-server: it would add a second server stack and, with default features, the
//! aws-lc-rs provider (a C build). tokio-rustls is already in the tree; this file is the glue.
//!
//! Handshakes run in their own tasks with a timeout, so a client that opens a connection and
//! sends nothing cannot hold up other clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Why the HTTPS set-up failed; each names the setting (and file) to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A configured file cannot be read or parsed.
    #[error("{setting}: {}: {reason}", path.display())]
    File {
        /// The setting that names the file (`api.tls.cert`, `api.tls.key`, `api.tls.client_ca`).
        setting: &'static str,
        /// The file, resolved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate file holds no certificate.
    #[error("api.tls.cert: {} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file, resolved.
        path: PathBuf,
    },
    /// rustls refused the combination (e.g. a key that does not belong to the certificate).
    #[error("api.tls: {context}: {source}")]
    Rustls {
        /// What was being set up.
        context: &'static str,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
}

/// `[api.tls]`: serve the API over HTTPS. Paths are relative to the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file of CA certificates; when set, clients must present a certificate signed by one
    /// of them (mutual TLS) in addition to their bearer token.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl TlsConfig {
    /// Loads the certificate, key and optional client CA into a rustls server config. Errors
    /// name the setting and the file.
    pub fn server_config(&self, base_dir: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let file = |setting: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |e: &dyn std::fmt::Display| TlsError::File {
                setting,
                path,
                reason: e.to_string(),
            }
        };
        let cert_path = resolve(base_dir, &self.cert);
        let key_path = resolve(base_dir, &self.key);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| file("api.tls.cert", &cert_path)(&e))?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate { path: cert_path });
        }
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| file("api.tls.key", &key_path)(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                context: "protocol versions",
                source,
            })?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let ca_path = resolve(base_dir, ca);
                let ca_error = |e: &dyn std::fmt::Display| file("api.tls.client_ca", &ca_path)(e);
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(&ca_path).map_err(|e| ca_error(&e))? {
                    let cert = cert.map_err(|e| ca_error(&e))?;
                    roots.add(cert).map_err(|e| ca_error(&e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.into(),
                    provider,
                )
                .build()
                .map_err(|e| ca_error(&e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config =
            builder
                .with_single_cert(certs, key)
                .map_err(|source| TlsError::Rustls {
                    context: "certificate and key do not fit",
                    source,
                })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A TCP listener that hands out TLS streams after a completed handshake.
pub struct TlsListener {
    local: SocketAddr,
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Starts accepting on `tcp`; handshakes run concurrently, at most 64 finished connections
    /// wait for the server to take them.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "API: accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, handed) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = handed.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "API: TLS handshake failed")
                        }
                        Err(_) => tracing::info!(%peer, "API: TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return; // the server stopped
                }
            }
        });
        Ok(TlsListener { local, rx })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(pair) => pair,
            // The accept task only ends when this receiver is gone; never reached.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The remote address of an API client, over plain TCP or TLS (for logs and the audit log).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}
