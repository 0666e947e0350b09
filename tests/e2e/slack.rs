//! Approvals in Slack: the request posted with Approve and Deny, a click
//! answered through the same use case as the web form and the API, the
//! message updated in place, the outcome by direct message, the warning
//! before the end with Extend and Drop; forged, stale and replayed
//! callbacks refused with nothing written; Slack down and back; Teams cards.
//! Against the real scim2-server and the Slack stand-in.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{HttpResponse, web};
use jit_e2e::Backend;
use jit_e2e::Tenant;
use jit_e2e::app::{TestApp, grant_request, spawn_app_with};
use jit_e2e::slack::{CHANNEL, SIGNING_SECRET, SlackPeer, now};
use jit_e2e::web::{Claims, csrf_of, spawn_web_app_with};

/// How long a role may take to land on (or leave) the SCIM target.
const ROLE: Duration = Duration::from_secs(20);
use serde_json::{Value, json};

const ENG: &str = "eng@example.com";
const LEAD: &str = "lead@example.com";
const OUTSIDER: &str = "outsider@example.com";
const RECORDING: &str = "Recording Admin";

async fn audit_len(app: &TestApp) -> usize {
    let store = jit_store::open(&app.database_url, false, 1).await.unwrap();
    store.audit_events(0, 100_000).await.unwrap().len()
}

async fn request(app: &TestApp, user: &str, role: &str, ticket: &str, duration: &str) -> String {
    let mut body = grant_request(user, ticket, duration);
    body["role"] = json!(role);
    let (status, g) = app.request_grant(&body).await;
    assert_eq!(status, 201, "{g}");
    g["id"].as_str().unwrap().to_owned()
}

async fn wait_for_state(app: &TestApp, id: &str, state: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, g) = app.get(&format!("/api/v1/grants/{id}")).await;
        if g["state"] == state {
            return g;
        }
        assert!(std::time::Instant::now() < deadline, "never {state}: {g}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn stack(people: &[&str]) -> (TestApp, SlackPeer, Tenant) {
    let tenant = Tenant::new();
    for p in people {
        tenant.create_user(p, &["Employee"]).await;
    }
    let slack = SlackPeer::start(people).await;
    let app = spawn_app_with(Backend::Sqlite, Some(&tenant.base_url), |c| {
        slack.configure(c);
    })
    .await;
    (app, slack, tenant)
}

/// A request that needs approval is posted with the decision; an outsider
/// and the requester are refused (told only them, nothing written); the
/// approver's click approves it through the same rule, the role lands on
/// the SCIM target, the message is updated in place and the requester
/// hears directly. A replay changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_from_slack_puts_the_role_on_the_target() {
    let (app, slack, tenant) = stack(&[ENG, LEAD, OUTSIDER]).await;
    let id = request(&app, ENG, RECORDING, "CHG0024001", "30m").await;
    let posted = slack
        .wait_for("the request", |m| m.text.contains("Approval needed"))
        .await;
    assert_eq!(posted.channel, CHANNEL);
    assert!(
        posted.text.contains(RECORDING) && posted.text.contains(ENG),
        "{}",
        posted.text
    );
    let shown = posted.blocks.to_string();
    assert!(
        shown.contains("CHG0024001") && shown.contains("approvals"),
        "{shown}"
    );

    // Someone who is not an approver: told why, with the page, and nothing written.
    let before = audit_len(&app).await;
    let (status, _) = slack.click(&app.base, OUTSIDER, "approve", &posted).await;
    assert_eq!(status, 200);
    let told = slack.standin.ephemeral_for(&slack.user(OUTSIDER).id);
    // One who may not see the grant learns nothing of it (issue 29).
    assert!(
        told[0].text.contains("no such grant that you may see"),
        "{told:?}"
    );
    assert!(told[0].text.contains(&format!("/grants/{id}")), "{told:?}");
    // The requester cannot approve their own request.
    slack.click(&app.base, ENG, "approve", &posted).await;
    let told = slack.standin.ephemeral_for(&slack.user(ENG).id);
    assert!(told[0].text.contains("own"), "{told:?}");
    assert_eq!(audit_len(&app).await, before, "refusals write nothing");
    wait_for_state(&app, &id, "pending_approval").await;

    // The approver named in the policy.
    let signed_at = now();
    let payload = jit_slack_standin::block_actions(
        &slack.user(LEAD),
        "approve",
        &id,
        &posted.channel,
        &posted.ts,
    );
    let (status, _) = slack
        .deliver(&app.base, &payload, signed_at, SIGNING_SECRET)
        .await;
    assert_eq!(status, 200);
    wait_for_state(&app, &id, "active").await;
    tenant.wait_for_role(ENG, RECORDING, true, ROLE).await;
    let updated = slack
        .wait_for("the request updated", |m| {
            m.ts == posted.ts && m.text.contains("Approved")
        })
        .await;
    assert!(
        updated.blocks.to_string().contains(LEAD),
        "{}",
        updated.blocks
    );
    assert!(
        !updated.blocks.to_string().contains("\"approve\""),
        "no buttons once decided"
    );
    let dm = slack
        .wait_for("the outcome to the requester", |m| {
            m.text.contains("was approved by")
        })
        .await;
    assert_eq!(
        slack.standin.direct_messages(&slack.user(ENG).id),
        std::slice::from_ref(&dm)
    );

    // The same delivery again: answered, not acted on.
    let before = audit_len(&app).await;
    let (status, _) = slack
        .deliver(&app.base, &payload, signed_at, SIGNING_SECRET)
        .await;
    assert_eq!(status, 200);
    assert_eq!(audit_len(&app).await, before, "a replay writes nothing");
    app.running.stop().await;
}

/// Deny asks why in a modal; the reason is the denial's comment, and the
/// requester hears it. A denial without a reason keeps the form open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_from_slack_asks_why() {
    let (app, slack, _tenant) = stack(&[ENG, LEAD]).await;
    let id = request(&app, ENG, RECORDING, "CHG0024002", "30m").await;
    let posted = slack
        .wait_for("the request", |m| m.text.contains("Approval needed"))
        .await;
    let (status, _) = slack.click(&app.base, LEAD, "deny", &posted).await;
    assert_eq!(status, 200);
    let views = slack.standin.views();
    assert_eq!(views.len(), 1, "the reason form opened");
    assert_eq!(views[0].1["private_metadata"], id.as_str());
    let (status, answer) = slack.deny_with(&app.base, LEAD, &id, "").await;
    assert_eq!(status, 200);
    assert_eq!(answer["response_action"], "errors", "{answer}");
    wait_for_state(&app, &id, "pending_approval").await;
    let (status, _) = slack
        .deny_with(&app.base, LEAD, &id, "No CAB approval for this window")
        .await;
    assert_eq!(status, 200);
    wait_for_state(&app, &id, "denied").await;
    let dm = slack
        .wait_for("the outcome", |m| m.text.contains("was denied by"))
        .await;
    assert!(dm.text.contains("No CAB approval"), "{}", dm.text);
    slack
        .wait_for("the request updated", |m| {
            m.ts == posted.ts && m.text.contains("Denied")
        })
        .await;
    app.running.stop().await;
}

/// A forged signature, one from more than five minutes ago, or none: 401,
/// nothing written; a body that is not an interaction: 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_unsigned_callbacks_are_refused_and_write_nothing() {
    let (app, slack, _tenant) = stack(&[ENG, LEAD]).await;
    let id = request(&app, ENG, RECORDING, "CHG0024003", "30m").await;
    let posted = slack
        .wait_for("the request", |m| m.text.contains("Approval needed"))
        .await;
    let payload =
        jit_slack_standin::block_actions(&slack.user(LEAD), "approve", &id, CHANNEL, &posted.ts);
    let before = audit_len(&app).await;
    let (status, body) = slack
        .deliver(&app.base, &payload, now(), "not-the-signing-secret")
        .await;
    assert_eq!(
        (status, body["error"]["fields"][0]["rule"].as_str()),
        (401, Some("signature"))
    );
    let (status, body) = slack
        .deliver(&app.base, &payload, now() - 600, SIGNING_SECRET)
        .await;
    assert_eq!(
        (status, body["error"]["fields"][0]["rule"].as_str()),
        (401, Some("timestamp"))
    );
    let raw = jit_slack_standin::interaction_body(&payload);
    let (status, _) = slack.deliver_body(&app.base, &raw, now(), "").await;
    assert_eq!(status, 401);
    let (status, _) = slack
        .deliver_body(
            &app.base,
            "payload=not-json",
            now(),
            &jit_slack_standin::sign(SIGNING_SECRET, now(), "payload=not-json"),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(audit_len(&app).await, before);
    wait_for_state(&app, &id, "pending_approval").await;
    app.running.stop().await;
}

/// Before the end, the holder gets Extend and Drop: Extend moves the end
/// through the same rule as the page; Drop ends it and the role goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warning_before_the_end_extends_and_drops() {
    let (app, slack, tenant) = stack(&[ENG]).await;
    // Five minutes: inside the default ten-minute warning from the start.
    let id = request(&app, ENG, "Master Admin", "CHG0024004", "5m").await;
    tenant.wait_for_role(ENG, "Master Admin", true, ROLE).await;
    let warning = slack
        .wait_for("the warning", |m| m.text.contains("ends at"))
        .await;
    assert_eq!(
        slack.standin.direct_messages(&slack.user(ENG).id)[0].ts,
        warning.ts
    );
    let (_, before) = app.get(&format!("/api/v1/grants/{id}")).await;
    let (status, _) = slack.click(&app.base, ENG, "extend", &warning).await;
    assert_eq!(status, 200);
    let (_, after) = app.get(&format!("/api/v1/grants/{id}")).await;
    let end = |g: &Value| {
        chrono::DateTime::parse_from_rfc3339(g["expires_at"].as_str().unwrap()).unwrap()
    };
    assert_eq!((end(&after) - end(&before)).num_minutes(), 30, "{after}");
    slack
        .wait_for("Extended shown", |m| {
            m.ts == warning.ts && m.blocks.to_string().contains("Extended")
        })
        .await;
    // Drop from the same message.
    let (status, _) = slack.click(&app.base, ENG, "drop", &warning).await;
    assert_eq!(status, 200);
    wait_for_state(&app, &id, "ended").await;
    tenant.wait_for_role(ENG, "Master Admin", false, ROLE).await;
    slack
        .wait_for("Dropped shown", |m| {
            m.ts == warning.ts && m.blocks.to_string().contains("Dropped")
        })
        .await;
    app.running.stop().await;
}

/// Slack down: the grant is made all the same; the post arrives once
/// Slack is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_down_leaves_the_grant_alone_and_the_post_comes_later() {
    let (app, slack, _tenant) = stack(&[ENG, LEAD]).await;
    slack.standin.set_down(true);
    let id = request(&app, ENG, RECORDING, "CHG0024005", "30m").await;
    // The feed has tried and been refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while jit_slack_standin::Counts::get(&slack.standin.counts.refused_down) == 0 {
        assert!(std::time::Instant::now() < deadline, "the feed never tried");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(slack.standin.messages().is_empty());
    wait_for_state(&app, &id, "pending_approval").await;
    slack.standin.set_down(false);
    let posted = slack
        .wait_for("the request, after Slack came back", |m| {
            m.text.contains("Approval needed")
        })
        .await;
    assert!(posted.blocks.to_string().contains(&id));
    app.running.stop().await;
}

/// Teams: every SOC notice as an Adaptive Card to the Workflows webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_gets_the_notices_as_adaptive_cards() {
    let received: web::Data<Mutex<Vec<Value>>> = web::Data::new(Mutex::new(Vec::new()));
    let kept = received.clone();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().app_data(kept.clone()).route(
            "/workflow",
            web::post().to(
                |cards: web::Data<Mutex<Vec<Value>>>, body: web::Json<Value>| async move {
                    cards.lock().unwrap().push(body.into_inner());
                    HttpResponse::Accepted().finish()
                },
            ),
        )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let url = format!("http://{}/workflow", server.addrs()[0]);
    let handle = server.run();
    let stop = handle.handle();
    tokio::spawn(handle);
    let tenant = Tenant::new();
    tenant.create_user(ENG, &["Employee"]).await;
    let app = spawn_app_with(Backend::Sqlite, Some(&tenant.base_url), |c| {
        c.teams.webhook_url = Some(secrecy::SecretString::from(url.clone()));
    })
    .await;
    let id = request(&app, ENG, "Master Admin", "CHG0024006", "30m").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let card = loop {
        let found = received
            .lock()
            .unwrap()
            .iter()
            .find(|c| {
                c["attachments"][0]["content"]["body"][0]["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("granted to"))
            })
            .cloned();
        if let Some(card) = found {
            break card;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no card: {:?}",
            received.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let content = &card["attachments"][0]["content"];
    assert_eq!(
        card["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(content["type"], "AdaptiveCard");
    assert!(
        content["actions"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/grants/{id}"))
    );
    app.running.stop().await;
    stop.stop(false).await;
}

/// Approver groups come from the identity provider, which Slack does not
/// know: a lead's click counts once they have signed in (within the
/// sign-in's absolute timeout), and the quorum of two is reached across
/// Slack and the web form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_of_two_across_slack_and_the_web_form() {
    let people = ["alice@example.com", "bob@example.com", "carol@example.com"];
    let slack = SlackPeer::start(&people).await;
    let users: Vec<(&str, &[&str])> = vec![
        ("alice@example.com", &["Employee"]),
        ("bob@example.com", &["Employee"]),
        ("carol@example.com", &["Employee"]),
    ];
    let app = spawn_web_app_with(
        Backend::Sqlite,
        Claims::InIdToken,
        &users,
        Arc::new(jit_app::SystemClock),
        |c| slack.configure(c),
    )
    .await;
    // alice asks for Recording Admin (two approvals from cx-platform-leads).
    #[allow(clippy::disallowed_methods)]
    let now = chrono::Utc::now();
    app.servicenow
        .approve("CHG0024007", "alice@example.com", RECORDING, now);
    let ticket = "CHG0024007".to_owned();
    let alice = app.sign_in("alice").await;
    let form = alice
        .get(format!("{}/", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sent = alice
        .post(format!("{}/request", app.base))
        .form(&[
            ("csrf", csrf_of(&form).as_str()),
            ("role", RECORDING),
            ("ticket", ticket.as_str()),
            ("duration", "30m"),
            ("justification", "Export the recordings for the regulator"),
        ])
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_redirection() || sent.status().is_success());
    let posted = slack
        .wait_for("the request", |m| m.text.contains("Approval needed"))
        .await;
    let id = jit_e2e::slack::button_value(&posted, "approve").unwrap();
    // bob is a lead, but has not signed in: Slack cannot vouch for his groups.
    slack
        .click(&app.base, "bob@example.com", "approve", &posted)
        .await;
    let told = slack
        .standin
        .ephemeral_for(&slack.user("bob@example.com").id);
    assert!(told[0].text.contains("sign in to the broker"), "{told:?}");
    // Once signed in, his click counts: 1 of 2.
    let _bob = app.sign_in("bob").await;
    slack
        .click(&app.base, "bob@example.com", "approve", &posted)
        .await;
    slack
        .wait_for("1 of 2", |m| m.ts == posted.ts && m.text.contains("1 of 2"))
        .await;
    // carol approves in the web form: the quorum.
    let carol = app.sign_in("carol").await;
    let page = carol
        .get(format!("{}/approvals", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answered = carol
        .post(format!("{}/grants/{id}/review", app.base))
        .form(&[
            ("csrf", csrf_of(&page).as_str()),
            ("verdict", "approve"),
            ("comment", ""),
        ])
        .send()
        .await
        .unwrap();
    assert!(answered.status().is_redirection() || answered.status().is_success());
    slack
        .wait_for("approved", |m| {
            m.ts == posted.ts && m.text.contains("Approved")
        })
        .await;
    app.running.stop().await;
}

/// The warning's Extend on a role whose extensions need approval becomes
/// an extension request, posted for the approvers; approved from Slack, the
/// end moves and the holder hears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_from_slack_waits_for_the_approvers() {
    let (app, slack, tenant) = stack(&[ENG, LEAD]).await;
    let id = request(&app, ENG, RECORDING, "CHG0024008", "5m").await;
    let posted = slack
        .wait_for("the request", |m| m.text.contains("Approval needed"))
        .await;
    slack.click(&app.base, LEAD, "approve", &posted).await;
    tenant.wait_for_role(ENG, RECORDING, true, ROLE).await;
    let warning = slack
        .wait_for("the warning", |m| m.text.contains("ends at"))
        .await;
    let (_, before) = app.get(&format!("/api/v1/grants/{id}")).await;
    slack.click(&app.base, ENG, "extend", &warning).await;
    let ask = slack
        .wait_for("the extension request", |m| {
            m.text.contains("Extension needed")
        })
        .await;
    assert_eq!(ask.channel, CHANNEL);
    let (_, unchanged) = app.get(&format!("/api/v1/grants/{id}")).await;
    assert_eq!(
        unchanged["expires_at"], before["expires_at"],
        "not before approval"
    );
    slack.click(&app.base, LEAD, "approve", &ask).await;
    slack
        .wait_for("the extension approved", |m| {
            m.ts == ask.ts && m.text.contains("Extension approved")
        })
        .await;
    let (_, after) = app.get(&format!("/api/v1/grants/{id}")).await;
    assert_ne!(after["expires_at"], before["expires_at"], "{after}");
    slack
        .wait_for("the holder told", |m| m.text.contains("Your extension of"))
        .await;
    app.running.stop().await;
}
