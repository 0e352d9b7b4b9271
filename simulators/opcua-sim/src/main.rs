//! `opcua-sim`: the bundled OPC UA factory simulator.
//!
//! The first line on stdout is the endpoint URL; logs go to stderr.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
};

use anyhow::Context;
use clap::Parser;
use opcua_sim::{SimOptions, Simulator};

#[derive(Parser, Debug)]
#[command(
    name = "opcua-sim",
    version,
    about = "OPC UA factory simulator (CNC, injection moulding, conveyor, energy meter)"
)]
struct Args {
    /// Interface to listen on (also used in the endpoint URL).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// TCP port (0 = pick a free port).
    #[arg(long, default_value_t = 4840)]
    port: u16,
    /// Seed for the deterministic simulation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Machine update period in milliseconds.
    #[arg(long, default_value_t = 1000)]
    tick_ms: u64,
    /// Number of extra scale-mode variables nsu=urn:opcua-sim:scale;s=Scale.V<i>.
    #[arg(long, default_value_t = 0)]
    scale: usize,
    /// The scale variables all change every M milliseconds.
    #[arg(long = "interval-ms", default_value_t = 1000)]
    interval_ms: u64,
    /// PKI directory of the server (own certificate is created on first start). Default:
    /// `$XDG_DATA_HOME/opcua-sim/pki` (else `~/.local/share/opcua-sim/pki`), so the certificate
    /// stays the same across restarts and nothing is left in the working directory.
    #[arg(long)]
    pki_dir: Option<PathBuf>,
    /// Accepted user, as NAME:PASSWORD (repeatable).
    #[arg(long = "user", value_name = "NAME:PASS", value_parser = parse_user)]
    users: Vec<(String, String)>,
    /// Reject anonymous sessions.
    #[arg(long)]
    no_anonymous: bool,
}

fn parse_user(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((u, p)) if !u.is_empty() => Ok((u.to_owned(), p.to_owned())),
        _ => Err("expected NAME:PASSWORD".to_owned()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,opcua_server=warn,opcua_core=warn".into()),
        )
        .init();

    let sim = Simulator::start(SimOptions {
        host: args.host,
        port: args.port,
        seed: args.seed,
        tick_ms: args.tick_ms,
        scale: args.scale,
        scale_interval_ms: args.interval_ms,
        pki_dir: args.pki_dir.unwrap_or_else(opcua_sim::default_pki_dir),
        users: args.users,
        allow_anonymous: !args.no_anonymous,
    })
    .await?;

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", sim.endpoint_url())?;
        out.flush()?;
    }

    shutdown_signal()
        .await
        .context("waiting for a shutdown signal")?;
    tracing::info!("shutting down");
    sim.stop().await;
    Ok(())
}

#[cfg(unix)]
async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn shutdown_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
