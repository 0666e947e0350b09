//! The JSON API of the real server (port 0, fresh database, real SCIM peer).

use std::time::{Duration, Instant};

use jit_e2e::app::{API_KEY, spawn_app};
use jit_e2e::{Backend, Tenant};
use rstest::rstest;
use serde_json::{Value, json};

fn body(user: &str, duration: &str) -> Value {
    jit_e2e::app::grant_request(user, "CHG0012345", duration)
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_made_over_http_adds_and_removes_the_role_in_real_time(#[case] backend: Backend) {
    let tenant = Tenant::new();
    tenant.create_user("eng@example.com", &["Employee"]).await;
    let app = spawn_app(backend, Some(&tenant.base_url)).await;

    let (status, grant) = app.request_grant(&body("eng@example.com", "2s")).await;
    assert_eq!(status, 201, "{grant}");
    assert_eq!(grant["state"], "approved");
    assert_eq!(grant["requested_by"], "e2e");
    let id = grant["id"].as_str().unwrap().to_owned();
    let expires_at: chrono::DateTime<chrono::Utc> =
        grant["expires_at"].as_str().unwrap().parse().unwrap();

    tenant
        .wait_for_role(
            "eng@example.com",
            "Master Admin",
            true,
            Duration::from_secs(10),
        )
        .await;
    let removed = tenant
        .wait_for_role(
            "eng@example.com",
            "Master Admin",
            false,
            Duration::from_secs(15),
        )
        .await;
    let _ = removed;
    assert_eq!(tenant.roles_of("eng@example.com").await, ["Employee"]);

    let g = app.grant_with(&id, "role_removed_at").await;
    assert_eq!(
        (g["state"].as_str(), g["end_reason"].as_str()),
        (Some("ended"), Some("expired"))
    );
    let removed_at: chrono::DateTime<chrono::Utc> =
        g["role_removed_at"].as_str().unwrap().parse().unwrap();
    assert!(removed_at >= expires_at, "never removed before expiry");
    eprintln!(
        "expiry → role removed (broker's record): {} ms",
        (removed_at - expires_at).num_milliseconds()
    );
    app.running.stop().await;
}

#[tokio::test]
async fn refused_requests_name_field_and_rule_and_write_nothing() {
    let app = spawn_app(Backend::Sqlite, Some(&Tenant::new().base_url)).await;
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            body("eng@example.com", "5h"),
            422,
            "duration",
            "max_duration",
        ),
        (
            json!({"user": "eng@example.com", "role": "Astronaut", "ticket": "CHG0012345", "justification": "long enough reason"}),
            422,
            "role",
            "known_role",
        ),
        (
            json!({"user": "eng@example.com", "role": "Master Admin", "ticket": "CHG0012345", "expires_at": "2020-01-01T00:00:00Z", "justification": "long enough reason"}),
            422,
            "expires_at",
            "in_future",
        ),
        (
            json!({"user": "eng@example.com", "role": "Master Admin", "ticket": "12345", "justification": "long enough reason"}),
            422,
            "ticket",
            "format",
        ),
        (
            json!({"user": "eng@example.com", "role": "Master Admin", "ticket": "CHG0012345"}),
            422,
            "justification",
            "required",
        ),
        (
            json!({"user": "eng@example.com", "role": "Master Admin", "ticket": "CHG0012345", "justification": "long enough reason", "is_admin": true}),
            422,
            "is_admin",
            "unknown_field",
        ),
        (json!(["not", "an", "object"]), 422, "", "type"),
    ];
    for (request, status, field, rule) in cases {
        let (got, err) = app.post("/api/v1/grants", &request).await;
        assert_eq!(got, status, "{request} → {err}");
        let fields = err["error"]["fields"].as_array().unwrap();
        assert!(
            fields
                .iter()
                .any(|f| f["field"] == field && f["rule"] == rule),
            "{request}: expected {field}/{rule} in {err}"
        );
    }
    let (_, err) = app
        .post("/api/v1/grants", &body("eng@example.com", "5h"))
        .await;
    assert_eq!(
        err["error"]["fields"][0]["policy"],
        "roles.\"Master Admin\".max_duration"
    );

    // Malformed JSON, an oversized body, no key, a wrong key.
    let raw = |b: &'static str| {
        app.http
            .post(format!("{}/api/v1/grants", app.base))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(b)
    };
    let r = raw("{\"user\": ").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "malformed_json"
    );
    let huge = json!({"user": "eng@example.com", "justification": "x".repeat(20_000)});
    let r = app
        .http
        .post(format!("{}/api/v1/grants", app.base))
        .bearer_auth(API_KEY)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["fields"][0]["rule"],
        "max_body_bytes"
    );
    let r = app
        .http
        .post(format!("{}/api/v1/grants", app.base))
        .json(&body("eng@example.com", "1h"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = app
        .http
        .get(format!("{}/api/v1/grants", app.base))
        .bearer_auth("wrong-key-wrong-key-wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Nothing was written by any of them.
    let (_, list) = app.get("/api/v1/grants").await;
    assert_eq!(list["items"], json!([]));
    let store = jit_store::open(&app.database_url, false, 1).await.unwrap();
    assert!(store.audit_events(0, 10).await.unwrap().is_empty());
    assert_eq!(store.next_due().await.unwrap(), None, "no job was queued");
    app.running.stop().await;
}

#[tokio::test]
async fn grants_are_listed_filtered_paged_and_dropped() {
    let tenant = Tenant::new();
    let app = spawn_app(Backend::Sqlite, Some(&tenant.base_url)).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut b = body(&format!("user{}@example.com", i % 2), "1h");
        b["ticket"] = json!(format!("CHG000000{i}"));
        b["starts_at"] = json!((chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339());
        let (status, g) = app.request_grant(&b).await;
        assert_eq!(status, 201, "{g}");
        ids.push(g["id"].as_str().unwrap().to_owned());
    }
    // Pages of two, newest first, until the cursor runs out.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/grants?limit=2&cursor={c}"),
            None => "/api/v1/grants?limit=2".into(),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let (_, by_user) = app.get("/api/v1/grants?user=user0@example.com").await;
    assert_eq!(by_user["items"].as_array().unwrap().len(), 3);
    let (_, by_ticket) = app.get("/api/v1/grants?ticket=CHG0000003").await;
    assert_eq!(by_ticket["items"][0]["id"], json!(ids[3]));
    let (status, bad) = app.get("/api/v1/grants?state=sleeping&limit=0").await;
    assert_eq!(status, 422);
    let rules: Vec<&str> = bad["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["one_of", "range"]);

    // Drop: a reason is required; a grant not yet started is cancelled; twice is a conflict.
    let (status, err) = app
        .post(&format!("/api/v1/grants/{}/drop", ids[0]), &json!({}))
        .await;
    assert_eq!(
        (status, err["error"]["fields"][0]["field"].as_str()),
        (422, Some("reason"))
    );
    let (status, dropped) = app
        .post(
            &format!("/api/v1/grants/{}/drop", ids[0]),
            &json!({"reason": "change postponed"}),
        )
        .await;
    assert_eq!(
        (status, dropped["state"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, _) = app
        .post(
            &format!("/api/v1/grants/{}/drop", ids[0]),
            &json!({"reason": "again"}),
        )
        .await;
    assert_eq!(status, 409);
    let (_, cancelled) = app.get("/api/v1/grants?state=cancelled").await;
    assert_eq!(cancelled["items"].as_array().unwrap().len(), 1);

    let (status, _) = app
        .get("/api/v1/grants/0198a5f2-0000-7000-8000-000000000000")
        .await;
    assert_eq!(status, 404);
    let (status, _) = app.get("/api/v1/grants/not-a-uuid").await;
    assert_eq!(status, 422);
    app.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_sandbox_works_with_no_external_system() {
    let app = spawn_app(Backend::Sqlite, None).await;
    // The sandbox org (an in-memory Genesys Cloud): alice's grants, each a
    // role in a division, as "role @ division".
    let sandbox_roles = || async {
        let v: Value = app
            .http
            .get(format!("{}/sandbox/genesys/org", app.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let alice = v["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["userName"] == "alice@example.com")
            .unwrap()
            .clone();
        alice["grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let (role, division) =
                    (g["role"].as_str().unwrap(), g["division"].as_str().unwrap());
                if role == "Employee" {
                    role.to_owned()
                } else {
                    format!("{role} @ {division}")
                }
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(sandbox_roles().await, ["Employee"]);
    // CHG0000001 is the sandbox ServiceNow's approved change assigned to alice.
    let mut request = body("alice@example.com", "1s");
    request["ticket"] = json!("CHG0000001");
    let (status, g) = app.post("/api/v1/grants", &request).await;
    assert_eq!(status, 201, "{g}");
    assert_eq!(
        g["ticket_snapshot"]["assigned_to"]["email"],
        "alice@example.com"
    );
    // A change that is not approved is refused with its reasons.
    request["ticket"] = json!("CHG0000003");
    let (status, refused) = app.post("/api/v1/grants", &request).await;
    assert_eq!(status, 403, "{refused}");
    let deadline = Instant::now() + Duration::from_secs(10);
    // The grant covers every division (`*`), through the Authorization API.
    while !sandbox_roles()
        .await
        .contains(&"Master Admin @ All divisions".to_owned())
    {
        assert!(
            Instant::now() < deadline,
            "role never appeared in the sandbox"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while sandbox_roles()
        .await
        .contains(&"Master Admin @ All divisions".to_owned())
    {
        assert!(Instant::now() < deadline, "role never left the sandbox");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sandbox_roles().await, ["Employee"]);
    // No SMTP in the sandbox: what would be mailed lands in its mailbox,
    // and the outbox drains.
    let mail = || async {
        let v: Value = app
            .http
            .get(format!("{}/sandbox/mail", app.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    };
    while !mail().await.iter().any(|m| m["kind"] == "grant_ended") {
        assert!(Instant::now() < deadline, "no end email in the mailbox");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kept = mail().await;
    let ended = kept.iter().find(|m| m["kind"] == "grant_ended").unwrap();
    assert!(
        ended["subject"]
            .as_str()
            .unwrap()
            .contains("Master Admin ended for alice@example.com"),
        "{ended}"
    );
    assert_eq!(ended["to"], json!(["soc@sandbox.invalid"]));
    let page = app
        .http
        .get(format!("{}/sandbox/mailbox", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Sandbox mailbox") && page.contains("Master Admin ended for"));
    let drained = || async {
        app.http
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("jit_outbox_pending 0")
    };
    while !drained().await {
        assert!(Instant::now() < deadline, "the outbox never drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What a sandbox user does in Genesys (put in the stand-in's audit
    // trail) is what the grant's activity says once the role is gone.
    let mut request = body("bob@example.com", "1h");
    request["role"] = json!("Telephony Admin");
    request["ticket"] = json!("CHG0000002");
    let (status, g) = app.post("/api/v1/grants", &request).await;
    assert_eq!(status, 201, "{g}");
    let id = g["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let held = app.grant_with(&id, "role_added_at").await;
    assert!(
        !held["role_added_at"].is_null(),
        "bob's role never added: {held}"
    );
    let act = |user: &str| {
        app.http
            .post(format!("{}/sandbox/genesys/actions", app.base))
            .json(
                &json!({"user": user, "service": "Architect", "entity_type": "Flow",
                          "entity": "Main IVR", "action": "Publish"}),
            )
            .send()
    };
    assert_eq!(act("bob@example.com").await.unwrap().status(), 201);
    #[allow(clippy::disallowed_methods)]
    let acted_at = chrono::Utc::now();
    assert_eq!(act("nobody@example.com").await.unwrap().status(), 404);
    let (status, _) = app
        .post(
            &format!("/api/v1/grants/{id}/drop"),
            &json!({"reason": "done"}),
        )
        .await;
    assert_eq!(status, 200);
    let activity = loop {
        let (_, a) = app.get(&format!("/api/v1/grants/{id}/activity")).await;
        if a["passes"][0]["status"] == "done" {
            break a;
        }
        assert!(Instant::now() < deadline, "no preliminary pass: {a}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (_, held) = app.get(&format!("/api/v1/grants/{id}")).await;
    assert_eq!(
        activity["events"][0]["entity_name"], "Main IVR",
        "{activity} for {held} (acted at {acted_at})"
    );
    while !mail()
        .await
        .iter()
        .any(|m| m["kind"] == "activity_collected")
    {
        assert!(
            Instant::now() < deadline,
            "no activity email in the mailbox"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The sandbox Slack: a request that needs approval is posted there, and
    // a click as bob (an approver) is signed and posted back as Slack would.
    let mut request = body("alice@example.com", "30m");
    request["role"] = json!("Recording Admin");
    request["ticket"] = json!("CHG0000004"); // her change for Recording Admin
    let (status, g) = app.post("/api/v1/grants", &request).await;
    assert_eq!(
        (status, g["state"].as_str()),
        (201, Some("pending_approval")),
        "{g}"
    );
    let id = g["id"].as_str().unwrap().to_owned();
    let slack_page = || async {
        app.http
            .get(format!("{}/sandbox/slack", app.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    while !slack_page().await.contains(&format!("value=\"{id}\"")) {
        assert!(Instant::now() < deadline, "no request in the sandbox Slack");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let clicked = app
        .http
        .post(format!("{}/sandbox/slack/click", app.base))
        .form(&[
            ("channel", "#jit-approvals"),
            ("ts", "1800000000.000001"),
            ("action", "approve"),
            ("value", id.as_str()),
            ("who", "bob@example.com"),
        ])
        .send()
        .await
        .unwrap();
    assert!(clicked.status().is_success() || clicked.status().is_redirection());
    let approved = app.grant_with(&id, "role_added_at").await;
    assert!(
        !approved["role_added_at"].is_null(),
        "approved from the sandbox Slack: {approved}"
    );
    // Readiness shows the start-up permission probe of the sandbox's
    // OAuth client (it holds exactly what the broker needs).
    let permissions = loop {
        let (_, ready) = app.get("/readyz").await;
        let found = ready["info"]["directory_permissions"].clone();
        if found.is_array() {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the probe never finished: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let outcomes: Vec<&str> = permissions
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["outcome"].as_str().unwrap_or("failed"))
        .collect();
    assert_eq!(
        outcomes,
        [
            "allowed",
            "allowed",
            "allowed",
            "not_probed",
            "not_probed",
            "allowed"
        ],
        "{permissions}"
    );
    app.running.stop().await;
}

/// Extending over the API: by a duration or to a time, never past the role's
/// maximum nor the change's end; refused ones name field and rule and
/// change nothing.
#[tokio::test]
async fn a_grant_is_extended_within_the_role_and_the_change() {
    let tenant = Tenant::new();
    tenant.create_user("ext@example.com", &["Employee"]).await;
    let app = spawn_app(Backend::Sqlite, Some(&tenant.base_url)).await;
    let (status, g) = app.request_grant(&body("ext@example.com", "1h")).await;
    assert_eq!(status, 201, "{g}");
    let id = g["id"].as_str().unwrap();
    let end = |g: &Value| {
        chrono::DateTime::parse_from_rfc3339(g["expires_at"].as_str().unwrap()).unwrap()
    };
    let path = format!("/api/v1/grants/{id}/extend");
    let (status, longer) = app.post(&path, &json!({"by": "30m"})).await;
    assert_eq!(status, 200, "{longer}");
    assert_eq!(end(&longer) - end(&g), chrono::TimeDelta::minutes(30));
    for (body, rule) in [
        (json!({"by": "4h"}), "max_duration"),
        (
            json!({"by": "30m", "until": "2030-01-01T00:00:00Z"}),
            "one_of",
        ),
        (json!({"until": "soon"}), "format"),
        (json!({"until": g["expires_at"]}), "later"),
    ] {
        let (status, err) = app.post(&path, &body).await;
        assert_eq!(status, 422, "{body}: {err}");
        assert_eq!(err["error"]["fields"][0]["rule"], rule, "{err}");
    }
    let (_, now) = app.get(&format!("/api/v1/grants/{id}")).await;
    assert_eq!(end(&now), end(&longer), "refusals changed nothing");
    app.running.stop().await;
}

/// A target down across an expiry: the worker notices, one probe at a time
/// asks whether it is back, and then the waiting removal runs at once rather
/// than when its own back-off ends.
#[tokio::test]
async fn after_an_outage_the_waiting_removal_runs_as_soon_as_the_target_is_back() {
    let tenant = Tenant::new();
    tenant.create_user("out@example.com", &["Employee"]).await;
    let proxy = jit_e2e::proxy::ScimProxy::start(&tenant.base_url, None).await;
    let app = spawn_app(Backend::Sqlite, Some(&proxy.base_url)).await;
    let (status, grant) = app.request_grant(&body("out@example.com", "2s")).await;
    assert_eq!(status, 201, "{grant}");
    tenant
        .wait_for_role(
            "out@example.com",
            "Master Admin",
            true,
            Duration::from_secs(10),
        )
        .await;
    proxy.set_down(true);
    // Wait for the state: the removal was tried and refused a few times.
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.counts.refused_down() < 3 {
        assert!(Instant::now() < deadline, "the removal was never tried");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let refused = proxy.counts.refused_down();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let probes = proxy.counts.refused_down() - refused;
    assert!(
        probes <= 4,
        "one probe at a time while down, not a storm: {probes}"
    );
    proxy.set_down(false);
    let back = Instant::now();
    tenant
        .wait_for_role(
            "out@example.com",
            "Master Admin",
            false,
            Duration::from_secs(20),
        )
        .await;
    eprintln!("figure: target back → role removed in {:?}", back.elapsed());
    let id = grant["id"].as_str().unwrap();
    let g = app.grant_with(id, "role_removed_at").await;
    assert_eq!(g["end_reason"], "expired");
    proxy.stop().await;
}
