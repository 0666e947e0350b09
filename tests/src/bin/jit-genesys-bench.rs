//! `scripts/bench-genesys`: what the genesys profile costs Genesys Cloud, in
//! requests, against the stand-in (crates/jit-genesys-standin) enforcing 300
//! requests a minute per OAuth client. Two paths in one run, each on its own
//! stand-in and store:
//! - `grants`: roles as grants per division through the Authorization API
//!   (what the genesys profile does now);
//! - `scim`: roles by SCIM `PATCH`, holders from the role's users (before).
//!
//! For each: a grant lifecycle (K grants activated, then expired), a holders
//! sweep with H users and one group holding `Master Admin` without a grant,
//! the same sweep once nothing is left, and a deep sweep of N users.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // a benchmark: wall clock, panics end it

use std::time::Instant;

use clap::Parser;
use jit_app::{Directory, ReconcileConfig};
use jit_domain::SweepKind;
use jit_e2e::Backend;
use jit_e2e::app::{Stack, grant_request, test_policy};
use jit_e2e::genesys::Genesys;
use jit_genesys_standin::{ALL_DIVISIONS, Settings};

const ADMIN: &str = "Master Admin";

#[derive(Parser)]
struct Args {
    /// Users in the org.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Grants activated and expired together.
    #[arg(long, default_value_t = 20)]
    grants: usize,
    /// Users holding `Master Admin` without a grant when the sweep runs.
    #[arg(long, default_value_t = 10)]
    holders: usize,
}

struct Figures {
    per_lifecycle: f64,
    lifecycle_secs: f64,
    holders_sweep: u64,
    holders_found: u64,
    idle_sweep: u64,
    deep_sweep: u64,
    limited: u64,
    achieved_per_sec: f64,
}

async fn run(path: &str, args: &Args) -> Figures {
    let genesys = Genesys::start(Settings::default(), &[ADMIN, "Employee"]).await;
    let g = &genesys.standin;
    let policy = test_policy();
    let emea = g.add_division("EMEA");
    let admin = g.org().role_by_name(ADMIN).unwrap().id.clone();
    let ids: Vec<String> = (0..args.users)
        .map(|i| g.add_user(&format!("u{i:05}@bench.example.com")))
        .collect();
    let directory: std::sync::Arc<dyn Directory> = match path {
        "grants" => std::sync::Arc::new(genesys.client(&policy)),
        _ => std::sync::Arc::new(genesys.scim_client()),
    };
    let stack = Stack::new(Backend::Sqlite, directory).await;

    // A lifecycle: K grants start together, then end together.
    let sent = genesys.requests();
    let started = Instant::now();
    for i in 0..args.grants {
        let user = format!("u{i:05}@bench.example.com");
        stack
            .request(grant_request(&user, &format!("CHG{:07}", 30_000 + i), "1h"))
            .await;
    }
    stack.run_due().await;
    stack.advance(3600);
    stack.run_due().await;
    let lifecycle_secs = started.elapsed().as_secs_f64();
    let lifecycle = genesys.requests() - sent;

    // Standing privilege: H users by hand (half of them in EMEA), and a group.
    for (n, id) in ids.iter().rev().take(args.holders).enumerate() {
        let division = if n % 2 == 0 {
            emea.as_str()
        } else {
            ALL_DIVISIONS
        };
        g.grant(id, &admin, division);
    }
    let members: Vec<&str> = ids.iter().take(3).map(String::as_str).collect();
    let group = g.add_group("Contact centre admins", &members);
    g.grant(&group, &admin, ALL_DIVISIONS);
    let config = ReconcileConfig {
        requests_per_second: 10_000,
        ..ReconcileConfig::default()
    };
    let sweep = |kind| {
        let (stack, config, genesys) = (&stack, &config, &genesys);
        async move {
            let before = genesys.requests();
            let run = stack
                .app
                .reconcile(kind, "bench", false, "bench", config)
                .await
                .unwrap();
            assert_eq!(run.status, "completed", "{run:?}");
            (genesys.requests() - before, run.actions)
        }
    };
    let (holders_sweep, holders_found) = sweep(SweepKind::Holders).await;
    let (idle_sweep, _) = sweep(SweepKind::Holders).await;
    let (deep_sweep, _) = sweep(SweepKind::Deep).await;
    Figures {
        per_lifecycle: lifecycle as f64 / args.grants as f64,
        lifecycle_secs,
        holders_sweep,
        holders_found,
        idle_sweep,
        deep_sweep,
        limited: genesys.limited(),
        achieved_per_sec: lifecycle as f64 / lifecycle_secs,
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    println!(
        "stand-in: 300 requests a minute per client (5/s); broker pace 95 % (4.75/s); {} users, {} grants, {} holders + 1 group of 3",
        args.users, args.grants, args.holders
    );
    println!(
        "{:<8} {:>14} {:>12} {:>10} {:>14} {:>14} {:>12} {:>11} {:>6}",
        "path",
        "req/lifecycle",
        "lifecycles s",
        "req/s",
        "holders sweep",
        "stripped",
        "idle sweep",
        "deep sweep",
        "429s"
    );
    for path in ["grants", "scim"] {
        let f = run(path, &args).await;
        println!(
            "{:<8} {:>14.2} {:>12.1} {:>10.2} {:>14} {:>14} {:>12} {:>11} {:>6}",
            path,
            f.per_lifecycle,
            f.lifecycle_secs,
            f.achieved_per_sec,
            f.holders_sweep,
            f.holders_found,
            f.idle_sweep,
            f.deep_sweep,
            f.limited
        );
    }
}
