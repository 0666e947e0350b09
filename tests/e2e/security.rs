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
    count_where(database_url, &format!("SELECT COUNT(*) FROM {table}")).await
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

/// Rows from before user names had one form are rewritten to it; two rows
/// that become one (bob answering a request as `BOB@…` and as `bob@…`) keep
/// the earliest and are reported to the SOC once, never merged silently.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn old_rows_take_the_canonical_form_and_collisions_are_reported(#[case] backend: Backend) {
    let url = jit_e2e::fresh_database(backend).await;
    let dir = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    // The schema as it was before the canonical form (migrations 1 to 11).
    let before = tempfile::tempdir().unwrap();
    let all = jit_e2e::workspace_root().join("migrations").join(dir);
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < "0012" {
            std::fs::copy(&path, before.path().join(&name)).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(before.path()).await.unwrap();
    let statements = [
        "INSERT INTO grants (id, user_name, role, justification, requested_by, state, starts_at, expires_at, created_at, updated_at) \
         VALUES ('0190a0a0-0000-7000-8000-000000000001', 'Alice@Example.com', 'Recording Admin', 'rotate the trunk', 'Alice@Example.com', 'pending_approval', 1, 2, 1, 1)",
        "INSERT INTO grant_reviews (grant_id, approver, verdict, comment, at) VALUES ('0190a0a0-0000-7000-8000-000000000001', 'bob@example.com', 'approve', '', 10)",
        "INSERT INTO grant_reviews (grant_id, approver, verdict, comment, at) VALUES ('0190a0a0-0000-7000-8000-000000000001', 'BOB@example.com', 'approve', '', 20)",
        "INSERT INTO sign_ins (user_name, groups, signed_in_at, valid_until) VALUES ('Carol@example.com', '[]', 5, 50)",
    ];
    match backend {
        Backend::Sqlite => {
            let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
                .unwrap()
                .create_if_missing(true);
            let db = sqlx::SqlitePool::connect_with(options).await.unwrap();
            migrator.run(&db).await.unwrap();
            for sql in statements {
                sqlx::query(sql).execute(&db).await.unwrap();
            }
        }
        Backend::Postgres => {
            let db = sqlx::PgPool::connect(&url).await.unwrap();
            migrator.run(&db).await.unwrap();
            for sql in statements {
                sqlx::query(sql).execute(&db).await.unwrap();
            }
        }
    }
    let store = jit_store::open(&url, true, 5).await.unwrap();
    let id = "0190a0a0-0000-7000-8000-000000000001".parse().unwrap();
    let grant = store.grant(id).await.unwrap().unwrap();
    assert_eq!(grant.user.as_str(), "alice@example.com");
    let alice = jit_domain::UserName::parse("alice@example.com").unwrap();
    let role = jit_domain::RoleName::parse("Recording Admin").unwrap();
    assert_eq!(
        store.grants_for(&alice, &role).await.unwrap().len(),
        1,
        "found by its canonical name"
    );
    let reviews = store.reviews(id).await.unwrap();
    assert_eq!(reviews.len(), 1, "one approver, one answer: {reviews:?}");
    assert_eq!(
        (
            reviews[0].approver.as_str(),
            reviews[0].at.timestamp_millis()
        ),
        ("bob@example.com", 10)
    );
    assert_eq!(count(&url, "sign_ins").await, 1);

    // Reported once, as a SOC notice naming both spellings.
    assert!(
        store
            .report_user_name_collisions(t0(), "jit-broker", "user_names_collided")
            .await
            .unwrap()
    );
    assert!(
        !store
            .report_user_name_collisions(t0(), "jit-broker", "user_names_collided")
            .await
            .unwrap()
    );
    let told: Vec<_> = store
        .audit_events(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "user_names_collided")
        .collect();
    assert_eq!(told.len(), 1);
    let names = told[0].data["collisions"][0]["names"].as_str().unwrap();
    assert!(
        names.contains("bob@example.com") && names.contains("BOB@example.com"),
        "{names}"
    );
    assert_eq!(
        jit_domain::soc_notice("user_names_collided", &told[0].data),
        Some(jit_domain::Severity::P2)
    );
}

/// A grant made for `ALICE@example.com` is alice's: ending it once stripped
/// her role while her own grant still read active. Now both are one pair's.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_name_in_capitals_is_the_same_person(#[case] backend: Backend) {
    let (stack, tenant) = Stack::with_users(backend, &[("alice@example.com", &["Employee"])]).await;
    let own = stack
        .request(jit_e2e::app::grant_request(
            "alice@example.com",
            "CHG0000920",
            "1h",
        ))
        .await;
    let shouted = stack
        .request(jit_e2e::app::grant_request(
            "ALICE@Example.com",
            "CHG0000921",
            "10m",
        ))
        .await;
    assert_eq!(shouted.user, own.user);
    stack.run_due().await;
    assert!(
        tenant
            .roles_of("alice@example.com")
            .await
            .contains(&"Master Admin".to_owned())
    );
    stack
        .app
        .drop_grant(&admin_key(), shouted.id, "done with it")
        .await
        .unwrap();
    stack.run_due().await;
    assert!(
        tenant
            .roles_of("alice@example.com")
            .await
            .contains(&"Master Admin".to_owned()),
        "her own grant still covers her"
    );
    stack.advance(3600);
    stack.run_due().await;
    assert!(
        !tenant
            .roles_of("alice@example.com")
            .await
            .contains(&"Master Admin".to_owned())
    );
}

/// A change is a reason only for the roles it names (`u_jit_role`): one
/// approved for Telephony Admin was accepted for Master Admin, and in the
/// sandbox Recording Admin citing CHG0000001 (for Master Admin) was too.
#[tokio::test]
async fn a_change_is_bound_to_the_roles_it_names() {
    let tenant = jit_e2e::Tenant::new();
    tenant.create_user("tel@example.com", &["Employee"]).await;
    let app = jit_e2e::app::spawn_app(Backend::Sqlite, Some(&tenant.base_url)).await;
    app.servicenow.approve(
        "CHG0000930",
        "tel@example.com",
        "Telephony Admin",
        chrono::Utc::now(),
    );
    let body = jit_e2e::app::grant_request("tel@example.com", "CHG0000930", "30m");
    let (status, refused) = app.post("/api/v1/grants", &body).await;
    assert_eq!(status, 403, "{refused}");
    let fields = refused["error"]["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 1, "{refused}");
    assert_eq!(fields[0]["rule"], "ticket_role");
    assert!(
        fields[0]["message"]
            .as_str()
            .unwrap()
            .contains("Telephony Admin"),
        "{refused}"
    );
    let clauses: Vec<&str> = refused["error"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    assert!(
        clauses.contains(&"ticket_role"),
        "shown clause by clause: {clauses:?}"
    );
    app.running.stop().await;

    let sandbox = jit_e2e::app::spawn_app(Backend::Sqlite, None).await;
    let mut recording = jit_e2e::app::grant_request("alice@example.com", "CHG0000001", "30m");
    recording["role"] = json!("Recording Admin");
    let (status, refused) = sandbox.post("/api/v1/grants", &recording).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(
        refused["error"]["fields"][0]["rule"], "ticket_role",
        "{refused}"
    );
    recording["ticket"] = json!("CHG0000004");
    let (status, asked) = sandbox.post("/api/v1/grants", &recording).await;
    assert_eq!(
        (status, asked["state"].as_str()),
        (201, Some("pending_approval")),
        "{asked}"
    );
    sandbox.running.stop().await;
}

/// The test policy with Master Admin's cap on live grants raised, so that
/// one pair can be given a storm of grants (the cap refuses it otherwise).
fn storm_policy() -> jit_domain::Policy {
    let text = std::fs::read_to_string(jit_e2e::app::test_policy_path()).unwrap();
    let text = text.replacen(
        "[roles.\"Master Admin\"]\n",
        "[roles.\"Master Admin\"]\nmax_live_grants = 1000\n",
        1,
    );
    jit_domain::Policy::from_toml("storm.toml", &text).unwrap()
}

/// Work is per (user, role): 300 grants for alice are one pending job, one
/// converge settles them all, another user's grant is active within the
/// same round, and the directory sees one add and one removal for alice's
/// pair, not one per grant. A grant that ended before its activation ran
/// costs the directory nothing.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn one_pairs_storm_of_grants_is_one_job_and_holds_nobody_back(#[case] backend: Backend) {
    let tenant = jit_e2e::Tenant::new();
    for user in ["alice@example.com", "bob@example.com"] {
        tenant.create_user(user, &["Employee"]).await;
    }
    let proxy = jit_e2e::proxy::ScimProxy::start(&tenant.base_url, None).await;
    let directory = std::sync::Arc::new(jit_e2e::app::scim_client(
        &proxy.base_url,
        std::time::Duration::from_secs(5),
    ));
    let stack = Stack::with_policy(backend, directory, storm_policy()).await;
    for i in 0..300 {
        let secs = if i % 2 == 0 { "3s" } else { "5s" };
        stack
            .request(jit_e2e::app::grant_request(
                "alice@example.com",
                "CHG0000940",
                secs,
            ))
            .await;
    }
    stack
        .request(jit_e2e::app::grant_request(
            "bob@example.com",
            "CHG0000941",
            "1h",
        ))
        .await;
    let pending = count_where(
        &stack.database_url,
        "SELECT COUNT(*) FROM jobs WHERE status = 'pending' AND user_name = 'alice@example.com'",
    )
    .await;
    assert_eq!(
        pending, 1,
        "one pending job for the pair, not one per grant"
    );

    stack.run_due().await;
    let has = |user: &'static str| {
        let tenant = &tenant;
        async move {
            tenant
                .roles_of(user)
                .await
                .contains(&"Master Admin".to_owned())
        }
    };
    assert!(
        has("bob@example.com").await,
        "bob is not held back by alice's storm"
    );
    assert!(has("alice@example.com").await);
    assert_eq!(proxy.counts.patches(), 2, "one add for each pair");

    // Every grant of alice's ends within 5 s: one removal, verified.
    stack.advance(5);
    stack.run_due().await;
    assert!(!has("alice@example.com").await);
    assert!(has("bob@example.com").await);
    assert_eq!(
        proxy.counts.patches(),
        3,
        "one removal for alice's 300 grants"
    );
    let requests = proxy.counts.requests();
    assert!(
        requests <= 6,
        "two requests a change of desired state: {requests}"
    );
    let unverified = count_where(
        &stack.database_url,
        "SELECT COUNT(*) FROM grants WHERE user_name = 'alice@example.com' AND (state <> 'ended' OR role_removed_at IS NULL)",
    )
    .await;
    assert_eq!(unverified, 0, "every grant ended and its removal recorded");

    // A grant that ends before its activation runs costs the directory
    // nothing: the broker proved the role absent and has not written since.
    stack
        .request(jit_e2e::app::grant_request(
            "alice@example.com",
            "CHG0000940",
            "1s",
        ))
        .await;
    stack.advance(2);
    stack.run_due().await;
    assert_eq!(proxy.counts.requests(), requests, "no directory call");
    assert!(!has("alice@example.com").await);
    proxy.stop().await;
}

async fn count_where(database_url: &str, sql: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if database_url.starts_with("postgres") {
        let db = sqlx::PgPool::connect(database_url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&db).await.unwrap()
    } else {
        let db = sqlx::SqlitePool::connect(database_url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&db).await.unwrap()
    }
}

/// The cap on live grants of one pair, and each caller's pace: a storm is
/// refused at the door, saying what to do instead.
#[tokio::test]
async fn a_callers_storm_is_refused_at_the_door() {
    let tenant = jit_e2e::Tenant::new();
    tenant.create_user("eng@example.com", &["Employee"]).await;
    let app = jit_e2e::app::spawn_app_with(Backend::Sqlite, Some(&tenant.base_url), |c| {
        c.limits.grant_requests_per_minute_per_key = 5;
    })
    .await;
    let body = jit_e2e::app::grant_request("eng@example.com", "CHG0000950", "30m");
    for _ in 0..3 {
        let (status, g) = app.request_grant(&body).await;
        assert_eq!(status, 201, "{g}");
    }
    let (status, refused) = app.request_grant(&body).await;
    assert_eq!(status, 403, "{refused}");
    let field = &refused["error"]["fields"][0];
    assert_eq!(field["rule"], "max_live_grants", "{refused}");
    assert_eq!(field["policy"], "roles.\"Master Admin\".max_live_grants");
    assert!(
        field["message"]
            .as_str()
            .unwrap()
            .contains("extend one instead"),
        "{refused}"
    );
    // The fifth request in the minute is the key's last; the sixth waits.
    app.request_grant(&body).await;
    let res = app
        .http
        .post(format!("{}/api/v1/grants", app.base))
        .bearer_auth(jit_e2e::app::API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    let wait: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["error"]["fields"][0]["rule"], "rate_limit");
    app.running.stop().await;
}

/// How one slow connection of the flood ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// The broker shut it before it sent anything (over its peer's cap).
    AtOnce,
    /// Closed by the broker after this long (headers or body too slow).
    After(std::time::Duration),
    /// Still open when the flood stopped.
    Held,
}

/// One connection from `from` that sends `head` and then a byte every
/// 250 ms, until the broker closes it or `stop` passes.
async fn trickle(
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
    head: &'static str,
    stop: tokio::time::Instant,
) -> Cut {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(from, 0)).unwrap();
    let Ok(mut stream) = socket.connect(to).await else {
        return Cut::AtOnce;
    };
    let opened = tokio::time::Instant::now();
    if stream.write_all(head.as_bytes()).await.is_err() {
        return Cut::AtOnce;
    }
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            // An answer (408, 400), end-of-stream or a reset: the broker let go.
            _ = stream.read(&mut buf) => {
                let took = opened.elapsed();
                return if took < std::time::Duration::from_millis(100) { Cut::AtOnce } else { Cut::After(took) };
            }
            () = tokio::time::sleep(std::time::Duration::from_millis(250)) => {
                if tokio::time::Instant::now() >= stop {
                    return Cut::Held;
                }
                if stream.write_all(b"x").await.is_err() {
                    return Cut::After(opened.elapsed());
                }
            }
        }
    }
}

/// An unauthenticated slow-body flood: 2 000 connections trickling a byte
/// every 250 ms, from one address (headers that never end) and from ten
/// others (a body that never ends). The broker cuts them off (at once over
/// a peer's cap, else within the request and body timeouts), `/healthz`
/// answers from another address throughout, and a grant due to end during
/// the flood has its removal verified within the SLO.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_body_flood_neither_starves_revocation_nor_the_health_check() {
    let tenant = jit_e2e::Tenant::new();
    tenant.create_user("eng@example.com", &["Employee"]).await;
    let app = jit_e2e::app::spawn_app_with(Backend::Sqlite, Some(&tenant.base_url), |c| {
        c.limits.client_request_timeout_secs = 1;
        c.limits.body_timeout_secs = 1;
        c.limits.max_connections_per_peer = 100;
        c.limits.max_connections = 1500;
    })
    .await;
    let (_, ready) = app.get("/readyz").await;
    assert!(
        ready["info"]["files"]["limit"].as_u64().unwrap() >= 2048,
        "{ready}"
    );
    let (status, grant) = app
        .request_grant(&jit_e2e::app::grant_request(
            "eng@example.com",
            "CHG0000960",
            "3s",
        ))
        .await;
    assert_eq!(status, 201, "{grant}");
    let to = app.running.addr;
    let stop = tokio::time::Instant::now() + std::time::Duration::from_secs(7);
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..2000u32 {
        let (from, head) = if i < 1000 {
            // Headers that never end, all from one address.
            (
                std::net::IpAddr::from([127, 0, 0, 2]),
                "POST /webhooks/servicenow HTTP/1.1\r\nHost: jit\r\n",
            )
        } else {
            // A body that never ends, from ten addresses.
            let peer = u8::try_from(10 + i % 10).unwrap();
            (
                std::net::IpAddr::from([127, 0, 1, peer]),
                "POST /webhooks/genesys/events HTTP/1.1\r\nHost: jit\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
            )
        };
        flood.spawn(trickle(from, to, head, stop));
    }
    // Meanwhile: the health check from another address, and the grant's end.
    let mut slowest_health = std::time::Duration::ZERO;
    let health = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    while tokio::time::Instant::now() < stop {
        let asked = std::time::Instant::now();
        let answer = health.get(format!("{}/healthz", app.base)).send().await;
        assert!(
            answer.is_ok_and(|r| r.status() == 200),
            "/healthz did not answer during the flood"
        );
        slowest_health = slowest_health.max(asked.elapsed());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let cuts: Vec<Cut> = flood.join_all().await;
    let at_once = cuts.iter().filter(|c| **c == Cut::AtOnce).count();
    let held = cuts.iter().filter(|c| **c == Cut::Held).count();
    let longest = cuts
        .iter()
        .filter_map(|c| match c {
            Cut::After(d) => Some(*d),
            _ => None,
        })
        .max()
        .unwrap_or_default();
    let g = app
        .grant_with(grant["id"].as_str().unwrap(), "role_removed_at")
        .await;
    let time = |f: &str| chrono::DateTime::parse_from_rfc3339(g[f].as_str().unwrap()).unwrap();
    let removal = time("role_removed_at") - time("expires_at");
    eprintln!(
        "figure: slow-body flood of {} connections: {at_once} refused at once (a peer's cap, the connection cap), {} cut after at most {:.1} s, {held} held to the end; /healthz slowest {:.0} ms; removal verified {} ms after expiry",
        cuts.len(),
        cuts.len() - at_once - held,
        longest.as_secs_f64(),
        slowest_health.as_secs_f64() * 1000.0,
        removal.num_milliseconds()
    );
    assert_eq!(held, 0, "every slow connection was let go: {cuts:?}");
    assert!(
        at_once >= 1000,
        "over each peer's cap of 100, shut at once: {at_once}"
    );
    assert!(
        longest < std::time::Duration::from_secs(4),
        "cut within the timeouts: {longest:?}"
    );
    assert!(
        removal < TimeDelta::seconds(60),
        "the removal kept its SLO: {removal}"
    );
    assert!(
        !tenant
            .roles_of("eng@example.com")
            .await
            .contains(&"Master Admin".to_owned())
    );
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    app.running.stop().await;
}

/// An anonymous `GET /login` starts a sign-in without writing anything on
/// the server (2 000 of them once wrote 2 000 session rows); the sign-in it
/// starts still completes, and its cookie cannot be used twice.
#[tokio::test]
async fn starting_a_sign_in_writes_nothing_on_the_server() {
    let app = jit_e2e::web::spawn_web_app(
        &[("alice@example.com", &["Employee"])],
        std::sync::Arc::new(jit_app::SystemClock),
    )
    .await;
    let sessions = count(&app.database_url, "web_sessions").await;
    let anonymous = jit_e2e::web::cookie_client();
    for _ in 0..50 {
        let res = anonymous
            .get(format!("{}/login", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 303);
    }
    assert_eq!(
        count(&app.database_url, "web_sessions").await,
        sessions,
        "no row per visit"
    );
    // A real sign-in from start to end still works.
    let alice = app.sign_in("alice").await;
    let home = alice.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(home.status().as_u16(), 200);
    assert_eq!(count(&app.database_url, "web_sessions").await, sessions + 1);
    app.running.stop().await;
}

/// The replay guard's rows are kept as long as a signature could still be
/// accepted, then forgotten (they were kept for ever).
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn replay_records_are_purged_past_the_replay_window(#[case] backend: Backend) {
    let (stack, _tenant) = Stack::with_users(backend, &[]).await;
    let answer = json!({"ok": true});
    stack
        .store
        .record_delivery("old", t0(), None, &answer)
        .await
        .unwrap();
    stack.advance(11 * 60);
    let now = stack.app.now();
    stack
        .store
        .record_delivery("new", now, None, &answer)
        .await
        .unwrap();
    let purged = stack
        .app
        .purge_deliveries(TimeDelta::minutes(10))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(stack.store.seen_delivery("old").await.unwrap().is_none());
    assert!(
        stack.store.seen_delivery("new").await.unwrap().is_some(),
        "still inside the window"
    );
}

/// "Sign out everywhere" ends the ID tokens issued before it too: one used
/// as a bearer token once worked until its own expiry.
#[tokio::test]
async fn sign_out_everywhere_ends_the_bearer_tokens_issued_before_it() {
    use jit_e2e::web::{CLIENT_ID, CLIENT_SECRET};
    let app = jit_e2e::web::spawn_web_app(
        &[("alice@example.com", &["Employee"])],
        std::sync::Arc::new(jit_app::SystemClock),
    )
    .await;
    let callback = format!("{}/auth/callback", app.base);
    let token = app
        .oidc
        .id_token(CLIENT_ID, CLIENT_SECRET, &callback, "alice")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let grants = |token: String| {
        let (http, url) = (http.clone(), format!("{}/api/v1/grants", app.base));
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(grants(token.clone()).await.status().as_u16(), 200);
    let ended = http
        .post(format!("{}/api/v1/sessions/revoke", app.base))
        .bearer_auth(token.clone())
        .json(&json!({"user": "alice@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ended.status().as_u16(),
        200,
        "{}",
        ended.text().await.unwrap()
    );
    let refused = grants(token).await;
    assert_eq!(refused.status().as_u16(), 401);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"]["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("issued before"),
        "{body}"
    );
    // A token issued after the end works (iat has whole seconds: wait for
    // the next one to tick over, by asking until one is accepted).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let fresh = app
            .oidc
            .id_token(CLIENT_ID, CLIENT_SECRET, &callback, "alice")
            .await
            .unwrap();
        if grants(fresh).await.status().as_u16() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no fresh token accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    app.running.stop().await;
}

/// The provider rotates its signing key: a token under the new key once
/// failed until the broker restarted (the keys were read at discovery only).
/// Now an unknown `kid` has them fetched again.
#[tokio::test]
async fn a_rotated_provider_key_needs_no_restart() {
    use jit_e2e::web::{CLIENT_ID, CLIENT_SECRET, OidcPeer};
    let port = jit_e2e::free_port();
    let (oidc, first) = OidcPeer::start_rotating(port).unwrap();
    let issuer = oidc.issuer.clone();
    let app = jit_e2e::web::spawn_web_app_at(
        Backend::Sqlite,
        oidc,
        &[("alice@example.com", &["Employee"])],
        std::sync::Arc::new(jit_app::SystemClock),
        |_| {},
    )
    .await;
    let callback = format!("{}/auth/callback", app.base);
    let http = reqwest::Client::new();
    let grants = |token: String| {
        let (http, url) = (http.clone(), format!("{}/api/v1/grants", app.base));
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let token = app
        .oidc
        .id_token(CLIENT_ID, CLIENT_SECRET, &callback, "alice")
        .await
        .unwrap();
    assert_eq!(grants(token).await, 200);
    // The same provider, started again with a new key.
    first.stop();
    let (rotated, second) = OidcPeer::start_rotating(port).unwrap();
    assert_eq!(rotated.issuer, issuer);
    let token = rotated
        .id_token(CLIENT_ID, CLIENT_SECRET, &callback, "alice")
        .await
        .unwrap();
    assert_eq!(grants(token).await, 200, "the new key was fetched");
    // A web sign-in under the new key works too.
    let alice = app.sign_in("alice").await;
    let home = alice.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(home.status().as_u16(), 200);
    second.stop();
    app.running.stop().await;
}
