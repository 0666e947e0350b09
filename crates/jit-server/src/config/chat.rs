//! `[slack]` and `[teams]`: approvals where people already are.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

/// Slack, two-way: requests with Approve and Deny, outcomes and the
/// warning before the end by direct message (docs/slack.md).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlackSettings {
    /// The bot token (`xoxb-…`; scopes `chat:write`, `im:write`,
    /// `users:read`, `users:read.email`). Without it Slack is off.
    pub bot_token: Option<SecretString>,
    pub bot_token_file: Option<PathBuf>,
    /// The app's signing secret: checks `POST /webhooks/slack/interactions`.
    pub signing_secret: Option<SecretString>,
    pub signing_secret_file: Option<PathBuf>,
    /// The Web API's base (Slack's own unless testing).
    pub api_url: String,
    /// Where a role's approval requests go unless its policy names a
    /// `slack_channel`: a channel id or `#name` the bot is in.
    pub default_channel: Option<String>,
    /// The buttons open the grant's page instead of answering in Slack
    /// (for an organisation that wants the IdP's MFA on every approval).
    pub confirm_in_browser: bool,
}

impl Default for SlackSettings {
    fn default() -> Self {
        Self {
            bot_token: None,
            bot_token_file: None,
            signing_secret: None,
            signing_secret_file: None,
            api_url: "https://slack.com/api".into(),
            default_channel: None,
            confirm_in_browser: false,
        }
    }
}

/// Microsoft Teams, one-way: every SOC notice as an Adaptive Card posted to
/// a Workflows webhook ("Post to a channel when a webhook request is
/// received"). The URL carries its own signature: keep it secret.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeamsSettings {
    pub webhook_url: Option<SecretString>,
    pub webhook_url_file: Option<PathBuf>,
}
