//! The `jit-broker` command line. `main.rs` only calls [`main`], so tests run
//! exactly this code as a real process.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

mod audit;
mod policy;

use crate::config::{Config, LogFormat};
use crate::{DEV_DATABASE_URL, api, start};
use anyhow::Context;
use clap::{Parser, Subcommand};
use jit_app::{GrantFilter, Store, SystemClock};
use jit_domain::{GrantState, SweepKind, TicketId, UserName};
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

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SweepArg {
    Holders,
    Deep,
}

impl From<SweepArg> for SweepKind {
    fn from(arg: SweepArg) -> Self {
        match arg {
            SweepArg::Holders => Self::Holders,
            SweepArg::Deep => Self::Deep,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the worker (migrates the database first).
    Serve {
        /// Sandbox: an in-memory Genesys Cloud with seeded users, and the
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
    /// Check the directory's OAuth client has each permission a feature in
    /// use needs (genesys profile): one harmless read per feature; changes
    /// nothing. Exit 0: all there; 3: one is missing; 2: could not tell.
    Doctor,
    /// One reconciler sweep now: strip privileged roles held without cause.
    Reconcile {
        /// Report what would be stripped; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// `deep` lists every user; `holders` asks who holds each privileged role.
        #[arg(long, value_enum, default_value_t = SweepArg::Deep)]
        kind: SweepArg,
    },
    /// The policy file.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file; with --user and --role, print the decision
    /// table for that sample request (exit 3 when it would be refused).
    Check(PolicyCheck),
}

#[derive(clap::Args)]
struct PolicyCheck {
    /// The policy file (default: the configured one).
    file: Option<PathBuf>,
    /// The user the grant is for.
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    role: Option<String>,
    /// OIDC groups of the user (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    #[arg(long)]
    duration: Option<String>,
    /// The cited change; omit for a request without a ticket.
    #[arg(long)]
    ticket: Option<String>,
    /// The change's state: new, assess, authorize, scheduled, implement, review, closed, canceled.
    #[arg(long, default_value = "implement")]
    change_state: String,
    #[arg(long, default_value = "approved")]
    approval: String,
    /// The change's assignee (default: the user).
    #[arg(long)]
    assignee: Option<String>,
    #[arg(long, default_value = "normal")]
    change_type: String,
    /// The user is a member of the change's assignment group.
    #[arg(long)]
    in_assignment_group: bool,
    /// How long the change window still runs from now.
    #[arg(long, default_value = "8h")]
    window: String,
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
    /// Walk the hash chain and its signed checkpoints (or an exported file)
    /// and name the first thing wrong.
    Verify {
        /// Verify this export (JSON lines from `audit export`) on its own,
        /// without the database.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The checkpoint signer's public key (hex) to trust; default
        /// `audit.public_key`, else the configured checkpoint key's own.
        #[arg(long)]
        public_key: Option<String>,
        /// With no trusted key, accept the key each checkpoint names (proves
        /// only that someone holding some key signed it). Without this flag
        /// that case fails.
        #[arg(long)]
        trust_embedded_key: bool,
    },
    /// Events as JSON lines (seq, prev_hash, hash, ...), then the checkpoints
    /// that cover them as `{"checkpoint": ...}` lines.
    Export {
        /// RFC 3339 time: events at or after it.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// RFC 3339 time: events before it.
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        grant: Option<jit_domain::GrantId>,
        /// Events naming this user.
        #[arg(long)]
        user: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Make an ed25519 checkpoint key: the secret goes to `--out` (mode
    /// 0600), the public key to standard output.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign the chain's head now (as the broker does on `audit.checkpoint_cron`).
    Checkpoint,
}

fn init_tracing(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder
            .fmt_fields(crate::telemetry::escaping_fields())
            .init(),
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
        } => list_grants(&config, user, state, ticket, limit, json).await?,
        Command::Audit { command } => return audit::audit(&config, command).await,
        Command::Policy {
            command: PolicyCommand::Check(check),
        } => return policy::policy_check(&config, check).await,
        Command::Reconcile { dry_run, kind } => return reconcile(&config, dry_run, kind).await,
        Command::Doctor => return doctor(&config).await,
        Command::HashKey => {
            let mut key = String::new();
            std::io::stdin().read_to_string(&mut key)?;
            let key = key.trim();
            anyhow::ensure!(key.len() >= 24, "an API key must be at least 24 characters");
            println!("{}", api::hash_key(key));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `jit-broker grants list`: the store's grants, newest first.
async fn list_grants(
    config: &Config,
    user: Option<String>,
    state: Option<String>,
    ticket: Option<String>,
    limit: u32,
    json: bool,
) -> anyhow::Result<()> {
    let store = open_store(config, false).await?;
    let filter = GrantFilter {
        user: user
            .map(|u| UserName::parse(&u).map_err(|e| anyhow::anyhow!("--user {}", e.message)))
            .transpose()?,
        state: state
            .map(|s| s.parse::<GrantState>())
            .transpose()
            .context("--state")?,
        ticket: ticket
            .map(|t| TicketId::parse(&t).map_err(|e| anyhow::anyhow!("--ticket {}", e.message)))
            .transpose()?,
        before: None,
        limit: limit.clamp(1, 1000),
        ..GrantFilter::default()
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
                g.ticket.as_ref().map_or("-", |t| t.as_str()),
                g.starts_at.format("%Y-%m-%d %H:%M:%S"),
                g.expires_at.format("%Y-%m-%d %H:%M:%S")
            );
        }
    }
    Ok(())
}

/// `jit-broker reconcile`: one sweep now, printed with its findings.
async fn reconcile(config: &Config, dry_run: bool, kind: SweepArg) -> anyhow::Result<ExitCode> {
    init_tracing(config);
    let store = open_store(config, true).await?;
    let policy = Arc::new(crate::load_policy(&config.policy)?);
    let directory = Arc::new(crate::directory_from_config(config, &policy)?);
    let app = jit_app::App::new(
        store,
        directory,
        Arc::new(jit_itsm::NoTicketSystem),
        Arc::new(SystemClock),
        policy,
    );
    let owner = format!("cli-{}", std::process::id());
    let run = app
        .reconcile(
            kind.into(),
            "cli",
            dry_run,
            &owner,
            &config.reconciler.to_reconcile_config(),
        )
        .await?;
    let (run, findings) = app.reconcile_run(&run.id).await?;
    println!(
        "{} run {}: {}{} — {} users in {} requests, {} findings, {} removed, {} errors",
        run.kind.as_str(),
        run.id,
        run.status,
        if run.dry_run { " (dry run)" } else { "" },
        run.users_scanned,
        run.pages,
        run.findings,
        run.actions,
        run.errors
    );
    if let Some(e) = &run.error {
        println!("error: {e}");
    }
    if !findings.is_empty() {
        println!(
            "\n{:<32}  {:<20}  {:<20}  {:<12}  DETAIL",
            "USER", "ROLE", "KIND", "ACTION"
        );
        for f in &findings {
            println!(
                "{:<32}  {:<20}  {:<20}  {:<12}  {}",
                f.user,
                f.role,
                f.kind,
                f.action.as_str(),
                f.detail
            );
        }
    }
    if run.status != "completed" {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `jit-broker doctor`: the permission probe, printed.
async fn doctor(config: &Config) -> anyhow::Result<ExitCode> {
    let policy = crate::load_policy(&config.policy)?;
    let directory = crate::directory_from_config(config, &policy)?;
    let Some(probes) =
        jit_app::Directory::probe_permissions(&directory, config.reconciler.oauth_clients).await
    else {
        println!("the generic SCIM profile has no permissions to check");
        return Ok(ExitCode::SUCCESS);
    };
    println!("{:<64}  {:<28}  RESULT", "FEATURE", "PERMISSION");
    let mut code = ExitCode::SUCCESS;
    for p in &probes {
        let result = match &p.outcome {
            jit_app::ProbeOutcome::Allowed => "ok".to_owned(),
            jit_app::ProbeOutcome::NotProbed => {
                "not probed (a write); give it to the client's role".to_owned()
            }
            jit_app::ProbeOutcome::Missing => {
                code = ExitCode::from(3);
                "MISSING: this feature will fail".to_owned()
            }
            jit_app::ProbeOutcome::Failed(why) => {
                if code == ExitCode::SUCCESS {
                    code = ExitCode::from(2);
                }
                format!("could not tell: {why}")
            }
        };
        println!("{:<64}  {:<28}  {result}", p.feature, p.permission);
    }
    Ok(code)
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
