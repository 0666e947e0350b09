//! Change tickets as the authority: live ServiceNow validation (against the
//! Table API stand-in, asserting the exact queries), signed webhooks that
//! start and end grants on the real SCIM server, and the poll behind them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use jit_app::GrantFilter;
use jit_domain::{EndReason, GrantState};
use jit_e2e::app::{Stack, TestApp, WEBHOOK_SECRET, spawn_app, t0};
use jit_e2e::{Backend, Tenant};
use jit_itsm::WebhookVerifier;
use jit_server::sandbox_servicenow::{ChangeBook, sn_date};
use rstest::rstest;
use secrecy::SecretString;
use serde_json::{Value, json};

const ENG: &str = "eng@example.com";

fn request(user: &str, ticket: &str, duration: &str) -> Value {
    jit_e2e::app::grant_request(user, ticket, duration)
}

/// A change that allows `user` a Master Admin grant now.
fn change(number: &str, user: &str) -> Value {
    ChangeBook::approved_change(
        number,
        user,
        "Master Admin",
        Utc::now(),
        TimeDelta::hours(8),
    )
}

async fn nothing_written(app: &TestApp) {
    let store = &app.running.app.store;
    let grants = store
        .grants(&GrantFilter {
            limit: 10,
            ..GrantFilter::default()
        })
        .await
        .unwrap();
    assert!(grants.is_empty(), "no grant was written: {grants:?}");
    assert!(
        store.audit_events(0, 10).await.unwrap().is_empty(),
        "no audit event"
    );
    assert_eq!(store.next_due().await.unwrap(), None, "no job was queued");
}

#[tokio::test]
async fn each_ticket_refusal_is_a_403_naming_its_clause_and_nothing_is_written() {
    let app = spawn_app(Backend::Sqlite, Some(&Tenant::new().base_url)).await;
    let book = &app.servicenow.changes;
    let now = Utc::now();
    let with = |number: &str, edit: Value| {
        let mut c = change(number, ENG);
        for (k, v) in edit.as_object().unwrap() {
            c[k] = v.clone();
        }
        book.put_change(c);
    };
    with("CHG0000010", json!({"approval": "requested"}));
    with("CHG0000011", json!({"state": "-4"}));
    with("CHG0000012", json!({"state": "-2"}));
    with(
        "CHG0000013",
        json!({"start_date": sn_date(now + TimeDelta::hours(1))}),
    );
    with(
        "CHG0000014",
        json!({"end_date": sn_date(now - TimeDelta::minutes(1))}),
    );
    with(
        "CHG0000015",
        json!({"assigned_to.email": "bob@example.com", "assigned_to.user_name": "bob"}),
    );
    with("CHG0000016", json!({"approval": "rejected", "state": "4"}));
    let cases = [
        ("CHG0000404", "ticket", "ticket_exists", "ticket"),
        ("CHG0000010", "ticket", "ticket_approved", "ticket.approval"),
        (
            "CHG0000011",
            "ticket",
            "ticket_state",
            "roles.\"Master Admin\".change_states",
        ),
        (
            "CHG0000012",
            "ticket",
            "ticket_state",
            "roles.\"Master Admin\".change_states",
        ),
        ("CHG0000013", "ticket", "ticket_window", "ticket.start_date"),
        ("CHG0000014", "ticket", "ticket_window", "ticket.start_date"),
        (
            "CHG0000015",
            "user",
            "ticket_assignee",
            "roles.\"Master Admin\".requester",
        ),
        ("CHG0000016", "ticket", "ticket_approved", "ticket.approval"),
    ];
    for (ticket, field, rule, clause) in cases {
        let (status, err) = app
            .post("/api/v1/grants", &request(ENG, ticket, "1h"))
            .await;
        assert_eq!(status, 403, "{ticket}: {err}");
        assert_eq!(err["error"]["code"], "denied", "{ticket}: {err}");
        let denied = err["error"]["fields"].as_array().unwrap();
        assert!(
            denied
                .iter()
                .any(|f| f["field"] == field && f["rule"] == rule && f["policy"] == clause),
            "{ticket}: expected {field}/{rule} ({clause}) in {err}"
        );
        // Every clause evaluated is shown, allowed or not.
        assert!(err["error"]["reasons"].as_array().unwrap().len() >= denied.len());
    }
    // An ineligible user is refused before anything else matters.
    book.put_change(change("CHG0000017", "mallory@example.com"));
    let mut sec = request("mallory@example.com", "CHG0000017", "1h");
    sec["role"] = json!("Security Admin");
    let (status, err) = app.post("/api/v1/grants", &sec).await;
    assert_eq!(status, 403);
    assert_eq!(err["error"]["fields"][0]["rule"], "eligible", "{err}");
    assert_eq!(
        err["error"]["fields"][0]["policy"],
        "roles.\"Security Admin\".eligible_users"
    );

    // The exact query: one change by number, the decision's fields, raw values.
    let queries = book.queries();
    assert_eq!(queries[0].table, "change_request");
    let want: BTreeMap<String, String> = [
        ("sysparm_query", "number=CHG0000404".to_owned()),
        ("sysparm_fields", jit_itsm::change_fields("u_jit_role")),
        ("sysparm_limit", "1".into()),
        ("sysparm_exclude_reference_link", "true".into()),
        ("sysparm_display_value", "false".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(queries[0].params, want);
    assert_eq!(queries.len(), cases.len() + 1, "one lookup per request");
    nothing_written(&app).await;
    app.running.stop().await;
}

#[tokio::test]
async fn servicenow_down_is_a_503_and_nothing_is_written() {
    let app = spawn_app(Backend::Sqlite, Some(&Tenant::new().base_url)).await;
    app.servicenow.changes.put_change(change("CHG0000020", ENG));
    app.servicenow.changes.set_down(true);
    let (status, err) = app
        .post("/api/v1/grants", &request(ENG, "CHG0000020", "1h"))
        .await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["error"]["code"], "ticket_system_unavailable");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was granted"),
        "{err}"
    );
    nothing_written(&app).await;
    app.running.stop().await;
}

async fn stack_with(backend: Backend, users: &[&str]) -> (Stack, Tenant) {
    let users: Vec<(&str, &[&str])> = users.iter().map(|u| (*u, &["Employee"][..])).collect();
    Stack::with_users(backend, &users).await
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_grant_is_clipped_to_the_change_end_and_keeps_its_evidence(#[case] backend: Backend) {
    let (stack, _tenant) = stack_with(backend, &[ENG]).await;
    stack
        .servicenow
        .changes
        .put_change(ChangeBook::approved_change(
            "CHG0000030",
            ENG,
            "Master Admin",
            t0(),
            TimeDelta::minutes(30),
        ));
    let grant = stack.request(request(ENG, "CHG0000030", "2h")).await;
    assert_eq!(grant.expires_at, t0() + TimeDelta::minutes(30));
    let stored = stack.app.grant(grant.id).await.unwrap();
    let decision = stored.decision.expect("decision stored");
    assert!(
        decision
            .reasons
            .iter()
            .any(|r| r.rule == "clipped_to_change")
    );
    let snapshot = stored.ticket_snapshot.expect("snapshot stored");
    assert_eq!(snapshot.number.as_str(), "CHG0000030");
    assert_eq!(snapshot.end_date, Some(t0() + TimeDelta::minutes(30)));
    let events = stack.store.audit_events(0, 10).await.unwrap();
    assert_eq!(events[0].kind, "grant_requested");
    assert_eq!(events[0].data["ticket_snapshot"]["number"], "CHG0000030");
    assert!(
        events[0].data["decision"]["reasons"]
            .as_array()
            .unwrap()
            .len()
            >= 5
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn assignment_group_members_and_approvals(#[case] backend: Backend) {
    let (stack, tenant) = stack_with(backend, &["tel@example.com"]).await;
    let book = &stack.servicenow.changes;
    // Telephony Admin: requester = assignment_group; the change is bob's.
    let mut c = ChangeBook::approved_change(
        "CHG0000040",
        "bob@example.com",
        "Telephony Admin",
        t0(),
        TimeDelta::hours(4),
    );
    c["assignment_group"] = json!("grp-voice");
    book.put_change(c);
    let mut body = request("tel@example.com", "CHG0000040", "1h");
    body["role"] = json!("Telephony Admin");
    let refused = stack
        .app
        .request_grant("test", &jit_e2e::app::command(&body))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, jit_app::AppError::Denied(_)),
        "{refused:?}"
    );
    book.add_group_member("grp-voice", "tel@example.com");
    let grant = stack.request(body).await;
    assert_eq!(grant.state, GrantState::Approved);
    let membership = book
        .queries()
        .into_iter()
        .rfind(|q| q.table == "sys_user_grmember")
        .expect("membership looked up");
    assert_eq!(
        membership.params["sysparm_query"],
        "group=grp-voice^user.email=tel@example.com^ORuser.user_name=tel@example.com"
    );

    // Recording Admin needs one approval: recorded as pending, nothing applied.
    let mut body = request("tel@example.com", "CHG0000041", "1h");
    body["role"] = json!("Recording Admin");
    let pending = stack.request(body).await;
    assert_eq!(pending.state, GrantState::PendingApproval);
    assert!(
        pending
            .decision
            .unwrap()
            .reasons
            .iter()
            .any(|r| r.rule == "approvals")
    );
    stack.run_due().await;
    assert!(
        !tenant
            .roles_of("tel@example.com")
            .await
            .contains(&"Recording Admin".to_owned())
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_poll_ends_a_grant_whose_webhook_never_came(#[case] backend: Backend) {
    let (stack, tenant) = stack_with(backend, &[ENG]).await;
    let grant = stack.request(request(ENG, "CHG0000050", "2h")).await;
    stack.run_due().await;
    assert!(
        tenant
            .roles_of(ENG)
            .await
            .contains(&"Master Admin".to_owned())
    );

    // ServiceNow down: the poll ends nothing and says so.
    stack.servicenow.changes.set_down(true);
    let report = stack.app.recheck_tickets().await.unwrap();
    assert_eq!((report.tickets_checked, report.grants_ended), (1, 0));
    assert_eq!(report.unavailable, ["CHG0000050"]);
    stack.servicenow.changes.set_down(false);

    // Still in Implement: nothing to do.
    stack.advance(60);
    assert_eq!(stack.app.recheck_tickets().await.unwrap().grants_ended, 0);

    // Cancelled in ServiceNow, no webhook sent: the next poll ends the grant.
    stack
        .servicenow
        .changes
        .update_change("CHG0000050", json!({"state": "4"}));
    stack.advance(60);
    let report = stack.app.recheck_tickets().await.unwrap();
    assert_eq!(report.grants_ended, 1);
    let ended = stack.app.grant(grant.id).await.unwrap();
    assert_eq!(
        (ended.state, ended.end_reason),
        (GrantState::Ended, Some(EndReason::TicketClosed))
    );
    assert!(ended.end_note.unwrap().contains("moved to canceled"));
    stack.run_due().await;
    assert_eq!(tenant.roles_of(ENG).await, ["Employee"]);
    assert_eq!(
        stack.app.recheck_tickets().await.unwrap().tickets_checked,
        0
    );
}

/// Signs `record` as ServiceNow would, with a chosen timestamp.
fn signed(
    record: &Value,
    delivery: &str,
    ts: i64,
    secret: &str,
) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let body = serde_json::to_vec(record).unwrap();
    let v = WebhookVerifier::new(
        SecretString::from(secret.to_owned()),
        Duration::from_secs(300),
    );
    let sig = v.sign(ts, delivery, &body);
    (
        vec![
            ("X-JIT-Timestamp", ts.to_string()),
            ("X-JIT-Delivery", delivery.to_owned()),
            ("X-JIT-Signature", sig),
        ],
        body,
    )
}

#[tokio::test]
async fn forged_stale_and_replayed_deliveries_are_refused_and_write_nothing() {
    let app = spawn_app(Backend::Sqlite, Some(&Tenant::new().base_url)).await;
    app.servicenow.changes.put_change(change("CHG0000060", ENG));
    let record = json!({"number": "CHG0000060", "state": "-1"});
    let now = Utc::now().timestamp();

    let (headers, body) = signed(&record, "d-forged", now, "not-the-secret");
    let (status, err, _) = app.raw_webhook(&headers, body).await;
    assert_eq!(status, 401, "{err}");
    assert_eq!(err["error"]["fields"][0]["rule"], "hmac_sha256");

    let (headers, body) = signed(&record, "d-stale", now - 600, WEBHOOK_SECRET);
    let (status, err, _) = app.raw_webhook(&headers, body).await;
    assert_eq!(status, 401, "{err}");
    assert_eq!(err["error"]["fields"][0]["field"], "X-JIT-Timestamp");
    assert_eq!(err["error"]["fields"][0]["rule"], "max_skew");

    let (mut headers, body) = signed(&record, "d-tampered", now, WEBHOOK_SECRET);
    headers[1].1 = "d-other".into();
    let (status, _, _) = app.raw_webhook(&headers, body).await;
    assert_eq!(status, 401, "the delivery id is signed");

    let (status, _, _) = app
        .raw_webhook(&[], serde_json::to_vec(&record).unwrap())
        .await;
    assert_eq!(status, 401);
    assert!(
        app.servicenow.changes.queries().is_empty(),
        "ServiceNow never asked"
    );
    nothing_written(&app).await;

    // A good delivery, then the same delivery id again.
    let (status, first, replayed) = app.webhook("d-1", &record).await;
    assert_eq!(status, 200, "{first}");
    assert!(!replayed);
    assert_eq!(
        first["outcome"]["granted"].as_array().unwrap().len(),
        1,
        "{first}"
    );
    let lookups_before = app.servicenow.changes.queries().len();
    let (status, again, replayed) = app.webhook("d-1", &record).await;
    assert_eq!(status, 200);
    assert!(replayed, "answered as a replay");
    assert_eq!(again, first, "the first answer, unchanged");
    // (The worker activates the grant meanwhile; only the delivery's own
    // events are counted.)
    let events = app.running.app.store.audit_events(0, 100).await.unwrap();
    let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!((count("change_webhook"), count("grant_requested")), (1, 1));
    assert_eq!(
        app.servicenow.changes.queries().len(),
        lookups_before,
        "not re-read"
    );
    app.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_closed_by_webhook_ends_the_grant_and_the_role_leaves_the_scim_server() {
    let tenant = Tenant::new();
    tenant.create_user(ENG, &["Employee"]).await;
    let app = spawn_app(Backend::Sqlite, Some(&tenant.base_url)).await;
    let book = &app.servicenow.changes;
    book.put_change(change("CHG0000070", ENG));

    // Implement + approved: the assignee's grant, for the role the change names.
    let (status, answer, _) = app
        .webhook("d-open", &json!({"number": "CHG0000070", "state": "-1"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let granted = answer["outcome"]["granted"][0].as_str().unwrap().to_owned();
    tenant
        .wait_for_role(ENG, "Master Admin", true, Duration::from_secs(10))
        .await;
    let (_, g) = app.get(&format!("/api/v1/grants/{granted}")).await;
    assert_eq!(g["origin"], "servicenow");
    assert_eq!(g["requested_by"], "servicenow");

    // Another update of the same change (a new delivery) creates nothing new.
    let (_, answer, _) = app
        .webhook(
            "d-worknote",
            &json!({"number": "CHG0000070", "state": "-1"}),
        )
        .await;
    assert_eq!(answer["outcome"]["granted"], json!([]), "{answer}");
    assert_eq!(answer["outcome"]["unchanged"][0], granted.as_str());

    // The body is never trusted: it says Closed, ServiceNow still says Implement.
    let (_, answer, _) = app
        .webhook("d-lie", &json!({"number": "CHG0000070", "state": "3"}))
        .await;
    assert_eq!(answer["outcome"]["ended"], json!([]), "{answer}");

    // Closed in ServiceNow: the grant ends at once and the role is removed.
    book.update_change("CHG0000070", json!({"state": "3"}));
    let (status, answer, _) = app
        .webhook("d-close", &json!({"number": "CHG0000070", "state": "3"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["outcome"]["ended"][0]["grant"],
        granted.as_str(),
        "{answer}"
    );
    tenant
        .wait_for_role(ENG, "Master Admin", false, Duration::from_secs(10))
        .await;
    let (_, g) = app.get(&format!("/api/v1/grants/{granted}")).await;
    assert_eq!(
        (g["state"].as_str(), g["end_reason"].as_str()),
        (Some("ended"), Some("ticket_closed"))
    );
    let kinds: Vec<String> = app
        .running
        .app
        .store
        .audit_events(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        kinds.iter().filter(|k| *k == "change_webhook").count() == 4,
        "{kinds:?}"
    );
    app.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassigned_change_ends_the_previous_assignees_grant() {
    let tenant = Tenant::new();
    tenant.create_user(ENG, &["Employee"]).await;
    tenant.create_user("bob@example.com", &["Employee"]).await;
    let app = spawn_app(Backend::Sqlite, Some(&tenant.base_url)).await;
    let book = &app.servicenow.changes;
    book.put_change(change("CHG0000080", ENG));
    let (_, answer, _) = app.webhook("r-1", &json!({"number": "CHG0000080"})).await;
    assert_eq!(
        answer["outcome"]["granted"].as_array().unwrap().len(),
        1,
        "{answer}"
    );
    book.update_change(
        "CHG0000080",
        json!({"assigned_to": "user-bob", "assigned_to.email": "bob@example.com", "assigned_to.user_name": "bob"}),
    );
    let (_, answer, _) = app.webhook("r-2", &json!({"number": "CHG0000080"})).await;
    assert!(
        answer["outcome"]["ended"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("reassigned"),
        "{answer}"
    );
    assert_eq!(
        answer["outcome"]["granted"].as_array().unwrap().len(),
        1,
        "bob's grant: {answer}"
    );
    tenant
        .wait_for_role(ENG, "Master Admin", false, Duration::from_secs(10))
        .await;
    tenant
        .wait_for_role(
            "bob@example.com",
            "Master Admin",
            true,
            Duration::from_secs(10),
        )
        .await;
    app.running.stop().await;
}

#[test]
fn policy_check_prints_the_decision_table() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_jit-broker-under-test"))
            .args(["policy", "check"])
            .args(args)
            .output()
            .unwrap()
    };
    let policy = jit_e2e::workspace_root().join("policies/policy.toml");
    let policy = policy.to_str().unwrap();
    let out = run(&[policy]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("valid (6 roles, 4 privileged)"), "{text}");

    let out = run(&[
        policy,
        "--user",
        "alice@example.com",
        "--role",
        "Master Admin",
        "--ticket",
        "CHG0001234",
        "--duration",
        "2h",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("decision: ALLOW → approved"), "{text}");

    let out = run(&[
        policy,
        "--user",
        "mallory@example.com",
        "--role",
        "Master Admin",
        "--ticket",
        "CHG0001234",
        "--change-state",
        "review",
        "--assignee",
        "bob@example.com",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    for clause in [
        "roles.\"Master Admin\".eligible_users",
        "roles.\"Master Admin\".change_states",
        "roles.\"Master Admin\".requester",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("DENY") && l.contains(clause)),
            "{clause} in {text}"
        );
    }

    let broken = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        broken.path(),
        "version = 1\n[roles.\"A\"]\ndefault_duration = \"1h\"\nmax_duration = \"4h\"\n",
    )
    .unwrap();
    let out = run(&[broken.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(":2: `roles.\"A\".eligible_users`"));
}

#[tokio::test]
async fn oauth_client_credentials_are_used_cached_and_refreshed_once_on_401() {
    let sn = jit_e2e::app::ServiceNow::start().await;
    sn.changes.require_oauth("jit-broker", "sn-client-secret");
    sn.changes.put_change(change("CHG0000090", ENG));
    let client = jit_itsm::ServiceNowClient::new(
        jit_itsm::ServiceNowConfig {
            instance_url: url::Url::parse(&sn.url).unwrap(),
            auth: jit_itsm::ServiceNowAuth::ClientCredentials {
                token_url: url::Url::parse(&format!("{}oauth_token.do", sn.url)).unwrap(),
                client_id: "jit-broker".into(),
                client_secret: SecretString::from("sn-client-secret"),
            },
            timeout: Duration::from_secs(2),
            role_field: "u_jit_role".into(),
            bind_roles: true,
        },
        Arc::new(jit_app::SystemClock),
    )
    .unwrap();
    let number = jit_domain::TicketId::parse("CHG0000090").unwrap();
    use jit_app::TicketSystem;
    assert!(client.change(&number).await.unwrap().is_some());
    assert!(client.change(&number).await.unwrap().is_some());
    assert_eq!(sn.changes.tokens_issued(), 1, "the token is cached");
    sn.changes.revoke_tokens();
    assert!(
        client.change(&number).await.unwrap().is_some(),
        "refreshed after a 401"
    );
    assert_eq!(sn.changes.tokens_issued(), 2);

    // Wrong credentials: the lookup is refused as unavailable, never guessed.
    let wrong = jit_itsm::ServiceNowClient::new(
        jit_itsm::ServiceNowConfig {
            instance_url: url::Url::parse(&sn.url).unwrap(),
            auth: jit_itsm::ServiceNowAuth::ClientCredentials {
                token_url: url::Url::parse(&format!("{}oauth_token.do", sn.url)).unwrap(),
                client_id: "jit-broker".into(),
                client_secret: SecretString::from("wrong"),
            },
            timeout: Duration::from_secs(2),
            role_field: "u_jit_role".into(),
            bind_roles: true,
        },
        Arc::new(jit_app::SystemClock),
    )
    .unwrap();
    let err = wrong.change(&number).await.unwrap_err().to_string();
    assert!(err.contains("token endpoint answered 401"), "{err}");
    assert!(!err.contains("wrong"), "the secret never appears: {err}");
}
