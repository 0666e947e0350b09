//! `scripts/bench-replicas`: what more replicas buy. For 1, 2 and 3 real
//! `jit-broker serve` processes on one PostgreSQL (a cluster of the bench's
//! own), against the same scim2-server behind the proxy (with a WAN's
//! latency added): N grants that expire in the same second, expiry →
//! verified removal p50/p99 and the time until the last removal is
//! verified. Beside them, the target's own rate in the same run: the same
//! removals (find the user, PATCH the role away) sent straight to the proxy.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // a benchmark: wall clock, panics end it

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SubsecRound, TimeDelta, Utc};
use clap::Parser;
use jit_app::Directory;
use jit_domain::RoleChange;
use jit_domain::{RoleName, UserName};
use jit_e2e::app::ServiceNow;
use jit_e2e::fleet::{Fleet, FleetTargets, grant_body, request_grants, wait_for_all_removed};
use jit_e2e::proxy::ScimProxy;
use jit_e2e::{PgCluster, Tenant, percentile};

#[derive(Parser)]
struct Args {
    /// Grants expiring together, in each run.
    #[arg(long, default_value_t = 300)]
    grants: usize,
    /// Added to every answer of the target, in milliseconds.
    #[arg(long, default_value_t = 150)]
    latency_ms: u64,
    /// Replica counts to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    replicas: Vec<usize>,
    /// Give the target Genesys Cloud's budget (requests a minute, shared by
    /// the replicas as one OAuth client); none by default.
    #[arg(long)]
    budget: Option<u32>,
}

fn user(run: usize, i: usize) -> String {
    format!("r{run}-{i:04}@bench.example.com")
}

struct Figures {
    replicas: usize,
    p50: f64,
    p99: f64,
    clear: f64,
    patches: usize,
    refused: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = std::env::current_exe()?.with_file_name("jit-broker-under-test");
    anyhow::ensure!(bin.exists(), "build jit-broker-under-test first ({bin:?})");
    let cluster = PgCluster::start()?;
    let latency = Duration::from_millis(args.latency_ms);
    let started = Instant::now();
    let mut rows = Vec::new();
    for (run, &replicas) in args.replicas.iter().enumerate() {
        rows.push(run_one(&bin, &cluster, run, replicas, &args, latency).await);
    }
    // The target's own rate, the same run: the removals sent straight to it.
    let direct = match args.budget {
        None => target_rate(args.grants, latency).await,
        Some(_) => Vec::new(),
    };

    println!(
        "\n{} grants expiring in the same second; target: scim2-server behind the proxy, +{} ms a request{}",
        args.grants,
        args.latency_ms,
        args.budget
            .map(|b| format!(", budget {b}/min for the one OAuth client"))
            .unwrap_or_default()
    );
    println!(
        "| replicas | expiry → verified removal p50 | p99 | last removal verified | PATCHes | 429s |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} s | {:.2} s | {:.2} s | {} | {} |",
            r.replicas, r.p50, r.p99, r.clear, r.patches, r.refused
        );
    }
    for (in_flight, took) in direct {
        println!(
            "target's own: {} removals (find + PATCH) with {in_flight} in flight, straight to the proxy: {:.2} s",
            args.grants,
            took.as_secs_f64()
        );
    }
    if let Some(budget) = args.budget {
        // Two requests a removal, at the 95 % the broker paces at.
        let floor = (args.grants * 2) as f64 * 60.0 / (f64::from(budget) * 0.95);
        println!(
            "floor at the budget: {floor:.1} s for {} removals",
            args.grants
        );
    }
    println!("bench took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn run_one(
    bin: &std::path::Path,
    cluster: &PgCluster,
    run: usize,
    replicas: usize,
    args: &Args,
    latency: Duration,
) -> Figures {
    let grants = args.grants;
    let database_url = cluster.create_database().await;
    let tenant = Tenant::new();
    tenant
        .fill(grants, move |i| {
            (user(run, i), &["Employee"] as &'static [&'static str])
        })
        .await;
    let proxy = ScimProxy::start(&tenant.base_url, args.budget).await;
    proxy.set_latency(latency);
    let servicenow = ServiceNow::start().await;
    for i in 0..grants {
        servicenow.approve(
            &format!("CHG2{i:06}"),
            &user(run, i),
            "Master Admin",
            Utc::now(),
        );
    }
    let mut fleet = Fleet::new(
        bin,
        replicas,
        &FleetTargets {
            database_url: &database_url,
            scim_base_url: &proxy.base_url,
            servicenow_url: &servicenow.url,
            requests_per_minute: args.budget,
            // Sweeps would share the target with the expiries; not measured here.
            extra: "[reconciler]\nenabled = false\n",
        },
    );
    for i in 0..replicas {
        fleet.start(i).await;
    }
    // Everyone starts in 10 s and expires in the same second, once every
    // activation is long done (at the budget: its floor and a half).
    let starts = (Utc::now() + TimeDelta::seconds(10)).trunc_subsecs(0);
    let duration = match args.budget {
        None => 40,
        Some(b) => (grants as u64 * 2 * 60 / u64::from(b)) * 3 / 2 + 30,
    };
    let duration = format!("{duration}s");
    let body = move |i| grant_body(&user(run, i), &format!("CHG2{i:06}"), starts, &duration);
    request_grants(&fleet.bases(), grants, body, 8).await;
    let all = wait_for_all_removed(&database_url, grants, Duration::from_secs(600)).await;
    let late_activations = all
        .iter()
        .filter(|g| g.role_added_at.is_none_or(|a| a > g.expires_at))
        .count();
    assert_eq!(
        late_activations, 0,
        "every activation verified before the expiry"
    );
    let mut took: Vec<f64> = all
        .iter()
        .map(|g| (g.role_removed_at.unwrap() - g.expires_at).as_seconds_f64())
        .collect();
    took.sort_by(f64::total_cmp);
    let figures = Figures {
        replicas,
        p50: percentile(&took, 50.0),
        p99: percentile(&took, 99.0),
        clear: took.last().copied().unwrap_or(f64::NAN),
        patches: proxy.counts.patches_seen().len(),
        refused: proxy.counts.limited(),
    };
    eprintln!(
        "{replicas} replica(s): p50 {:.2} s, p99 {:.2} s, last {:.2} s, {} requests, {} refused 429",
        figures.p50,
        figures.p99,
        figures.clear,
        proxy.counts.requests(),
        proxy.counts.limited()
    );
    drop(fleet);
    proxy.stop().await;
    figures
}

/// `grants` users given the role, then the role removed from each straight
/// through the broker's own SCIM client (find the user, PATCH), with 32 and
/// 96 in flight: what the target itself allows, beside the replicas.
async fn target_rate(grants: usize, latency: Duration) -> Vec<(usize, Duration)> {
    let mut out = Vec::new();
    for (run, in_flight) in [(90, 32), (91, 64), (92, 96)] {
        let tenant = Tenant::new();
        tenant
            .fill(grants, move |i| {
                (
                    user(run, i),
                    &["Employee", "Master Admin"] as &'static [&'static str],
                )
            })
            .await;
        let proxy = ScimProxy::start(&tenant.base_url, None).await;
        proxy.set_latency(latency);
        let client: Arc<dyn Directory> = Arc::new(proxy.client());
        let role = RoleName::parse("Master Admin").unwrap();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..in_flight {
            let (client, role, next) = (client.clone(), role.clone(), next.clone());
            set.spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= grants {
                        return;
                    }
                    let name = UserName::parse(&user(run, i)).unwrap();
                    let found = client.find_user(&name).await.unwrap();
                    client
                        .change_role(&found, &role, RoleChange::Remove)
                        .await
                        .unwrap();
                }
            });
        }
        while set.join_next().await.is_some() {}
        out.push((in_flight, started.elapsed()));
        proxy.stop().await;
    }
    out
}
