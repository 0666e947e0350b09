//! The web form's figures for BENCHMARKS.md (`scripts/bench-web`):
//!
//! - time to first byte of the request page, whose ticket pick-list is read
//!   live from the ServiceNow stand-in on every load, p50 / p99, beside the
//!   stand-in's own time for the same query measured in the same run;
//! - sign-in (through the real OpenID provider) → request → role present on
//!   the real SCIM server, end to end over HTTP.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // a benchmark: wall clock, panics end it

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use jit_app::SystemClock;
use jit_e2e::web::{csrf_of, spawn_web_app};

#[derive(Parser)]
struct Args {
    /// Request-page loads to time.
    #[arg(long, default_value_t = 300)]
    page_loads: usize,
    /// Sign-in → role-present runs.
    #[arg(long, default_value_t = 10)]
    logins: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let users: Vec<(String, Vec<&str>)> = (0..args.logins)
        .map(|i| (format!("bench{i}@example.com"), vec!["Employee"]))
        .chain([("alice@example.com".to_owned(), vec!["Employee"])])
        .collect();
    let users: Vec<(&str, &[&str])> = users
        .iter()
        .map(|(u, r)| (u.as_str(), r.as_slice()))
        .collect();
    let app = spawn_web_app(&users, Arc::new(SystemClock)).await;
    let now = chrono::Utc::now();
    app.servicenow
        .approve("CHG0000900", "alice@example.com", "Master Admin", now);

    // The request page: its pick-list is a live ServiceNow query each time.
    let alice = app.sign_in("alice").await;
    let asked = |changes: &jit_server::sandbox_servicenow::ChangeBook| {
        changes
            .queries()
            .iter()
            .filter(|q| q.table == "change_request")
            .count()
    };
    let asked_before = asked(&app.servicenow.changes);
    let mut page = Vec::with_capacity(args.page_loads);
    for _ in 0..args.page_loads {
        let t = Instant::now();
        let res = alice.get(format!("{}/", app.base)).send().await.unwrap();
        page.push(t.elapsed());
        assert_eq!(res.status(), 200);
        let _ = res.bytes().await.unwrap();
    }
    page.sort();
    // Each load really read ServiceNow (no cache stands in between).
    assert_eq!(
        asked(&app.servicenow.changes) - asked_before,
        args.page_loads,
        "one live change query per page load"
    );
    // The stand-in's own answer to the same query, same run.
    let direct = reqwest::Client::new();
    let query = format!(
        "{}api/now/table/change_request?sysparm_query=assigned_to.email=alice@example.com^ORassigned_to.user_name=alice@example.com^approval=approved&sysparm_limit=50",
        app.servicenow.url
    );
    let mut raw = Vec::with_capacity(args.page_loads);
    for _ in 0..args.page_loads {
        let t = Instant::now();
        let res = direct
            .get(&query)
            .basic_auth(
                jit_e2e::app::SERVICENOW_USER,
                Some(jit_e2e::app::SERVICENOW_PASSWORD),
            )
            .send()
            .await
            .unwrap();
        raw.push(t.elapsed());
        assert_eq!(res.status(), 200);
        let _ = res.bytes().await.unwrap();
    }
    raw.sort();
    println!(
        "request page TTFB over {} loads: p50 {} p99 {} (ServiceNow stand-in alone, same query: p50 {} p99 {})",
        page.len(),
        ms(percentile(&page, 0.5)),
        ms(percentile(&page, 0.99)),
        ms(percentile(&raw, 0.5)),
        ms(percentile(&raw, 0.99)),
    );

    // Sign in → request (a role needing no approval) → role on the SCIM server.
    let mut e2e = Vec::with_capacity(args.logins);
    for i in 0..args.logins {
        let user = format!("bench{i}@example.com");
        let ticket = format!("CHG000{:04}", 1000 + i);
        app.servicenow
            .approve(&ticket, &user, "Security Admin", now);
        let t = Instant::now();
        let http = app.sign_in(&format!("bench{i}")).await;
        let form = http
            .get(format!("{}/", app.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let res = http
            .post(format!("{}/request", app.base))
            .form(&[
                ("csrf", csrf_of(&form).as_str()),
                ("role", "Security Admin"),
                ("ticket", ticket.as_str()),
                ("duration", "30m"),
                ("justification", "Benchmark: sign-in to role present"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            303,
            "{}",
            res.text().await.unwrap_or_default()
        );
        loop {
            if app
                .tenant
                .roles_of(&user)
                .await
                .iter()
                .any(|r| r == "Security Admin")
            {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "role never arrived");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        e2e.push(t.elapsed());
    }
    e2e.sort();
    println!(
        "sign-in (OIDC code flow + PKCE) → request → role present on scim2-server, {} runs: p50 {} max {}",
        e2e.len(),
        ms(percentile(&e2e, 0.5)),
        ms(*e2e.last().unwrap()),
    );
    app.running.stop().await;
}
