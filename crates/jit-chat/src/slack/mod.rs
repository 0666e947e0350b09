//! Slack, two-way: approval requests with buttons, their answers in place,
//! outcomes and the warning before a grant ends by direct message; the
//! signed interaction callbacks (docs/slack.md).

pub mod blocks;
pub mod client;
pub mod feed;
pub mod interactions;

pub use blocks::Links;
pub use client::{MessageRef, Slack};
pub use feed::SlackFeed;
pub use interactions::{Action, Interaction, Refused, precheck};
