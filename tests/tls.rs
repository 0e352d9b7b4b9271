//! HTTPS and mutual TLS on the API, checked with real clients (curl + OpenSSL, independent of
//! the gateway's rustls): certificates are made by the `openssl` command line for each run.

mod common;

use std::path::Path;
use std::process::Command;

use aas_gateway::config::Config;
use aas_gateway::pipeline::Gateway;
use aas_gateway::security::tokens::{generate_token, hash_token};
use tokio_util::sync::CancellationToken;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is needed for this test (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

fn make_certs(dir: &Path) {
    let mut server = vec![
        "req",
        "-x509",
        "-nodes",
        "-days",
        "1",
        "-keyout",
        "server.key",
        "-out",
        "server.pem",
    ];
    server.extend(EC);
    server.extend([
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ]);
    openssl(dir, &server);
    let mut ca = vec![
        "req",
        "-x509",
        "-nodes",
        "-days",
        "1",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=test-ca",
    ];
    ca.extend(EC);
    openssl(dir, &ca);
    let mut csr = vec![
        "req",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=client",
    ];
    csr.extend(EC);
    openssl(dir, &csr);
    // Extensions make it an X.509 v3 certificate; webpki refuses v1 ones.
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-days",
            "1",
            "-extfile",
            "client.ext",
        ],
    );
}

/// HTTP status curl got, or `None` when the connection/handshake failed.
fn curl(args: &[&str]) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .output()
        .expect("curl is needed for this test");
    let code: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (out.status.success() && code != 0).then_some(code)
}

async fn start(dir: &Path, client_ca: bool, token: &str) -> (Gateway, CancellationToken) {
    let cfg = format!(
        r#"
[api]
listen = "127.0.0.1:0"
[api.tls]
cert = "server.pem"
key = "server.key"
{ca}
[[api.auth.tokens]]
name = "t"
role = "reader"
sha256 = "{hash}"
[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]
[[opcua]]
name = "nowhere"
endpoint = "opc.tcp://127.0.0.1:{port}/"
pki_dir = "pki"
[mqtt]
enabled = false
[[mapping]]
node_id = "nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeed"
submodel = "urn:aas-gateway:sim:sm:cnc1:operational-data"
path = "SpindleSpeed"
"#,
        ca = if client_ca {
            "client_ca = \"ca.pem\""
        } else {
            ""
        },
        hash = hash_token(token),
        root = common::repo_root().display(),
        port = common::free_port(),
    );
    let path = dir.join(if client_ca { "mtls.toml" } else { "tls.toml" });
    std::fs::write(&path, cfg).unwrap();
    let shutdown = CancellationToken::new();
    let gw = Gateway::start(Config::load(&path).unwrap(), shutdown.clone())
        .await
        .unwrap();
    (gw, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_mutual_tls_with_real_clients() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let token = generate_token().unwrap();
    let auth = format!("Authorization: Bearer {token}");
    let ca = dir.path().join("server.pem");
    let ca = ca.to_str().unwrap();

    let (gw, stop) = start(dir.path(), false, &token).await;
    let port = gw.api_addr.unwrap().port();
    let https = format!("https://localhost:{port}/api/v3.0/shells");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let code = tokio::task::spawn_blocking({
        let (https, resolve, auth, ca) =
            (https.clone(), resolve.clone(), auth.clone(), ca.to_string());
        move || {
            (
                curl(&["--resolve", &resolve, "--cacert", &ca, "-H", &auth, &https]),
                curl(&["--resolve", &resolve, "--cacert", &ca, &https]),
                // An unknown server certificate is refused by the client...
                curl(&["--resolve", &resolve, &https]),
                // ...and plain HTTP gets no answer from a TLS port.
                curl(&[&format!("http://127.0.0.1:{port}/api/v3.0/shells")]),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(code, (Some(200), Some(401), None, None));
    stop.cancel();
    gw.wait().await.unwrap();

    // Mutual TLS: without a client certificate signed by the configured CA, no connection.
    let (gw, stop) = start(dir.path(), true, &token).await;
    let port = gw.api_addr.unwrap().port();
    let https = format!("https://localhost:{port}/api/v3.0/shells");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let d = dir.path().to_path_buf();
    let codes = tokio::task::spawn_blocking(move || {
        let cert = d.join("client.pem");
        let key = d.join("client.key");
        (
            curl(&[
                "--resolve",
                &resolve,
                "--cacert",
                d.join("server.pem").to_str().unwrap(),
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
                "-H",
                &auth,
                &https,
            ]),
            curl(&[
                "--resolve",
                &resolve,
                "--cacert",
                d.join("server.pem").to_str().unwrap(),
                "-H",
                &auth,
                &https,
            ]),
        )
    })
    .await
    .unwrap();
    assert_eq!(codes, (Some(200), None));
    stop.cancel();
    gw.wait().await.unwrap();
}
