//! `scripts/bench-budget`: the broker inside Genesys Cloud's API budget.
//!
//! The target is the real scim2-server behind `jit_e2e::proxy`, which counts
//! every request and enforces N requests a minute the way Genesys Cloud does
//! (one second of burst, 429 with `Retry-After`). The broker runs with
//! `scim.requests_per_minute = N` (it paces at 95 % of it). Reported, each
//! from its own fresh broker, tenant and proxy:
//!
//! 1. requests per grant lifecycle and 429s (grants activated and expired);
//! 2. expiry → verified removal for grants expiring while a full sweep runs,
//!    beside the same grants with no sweep;
//! 3. the target down for a while across expiries: recovery → last removal;
//! 4. a storm of grants expiring together: time to clear beside the floor
//!    `grants × 2 requests ÷ budget`.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // a benchmark: wall clock, panics end it

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use clap::Parser;
use jit_app::{NewAudit, NewJob, Store, SystemClock};
use jit_domain::{
    Grant, GrantState, Justification, RoleName, SweepKind, TicketId, UserName, ValidGrantRequest,
};
use jit_e2e::app::{SERVICENOW_PASSWORD, SERVICENOW_USER, ServiceNow, test_policy_path};
use jit_e2e::proxy::ScimProxy;
use jit_e2e::{Backend, SCIM_TOKEN, Tenant, fresh_database, percentile};
use jit_server::config::Config;
use secrecy::SecretString;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// The target's budget, requests a minute (Genesys Cloud: 300).
    #[arg(long, default_value_t = 300)]
    budget: u32,
    /// Grants in the lifecycle and sweep runs.
    #[arg(long, default_value_t = 20)]
    grants: usize,
    /// Users in the directory the sweep lists.
    #[arg(long, default_value_t = 2000)]
    sweep_users: usize,
    /// Grants expiring during the outage, and its length in seconds.
    #[arg(long, default_value_t = 50)]
    outage_grants: usize,
    #[arg(long, default_value_t = 30)]
    outage_secs: u64,
    /// Grants in the storm.
    #[arg(long, default_value_t = 500)]
    storm: usize,
}

fn user(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:05}@bench.example.com")
}

/// A broker over `scim` (the proxy) with a budget of `budget` a minute.
async fn broker(scim: &str, budget: u32, database_url: &str) -> (jit_server::Running, ServiceNow) {
    let servicenow = ServiceNow::start().await;
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        policy: test_policy_path(),
        ..Config::default()
    };
    config.database.url = SecretString::from(database_url.to_owned());
    config.servicenow.instance_url = Some(servicenow.url.clone());
    config.servicenow.user = Some(SERVICENOW_USER.into());
    config.servicenow.password = Some(SecretString::from(SERVICENOW_PASSWORD));
    config.scim.base_url = Some(scim.to_owned());
    config.scim.bearer_token = Some(SecretString::from(SCIM_TOKEN));
    config.scim.requests_per_minute = Some(budget);
    config.reconciler.enabled = false; // sweeps are started by the bench
    // The bench's grants cite changes the ServiceNow stand-in never heard
    // of: the ticket poll would end them early, mid-measurement.
    config.servicenow.poll_cron = "0 0 0 1 1 *".into();
    config.reconciler.requests_per_second = 1000; // only the shared budget paces it
    config.log.level = "warn".into();
    let running = jit_server::start(config, false, Arc::new(SystemClock))
        .await
        .unwrap();
    (running, servicenow)
}

/// Writes grants for `users` (holding the role already when `active`),
/// starting `start` and ending `end`, with their jobs.
async fn grants(
    store: &dyn Store,
    users: &[String],
    active: bool,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) {
    let role = RoleName::parse("Master Admin").unwrap();
    for (i, u) in users.iter().enumerate() {
        let request = ValidGrantRequest {
            user: UserName::parse(u).unwrap(),
            role: role.clone(),
            ticket: Some(TicketId::parse(&format!("CHG{:07}", i + 1)).unwrap()),
            justification: Justification::parse("benchmark: the directory budget").unwrap(),
            starts_at: start,
            expires_at: end,
        };
        let mut grant =
            Grant::from_request(request, "bench", start.min(Utc::now().trunc_subsecs(3)));
        let mut due = vec![end];
        if active {
            grant.state = GrantState::Active;
            grant.role_added_at = Some(start);
        } else {
            due.insert(0, start);
        }
        let jobs: Vec<NewJob> = due
            .into_iter()
            .map(|due_at| NewJob {
                user: grant.user.clone(),
                role: role.clone(),
                grant: Some(grant.id),
                due_at,
                removal: due_at == end,
            })
            .collect();
        let audit = NewAudit {
            at: grant.created_at,
            actor: "bench".into(),
            kind: "grant_requested",
            grant: Some(grant.id),
            ticket: None,
            data: json!({}),
        };
        store.insert_grant(&grant, &jobs, audit).await.unwrap();
    }
}

/// Waits until every grant ended with its removal verified; answers the
/// expiry → removal delays (ms, sorted) and the last removal time.
async fn removals(store: &dyn Store, n: usize) -> (Vec<f64>, DateTime<Utc>) {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let ended = store
            .grants(&jit_app::GrantFilter {
                state: Some(GrantState::Ended),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let done: Vec<&Grant> = ended
            .iter()
            .filter(|g| g.role_removed_at.is_some())
            .collect();
        if done.len() >= n {
            let mut delays: Vec<f64> = done
                .iter()
                .map(|g| (g.role_removed_at.unwrap() - g.expires_at).num_milliseconds() as f64)
                .collect();
            delays.sort_by(f64::total_cmp);
            let last = done.iter().filter_map(|g| g.role_removed_at).max().unwrap();
            return (delays, last);
        }
        assert!(Instant::now() < deadline, "removals never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh tenant holding `users` (with `roles`), the budget-enforcing proxy
/// in front of it, and a broker on a fresh database behind that.
async fn scenario(
    users: &[String],
    roles: &[&str],
    budget: u32,
) -> (Tenant, ScimProxy, jit_server::Running, ServiceNow) {
    let tenant = Tenant::new();
    for u in users {
        tenant.create_user(u, roles).await;
    }
    let proxy = ScimProxy::start(&tenant.base_url, Some(budget)).await;
    let db = fresh_database(Backend::Sqlite).await;
    let (running, servicenow) = broker(&proxy.base_url, budget, &db).await;
    (tenant, proxy, running, servicenow)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let per_s = f64::from(args.budget) / 60.0;
    println!(
        "# jit-budget-bench: target budget {} requests/min (the broker paces at 95 %)",
        args.budget
    );

    // 1 + 2a: a grant's whole life, no sweep.
    let users: Vec<String> = (0..args.grants).map(|i| user("life", i)).collect();
    let (_tenant, proxy, running, _sn) = scenario(&users, &["Employee"], args.budget).await;
    let now = Utc::now().trunc_subsecs(3);
    let end = now
        + TimeDelta::seconds(20 + (args.grants as i64 * 4) / i64::from(args.budget / 60).max(1));
    grants(running.app.store.as_ref(), &users, false, now, end).await;
    running.worker_wake.notify_one();
    let (quiet, _) = removals(running.app.store.as_ref(), users.len()).await;
    println!(
        "lifecycle: {} grants activated and expired: {} requests to the target = {:.1} per grant lifecycle; {} answered 429",
        users.len(),
        proxy.counts.requests(),
        proxy.counts.requests() as f64 / users.len() as f64,
        proxy.counts.limited()
    );
    println!(
        "expiry → verified removal, no sweep: p50 {:.0} ms, p99 {:.0} ms",
        percentile(&quiet, 50.0),
        percentile(&quiet, 99.0)
    );
    running.stop().await;

    // 2b: the same expiring while a sweep lists the whole directory.
    let mut all: Vec<String> = (0..args.grants).map(|i| user("swept", i)).collect();
    let holders = all.clone();
    let tenant = Tenant::new();
    for u in &holders {
        tenant.create_user(u, &["Employee", "Master Admin"]).await;
    }
    for i in 0..args.sweep_users.saturating_sub(args.grants) {
        let u = user("plain", i);
        tenant.create_user(&u, &["Employee"]).await;
        all.push(u);
    }
    let proxy = ScimProxy::start(&tenant.base_url, Some(args.budget)).await;
    let db = fresh_database(Backend::Sqlite).await;
    let (running, _sn) = broker(&proxy.base_url, args.budget, &db).await;
    let now = Utc::now().trunc_subsecs(3);
    let end = now + TimeDelta::seconds(8);
    grants(running.app.store.as_ref(), &holders, true, now, end).await;
    let app = running.app.clone();
    let sweep = tokio::spawn(async move {
        // Starts a few seconds before the expiry, so it is mid-listing then.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let config = jit_app::ReconcileConfig {
            requests_per_second: 1000,
            ..Default::default()
        };
        let t = Instant::now();
        let run = app
            .reconcile(SweepKind::Deep, "bench", true, "bench-sweeper", &config)
            .await
            .unwrap();
        (run, t.elapsed())
    });
    let (busy, _) = removals(running.app.store.as_ref(), holders.len()).await;
    let (run, took) = sweep.await.unwrap();
    println!(
        "expiry → verified removal, {} grants expiring during a sweep of {} users ({} pages, {:.1} s): p50 {:.0} ms, p99 {:.0} ms; {} answered 429",
        holders.len(),
        run.users_scanned,
        run.pages,
        took.as_secs_f64(),
        percentile(&busy, 50.0),
        percentile(&busy, 99.0),
        proxy.counts.limited()
    );
    running.stop().await;

    // 3: the target down across expiries.
    let users: Vec<String> = (0..args.outage_grants).map(|i| user("out", i)).collect();
    let (_tenant, proxy, running, _sn) =
        scenario(&users, &["Employee", "Master Admin"], args.budget).await;
    let now = Utc::now().trunc_subsecs(3);
    let end = now + TimeDelta::seconds(5);
    grants(running.app.store.as_ref(), &users, true, now, end).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set_down(true);
    tokio::time::sleep(Duration::from_secs(args.outage_secs)).await;
    proxy.set_down(false);
    let back = Utc::now();
    let (_, last) = removals(running.app.store.as_ref(), users.len()).await;
    let floor = users.len() as f64 * 2.0 / (per_s * 0.95); // at the broker's own pace
    println!(
        "outage: target down {} s across {} expiries; recovery → last verified removal {:.1} s (the budget's floor for {} changes at 2 requests: {:.1} s); {} requests refused while down",
        args.outage_secs,
        users.len(),
        (last - back).num_milliseconds() as f64 / 1000.0,
        users.len(),
        floor,
        proxy.counts.refused_down()
    );
    running.stop().await;

    // 4: a storm of grants expiring together.
    let users: Vec<String> = (0..args.storm).map(|i| user("storm", i)).collect();
    let (_tenant, proxy, running, _sn) =
        scenario(&users, &["Employee", "Master Admin"], args.budget).await;
    let now = Utc::now().trunc_subsecs(3);
    let end = now + TimeDelta::seconds(3);
    grants(running.app.store.as_ref(), &users, true, now, end).await;
    let (delays, last) = removals(running.app.store.as_ref(), users.len()).await;
    let floor = users.len() as f64 * 2.0 / per_s;
    println!(
        "storm: {} grants expiring together cleared {:.1} s after expiry (p50 {:.1} s); floor {} × 2 requests ÷ {}/min = {:.1} s ({:.0} % of it; the broker paces at 95 %); {} answered 429; {} requests",
        users.len(),
        (last - end).num_milliseconds() as f64 / 1000.0,
        percentile(&delays, 50.0) / 1000.0,
        users.len(),
        args.budget,
        floor,
        100.0 * (last - end).num_milliseconds() as f64 / 1000.0 / floor,
        proxy.counts.limited(),
        proxy.counts.requests()
    );
    running.stop().await;
}
