//! The core loop against a real SCIM server (scim2-server), on SQLite and
//! PostgreSQL, with time moved by the test.

use std::sync::Arc;

use jit_domain::{EndReason, GrantState};
use jit_e2e::app::Stack;
use jit_e2e::{Backend, Tenant};
use rstest::rstest;
use serde_json::{Value, json};

const ENG: &str = "eng@example.com";

fn request(user: &str, extra: Value) -> Value {
    let mut body = jit_e2e::app::grant_request(user, "CHG0012345", "1h");
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    body
}

async fn stack_with_users(backend: Backend, users: &[(&str, &[&str])]) -> (Stack, Tenant) {
    Stack::with_users(backend, users).await
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_grant_adds_the_role_at_start_and_removes_it_at_expiry(#[case] backend: Backend) {
    let (stack, tenant) = stack_with_users(backend, &[(ENG, &["Employee"])]).await;
    let grant = stack.request(request(ENG, json!({}))).await;
    assert_eq!(grant.state, GrantState::Approved);

    assert_eq!(stack.run_due().await, 1, "the start job runs at once");
    assert_eq!(tenant.roles_of(ENG).await, ["Employee", "Master Admin"]);
    let active = stack.app.grant(grant.id).await.unwrap();
    assert_eq!(active.state, GrantState::Active);
    assert_eq!(active.role_added_at, Some(stack.app.now()));

    stack.advance(3599);
    assert_eq!(stack.run_due().await, 0, "nothing is due before expiry");
    assert_eq!(tenant.roles_of(ENG).await, ["Employee", "Master Admin"]);

    stack.advance(1);
    assert_eq!(stack.run_due().await, 1);
    assert_eq!(tenant.roles_of(ENG).await, ["Employee"]);
    let ended = stack.app.grant(grant.id).await.unwrap();
    assert_eq!(
        (ended.state, ended.end_reason),
        (GrantState::Ended, Some(EndReason::Expired))
    );
    assert_eq!(ended.ended_at, Some(grant.expires_at));
    assert_eq!(ended.role_removed_at, Some(stack.app.now()));

    assert_eq!(
        stack.audit_kinds().await,
        [
            "grant_requested",
            "grant_activated",
            "role_added",
            "grant_ended",
            "role_removed"
        ]
    );
    assert_eq!(
        jit_store::verify_audit(stack.store.as_ref(), None)
            .await
            .unwrap()
            .map(|r| r.events),
        Ok(5)
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn overlapping_grants_keep_the_role_until_the_later_one_ends(#[case] backend: Backend) {
    let (stack, tenant) = stack_with_users(backend, &[(ENG, &["Employee"])]).await;
    let first = stack.request(request(ENG, json!({"duration": "1h"}))).await;
    stack.advance(1800);
    let second = stack
        .request(request(
            ENG,
            json!({"duration": "1h", "ticket": "CHG0012346"}),
        ))
        .await;
    stack.run_due().await;
    assert_eq!(tenant.roles_of(ENG).await, ["Employee", "Master Admin"]);

    stack.advance(1800); // the first grant expires; the second still covers the pair
    assert_eq!(stack.run_due().await, 1);
    assert_eq!(
        tenant.roles_of(ENG).await,
        ["Employee", "Master Admin"],
        "the role stays for the second grant"
    );
    let first_now = stack.app.grant(first.id).await.unwrap();
    assert_eq!(first_now.state, GrantState::Ended);
    assert_eq!(
        first_now.role_removed_at, None,
        "the role was not removed yet"
    );

    stack.advance(1800); // the second expires: now the role goes
    assert_eq!(stack.run_due().await, 1);
    assert_eq!(tenant.roles_of(ENG).await, ["Employee"]);
    for id in [first.id, second.id] {
        let g = stack.app.grant(id).await.unwrap();
        assert_eq!(
            g.role_removed_at,
            Some(stack.app.now()),
            "both grants record the real removal"
        );
    }
    let kinds = stack.audit_kinds().await;
    assert_eq!(kinds.iter().filter(|k| *k == "role_removed").count(), 1);
    assert_eq!(kinds.iter().filter(|k| *k == "role_added").count(), 1);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn dropping_a_grant_removes_the_role_at_once_unless_another_covers_it(
    #[case] backend: Backend,
) {
    let (stack, tenant) =
        stack_with_users(backend, &[(ENG, &["Employee"]), ("ops@example.com", &[])]).await;
    let solo = stack.request(request(ENG, json!({}))).await;
    stack.run_due().await;
    stack.advance(60);
    let dropped = stack
        .app
        .end_grant("test", solo.id, EndReason::Dropped, "work finished early")
        .await
        .unwrap();
    assert_eq!(
        (dropped.state, dropped.end_reason),
        (GrantState::Ended, Some(EndReason::Dropped))
    );
    assert_eq!(dropped.end_note.as_deref(), Some("work finished early"));
    assert_eq!(stack.run_due().await, 1);
    assert_eq!(tenant.roles_of(ENG).await, ["Employee"]);

    // Two grants for ops; dropping one keeps the role for the other.
    let a = stack
        .request(request("ops@example.com", json!({"ticket": "CHG0012398"})))
        .await;
    let _b = stack
        .request(request("ops@example.com", json!({"ticket": "CHG0012399"})))
        .await;
    stack.run_due().await;
    stack
        .app
        .end_grant("test", a.id, EndReason::Dropped, "duplicate request")
        .await
        .unwrap();
    stack.run_due().await;
    assert_eq!(tenant.roles_of("ops@example.com").await, ["Master Admin"]);

    // Ending twice is a conflict, not a second write.
    let again = stack
        .app
        .end_grant("test", solo.id, EndReason::Dropped, "again")
        .await;
    assert!(
        matches!(again, Err(jit_app::AppError::Conflict(_))),
        "{again:?}"
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_scheduled_grant_waits_for_its_start_and_a_cancelled_one_never_applies(
    #[case] backend: Backend,
) {
    let (stack, tenant) = stack_with_users(backend, &[(ENG, &["Employee"])]).await;
    let starts = stack.app.now() + chrono::TimeDelta::minutes(10);
    let scheduled = stack
        .request(request(ENG, json!({"starts_at": starts.to_rfc3339()})))
        .await;
    assert_eq!(stack.run_due().await, 0);
    stack.advance(599);
    assert_eq!(stack.run_due().await, 0);
    assert_eq!(tenant.roles_of(ENG).await, ["Employee"]);
    stack.advance(1);
    assert_eq!(stack.run_due().await, 1);
    assert_eq!(tenant.roles_of(ENG).await, ["Employee", "Master Admin"]);
    assert_eq!(
        stack.app.grant(scheduled.id).await.unwrap().state,
        GrantState::Active
    );

    let later = stack.app.now() + chrono::TimeDelta::hours(2);
    let cancelled = stack
        .request(request(
            "eng@example.com",
            json!({"starts_at": later.to_rfc3339(), "ticket": "CHG0099999"}),
        ))
        .await;
    let c = stack
        .app
        .end_grant("test", cancelled.id, EndReason::Dropped, "change postponed")
        .await
        .unwrap();
    assert_eq!(c.state, GrantState::Cancelled);
    stack.advance(7200 + 3600);
    stack.run_due().await;
    assert_eq!(
        tenant.roles_of(ENG).await,
        ["Employee"],
        "the scheduled grant expired; the cancelled one never applied"
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn roles_the_grant_is_not_about_are_never_touched(#[case] backend: Backend) {
    // Baseline roles, and even a standing privileged role (the reconciler's
    // business, not this grant's): converge changes only the granted role.
    let user_roles: &[&str] = &["Employee", "Supervisor", "Telephony Admin"];
    let (stack, tenant) = stack_with_users(backend, &[(ENG, user_roles)]).await;
    stack.request(request(ENG, json!({}))).await;
    stack.run_due().await;
    assert_eq!(
        tenant.roles_of(ENG).await,
        ["Employee", "Master Admin", "Supervisor", "Telephony Admin"]
    );
    stack.advance(3600);
    stack.run_due().await;
    assert_eq!(
        tenant.roles_of(ENG).await,
        ["Employee", "Supervisor", "Telephony Admin"]
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_user_the_directory_does_not_know_fails_permanently_and_is_recorded(
    #[case] backend: Backend,
) {
    let (stack, _tenant) = stack_with_users(backend, &[]).await;
    let grant = stack.request(request("ghost@example.com", json!({}))).await;
    assert_eq!(stack.run_due().await, 1);
    let g = stack.app.grant(grant.id).await.unwrap();
    assert!(
        g.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("not found"),
        "{:?}",
        g.last_error
    );
    assert_eq!(g.role_added_at, None);
    assert!(
        stack
            .audit_kinds()
            .await
            .contains(&"converge_failed".to_owned())
    );
    stack.advance(120);
    assert_eq!(
        stack.run_due().await,
        0,
        "a permanent failure is not retried"
    );
}

/// A request nobody approves lapses at its time (the injected clock moves);
/// one approved starts its window and the role arrives; a denial ends one.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn approvals_start_deny_or_lapse_a_waiting_grant(#[case] backend: Backend) {
    let (stack, tenant) = stack_with_users(backend, &[(ENG, &["Employee"])]).await;
    let recording = json!({"role": "Recording Admin", "duration": "30m"});
    let lead = jit_app::Person {
        user: jit_domain::UserName::parse("lead@example.com").unwrap(),
        groups: Default::default(),
    };
    // Unanswered: it lapses at the end of the window it asked for.
    let waiting = stack
        .request(request(
            ENG,
            json!({"role": "Recording Admin", "duration": "30m", "ticket": "CHG0012346"}),
        ))
        .await;
    assert_eq!(waiting.state, GrantState::PendingApproval);
    stack.run_due().await;
    assert_eq!(
        tenant.roles_of(ENG).await,
        ["Employee"],
        "nothing before approval"
    );
    stack.advance(30 * 60);
    stack.run_due().await;
    let lapsed = stack.app.grant(waiting.id).await.unwrap();
    assert_eq!(lapsed.state, GrantState::Cancelled);
    assert_eq!(lapsed.end_note.as_deref(), Some("approval lapsed"));

    // Approved: the role arrives; a review of a grant no longer pending is refused.
    let approved = stack.request(request(ENG, recording.clone())).await;
    let after = stack
        .app
        .review_grant(&lead, approved.id, jit_domain::Verdict::Approve, "")
        .await
        .unwrap();
    assert_eq!(after.state, GrantState::Approved);
    stack.run_due().await;
    assert_eq!(tenant.roles_of(ENG).await, ["Employee", "Recording Admin"]);
    let again = stack
        .app
        .review_grant(&lead, approved.id, jit_domain::Verdict::Deny, "too late")
        .await;
    assert!(matches!(again, Err(jit_app::AppError::Refused(r)) if r.rule == "not_pending"));

    // Denied: a reason is required, then it ends.
    let denied = stack
        .request(request(
            ENG,
            json!({"role": "Recording Admin", "duration": "30m", "ticket": "CHG0012347"}),
        ))
        .await;
    let no_reason = stack
        .app
        .review_grant(&lead, denied.id, jit_domain::Verdict::Deny, " ")
        .await;
    assert!(matches!(no_reason, Err(jit_app::AppError::Invalid(_))));
    let ended = stack
        .app
        .review_grant(
            &lead,
            denied.id,
            jit_domain::Verdict::Deny,
            "not during the freeze",
        )
        .await
        .unwrap();
    assert_eq!(ended.state, GrantState::Denied);
    let kinds = stack.audit_kinds().await;
    for kind in ["grant_approved", "grant_denied", "grant_cancelled"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}

/// What one grant's whole life costs the target, counted by a proxy in front
/// of the real SCIM server: per change one read and one `PATCH` (whose answer
/// is the read-back), the user's id remembered after the first look-up:
/// 4 requests, each write still guarded by `If-Match` and verified.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_grant_lifecycle_costs_the_target_four_requests(#[case] backend: Backend) {
    let tenant = Tenant::new();
    tenant.create_user(ENG, &["Employee"]).await;
    let proxy = jit_e2e::proxy::ScimProxy::start(&tenant.base_url, None).await;
    let stack = Stack::new(
        backend,
        Arc::new(jit_e2e::app::scim_client(
            &proxy.base_url,
            std::time::Duration::from_secs(5),
        )),
    )
    .await;
    let grant = stack.request(request(ENG, json!({}))).await;
    stack.run_due().await;
    assert_eq!(tenant.roles_of(ENG).await, ["Employee", "Master Admin"]);
    assert_eq!(proxy.counts.requests(), 2, "activation: look-up and PATCH");
    stack.advance(3600);
    stack.run_due().await;
    assert_eq!(tenant.roles_of(ENG).await, ["Employee"]);
    assert_eq!(proxy.counts.requests(), 4, "expiry: read by id and PATCH");
    assert_eq!(proxy.counts.patches(), 2);
    let ended = stack.app.grant(grant.id).await.unwrap();
    assert!(ended.role_added_at.is_some() && ended.role_removed_at.is_some());
    proxy.stop().await;
}

/// Behind a target that allows 600 requests a minute and answers 429 past it
/// the way Genesys Cloud does, grants starting and ending together draw no
/// 429 from a broker keeping to its budget (here half the target's rate, so
/// that a loaded test machine's delays cannot bunch its requests up).
#[tokio::test]
async fn within_the_directory_budget_a_burst_draws_no_429() {
    // The stand-in enforces its limit like Genesys: status, header, body.
    let tenant = Tenant::new();
    let strict = jit_e2e::proxy::ScimProxy::start(&tenant.base_url, Some(60)).await;
    let http = reqwest::Client::new();
    let answers = futures_util::future::join_all((0..3).map(|_| {
        http.get(format!("{}/Users", strict.base_url))
            .bearer_auth(jit_e2e::SCIM_TOKEN)
            .send()
    }))
    .await;
    let refused = answers
        .into_iter()
        .map(Result::unwrap)
        .find(|r| r.status() == 429)
        .expect("a burst past the limit is refused");
    assert_eq!(refused.headers()["retry-after"], "2");
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("Retry the request in [2] seconds")
    );
    strict.stop().await;

    let users: Vec<String> = (0..6).map(|i| format!("burst{i}@example.com")).collect();
    for u in &users {
        tenant.create_user(u, &["Employee"]).await;
    }
    let proxy = jit_e2e::proxy::ScimProxy::start(&tenant.base_url, Some(600)).await;
    let client = jit_e2e::app::scim_client(&proxy.base_url, std::time::Duration::from_secs(5))
        .with_budget(Arc::new(jit_app::Budget::per_minute(300, 5)));
    let stack = Stack::new(Backend::Sqlite, Arc::new(client)).await;
    for (i, u) in users.iter().enumerate() {
        stack
            .request(request(u, json!({"ticket": format!("CHG00123{i:02}")})))
            .await;
    }
    stack.run_due().await;
    for u in &users {
        assert_eq!(
            tenant.roles_of(u).await,
            ["Employee", "Master Admin"],
            "{u}"
        );
    }
    stack.advance(3600);
    stack.run_due().await;
    for u in &users {
        assert_eq!(tenant.roles_of(u).await, ["Employee"], "{u}");
    }
    assert_eq!(proxy.counts.limited(), 0, "no 429 within the budget");
    assert_eq!(
        proxy.counts.requests(),
        24,
        "4 requests per grant lifecycle"
    );
    proxy.stop().await;
}
