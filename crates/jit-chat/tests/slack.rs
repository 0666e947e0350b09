//! The Slack client against the Slack stand-in: what the feed and the
//! callback call, each answered as Slack answers.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use actix_web::web;
use jit_app::NotifyError;
use jit_chat::slack::Slack;
use jit_slack_standin::SlackStandIn;
use secrecy::SecretString;
use serde_json::json;

async fn workspace() -> (web::Data<SlackStandIn>, Slack) {
    let standin = web::Data::new(SlackStandIn::new("xoxb-test"));
    standin.add_user("eng", "eng@example.com");
    let (api, server) = jit_slack_standin::serve(standin.clone()).unwrap();
    tokio::spawn(server);
    let slack = Slack::new(&api, &SecretString::from("xoxb-test")).unwrap();
    (standin, slack)
}

#[tokio::test]
async fn posts_updates_direct_messages_modals_and_emails() {
    let (standin, slack) = workspace().await;
    let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*hello*"}}]);
    let posted = slack.post("C1", "hello", blocks.clone()).await.unwrap();
    slack
        .update(&posted, "hello again", blocks.clone())
        .await
        .unwrap();
    let m = &standin.messages_in("C1")[0];
    assert_eq!((m.text.as_str(), m.updates), ("hello again", 1));

    let dm = slack
        .direct("eng@example.com", "for you", blocks.clone())
        .await
        .unwrap();
    assert!(dm.is_some());
    let eng = standin.user_by_email("eng@example.com").unwrap();
    assert_eq!(standin.direct_messages(&eng.id)[0].text, "for you");
    assert_eq!(
        slack
            .direct("nobody@example.com", "x", blocks)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        slack.email_of(&eng.id).await.unwrap().as_deref(),
        Some("eng@example.com")
    );
    slack.ephemeral("C1", &eng.id, "only you").await.unwrap();
    assert_eq!(standin.ephemeral_for(&eng.id)[0].text, "only you");
    let modal = json!({"type": "modal", "callback_id": "x",
        "title": {"type": "plain_text", "text": "Why"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "why"}}]});
    slack.open_modal("trigger-1", modal).await.unwrap();
    assert_eq!(standin.views()[0].0, "trigger-1");
}

#[tokio::test]
async fn a_rate_limit_is_a_wait_and_an_outage_a_retry() {
    let (standin, slack) = workspace().await;
    let blocks = json!([]);
    let mut throttled = None;
    for _ in 0..10 {
        if let Err(e) = slack.post("C2", "burst", blocks.clone()).await {
            throttled = Some(e);
            break;
        }
    }
    assert!(
        matches!(throttled, Some(NotifyError::Throttled(_, after)) if after.as_secs() >= 1),
        "{throttled:?}"
    );
    standin.set_down(true);
    let down = slack.post("C3", "down", blocks).await.unwrap_err();
    assert!(matches!(down, NotifyError::Transient(_)), "{down:?}");
}

#[tokio::test]
async fn a_wrong_token_is_a_permanent_refusal() {
    let (_standin, _) = workspace().await;
    let standin = web::Data::new(SlackStandIn::new("xoxb-right"));
    let (api, server) = jit_slack_standin::serve(standin).unwrap();
    tokio::spawn(server);
    let wrong = Slack::new(&api, &SecretString::from("xoxb-wrong")).unwrap();
    let refused = wrong.post("C1", "x", json!([])).await.unwrap_err();
    assert!(
        matches!(refused, NotifyError::Permanent(ref e) if e.contains("invalid_auth")),
        "{refused:?}"
    );
}
