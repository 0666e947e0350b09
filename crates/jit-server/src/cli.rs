//! The `jit-broker` command line. `main.rs` only calls [`main`], so tests run
//! exactly this code as a real process.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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

/// The public key `verify` trusts: the flag, the config, or the checkpoint
/// key's own.
fn trusted_key(config: &Config, flag: Option<String>) -> anyhow::Result<Option<String>> {
    if let Some(key) = flag.or_else(|| config.audit.public_key.clone()) {
        return Ok(Some(key));
    }
    Ok(config.audit.checkpoint_key()?.map(|k| k.public_hex()))
}

async fn audit(config: &Config, command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            file: None,
            public_key,
        } => {
            let trusted = trusted_key(config, public_key)?;
            let store = open_store(config, false).await?;
            match jit_store::verify_audit(store.as_ref(), trusted.as_deref()).await? {
                Ok(r) => println!(
                    "audit chain verified: {} events, {} checkpoints ({})",
                    r.events,
                    r.checkpoints,
                    if r.trusted_key {
                        "signatures checked against the trusted key"
                    } else {
                        "no trusted key given: signatures checked against the keys they name"
                    }
                ),
                Err(broken) => {
                    eprintln!("{broken}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        AuditCommand::Verify {
            file: Some(path),
            public_key,
        } => {
            let trusted = trusted_key(config, public_key)?;
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let (mut events, mut checkpoints) = (Vec::new(), Vec::new());
            for (n, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let value: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("{} line {}", path.display(), n + 1))?;
                match value.get("checkpoint") {
                    Some(cp) => {
                        checkpoints.push(serde_json::from_value(cp.clone()).with_context(|| {
                            format!("{} line {}: a checkpoint", path.display(), n + 1)
                        })?)
                    }
                    None => {
                        events.push(serde_json::from_value(value).with_context(|| {
                            format!("{} line {}: an event", path.display(), n + 1)
                        })?)
                    }
                }
            }
            match jit_store::verify_slice(&events, &checkpoints, trusted.as_deref()) {
                Ok(r) => println!(
                    "export verified: {} events ({} gaps where the export was filtered), {} checkpoints ({} matched an event in the file)",
                    r.events, r.gaps, r.checkpoints, r.checkpoints_matched
                ),
                Err(broken) => {
                    eprintln!("{broken}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        AuditCommand::Export {
            since,
            until,
            grant,
            user,
            out,
        } => {
            let store = open_store(config, false).await?;
            let app = crate::bare_app(config, store)?;
            let filter = jit_app::AuditFilter {
                since,
                until,
                grant,
                user,
            };
            let mut sink: Box<dyn std::io::Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let (mut cursor, mut written, mut last_seq) = (0, 0u64, 0);
            loop {
                let page = app.audit_page(&filter, cursor, 1000).await?;
                for e in &page.events {
                    writeln!(sink, "{}", serde_json::to_string(e)?)?;
                    last_seq = e.seq;
                    written += 1;
                }
                match page.next_cursor {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            for cp in app.audit_checkpoints().await? {
                if cp.seq <= last_seq {
                    writeln!(sink, "{}", serde_json::json!({"checkpoint": cp}))?;
                }
            }
            sink.flush()?;
            eprintln!("{written} events exported");
        }
        AuditCommand::Keygen { out } => {
            let key = jit_store::CheckpointKey::generate();
            write_secret_file(&out, &key.secret_hex())?;
            println!("{}", key.public_hex());
            eprintln!(
                "secret key written to {}; set audit.checkpoint_key_file to it, and give auditors the public key above",
                out.display()
            );
        }
        AuditCommand::Checkpoint => {
            let Some(key) = config.audit.checkpoint_key()? else {
                anyhow::bail!("audit.checkpoint_key_file is not set");
            };
            let store = open_store(config, true).await?;
            let app = crate::bare_app(config, store)?;
            match app.checkpoint_audit(&key).await? {
                Some(cp) => println!("checkpoint: seq {} hash {}", cp.seq, cp.hash),
                None => println!("nothing new since the last checkpoint"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` readable by its owner only, and writes `content`.
fn write_secret_file(path: &std::path::Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    writeln!(file, "{content}")?;
    Ok(())
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
        }
        Command::Audit { command } => return audit(&config, command).await,
        Command::Policy {
            command: PolicyCommand::Check(check),
        } => return policy_check(&config, check),
        Command::Reconcile { dry_run, kind } => {
            init_tracing(&config);
            let store = open_store(&config, true).await?;
            let policy = Arc::new(crate::load_policy(&config.policy)?);
            let directory = Arc::new(crate::directory_from_config(&config)?);
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
        }
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

fn policy_check(config: &Config, check: PolicyCheck) -> anyhow::Result<ExitCode> {
    use jit_app::Clock;
    use jit_domain::policy::{format_duration, parse_duration};
    use jit_domain::{
        ChangeState, ChangeTicket, Person, Team, TicketEvidence, decide, validate_grant_request,
    };

    let path = check.file.unwrap_or_else(|| config.policy.clone());
    let policy = crate::load_policy(&path)?;
    let privileged = policy.roles().filter(|r| r.privileged).count();
    println!(
        "{}: valid ({} roles, {privileged} privileged)",
        path.display(),
        policy.roles().count()
    );
    let (Some(user), Some(role)) = (check.user, check.role) else {
        println!(
            "\n{:<20}  {:<10}  {:<8}  {:<8}  {:<6}  {:<22}  {:<16}  {:<9}  ELIGIBLE",
            "ROLE", "PRIVILEGED", "DEFAULT", "MAX", "TICKET", "STATES", "REQUESTER", "APPROVALS"
        );
        for r in policy.roles() {
            let states: Vec<&str> = r.change_states.iter().map(|s| s.as_str()).collect();
            let mut eligible: Vec<String> =
                r.eligible.users.iter().map(|u| u.to_string()).collect();
            eligible.extend(r.eligible.groups.iter().map(|g| format!("group:{g}")));
            if r.eligible.anyone {
                eligible.insert(0, "*".into());
            }
            println!(
                "{:<20}  {:<10}  {:<8}  {:<8}  {:<6}  {:<22}  {:<16}  {:<9}  {}",
                r.name.as_str(),
                r.privileged,
                format_duration(r.default_duration),
                format_duration(r.max_duration),
                if r.require_ticket { "yes" } else { "no" },
                states.join(","),
                format!("{:?}", r.requester).to_lowercase(),
                r.approvals,
                eligible.join(", ")
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let now = jit_app::SystemClock.now();
    let mut body = serde_json::json!({
        "user": user, "role": role,
        "justification": "policy check sample request",
    });
    if let Some(d) = &check.duration {
        body["duration"] = serde_json::json!(d);
    }
    if let Some(t) = &check.ticket {
        body["ticket"] = serde_json::json!(t);
    }
    let valid = match validate_grant_request(&body, &policy, now) {
        Ok(v) => v,
        Err(errors) => {
            println!("\nthe request itself is refused:");
            for e in errors {
                println!("  {:<12} {:<18} {}", e.field, e.rule, e.message);
            }
            return Ok(ExitCode::from(3));
        }
    };
    let state: ChangeState = check
        .change_state
        .parse()
        .map_err(|_| anyhow::anyhow!("--change-state: unknown state `{}`", check.change_state))?;
    let window = parse_duration(&check.window).map_err(|m| anyhow::anyhow!("--window: {m}"))?;
    let assignee = check.assignee.unwrap_or_else(|| valid.user.to_string());
    let ticket = valid.ticket.clone().map(|number| ChangeTicket {
        number,
        sys_id: "sample".into(),
        state: Some(state),
        state_code: state.code().to_string(),
        approval: check.approval.clone(),
        start_date: Some(now - chrono::TimeDelta::minutes(5)),
        end_date: Some(now + window),
        assigned_to: Some(Person {
            sys_id: "sample".into(),
            user_name: None,
            email: Some(assignee.clone()),
        }),
        assignment_group: Some(Team {
            sys_id: "sample".into(),
            name: Some("sample group".into()),
        }),
        change_type: check.change_type.clone(),
        roles: vec![],
        read_at: now,
    });
    let evidence = match &ticket {
        None => TicketEvidence::NotCited,
        Some(t) => TicketEvidence::Found {
            ticket: t,
            group_member: Some(check.in_assignment_group),
        },
    };
    let groups = check.groups.into_iter().collect();
    let decision = decide(&policy, &valid, &groups, evidence, now);
    println!(
        "\nsample: `{}` as `{}` for {}{}",
        valid.user,
        valid.role,
        format_duration(valid.expires_at - valid.starts_at),
        ticket.as_ref().map_or(String::new(), |t| format!(
            ", citing {} ({}, {}, {} change assigned to {assignee}, window ends in {})",
            t.number, state, t.approval, t.change_type, check.window
        ))
    );
    println!("\n{:<6}  {:<40}  {:<24}  WHY", "RESULT", "CLAUSE", "RULE");
    for r in &decision.reasons {
        println!(
            "{:<6}  {:<40}  {:<24}  {}",
            if r.allowed { "allow" } else { "DENY" },
            r.clause,
            r.rule,
            r.message
        );
    }
    if decision.allowed {
        println!(
            "\ndecision: ALLOW → {} until {}{}",
            decision.state,
            decision.expires_at.format("%Y-%m-%d %H:%M:%S UTC"),
            if decision.emergency {
                " (emergency: SOC alerted)"
            } else {
                ""
            }
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\ndecision: DENY");
        Ok(ExitCode::from(3))
    }
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
