//! The reconciler against the real SCIM server: standing privilege and role
//! accumulation are stripped, break-glass is reported and kept, a dry run
//! changes nothing, and a grant activated during a sweep keeps its role.
//! The holders sweep asks who holds each privileged role (the real server's
//! `roles.value` filter, or the Genesys Platform API stand-in answering from
//! it) and costs requests per role and holder, not per user of the org.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jit_app::{
    AppError, Directory, DirectoryError, DirectoryPage, DirectoryUser, ReconcileConfig, Worker,
    WorkerConfig,
};
use jit_domain::{RoleChange, RoleName, SweepKind, UserName};
use jit_e2e::app::{READER_KEY, Stack, scim_client, spawn_app, spawn_app_with};
use jit_e2e::proxy::ScimProxy;
use jit_e2e::{Backend, Tenant};
use rstest::rstest;
use serde_json::json;

const ADMIN: &str = "Master Admin";

fn config() -> ReconcileConfig {
    ReconcileConfig {
        page_size: 2, // several pages even for a handful of users
        requests_per_second: 1000,
        ..ReconcileConfig::default()
    }
}

/// alice: Master Admin, never granted. bob: Master Admin from a grant whose
/// expiry never ran (broker down past the grace). breakglass: exempt.
/// carol: baseline only.
async fn seeded(backend: Backend) -> (Stack, Tenant) {
    let tenant = Tenant::new();
    let directory = Arc::new(scim_client(&tenant.base_url, Duration::from_secs(5)));
    let stack = seed(backend, &tenant, directory).await;
    (stack, tenant)
}

/// [`seeded`], with the broker reaching the tenant through a counting proxy.
async fn seeded_behind_proxy(backend: Backend) -> (Stack, Tenant, ScimProxy) {
    let tenant = Tenant::new();
    let proxy = ScimProxy::start(&tenant.base_url, None).await;
    let stack = seed(backend, &tenant, Arc::new(proxy.client())).await;
    (stack, tenant, proxy)
}

async fn seed(backend: Backend, tenant: &Tenant, directory: Arc<dyn Directory>) -> Stack {
    for (name, roles) in [
        ("alice@example.com", &["Employee", ADMIN][..]),
        ("bob@example.com", &["Employee"]),
        ("breakglass@example.com", &[ADMIN]),
        ("carol@example.com", &["Employee", "Supervisor"]),
    ] {
        tenant.create_user(name, roles).await;
    }
    let stack = Stack::new(backend, directory).await;
    stack
        .request(
            json!({"user": "bob@example.com", "role": ADMIN, "ticket": "CHG0000100",
                        "duration": "10m", "justification": "Rotate the SIP trunk certificate"}),
        )
        .await;
    stack.run_due().await;
    assert!(
        tenant
            .roles_of("bob@example.com")
            .await
            .contains(&ADMIN.to_owned())
    );
    stack.advance(10 * 60 + 120); // past expiry and the 60 s grace, no job run
    stack
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn one_sweep_strips_what_is_held_without_cause_and_keeps_break_glass(
    #[case] backend: Backend,
) {
    let (stack, tenant) = seeded(backend).await;
    // One sweep at a time: a second owner is refused while the lease is held.
    let first = stack
        .app
        .begin_reconcile(SweepKind::Deep, "test", false, "replica-a", &config())
        .await
        .unwrap();
    let busy = stack
        .app
        .begin_reconcile(SweepKind::Deep, "test", false, "replica-b", &config())
        .await;
    assert!(matches!(busy, Err(AppError::Busy(_))), "{busy:?}");
    let run = stack
        .app
        .run_reconcile(first, "replica-a", &config())
        .await
        .unwrap();

    assert_eq!(run.status, "completed", "{run:?}");
    assert_eq!((run.users_scanned, run.pages), (4, 2));
    assert_eq!((run.findings, run.actions, run.errors), (3, 2, 0));
    assert_eq!(tenant.roles_of("alice@example.com").await, ["Employee"]);
    assert_eq!(tenant.roles_of("bob@example.com").await, ["Employee"]);
    assert_eq!(tenant.roles_of("breakglass@example.com").await, [ADMIN]);
    assert_eq!(
        tenant.roles_of("carol@example.com").await,
        ["Employee", "Supervisor"]
    );

    let (_, findings) = stack.app.reconcile_run(&run.id).await.unwrap();
    let mut got: Vec<(String, String, String)> = findings
        .into_iter()
        .map(|f| (f.user, f.kind, f.action.as_str().to_owned()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                "alice@example.com".into(),
                "standing_privilege".into(),
                "removed".into()
            ),
            (
                "bob@example.com".into(),
                "role_accumulation".into(),
                "removed".into()
            ),
            (
                "breakglass@example.com".into(),
                "break_glass_held".into(),
                "reported".into()
            ),
        ]
    );
    let kinds = stack.audit_kinds().await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "reconcile_finding").count(),
        3
    );
    assert_eq!(kinds.last().map(String::as_str), Some("reconcile_run"));
    assert_eq!(stack.app.reconcile_runs(10).await.unwrap().len(), 1);

    // The lease was released: the next sweep runs. A role put back by hand
    // after the verified removal is standing privilege again: stripped.
    tenant.add_role("alice@example.com", ADMIN).await;
    let again = stack
        .app
        .reconcile(SweepKind::Deep, "test", false, "replica-b", &config())
        .await
        .unwrap();
    assert_eq!(
        finding_kinds(&stack, &again.id).await,
        [(
            "alice@example.com".into(),
            "standing_privilege".into(),
            "removed".into()
        )]
    );
    assert_eq!(again.actions, 1);
    assert_eq!(tenant.roles_of("alice@example.com").await, ["Employee"]);
}

/// One sweep of `kind` by "sweeper", to its end.
async fn sweep(stack: &Stack, kind: SweepKind) -> jit_app::ReconcileRun {
    stack
        .app
        .reconcile(kind, "test", false, "sweeper", &config())
        .await
        .unwrap()
}

async fn finding_kinds(stack: &Stack, run: &str) -> Vec<(String, String, String)> {
    let (_, findings) = stack.app.reconcile_run(run).await.unwrap();
    let mut got: Vec<_> = findings
        .into_iter()
        .filter(|f| f.kind != "break_glass_held")
        .map(|f| (f.user, f.kind, f.action.as_str().to_owned()))
        .collect();
    got.sort();
    got
}

/// Grant, expiry, verified removal; then the role is put back by hand, again
/// and again. Each time the next sweep strips it (after a growing delay once
/// it is a pattern), and the SOC hears of the conflicting writer once.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_role_put_back_by_hand_is_stripped_every_time_and_the_pattern_raised_once(
    #[case] backend: Backend,
) {
    let (stack, tenant) = Stack::with_users(backend, &[("dave@example.com", &["Employee"])]).await;
    let dave = "dave@example.com";
    stack
        .request(json!({"user": dave, "role": ADMIN, "ticket": "CHG0000200",
                        "duration": "10m", "justification": "Rebuild the IVR routing flow"}))
        .await;
    stack.run_due().await;
    assert_eq!(tenant.roles_of(dave).await, ["Employee", ADMIN]);
    stack.advance(10 * 60);
    stack.run_due().await;
    assert_eq!(
        tenant.roles_of(dave).await,
        ["Employee"],
        "expiry removed it"
    );
    let dave_findings = |run: String| {
        let stack = &stack;
        async move { finding_kinds(stack, &run).await }
    };
    let conflict_alerts = || async {
        stack
            .audit_kinds()
            .await
            .iter()
            .filter(|k| *k == "conflicting_writer_detected")
            .count()
    };
    let one =
        |kind: &str, action: &str| vec![(dave.to_owned(), kind.to_owned(), action.to_owned())];

    // Past the grace, put back by hand: the next sweep strips it.
    stack.advance(5 * 60);
    tenant.add_role(dave, ADMIN).await;
    let run = sweep(&stack, SweepKind::Deep).await;
    assert_eq!(
        dave_findings(run.id).await,
        one("standing_privilege", "removed")
    );
    assert_eq!(tenant.roles_of(dave).await, ["Employee"]);
    assert_eq!(conflict_alerts().await, 0, "once is not a pattern");

    // Back a second time within the hour: a conflicting writer. The first
    // strip of the pattern waits a minute after the last one.
    stack.advance(30);
    tenant.add_role(dave, ADMIN).await;
    let run = sweep(&stack, SweepKind::Deep).await;
    assert_eq!(
        dave_findings(run.id).await,
        one("conflicting_writer", "deferred")
    );
    assert_eq!(tenant.roles_of(dave).await, ["Employee", ADMIN]);
    assert_eq!(conflict_alerts().await, 1, "raised when first seen");
    stack.advance(31);
    let run = sweep(&stack, SweepKind::Deep).await;
    assert_eq!(
        dave_findings(run.id).await,
        one("conflicting_writer", "removed")
    );
    assert_eq!(tenant.roles_of(dave).await, ["Employee"]);

    // A third time: stripped again once the doubled delay (2 min) passed,
    // and no second alert for the same pattern.
    stack.advance(60);
    tenant.add_role(dave, ADMIN).await;
    let run = sweep(&stack, SweepKind::Deep).await;
    assert_eq!(
        dave_findings(run.id).await,
        one("conflicting_writer", "deferred")
    );
    stack.advance(61);
    let run = sweep(&stack, SweepKind::Deep).await;
    assert_eq!(
        dave_findings(run.id).await,
        one("conflicting_writer", "removed")
    );
    assert_eq!(tenant.roles_of(dave).await, ["Employee"]);
    assert_eq!(
        conflict_alerts().await,
        1,
        "one alert per pattern, not per sweep"
    );

    // The alert names the pair, its removals and how often it came back.
    let events = stack.store.audit_events(0, 10_000).await.unwrap();
    let alert = events
        .iter()
        .find(|e| e.kind == "conflicting_writer_detected")
        .unwrap();
    assert_eq!(alert.data["user"], json!(dave));
    assert_eq!(alert.data["conflict"]["reappearances"], json!(2));
    assert_eq!(
        alert.data["conflict"]["removals"].as_array().unwrap().len(),
        2
    );
    assert!(
        jit_app::notifies(&alert.kind, &alert.data),
        "mailed to the SOC"
    );
}

#[tokio::test]
async fn a_dry_run_reports_and_changes_nothing() {
    let (stack, tenant) = seeded(Backend::Sqlite).await;
    let run = stack
        .app
        .reconcile(SweepKind::Deep, "test", true, "dry", &config())
        .await
        .unwrap();
    assert!(run.dry_run);
    assert_eq!((run.findings, run.actions), (3, 0));
    let (_, findings) = stack.app.reconcile_run(&run.id).await.unwrap();
    assert_eq!(
        findings
            .iter()
            .filter(|f| f.action == jit_domain::FindingOutcome::WouldRemove)
            .count(),
        2
    );
    assert!(
        tenant
            .roles_of("alice@example.com")
            .await
            .contains(&ADMIN.to_owned())
    );
    assert!(
        tenant
            .roles_of("bob@example.com")
            .await
            .contains(&ADMIN.to_owned())
    );
}

type Hook = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The real SCIM client, with a hook that runs once right after a page has
/// been listed: the moment a grant activating "during the sweep" matters.
struct AfterListing {
    inner: Arc<dyn Directory>,
    hook: Mutex<Option<Hook>>,
}

#[async_trait]
impl Directory for AfterListing {
    async fn list_users(&self, start: u64, count: u32) -> Result<DirectoryPage, DirectoryError> {
        let page = self.inner.list_users(start, count).await?;
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook.await;
        }
        Ok(page)
    }
    async fn find_user(&self, user: &UserName) -> Result<DirectoryUser, DirectoryError> {
        self.inner.find_user(user).await
    }
    async fn get_user(&self, id: &str) -> Result<DirectoryUser, DirectoryError> {
        self.inner.get_user(id).await
    }
    async fn change_role(
        &self,
        user: &DirectoryUser,
        role: &RoleName,
        change: RoleChange,
    ) -> Result<Option<DirectoryUser>, DirectoryError> {
        self.inner.change_role(user, role, change).await
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_grant_activated_during_a_sweep_keeps_its_role(#[case] backend: Backend) {
    let tenant = Tenant::new();
    tenant
        .create_user("dave@example.com", &["Employee", ADMIN])
        .await;
    let directory = Arc::new(AfterListing {
        inner: Arc::new(scim_client(&tenant.base_url, Duration::from_secs(5))),
        hook: Mutex::new(None),
    });
    let stack = Stack::new(backend, directory.clone()).await;
    let starts = jit_e2e::app::t0() + chrono::TimeDelta::seconds(30);
    stack
        .request(
            json!({"user": "dave@example.com", "role": ADMIN, "ticket": "CHG0000200",
                        "starts_at": starts.to_rfc3339(), "duration": "1h",
                        "justification": "Rotate the SIP trunk certificate"}),
        )
        .await;
    // The page shows dave holding Master Admin with no active grant; before
    // the sweep decides, time reaches the start and the worker activates it.
    let (app, clock) = (stack.app.clone(), stack.clock.clone());
    *directory.hook.lock().unwrap() = Some(Box::pin(async move {
        clock.advance(chrono::TimeDelta::seconds(31));
        let worker = Worker::new(app, "activator".into(), WorkerConfig::default());
        assert_eq!(worker.run_due().await.unwrap(), 1, "the activation ran");
    }));
    let run = sweep(&stack, SweepKind::Deep).await;
    assert_eq!((run.findings, run.actions), (0, 0), "{run:?}");
    assert!(
        tenant
            .roles_of("dave@example.com")
            .await
            .contains(&ADMIN.to_owned())
    );
}

#[tokio::test]
async fn sweeps_over_http_need_an_admin_key_and_are_listed() {
    let tenant = Tenant::new();
    tenant.create_user("erin@example.com", &[ADMIN]).await;
    let app = spawn_app(Backend::Sqlite, Some(&tenant.base_url)).await;
    let r = app
        .http
        .post(format!("{}/api/v1/reconcile?wait=true", app.base))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a non-admin key may not sweep");

    let (status, body) = app
        .post("/api/v1/reconcile?dry_run=true&wait=true", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run"]["status"], "completed");
    assert_eq!(body["findings"][0]["kind"], "standing_privilege");
    assert_eq!(body["findings"][0]["action"], "would_remove");

    let (status, body) = app.post("/api/v1/reconcile", &json!({})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["run"]["id"].as_str().unwrap().to_owned();
    tenant
        .wait_for_role("erin@example.com", ADMIN, false, Duration::from_secs(10))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, run) = app.get(&format!("/api/v1/reconcile/runs/{id}")).await;
        if run["run"]["status"] == "completed" {
            assert_eq!(run["findings"][0]["action"], "removed");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, runs) = app.get("/api/v1/reconcile/runs").await;
    assert_eq!(runs["items"].as_array().unwrap().len(), 2);
    app.running.stop().await;
}

/// The privileged roles of the test policy: a holders sweep asks about each.
const PRIVILEGED_ROLES: u64 = 5;

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_holders_sweep_asks_who_holds_each_role_and_strips_them(#[case] backend: Backend) {
    let (stack, tenant, proxy) = seeded_behind_proxy(backend).await;
    for i in 0..20 {
        tenant
            .create_user(&format!("agent{i}@example.com"), &["Employee"])
            .await;
    }
    let sent = proxy.counts.requests();
    let run = sweep(&stack, SweepKind::Holders).await;
    assert_eq!(
        (run.kind, run.status.as_str()),
        (SweepKind::Holders, "completed")
    );
    assert_eq!(
        run.users_scanned, 3,
        "the three holders of Master Admin, no one else"
    );
    assert_eq!((run.findings, run.actions, run.errors), (3, 2, 0));
    assert_eq!(tenant.roles_of("alice@example.com").await, ["Employee"]);
    assert_eq!(tenant.roles_of("bob@example.com").await, ["Employee"]);
    assert_eq!(tenant.roles_of("breakglass@example.com").await, [ADMIN]);
    // Whether the target filters (once), one filtered page per privileged
    // role, and a read and a PATCH per strip: nothing per user of the org.
    assert_eq!(run.pages, 1 + PRIVILEGED_ROLES);
    assert_eq!(proxy.counts.requests() - sent, 1 + PRIVILEGED_ROLES + 2 * 2);

    // The next one costs one request per role, and strips nothing new.
    let sent = proxy.counts.requests();
    let again = sweep(&stack, SweepKind::Holders).await;
    assert_eq!(
        (again.findings, again.actions),
        (1, 0),
        "break-glass, reported"
    );
    assert_eq!(proxy.counts.requests() - sent, PRIVILEGED_ROLES);
    // Seen again and not acted on: no email a minute.
    let events = stack.store.audit_events(0, 10_000).await.unwrap();
    let runs: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "reconcile_run")
        .collect();
    assert_eq!(runs.len(), 2);
    assert!(
        jit_app::notifies(&runs[0].kind, &runs[0].data),
        "the strips are mailed"
    );
    assert!(
        !jit_app::notifies(&runs[1].kind, &runs[1].data),
        "the repeat is not"
    );
}

/// Nobody triggers anything: the holders sweep on its schedule finds the
/// role added out of band and strips it.
#[tokio::test]
async fn the_holders_sweep_strips_an_out_of_band_role_on_its_own() {
    let tenant = Tenant::new();
    tenant.create_user("frank@example.com", &["Employee"]).await;
    let app = spawn_app_with(Backend::Sqlite, Some(&tenant.base_url), |c| {
        c.reconciler.enabled = true;
        c.reconciler.holders_cron = "* * * * * *".into(); // every second
    })
    .await;
    tenant.add_role("frank@example.com", ADMIN).await;
    tenant
        .wait_for_role("frank@example.com", ADMIN, false, Duration::from_secs(30))
        .await;
    // The role is gone before the run that took it records its end: wait
    // for that record.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = app.get("/api/v1/reconcile/runs").await;
        assert_eq!(status, 200, "{body}");
        let stripped = body["items"].as_array().unwrap().iter().any(|r| {
            r["kind"] == "holders"
                && r["trigger"] == "cron"
                && r["status"] == "completed"
                && r["actions"] == 1
        });
        if stripped {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let runs = body["items"].as_array().unwrap();
    assert!(
        runs.iter().all(|r| r["kind"] == "holders"),
        "no deep sweep ran: {body}"
    );
}
