//! The `jit-broker` command line. `main.rs` only calls [`main`], so tests run
//! exactly this code as a real process.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::{Config, LogFormat};
use crate::{DEV_DATABASE_URL, http, start};
use anyhow::Context;
use clap::{Parser, Subcommand};
use jit_app::{GrantFilter, Store, SystemClock};
use jit_domain::{GrantState, TicketId, UserName};
use secrecy::{ExposeSecret, SecretString};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "jit-broker",
    version,
    about = "Just-in-time privilege elevation for Genesys Cloud CX"
)]
struct Cli {
    /// The TOML config file (every value can also come from JIT_* variables).
    #[arg(long, global = true, env = "JIT_CONFIG")]
    config: Option<PathBuf>,
    /// sqlite://FILE (default) or postgres://…; overrides the config.
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the worker (migrates the database first).
    Serve {
        /// Sandbox: an in-memory SCIM directory with seeded users, and the
        /// public API key `dev-sandbox-key`. Touches nothing real.
        #[arg(long)]
        dev: bool,
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Grants in the store.
    Grants {
        #[command(subcommand)]
        command: GrantsCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Read an API key on standard input and print the SHA-256 the config wants.
    HashKey,
}

#[derive(Subcommand)]
enum GrantsCommand {
    /// Newest first.
    List {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        ticket: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain and name the first broken link.
    Verify,
}

fn init_tracing(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

async fn open_store(config: &Config, migrate: bool) -> anyhow::Result<Arc<dyn Store>> {
    Ok(jit_store::open(
        config.database.url.expose_secret(),
        migrate,
        config.database.max_connections,
    )
    .await?)
}

pub fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jit-broker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Cli::parse())) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jit-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(url) = cli.database_url {
        config.database.url = SecretString::from(url);
    }
    match cli.command {
        Command::Serve { dev, listen } => {
            init_tracing(&config);
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if dev && config.database.url.expose_secret() == "sqlite://jit-broker.db" {
                config.database.url = SecretString::from(DEV_DATABASE_URL);
            }
            let mut running = start(config, dev, Arc::new(SystemClock)).await?;
            tokio::select! {
                _ = shutdown_signal() => tracing::info!("shutting down"),
                _ = running.stopped() => {}
            }
            running.stop().await;
        }
        Command::Migrate => {
            open_store(&config, true).await?;
            println!("migrations applied");
        }
        Command::Grants {
            command:
                GrantsCommand::List {
                    user,
                    state,
                    ticket,
                    limit,
                    json,
                },
        } => {
            let store = open_store(&config, false).await?;
            let filter = GrantFilter {
                user: user
                    .map(|u| {
                        UserName::parse(&u).map_err(|e| anyhow::anyhow!("--user {}", e.message))
                    })
                    .transpose()?,
                state: state
                    .map(|s| s.parse::<GrantState>())
                    .transpose()
                    .context("--state")?,
                ticket: ticket
                    .map(|t| {
                        TicketId::parse(&t).map_err(|e| anyhow::anyhow!("--ticket {}", e.message))
                    })
                    .transpose()?,
                before: None,
                limit: limit.clamp(1, 1000),
            };
            let grants = store.grants(&filter).await?;
            if json {
                for g in &grants {
                    println!("{}", serde_json::to_string(g)?);
                }
            } else {
                println!(
                    "{:<36}  {:<16}  {:<28}  {:<20}  {:<12}  {:<20}  EXPIRES",
                    "ID", "STATE", "USER", "ROLE", "TICKET", "STARTS"
                );
                for g in &grants {
                    println!(
                        "{:<36}  {:<16}  {:<28}  {:<20}  {:<12}  {:<20}  {}",
                        g.id,
                        g.state,
                        g.user,
                        g.role,
                        g.ticket,
                        g.starts_at.format("%Y-%m-%d %H:%M:%S"),
                        g.expires_at.format("%Y-%m-%d %H:%M:%S")
                    );
                }
            }
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let store = open_store(&config, false).await?;
            match jit_store::verify_audit(store.as_ref()).await? {
                Ok(n) => println!("audit chain verified: {n} events"),
                Err(broken) => {
                    eprintln!("{broken}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        Command::HashKey => {
            let mut key = String::new();
            std::io::stdin().read_to_string(&mut key)?;
            let key = key.trim();
            anyhow::ensure!(key.len() >= 24, "an API key must be at least 24 characters");
            println!("{}", http::hash_key(key));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
