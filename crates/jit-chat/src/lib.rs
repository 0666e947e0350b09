//! jit-chat: the chat doors. Slack (two-way, through slack-morphism) and
//! Microsoft Teams (notifications through a Workflows webhook). Both are
//! fed audit events in order by jit-app's `Feed`, so a post is durable,
//! retried with back-off and never blocks a grant.

pub mod slack;
pub mod teams;

/// A chat integration that cannot be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{0}")]
    Config(String),
}
