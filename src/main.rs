//! `aas-gateway`: command-line entry point. All the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use aas_gateway::config::Config;
use aas_gateway::pipeline::{self, Gateway};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// The allocator: jemalloc, for memory that goes back to the system.
///
/// With glibc malloc, a gateway at 100k items held about 40 MB of freed memory on top of its
/// live heap (109 MB in use, 150 MB resident), even after `malloc_trim`: start-up parses the
/// config and the AAS into temporaries several times the size of what stays, and the small
/// blocks that stay end up scattered over the pages those temporaries used. jemalloc keeps
/// blocks of one size together and returns pages unused for [`MALLOC_CONF`]'s decay time.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (read once, at the first allocation; the environment variable
/// `_RJEM_MALLOC_CONF` overrides them, e.g. to try other values on site):
/// - `narenas:1`: one arena. The gateway has a handful of busy threads; jemalloc's default (4
///   per core) kept each arena's free pages apart, and per-thread caches already spare the
///   lock.
/// - `background_thread:true`: a jemalloc thread returns pages, not the thread that frees.
/// - `dirty_decay_ms:250,muzzy_decay_ms:0`: a freed page goes back to the system after about
///   a quarter of a second unused (the default, 10 s, held a whole start-up's temporaries for
///   that long, and every publish burst's buffers). 250 ms returns a burst's buffers before the
///   next burst at 1 s publishing: 2–6 MiB less than 1000 ms at 100k items @ 1 s in three
///   same-run comparisons, the CPU within the runs' noise (the next burst faults about a
///   thousand pages back in a second); 0 ms cost 60 % more CPU.
#[cfg(target_os = "linux")]
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8; 69] =
    b"narenas:1,background_thread:true,dirty_decay_ms:250,muzzy_decay_ms:0\0";

/// Standard output of the printing commands (`export`, `browse`, `validate`, `pki`, `token`,
/// `audit`). A reader that goes away early (`aas-gateway export … | head`) ends the command
/// quietly and successfully, as it does for other Unix tools: `println!` panicked there
/// ("failed printing to stdout: Broken pipe", exit 101).
struct QuietStdout;

impl std::io::Write for QuietStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        end_quietly_on_closed_pipe(std::io::stdout().write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        end_quietly_on_closed_pipe(std::io::stdout().flush())
    }
}

fn end_quietly_on_closed_pipe<T>(result: std::io::Result<T>) -> std::io::Result<T> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other,
    }
}

/// `println!` for the printing commands, through [`QuietStdout`]; other write errors (a full
/// disk behind a redirect) are returned.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(QuietStdout, $($arg)*)?;
    }};
}

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
    /// Print the AAS environment the config serves (templates with every mapping checked) as
    /// AAS v3 JSON on stdout: `aas-gateway export -c config/factory.toml > env.json`.
    Export {
        /// Config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
        /// Connect to the OPC UA sources first (for at most this many seconds; done as soon as
        /// every mapped node sent a value), so the export carries current values instead of
        /// the templates' initial ones.
        #[arg(long, value_name = "SECONDS")]
        live: Option<u64>,
        /// Write an AASX package (IDTA-01005, JSON inside) to this file instead of JSON to stdout.
        #[arg(long, value_name = "FILE")]
        aasx: Option<PathBuf>,
        /// Also write the config's [[mapping]] rules as AID 1.1 + AIMC 1.0 submodels, so that
        /// the export runs with only the secrets left in the TOML.
        #[arg(long)]
        aid: bool,
    },
    /// Walk a server's address space and print a mapping config skeleton (TOML) on stdout, or
    /// (with --aas) write a ready-to-run AAS environment and print the config that runs it.
    Browse {
        /// Endpoint URL, e.g. opc.tcp://10.0.0.5:4840/
        endpoint: String,
        /// None, Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss.
        #[arg(long, default_value = "None")]
        security_policy: String,
        /// None, Sign, SignAndEncrypt.
        #[arg(long, default_value = "None")]
        security_mode: String,
        /// User name (user/password token); anonymous without it.
        #[arg(long)]
        user: Option<String>,
        /// Password of --user (or set AAS_GATEWAY_BROWSE_PASSWORD).
        #[arg(long)]
        password: Option<String>,
        /// The gateway's PKI directory (own certificate, trusted/rejected server certificates).
        #[arg(long, default_value = "pki")]
        pki_dir: PathBuf,
        /// Accept any server certificate (commissioning only).
        #[arg(long)]
        trust_server_cert: bool,
        /// Levels below the root to walk.
        #[arg(long, default_value_t = 5)]
        depth: usize,
        /// Start node (node id in any form; default the Objects folder).
        #[arg(long, default_value = "i=85")]
        root: String,
        /// Stop after this many nodes.
        #[arg(long, default_value_t = 100_000)]
        max_nodes: usize,
        /// AAS environment(s) whose element idShorts are matched with browse names to fill in
        /// submodel and path (repeatable).
        #[arg(long)]
        aas_template: Vec<PathBuf>,
        /// Write an AAS environment that runs as it is to this file (`.json`, or `.aasx` for a
        /// package): a shell per machine with operational data, nameplate, and the AID 1.1 +
        /// AIMC 1.0 submodels that map it; stdout gets the config that runs it.
        #[arg(long, value_name = "FILE", conflicts_with = "aas_template")]
        aas: Option<PathBuf>,
    },
    /// The gateway's certificate store (server certificates trusted/rejected).
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Zero-setup demo: bundled OPC UA simulator + embedded MQTT broker + gateway, all on loopback.
    #[cfg(feature = "demo")]
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

#[derive(Subcommand)]
enum PkiCommand {
    /// List the gateway's own, trusted and rejected certificates of every source's pki_dir.
    List {
        /// Config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Trust a server certificate: a thumbprint (prefix of 8+ hex digits) of a rejected
    /// certificate, or a certificate file.
    Trust {
        /// Config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
        /// Thumbprint or certificate file.
        what: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `[log] format = "json"` in the config counts like --log-json; the file is read here only
    // for that (errors surface when the command loads it properly).
    let config_json = match &cli.command {
        Command::Run { config, .. } => Some(config),
        #[cfg(feature = "demo")]
        Command::Demo {
            config: Some(config),
            ..
        } => Some(config),
        _ => None,
    }
    .is_some_and(|config| {
        Config::load(config).is_ok_and(|c| c.log.format == aas_gateway::config::LogFormat::Json)
    });
    aas_gateway::init_logging(cli.log_json || config_json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(run(cli.command));
    // Dropping a runtime waits for every blocking task without limit; one stuck on a dead peer
    // (an ILP flush, a DNS lookup) must not hold the exit: shutdown is bounded.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
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
            // Lenient: unknown keys and wrong values are reported below together with
            // everything else, instead of stopping at the first.
            let cfg = Config::load_lenient(&config)?;
            match pipeline::check(&cfg) {
                Ok((env, router)) => {
                    out!(
                        "{}: OK: {} OPC UA source(s), {} mapping rule(s), {} shell(s), {} submodel(s); MQTT {}, QuestDB {}, API {}",
                        config.display(),
                        cfg.opcua.len(),
                        router.routes.len(),
                        env.shells.len(),
                        env.submodels.len(),
                        if cfg.mqtt.enabled { format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port) } else { "off".into() },
                        if cfg.questdb.enabled { cfg.questdb.conf_redacted() } else { "off".into() },
                        if cfg.api.enabled { cfg.api.listen.as_str() } else { "off" },
                    );
                    // Where the gateway keeps state, after overrides (containers set these).
                    println!(
                        "  state: outbox {}, audit {}",
                        cfg.resolve(&cfg.outbox.dir).display(),
                        if cfg.audit.enabled {
                            cfg.resolve(&cfg.audit.dir).display().to_string()
                        } else {
                            "off".into()
                        },
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    eprint!("{}: {errors}", config.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Export {
            config,
            live,
            aasx,
            aid,
        } => {
            let cfg = Config::load(&config)?;
            let with_aid = if aid {
                let (env, _) = pipeline::check(&cfg)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
                let toml_rules = &cfg.mapping[..cfg.from_aas.toml_rules];
                let (submodels, left_out) = aas_gateway::mapping::aimc::export::export(
                    &cfg.gateway.name,
                    &cfg.opcua[..cfg.from_aas.toml_sources],
                    toml_rules,
                    &env,
                );
                for line in left_out {
                    eprintln!("warning: {line}");
                }
                submodels
            } else {
                Vec::new()
            };
            let mut env = match live {
                None => {
                    let (env, _) = pipeline::check(&cfg)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
                    env.to_json()
                }
                Some(seconds) => {
                    pipeline::snapshot_live(cfg, std::time::Duration::from_secs(seconds)).await?
                }
            };
            if !with_aid.is_empty() {
                env["submodels"]
                    .as_array_mut()
                    .ok_or_else(|| anyhow::anyhow!("the environment has no submodels"))?
                    .extend(with_aid);
            }
            match aasx {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    aas_gateway::aas::aasx::write_aasx(&env, file)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                }
                None => out!("{}", serde_json::to_string_pretty(&env)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config, port } => {
            let mut cfg = Config::load(&config)?;
            if let Some(port) = port {
                cfg.api.listen = aas_gateway::api::with_port(&cfg.api.listen, port);
            }
            let shutdown = CancellationToken::new();
            let gateway = Gateway::start(cfg, shutdown.clone()).await?;
            print_api_url(&gateway);
            stop_on_signal(shutdown);
            gateway.wait().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Browse {
            endpoint,
            security_policy,
            security_mode,
            user,
            password,
            pki_dir,
            trust_server_cert,
            depth,
            root,
            max_nodes,
            aas_template,
            aas,
        } => {
            let opts = aas_gateway::sources::opcua::browse::BrowseOptions {
                endpoint,
                security_policy,
                security_mode,
                user,
                // From the environment, the password stays out of the shell history.
                password: password.or_else(|| std::env::var("AAS_GATEWAY_BROWSE_PASSWORD").ok()),
                pki_dir,
                trust_server_certs: trust_server_cert,
                root,
                depth,
                max_nodes,
                aas_templates: aas_template,
            };
            let mut out = std::io::BufWriter::new(QuietStdout);
            if let Some(file) = aas {
                let summary =
                    aas_gateway::sources::opcua::browse_aas::run(&opts, &file, &mut out).await?;
                std::io::Write::flush(&mut out)?;
                tracing::info!(
                    nodes = summary.nodes,
                    shells = summary.shells,
                    variables = summary.variables,
                    truncated = summary.truncated,
                    file = %file.display(),
                    "browse finished"
                );
                return Ok(ExitCode::SUCCESS);
            }
            let summary = aas_gateway::sources::opcua::browse::run(&opts, &mut out).await?;
            std::io::Write::flush(&mut out)?;
            tracing::info!(
                nodes = summary.nodes,
                variables = summary.variables,
                matched = summary.matched,
                truncated = summary.truncated,
                "browse finished"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Pki { command } => pki(command),
        Command::Token {
            command: TokenCommand::New { role, name },
        } => {
            let role: aas_gateway::security::Role =
                role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let token =
                aas_gateway::security::tokens::generate_token().map_err(|e| anyhow::anyhow!(e))?;
            let hash = aas_gateway::security::tokens::hash_token(&token);
            out!("token: {token}");
            out!("# Give the token to its holder (it is shown only now); put this in the config:");
            out!("[[api.auth.tokens]]\nname = {name:?}\nrole = \"{role}\"\nsha256 = \"{hash}\"");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command } => audit_command(command),
        #[cfg(feature = "demo")]
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

/// The distinct PKI directories of a config's sources.
fn pki_dirs(cfg: &Config) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = cfg.opcua.iter().map(|s| cfg.resolve(&s.pki_dir)).collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

fn pki(command: PkiCommand) -> anyhow::Result<ExitCode> {
    use aas_gateway::sources::opcua::pki;
    match command {
        PkiCommand::List { config } => {
            let cfg = Config::load(&config)?;
            for dir in pki_dirs(&cfg) {
                // The own certificate is created here if missing, so that it can be given to
                // the server's administrator before the first connection.
                pki::ensure_own_certificate(&dir)?;
                out!("{}:", dir.display());
                for e in pki::list(&dir) {
                    out!(
                        "  {:<8} {}  {}  valid until {}  {}",
                        e.state.as_str(),
                        e.thumbprint,
                        e.subject,
                        e.not_after,
                        e.file.display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PkiCommand::Trust { config, what } => {
            let cfg = Config::load(&config)?;
            let mut done = 0;
            let mut errors = Vec::new();
            for dir in pki_dirs(&cfg) {
                match pki::trust(&dir, &what) {
                    Ok(path) => {
                        out!("trusted: {}", path.display());
                        done += 1;
                    }
                    Err(e) => errors.push(format!("{}: {e:#}", dir.display())),
                }
            }
            if done == 0 {
                anyhow::bail!("{}", errors.join("\n"));
            }
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
                    out!(
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
                    out!("BROKEN: {e}");
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
            let mut out = std::io::BufWriter::new(QuietStdout);
            aas_gateway::audit::export(&dir, from, to, &mut out).map_err(|e| anyhow::anyhow!(e))?;
            std::io::Write::flush(&mut out)?;
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
