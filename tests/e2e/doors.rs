//! Sessions that end on the server, sign-in with claims from UserInfo, one
//! set of rules for the API and the web form, and extensions that wait for
//! the same approvals: against the real OpenID provider, the real SCIM
//! server, SQLite and PostgreSQL, and a real headless Chromium.

use std::sync::Arc;

use chrono::TimeDelta;
use fantoccini::Locator;
use jit_app::SystemClock;
use jit_e2e::Backend;
use jit_e2e::app::API_KEY;
use jit_e2e::slack::{SIGNING_SECRET, SlackPeer};
use jit_e2e::web::{
    CLIENT_ID, CLIENT_SECRET, Claims, WebApp, browser, cookie_client, csrf_of, provider_sign_in,
    spawn_web_app_on, spawn_web_app_with,
};
use rstest::rstest;
use serde_json::{Value, json};

const ADMIN: &str = "Master Admin";

fn users() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("alice@example.com", &["Employee"]),
        ("bob@example.com", &["Employee"]),
        ("carol@example.com", &["Employee"]),
    ]
}

/// A page or form answer: status, and the redirect target or the body.
async fn answer(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    (status, location.unwrap_or(res.text().await.unwrap()))
}

/// A GET with only this cookie, as a thief with a copy of it would send.
async fn with_cookie(base: &str, cookie: &str, path: &str) -> (u16, String) {
    answer(
        cookie_client()
            .get(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn post_with_cookie(
    base: &str,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    answer(
        cookie_client()
            .post(format!("{base}{path}"))
            .header("cookie", cookie)
            .form(form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn api(app: &WebApp, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}/api/v1/{path}", app.base))
        .bearer_auth(API_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().json().await.unwrap()
}

async fn grant(app: &WebApp, id: &str) -> Value {
    api(app, reqwest::Method::GET, &format!("grants/{id}"), None).await
}

/// How many audit events there are: a refusal must add none.
async fn audit_len(app: &WebApp) -> usize {
    let mut n = 0;
    let mut cursor = 0;
    loop {
        let page = api(
            app,
            reqwest::Method::GET,
            &format!("audit?limit=200&cursor={cursor}"),
            None,
        )
        .await;
        n += page["items"].as_array().unwrap().len();
        match page["next_cursor"].as_i64() {
            Some(c) => cursor = c,
            None => return n,
        }
    }
}

/// `login`'s request for `role` through the web form: the grant id.
async fn request_in_form(app: &WebApp, http: &reqwest::Client, role: &str, ticket: &str) -> String {
    let form = http
        .get(format!("{}/", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (status, to) = answer(
        http.post(format!("{}/request", app.base))
            .form(&[
                ("csrf", csrf_of(&form).as_str()),
                ("role", role),
                ("ticket", ticket),
                ("duration", "1h"),
                ("justification", "Rebuild the broken IVR routing flow"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 303, "{to}");
    to.trim_start_matches("/grants/").to_owned()
}

async fn csrf(app: &WebApp, http: &reqwest::Client) -> String {
    let page = http
        .get(format!("{}/access", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    csrf_of(&page)
}

/// `who` (signed in as `http`) ends every session of `user` from the web form.
async fn end_sessions_of(app: &WebApp, http: &reqwest::Client, user: &str) -> (u16, String) {
    let token = csrf(app, http).await;
    answer(
        http.post(format!("{}/sessions/end", app.base))
            .form(&[("csrf", token.as_str()), ("user", user)])
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// A copy of the cookie taken before sign-out opens nothing after it: no
/// page, no form post. SOC "end sessions" and the API's revoke end every
/// session of a person, on both backends.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn sign_out_ends_the_session_on_the_server(#[case] backend: Backend) {
    let app = spawn_web_app_on(backend, Claims::InIdToken, &users(), Arc::new(SystemClock)).await;
    app.servicenow
        .approve("CHG0000701", "alice@example.com", ADMIN, chrono::Utc::now());
    let (alice, copied) = app.sign_in_with_cookie("alice").await;
    let id = request_in_form(&app, &alice, ADMIN, "CHG0000701").await;
    let token = csrf(&app, &alice).await;
    assert_eq!(
        with_cookie(&app.base, &copied, "/access").await.0,
        200,
        "the copy works while the session lives"
    );

    let (status, to) = answer(
        alice
            .post(format!("{}/logout", app.base))
            .form(&[("csrf", token.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 303);
    assert!(to.contains("/session/end?"), "to the provider: {to}");
    assert!(to.contains("id_token_hint="), "{to}");

    let before = audit_len(&app).await;
    assert_eq!(
        with_cookie(&app.base, &copied, "/access").await,
        (303, "/login".to_owned()),
        "a copied cookie opens no page after sign-out"
    );
    let drop = post_with_cookie(
        &app.base,
        &copied,
        &format!("/grants/{id}/drop"),
        &[("csrf", &token), ("reason", "a thief's drop")],
    )
    .await;
    assert_eq!(drop, (303, "/login".to_owned()), "nor a form post");
    assert_eq!(grant(&app, &id).await["state"], "pending_approval");
    assert_eq!(audit_len(&app).await, before, "nothing written");

    // The SOC ends every session of a person at once (a stolen laptop).
    let (_, laptop) = app.sign_in_with_cookie("alice").await;
    let (_, phone) = app.sign_in_with_cookie("alice").await;
    let carol = app.sign_in("carol").await;
    let (status, to) = end_sessions_of(&app, &carol, "alice@example.com").await;
    assert_eq!(status, 303);
    assert!(to.starts_with("/soc?sessions_ended=2&"), "{to}");
    let soc_page = carol
        .get(format!("{}{to}", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(soc_page.contains("Ended 2 session(s) of alice@example.com"));
    for cookie in [&laptop, &phone] {
        assert_eq!(with_cookie(&app.base, cookie, "/access").await.0, 303);
    }
    assert_eq!(
        with_cookie(&app.base, "", "/access").await.0,
        303,
        "and no cookie is no session"
    );

    // A person who is neither SOC nor the user may not; an admin key may.
    let (bob, _) = app.sign_in_with_cookie("bob").await;
    let (_, again) = app.sign_in_with_cookie("alice").await;
    let (status, _) = end_sessions_of(&app, &bob, "alice@example.com").await;
    assert_eq!(status, 403);
    assert_eq!(with_cookie(&app.base, &again, "/access").await.0, 200);
    let revoked = api(
        &app,
        reqwest::Method::POST,
        "sessions/revoke",
        Some(json!({"user": "alice@example.com"})),
    )
    .await;
    assert_eq!(revoked["sessions_ended"], 1, "{revoked}");
    assert_eq!(with_cookie(&app.base, &again, "/access").await.0, 303);
    let audit = api(
        &app,
        reqwest::Method::GET,
        "audit?user=alice@example.com&limit=200",
        None,
    )
    .await;
    let ended: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "sessions_ended")
        .collect();
    assert_eq!(ended.len(), 2, "both endings audited: {audit}");
    assert_eq!(ended[0]["actor"], "carol@example.com");
    assert_eq!(ended[1]["actor"], "e2e");
    let bad = reqwest::Client::new()
        .post(format!("{}/api/v1/sessions/revoke", app.base))
        .bearer_auth(API_KEY)
        .json(&json!({"user": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    app.running.stop().await;
}

/// Two replicas on one PostgreSQL database agree: a session signed in on
/// one opens the other, and once signed out (or ended by the SOC) on one it
/// opens neither.
#[tokio::test]
async fn replicas_share_sessions_and_their_end() {
    let app = spawn_web_app_on(
        Backend::Postgres,
        Claims::InIdToken,
        &users(),
        Arc::new(SystemClock),
    )
    .await;
    let (other, other_running) = app.replica(Arc::new(SystemClock)).await;
    let (alice, copied) = app.sign_in_with_cookie("alice").await;
    assert_eq!(with_cookie(&other, &copied, "/access").await.0, 200);
    let token = csrf(&app, &alice).await;
    let (status, _) = answer(
        alice
            .post(format!("{}/logout", app.base))
            .form(&[("csrf", token.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 303);
    for base in [&app.base, &other] {
        assert_eq!(
            with_cookie(base, &copied, "/access").await,
            (303, "/login".to_owned()),
            "signed out on one replica is signed out on {base}"
        );
    }
    // Ended by the SOC through one replica: refused by the other.
    let (_, laptop) = app.sign_in_with_cookie("alice").await;
    assert_eq!(with_cookie(&other, &laptop, "/access").await.0, 200);
    let carol = app.sign_in("carol").await;
    let (status, _) = end_sessions_of(&app, &carol, "alice@example.com").await;
    assert_eq!(status, 303);
    assert_eq!(with_cookie(&other, &laptop, "/access").await.0, 303);
    // A replica restarted keeps the sessions that live and none that ended.
    let (_, kept) = app.sign_in_with_cookie("bob").await;
    other_running.stop().await;
    let (again, again_running) = app.replica(Arc::new(SystemClock)).await;
    assert_eq!(with_cookie(&again, &kept, "/access").await.0, 200);
    assert_eq!(with_cookie(&again, &laptop, "/access").await.0, 303);
    again_running.stop().await;
    app.running.stop().await;
}

/// A provider that sends `email` and `groups` only through UserInfo (OIDC
/// Core 5.4): the browser signs in and gets the roles its groups allow. An
/// ID token without the claims cannot be a bearer token: 401 naming it.
#[tokio::test]
async fn sign_in_works_with_claims_from_userinfo_only() {
    let app = spawn_web_app_on(
        Backend::Sqlite,
        Claims::FromUserInfo,
        &users(),
        Arc::new(SystemClock),
    )
    .await;
    let b = browser().await;
    b.goto(&format!("{}/", app.base)).await.unwrap();
    provider_sign_in(&b, "alice").await;
    b.wait()
        .for_element(Locator::Id("request-form"))
        .await
        .unwrap();
    let header = b
        .find(Locator::Css("header .who span"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        header, "alice@example.com",
        "the user claim came from UserInfo"
    );
    assert!(
        b.find(Locator::Css("#role option[value='Master Admin']"))
            .await
            .is_ok(),
        "her groups (from UserInfo) make her eligible"
    );
    let _ = b.close().await;

    let token = app
        .oidc
        .id_token(
            CLIENT_ID,
            CLIENT_SECRET,
            &format!("{}/auth/callback", app.base),
            "alice",
        )
        .await
        .unwrap();
    let res = reqwest::Client::new()
        .get(format!("{}/api/v1/grants", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    let why = body["error"]["fields"][0]["message"].as_str().unwrap();
    assert!(why.contains("`email` claim"), "{body}");
    assert!(why.contains("UserInfo"), "{body}");
    app.running.stop().await;
}

/// What happened, the same way for both doors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allowed,
    NotFound,
    Forbidden,
    Invalid,
}

fn outcome(status: u16, location: &str) -> Outcome {
    match status {
        200..=202 => Outcome::Allowed,
        303 if location != "/login" => Outcome::Allowed,
        404 => Outcome::NotFound,
        403 => Outcome::Forbidden,
        422 => Outcome::Invalid,
        other => panic!("unexpected answer {other} {location}"),
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    View,
    Drop,
    DropWithoutReason,
    Extend,
    Approve,
    Deny,
}

/// The same actors and actions through the API (ID token), the web form
/// (session) and Slack (a signed click; a refusal is told privately) decide
/// the same way, and a refusal writes nothing.
#[tokio::test]
async fn the_api_the_web_form_and_slack_decide_alike() {
    let slack = SlackPeer::start(&[
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "mallory@example.com",
    ])
    .await;
    let app = spawn_web_app_with(
        Backend::Sqlite,
        Claims::InIdToken,
        &users(),
        Arc::new(SystemClock),
        |c| slack.configure(c),
    )
    .await;
    app.servicenow
        .approve("CHG0000702", "alice@example.com", ADMIN, chrono::Utc::now());
    let alice = app.sign_in("alice").await;
    let id = request_in_form(&app, &alice, ADMIN, "CHG0000702").await;
    let callback = format!("{}/auth/callback", app.base);

    use Action::*;
    use Outcome::*;
    // (who, action on alice's pending Master Admin grant, outcome)
    let table: &[(&str, Action, Outcome)] = &[
        ("alice", View, Allowed),
        ("bob", View, Allowed),   // an approver of the role
        ("carol", View, Allowed), // the SOC
        ("mallory", View, NotFound),
        ("bob", Drop, Forbidden),
        ("carol", Drop, Forbidden),
        ("mallory", Drop, NotFound),
        ("alice", DropWithoutReason, Invalid),
        ("bob", Extend, Forbidden),
        ("mallory", Extend, NotFound),
        ("alice", Extend, Invalid),    // not live yet: nothing to extend
        ("alice", Approve, Forbidden), // her own request
        // A name's case is no other person: her own grant, her own request.
        ("ALICE", View, Allowed),
        ("ALICE", Approve, Forbidden),
        // Whoever may not see the grant learns nothing of it by answering:
        // not its role (403 "not an approver"), not its state (409).
        ("mallory", Approve, NotFound),
        ("mallory", Deny, NotFound),
    ];
    for &(who, action, want) in table {
        let token = app
            .oidc
            .id_token(CLIENT_ID, CLIENT_SECRET, &callback, who)
            .await
            .unwrap();
        let person = app.sign_in(who).await;
        let form_csrf = csrf(&app, &person).await;
        let before = (grant(&app, &id).await, audit_len(&app).await);
        let http = reqwest::Client::new();
        let url = |p: &str| format!("{}/api/v1/grants/{id}{p}", app.base);
        let page = |p: &str| format!("{}/grants/{id}{p}", app.base);
        let (via_api, via_form) = match action {
            View => (
                http.get(url("")).bearer_auth(&token).send().await.unwrap(),
                person.get(page("")).send().await.unwrap(),
            ),
            Drop | DropWithoutReason => {
                let reason = if matches!(action, Drop) {
                    "parity"
                } else {
                    " "
                };
                (
                    http.post(url("/drop"))
                        .bearer_auth(&token)
                        .json(&json!({"reason": reason}))
                        .send()
                        .await
                        .unwrap(),
                    person
                        .post(page("/drop"))
                        .form(&[("csrf", form_csrf.as_str()), ("reason", reason)])
                        .send()
                        .await
                        .unwrap(),
                )
            }
            Extend => (
                http.post(url("/extend"))
                    .bearer_auth(&token)
                    .json(&json!({"by": "30m"}))
                    .send()
                    .await
                    .unwrap(),
                person
                    .post(page("/extend"))
                    .form(&[("csrf", form_csrf.as_str()), ("by", "30m")])
                    .send()
                    .await
                    .unwrap(),
            ),
            Approve | Deny => {
                let (path, verdict, comment) = match action {
                    Approve => ("/approve", "approve", "ok"),
                    _ => ("/deny", "deny", "no"),
                };
                (
                    http.post(url(path))
                        .bearer_auth(&token)
                        .json(&json!({ "comment": comment }))
                        .send()
                        .await
                        .unwrap(),
                    person
                        .post(page("/review"))
                        .form(&[
                            ("csrf", form_csrf.as_str()),
                            ("verdict", verdict),
                            ("comment", comment),
                        ])
                        .send()
                        .await
                        .unwrap(),
                )
            }
        };
        let (api_status, api_to) = answer(via_api).await;
        let (form_status, form_to) = answer(via_form).await;
        let (api_said, form_said) = (outcome(api_status, &api_to), outcome(form_status, &form_to));
        assert_eq!(
            (api_said, form_said),
            (want, want),
            "{who} {action:?}: API {api_status} {api_to} / form {form_status}"
        );
        // Slack has buttons for these (its drop always gives a reason).
        let button = match action {
            Drop => Some("drop"),
            Extend => Some("extend"),
            Approve => Some("approve"),
            View | DropWithoutReason | Deny => None,
        };
        if let Some(button) = button {
            let user = slack.user(&format!("{who}@example.com").to_lowercase());
            let told_before = slack.standin.ephemeral_for(&user.id).len();
            let click = jit_slack_standin::block_actions(&user, button, &id, "C0PARITY", "1.1");
            let (status, _) = slack
                .deliver(&app.base, &click, jit_e2e::slack::now(), SIGNING_SECRET)
                .await;
            assert_eq!(status, 200);
            let refused = slack.standin.ephemeral_for(&user.id).len() > told_before;
            assert_eq!(
                refused,
                want != Allowed,
                "{who} {action:?} in Slack: {:?}",
                slack.standin.ephemeral_for(&user.id)
            );
        }
        if want != Allowed {
            assert_eq!(
                (grant(&app, &id).await, audit_len(&app).await),
                before,
                "{who} {action:?}: a refusal writes nothing"
            );
        }
    }
    app.running.stop().await;
}

/// One approver in capitals is still one approver: `BOB@example.com` once
/// completed a quorum of two after bob had approved.
#[tokio::test]
async fn a_quorum_is_not_filled_by_one_approver_under_two_spellings() {
    let app = spawn_web_app_on(
        Backend::Sqlite,
        Claims::InIdToken,
        &users(),
        Arc::new(SystemClock),
    )
    .await;
    let role = "Recording Admin";
    app.servicenow
        .approve("CHG0000705", "alice@example.com", role, chrono::Utc::now());
    let alice = app.sign_in("alice").await;
    let id = request_in_form(&app, &alice, role, "CHG0000705").await;
    let callback = format!("{}/auth/callback", app.base);
    let approve = |who: &'static str| {
        let (app, id, callback) = (&app, id.clone(), callback.clone());
        async move {
            let token = app
                .oidc
                .id_token(CLIENT_ID, CLIENT_SECRET, &callback, who)
                .await
                .unwrap();
            let res = reqwest::Client::new()
                .post(format!("{}/api/v1/grants/{id}/approve", app.base))
                .bearer_auth(token)
                .json(&json!({"comment": "ok"}))
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (status, first) = approve("bob").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["state"], "pending_approval", "one of two");
    let (status, again) = approve("BOB").await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["fields"][0]["rule"], "already_reviewed");
    assert_eq!(grant(&app, &id).await["state"], "pending_approval");
    let (status, second) = approve("carol").await;
    assert_eq!((status, second["state"].as_str()), (200, Some("approved")));
    app.running.stop().await;
}

/// For a role with approvals, an extension waits for the same approvals:
/// self-approval refused, approved → the end moves (and the role is removed
/// at the new end, not the old); denied → the end stays.
#[tokio::test]
async fn an_extension_of_an_approval_role_needs_approval() {
    let app = spawn_web_app_on(
        Backend::Sqlite,
        Claims::InIdToken,
        &users(),
        Arc::new(SystemClock),
    )
    .await;
    app.servicenow
        .approve("CHG0000703", "alice@example.com", ADMIN, chrono::Utc::now());
    let alice = app.sign_in("alice").await;
    let bob = app.sign_in("bob").await;
    let id = request_in_form(&app, &alice, ADMIN, "CHG0000703").await;
    let bob_csrf = csrf(&app, &bob).await;
    let review = |verdict: &'static str, comment: &'static str| {
        let bob = bob.clone();
        let (url, token) = (format!("{}/grants/{id}/review", app.base), bob_csrf.clone());
        async move {
            answer(
                bob.post(url)
                    .form(&[
                        ("csrf", token.as_str()),
                        ("verdict", verdict),
                        ("comment", comment),
                    ])
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    assert_eq!(review("approve", "").await.0, 303);
    // Approved; the worker, woken by the approval, may already have made it
    // active: either is the approval having taken effect.
    let state = grant(&app, &id).await["state"].clone();
    assert!(state == "approved" || state == "active", "{state}");
    let end = |g: &Value| {
        chrono::DateTime::parse_from_rfc3339(g["expires_at"].as_str().unwrap()).unwrap()
    };
    let first_end = end(&grant(&app, &id).await);

    // Alice asks for 30 minutes more: a request, the end unchanged.
    let alice_csrf = csrf(&app, &alice).await;
    let extend = || {
        let (alice, token) = (alice.clone(), alice_csrf.clone());
        let url = format!("{}/grants/{id}/extend", app.base);
        async move {
            answer(
                alice
                    .post(url)
                    .form(&[("csrf", token.as_str()), ("by", "30m")])
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    assert_eq!(extend().await.0, 303);
    assert_eq!(end(&grant(&app, &id).await), first_end);
    assert_eq!(extend().await.0, 409, "one extension request at a time");
    // Her own extension is not hers to approve (API, as a person).
    let alice_token = app
        .oidc
        .id_token(
            CLIENT_ID,
            CLIENT_SECRET,
            &format!("{}/auth/callback", app.base),
            "alice",
        )
        .await
        .unwrap();
    let own = reqwest::Client::new()
        .post(format!("{}/api/v1/grants/{id}/approve", app.base))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 403);
    // It shows under bob's Approvals, on the page and in the API.
    let approvals = bob
        .get(format!("{}/approvals", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        approvals.contains(&format!("review-{id}")) && approvals.contains("Extend Master Admin")
    );
    assert_eq!(review("approve", "one more half hour").await.0, 303);
    let extended = grant(&app, &id).await;
    assert_eq!(end(&extended) - first_end, TimeDelta::minutes(30));

    // A second request, denied: the end stays.
    assert_eq!(extend().await.0, 303);
    let (status, _) = review("deny", "").await;
    assert_eq!(status, 422, "a denial says why");
    assert_eq!(review("deny", "the change closes soon").await.0, 303);
    assert_eq!(end(&grant(&app, &id).await), end(&extended));
    let audit = api(
        &app,
        reqwest::Method::GET,
        &format!("audit?grant={id}&limit=200"),
        None,
    )
    .await;
    let kinds: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .filter(|k| k.starts_with("extension_"))
        .collect();
    assert_eq!(
        kinds,
        [
            "extension_requested",
            "extension_approved",
            "extension_requested",
            "extension_denied"
        ]
    );
    app.running.stop().await;
}
