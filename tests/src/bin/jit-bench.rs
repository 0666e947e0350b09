//! `scripts/bench`: the figures in BENCHMARKS.md.
//!
//! 1. Expiry storm: N users on a real scim2-server each hold `Master Admin`
//!    under an active grant; every grant expires in the same second. The real
//!    server (worker included) starts before that second and removes them.
//!    Reported: expiry → verified removal per grant (p50/p99/max, from the
//!    broker's own `role_removed_at`), time until the last removal, PATCH/s.
//! 2. In the same run, the target without the broker: raw PATCH/s, and raw
//!    converge sequences/s (lookup, PATCH, read-back: what converge sends).
//! 3. `POST /api/v1/grants` on SQLite: requests/s, p50/p99 latency.
//!
//! Setup writes the active grants straight to the store (so activation
//! traffic is not part of the timing); everything timed goes through the
//! real code paths. All load stays on 127.0.0.1 and is bounded in count.
#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{SubsecRound, TimeDelta, Utc};
use clap::Parser;
use jit_app::{NewAudit, NewJob, Store, SystemClock};
use jit_domain::{
    Grant, GrantState, Justification, RoleName, TicketId, UserName, ValidGrantRequest,
};
use jit_e2e::app::{API_KEY, SERVICENOW_PASSWORD, SERVICENOW_USER, ServiceNow, test_policy_path};

/// Distinct users (and their approved changes) the API load cycles through.
const API_USERS: usize = 1000;
use jit_e2e::{Backend, SCIM_TOKEN, Tenant, fresh_database, percentile};
use jit_server::config::{ApiKeyConfig, Config};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::task::JoinSet;

#[derive(Parser)]
struct Args {
    /// Grants expiring in the same second.
    #[arg(long, default_value_t = 10_000)]
    grants: usize,
    /// The broker's worker concurrency (directory calls in flight).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Requests for the raw target measurements.
    #[arg(long, default_value_t = 1000)]
    raw_requests: usize,
    /// Requests for the API measurement.
    #[arg(long, default_value_t = 5000)]
    api_requests: usize,
    /// Concurrent API clients.
    #[arg(long, default_value_t = 16)]
    api_clients: usize,
}

/// Runs `n` jobs with `concurrency` in flight; returns each job's latency (ms) and the wall time.
async fn bounded<F, Fut>(
    n: usize,
    concurrency: usize,
    job: F,
) -> anyhow::Result<(Vec<f64>, Duration)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (job, next) = (job.clone(), next.clone());
        set.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                job(i).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    all.sort_by(f64::total_cmp);
    Ok((all, started.elapsed()))
}

fn user_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:06}@bench.example.com")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tenant = Tenant::new();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    println!(
        "# jit-bench: {} grants, worker concurrency {}",
        args.grants, args.concurrency
    );
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    );

    // --- setup: users holding the role -----------------------------------
    let (_, took) = {
        let t = tenant.clone();
        bounded(args.grants, 8, move |i| {
            let t = t.clone();
            async move {
                t.create_user(&user_name("u", i), &["Employee", "Master Admin"])
                    .await;
                Ok(())
            }
        })
        .await?
    };
    println!(
        "setup: {} users created on scim2-server in {:.1} s",
        args.grants,
        took.as_secs_f64()
    );

    // --- the target alone ------------------------------------------------
    let raw_n = args.raw_requests;
    let mut raw_ids = Vec::with_capacity(raw_n);
    for i in 0..raw_n {
        raw_ids.push(
            tenant
                .create_user(&user_name("raw", i), &["Employee"])
                .await,
        );
    }
    let raw_ids = Arc::new(raw_ids);
    let (raw_patch, raw_patch_wall) = {
        let (http, base, ids) = (http.clone(), tenant.base_url.clone(), raw_ids.clone());
        bounded(raw_n, args.concurrency, move |i| {
            let (http, url) = (http.clone(), format!("{base}/Users/{}", ids[i]));
            async move {
                let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                  "Operations": [{"op": "add", "path": "roles", "value": [{"value": "Telephony Admin"}]}]});
                let r = http.patch(url).bearer_auth(SCIM_TOKEN).json(&body).send().await?;
                anyhow::ensure!(r.status().is_success(), "raw PATCH: {}", r.status());
                Ok(())
            }
        })
        .await?
    };
    let raw_patch_rate = raw_n as f64 / raw_patch_wall.as_secs_f64();
    let (_, raw_seq_wall) = {
        let (http, base) = (http.clone(), tenant.base_url.clone());
        bounded(raw_n, args.concurrency, move |i| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let name = user_name("raw", i);
                let list: Value = http
                    .get(format!("{base}/Users"))
                    .query(&[("filter", format!("userName eq \"{name}\"")), ("attributes", "userName,roles,active,meta.version".into())])
                    .bearer_auth(SCIM_TOKEN)
                    .send()
                    .await?
                    .json()
                    .await?;
                let id = list["Resources"][0]["id"].as_str().context("id")?.to_owned();
                let version = list["Resources"][0]["meta"]["version"].as_str().unwrap_or_default().to_owned();
                let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                  "Operations": [{"op": "remove", "path": "roles[value eq \"Telephony Admin\"]"}]});
                let r = http.patch(format!("{base}/Users/{id}")).bearer_auth(SCIM_TOKEN).header("If-Match", version).json(&body).send().await?;
                anyhow::ensure!(r.status().is_success(), "raw sequence PATCH: {}", r.status());
                http.get(format!("{base}/Users/{id}")).bearer_auth(SCIM_TOKEN).send().await?.error_for_status()?;
                Ok(())
            }
        })
        .await?
    };
    let raw_seq_rate = raw_n as f64 / raw_seq_wall.as_secs_f64();
    println!(
        "target alone (scim2-server, {} in flight): raw PATCH {:.0}/s (p50 {:.1} ms, p99 {:.1} ms); lookup+PATCH+read-back sequences {:.0}/s",
        args.concurrency,
        raw_patch_rate,
        percentile(&raw_patch, 50.0),
        percentile(&raw_patch, 99.0),
        raw_seq_rate
    );

    // --- active grants, all expiring at T --------------------------------
    let database_url = fresh_database(Backend::Sqlite).await;
    let store = jit_store::open(&database_url, true, 1).await?;
    let now = Utc::now().trunc_subsecs(3);
    let expires_at = now + TimeDelta::seconds(15 + (args.grants / 1000) as i64);
    let role = RoleName::parse("Master Admin").map_err(|e| anyhow::anyhow!(e.message))?;
    let t_insert = Instant::now();
    for i in 0..args.grants {
        let user = UserName::parse(&user_name("u", i)).map_err(|e| anyhow::anyhow!(e.message))?;
        let request = ValidGrantRequest {
            user: user.clone(),
            role: role.clone(),
            ticket: Some(
                TicketId::parse(&format!("CHG{:07}", i + 1))
                    .map_err(|e| anyhow::anyhow!(e.message))?,
            ),
            justification: Justification::parse("benchmark: expiry storm")
                .map_err(|e| anyhow::anyhow!(e.message))?,
            starts_at: now,
            expires_at,
        };
        // Already active, role already held: activation is not what is timed.
        let grant = Grant {
            state: GrantState::Active,
            role_added_at: Some(now),
            ..Grant::from_request(request, "bench", now)
        };
        let job = NewJob {
            user,
            role: role.clone(),
            grant: Some(grant.id),
            due_at: expires_at,
            removal: true,
        };
        let audit = NewAudit {
            at: now,
            actor: "bench".into(),
            kind: "grant_requested",
            grant: Some(grant.id),
            ticket: None,
            data: json!({}),
        };
        store.insert_grant(&grant, &[job], audit).await?;
    }
    println!(
        "setup: {} active grants written in {:.1} s",
        args.grants,
        t_insert.elapsed().as_secs_f64()
    );
    drop(store);
    anyhow::ensure!(
        Utc::now() < expires_at - TimeDelta::seconds(2),
        "setup overran the expiry instant; raise the margin"
    );

    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        policy: test_policy_path(),
        ..Config::default()
    };
    // Every API request's change is read from the ServiceNow stand-in, as in
    // production; one approved change per benchmark user.
    let servicenow = ServiceNow::start().await;
    for u in 0..API_USERS {
        servicenow.approve(
            &format!("CHG{:07}", u + 1),
            &user_name("u", u),
            "Master Admin",
            Utc::now(),
        );
    }
    config.servicenow.instance_url = Some(servicenow.url.clone());
    config.servicenow.user = Some(SERVICENOW_USER.into());
    config.servicenow.password = Some(SecretString::from(SERVICENOW_PASSWORD));
    config.database.url = SecretString::from(database_url.clone());
    config.scim.base_url = Some(tenant.base_url.clone());
    config.scim.bearer_token = Some(SecretString::from(SCIM_TOKEN));
    config.worker.concurrency = args.concurrency;
    config.api_keys = vec![ApiKeyConfig {
        name: "bench".into(),
        sha256: jit_server::api::hash_key(API_KEY),
        admin: true,
        // The bench files as fast as it can.
        grant_requests_per_minute: Some(0),
    }];
    config.log.level = "warn".into();
    let running = jit_server::start(config, false, Arc::new(SystemClock)).await?;
    let store = running.app.store.clone();

    let wait = (expires_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    let deadline = Instant::now() + Duration::from_secs(1800);
    // A one-row query while the storm runs, so polling barely competes with
    // the worker for SQLite's one connection; the full read comes after.
    let active = jit_app::GrantFilter {
        state: Some(GrantState::Active),
        limit: 1,
        ..Default::default()
    };
    while !store.grants(&active).await?.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "grants still active after 30 min"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let removed = loop {
        let removed = removed_delays_ms(store.as_ref(), args.grants).await?;
        if removed.len() == args.grants {
            break removed;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} removed after 30 min",
            removed.len(),
            args.grants
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let last = removed.last().copied().unwrap_or_default();
    println!(
        "expiry storm: {} roles removed (verified by read-back); expiry → last removal {:.2} s; per grant p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        args.grants,
        last / 1000.0,
        percentile(&removed, 50.0),
        percentile(&removed, 99.0),
        last
    );
    let broker_rate = args.grants as f64 / (last / 1000.0);
    println!(
        "broker: {:.0} PATCH/s = {:.0}% of the target's raw PATCH rate, {:.0}% of its raw lookup+PATCH+read-back rate",
        broker_rate,
        100.0 * broker_rate / raw_patch_rate,
        100.0 * broker_rate / raw_seq_rate
    );
    let still_held = count_holders(&http, &tenant.base_url).await?;
    println!(
        "directory check: {still_held} of {} users still hold Master Admin",
        args.grants
    );

    // --- POST /api/v1/grants ---------------------------------------------
    let base = format!("http://{}", running.addr);
    let starts = (Utc::now() + TimeDelta::hours(1)).to_rfc3339();
    let (api, api_wall) = {
        let http = http.clone();
        bounded(args.api_requests, args.api_clients, move |i| {
            let (http, base, starts) = (http.clone(), base.clone(), starts.clone());
            async move {
                let body = json!({"user": user_name("u", i % API_USERS), "role": "Master Admin", "ticket": format!("CHG{:07}", i % API_USERS + 1),
                                  "duration": "1h", "starts_at": starts, "justification": "benchmark: API throughput"});
                let r = http.post(format!("{base}/api/v1/grants")).bearer_auth(API_KEY).json(&body).send().await?;
                anyhow::ensure!(r.status() == 201, "POST /api/v1/grants: {}", r.status());
                Ok(())
            }
        })
        .await?
    };
    println!(
        "POST /api/v1/grants (SQLite, {} clients, in-process load): {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms",
        args.api_clients,
        args.api_requests as f64 / api_wall.as_secs_f64(),
        percentile(&api, 50.0),
        percentile(&api, 99.0)
    );
    running.stop().await;
    Ok(())
}

/// Milliseconds from expiry to the broker's verified removal, sorted.
async fn removed_delays_ms(store: &dyn Store, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    let mut before = None;
    loop {
        let filter = jit_app::GrantFilter {
            state: Some(GrantState::Ended),
            before,
            limit: 1000,
            ..jit_app::GrantFilter::default()
        };
        let page = store.grants(&filter).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        out.extend(page.iter().filter_map(|g| {
            g.role_removed_at
                .map(|r| (r - g.expires_at).num_milliseconds() as f64)
        }));
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// Users still holding the role, read from the target itself (paged).
async fn count_holders(http: &reqwest::Client, base: &str) -> anyhow::Result<usize> {
    let mut held = 0;
    let mut start = 1;
    loop {
        let page: Value = http
            .get(format!("{base}/Users"))
            .query(&[
                ("startIndex", start.to_string()),
                ("count", "500".into()),
                ("attributes", "userName,roles".into()),
            ])
            .bearer_auth(SCIM_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        let users = page["Resources"].as_array().cloned().unwrap_or_default();
        if users.is_empty() {
            break;
        }
        held += users
            .iter()
            .filter(|u| {
                u["roles"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["value"] == "Master Admin")
            })
            .count();
        start += users.len();
    }
    Ok(held)
}
