//! Genesys Cloud as it is: roles held as grants per division, proven through
//! the Authorization API, against the Genesys Cloud stand-in on SQLite and
//! PostgreSQL.

use std::sync::Arc;

use jit_app::ReconcileConfig;
use jit_domain::{GrantState, SweepKind};
use jit_e2e::Backend;
use jit_e2e::app::{Stack, TestApp, grant_request, spawn_app_with, test_policy};
use jit_e2e::genesys::{EVENTS_SECRET, Genesys};
use jit_genesys_standin::{ALL_DIVISIONS, Settings};
use rstest::rstest;

const ENG: &str = "eng@example.com";
const ADMIN: &str = "Master Admin";

/// One sweep of `kind`, to its end.
async fn sweep(stack: &Stack, kind: SweepKind) -> jit_app::ReconcileRun {
    stack
        .app
        .reconcile(kind, "test", false, "sweeper", &ReconcileConfig::default())
        .await
        .unwrap()
}

async fn stack_on(backend: Backend, genesys: &Genesys) -> Stack {
    Stack::new(backend, Arc::new(genesys.client(&test_policy()))).await
}

fn all_divisions() -> (String, String) {
    (ADMIN.to_owned(), "All divisions".to_owned())
}

/// Whichever way Genesys's undocumented SCIM behaviour goes (where a SCIM
/// role add lands, what a SCIM remove takes), the broker's outcome is the
/// same: it writes and proves grants through the Authorization API only.
#[rstest]
#[tokio::test]
async fn a_grant_in_every_division_is_verified_and_every_division_is_taken_back(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
    #[values(false, true)] scim_acts_everywhere: bool,
) {
    let genesys = Genesys::start(Settings::default(), &[ADMIN, "Employee"]).await;
    let g = &genesys.standin;
    if scim_acts_everywhere {
        g.set_switches(jit_genesys_standin::Switches {
            scim_add_lands_in: jit_genesys_standin::ScimAddLandsIn::AllDivisions,
            scim_remove_takes: jit_genesys_standin::ScimRemoveTakes::EveryDivision,
            ..jit_genesys_standin::Switches::default()
        });
    }
    let eng = g.add_user(ENG);
    let emea = g.add_division("EMEA");
    let employee = g.org().role_by_name("Employee").unwrap().id.clone();
    g.grant(&eng, &employee, &g.home_division());
    let stack = stack_on(backend, &genesys).await;

    let grant = stack.request(grant_request(ENG, "CHG0022001", "1h")).await;
    assert_eq!(stack.run_due().await, 1);
    assert!(genesys.grants_of(&eng).contains(&all_divisions()));
    let active = stack.app.grant(grant.id).await.unwrap();
    assert_eq!(active.state, GrantState::Active);
    assert!(
        active.role_added_at.is_some(),
        "activation verified by the read-back"
    );

    // While the grant runs, someone adds Master Admin in EMEA by hand.
    let admin = g.org().role_by_name(ADMIN).unwrap().id.clone();
    g.grant(&eng, &admin, &emea);
    stack.advance(3600);
    assert_eq!(stack.run_due().await, 1);
    // Every direct grant of the role went, in every division; the
    // baseline role stayed.
    assert_eq!(
        genesys.grants_of(&eng),
        [("Employee".to_owned(), "Home".to_owned())].into()
    );
    let ended = stack.app.grant(grant.id).await.unwrap();
    assert_eq!(ended.state, GrantState::Ended);
    assert!(
        ended.role_removed_at.is_some(),
        "removal verified by the read-back"
    );
    assert_eq!(genesys.limited(), 0);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_grant_held_in_part_is_completed(#[case] backend: Backend) {
    // The user already holds the role in the home division only (say from
    // an earlier SCIM add): a grant covering every division adds `*`.
    let genesys = Genesys::start(Settings::default(), &[ADMIN]).await;
    let g = &genesys.standin;
    let eng = g.add_user(ENG);
    let admin = g.org().role_by_name(ADMIN).unwrap().id.clone();
    g.grant(&eng, &admin, &g.home_division());
    let stack = stack_on(backend, &genesys).await;

    stack.request(grant_request(ENG, "CHG0022002", "1h")).await;
    stack.run_due().await;
    assert_eq!(
        genesys.grants_of(&eng),
        [all_divisions(), (ADMIN.to_owned(), "Home".to_owned())].into()
    );
    stack.advance(3600);
    stack.run_due().await;
    assert!(genesys.grants_of(&eng).is_empty());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_hand_made_grant_in_another_division_is_found_and_stripped(#[case] backend: Backend) {
    let genesys = Genesys::start(Settings::default(), &[ADMIN]).await;
    let g = &genesys.standin;
    let eng = g.add_user(ENG);
    let emea = g.add_division("EMEA");
    let admin = g.org().role_by_name(ADMIN).unwrap().id.clone();
    g.grant(&eng, &admin, &emea);
    let stack = stack_on(backend, &genesys).await;

    let run = sweep(&stack, SweepKind::Holders).await;
    let (_, findings) = stack.app.reconcile_run(&run.id).await.unwrap();
    let found: Vec<(String, String, &str)> = findings
        .iter()
        .map(|f| (f.user.clone(), f.kind.clone(), f.action.as_str()))
        .collect();
    assert_eq!(
        found,
        [(ENG.to_owned(), "standing_privilege".to_owned(), "removed")]
    );
    assert!(genesys.grants_of(&eng).is_empty(), "the EMEA grant is gone");
    assert!(
        g.org().grants.keys().all(|k| k.division != ALL_DIVISIONS),
        "nothing was added on the way"
    );
}

/// The holders sweep, to its end, and its findings as (who, kind, action, detail).
async fn holders_sweep(stack: &Stack) -> Vec<(String, String, String, String)> {
    let run = sweep(stack, SweepKind::Holders).await;
    let (_, findings) = stack.app.reconcile_run(&run.id).await.unwrap();
    findings
        .into_iter()
        .map(|f| (f.user, f.kind, f.action.as_str().to_owned(), f.detail))
        .collect()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_group_grant_is_found_reported_with_its_members_and_stripped(#[case] backend: Backend) {
    let genesys = Genesys::start(Settings::default(), &[ADMIN]).await;
    let g = &genesys.standin;
    let alice = g.add_user("alice@example.com");
    let bob = g.add_user("bob@example.com");
    let admins = g.add_group("Contact centre admins", &[&alice, &bob]);
    let admin = g.org().role_by_name(ADMIN).unwrap().id.clone();
    g.grant(&admins, &admin, ALL_DIVISIONS);
    let stack = stack_on(backend, &genesys).await;

    let found = holders_sweep(&stack).await;
    assert_eq!(
        found.len(),
        1,
        "one finding for the group, none per member: {found:?}"
    );
    let (who, kind, action, detail) = &found[0];
    assert!(who.starts_with("group Contact centre admins"), "{who}");
    assert_eq!((kind.as_str(), action.as_str()), ("group_grant", "removed"));
    assert!(
        detail.contains("alice@example.com") && detail.contains("bob@example.com"),
        "{detail}"
    );
    assert!(
        genesys.grants_of(&admins).is_empty(),
        "the group's grant is gone"
    );
    assert!(
        holders_sweep(&stack).await.is_empty(),
        "nothing left to find"
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_group_the_policy_allows_is_reported_not_stripped(#[case] backend: Backend) {
    let genesys = Genesys::start(Settings::default(), &[ADMIN]).await;
    let g = &genesys.standin;
    let carol = g.add_user("carol@example.com");
    let vendor = g.add_group("Genesys PS", &[&carol]);
    let admin = g.org().role_by_name(ADMIN).unwrap().id.clone();
    g.grant(&vendor, &admin, ALL_DIVISIONS);
    let text = std::fs::read_to_string(jit_e2e::app::test_policy_path()).unwrap()
        + "\n[groups.\"Genesys PS\"]\nreason = \"the vendor's onboarding team, until the go-live on CHG0009999\"\n";
    let policy = jit_domain::Policy::from_toml("test policy + group", &text).unwrap();
    let stack = Stack::with_policy(backend, Arc::new(genesys.client(&policy)), policy).await;

    let found = holders_sweep(&stack).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].1.as_str(), found[0].2.as_str()),
        ("group_grant", "reported")
    );
    assert!(
        found[0].3.contains("go-live"),
        "the policy's reason: {}",
        found[0].3
    );
    assert_eq!(
        genesys.grants_of(&vendor),
        [all_divisions()].into(),
        "left in place"
    );
    let incidents = stack.app.open_incidents().await.unwrap();
    assert_eq!(incidents.len(), 1, "an open incident the SOC hears of once");
}

/// Six grants starting and ending together, through the broker's own
/// pacing (95 % of 300 a minute) against the stand-in's 300-a-minute limit:
/// no 429, and the requests each lifecycle costs.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_grant_storm_stays_inside_300_a_minute(#[case] backend: Backend) {
    let genesys = Genesys::start(Settings::default(), &[ADMIN]).await;
    let users: Vec<String> = (0..6).map(|i| format!("storm{i}@example.com")).collect();
    let ids: Vec<String> = users.iter().map(|u| genesys.standin.add_user(u)).collect();
    let stack = stack_on(backend, &genesys).await;
    for (i, u) in users.iter().enumerate() {
        stack
            .request(grant_request(u, &format!("CHG00223{i:02}"), "1h"))
            .await;
    }
    stack.run_due().await;
    for id in &ids {
        assert_eq!(genesys.grants_of(id), [all_divisions()].into());
    }
    stack.advance(3600);
    stack.run_due().await;
    for id in &ids {
        assert!(genesys.grants_of(id).is_empty());
    }
    assert_eq!(genesys.limited(), 0, "no 429 within the budget");
    // Per lifecycle: the user's id by SCIM (once), then at each end a read
    // of the grants, the bulk write and the read-back; and the role's id once.
    assert_eq!(genesys.requests(), 6 * 7 + 1);
}

/// The deep sweep, to its end, and its findings as (who, kind, action).
async fn deep_sweep(stack: &Stack) -> Vec<(String, String, String)> {
    let run = sweep(stack, SweepKind::Deep).await;
    assert_eq!(run.status, "completed", "{run:?}");
    let (_, findings) = stack.app.reconcile_run(&run.id).await.unwrap();
    let mut found: Vec<_> = findings
        .into_iter()
        .map(|f| (f.user, f.kind, f.action.as_str().to_owned()))
        .collect();
    found.sort();
    found
}

fn finding(who: &str, kind: &str, action: &str) -> (String, String, String) {
    (who.to_owned(), kind.to_owned(), action.to_owned())
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn scim_listing_a_role_the_grants_do_not_show_is_flagged(#[case] backend: Backend) {
    // Genesys does not say whether SCIM names a role held through a group:
    // here it does, so SCIM shows alice holding what no grant of hers gives.
    let genesys = Genesys::start(Settings::default(), &[ADMIN]).await;
    let g = &genesys.standin;
    g.set_switches(jit_genesys_standin::Switches {
        scim_lists_group_roles: true,
        ..jit_genesys_standin::Switches::default()
    });
    let alice = g.add_user("alice@example.com");
    let admins = g.add_group("Admins", &[&alice]);
    let admin = g.org().role_by_name(ADMIN).unwrap().id.clone();
    g.grant(&admins, &admin, ALL_DIVISIONS);
    let stack = stack_on(backend, &genesys).await;

    assert_eq!(
        deep_sweep(&stack).await,
        [finding(
            "alice@example.com",
            "directory_disagreement",
            "reported"
        )]
    );
    // Alice's converge read the grants: nothing of hers to strip.
    assert!(genesys.grants_of(&alice).is_empty());
    assert_eq!(genesys.grants_of(&admins), [all_divisions()].into());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_grant_scim_does_not_list_is_flagged_and_still_stripped(#[case] backend: Backend) {
    // Here SCIM leaves out grants outside the home division: bob's EMEA
    // grant is invisible to SCIM, not to the Authorization API.
    let genesys = Genesys::start(Settings::default(), &[ADMIN]).await;
    let g = &genesys.standin;
    g.set_switches(jit_genesys_standin::Switches {
        scim_lists_home_division_only: true,
        ..jit_genesys_standin::Switches::default()
    });
    let bob = g.add_user("bob@example.com");
    let emea = g.add_division("EMEA");
    let admin = g.org().role_by_name(ADMIN).unwrap().id.clone();
    g.grant(&bob, &admin, &emea);
    let stack = stack_on(backend, &genesys).await;

    assert_eq!(
        deep_sweep(&stack).await,
        [
            finding("bob@example.com", "directory_disagreement", "reported"),
            finding("bob@example.com", "standing_privilege", "removed"),
        ]
    );
    assert!(genesys.grants_of(&bob).is_empty());
}

/// The test policy's privileged roles: the holders sweep asks about each.
const PRIVILEGED_ROLES: u64 = 5;

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_holders_sweep_pages_subject_grants_and_follows_a_re_created_role(
    #[case] backend: Backend,
) {
    // An org that has every privileged role of the policy.
    let policy = test_policy();
    let roles: Vec<&str> = policy.privileged_roles().map(|r| r.as_str()).collect();
    let genesys = Genesys::start(Settings::default(), &roles).await;
    let g = &genesys.standin;
    g.cap_page_size(2);
    let admin = g.org().role_by_name(ADMIN).unwrap().id.clone();
    let holders: Vec<String> = (0..5)
        .map(|i| {
            let id = g.add_user(&format!("admin{i}@example.com"));
            g.grant(&id, &admin, ALL_DIVISIONS);
            id
        })
        .collect();
    let stack = stack_on(backend, &genesys).await;
    let sent = genesys.requests();
    let run = sweep(&stack, SweepKind::Holders).await;
    assert_eq!(
        (run.status.as_str(), run.users_scanned),
        ("completed", 5),
        "{run:?}"
    );
    assert_eq!((run.findings, run.actions), (5, 5));
    for id in &holders {
        assert!(genesys.grants_of(id).is_empty());
    }
    // Each role's id once, three pages of Master Admin's subject grants (2 a
    // page), one page per other role, each holder's user name once; then a
    // read, the removal and the read-back per strip, and one audit query
    // per strip to name who granted the role.
    let asked = PRIVILEGED_ROLES + 3 + (PRIVILEGED_ROLES - 1) + 5;
    assert_eq!(run.pages, asked);
    assert_eq!(genesys.requests() - sent, asked + 5 * 4);

    // The role is re-created under a new id and someone takes it by hand:
    // the old id answers 404, the name is resolved again, the holder stripped.
    let admin = g.recreate_role(ADMIN);
    g.grant(&holders[0], &admin, ALL_DIVISIONS);
    let sent = genesys.requests();
    let run = sweep(&stack, SweepKind::Holders).await;
    assert_eq!(
        (run.status.as_str(), run.actions),
        ("completed", 1),
        "{run:?}"
    );
    assert!(genesys.grants_of(&holders[0]).is_empty());
    let asked = 3 + (PRIVILEGED_ROLES - 1); // 404, the name again, the page
    assert_eq!(genesys.requests() - sent, asked + 4);
}

#[tokio::test]
async fn a_deep_sweep_finds_a_holder_the_holders_answer_left_out() {
    let genesys = Genesys::start(Settings::default(), &[ADMIN]).await;
    let g = &genesys.standin;
    let admin = g.org().role_by_name(ADMIN).unwrap().id.clone();
    let alice = g.add_user("alice@example.com");
    let bob = g.add_user("bob@example.com");
    g.grant(&alice, &admin, ALL_DIVISIONS);
    g.grant(&bob, &admin, ALL_DIVISIONS);
    // The fault: the holders answer leaves alice out.
    g.omit_from_holders(&alice);
    let stack = stack_on(Backend::Sqlite, &genesys).await;
    let holders = holders_sweep(&stack).await;
    assert_eq!(holders.len(), 1, "bob only: {holders:?}");
    assert!(!genesys.grants_of(&alice).is_empty());
    assert_eq!(
        deep_sweep(&stack).await,
        [finding(
            "alice@example.com",
            "standing_privilege",
            "removed"
        )]
    );
    assert!(genesys.grants_of(&alice).is_empty());
}

/// How many audit events the broker has recorded (a refused delivery
/// writes none).
async fn audit_len(app: &TestApp) -> usize {
    let (_, body) = app.get("/api/v1/audit?limit=200").await;
    body["items"].as_array().map_or(0, Vec::len)
}

/// With the minute sweep off, Genesys's event about a hand-made grant
/// (relayed by EventBridge) has it read and stripped within seconds.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_event_has_a_hand_made_grant_stripped_within_seconds(#[case] backend: Backend) {
    let genesys = Genesys::start(Settings::default(), &[ADMIN]).await;
    let g = &genesys.standin;
    let bob = g.add_user("bob@example.com");
    let admin = g.org().role_by_name(ADMIN).unwrap().id.clone();
    let app = spawn_app_with(backend, Some(&genesys.base), |c| {
        genesys.configure(c);
        assert!(!c.reconciler.enabled, "no sweep on a schedule");
    })
    .await;
    genesys.relay_to(&app.base);

    let granted = std::time::Instant::now();
    g.grant(&bob, &admin, ALL_DIVISIONS);
    let deadline = granted + std::time::Duration::from_secs(30);
    while !genesys.grants_of(&bob).is_empty() {
        assert!(std::time::Instant::now() < deadline, "never stripped");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    println!("hand-made grant → stripped: {:?}", granted.elapsed());
    // Its run is recorded once the strip is (the role goes first).
    let runs = loop {
        let (_, runs) = app.get("/api/v1/reconcile/runs").await;
        let runs = runs["items"].as_array().unwrap().clone();
        if runs
            .iter()
            .any(|r| r["status"] == "completed" && r["actions"] == 1)
        {
            break runs;
        }
        assert!(std::time::Instant::now() < deadline, "{runs:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        runs.iter().all(|r| r["trigger"] == "event"),
        "only the event looked: {runs:?}"
    );
    app.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_malformed_or_replayed_event_writes_nothing_and_strips_nothing() {
    let genesys = Genesys::start(Settings::default(), &[ADMIN]).await;
    let g = &genesys.standin;
    let bob = g.add_user("bob@example.com");
    let app = spawn_app_with(Backend::Sqlite, Some(&genesys.base), |c| {
        genesys.configure(c)
    })
    .await;
    let url = format!("{}/webhooks/genesys/events", app.base);
    let header = jit_server::config::EventsSettings::default().header;
    let event = jit_genesys_standin::relay::audited(
        &bob,
        false,
        serde_json::json!({"id": "forged-1", "entityType": "User", "entity": {"id": bob}}),
        chrono::Utc::now(),
    );
    let post = |secret: &str, body: String| {
        app.http
            .post(&url)
            .header(header.as_str(), secret)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let before = audit_len(&app).await;
    let forged = post("not-the-secret-but-32-bytes-long!!", event.to_string())
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let malformed = post(EVENTS_SECRET, "{\"id\": 7}".into()).await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        audit_len(&app).await,
        before,
        "refused deliveries write nothing"
    );

    // Bob holds Master Admin under an active grant: a genuine event about
    // him is read, and the read keeps the role.
    let (status, grant) = app
        .request_grant(&grant_request("bob@example.com", "CHG0022901", "1h"))
        .await;
    assert_eq!(status, 201, "{grant}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while genesys.grants_of(&bob).is_empty() {
        assert!(std::time::Instant::now() < deadline, "never activated");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let accepted = post(EVENTS_SECRET, event.to_string()).await.unwrap();
    assert_eq!(accepted.status(), 202);
    let replayed = post(EVENTS_SECRET, event.to_string()).await.unwrap();
    assert_eq!(replayed.status(), 200);
    let body: serde_json::Value = replayed.json().await.unwrap();
    assert_eq!(body["replayed"], true);
    // The event run finishes and finds nothing to strip.
    loop {
        let (_, runs) = app.get("/api/v1/reconcile/runs").await;
        let done = runs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["trigger"] == "event" && r["status"] == "completed")
            .count();
        if done >= 1 {
            assert_eq!(done, 1, "the replay was not looked at again: {runs}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{runs}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        genesys.grants_of(&bob),
        [all_divisions()].into(),
        "kept under its grant"
    );
    app.running.stop().await;
}

/// A renamed clone of Master Admin carries its permissions: with
/// `privileged_permissions`, the sweep treats it as privileged although the
/// catalogue never names it, and strips it.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_renamed_clone_of_master_admin_is_treated_as_privileged(#[case] backend: Backend) {
    let genesys = Genesys::start(Settings::default(), &[ADMIN]).await;
    let g = &genesys.standin;
    let clone = g.add_role(
        "CC Super Admin",
        &["authorization:grant:add", "directory:user:edit"],
    );
    let harmless = g.add_role("Wallboard Viewer", &["analytics:dashboard:view"]);
    let dave = g.add_user("dave@example.com");
    g.grant(&dave, &clone, ALL_DIVISIONS);
    g.grant(&dave, &harmless, ALL_DIVISIONS);
    let text = format!(
        "privileged_permissions = [\"authorization:grant:add\"]\n{}",
        std::fs::read_to_string(jit_e2e::app::test_policy_path()).unwrap()
    );
    let policy = jit_domain::Policy::from_toml("test policy + permissions", &text).unwrap();
    let stack = Stack::with_policy(backend, Arc::new(genesys.client(&policy)), policy).await;

    let found: Vec<(String, String, String)> = holders_sweep(&stack)
        .await
        .into_iter()
        .map(|(who, kind, action, _)| (who, kind, action))
        .collect();
    assert_eq!(
        found,
        [finding("dave@example.com", "standing_privilege", "removed")]
    );
    let (_, findings) = stack
        .app
        .reconcile_run(&stack.app.reconcile_runs(1).await.unwrap()[0].id)
        .await
        .unwrap();
    assert_eq!(findings[0].role, "CC Super Admin");
    assert_eq!(
        genesys.grants_of(&dave),
        [("Wallboard Viewer".to_owned(), "All divisions".to_owned())].into(),
        "the clone is gone, the harmless role stays"
    );
}
