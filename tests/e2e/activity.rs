//! What was done with a privilege: each grant's Genesys Cloud audit trail,
//! read when the role is removed and again later for late arrivals; the
//! other writer named; a break-glass account's actions after its login.
//! Against the Genesys Cloud stand-in keeping the test's time.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::TimeDelta;
use jit_app::{App, ManualClock, ReconcileConfig};
use jit_domain::{SweepKind, activity};
use jit_e2e::app::{API_KEY, Stack, grant_request, t0, test_policy};
use jit_e2e::genesys::{CLIENT_ID, Genesys};
use jit_e2e::web::{Claims, csrf_of, spawn_web_app_with};

use crate::web::{api_get, page as web_page, wait_until};
use jit_e2e::{Backend, ReceivedMail, SmtpPeer};
use jit_genesys_standin::audit::Action;
use jit_genesys_standin::{ALL_DIVISIONS, Settings};
use jit_notify::Recipients;
use rstest::rstest;
use serde_json::{Value, json};

const ENG: &str = "eng@example.com";
const ADMIN: &str = "Master Admin";

/// A stand-in and a stack on one manual clock.
async fn on_one_clock(backend: Backend) -> (Genesys, Stack) {
    let clock = Arc::new(ManualClock::new(t0()));
    let read = clock.clone();
    let genesys = Genesys::start_with_clock(
        Settings::default(),
        &[ADMIN],
        Arc::new(move || jit_app::Clock::now(read.as_ref())),
    )
    .await;
    let stack = Stack::with_clock(
        backend,
        Arc::new(genesys.client(&test_policy())),
        test_policy(),
        clock,
    )
    .await;
    (genesys, stack)
}

async fn events_of(stack: &Stack, kind: &str) -> Vec<Value> {
    let events = stack.store.audit_events(0, 10_000).await.unwrap();
    events
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.data)
        .collect()
}

/// Every mail the outbox holds, by subject, in order (sent to aiosmtpd).
async fn mails(stack: &Stack) -> Vec<ReceivedMail> {
    let smtp = SmtpPeer::start();
    let mailer = stack.mailer(
        &smtp,
        Recipients {
            default: vec!["soc@bank.example".into()],
            by_kind: BTreeMap::new(),
        },
    );
    mailer.run_due().await.unwrap();
    smtp.messages()
}

/// The preliminary pass at the removal records what the trail has then;
/// the first final pass finds nothing new (recorded, not mailed); the last
/// one finds an action that reached the trail late and records an
/// amendment, mailed. The broker's own writes and other users' actions are
/// not the grantee's; the chain's digest is the set's.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_grants_activity_is_read_at_removal_and_amended_by_a_late_final_pass(
    #[case] backend: Backend,
) {
    let (genesys, stack) = on_one_clock(backend).await;
    let g = &genesys.standin;
    let eng = g.add_user(ENG);
    let bob = g.add_user("bob@example.com");
    let grant = stack.request(grant_request(ENG, "CHG0023001", "1h")).await;
    assert_eq!(stack.run_due().await, 1);
    assert!(
        g.grants_of(&eng)
            .contains(&(ADMIN.into(), "All divisions".into()))
    );

    stack.advance(600);
    for queue in ["Billing", "Claims", "Fraud"] {
        g.record(Action::by(&eng, "Routing", "Queue", queue, "Update"));
    }
    g.record(Action::by(
        &bob,
        "Routing",
        "Queue",
        "Bob's queue",
        "Delete",
    ));
    let mut own = Action::by(&eng, "Authorization", "User", ENG, "Update");
    own.client = CLIENT_ID.into();
    g.record(own);
    stack.advance(2400);
    // At 50 minutes in, an IVR flow published: queryable only an hour later.
    let late = g.record(
        Action::by(&eng, "Architect", "Flow", "Main IVR", "Publish").late_by(TimeDelta::hours(1)),
    );

    stack.advance(600);
    assert_eq!(stack.run_due().await, 1, "the expiry");
    assert!(g.grants_of(&eng).is_empty());
    assert_eq!(stack.app.run_due_activity("collector").await.unwrap(), 1);
    let first = stack.app.grant_activity(grant.id).await.unwrap();
    let mut names: Vec<&str> = first
        .events
        .iter()
        .map(|e| e.entity_name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["Billing", "Claims", "Fraud"],
        "the grantee's, not the broker's or bob's"
    );
    let collected = events_of(&stack, "activity_collected").await;
    assert_eq!(collected.len(), 1);
    assert_eq!(collected[0]["pass_name"], "preliminary");
    assert_eq!(collected[0]["digest"], activity::digest(&first.events));
    assert_eq!(
        collected[0]["summary"]["counts"],
        json!([["Routing", "Update", 3]])
    );
    assert_eq!(stack.app.run_due_activity("collector").await.unwrap(), 0);

    stack.advance(15 * 60);
    assert_eq!(stack.app.run_due_activity("collector").await.unwrap(), 1);
    assert_eq!(events_of(&stack, "activity_confirmed").await.len(), 1);

    stack.advance(24 * 3600);
    assert_eq!(stack.app.run_due_activity("collector").await.unwrap(), 1);
    let amended = events_of(&stack, "activity_amended").await;
    assert_eq!(amended.len(), 1);
    assert_eq!(amended[0]["new"], 1);
    assert_eq!(amended[0]["new_ids"], json!([late]));
    let last = stack.app.grant_activity(grant.id).await.unwrap();
    assert_eq!(last.events.len(), 4);
    assert_eq!(amended[0]["digest"], activity::digest(&last.events));
    assert!(
        last.passes.iter().all(|p| p.status == "done"),
        "{:?}",
        last.passes
    );
    assert_eq!(stack.app.run_due_activity("collector").await.unwrap(), 0);

    // The chain holds, and the kept set is the one it recorded last.
    let verified = jit_store::verify_audit(stack.store.as_ref(), None)
        .await
        .unwrap();
    assert!(verified.is_ok(), "{verified:?}");

    // Mailed: the preliminary record and the amendment, not the confirmation.
    let subjects: Vec<String> = mails(&stack)
        .await
        .into_iter()
        .filter(|m| m.subject.contains("what was done") || m.subject.contains("found late"))
        .map(|m| m.subject)
        .collect();
    assert_eq!(
        subjects,
        [
            format!("[jit-broker][P3] {ADMIN} for {ENG}: what was done (3 actions, preliminary)"),
            format!("[jit-broker][P3] {ADMIN} for {ENG}: 1 more actions found late"),
        ]
    );
}

/// The preliminary email says what was done: counts by service and
/// action, the first events, the digest.
#[tokio::test]
async fn the_end_email_summarises_what_was_done() {
    let (genesys, stack) = on_one_clock(Backend::Sqlite).await;
    let g = &genesys.standin;
    let eng = g.add_user(ENG);
    stack.request(grant_request(ENG, "CHG0023002", "30m")).await;
    stack.run_due().await;
    stack.advance(60);
    for n in 0..12 {
        g.record(Action::by(
            &eng,
            "Routing",
            "Queue",
            &format!("Queue {n:02}"),
            "Update",
        ));
        stack.advance(1);
    }
    g.record(Action::by(
        &eng,
        "Recording",
        "Recording",
        "call-42.opus",
        "Delete",
    ));
    stack.advance(1800);
    stack.run_due().await;
    stack.app.run_due_activity("collector").await.unwrap();
    let mail = mails(&stack)
        .await
        .into_iter()
        .find(|m| m.subject.contains("what was done"))
        .expect("the preliminary email");
    assert!(mail.text.contains("Routing Update × 12"), "{}", mail.text);
    assert!(mail.text.contains("Recording Delete × 1"), "{}", mail.text);
    assert!(mail.text.contains("Queue 00"), "{}", mail.text);
    assert!(
        !mail.text.contains("Queue 10"),
        "ten listed, not more: {}",
        mail.text
    );
    assert!(mail.text.contains("preliminary"), "{}", mail.text);
}

/// A standing privilege stripped names who granted it and through which
/// client, from the audit trail of the user's grants.
#[tokio::test]
async fn the_other_writer_is_named_in_the_finding_and_its_email() {
    let (genesys, stack) = on_one_clock(Backend::Sqlite).await;
    let g = &genesys.standin;
    let eng = g.add_user(ENG);
    let admin = g.add_user("it-admin@example.com");
    g.add_client("terraform-prod", "tf-secret", "Terraform (prod)", &[]);
    let role = g.org().role_by_name(ADMIN).unwrap().id.clone();
    g.grant_by(Some(&admin), "terraform-prod", &eng, &role, ALL_DIVISIONS);
    stack.advance(60);
    let run = stack
        .app
        .reconcile(
            SweepKind::Holders,
            "test",
            false,
            "sweeper",
            &ReconcileConfig::default(),
        )
        .await
        .unwrap();
    assert_eq!(run.actions, 1);
    let findings = stack.app.reconcile_run(&run.id).await.unwrap().1;
    let detail = &findings[0].detail;
    assert!(
        detail.contains("granted by it-admin@example.com through client Terraform (prod)"),
        "{detail}"
    );
    let recorded = events_of(&stack, "reconcile_finding").await;
    assert!(
        recorded[0]["granted_by"]
            .as_str()
            .unwrap()
            .starts_with("it-admin@example.com through client Terraform (prod) at "),
        "{recorded:?}"
    );
    let mail = mails(&stack)
        .await
        .into_iter()
        .find(|m| m.subject.contains("held"))
        .expect("the strip's email");
    assert!(mail.text.contains("Terraform (prod)"), "{}", mail.text);
}

/// After a break-glass login (P1), what the account did from then on is
/// read later and mailed as a follow-up.
#[tokio::test]
async fn a_break_glass_login_is_followed_by_what_the_account_did() {
    let (genesys, stack) = on_one_clock(Backend::Sqlite).await;
    let g = &genesys.standin;
    let account = g.add_user("breakglass@example.com");
    let role = g.org().role_by_name(ADMIN).unwrap().id.clone();
    g.grant(&account, &role, ALL_DIVISIONS);
    let app: &App = &stack.app;
    app.check_break_glass_logins("poller").await.unwrap();
    stack.advance(60);
    g.user_logged_in(&account, t0() + TimeDelta::seconds(30));
    g.record(Action::by(
        &account,
        "Authorization",
        "Role",
        "Master Admin",
        "Update",
    ));
    stack.advance(60);
    g.record(Action::by(
        &account,
        "Integrations",
        "OAuthClient",
        "exfil",
        "Create",
    ));
    assert_eq!(
        app.check_break_glass_logins("poller").await.unwrap().alerts,
        1
    );
    assert_eq!(
        app.run_due_activity("collector").await.unwrap(),
        0,
        "not yet"
    );
    stack.advance(15 * 60);
    assert_eq!(app.run_due_activity("collector").await.unwrap(), 1);
    let follow_up = events_of(&stack, "break_glass_activity").await;
    assert_eq!(follow_up.len(), 1);
    assert_eq!(follow_up[0]["total"], 2);
    assert_eq!(
        jit_domain::severity("break_glass_activity", &follow_up[0]),
        jit_domain::Severity::P2
    );
    let mail = mails(&stack)
        .await
        .into_iter()
        .find(|m| m.subject.contains("Break-glass follow-up"))
        .expect("the follow-up email");
    assert!(
        mail.text.contains("OAuthClient `exfil` Create"),
        "{}",
        mail.text
    );
}

/// The served broker: the grantee reads their live grant's activity on
/// demand from the grant page; dropping the grant has the preliminary pass
/// run by itself; the API shows the same; the export carries the set and
/// `audit verify --file` recomputes its digest, naming an edited one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grant_page_the_api_and_the_export_show_what_was_done() {
    let genesys = Genesys::start(Settings::default(), &["Telephony Admin"]).await;
    let g = &genesys.standin;
    let bob = g.add_user("bob@example.com");
    let app = spawn_web_app_with(
        Backend::Sqlite,
        Claims::InIdToken,
        &[],
        Arc::new(jit_app::SystemClock),
        |c| genesys.configure(c),
    )
    .await;
    let api = reqwest::Client::new();
    let body = json!({
        "user": "bob@example.com", "role": "Telephony Admin", "ticket": "CHG0023005",
        "duration": "1h", "justification": "Rebuild the SIP trunk",
    });
    app.servicenow.approve_body(&body, chrono::Utc::now());
    let created: Value = api
        .post(format!("{}/api/v1/grants", app.base))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    wait_until("the role", || async { !g.grants_of(&bob).is_empty() }).await;
    wait_until("the role added mark", || async {
        let grant = api_get(&app, &format!("grants/{id}")).await;
        grant["state"] == "active" && !grant["role_added_at"].is_null()
    })
    .await;
    g.record(Action::by(
        &bob,
        "Telephony",
        "Trunk",
        "SIP trunk EU-1",
        "Update",
    ));
    g.record(Action::by(&bob, "Telephony", "Site", "Dublin", "Update"));

    // On demand, from the page.
    let bob_web = app.sign_in("bob").await;
    let grant_page = format!("{}/grants/{id}", app.base);
    let (_, page) = web_page(&bob_web, &grant_page).await;
    assert!(page.contains("What was done"), "{page}");
    assert!(page.contains("Read the audit trail now"), "{page}");
    let looked = bob_web
        .post(format!("{}/grants/{id}/activity", app.base))
        .form(&[("csrf", csrf_of(&page))])
        .send()
        .await
        .unwrap();
    assert!(looked.status().is_success() || looked.status().is_redirection());
    let (_, page) = web_page(&bob_web, &grant_page).await;
    assert!(
        page.contains("SIP trunk EU-1") && page.contains("Dublin"),
        "{page}"
    );
    assert!(
        page.contains("Telephony") && page.contains("Trunk"),
        "{page}"
    );

    // The drop: the preliminary pass runs by itself.
    let dropped = api
        .post(format!("{}/api/v1/grants/{id}/drop", app.base))
        .bearer_auth(API_KEY)
        .json(&json!({"reason": "done"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dropped.status(), 200);
    let activity_path = format!("grants/{id}/activity");
    wait_until("the preliminary pass", || async {
        api_get(&app, &activity_path).await["passes"][0]["status"] == "done"
    })
    .await;
    let activity = api_get(&app, &activity_path).await;
    assert_eq!(
        activity["events"].as_array().unwrap().len(),
        2,
        "{activity}"
    );
    assert_eq!(
        activity["passes"].as_array().unwrap().len(),
        3,
        "{activity}"
    );
    // A look on demand is for a grant whose role is held.
    let late = api
        .post(format!("{}/api/v1/{activity_path}", app.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 409);

    // The export carries the set; verify recomputes its digest.
    let dir = tempfile::tempdir().unwrap();
    let jit = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jit-broker-under-test"))
            .current_dir(jit_e2e::workspace_root())
            .env("JIT_DATABASE__URL", &app.database_url)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let file = dir.path().join("grant.jsonl");
    let (code, _, err) = jit(&[
        "audit",
        "export",
        "--grant",
        &id,
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("\"activity\"") && text.contains("SIP trunk EU-1"),
        "{text}"
    );
    let (code, out, err) = jit(&["audit", "verify", "--file", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("activity verified: 1 sets"), "{out}");
    let (code, out, err) = jit(&["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("activity verified: 1 sets"), "{out}");
    // The set edited (the chain's own lines left as they are).
    let edited: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("{\"activity\"") {
                l.replace("SIP trunk EU-1", "SIP trunk EU-2")
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(&file, edited.join("\n")).unwrap();
    let (code, _, err) = jit(&["audit", "verify", "--file", file.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("activity does not match"), "{err}");
    app.running.stop().await;
}

/// Reads on demand coalesce per grant: one at a time and at most one a
/// minute (each spends the shared budget and writes the chain); an ask
/// refused for that is told when the next read may start, and the next
/// read's audit event says how many were asked and not done.
#[tokio::test]
async fn reads_on_demand_are_at_most_one_a_minute_per_grant() {
    let (genesys, stack) = on_one_clock(Backend::Sqlite).await;
    genesys.standin.add_user(ENG);
    let grant = stack.request(grant_request(ENG, "CHG0023009", "1h")).await;
    stack.run_due().await;
    stack.advance(60);
    stack.app.look_at_activity("eng", grant.id).await.unwrap();
    let spent = genesys.requests();
    for _ in 0..5 {
        let refused = stack.app.look_at_activity("eng", grant.id).await;
        let Err(jit_app::AppError::NotNow(why)) = refused else {
            panic!("a second read within the minute: {refused:?}");
        };
        assert!(why.contains("the next read may start at"), "{why}");
    }
    assert_eq!(genesys.requests(), spent, "the refused asks spent nothing");
    assert_eq!(events_of(&stack, "activity_collected").await.len(), 1);
    stack.advance(60);
    stack.app.look_at_activity("eng", grant.id).await.unwrap();
    let reads = events_of(&stack, "activity_collected").await;
    assert_eq!(reads.len(), 2);
    assert_eq!(reads[1]["asked_not_read"]["count"], 5, "{}", reads[1]);
}
