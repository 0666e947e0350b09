//! The real binary, killed with SIGKILL after a grant activated, restarted,
//! still removes the role at expiry: nothing lives only in memory.

use std::process::Command;
use std::time::{Duration, Instant};

use jit_app::Clock;
use jit_e2e::app::{API_KEY, ServiceNow, test_policy_path};
use jit_e2e::fleet::{Fleet, FleetTargets};
use jit_e2e::{SCIM_TOKEN, Tenant, free_port};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_after_activation_still_ends_in_removal_at_expiry() {
    let tenant = Tenant::new();
    tenant.create_user("eng@example.com", &["Employee"]).await;
    let servicenow = ServiceNow::start().await;
    servicenow.approve(
        "CHG0012345",
        "eng@example.com",
        "Master Admin",
        jit_app::SystemClock.now(),
    );
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("jit.db").display());
    let mut broker = Fleet::new(
        env!("CARGO_BIN_EXE_jit-broker-under-test").as_ref(),
        1,
        &FleetTargets {
            database_url: &database_url,
            scim_base_url: &tenant.base_url,
            servicenow_url: &servicenow.url,
            requests_per_minute: None,
            extra: "",
        },
    );
    let base = broker.start(0).await.base.clone();

    let http = reqwest::Client::new();
    let grant: Value = http
        .post(format!("{base}/api/v1/grants"))
        .bearer_auth(API_KEY)
        .json(
            &json!({"user": "eng@example.com", "role": "Master Admin", "ticket": "CHG0012345",
                      "duration": "4s", "justification": "crash test: survive a SIGKILL"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = grant["id"].as_str().expect("grant id").to_owned();
    tenant
        .wait_for_role(
            "eng@example.com",
            "Master Admin",
            true,
            Duration::from_secs(10),
        )
        .await;

    broker.kill(0); // SIGKILL: no shutdown code runs
    let base = broker.start(0).await.base.clone();

    tenant
        .wait_for_role(
            "eng@example.com",
            "Master Admin",
            false,
            Duration::from_secs(20),
        )
        .await;
    // The verified removal is recorded just after the read-back that proves it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let g: Value = loop {
        let g: Value = http
            .get(format!("{base}/api/v1/grants/{id}"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if g["role_removed_at"].is_string() || Instant::now() > deadline {
            break g;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (g["state"].as_str(), g["end_reason"].as_str()),
        (Some("ended"), Some("expired")),
        "{g}"
    );
    let time = |k: &str| {
        g[k].as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    assert!(time("role_removed_at") >= time("expires_at"), "{g}");
    assert_eq!(tenant.roles_of("eng@example.com").await, ["Employee"]);

    broker.kill(0);
    let logged = broker.log(0);
    assert!(
        !logged.contains(SCIM_TOKEN) && !logged.contains(API_KEY),
        "no secret reaches the log"
    );
}

/// SQLite has one writer: a second `serve` on the same file is refused
/// before it writes anything, naming the process that serves it.
#[tokio::test]
async fn a_second_serve_on_one_sqlite_file_is_refused_naming_the_first() {
    let tenant = Tenant::new();
    let app = jit_e2e::app::spawn_app(jit_e2e::Backend::Sqlite, Some(&tenant.base_url)).await;
    let out = Command::new(env!("CARGO_BIN_EXE_jit-broker-under-test"))
        .current_dir(jit_e2e::workspace_root())
        .env("JIT_DATABASE__URL", &app.database_url)
        .env("JIT_POLICY", test_policy_path())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "another jit-broker (pid {}) is serving",
            std::process::id()
        )),
        "{err}"
    );
    assert!(err.contains("PostgreSQL"), "{err}");
    // Once the first stops, the file is free again.
    app.running.stop().await;
    let lock = jit_store::lock_for_serving(&app.database_url).unwrap();
    assert!(lock.is_some());
}

/// Two replicas on one PostgreSQL never spend two budgets: each counts the
/// live replicas through the database and paces at its share, and the one
/// left takes the whole pace back when the other stops.
#[tokio::test]
async fn replicas_on_one_postgresql_split_the_directory_budget() {
    use jit_e2e::app::spawn_app_with;
    let tenant = Tenant::new();
    let limit = |c: &mut jit_server::config::Config| c.scim.requests_per_minute = Some(600);
    let first = spawn_app_with(jit_e2e::Backend::Postgres, Some(&tenant.base_url), limit).await;
    // 600 a minute, less 5 % headroom: 570 alone.
    wait_for_pace(&[&first], 570).await;
    let url = first.database_url.clone();
    let second = spawn_app_with(jit_e2e::Backend::Postgres, Some(&tenant.base_url), |c| {
        limit(c);
        c.database.url = secrecy::SecretString::from(url);
    })
    .await;
    wait_for_pace(&[&first, &second], 285).await;
    second.running.stop().await;
    wait_for_pace(&[&first], 570).await;
    first.running.stop().await;
}

/// Waits until each broker paces its directory budget at `want` a minute.
async fn wait_for_pace(apps: &[&jit_e2e::app::TestApp], want: u32) {
    let pace = |app: &jit_e2e::app::TestApp| {
        app.running
            .shared_budget
            .as_ref()
            .expect("a budget shared among live replicas")
            .pace_per_minute()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while apps.iter().any(|a| pace(a) != Some(want)) {
        assert!(Instant::now() < deadline, "never {want}/min each");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
