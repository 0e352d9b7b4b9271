//! The gateway's PKI directory, as async-opcua lays it out:
//!
//! ```text
//! <pki_dir>/own/cert.der          the gateway's application instance certificate
//! <pki_dir>/private/private.pem   its private key
//! <pki_dir>/trusted/*.der         server certificates the gateway trusts
//! <pki_dir>/rejected/*.der        server certificates seen but not (yet) trusted
//! ```
//!
//! A server certificate the gateway does not know lands in `rejected/` on the first connect.
//! `aas-gateway pki list` shows it with its thumbprint; after checking it out of band (compare
//! the thumbprint with the server's display), `aas-gateway pki trust <thumbprint>` moves it to
//! `trusted/`. Nothing is trusted silently unless `trust_server_certs = true`.

use std::path::{Path, PathBuf};

use opcua::client::ClientBuilder;
use opcua::crypto::{CertificateStore, X509};

/// Where a certificate sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    /// The gateway's own certificate.
    Own,
    /// A trusted server certificate.
    Trusted,
    /// A rejected (unknown) server certificate.
    Rejected,
}

impl CertState {
    /// Lower-case name for listings.
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Own => "own",
            CertState::Trusted => "trusted",
            CertState::Rejected => "rejected",
        }
    }
}

/// One certificate of the store.
#[derive(Debug, Clone)]
pub struct CertEntry {
    /// Which folder it is in.
    pub state: CertState,
    /// Its file.
    pub file: PathBuf,
    /// SHA-1 thumbprint, upper-case hex (as OPC UA tools display it).
    pub thumbprint: String,
    /// Subject distinguished name.
    pub subject: String,
    /// End of validity, RFC 3339, or the error reading it.
    pub not_after: String,
}

/// Holds an exclusive lock on `<pki_dir>/.keypair.lock` until dropped.
///
/// Why: async-opcua creates a missing key pair by writing the certificate and the key as two
/// separate files. Two processes (two gateways, or a gateway and `pki list`) starting at the same
/// moment on an empty directory each wrote their own pair, and one ended with the other's
/// certificate next to its own key (`BadCertificateInvalid`). Whoever takes the lock second finds
/// the pair complete and uses it.
pub fn lock_for_key_creation(pki_dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(pki_dir)
        .map_err(|e| anyhow::anyhow!("creating PKI dir {}: {e}", pki_dir.display()))?;
    let path = pki_dir.join(".keypair.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    file.lock()
        .map_err(|e| anyhow::anyhow!("locking {}: {e}", path.display()))?;
    Ok(file)
}

/// Creates the gateway's own certificate and key in `pki_dir` if they do not exist yet (the
/// same way a running source does), and returns the certificate's path.
pub fn ensure_own_certificate(pki_dir: &Path) -> anyhow::Result<PathBuf> {
    let _creating = lock_for_key_creation(pki_dir)?;
    // Building a client with `create_sample_keypair` creates the pair exactly as `run` would,
    // with the same application URI in the certificate.
    ClientBuilder::new()
        .application_name("aas-gateway")
        .application_uri("urn:aas-gateway")
        .product_uri("urn:aas-gateway")
        .pki_dir(pki_dir)
        .create_sample_keypair(true)
        .client()
        .map_err(|e| anyhow::anyhow!("{}: {}", pki_dir.display(), e.join("; ")))?;
    let store = CertificateStore::new(pki_dir);
    let path = store.own_certificate_path();
    if !path.is_file() {
        anyhow::bail!(
            "{}: the gateway certificate could not be created (see the log)",
            path.display()
        );
    }
    Ok(path)
}

fn entry(state: CertState, file: PathBuf) -> Option<CertEntry> {
    let cert = CertificateStore::read_cert(&file).ok()?;
    Some(CertEntry {
        state,
        thumbprint: cert.thumbprint().as_hex_string().to_uppercase(),
        subject: cert.subject_name(),
        not_after: cert
            .not_after()
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|e| format!("unreadable: {e}")),
        file,
    })
}

fn der_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every certificate in the store: own, trusted, rejected. Unreadable files are skipped.
pub fn list(pki_dir: &Path) -> Vec<CertEntry> {
    let store = CertificateStore::new(pki_dir);
    let mut out = Vec::new();
    out.extend(entry(CertState::Own, store.own_certificate_path()));
    for (state, dir) in [
        (CertState::Trusted, store.trusted_certs_dir()),
        (CertState::Rejected, store.rejected_certs_dir()),
    ] {
        out.extend(der_files(&dir).into_iter().filter_map(|f| entry(state, f)));
    }
    out
}

/// Trusts a server certificate: `what` is a certificate file (DER or PEM) anywhere, or the
/// thumbprint (or a unique prefix of at least 8 hex digits) of a certificate in `rejected/`,
/// which is then moved to `trusted/`. Returns the trusted file.
pub fn trust(pki_dir: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let store = CertificateStore::new(pki_dir);
    store
        .ensure_pki_path()
        .map_err(|e| anyhow::anyhow!("{}: {e}", pki_dir.display()))?;
    let trusted_dir = store.trusted_certs_dir();
    let file = Path::new(what);
    if file.is_file() {
        let cert: X509 = CertificateStore::read_cert(file)
            .map_err(|e| anyhow::anyhow!("{what}: not a certificate: {e}"))?;
        let target = trusted_dir.join(CertificateStore::cert_file_name(&cert));
        let der = cert
            .to_der()
            .map_err(|e| anyhow::anyhow!("{what}: cannot encode the certificate: {e}"))?;
        std::fs::write(&target, der).map_err(|e| anyhow::anyhow!("{}: {e}", target.display()))?;
        // The same certificate may also wait in rejected/: it is decided now.
        let thumb = cert.thumbprint().as_hex_string().to_uppercase();
        for e in list(pki_dir) {
            if e.state == CertState::Rejected && e.thumbprint == thumb {
                let _ = std::fs::remove_file(&e.file);
            }
        }
        return Ok(target);
    }
    let wanted = what.trim().replace([':', ' '], "").to_uppercase();
    if wanted.len() < 8 || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
        anyhow::bail!(
            "{what:?} is neither a certificate file nor a thumbprint (at least 8 hex digits)"
        );
    }
    let rejected: Vec<CertEntry> = list(pki_dir)
        .into_iter()
        .filter(|e| e.state == CertState::Rejected && e.thumbprint.starts_with(&wanted))
        .collect();
    match rejected.as_slice() {
        [] => anyhow::bail!(
            "no rejected certificate in {} has the thumbprint {wanted} (see `aas-gateway pki list`)",
            store.rejected_certs_dir().display()
        ),
        [one] => {
            let target = trusted_dir.join(one.file.file_name().expect("a file"));
            std::fs::rename(&one.file, &target).map_err(|e| {
                anyhow::anyhow!(
                    "moving {} to {}: {e}",
                    one.file.display(),
                    target.display()
                )
            })?;
            Ok(target)
        }
        many => anyhow::bail!(
            "{wanted} matches {} rejected certificates; give more digits",
            many.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_certificates_move_to_trusted_by_thumbprint() {
        let dir = tempfile::tempdir().unwrap();
        // A "server" certificate: another store's own certificate, dropped into rejected/.
        let server = tempfile::tempdir().unwrap();
        let server_cert = ensure_own_certificate(server.path()).unwrap();
        let store = CertificateStore::new(dir.path());
        store.ensure_pki_path().unwrap();
        let cert = CertificateStore::read_cert(&server_cert).unwrap();
        store.store_rejected_cert(&cert).unwrap();

        let listed = list(dir.path());
        let rejected: Vec<_> = listed
            .iter()
            .filter(|e| e.state == CertState::Rejected)
            .collect();
        assert_eq!(rejected.len(), 1, "{listed:?}");
        let thumb = rejected[0].thumbprint.clone();
        assert_eq!(thumb.len(), 40);

        assert!(trust(dir.path(), "ABCDEF").is_err(), "too short");
        assert!(trust(dir.path(), "0000000000").is_err(), "unknown");
        let target = trust(dir.path(), &thumb[..12].to_lowercase()).unwrap();
        assert!(target.starts_with(store.trusted_certs_dir()));
        let after = list(dir.path());
        assert!(after.iter().all(|e| e.state != CertState::Rejected));
        assert!(after
            .iter()
            .any(|e| e.state == CertState::Trusted && e.thumbprint == thumb));
    }
}
