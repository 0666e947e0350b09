//! Slack's interaction callback, `POST /webhooks/slack/interactions`: a
//! signed click becomes the same use case the web form and the API call, as
//! the person whose verified Slack email it is. Refusals are told to the
//! clicker only (an ephemeral reply with the grant page's link); what
//! changed reaches the channel through the Slack feed, from the audit log.

use std::sync::Arc;

use jit_app::{App, AppError, Extended};
use jit_chat::slack::blocks::{self, Links};
use jit_chat::slack::feed::nudge_key;
use jit_chat::slack::interactions::{self, Action, Interaction, Refused};
use jit_chat::slack::{MessageRef, Slack};
use jit_domain::{GrantId, Verdict};
use secrecy::SecretString;
use serde_json::{Value, json};

/// What the callback needs: the bot, the signing secret, the links.
pub struct SlackDoor {
    pub slack: Arc<Slack>,
    pub signing_secret: SecretString,
    pub links: Links,
}

/// The callback's answer to Slack (always 200 once verified and read).
pub enum Answer {
    /// Nothing more to say (a modal closes).
    Done,
    /// The deny modal stays open with this error under its reason field.
    ModalError(String),
}

impl SlackDoor {
    /// Checks, de-duplicates and acts on one callback.
    pub async fn handle(
        &self,
        app: &App,
        wake_worker: &tokio::sync::Notify,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &str,
    ) -> Result<Answer, Refused> {
        let now = app.now();
        interactions::verify(&self.signing_secret, timestamp, signature, body, now)?;
        let interaction = interactions::parse(body)?;
        // A delivery seen before (Slack's own retry, or a replay inside the
        // five minutes) is answered and not acted on again.
        let delivery = format!("slack:{}", signature.unwrap_or_default());
        let first = match app
            .store
            .record_delivery(&delivery, now, None, &json!({"slack": true}))
            .await
        {
            Ok(first) => first,
            Err(e) => {
                tracing::warn!(error = %e, "Slack callback: the replay guard could not be written");
                false
            }
        };
        if !first {
            return Ok(Answer::Done);
        }
        Ok(self.act(app, wake_worker, interaction).await)
    }

    async fn act(&self, app: &App, wake_worker: &tokio::sync::Notify, i: Interaction) -> Answer {
        match i {
            Interaction::Ignored => Answer::Done,
            Interaction::Click {
                user,
                action,
                grant,
                channel,
                trigger_id,
            } => {
                let channel = channel.unwrap_or_default();
                let outcome = self.click(app, &user, action, grant, &trigger_id).await;
                match outcome {
                    Ok(Some(done)) => {
                        self.update_nudge(app, grant, &done).await;
                        wake_worker.notify_one();
                    }
                    Ok(None) => {}
                    Err(why) => self.tell(app, &channel, &user, grant, &why).await,
                }
                Answer::Done
            }
            Interaction::DenyReason {
                user,
                grant,
                reason,
            } => {
                let answered = match self.email(&user).await {
                    Ok(email) => app
                        .answer_from_chat(&email, grant, Verdict::Deny, &reason)
                        .await
                        .map_err(told),
                    Err(why) => Err(why),
                };
                match answered {
                    Ok(_) => Answer::Done,
                    Err(why) => Answer::ModalError(why),
                }
            }
        }
    }

    /// Acts on a button; `Some(what)` to show on the warning message
    /// (extend, drop), `Err` the reason to tell the clicker.
    async fn click(
        &self,
        app: &App,
        user: &str,
        action: Action,
        grant: GrantId,
        trigger_id: &str,
    ) -> Result<Option<String>, String> {
        if self.links.confirm_in_browser && matches!(action, Action::Approve | Action::Deny) {
            return Err(
                "approvals are given on the grant's page here (slack.confirm_in_browser)".into(),
            );
        }
        if action == Action::Deny {
            let g = app.grant(grant).await.map_err(told)?;
            self.slack
                .open_modal(trigger_id, blocks::deny_modal(&g))
                .await
                .map_err(|e| format!("Slack could not open the reason form ({e})"))?;
            return Ok(None);
        }
        let email = self.email(user).await?;
        match action {
            Action::Approve => app
                .answer_from_chat(&email, grant, Verdict::Approve, "")
                .await
                .map(|_| None)
                .map_err(told),
            Action::Extend => match app.extend_from_chat(&email, grant).await {
                Ok(Extended::Moved { grant }) => Ok(Some(format!(
                    "Extended: it now ends {}.",
                    grant.expires_at.format("%Y-%m-%d %H:%M UTC")
                ))),
                Ok(Extended::Requested { .. }) => Ok(Some(
                    "Extension requested: it waits for the role's approvers.".into(),
                )),
                Err(e) => Err(told(e)),
            },
            Action::Drop => app
                .drop_from_chat(&email, grant)
                .await
                .map(|g| {
                    Some(format!(
                        "Dropped at {}: the role is being removed.",
                        g.ended_at.unwrap_or(g.updated_at).format("%H:%M UTC")
                    ))
                })
                .map_err(told),
            Action::Deny => Ok(None),
        }
    }

    /// The verified email of a Slack member (`users.info`).
    async fn email(&self, user: &str) -> Result<String, String> {
        match self.slack.email_of(user).await {
            Ok(Some(email)) => Ok(email),
            Ok(None) => Err("your Slack account has no email the broker can match to you".into()),
            Err(e) => Err(format!("Slack could not say who you are ({e}); try again")),
        }
    }

    /// Tells the clicker (only) why nothing happened, with the page's link.
    async fn tell(&self, app: &App, channel: &str, user: &str, grant: GrantId, why: &str) {
        let link = match app.grant(grant).await {
            Ok(g) => self.links.grant(&g),
            Err(_) => self.links.public_url.clone(),
        };
        let text = format!("Not done: {why}. The grant's page: {link}");
        if let Err(e) = self.slack.ephemeral(channel, user, &text).await {
            tracing::warn!(error = %e, "Slack: could not tell the clicker why");
        }
    }

    /// Shows on the warning message what became of it.
    async fn update_nudge(&self, app: &App, grant: GrantId, done: &str) {
        let (Ok(Some((channel, ts))), Ok(g)) = (
            app.store.chat_message(&nudge_key(grant)).await,
            app.grant(grant).await,
        ) else {
            return;
        };
        let (text, blocks) = blocks::nudge(&g, &self.links, Some(done));
        if let Err(e) = self
            .slack
            .update(&MessageRef { channel, ts }, &text, blocks)
            .await
        {
            tracing::warn!(error = %e, "Slack: could not update the warning message");
        }
    }
}

/// A use case's refusal in the words the web form shows the same person
/// (an internal failure is logged, not shown).
fn told(e: AppError) -> String {
    // A grant the clicker may not see is "no such grant", as at every door;
    // the usual cause in Slack is an approver by group who has not signed
    // in (Slack cannot vouch for groups), so say what would help.
    if matches!(e, AppError::Access(jit_domain::AccessRefusal::NotFound)) {
        return "no such grant that you may see (if you approve this role through a group, \
                sign in to the broker once so that your groups count here)"
            .into();
    }
    let words = jit_web::WebError::from(e);
    if let jit_web::WebError::Internal(detail) = &words {
        tracing::error!(error = %detail, "Slack click failed");
    }
    words.to_string()
}

/// The modal error Slack shows under the reason field.
pub fn modal_error(why: &str) -> Value {
    json!({"response_action": "errors", "errors": {blocks::REASON: why}})
}
