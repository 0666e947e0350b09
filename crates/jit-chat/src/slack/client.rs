//! Slack's Web API through slack-morphism: post, update, a direct message
//! by email, an ephemeral reply, a modal, and a user's email. Every failure
//! is sorted by what the caller should do: try again (Slack down), wait
//! (429 and its `Retry-After`), or give up (a refusal trying again will not
//! change).

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use jit_app::NotifyError;
use secrecy::ExposeSecret;
use serde_json::Value;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use crate::ChatError;

type Connector = SlackClientHyperConnector<HttpsConnector<HttpConnector>>;

/// Where a message is: its channel and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    pub channel: String,
    pub ts: String,
}

/// A Slack bot: its Web API client and token.
pub struct Slack {
    client: SlackClient<Connector>,
    token: SlackApiToken,
}

impl std::fmt::Debug for Slack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slack([token redacted])")
    }
}

impl Slack {
    /// A client of the Web API at `api_url` (Slack's own, or a stand-in)
    /// with the bot token `token`.
    pub fn new(api_url: &str, token: &secrecy::SecretString) -> Result<Self, ChatError> {
        // Mozilla's roots, built in: no dependency on the host's CA store.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            // Plain HTTP for a stand-in on this host only: the config refuses it elsewhere.
            .https_or_http()
            .enable_http1()
            .build();
        let connector = SlackClientHyperConnector::with_connector(https)
            .with_slack_api_url(api_url.trim_end_matches('/'));
        Ok(Self {
            client: SlackClient::new(connector),
            token: SlackApiToken::new(SlackApiTokenValue::new(token.expose_secret().to_owned())),
        })
    }

    fn session(&self) -> SlackClientSession<'_, Connector> {
        self.client.open_session(&self.token)
    }

    /// Posts `text` (the notification's words) with `blocks` to `channel`.
    pub async fn post(
        &self,
        channel: &str,
        text: &str,
        blocks: Value,
    ) -> Result<MessageRef, NotifyError> {
        let request = SlackApiChatPostMessageRequest::new(
            SlackChannelId::new(channel.to_owned()),
            content(text, blocks)?,
        );
        let answer = self
            .session()
            .chat_post_message(&request)
            .await
            .map_err(sorted)?;
        Ok(MessageRef {
            channel: answer.channel.to_string(),
            ts: answer.ts.to_string(),
        })
    }

    /// Rewrites a message in place.
    pub async fn update(
        &self,
        at: &MessageRef,
        text: &str,
        blocks: Value,
    ) -> Result<(), NotifyError> {
        let request = SlackApiChatUpdateRequest::new(
            SlackChannelId::new(at.channel.clone()),
            content(text, blocks)?,
            SlackTs::new(at.ts.clone()),
        );
        self.session().chat_update(&request).await.map_err(sorted)?;
        Ok(())
    }

    /// A reply only `user` sees, in `channel`.
    pub async fn ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), NotifyError> {
        let request = SlackApiChatPostEphemeralRequest::new(
            SlackChannelId::new(channel.to_owned()),
            SlackUserId::new(user.to_owned()),
            SlackMessageContent::new().with_text(text.to_owned()),
        );
        self.session()
            .chat_post_ephemeral(&request)
            .await
            .map_err(sorted)?;
        Ok(())
    }

    /// A direct message to the member whose email is `email`; `None` when
    /// the workspace has nobody with it.
    pub async fn direct(
        &self,
        email: &str,
        text: &str,
        blocks: Value,
    ) -> Result<Option<MessageRef>, NotifyError> {
        let session = self.session();
        let found = session
            .users_lookup_by_email(&SlackApiUsersLookupByEmailRequest::new(EmailAddress(
                email.to_owned(),
            )))
            .await;
        let user = match found {
            Ok(answer) => answer.user.id,
            Err(SlackClientError::ApiError(e)) if e.code == "users_not_found" => return Ok(None),
            Err(e) => return Err(sorted(e)),
        };
        let opened = session
            .conversations_open(&SlackApiConversationsOpenRequest::new().with_users(vec![user]))
            .await
            .map_err(sorted)?;
        self.post(opened.channel.id.as_ref(), text, blocks)
            .await
            .map(Some)
    }

    /// The email of the member `user` (needs `users:read.email`); `None` for
    /// a member without one (a bot, say).
    pub async fn email_of(&self, user: &str) -> Result<Option<String>, NotifyError> {
        let answer = self
            .session()
            .users_info(&SlackApiUsersInfoRequest::new(SlackUserId::new(
                user.to_owned(),
            )))
            .await
            .map_err(sorted)?;
        Ok(answer.user.profile.and_then(|p| p.email).map(|e| e.0))
    }

    /// Opens a modal on `trigger_id` (the reason for a denial).
    pub async fn open_modal(&self, trigger_id: &str, view: Value) -> Result<(), NotifyError> {
        let view: SlackView = serde_json::from_value(view)
            .map_err(|e| NotifyError::Permanent(format!("a modal Slack would refuse: {e}")))?;
        self.session()
            .views_open(&SlackApiViewsOpenRequest::new(
                SlackTriggerId::new(trigger_id.to_owned()),
                view,
            ))
            .await
            .map_err(sorted)?;
        Ok(())
    }
}

/// The words and the blocks, checked against Block Kit's model.
fn content(text: &str, blocks: Value) -> Result<SlackMessageContent, NotifyError> {
    let blocks: Vec<SlackBlock> = serde_json::from_value(blocks)
        .map_err(|e| NotifyError::Permanent(format!("blocks Slack would refuse: {e}")))?;
    Ok(SlackMessageContent::new()
        .with_text(text.to_owned())
        .with_blocks(blocks))
}

/// Slack's answers sorted: wait, try again, or give up.
fn sorted(e: SlackClientError) -> NotifyError {
    match e {
        SlackClientError::RateLimitError(r) => NotifyError::Throttled(
            "Slack rate limit".into(),
            r.retry_after.unwrap_or(std::time::Duration::from_secs(1)),
        ),
        SlackClientError::ApiError(a) => match a.code.as_str() {
            "ratelimited" => {
                NotifyError::Throttled("Slack rate limit".into(), std::time::Duration::from_secs(1))
            }
            "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
                NotifyError::Transient(format!("Slack: {}", a.code))
            }
            code => NotifyError::Permanent(format!("Slack refused: {code}")),
        },
        SlackClientError::HttpError(h) if h.status_code.is_client_error() => {
            NotifyError::Permanent(format!("Slack answered {}", h.status_code))
        }
        other => NotifyError::Transient(format!("Slack unreachable: {other}")),
    }
}
