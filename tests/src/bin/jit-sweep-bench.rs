//! `scripts/bench-sweep`: the reconciler figures in BENCHMARKS.md.
//!
//! A real scim2-server tenant is filled with N users, 1 % of them holding
//! `Master Admin` with no grant. In the same run:
//! 1. the target's own page rate: every page of 25 read with nothing in front;
//! 2. the broker's sweep (jit-app's reconciler over the real SCIM client and a
//!    SQLite store) in a child process, so that its peak RSS (`VmHWM`) is the
//!    sweep's own. The sweep runs at two directory sizes to show that memory
//!    does not grow with the directory.
#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use jit_app::{App, ReconcileConfig, SystemClock};
use jit_domain::SweepKind;
use jit_e2e::app::{scim_client, test_policy};
use jit_e2e::{Backend, SCIM_TOKEN, Tenant, fresh_database};
use serde_json::Value;

#[derive(Parser)]
struct Args {
    /// Directory sizes to sweep, smallest first.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    users: Vec<usize>,
    /// Child mode: sweep this tenant and print one JSON line.
    #[arg(long, hide = true)]
    sweep_tenant: Option<String>,
    #[arg(long, default_value_t = 25)]
    page_size: u32,
    /// The sweep's request budget (requests/s); high, to measure the sweep itself.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn sweep_child(base_url: &str, args: &Args) -> anyhow::Result<()> {
    let store = jit_store::open(&fresh_database(Backend::Sqlite).await, true, 2).await?;
    let app = App::new(
        store,
        Arc::new(scim_client(base_url, Duration::from_secs(30))),
        Arc::new(jit_itsm::NoTicketSystem),
        Arc::new(SystemClock),
        Arc::new(test_policy()),
    );
    let config = ReconcileConfig {
        page_size: args.page_size,
        requests_per_second: args.rate,
        ..ReconcileConfig::default()
    };
    let before = vm_hwm_kib();
    let started = Instant::now();
    let run = app
        .reconcile(SweepKind::Deep, "bench", false, "bench", &config)
        .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "status": run.status, "users": run.users_scanned, "pages": run.pages,
            "findings": run.findings, "removed": run.actions, "errors": run.errors,
            "secs": secs, "vm_hwm_kib": vm_hwm_kib(), "vm_hwm_before_kib": before,
        })
    );
    Ok(())
}

async fn fill(tenant: &Tenant, n: usize) -> anyhow::Result<Duration> {
    Ok(tenant
        .fill(n, |i| {
            let roles: &'static [&'static str] = if i % 100 == 0 {
                &["Employee", "Master Admin"]
            } else {
                &["Employee"]
            };
            (format!("s{i:06}@bench.example.com"), roles)
        })
        .await)
}

/// The target's own rate for the same pages, with nothing in front.
async fn raw_pages(base_url: &str, page_size: u32) -> anyhow::Result<(u64, f64)> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut start = 1u64;
    let mut users = 0u64;
    loop {
        let page: Value = http
            .get(format!("{base_url}/Users"))
            .bearer_auth(SCIM_TOKEN)
            .query(&[
                ("startIndex", start.to_string()),
                ("count", page_size.to_string()),
                ("attributes", "userName,roles,active,meta.version".into()),
            ])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let n = page["Resources"].as_array().map_or(0, Vec::len) as u64;
        users += n;
        start += n;
        if n == 0 || start > page["totalResults"].as_u64().unwrap_or(0) {
            return Ok((users, started.elapsed().as_secs_f64()));
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(tenant) = &args.sweep_tenant {
        return sweep_child(tenant, &args).await;
    }
    println!(
        "# jit-sweep-bench: {} cores, {}, page size {}, sweep budget {} req/s",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH,
        args.page_size,
        args.rate
    );
    println!(
        "| users | target raw users/s, before / after the sweep | sweep users/s | sweep time | findings / removed | sweep peak RSS |"
    );
    println!("|---|---|---|---|---|---|");
    for &n in &args.users {
        let tenant = Tenant::new();
        let filled = fill(&tenant, n).await?;
        eprintln!("setup: {n} users in {:.1} s", filled.as_secs_f64());
        let (listed, raw_secs) = raw_pages(&tenant.base_url, args.page_size).await?;
        anyhow::ensure!(listed as usize == n, "listed {listed} of {n}");
        let out = Command::new(std::env::current_exe()?)
            .args(["--sweep-tenant", &tenant.base_url])
            .args(["--page-size", &args.page_size.to_string()])
            .args(["--rate", &args.rate.to_string()])
            .output()
            .context("running the sweep child")?;
        anyhow::ensure!(
            out.status.success(),
            "sweep child: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let r: Value = serde_json::from_str(line.lines().last().unwrap_or("{}"))?;
        anyhow::ensure!(r["status"] == "completed" && r["users"] == n, "sweep: {r}");
        let secs = r["secs"].as_f64().unwrap_or(f64::NAN);
        // Measured again after: scim2-server's page time depends on its state.
        let (_, raw_after) = raw_pages(&tenant.base_url, args.page_size).await?;
        println!(
            "| {n} | {:.0} / {:.0} | {:.0} | {:.1} s | {} / {} | {:.1} MiB |",
            n as f64 / raw_secs,
            n as f64 / raw_after,
            n as f64 / secs,
            secs,
            r["findings"],
            r["removed"],
            r["vm_hwm_kib"].as_f64().unwrap_or(0.0) / 1024.0
        );
    }
    Ok(())
}
