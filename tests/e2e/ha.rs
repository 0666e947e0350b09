//! High availability: three real replicas on one PostgreSQL, the real SCIM
//! server behind a proxy that logs every PATCH. 300 grants start and expire
//! over about a minute while one replica is killed with SIGKILL, a second is
//! stopped with SIGTERM and started again (a rolling restart), and
//! PostgreSQL itself restarts. Afterwards every role was added and removed,
//! each by exactly one PATCH, every removal within the revocation SLO, and
//! the audit chain verifies.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use jit_e2e::app::ServiceNow;
use jit_e2e::fleet::{Fleet, FleetTargets, grant_body, request_grants, wait_for_all_removed};
use jit_e2e::proxy::ScimProxy;
use jit_e2e::{PgCluster, Tenant};

const GRANTS: usize = 300;
/// The revocation SLO the broker runs with (`notify.revocation_slo_secs`).
const SLO: TimeDelta = TimeDelta::seconds(60);

fn user(i: usize) -> String {
    format!("ha{i:03}@example.com")
}

fn ticket(i: usize) -> String {
    format!("CHG1{i:06}")
}

/// Sleeps until `at` on the wall clock (the scenario's script, not a guess
/// at when something finished: every check afterwards waits for state).
async fn until(at: chrono::DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

/// Freezes replica `i` at a moment it holds at least one job, so what it
/// holds is known for certain; answers those jobs' ids. The replica stays
/// paused (SIGSTOP) for the caller to kill or stop.
async fn pause_holding_jobs(
    fleet: &Fleet,
    i: usize,
    db: &sqlx::PgPool,
    deadline: chrono::DateTime<Utc>,
) -> Vec<i64> {
    // Owners are `<pid>-<uuid>`.
    let owner = format!("{}-%", fleet.pid(i));
    loop {
        fleet.pause(i);
        let held: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE status = 'pending' AND lease_owner LIKE $1",
        )
        .bind(&owner)
        .fetch_all(db)
        .await
        .unwrap();
        if !held.is_empty() {
            return held;
        }
        fleet.resume(i);
        assert!(Utc::now() < deadline, "replica {i} never held a job");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_lose_one_to_kill_9_one_to_sigterm_and_postgresql_restarts_yet_each_role_change_happens_once()
 {
    let cluster = PgCluster::start().expect("a PostgreSQL cluster of its own");
    let database_url = cluster.create_database().await;
    let tenant = Tenant::new();
    tenant
        .fill(GRANTS, |i| {
            (user(i), &["Employee"] as &'static [&'static str])
        })
        .await;
    let proxy = ScimProxy::start(&tenant.base_url, None).await;
    // A WAN's delay, so that jobs are in flight when replicas die.
    proxy.set_latency(Duration::from_millis(150));
    let servicenow = ServiceNow::start().await;
    for i in 0..GRANTS {
        servicenow.approve(&ticket(i), &user(i), "Master Admin", Utc::now());
    }
    let mut fleet = Fleet::new(
        env!("CARGO_BIN_EXE_jit-broker-under-test").as_ref(),
        3,
        &FleetTargets {
            database_url: &database_url,
            scim_base_url: &proxy.base_url,
            servicenow_url: &servicenow.url,
            requests_per_minute: None,
            extra: "",
        },
    );
    // All three at once: the migrations run once, under their lock.
    let (a, b, c) = tokio::join!(
        fleet.start_detached(0),
        fleet.start_detached(1),
        fleet.start_detached(2)
    );
    fleet.adopt(0, a);
    fleet.adopt(1, b);
    fleet.adopt(2, c);

    // Activations spread over 20 s from t0, each grant 45 s long: the
    // expiries follow over the next 20 s. Filed through all three replicas;
    // a request sent after its planned start starts a moment later instead.
    let t0 = Utc::now() + TimeDelta::seconds(15);
    let body = move |i: usize| {
        let planned = t0 + TimeDelta::milliseconds((i * 20_000 / GRANTS) as i64);
        let start = planned.max(Utc::now() + TimeDelta::seconds(1));
        grant_body(&user(i), &ticket(i), start, "45s")
    };
    let ids = request_grants(&fleet.bases(), GRANTS, body, 8).await;
    assert_eq!(ids.len(), GRANTS);

    let db = sqlx::PgPool::connect(&database_url).await.unwrap();
    // Mid-activations, while it holds a job: one replica dies without a word.
    until(t0 + TimeDelta::seconds(7)).await;
    let orphaned = pause_holding_jobs(&fleet, 0, &db, t0 + TimeDelta::seconds(40)).await;
    fleet.kill(0);
    // Mid-expiries, with a job in flight: a second is stopped as an
    // orchestrator stops a pod, and started again (a rolling restart).
    until(t0 + TimeDelta::seconds(50)).await;
    let finishing = pause_holding_jobs(&fleet, 1, &db, t0 + TimeDelta::seconds(90)).await;
    let (status, took) = fleet.terminate(1).await;
    assert!(
        status.success(),
        "SIGTERM exits 0: {status}\n{}",
        fleet.log(1)
    );
    assert!(
        fleet.log(1).contains("leases handed back"),
        "{}",
        fleet.log(1)
    );
    eprintln!("SIGTERM → exit in {took:?}");
    fleet.start(1).await;
    // And the database restarts under the two that are left.
    until(t0 + TimeDelta::seconds(56)).await;
    cluster.stop().expect("stop PostgreSQL");
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.start_again().expect("start PostgreSQL again");

    let grants = wait_for_all_removed(&database_url, GRANTS, Duration::from_secs(180)).await;

    // What the target saw: per user, one PATCH that added and one that removed.
    let users = tenant.users().await;
    let by_name: HashMap<&str, &jit_domain::Grant> =
        grants.iter().map(|g| (g.user.as_str(), g)).collect();
    let patches = proxy.counts.patches_seen();
    let mut per_user: HashMap<&str, Vec<&jit_e2e::proxy::PatchSeen>> = HashMap::new();
    for p in &patches {
        let (name, _) = &users[p.user_id()];
        per_user.entry(name.as_str()).or_default().push(p);
    }
    let mut late = Vec::new();
    for i in 0..GRANTS {
        let name = user(i);
        let grant = by_name[name.as_str()];
        let seen = &per_user[name.as_str()];
        let done = |op: &str| {
            seen.iter()
                .filter(|p| p.op() == op && p.succeeded())
                .collect::<Vec<_>>()
        };
        let (added, removed) = (done("add"), done("remove"));
        assert_eq!(
            (added.len(), removed.len()),
            (1, 1),
            "{name}: one add and one remove, each PATCHed once: {seen:#?}"
        );
        assert!(
            added[0].answered_at >= grant.starts_at,
            "{name} added early"
        );
        assert!(
            removed[0].answered_at >= grant.expires_at,
            "{name} removed early"
        );
        let took = removed[0].answered_at - grant.expires_at;
        if took > SLO {
            late.push((name.clone(), took));
        }
        assert_eq!(
            grant.end_reason,
            Some(jit_domain::EndReason::Expired),
            "{name}"
        );
        assert!(grant.role_added_at.is_some(), "{name}: activation verified");
        assert!(
            grant.role_removed_at.expect("verified") - grant.expires_at <= SLO,
            "{name}: removal verified within the SLO"
        );
    }
    assert!(late.is_empty(), "removed after the SLO: {late:?}");
    assert_eq!(
        patches.len(),
        2 * GRANTS,
        "no PATCH beyond the one per transition: {:#?}",
        patches
            .iter()
            .filter(|p| !p.succeeded())
            .collect::<Vec<_>>()
    );
    assert!(
        users
            .values()
            .all(|(_, roles)| !roles.iter().any(|r| r == "Master Admin")),
        "nobody keeps the role"
    );

    // One linear chain, written by four processes, verifies end to end,
    // with no revocation ever raised as overdue.
    // The killed replica's jobs were taken over once its leases lapsed.
    let db = sqlx::PgPool::connect(&database_url).await.unwrap();
    for id in &orphaned {
        let (status, attempts): (String, i64) =
            sqlx::query_as("SELECT status, attempts FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_one(&db)
                .await
                .unwrap();
        assert_eq!(status, "done", "job {id}");
        assert!(attempts >= 2, "job {id} was run again by another replica");
    }
    // The stopped one dealt with its jobs within the grace: none was cut
    // short and handed back (one that met a transient error was put back
    // with its retry time, like any other), and all were done in the end.
    let stopped = fleet.log(1);
    let handed_back = stopped
        .lines()
        .find(|l| l.contains("leases handed back"))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .expect("the stop's log line");
    // A graceful stop is quiet: nothing in it failed (a call lost to an
    // HTTP worker's runtime ending, say). A slow pool checkout is load, not
    // a failure; nor is sqlx's check of a connection a finished request gave
    // back, when it runs as that worker's runtime ends: the request's work is
    // committed, and the connection is closed rather than pooled.
    assert!(stopped.contains("\"stopping\""), "{stopped}");
    let during_stop: Vec<&str> = stopped
        .lines()
        .skip_while(|l| !l.contains("\"stopping\""))
        .take_while(|l| !l.contains("\"stopped\""))
        .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
        .filter(|l| !l.contains("sqlx::pool::acquire"))
        .filter(|l| {
            !(l.contains("testing the connection on-release") && l.contains("being shutdown"))
        })
        .collect();
    assert!(during_stop.is_empty(), "the stop: {during_stop:#?}");
    if handed_back["fields"]["jobs"] != 0 {
        // Name what was left and what the replica said about it.
        let left: Vec<i64> = handed_back["fields"]["job_ids"]
            .as_str()
            .unwrap_or_default()
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        let said: Vec<&str> = stopped
            .lines()
            .filter(|l| {
                l.contains("\"WARN\"")
                    || l.contains("\"ERROR\"")
                    || l.contains("panicked")
                    || finishing
                        .iter()
                        .chain(&left)
                        .any(|id| l.contains(&format!("\"job\":{id},")))
            })
            .collect();
        panic!(
            "the stop handed back jobs: {handed_back}\nheld when paused: {finishing:?}\n{said:#?}"
        );
    }
    for id in &finishing {
        let (status, attempts, error): (String, i64, Option<String>) =
            sqlx::query_as("SELECT status, attempts, last_error FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_one(&db)
                .await
                .unwrap();
        assert_eq!(status, "done", "job {id}");
        if attempts > 1 {
            let said: Vec<String> = (0..3)
                .flat_map(|i| fleet.log(i).lines().map(str::to_owned).collect::<Vec<_>>())
                .filter(|l| l.contains(&format!("\"job\":{id},")))
                .collect();
            eprintln!(
                "job {id}, in flight at SIGTERM, took {attempts} attempts ({error:?}): {said:#?}"
            );
        }
    }
    let reclaimed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE attempts > 1")
        .fetch_one(&db)
        .await
        .unwrap();
    eprintln!(
        "{} PATCHes for {GRANTS} grants; SIGKILL orphaned {} jobs, SIGTERM let {} finish; \
         {reclaimed} ran more than once",
        patches.len(),
        orphaned.len(),
        finishing.len()
    );
    let verify = fleet.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let store = jit_store::open(&database_url, false, 2).await.unwrap();
    let mut overdue = 0;
    let mut after = 0;
    loop {
        let page = store.audit_events(after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        overdue += page
            .iter()
            .filter(|e| e.kind == "revocation_overdue")
            .count();
    }
    assert_eq!(overdue, 0, "no revocation outlived the SLO");
    for i in 0..3 {
        assert!(
            !fleet.log(i).contains(jit_e2e::SCIM_TOKEN),
            "no secret in replica {i}'s log"
        );
    }
}
