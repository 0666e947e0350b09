//! The Slack stand-in (crates/jit-slack-standin) on a port of its own, and
//! interaction callbacks signed as Slack signs them.

use std::time::Duration;

use actix_web::web;
use jit_slack_standin::{Message, SlackStandIn, SlackUser};
use secrecy::SecretString;
use serde_json::Value;

pub const TOKEN: &str = "xoxb-e2e-slack-token";
pub const SIGNING_SECRET: &str = "e2e-slack-signing-secret-0123456789";
pub const CHANNEL: &str = "C0APPROVALS";

pub struct SlackPeer {
    pub standin: web::Data<SlackStandIn>,
    pub api: String,
    server: actix_web::dev::ServerHandle,
    http: reqwest::Client,
}

impl Drop for SlackPeer {
    fn drop(&mut self) {
        let handle = self.server.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { handle.stop(false).await });
        }
    }
}

impl SlackPeer {
    /// A workspace holding `people` (their emails are their user names).
    pub async fn start(people: &[&str]) -> Self {
        let standin = web::Data::new(SlackStandIn::new(TOKEN));
        for email in people {
            let name = email.split('@').next().unwrap_or_default();
            standin.add_user(name, email);
        }
        let (api, server) = jit_slack_standin::serve(standin.clone()).expect("serve Slack");
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            standin,
            api,
            server: handle,
            http: reqwest::Client::new(),
        }
    }

    /// The broker's `[slack]` pointing here.
    pub fn configure(&self, config: &mut jit_server::config::Config) {
        let s = &mut config.slack;
        s.bot_token = Some(SecretString::from(TOKEN));
        s.signing_secret = Some(SecretString::from(SIGNING_SECRET));
        s.api_url = self.api.clone();
        s.default_channel = Some(CHANNEL.into());
    }

    pub fn user(&self, email: &str) -> SlackUser {
        self.standin.user_by_email(email).expect("a Slack member")
    }

    /// Waits for a message (in any channel) that `pred` accepts.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Message) -> bool) -> Message {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(m) = self.standin.messages().into_iter().find(|m| pred(m)) {
                return m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no Slack message: {what}; have {:#?}",
                self.standin.messages()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Posts `payload` to the broker as Slack would, signed at `at` (unix
    /// seconds) with `secret`; the status and the body.
    pub async fn deliver(
        &self,
        broker: &str,
        payload: &Value,
        at: i64,
        secret: &str,
    ) -> (u16, Value) {
        let body = jit_slack_standin::interaction_body(payload);
        self.deliver_body(
            broker,
            &body,
            at,
            &jit_slack_standin::sign(secret, at, &body),
        )
        .await
    }

    pub async fn deliver_body(
        &self,
        broker: &str,
        body: &str,
        at: i64,
        signature: &str,
    ) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{broker}/webhooks/slack/interactions"))
            .header("X-Slack-Request-Timestamp", at.to_string())
            .header("X-Slack-Signature", signature)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .expect("the callback");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `email` clicks `action` on `message`, signed now.
    pub async fn click(
        &self,
        broker: &str,
        email: &str,
        action: &str,
        message: &Message,
    ) -> (u16, Value) {
        let value = button_value(message, action).expect("the message has that button");
        let payload = jit_slack_standin::block_actions(
            &self.user(email),
            action,
            &value,
            &message.channel,
            &message.ts,
        );
        self.deliver(broker, &payload, now(), SIGNING_SECRET).await
    }

    /// `email` submits the deny form for `grant` with `reason`, signed now.
    pub async fn deny_with(
        &self,
        broker: &str,
        email: &str,
        grant: &str,
        reason: &str,
    ) -> (u16, Value) {
        let payload =
            jit_slack_standin::view_submission(&self.user(email), "deny_reason", grant, reason);
        self.deliver(broker, &payload, now(), SIGNING_SECRET).await
    }
}

/// The value of the button `action_id` in a message's blocks.
pub fn button_value(message: &Message, action_id: &str) -> Option<String> {
    message
        .blocks
        .as_array()?
        .iter()
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"] == action_id)
        .and_then(|e| e["value"].as_str().map(str::to_owned))
}

/// Slack's clock (the system's).
pub fn now() -> i64 {
    #[allow(clippy::disallowed_methods)]
    chrono::Utc::now().timestamp()
}
