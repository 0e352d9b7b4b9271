//! The benchmark's own mosquitto and VictoriaMetrics (real ILP server) on free loopback ports.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::procs::{free_port, require, wait_for_port, Proc};

/// A mosquitto broker for one case.
pub struct Mosquitto {
    pub port: u16,
    /// Stopped on drop.
    proc: Proc,
}

impl Mosquitto {
    /// `tcp_nodelay`: mosquitto's `set_tcp_nodelay` (its default is false: Nagle then holds a
    /// PUBACK while the previous one waits for the client's delayed ACK, up to 40 ms).
    pub fn start(dir: &Path, tcp_nodelay: bool) -> Result<Mosquitto> {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        // The counting subscriber must never be the one that drops: mosquitto's default per-client
        // queue (1000 messages) would silently discard bursts to a briefly slow subscriber.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 5000000\nmax_inflight_messages 1000\nuser root\nlog_dest stderr\n\
                 set_tcp_nodelay {tcp_nodelay}\n"
            ),
        )?;
        let mut cmd = Command::new(require("mosquitto")?);
        cmd.arg("-c").arg(&conf);
        let mut proc = Proc::spawn("mosquitto", cmd, &dir.join("mosquitto.log"))?;
        wait_for_port(&mut proc, port, Duration::from_secs(15))?;
        Ok(Mosquitto { port, proc })
    }

    /// The broker's process (its CPU and RSS are reported beside the gateway's).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// VictoriaMetrics accepting ILP over HTTP on `/write`.
pub struct Victoria {
    pub port: u16,
    /// Stopped on drop.
    proc: Proc,
}

impl Victoria {
    pub fn start(dir: &Path) -> Result<Victoria> {
        let port = free_port();
        let mut cmd = Command::new(require("victoria-metrics")?);
        cmd.arg(format!("-storageDataPath={}", dir.join("vm").display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=100y")
            .arg("-search.disableCache")
            .arg("-search.latencyOffset=0s")
            .arg("-loggerLevel=WARN");
        let mut proc = Proc::spawn("victoria-metrics", cmd, &dir.join("vm.log"))?;
        wait_for_port(&mut proc, port, Duration::from_secs(15))?;
        Ok(Victoria { port, proc })
    }

    /// The ILP server's process (its CPU and RSS are reported beside the gateway's).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// questdb-rs config (VictoriaMetrics speaks ILP protocol version 1).
    pub fn ilp_conf(&self) -> String {
        format!("http::addr=127.0.0.1:{};protocol_version=1;", self.port)
    }

    /// Makes freshly written rows searchable.
    pub fn force_flush(&self) -> Result<()> {
        http_get(self.port, "/internal/force_flush").map(|_| ())
    }

    /// Evaluates an instant PromQL/MetricsQL query at `time_s`; the first result's value
    /// (0 when the result is empty).
    pub fn query_scalar(&self, query: &str, time_s: f64) -> Result<f64> {
        let path = format!(
            "/api/v1/query?query={}&time={time_s:.3}",
            percent_encode(query)
        );
        let body = http_get(self.port, &path)?;
        let v: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("VictoriaMetrics said: {body}"))?;
        if v["status"] != "success" {
            bail!("query {query} failed: {body}");
        }
        Ok(v["data"]["result"]
            .get(0)
            .and_then(|r| r["value"][1].as_str())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0))
    }
}

/// A minimal HTTP/1.0 GET on 127.0.0.1 (the benchmark needs no HTTP client crate for this).
fn http_get(port: u16, path: &str) -> Result<String> {
    http_get_host("127.0.0.1", port, path)
}

/// A minimal HTTP/1.0 GET; the body of a 2xx answer.
pub fn http_get_host(host: &str, port: u16, path: &str) -> Result<String> {
    let mut s = std::net::TcpStream::connect((host, port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if !status.starts_with('2') {
        bail!("GET {path}: HTTP {status}: {body}");
    }
    Ok(body.to_string())
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
