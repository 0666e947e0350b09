//! `scripts/bench-storm`: one caller's storm of grants for one user, and
//! whether it holds anybody else back (issue 29). In real time, against the
//! Genesys Cloud stand-in enforcing 300 requests a minute, with the real
//! worker: N grants of a few seconds each are filed for alice as fast as the
//! store takes them (the per-caller pace and the cap on live grants, which
//! refuse such a storm at the door, are lifted to measure the work behind
//! them); meanwhile bob asks for a grant, and carol's grant ends. Reported:
//! bob's time to hold the role, carol's removal after her expiry, the
//! directory requests the storm cost, jobs pending at its height, and 429s.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // a benchmark: wall clock, panics end it

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use jit_app::{App, Clock, SystemClock, Worker, WorkerConfig};
use jit_e2e::app::{ServiceNow, command, grant_request};
use jit_e2e::genesys::Genesys;
use jit_genesys_standin::Settings;

const ADMIN: &str = "Master Admin";

#[derive(Parser)]
struct Args {
    /// Grants filed for alice.
    #[arg(long, default_value_t = 10_000)]
    grants: usize,
    /// Each of alice's grants lasts this many seconds.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
}

fn storm_policy() -> jit_domain::Policy {
    let text = std::fs::read_to_string(jit_e2e::app::test_policy_path()).unwrap();
    let text = text.replacen(
        "[roles.\"Master Admin\"]\n",
        "[roles.\"Master Admin\"]\nmax_live_grants = 10000\n",
        1,
    );
    jit_domain::Policy::from_toml("storm.toml", &text).unwrap()
}

async fn pending_jobs(url: &str) -> i64 {
    let db = sqlx::SqlitePool::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = 'pending'")
        .fetch_one(&db)
        .await
        .unwrap()
}

async fn wait_until(what: &str, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{what}: never"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let genesys = Genesys::start(Settings::default(), &[ADMIN, "Employee"]).await;
    let g = &genesys.standin;
    let ids: std::collections::HashMap<&str, String> =
        ["alice@example.com", "bob@example.com", "carol@example.com"]
            .into_iter()
            .map(|user| (user, g.add_user(user)))
            .collect();
    let policy = Arc::new(storm_policy());
    let url = jit_e2e::fresh_database(jit_e2e::Backend::Sqlite).await;
    let store = jit_store::open(&url, true, 5).await.unwrap();
    let servicenow = ServiceNow::start().await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let app = Arc::new(App::new(
        store,
        Arc::new(genesys.client(&policy)),
        Arc::new(servicenow.client(clock.clone())),
        clock.clone(),
        policy.clone(),
    ));
    let worker = Arc::new(Worker::new(
        app.clone(),
        "storm-bench".into(),
        WorkerConfig::default().within_budget(Some(285)),
    ));
    let wake = worker.waker();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.clone().run(async {
        let _ = stopped.await;
    }));
    let holds = |user: &str| {
        g.grants_of(&ids[user])
            .iter()
            .any(|(role, _)| role == ADMIN)
    };
    let request = |user: &str, ticket: &str, duration: String| {
        let body = grant_request(user, ticket, &duration);
        servicenow.approve(ticket, user, ADMIN, clock.now());
        let app = app.clone();
        let wake = wake.clone();
        async move {
            let grant = app.request_grant("bench", &command(&body)).await.unwrap();
            wake.notify_one();
            grant
        }
    };

    // Carol holds the role before the storm; it ends in its middle.
    let carol = request("carol@example.com", "CHG0090001", "8s".into()).await;
    wait_until("carol's role added", || holds("carol@example.com")).await;
    let sent = genesys.requests();
    let started = Instant::now();
    let mut bob = None;
    let mut peak_pending = 0;
    for i in 0..args.grants {
        request(
            "alice@example.com",
            "CHG0090002",
            format!("{}s", args.seconds),
        )
        .await;
        if i == args.grants / 2 {
            // Watched from the moment it is asked, while the storm goes on.
            let (standin, id) = (genesys.standin.clone(), ids["bob@example.com"].clone());
            let asked = Instant::now();
            bob = Some(tokio::spawn(async move {
                while !standin.grants_of(&id).iter().any(|(role, _)| role == ADMIN) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                asked.elapsed()
            }));
            request("bob@example.com", "CHG0090003", "1h".into()).await;
        }
        if i % 500 == 0 {
            peak_pending = peak_pending.max(pending_jobs(&url).await);
        }
    }
    let filing = started.elapsed();
    let bob_latency = bob.unwrap().await.unwrap();
    // Alice's last grant ends a few seconds after the storm: then her pair
    // is settled, one removal for all of them.
    wait_until("alice's role removed", || !holds("alice@example.com")).await;
    wait_until("carol's role removed", || !holds("carol@example.com")).await;
    let spent = genesys.requests() - sent;
    let carol = app.grant(carol.id).await.unwrap();
    let removal = carol
        .role_removed_at
        .map(|at| (at - carol.expires_at).num_milliseconds());
    let (_, stop_result) = (stop.send(()), running.await);
    stop_result.unwrap();
    println!(
        "storm: {} grants of {} s for one user filed in {:.1} s ({:.0}/s); jobs pending at most {peak_pending}; \
         another user's grant, filed mid-storm, held {} ms after it was asked; a removal due mid-storm verified {} ms after its expiry; \
         directory requests for the whole storm {spent} (alice's pair: one add and one removal; bob's add; carol's removal); \
         {} answered 429; the target's limit 300/min (the broker paces at 285)",
        args.grants,
        args.seconds,
        filing.as_secs_f64(),
        args.grants as f64 / filing.as_secs_f64(),
        bob_latency.as_millis(),
        removal.map_or("?".into(), |ms| ms.to_string()),
        genesys.limited(),
    );
}
