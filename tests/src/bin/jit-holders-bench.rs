//! `scripts/bench-holders`: the holders-first sweep's figures in BENCHMARKS.md.
//!
//! For each directory size, a real scim2-server tenant holds N users, a few
//! of them holding `Master Admin` with no grant, behind the counting proxy.
//! In the same run:
//! 1. requests per holders sweep (`roles.value` filter), with the holders
//!    present and then with none left (the genesys profile's: bench-genesys);
//! 2. requests per deep sweep (every user, 25 a page);
//! 3. the target's own time for one filtered query and for the full listing;
//! 4. the broker as deployed (default schedule: holders every minute, under
//!    a 300/min budget): out-of-band `Master Admin` at random moments →
//!    verified removal.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // a benchmark: wall clock, panics end it

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use jit_app::{App, ReconcileConfig, ReconcileRun, SystemClock};
use jit_domain::SweepKind;
use jit_e2e::app::{
    SERVICENOW_PASSWORD, SERVICENOW_USER, ServiceNow, shipped_policy, shipped_policy_path,
};
use jit_e2e::proxy::ScimProxy;
use jit_e2e::{Backend, SCIM_TOKEN, Tenant, fresh_database};
use jit_server::config::Config;
use secrecy::SecretString;
use serde_json::Value;

const ADMIN: &str = "Master Admin";

#[derive(Parser)]
struct Args {
    /// Directory sizes, smallest first.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    users: Vec<usize>,
    /// Users holding `Master Admin` without a grant.
    #[arg(long, default_value_t = 10)]
    holders: usize,
    /// Out-of-band additions timed against the default schedule, per size.
    #[arg(long, default_value_t = 10)]
    samples: usize,
    /// Over how many seconds those additions are spread (at random).
    #[arg(long, default_value_t = 150)]
    spread_secs: u64,
}

fn user(i: usize) -> String {
    format!("h{i:06}@bench.example.com")
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// jit-app's use cases over the proxy (generic SCIM; the genesys profile's
/// costs are `scripts/bench-genesys`'s).
async fn app(proxy: &ScimProxy) -> App {
    let store = jit_store::open(&fresh_database(Backend::Sqlite).await, true, 2)
        .await
        .unwrap();
    App::new(
        store,
        Arc::new(proxy.client()),
        Arc::new(jit_itsm::NoTicketSystem),
        Arc::new(SystemClock),
        Arc::new(shipped_policy()),
    )
}

/// One sweep: the run and the requests it cost the target.
async fn sweep(app: &App, proxy: &ScimProxy, kind: SweepKind) -> (ReconcileRun, u64) {
    let config = ReconcileConfig {
        requests_per_second: 10_000,
        ..ReconcileConfig::default()
    };
    let sent = proxy.counts.requests();
    let run = app
        .reconcile(kind, "bench", false, "bench", &config)
        .await
        .unwrap();
    assert_eq!(run.status, "completed", "{run:?}");
    (run, proxy.counts.requests() - sent)
}

/// The target's own time for `query` on /Users, every page of 25 (or 100).
async fn raw_listing(base_url: &str, filter: Option<&str>) -> (u64, f64) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let (mut start, mut requests) = (1u64, 0u64);
    let count = if filter.is_some() { 100 } else { 25 };
    loop {
        let mut query = vec![
            ("startIndex", start.to_string()),
            ("count", count.to_string()),
            (
                "attributes",
                "userName,roles,active,meta.version".to_owned(),
            ),
        ];
        if let Some(f) = filter {
            query.push(("filter", f.to_owned()));
        }
        let page: Value = http
            .get(format!("{base_url}/Users"))
            .bearer_auth(SCIM_TOKEN)
            .query(&query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        requests += 1;
        let n = page["Resources"].as_array().map_or(0, Vec::len) as u64;
        start += n;
        if n == 0 || start > page["totalResults"].as_u64().unwrap_or(0) {
            return (requests, started.elapsed().as_secs_f64());
        }
    }
}

async fn restore_holders(tenant: &Tenant, holders: &[String]) {
    for h in holders {
        tenant.add_role(h, ADMIN).await;
    }
}

/// The broker as `jit-broker serve` runs it by default, over the proxy, with
/// Genesys Cloud's budget: out-of-band additions at random moments, each
/// timed until the role is gone again (read from scim2-server directly).
async fn time_to_removal(tenant: &Tenant, proxy: &ScimProxy, args: &Args, n: usize) -> Vec<f64> {
    let database_url = fresh_database(Backend::Sqlite).await;
    // The shipped policy wants change tickets: a ServiceNow stand-in, idle.
    let servicenow = ServiceNow::start().await;
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        policy: shipped_policy_path(),
        ..Config::default()
    };
    config.database.url = SecretString::from(database_url);
    config.scim.base_url = Some(proxy.base_url.clone());
    config.scim.bearer_token = Some(SecretString::from(SCIM_TOKEN));
    config.scim.requests_per_minute = Some(300);
    config.servicenow.instance_url = Some(servicenow.url.clone());
    config.servicenow.user = Some(SERVICENOW_USER.into());
    config.servicenow.password = Some(SecretString::from(SERVICENOW_PASSWORD));
    config.log.level = "warn".into();
    assert_eq!(config.reconciler.holders_cron, "0 * * * * *", "the default");
    let running = jit_server::start(config, false, Arc::new(SystemClock))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..args.samples {
        // Users the earlier sweeps never touched, spread over the directory.
        let target = user(n - 1 - s * (n / (args.samples + 1)));
        let after = Duration::from_secs_f64(rand::random::<f64>() * args.spread_secs as f64);
        let tenant = tenant.clone();
        tasks.spawn(async move {
            tokio::time::sleep(after).await;
            tenant.add_role(&target, ADMIN).await;
            let added = Instant::now();
            loop {
                if !tenant.roles_of(&target).await.iter().any(|r| r == ADMIN) {
                    return added.elapsed().as_secs_f64();
                }
                assert!(added.elapsed() < Duration::from_secs(600), "{target}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let mut secs: Vec<f64> = tasks.join_all().await;
    secs.sort_by(f64::total_cmp);
    running.stop().await;
    secs
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let roles = shipped_policy().privileged_roles().count();
    println!(
        "# jit-holders-bench: {} privileged roles in the shipped policy, {} holders, {} timed additions over {} s",
        roles, args.holders, args.samples, args.spread_secs
    );
    for &n in &args.users {
        let tenant = Tenant::new();
        let every = (n / args.holders.max(1)).max(1);
        let filled = tenant
            .fill(n, move |i| {
                let roles: &'static [&'static str] = if i % every == 0 {
                    &["Employee", ADMIN]
                } else {
                    &["Employee"]
                };
                (user(i), roles)
            })
            .await;
        let holders: Vec<String> = (0..n).step_by(every).map(user).collect();
        eprintln!("setup: {n} users in {:.1} s", filled.as_secs_f64());
        let proxy = ScimProxy::start(&tenant.base_url, None).await;

        let (filter_requests, filter_secs) =
            raw_listing(&tenant.base_url, Some(r#"roles.value eq "Master Admin""#)).await;
        let (list_requests, list_secs) = raw_listing(&tenant.base_url, None).await;
        println!(
            "{n} users: target's own time: one role's holders {filter_secs:.3} s ({filter_requests} request), every user {list_secs:.1} s ({list_requests} requests)"
        );
        {
            let label = "generic, roles.value filter";
            let app = app(&proxy).await;
            let (run, requests) = sweep(&app, &proxy, SweepKind::Holders).await;
            assert_eq!(run.actions as usize, holders.len(), "{run:?}");
            let (quiet, quiet_requests) = sweep(&app, &proxy, SweepKind::Holders).await;
            assert_eq!(quiet.findings, 0, "{quiet:?}");
            println!(
                "{n} users, holders sweep ({label}): {} holders found and stripped: {requests} requests ({} to find them, {} to strip), {:.2} s; next sweep, none left: {quiet_requests} requests, {:.2} s",
                run.users_scanned,
                run.pages,
                requests - run.pages,
                secs(&run),
                secs(&quiet),
            );
            restore_holders(&tenant, &holders).await;
        }
        let (deep, deep_requests) = sweep(&app(&proxy).await, &proxy, SweepKind::Deep).await;
        assert_eq!(deep.actions as usize, holders.len(), "{deep:?}");
        println!(
            "{n} users, deep sweep: {deep_requests} requests ({} pages, {} to strip), {:.1} s",
            deep.pages,
            deep_requests - deep.pages,
            secs(&deep),
        );
        let times = time_to_removal(&tenant, &proxy, &args, n).await;
        println!(
            "{n} users, out-of-band {ADMIN} → verified removal, default schedule (holders every minute, 300/min budget), {} additions: p50 {:.1} s, p99 {:.1} s, max {:.1} s",
            times.len(),
            pct(&times, 0.5),
            pct(&times, 0.99),
            times.last().copied().unwrap_or(f64::NAN),
        );
        proxy.stop().await;
    }
}

fn secs(run: &ReconcileRun) -> f64 {
    run.finished_at
        .map(|f| (f - run.started_at).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(f64::NAN)
}
