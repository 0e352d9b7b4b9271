//! `aas-gateway`: command-line entry point. All the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use aas_gateway::config::Config;
use aas_gateway::pipeline::{self, Gateway};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "aas-gateway",
    version,
    about = "OPC UA → Asset Administration Shell → QuestDB + MQTT edge gateway"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a config file.
    Run {
        /// Config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
        /// Override the API port (0 = pick a free one; the URL is printed on stdout).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Check a config file and report every error.
    Validate {
        /// Config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Zero-setup demo: bundled OPC UA simulator + embedded MQTT broker + gateway, all on loopback.
    Demo {
        /// API port (0 = pick a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Also write to QuestDB/ILP, e.g. "http::addr=127.0.0.1:9000;".
        #[arg(long)]
        questdb: Option<String>,
        /// Use this config instead of config/demo.toml (its endpoint and broker are replaced).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// API tokens: `token new --role writer` prints a fresh token and the line for the config.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The audit log: check its hash chain or print lines of a time range.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a random token; only its SHA-256 goes into the config.
    New {
        /// reader, writer or admin.
        #[arg(long, default_value = "reader")]
        role: String,
        /// Who holds the token (shown in the audit log).
        #[arg(long, default_value = "operator")]
        name: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of every audit file; exit 1 naming the first broken line.
    Verify {
        /// Config file whose `[audit] dir` to check (default: ./config.toml's).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Or the audit directory itself.
        #[arg(long, conflicts_with = "config")]
        dir: Option<PathBuf>,
    },
    /// Print the audit lines between two times (dates like 2026-11-25 or RFC 3339).
    Export {
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(long, conflicts_with = "config")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `[log] format = "json"` in the config counts like --log-json; the file is read here only
    // for that (errors surface when the command loads it properly).
    let config_json = match &cli.command {
        Command::Run { config, .. }
        | Command::Demo {
            config: Some(config),
            ..
        } => {
            Config::load(config).is_ok_and(|c| c.log.format == aas_gateway::config::LogFormat::Json)
        }
        _ => false,
    };
    aas_gateway::init_logging(cli.log_json || config_json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { config } => {
            let cfg = Config::load(&config)?;
            match pipeline::check(&cfg) {
                Ok((env, router)) => {
                    println!(
                        "{}: OK: {} OPC UA source(s), {} mapping rule(s), {} shell(s), {} submodel(s); MQTT {}, QuestDB {}, API {}",
                        config.display(),
                        cfg.opcua.len(),
                        router.routes.len(),
                        env.shells.len(),
                        env.submodels.len(),
                        if cfg.mqtt.enabled { format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port) } else { "off".into() },
                        if cfg.questdb.enabled { cfg.questdb.conf.as_str() } else { "off" },
                        if cfg.api.enabled { cfg.api.listen.as_str() } else { "off" },
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    eprint!("{}: {errors}", config.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Run { config, port } => {
            let mut cfg = Config::load(&config)?;
            if let Some(port) = port {
                cfg.api.listen = aas_gateway::demo::with_port(&cfg.api.listen, port);
            }
            let shutdown = CancellationToken::new();
            let gateway = Gateway::start(cfg, shutdown.clone()).await?;
            print_api_url(&gateway);
            stop_on_signal(shutdown);
            gateway.wait().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command: TokenCommand::New { role, name },
        } => {
            let role: aas_gateway::security::Role =
                role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let token =
                aas_gateway::security::tokens::generate_token().map_err(|e| anyhow::anyhow!(e))?;
            let hash = aas_gateway::security::tokens::hash_token(&token);
            println!("token: {token}");
            println!(
                "# Give the token to its holder (it is shown only now); put this in the config:"
            );
            println!(
                "[[api.auth.tokens]]\nname = {name:?}\nrole = \"{role}\"\nsha256 = \"{hash}\""
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command } => audit_command(command),
        Command::Demo {
            port,
            questdb,
            config,
        } => {
            let shutdown = CancellationToken::new();
            let demo =
                aas_gateway::demo::Demo::start(port, questdb, config, shutdown.clone()).await?;
            print_api_url(&demo.gateway);
            stop_on_signal(shutdown);
            demo.wait().await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn audit_dir(config: Option<PathBuf>, dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = dir {
        return Ok(dir);
    }
    let config = config.unwrap_or_else(|| PathBuf::from("config.toml"));
    let cfg = Config::load(&config)?;
    Ok(cfg.resolve(&cfg.audit.dir))
}

fn audit_command(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify { config, dir } => {
            let dir = audit_dir(config, dir)?;
            match aas_gateway::audit::verify(&dir) {
                Ok(r) => {
                    println!(
                        "{}: OK: {} line(s) in {} file(s), chain {}",
                        dir.display(),
                        r.lines,
                        r.files,
                        if r.from_genesis {
                            "complete from the first line"
                        } else {
                            "starts after files removed by retention"
                        }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("BROKEN: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCommand::Export {
            from,
            to,
            config,
            dir,
        } => {
            let dir = audit_dir(config, dir)?;
            let bound = |s: Option<String>, end| {
                s.map(|s| aas_gateway::audit::parse_bound(&s, end))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!(e))
            };
            let (from, to) = (bound(from, false)?, bound(to, true)?);
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            aas_gateway::audit::export(&dir, from, to, &mut out).map_err(|e| anyhow::anyhow!(e))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_api_url(gateway: &Gateway) {
    if let Some(addr) = gateway.api_addr {
        // First line on stdout: scripts and tests read the URL from here.
        println!("http://{addr}/api/v3.0");
    }
}

fn stop_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stopping: draining the pipeline");
        shutdown.cancel();
    });
}
