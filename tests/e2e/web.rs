//! The web form against a real OpenID provider (oidc-provider) and the real
//! SCIM server: the whole story in a real headless Chromium, and every
//! refusal over plain HTTP, each leaving nothing written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use fantoccini::Locator;
use jit_app::{ManualClock, SystemClock};
use jit_e2e::app::API_KEY;
use jit_e2e::web::{
    CLIENT_ID, CLIENT_SECRET, OTHER_CLIENT_ID, OTHER_CLIENT_SECRET, OTHER_REDIRECT, WebApp,
    browser, cookie_client, csrf_of, provider_sign_in, screenshot_dir, spawn_web_app,
};
use serde_json::{Value, json};

const ADMIN: &str = "Master Admin";

fn users() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("alice@example.com", &["Employee"]),
        ("bob@example.com", &["Employee"]),
        ("carol@example.com", &["Employee"]),
    ]
}

pub(crate) async fn page(http: &reqwest::Client, url: &str) -> (u16, String) {
    let res = http.get(url).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn post_form(http: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> (u16, String) {
    let res = http.post(url).form(form).send().await.unwrap();
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    (status, location.unwrap_or(res.text().await.unwrap()))
}

/// A GET on the broker's API with the admin key.
pub(crate) async fn api_get(app: &WebApp, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/api/v1/{path}", app.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn grants_of(app: &WebApp, user: &str) -> Vec<Value> {
    api_get(app, &format!("grants?user={user}")).await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}
/// Waits (bounded) until `check` holds: real time must pass for the worker.
pub(crate) async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Alice asks for Master Admin through the form, citing a change the form
/// offers; the grant is recorded pending; the request's JSON is the API's.
async fn alice_requests(app: &WebApp, alice: &reqwest::Client, role: &str, ticket: &str) -> String {
    let (status, form) = page(alice, &format!("{}/", app.base)).await;
    assert_eq!(status, 200);
    assert!(
        form.contains(&format!("<option value=\"{ticket}\"")),
        "pick-list offers {ticket}"
    );
    let (status, to) = post_form(
        alice,
        &format!("{}/request", app.base),
        &[
            ("csrf", &csrf_of(&form)),
            ("role", role),
            ("ticket", ticket),
            ("duration", "1h"),
            ("justification", "Rebuild the broken IVR routing flow"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{to}");
    to.trim_start_matches("/grants/").to_owned()
}

#[tokio::test]
async fn refusals_in_the_web_form_and_the_api_write_nothing() {
    let app = spawn_web_app(&users(), Arc::new(SystemClock)).await;
    for (ticket, user) in [
        ("CHG0000501", "alice@example.com"),
        ("CHG0000502", "carol@example.com"),
    ] {
        // A change for both roles the story asks for under it.
        app.servicenow.approve(
            ticket,
            user,
            "Master Admin, Recording Admin",
            chrono::Utc::now(),
        );
    }
    let alice = app.sign_in("alice").await;

    // Not eligible: alice may not hold Telephony Admin. The form says why,
    // next to the field, and nothing is recorded.
    let (_, form) = page(&alice, &format!("{}/", app.base)).await;
    assert!(
        !form.contains("value=\"Telephony Admin\""),
        "only eligible roles are offered"
    );
    let (status, body) = post_form(
        &alice,
        &format!("{}/request", app.base),
        &[
            ("csrf", &csrf_of(&form)),
            ("role", "Telephony Admin"),
            ("ticket", "CHG0000501"),
            ("justification", "Rebuild the broken IVR routing flow"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        body.contains("field-error") && body.contains("eligible"),
        "{body}"
    );
    assert!(grants_of(&app, "alice@example.com").await.is_empty());

    // A POST with no CSRF token, or a wrong one: refused, nothing written.
    for csrf in ["", "forged-token"] {
        let (status, _) = post_form(
            &alice,
            &format!("{}/request", app.base),
            &[
                ("csrf", csrf),
                ("role", ADMIN),
                ("ticket", "CHG0000501"),
                ("justification", "Rebuild the broken IVR routing flow"),
            ],
        )
        .await;
        assert_eq!(status, 400, "csrf {csrf:?}");
    }
    assert!(grants_of(&app, "alice@example.com").await.is_empty());

    // A cookie that was tampered with is no session; the genuine one is.
    let (_, cookie) = app.sign_in_with_cookie("alice").await;
    let mut tampered = cookie.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for (presented, want) in [(&cookie, 200), (&tampered, 303)] {
        let res = cookie_client()
            .get(format!("{}/access", app.base))
            .header("cookie", presented.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), want, "{presented}");
    }

    // A callback with the wrong state, and a replayed code.
    let (http, back) = app.start_login("alice").await;
    let mut wrong_state = url::Url::parse(&back).unwrap();
    let pairs: Vec<(String, String)> = wrong_state
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                "not-the-state".to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    wrong_state.query_pairs_mut().clear().extend_pairs(pairs);
    let res = http.get(wrong_state.as_str()).send().await.unwrap();
    assert_eq!(res.status(), 400, "wrong state");
    let res = http.get(&back).send().await.unwrap();
    assert_eq!(
        res.status(),
        400,
        "the login was used up by the wrong-state attempt"
    );
    // A fresh login completes once; its callback replayed is refused.
    let (http, back) = app.start_login("alice").await;
    assert_eq!(http.get(&back).send().await.unwrap().status(), 303);
    let replay = cookie_client();
    assert_eq!(
        replay.get(&back).send().await.unwrap().status(),
        400,
        "replayed code"
    );

    // Self-approval: carol is both eligible and an approver of Master Admin.
    let carol = app.sign_in("carol").await;
    let carols = alice_requests(&app, &carol, ADMIN, "CHG0000502").await;
    let (_, approvals) = page(&carol, &format!("{}/approvals", app.base)).await;
    assert!(
        !approvals.contains(&carols),
        "her own request is not offered to her"
    );
    let (status, _) = post_form(
        &carol,
        &format!("{}/grants/{carols}/review", app.base),
        &[
            ("csrf", &csrf_of(&approvals)),
            ("verdict", "approve"),
            ("comment", ""),
        ],
    )
    .await;
    assert_eq!(status, 403, "self-approval");
    let grant = &grants_of(&app, "carol@example.com").await[0];
    assert_eq!(grant["state"], "pending_approval");

    // The same approver twice (Recording Admin needs two), through the API
    // with bearer ID tokens from the same provider.
    let bob_token = app
        .oidc
        .id_token(
            CLIENT_ID,
            CLIENT_SECRET,
            &format!("{}/auth/callback", app.base),
            "bob",
        )
        .await
        .unwrap();
    let recording = alice_requests(&app, &alice, "Recording Admin", "CHG0000501").await;
    let api = reqwest::Client::new();
    let approve = |token: String| {
        let api = api.clone();
        let url = format!("{}/api/v1/grants/{recording}/approve", app.base);
        async move {
            let res = api
                .post(url)
                .bearer_auth(token)
                .json(&json!({"comment": "ok"}))
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (status, first) = approve(bob_token.clone()).await;
    assert_eq!(
        (status, first["state"].as_str()),
        (200, Some("pending_approval")),
        "{first}"
    );
    let (status, again) = approve(bob_token.clone()).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["fields"][0]["rule"], "already_reviewed");

    // A person asks, sees and drops only for themselves.
    let (status, err) = {
        let res = api
            .post(format!("{}/api/v1/grants", app.base))
            .bearer_auth(&bob_token)
            .json(
                &json!({"user": "alice@example.com", "role": ADMIN, "ticket": "CHG0000501",
                          "justification": "Bob asks for alice, which he may not"}),
            )
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["fields"][0]["rule"], "self");
    // Bob approves Recording Admin: he sees alice's grant (as on the web
    // form) but may not drop it.
    let res = api
        .get(format!("{}/api/v1/grants/{recording}", app.base))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "an approver of the role sees the grant");
    let res = api
        .post(format!("{}/api/v1/grants/{recording}/drop", app.base))
        .bearer_auth(&bob_token)
        .json(&json!({"reason": "not mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "but only its user drops it");
    let listed: Value = api
        .get(format!("{}/api/v1/grants", app.base))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"], json!([]), "bob has no grants of his own");

    // An ID token for another application is no key to this API.
    let other = app
        .oidc
        .id_token(OTHER_CLIENT_ID, OTHER_CLIENT_SECRET, OTHER_REDIRECT, "bob")
        .await
        .unwrap();
    let (status, _) = approve(other).await;
    assert_eq!(status, 401, "audience is another client");
    // An API key is not a person: it cannot approve.
    let res = api
        .post(format!("{}/api/v1/grants/{recording}/approve", app.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // The SOC view is for the SOC group; a grant's page for its user, its
    // approvers and the SOC.
    assert_eq!(page(&carol, &format!("{}/soc", app.base)).await.0, 200);
    assert_eq!(page(&alice, &format!("{}/soc", app.base)).await.0, 403);
    let mallory = app.sign_in("mallory").await;
    let (_, form) = page(&mallory, &format!("{}/", app.base)).await;
    assert!(
        form.contains("lets you request no privileged role"),
        "{form}"
    );
    assert_eq!(
        page(&mallory, &format!("{}/grants/{recording}", app.base))
            .await
            .0,
        404,
        "not hers to see: not found, as the API answers"
    );
    assert_eq!(
        page(&alice, &format!("{}/grants/{recording}", app.base))
            .await
            .0,
        200
    );

    // Signing out ends the session, here and at the provider: the same
    // cookie jar is sent to sign in.
    let (_, access) = page(&mallory, &format!("{}/access", app.base)).await;
    let (status, to) = post_form(
        &mallory,
        &format!("{}/logout", app.base),
        &[("csrf", &csrf_of(&access))],
    )
    .await;
    assert_eq!(status, 303);
    assert!(
        to.starts_with(&format!("{}/session/end?", app.oidc.issuer)),
        "{to}"
    );
    let res = mallory
        .get(format!("{}/access", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["location"], "/login");

    // Bob's approvals list through the API shows what waits for him.
    let mine: Value = api
        .get(format!("{}/api/v1/approvals", app.base))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&carols.as_str()) && !ids.contains(&recording.as_str()),
        "{ids:?}"
    );
    app.running.stop().await;
}

/// An idle session ends: the injected clock moves past the idle timeout;
/// a busy one ends at the absolute timeout.
#[tokio::test]
async fn an_expired_session_is_sent_back_to_sign_in() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = spawn_web_app(&users(), clock.clone()).await;
    let alice = app.sign_in("alice").await;
    assert_eq!(page(&alice, &format!("{}/access", app.base)).await.0, 200);
    clock.advance(TimeDelta::minutes(31));
    let res = alice
        .get(format!("{}/access", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/login");

    // However busy, a session ends 10 h after sign-in (the absolute timeout).
    let (_, cookie) = app.sign_in_with_cookie("alice").await;
    let status = |cookie: String| {
        let url = format!("{}/access", app.base);
        async move {
            cookie_client()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for _ in 0..29 {
        clock.advance(TimeDelta::minutes(20));
        assert_eq!(status(cookie.clone()).await, 200, "in use: not idle");
    }
    clock.advance(TimeDelta::minutes(20));
    assert_eq!(status(cookie).await, 303, "10 h after sign-in");
    app.running.stop().await;
}

/// The story in a real browser: alice requests Master Admin with a ticket
/// from the pick-list, bob approves, the role appears on the real SCIM
/// server; alice asks to extend it and the end moves only when bob approves
/// that too; she drops it and the role is gone; she signs out, at the
/// provider too, and lands on the signed-out page.
#[tokio::test]
async fn the_whole_story_in_a_real_browser() {
    let app = spawn_web_app(&users(), Arc::new(SystemClock)).await;
    app.servicenow
        .approve("CHG0000600", "alice@example.com", ADMIN, chrono::Utc::now());
    let shots = screenshot_dir();
    let shot = |b: &fantoccini::Client, name: &'static str| {
        let b = b.clone();
        let path = shots.join(format!("{name}.png"));
        async move {
            let png = b.screenshot().await.unwrap();
            std::fs::write(&path, png).unwrap();
        }
    };
    let login_started = Instant::now();

    // Alice signs in through the provider's own login and consent pages.
    let a = browser().await;
    a.goto(&format!("{}/", app.base)).await.unwrap();
    a.wait()
        .for_element(Locator::Css("input[name=login]"))
        .await
        .unwrap();
    shot(&a, "01-provider-login").await;
    provider_sign_in(&a, "alice").await;
    a.wait()
        .for_element(Locator::Id("request-form"))
        .await
        .unwrap();
    shot(&a, "02-request-form").await;

    // Request Master Admin with the change the pick-list offers.
    a.find(Locator::Css("#role option[value='Master Admin']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    a.find(Locator::Css("#ticket option[value='CHG0000600']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let duration = a.find(Locator::Id("duration")).await.unwrap();
    assert_eq!(
        duration.prop("value").await.unwrap().as_deref(),
        Some("1h"),
        "the role's default is filled in"
    );
    duration.clear().await.unwrap();
    duration.send_keys("1h").await.unwrap();
    a.find(Locator::Id("justification"))
        .await
        .unwrap()
        .send_keys("Rotate the SIP trunk certificate")
        .await
        .unwrap();
    a.find(Locator::Css("#request-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    a.wait()
        .for_element(Locator::Id("grant-state"))
        .await
        .unwrap();
    let state = a
        .find(Locator::Id("grant-state"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(state, "pending_approval");
    shot(&a, "03-grant-pending").await;
    let grant_url = a.current_url().await.unwrap();
    let grant_id = grant_url.path().trim_start_matches("/grants/").to_owned();

    // Bob, in his own browser, approves it.
    let b = browser().await;
    b.goto(&format!("{}/approvals", app.base)).await.unwrap();
    provider_sign_in(&b, "bob").await;
    b.wait().for_element(Locator::Id("request-form")).await.ok();
    b.goto(&format!("{}/approvals", app.base)).await.unwrap();
    let card = format!("#review-{grant_id}");
    b.wait().for_element(Locator::Css(&card)).await.unwrap();
    shot(&b, "04-approvals").await;
    b.find(Locator::Css(&format!("{card} textarea")))
        .await
        .unwrap()
        .send_keys("Change CHG0000600 checked")
        .await
        .unwrap();
    b.find(Locator::Css(&format!("{card} button[value=approve]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait().for_element(Locator::Css("h1")).await.unwrap();

    // The role is really there, on the SCIM server.
    wait_until("Master Admin on the SCIM server", || async {
        app.tenant
            .roles_of("alice@example.com")
            .await
            .contains(&ADMIN.to_owned())
    })
    .await;
    let login_to_role = login_started.elapsed();
    println!(
        "figure: browser login → role present in the directory: {login_to_role:?} (includes bob's login and approval)"
    );

    // Alice sees it active, with the countdown and when the role was added.
    a.goto(&format!("{}/access", app.base)).await.unwrap();
    a.wait()
        .for_element(Locator::Css(".countdown"))
        .await
        .unwrap();
    shot(&a, "05-my-access-active").await;
    let before = grant(&app, &grant_id).await;
    a.find(Locator::Css(&format!(
        "#grant-{grant_id} form[action$='/extend'] button"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    a.wait()
        .for_element(Locator::Id("grant-state"))
        .await
        .unwrap();
    // Master Admin needs an approval: the extension waits for one too.
    a.wait()
        .for_element(Locator::Id("extension-waiting"))
        .await
        .unwrap();
    shot(&a, "06-extension-waiting").await;
    let end = |g: &Value| {
        chrono::DateTime::parse_from_rfc3339(g["expires_at"].as_str().unwrap()).unwrap()
    };
    assert_eq!(
        end(&grant(&app, &grant_id).await),
        end(&before),
        "the end stays until the extension is approved"
    );
    b.goto(&format!("{}/approvals", app.base)).await.unwrap();
    b.wait()
        .for_element(Locator::Css(&format!("{card} .extension-waiting")))
        .await
        .unwrap();
    shot(&b, "07-approvals-extension").await;
    b.find(Locator::Css(&format!("{card} button[value=approve]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until("the approved extension moves the end", || async {
        end(&grant(&app, &grant_id).await) != end(&before)
    })
    .await;
    let after = grant(&app, &grant_id).await;
    assert_eq!(
        end(&after) - end(&before),
        TimeDelta::minutes(30),
        "extended by the form's 30m once approved"
    );

    // Drop it now, saying why: the role leaves the directory.
    a.goto(grant_url.as_str()).await.unwrap();
    a.wait()
        .for_element(Locator::Id("drop-reason"))
        .await
        .unwrap()
        .send_keys("Certificate rotated")
        .await
        .unwrap();
    a.find(Locator::Css("form[action$='/drop'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    a.wait().for_element(Locator::Css("h1")).await.unwrap();
    wait_until("Master Admin removed from the SCIM server", || async {
        !app.tenant
            .roles_of("alice@example.com")
            .await
            .contains(&ADMIN.to_owned())
    })
    .await;
    wait_until("the verified removal recorded", || async {
        grant(&app, &grant_id).await["role_removed_at"].is_string()
    })
    .await;
    a.goto(grant_url.as_str()).await.unwrap();
    a.wait()
        .for_element(Locator::Id("role-removed"))
        .await
        .unwrap();
    shot(&a, "08-grant-detail-dropped").await;
    let dropped = grant(&app, &grant_id).await;
    assert_eq!(dropped["end_reason"], "dropped");
    assert_eq!(dropped["end_note"], "Certificate rotated");

    // Sign out: the broker ends its session, then the provider's (its
    // confirmation page), and the browser lands on the signed-out page.
    a.find(Locator::Css("form[action='/logout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let confirm = a
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("button[name=logout][value=yes]"))
        .await;
    let confirm = match confirm {
        Ok(button) => button,
        Err(e) => panic!(
            "no sign-out confirmation at the provider ({e}): {} {}",
            a.current_url().await.unwrap(),
            a.source().await.unwrap_or_default()
        ),
    };
    confirm.click().await.unwrap();
    a.wait()
        .for_element(Locator::Id("signed-out"))
        .await
        .unwrap();
    shot(&a, "09-signed-out").await;
    assert_eq!(a.current_url().await.unwrap().path(), "/signed-out");
    // The provider's session ended too: signing in asks for the login again
    // instead of signing alice straight back in.
    a.goto(&format!("{}/access", app.base)).await.unwrap();
    a.wait()
        .for_element(Locator::Css("input[name=login]"))
        .await
        .unwrap();

    // Every page answered with the strict headers.
    let res = cookie_client()
        .get(format!("{}/login", app.base))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    assert_eq!(res.headers()["cache-control"], "no-store");
    println!("screenshots: {}", shots.display());
    let _ = a.close().await;
    let _ = b.close().await;
    app.running.stop().await;
}

async fn grant(app: &WebApp, id: &str) -> Value {
    api_get(app, &format!("grants/{id}")).await
}
