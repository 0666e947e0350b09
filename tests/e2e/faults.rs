//! Faults a real SCIM server will not produce on demand, injected with
//! wiremock: server errors, rate limits, a hanging target, a user deleted
//! between read and write, a lost `If-Match` race, an expiring OAuth token.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jit_domain::SweepKind;
use jit_e2e::Backend;
use jit_e2e::app::{Stack, scim_client};
use jit_scim::{ScimAuth, ScimClient, ScimConfig};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const USER: &str = "eng@example.com";

fn user(roles: &[&str], version: u32) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "u1", "userName": USER,
           "roles": roles.iter().map(|r| json!({"value": r})).collect::<Vec<_>>(),
           "meta": {"version": format!("W/\"{version}\"")}})
}

fn list(u: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 1, "Resources": [u]})
}

/// A target whose lookups work and whose user gains the role once a PATCH
/// succeeds (the broker reads users by id once it knows the id, so that read
/// must tell the truth before and after).
async fn target() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(query_param("filter", format!("userName eq \"{USER}\"")))
        .respond_with(ResponseTemplate::new(200).set_body_json(list(user(&["Employee"], 1))))
        .mount(&server)
        .await;
    server
}

/// The user as the last successful PATCH left it.
struct ById(Arc<AtomicBool>);

impl Respond for ById {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let body = if self.0.load(Ordering::SeqCst) {
            user(&["Employee", "Master Admin"], 2)
        } else {
            user(&["Employee"], 1)
        };
        ResponseTemplate::new(200).set_body_json(body)
    }
}

/// A successful PATCH: 204, and the role is there from now on.
struct Patched(Arc<AtomicBool>);

impl Respond for Patched {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.0.store(true, Ordering::SeqCst);
        ResponseTemplate::new(204)
    }
}

async fn patch_answers(server: &MockServer, first: ResponseTemplate, times: u64) {
    let added = Arc::new(AtomicBool::new(false));
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(ById(added.clone()))
        .mount(server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(first)
        .up_to_n_times(times)
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(Patched(added))
        .with_priority(2)
        .mount(server)
        .await;
}

async fn patches(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method == wiremock::http::Method::PATCH)
        .count()
}

async fn stack_on(server: &MockServer, timeout: Duration) -> Stack {
    let client = scim_client(&format!("{}/scim/v2", server.uri()), timeout);
    Stack::new(Backend::Sqlite, Arc::new(client)).await
}

fn grant_body() -> Value {
    jit_e2e::app::grant_request(USER, "CHG0012345", "1h")
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_until_the_target_recovers() {
    let server = target().await;
    patch_answers(&server, ResponseTemplate::new(500), 2).await;
    let stack = stack_on(&server, Duration::from_secs(5)).await;
    let grant = stack.request(grant_body()).await;

    assert_eq!(stack.run_due().await, 1);
    assert_eq!(patches(&server).await, 1);
    assert_eq!(stack.run_due().await, 0, "not retried before its backoff");
    stack.advance(1); // first retry: base 1 s, jittered into [0.5 s, 1 s]
    assert_eq!(stack.run_due().await, 1);
    assert_eq!(patches(&server).await, 2);
    stack.advance(2);
    assert_eq!(stack.run_due().await, 1);
    assert_eq!(patches(&server).await, 3, "the third PATCH succeeded");
    let g = stack.app.grant(grant.id).await.unwrap();
    assert!(g.role_added_at.is_some() && g.last_error.is_none());
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let server = target().await;
    let limited = ResponseTemplate::new(429)
        .insert_header("Retry-After", "7")
        .set_body_string("Rate limit exceeded the maximum. Retry the request in [7] seconds");
    patch_answers(&server, limited, 1).await;
    let stack = stack_on(&server, Duration::from_secs(5)).await;
    stack.request(grant_body()).await;

    assert_eq!(stack.run_due().await, 1);
    stack.advance(6);
    assert_eq!(stack.run_due().await, 0, "the target asked for 7 s");
    assert_eq!(patches(&server).await, 1);
    stack.advance(1);
    assert_eq!(stack.run_due().await, 1);
    assert_eq!(patches(&server).await, 2);
}

#[tokio::test]
async fn a_hanging_target_times_out_and_is_retried() {
    let server = target().await;
    patch_answers(
        &server,
        ResponseTemplate::new(204).set_delay(Duration::from_secs(30)),
        1,
    )
    .await;
    let stack = stack_on(&server, Duration::from_millis(300)).await;
    let grant = stack.request(grant_body()).await;

    let started = std::time::Instant::now();
    assert_eq!(stack.run_due().await, 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the request timeout bounded the attempt"
    );
    assert!(
        stack
            .app
            .grant(grant.id)
            .await
            .unwrap()
            .role_added_at
            .is_none()
    );
    stack.advance(1);
    assert_eq!(stack.run_due().await, 1);
    assert!(
        stack
            .app
            .grant(grant.id)
            .await
            .unwrap()
            .role_added_at
            .is_some()
    );
}

#[tokio::test]
async fn a_user_deleted_between_read_and_write_fails_permanently_and_is_recorded() {
    let server = target().await;
    let gone = ResponseTemplate::new(404)
        .set_body_json(json!({"status": "404", "detail": "User 'u1' not found"}));
    patch_answers(&server, gone, 1).await;
    let stack = stack_on(&server, Duration::from_secs(5)).await;
    let grant = stack.request(grant_body()).await;

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
    assert!(
        stack
            .audit_kinds()
            .await
            .contains(&"converge_failed".to_owned())
    );
    stack.advance(600);
    assert_eq!(stack.run_due().await, 0, "not retried");
    assert_eq!(patches(&server).await, 1);
}

#[tokio::test]
async fn a_lost_if_match_race_is_read_again_and_written_once() {
    let server = target().await;
    let stale = ResponseTemplate::new(412)
        .set_body_json(json!({"status": "412", "detail": "Resource has changed"}));
    patch_answers(&server, stale, 1).await;
    let stack = stack_on(&server, Duration::from_secs(5)).await;
    let grant = stack.request(grant_body()).await;

    assert_eq!(stack.run_due().await, 1);
    assert_eq!(
        patches(&server).await,
        2,
        "re-read and wrote again within the same attempt"
    );
    let requests = server.received_requests().await.unwrap_or_default();
    let if_match: Vec<_> = requests
        .iter()
        .filter_map(|r| r.headers.get("if-match"))
        .collect();
    assert_eq!(if_match.len(), 2, "every PATCH carries If-Match");
    assert!(
        stack
            .app
            .grant(grant.id)
            .await
            .unwrap()
            .role_added_at
            .is_some()
    );
}

#[tokio::test]
async fn the_oauth_token_is_cached_and_refreshed_once_when_refused() {
    let server = MockServer::start().await;
    // client:secret in HTTP Basic, as Genesys Cloud's token endpoint wants.
    let tokens = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = tokens.clone();
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(header("authorization", "Basic Y2xpZW50OnMzY3JldA=="))
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(move |_: &Request| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            ResponseTemplate::new(200).set_body_json(json!({"access_token": format!("tok{n}"), "token_type": "bearer", "expires_in": 86400}))
        })
        .mount(&server)
        .await;
    // The target stops taking tok1 after two calls (revoked early).
    Mock::given(method("GET"))
        .and(path("/api/v2/scim/v2/users/u1"))
        .and(header("authorization", "Bearer tok1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(user(&["Employee"], 1)))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/scim/v2/users/u1"))
        .and(header("authorization", "Bearer tok2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(user(&["Employee"], 1)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/scim/v2/users/u1"))
        .respond_with(ResponseTemplate::new(401))
        .with_priority(10)
        .mount(&server)
        .await;

    let client = ScimClient::new(ScimConfig {
        base_url: url::Url::parse(&format!("{}/api/v2/scim/v2", server.uri())).unwrap(),
        users_path: "users".into(),
        auth: ScimAuth::ClientCredentials {
            token_url: url::Url::parse(&format!("{}/oauth/token", server.uri())).unwrap(),
            client_id: "client".into(),
            client_secret: SecretString::from("s3cret"),
        },
        timeout: Duration::from_secs(5),
        platform_api: None,
    })
    .unwrap();
    for _ in 0..2 {
        client.get_user("u1").await.unwrap();
    }
    assert_eq!(
        tokens.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "cached"
    );
    client.get_user("u1").await.unwrap();
    assert_eq!(
        tokens.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "refreshed once after the 401"
    );
    let debug = format!("{:?}", client.get_user("nobody").await.unwrap_err());
    assert!(
        !debug.contains("s3cret") && !debug.contains("tok2"),
        "no secret in errors: {debug}"
    );
}

#[tokio::test]
async fn a_removal_failing_past_the_slo_is_raised_once_as_overdue() {
    let server = MockServer::start().await;
    let holding = list(user(&["Employee", "Master Admin"], 1));
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(holding))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let smtp = jit_e2e::SmtpPeer::start();
    let stack = stack_on(&server, Duration::from_secs(5)).await;
    let mailer = stack.mailer(
        &smtp,
        jit_notify::Recipients {
            default: vec!["soc@bank.example".into()],
            ..Default::default()
        },
    );
    let mut body = grant_body();
    body["duration"] = json!("1m");
    stack.request(body).await;
    stack.run_due().await; // activation: the role is there already
    stack.advance(60);
    stack.run_due().await; // expiry: the removal fails (503)
    let overdue = |kinds: Vec<String>| kinds.iter().filter(|k| *k == "revocation_overdue").count();
    stack.advance(30);
    stack.run_due().await;
    assert_eq!(
        overdue(stack.audit_kinds().await),
        0,
        "30 s: within the 60 s SLO"
    );
    for _ in 0..3 {
        stack.advance(40);
        stack.run_due().await;
    }
    assert_eq!(
        overdue(stack.audit_kinds().await),
        1,
        "raised once, not per retry"
    );
    mailer.run_due().await.unwrap();
    let mail = smtp.messages();
    let alert = mail
        .iter()
        .find(|m| m.subject.contains("OVERDUE"))
        .expect("an overdue alert");
    assert_eq!(
        alert.subject,
        "[jit-broker][P1] OVERDUE: eng@example.com still holds Master Admin"
    );
    assert!(alert.text.contains("SLO 60 s"), "{}", alert.text);
    assert!(alert.text.contains("503"), "{}", alert.text);
}

#[tokio::test]
async fn a_rate_limited_directory_page_is_retried_after_retry_after() {
    let server = MockServer::start().await;
    let page = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 1,
                      "Resources": [user(&["Employee"], 1)]});
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(query_param("startIndex", "1"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_string(
                    "Rate limit exceeded the maximum. Retry the request in [1] seconds",
                ),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(query_param("startIndex", "1"))
        .and(query_param("count", "25"))
        .and(query_param(
            "attributes",
            "userName,roles,active,meta.version",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(page))
        .with_priority(2)
        .mount(&server)
        .await;
    let stack = stack_on(&server, Duration::from_secs(5)).await;
    let started = std::time::Instant::now();
    let run = stack
        .app
        .reconcile(
            SweepKind::Deep,
            "test",
            false,
            "sweeper",
            &jit_app::ReconcileConfig::default(),
        )
        .await
        .unwrap();
    assert_eq!((run.status.as_str(), run.users_scanned), ("completed", 1));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited as asked"
    );
    let lists = server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method == wiremock::http::Method::GET)
        .count();
    assert_eq!(lists, 2, "one refused page, one retry");
}

/// Genesys Cloud's Platform API has no open-source implementation to run
/// here, so its two listing endpoints are served by wiremock, shaped as the
/// published API answers them.
#[tokio::test]
async fn oauth_clients_holding_privileged_roles_are_reported_not_stripped() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/scim/v2/users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 0, "Resources": []})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/authorization/roles"))
        .and(query_param("pageNumber", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "entities": [{"id": "r-admin", "name": "Master Admin"}, {"id": "r-emp", "name": "Employee"}],
            "pageSize": 100, "pageNumber": 1, "pageCount": 1})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/oauth/clients"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"entities": [
            {"id": "c-wfm", "name": "WFM sync", "roleIds": ["r-emp"]},
            {"id": "c-crm", "name": "Legacy CRM", "roleIds": ["r-admin", "r-emp"]},
            {"id": "c-div", "name": "Divisioned bot", "roleDivisions": [{"roleId": "r-admin", "divisionId": "d1"}]}
        ]})))
        .mount(&server)
        .await;
    let client = ScimClient::new(ScimConfig {
        base_url: url::Url::parse(&format!("{}/api/v2/scim/v2", server.uri())).unwrap(),
        users_path: "users".into(),
        auth: ScimAuth::Bearer(SecretString::from("t")),
        timeout: Duration::from_secs(5),
        platform_api: Some(url::Url::parse(&format!("{}/", server.uri())).unwrap()),
    })
    .unwrap();
    let stack = Stack::new(Backend::Sqlite, Arc::new(client)).await;
    let config = jit_app::ReconcileConfig {
        oauth_clients: true,
        ..Default::default()
    };
    let run = stack
        .app
        .reconcile(SweepKind::Deep, "test", false, "sweeper", &config)
        .await
        .unwrap();
    assert_eq!(
        (run.status.as_str(), run.findings, run.actions),
        ("completed", 2, 0),
        "{run:?}"
    );
    let (_, findings) = stack.app.reconcile_run(&run.id).await.unwrap();
    let got: Vec<(&str, &str, &str)> = findings
        .iter()
        .map(|f| (f.user.as_str(), f.kind.as_str(), f.action.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "oauth-client Legacy CRM (c-crm)",
                "oauth_client_privileged",
                "reported"
            ),
            (
                "oauth-client Divisioned bot (c-div)",
                "oauth_client_privileged",
                "reported"
            ),
        ]
    );
    let patches = server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method != wiremock::http::Method::GET)
        .count();
    assert_eq!(patches, 0, "report only");
}
