//! `scripts/soak`: a steady stream of grants against `jit-broker serve --dev`
//! (started here, SQLite or PostgreSQL) or against a broker already running,
//! sampling the broker's resident memory, open sockets and database size,
//! and printing how fast each grows after warm-up. A bench, not a test: the
//! figures go to BENCHMARKS.md ("Soak"). Load stays on 127.0.0.1 and stops by
//! itself after `--minutes`.
#![allow(clippy::disallowed_methods)] // a soak reads the wall clock

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// How long the load runs.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Grant requests per second (one in `--bad-every` is refused on purpose).
    #[arg(long, default_value_t = 18.0)]
    rate: f64,
    /// Every n-th request breaks a rule (a justification too short): 422.
    #[arg(long, default_value_t = 3)]
    bad_every: u64,
    /// How long each grant lasts.
    #[arg(long, default_value = "3s")]
    grant: String,
    /// Ignored for the slope: allocators and caches fill first.
    #[arg(long, default_value_t = 60)]
    warmup_secs: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    /// The `jit-broker` binary to start with `serve --dev` (release build).
    #[arg(long)]
    broker: Option<PathBuf>,
    /// Start it on this PostgreSQL database instead of SQLite.
    #[arg(long)]
    postgres: Option<String>,
    /// A broker already running (its base URL); with `--pid` for memory.
    #[arg(long)]
    url: Option<String>,
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long, default_value = "dev-sandbox-key")]
    api_key: String,
}

/// One look at the broker.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    grants: u64,
    rss_kib: u64,
    anon_kib: u64,
    sockets: usize,
    db_bytes: u64,
}

/// A `/proc/<pid>/status` figure in KiB: `VmRSS` (resident), `RssAnon`
/// (the heap and stacks: what grows if something leaks), `RssFile` (the
/// binary's pages as they are touched).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

fn sqlite_bytes(dir: &Path) -> u64 {
    [
        "jit-broker-dev.db",
        "jit-broker-dev.db-wal",
        "jit-broker-dev.db-shm",
    ]
    .iter()
    .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
    .map(|m| m.len())
    .sum()
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

struct Started {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_dev(broker: &Path, postgres: Option<&str>) -> anyhow::Result<(Started, String)> {
    let dir = tempfile::Builder::new().prefix("jit-soak-").tempdir()?;
    let port = jit_e2e::free_port();
    let broker = broker.canonicalize().context("the broker binary")?;
    let mut command = Command::new(broker);
    command
        .args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        // What an operator would run: info, to a file we do not keep.
        .env("RUST_LOG", "info")
        // The shipped policy, wherever the sandbox's directory is.
        .env(
            "JIT_POLICY",
            jit_e2e::workspace_root().join("policies/policy.toml"),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("broker.log"))?);
    if let Some(url) = postgres {
        command.env("JIT_DATABASE__URL", url);
    }
    let child = command.spawn().context("start jit-broker serve --dev")?;
    jit_e2e::wait_for_port(port, "jit-broker", Duration::from_secs(30))?;
    Ok((Started { child, dir }, format!("http://127.0.0.1:{port}")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (started, base, pid) = match (&args.url, &args.broker) {
        (Some(url), _) => (None, url.clone(), args.pid),
        (None, Some(broker)) => {
            let (started, base) = start_dev(broker, args.postgres.as_deref()).await?;
            let pid = started.child.id();
            (Some(started), base, Some(pid))
        }
        (None, None) => bail!("give --broker (to start serve --dev) or --url"),
    };
    let pid = pid.context("--pid is needed to sample a broker started elsewhere")?;
    let pg = match &args.postgres {
        Some(url) => Some(sqlx::PgPool::connect(url).await?),
        None => None,
    };
    let db_bytes = |pg: Option<sqlx::PgPool>, dir: Option<PathBuf>| async move {
        match (pg, dir) {
            (Some(pool), _) => {
                sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
                    .fetch_one(&pool)
                    .await
                    .map_or(0, |n| u64::try_from(n).unwrap_or(0))
            }
            (None, Some(dir)) => sqlite_bytes(&dir),
            (None, None) => 0,
        }
    };
    let dir = started.as_ref().map(|s| s.dir.path().to_owned());

    let http = reqwest::Client::new();
    let granted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let total = (args.minutes * 60.0 * args.rate) as u64;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let begun = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut tasks = tokio::task::JoinSet::new();
    println!(
        "soak: {total} requests at {}/s against {base} (pid {pid})",
        args.rate
    );
    println!(
        "{:>7} {:>9} {:>10} {:>11} {:>8} {:>10}",
        "t (s)", "grants", "RSS (MiB)", "anon (MiB)", "sockets", "DB (MiB)"
    );
    for i in 0..total {
        let due = interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_sub(begun.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        if begun.elapsed() >= next_sample {
            let s = Sample {
                at: begun.elapsed().as_secs_f64(),
                grants: granted.load(Ordering::Relaxed),
                rss_kib: status_kib(pid, "VmRSS:"),
                anon_kib: status_kib(pid, "RssAnon:"),
                sockets: sockets(pid),
                db_bytes: db_bytes(pg.clone(), dir.clone()).await,
            };
            println!(
                "{:>7.0} {:>9} {:>10.1} {:>11.1} {:>8} {:>10.1}",
                s.at,
                s.grants,
                s.rss_kib as f64 / 1024.0,
                s.anon_kib as f64 / 1024.0,
                s.sockets,
                s.db_bytes as f64 / 1_048_576.0
            );
            samples.push(s);
            next_sample += Duration::from_secs(args.sample_secs);
        }
        // Keep the number in flight bounded: a broker that falls behind
        // must show as latency, not as an unbounded pile of requests here.
        while tasks.len() >= 64 {
            tasks.join_next().await;
        }
        let (http, base, key) = (http.clone(), base.clone(), args.api_key.clone());
        let (granted, refused, failed) = (granted.clone(), refused.clone(), failed.clone());
        let bad = args.bad_every > 0 && i % args.bad_every == args.bad_every - 1;
        let grant = args.grant.clone();
        tasks.spawn(async move {
            let body = json!({
                "user": "alice@example.com", "role": "Master Admin", "ticket": "CHG0000001",
                "duration": grant,
                "justification": if bad { "short" } else { "Rotate the SIP trunk certificate" },
            });
            let answer = http
                .post(format!("{base}/api/v1/grants"))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await;
            match answer.map(|r| r.status().as_u16()) {
                Ok(201) => granted.fetch_add(1, Ordering::Relaxed),
                Ok(422) if bad => refused.fetch_add(1, Ordering::Relaxed),
                _ => failed.fetch_add(1, Ordering::Relaxed),
            };
            // As an operator's tooling would: a listing now and then, and a
            // holders sweep every 300 grants.
            if i % 10 == 0 {
                let _ = http
                    .get(format!(
                        "{base}/api/v1/grants?user=alice@example.com&limit=20"
                    ))
                    .bearer_auth(&key)
                    .send()
                    .await;
            }
            if i % 300 == 0 {
                let _ = http
                    .post(format!("{base}/api/v1/reconcile?kind=holders"))
                    .bearer_auth(&key)
                    .send()
                    .await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let grants = granted.load(Ordering::Relaxed);
    let warm: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= args.warmup_secs as f64)
        .collect();
    let per = |f: fn(&Sample) -> f64| {
        slope(
            &warm
                .iter()
                .map(|s| (s.grants as f64, f(s)))
                .collect::<Vec<_>>(),
        ) * 10_000.0
    };
    println!(
        "soak: {grants} granted, {} refused on purpose, {} unexpected answers, {:.0} s",
        refused.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        begun.elapsed().as_secs_f64()
    );
    if let (Some(first), Some(last)) = (warm.first(), warm.last()) {
        println!(
            "after warm-up ({} s): RSS {:.1} → {:.1} MiB, slope {:.2} MiB per 10 000 grants \
             (anonymous {:.1} → {:.1} MiB, {:.2}); sockets {} → {}; database {:.1} → {:.1} MiB \
             ({:.2} MiB per 10 000 grants)",
            args.warmup_secs,
            first.rss_kib as f64 / 1024.0,
            last.rss_kib as f64 / 1024.0,
            per(|s| s.rss_kib as f64 / 1024.0),
            first.anon_kib as f64 / 1024.0,
            last.anon_kib as f64 / 1024.0,
            per(|s| s.anon_kib as f64 / 1024.0),
            first.sockets,
            last.sockets,
            first.db_bytes as f64 / 1_048_576.0,
            last.db_bytes as f64 / 1_048_576.0,
            per(|s| s.db_bytes as f64 / 1_048_576.0),
        );
    }
    drop(started);
    Ok(())
}
