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
    /// Audited actions each grantee takes while holding the role.
    #[arg(long, default_value_t = 5)]
    actions: usize,
}

struct Figures {
    per_lifecycle: f64,
    /// Requests of a grant's three activity passes (preliminary, +15 min, +24 h).
    per_activity: f64,
    lifecycle_secs: f64,
    holders_sweep: u64,
    holders_found: u64,
    idle_sweep: u64,
    deep_sweep: u64,
    limited: u64,
    achieved_per_sec: f64,
}

async fn run(path: &str, args: &Args) -> Figures {
    // The stand-in keeps the stack's time, so the audit trail and the
    // grants' windows agree.
    let clock = std::sync::Arc::new(jit_app::ManualClock::new(jit_e2e::app::t0()));
    let read = clock.clone();
    let genesys = Genesys::start_with_clock(
        Settings::default(),
        &[ADMIN, "Employee"],
        std::sync::Arc::new(move || jit_app::Clock::now(read.as_ref())),
    )
    .await;
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
    let stack = Stack::with_clock(Backend::Sqlite, directory, test_policy(), clock).await;

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
    stack.advance(600);
    for id in ids.iter().take(args.grants) {
        for n in 0..args.actions {
            g.record(jit_genesys_standin::audit::Action::by(
                id,
                "Routing",
                "Queue",
                &format!("Queue {n}"),
                "Update",
            ));
        }
    }
    stack.advance(3000);
    stack.run_due().await;
    let lifecycle_secs = started.elapsed().as_secs_f64();
    let lifecycle = genesys.requests() - sent;

    // What was done: the three passes of every grant (the scim path's
    // client reads the same trail).
    let sent = genesys.requests();
    for step in [0, 15 * 60, 24 * 3600] {
        stack.advance(step);
        while stack.app.run_due_activity("bench").await.unwrap() > 0 {}
    }
    let activity = genesys.requests() - sent;

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
        per_activity: activity as f64 / args.grants as f64,
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
        "stand-in: 300 requests a minute per client (5/s); broker pace 95 % (4.75/s); {} users, {} grants ({} audited actions each), {} holders + 1 group of 3",
        args.users, args.grants, args.actions, args.holders
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
    let mut day = None;
    for path in ["grants", "scim"] {
        let f = run(path, &args).await;
        if path == "grants" {
            day = Some((f.per_lifecycle, f.per_activity, f.idle_sweep, f.deep_sweep));
        }
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
    // A day at 100 grants, from the figures just measured: each grant's
    // lifecycle and its three activity passes, a holders sweep a minute
    // (nothing found), one deep sweep, and one break-glass login check a
    // minute per account (one request each; two accounts).
    if let Some((lifecycle, activity, idle, deep)) = day {
        let grants = 100.0 * (lifecycle + activity);
        let sweeps = 1440.0 * idle as f64 + deep as f64;
        let logins = 1440.0 * 2.0;
        let total = grants + sweeps + logins;
        let budget = 300.0 * 1440.0;
        println!(
            "activity passes: {activity:.2} requests a grant (3 passes, {} actions each)",
            args.actions
        );
        println!(
            "a day at 100 grants: grants {grants:.0} (of which activity {:.0}) + sweeps {sweeps:.0} + break-glass checks {logins:.0} = {total:.0} requests; the client's day is {budget:.0} ({:.1} %)",
            100.0 * activity,
            100.0 * total / budget
        );
    }
}
