//! The adversarial review's findings (issue 29), each as the attack that
//! worked before its fix.

use chrono::TimeDelta;
use jit_domain::{Caller, ExtensionForm};
use jit_e2e::Backend;
use jit_e2e::app::{Stack, t0};
use jit_server::sandbox_servicenow::ChangeBook;
use rstest::rstest;
use serde_json::json;

fn admin_key() -> Caller {
    Caller::Key {
        name: "e2e".into(),
        admin: true,
    }
}

fn extension(body: serde_json::Value) -> ExtensionForm {
    serde_json::from_value(body).unwrap()
}

/// An emergency grant on an unapproved change is capped at the emergency
/// duration, first grant and extensions together; two extensions once took
/// one from 30 minutes to the role's full maximum. Once the change is
/// approved (read live) the role's own rules apply, and every emergency
/// extension is a SOC notice.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_emergency_grant_is_not_extended_past_its_cap(#[case] backend: Backend) {
    let (stack, _tenant) = Stack::with_users(backend, &[("tel@example.com", &["Employee"])]).await;
    let mut change = ChangeBook::approved_change(
        "CHG0000902",
        "bob@example.com",
        "Telephony Admin",
        t0(),
        TimeDelta::hours(6),
    );
    change["approval"] = json!("requested");
    change["type"] = json!("emergency");
    stack.servicenow.changes.put_change(change.clone());
    stack
        .servicenow
        .changes
        .add_group_member("grp-ops", "tel@example.com");
    let mut body = jit_e2e::app::grant_request("tel@example.com", "CHG0000902", "20m");
    body["role"] = json!("Telephony Admin");
    let grant = stack.request(body).await;
    assert!(grant.is_emergency());
    let caller = admin_key();
    let extend = |by: &str| {
        let form = extension(json!({ "by": by }));
        let (app, id) = (stack.app.clone(), grant.id);
        async move { app.extend_grant(&admin_key(), id, &form).await }
    };
    // Within the cap: allowed, and the SOC is told.
    let moved = extend("5m").await.expect("within the cap");
    assert_eq!(
        moved.grant().expires_at - grant.starts_at,
        TimeDelta::minutes(25)
    );
    let notice = stack
        .store
        .audit_events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "grant_extended")
        .expect("audited");
    assert_eq!(notice.data["emergency"], true);
    assert_eq!(
        jit_domain::soc_notice("grant_extended", &notice.data),
        Some(jit_domain::Severity::P2)
    );
    // Past it, in one step or piecemeal: refused, naming the clause.
    for by in ["2h", "6m"] {
        let Err(jit_app::AppError::Invalid(fields)) = extend(by).await else {
            panic!("{by}: past the emergency cap, not refused");
        };
        assert_eq!(fields[0].rule, "emergency_max_duration", "{fields:?}");
        assert_eq!(
            fields[0].policy.as_deref(),
            Some("roles.\"Telephony Admin\".emergency.max_duration")
        );
    }
    let after = stack.app.grant(grant.id).await.unwrap();
    assert_eq!(
        after.expires_at,
        moved.grant().expires_at,
        "refusals moved nothing"
    );

    // Approved now: the role's maximum (8 h) and the change's window apply.
    change["approval"] = json!("approved");
    stack.servicenow.changes.put_change(change);
    let moved = stack
        .app
        .extend_grant(&caller, grant.id, &extension(json!({"by": "2h"})))
        .await
        .expect("an approved change: the role's rules");
    assert_eq!(
        moved.grant().expires_at - grant.starts_at,
        TimeDelta::minutes(145)
    );
}

/// Rows in `table` (a name of ours, never input).
async fn count(database_url: &str, table: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
    if database_url.starts_with("postgres") {
        let db = sqlx::PgPool::connect(database_url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&db).await.unwrap()
    } else {
        let db = sqlx::SqlitePool::connect(database_url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&db).await.unwrap()
    }
}

/// Bad input is the caller's mistake, answered 4xx, writing nothing: a
/// grant shorter than the clock keeps (`1ns` hit a CHECK constraint and
/// answered 500), a race lost by concurrent extends (a 500 "kept
/// changing"), and a body in another type than JSON (read as JSON).
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_4xx_and_writes_nothing(#[case] backend: Backend) {
    let tenant = jit_e2e::Tenant::new();
    tenant.create_user("eng@example.com", &["Employee"]).await;
    let app = jit_e2e::app::spawn_app(backend, Some(&tenant.base_url)).await;
    let grants = count(&app.database_url, "grants").await;
    let mut body = jit_e2e::app::grant_request("eng@example.com", "CHG0000910", "1ns");
    let (status, err) = app.request_grant(&body).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["fields"][0]["rule"], "min_duration", "{err}");
    assert_eq!(count(&app.database_url, "grants").await, grants);

    // Not JSON by its type: 415, naming the header, before anything is read.
    let raw = app
        .http
        .post(format!("{}/api/v1/grants", app.base))
        .bearer_auth(jit_e2e::app::API_KEY)
        .header("content-type", "text/plain")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 415);
    assert_eq!(
        raw.headers().get("cache-control").unwrap(),
        "no-store",
        "an API answer is never cached"
    );
    let err: serde_json::Value = raw.json().await.unwrap();
    assert_eq!(err["error"]["fields"][0]["field"], "Content-Type", "{err}");
    let untyped = app
        .http
        .post(format!("{}/api/v1/grants", app.base))
        .bearer_auth(jit_e2e::app::API_KEY)
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(untyped.status().as_u16(), 415, "no type is not JSON either");
    assert_eq!(count(&app.database_url, "grants").await, grants);

    // Twenty extends at once: each is 200 or 409, never a 500; the end
    // moved once per 200.
    body["duration"] = json!("1h");
    let (status, g) = app.request_grant(&body).await;
    assert_eq!(status, 201, "{g}");
    let id = g["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/grants/{id}/extend");
    let by = json!({"by": "1m"});
    let answers = futures_util::future::join_all((0..20).map(|_| app.post(&path, &by))).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    let moved = statuses.iter().filter(|s| **s == 200).count() as i64;
    let (_, now) = app.get(&format!("/api/v1/grants/{id}")).await;
    let end = |g: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(g["expires_at"].as_str().unwrap()).unwrap()
    };
    assert_eq!(end(&now) - end(&g), TimeDelta::minutes(moved));
    app.running.stop().await;
}

/// Who holds privileged roles, the break-glass accounts and the privileged
/// OAuth clients are the SOC's to read: any other key was answered.
#[tokio::test]
async fn only_admin_keys_and_the_soc_read_the_reconcilers_runs() {
    let tenant = jit_e2e::Tenant::new();
    let app = jit_e2e::app::spawn_app(Backend::Sqlite, Some(&tenant.base_url)).await;
    for path in ["/api/v1/reconcile/runs", "/api/v1/reconcile/runs/some-run"] {
        let reader = app
            .http
            .get(format!("{}{path}", app.base))
            .bearer_auth(jit_e2e::app::READER_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(reader.status().as_u16(), 403, "{path}");
    }
    let (status, runs) = app.get("/api/v1/reconcile/runs").await;
    assert_eq!(status, 200, "{runs}");
    app.running.stop().await;
}
