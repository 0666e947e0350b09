//! The published OpenAPI document against the live broker: every route it
//! registers answers as documented (an undeclared method gets 405 in the
//! error shape), and schemathesis (PyPI), bounded in examples and time,
//! finds no 5xx, no answer outside the document, and no refused request
//! that wrote anything.

use std::collections::BTreeSet;
use std::time::Duration;

use jit_e2e::app::{API_KEY, spawn_app};
use jit_e2e::{Backend, Tenant, peer_program, workspace_root};
use jit_server::api::ROUTES;
use serde_json::Value;

#[tokio::test]
async fn every_registered_route_answers_and_other_methods_get_405() {
    let tenant = Tenant::new();
    let app = spawn_app(Backend::Sqlite, Some(&tenant.base_url)).await;
    let id = uuid::Uuid::new_v4().to_string();
    for (method, path) in ROUTES {
        let url = format!("{}{}", app.base, path.replace("{id}", &id));
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = app
            .http
            .request(method.clone(), &url)
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        // A route actix does not know answers 404 with no body; ours answer
        // in the API's error shape when they refuse.
        assert!(
            status != 404 || text.contains("\"error\""),
            "{method} {path}: {status} {text}"
        );
        assert_ne!(status, 405, "{method} {path}");
    }
    let r = app
        .http
        .request(
            reqwest::Method::TRACE,
            format!("{}/api/v1/grants", app.base),
        )
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST, GET");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");

    let (status, doc) = app.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(|m| (m.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let registered: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, registered);
    app.running.stop().await;
}

#[tokio::test]
async fn schemathesis_finds_nothing_wrong() {
    let tenant = Tenant::new();
    tenant.create_user("eng@example.com", &["Employee"]).await;
    // Every door open, Slack's callback too (its checks are what is tried).
    let slack = jit_e2e::slack::SlackPeer::start(&["eng@example.com"]).await;
    let app = jit_e2e::app::spawn_app_with(Backend::Sqlite, Some(&tenant.base_url), |c| {
        slack.configure(c);
        // The fuzzer asks thousands of times a minute: its key is unlimited
        // (429 is documented; the pace is tested in tests/e2e/security.rs).
        c.limits.grant_requests_per_minute_per_key = 0;
    })
    .await;
    let st = peer_program("st");
    assert!(
        st.exists(),
        "{} is missing: `scripts/test` installs it",
        st.display()
    );
    let out = tokio::process::Command::new(&st)
        .arg("--config-file")
        .arg(workspace_root().join("tests/schemathesis.toml"))
        .args(["run", &format!("{}/api/v1/openapi.json", app.base)])
        .args(["--url", &app.base])
        .args(["-H", &format!("Authorization: Bearer {API_KEY}")])
        .args([
            "--max-examples",
            "10",
            "--max-time",
            "45",
            "--request-timeout",
            "10",
        ])
        .args(["--no-color", "--seed", "20261126"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), out)
        .await
        .expect("schemathesis finished")
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing half-written: the chain verifies, every grant has its audit
    // event, and every grant event names a grant that exists.
    let store = &app.running.app.store;
    let report = jit_store::verify_audit(store.as_ref(), None)
        .await
        .unwrap()
        .unwrap();
    assert!(report.events > 0);
    let grants = store
        .grants(&jit_app::GrantFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    for g in &grants {
        assert!(
            !store.audit_of_grant(g.id).await.unwrap().is_empty(),
            "{g:?}"
        );
    }
    let ids: BTreeSet<_> = grants.iter().map(|g| g.id).collect();
    for e in store.audit_events(0, 100_000).await.unwrap() {
        if let Some(g) = e.grant {
            assert!(
                ids.contains(&g),
                "event {} names a grant that was never written",
                e.seq
            );
        }
    }
    app.running.stop().await;
}
