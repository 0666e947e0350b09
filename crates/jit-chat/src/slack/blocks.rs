//! What the Slack messages say, as Block Kit JSON: pure functions of the
//! grant and its answers, so the tests read them without Slack.

use chrono::{DateTime, Utc};
use jit_domain::{Grant, GrantState, Review, Verdict};
use serde_json::{Value, json};

/// The action ids of the buttons (and what an interaction names).
pub const APPROVE: &str = "approve";
pub const DENY: &str = "deny";
pub const EXTEND: &str = "extend";
pub const DROP: &str = "drop";
/// The deny modal's callback id, and its reason input's block and action id.
pub const DENY_REASON: &str = "deny_reason";
pub const REASON: &str = "reason";

/// Where links go, and whether approving happens in the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// The broker's pages, e.g. `https://jit.bank.example`.
    pub public_url: String,
    /// The ServiceNow instance, to link the change.
    pub servicenow_url: Option<String>,
    /// The buttons open the grant page instead of answering in Slack.
    pub confirm_in_browser: bool,
}

impl Links {
    pub fn grant(&self, grant: &Grant) -> String {
        format!(
            "{}/grants/{}",
            self.public_url.trim_end_matches('/'),
            grant.id
        )
    }

    fn ticket(&self, grant: &Grant) -> String {
        match (&grant.ticket, &self.servicenow_url) {
            (Some(t), Some(url)) => format!(
                "<{}/nav_to.do?uri=change_request.do?sysparm_query=number={t}|{t}>",
                url.trim_end_matches('/')
            ),
            (Some(t), None) => t.to_string(),
            (None, _) => "none".into(),
        }
    }
}

fn hm(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Slack's own escaping of `&`, `<` and `>` in text it renders.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text a person typed (a justification, a comment), shown in mrkdwn as
/// itself and nothing more: on one line, inside an inline code span, so
/// that `*bold*`, `_italic_`, `~strike~`, bare links and line breaks in it
/// cannot make the message look like something the broker wrote (Slack's
/// mrkdwn has no escape for those characters; a code span shows them as
/// they are).
pub fn quoted(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return String::new();
    }
    format!("`{}`", escape(&one_line.replace('`', "'")))
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

fn context(text: &str) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
}

fn button(text: &str, action_id: &str, value: &str, style: Option<&str>) -> Value {
    let mut b = json!({
        "type": "button", "action_id": action_id, "value": value,
        "text": {"type": "plain_text", "text": text},
    });
    if let Some(style) = style {
        b["style"] = json!(style);
    }
    b
}

fn link_button(text: &str, action_id: &str, url: &str) -> Value {
    json!({
        "type": "button", "action_id": action_id, "url": url,
        "text": {"type": "plain_text", "text": text},
    })
}

fn answers(reviews: &[Review]) -> String {
    reviews
        .iter()
        .map(|r| {
            let verb = match r.verdict {
                Verdict::Approve => "approved",
                Verdict::Deny => "denied",
            };
            let comment = if r.comment.is_empty() {
                String::new()
            } else {
                format!(": {}", quoted(&r.comment))
            };
            format!(
                "{} {verb} at {}{comment}",
                escape(r.approver.as_str()),
                hm(r.at)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The grant's facts every message about it shows.
fn facts(grant: &Grant, links: &Links) -> Value {
    json!({"type": "section", "fields": [
        {"type": "mrkdwn", "text": format!("*Ticket*\n{}", links.ticket(grant))},
        {"type": "mrkdwn", "text": format!("*Window*\n{} – {}", hm(grant.starts_at), hm(grant.expires_at))},
        {"type": "mrkdwn", "text": format!("*Requested by*\n{} (via {})", escape(&grant.requested_by), escape(&grant.origin))},
        {"type": "mrkdwn", "text": format!("*Justification*\n{}", quoted(grant.justification.as_str()))},
    ]})
}

fn clauses(grant: &Grant) -> Option<Value> {
    let lines: Vec<String> = grant
        .decision
        .as_ref()?
        .reasons
        .iter()
        .map(|r| {
            let mark = if r.allowed { "✓" } else { "✗" };
            format!("{mark} `{}` {}", escape(&r.clause), escape(&r.message))
        })
        .collect();
    (!lines.is_empty()).then(|| context(&lines.join("\n")))
}

/// Approve and Deny (or, with `confirm_in_browser`, one link to the page),
/// and always the page.
fn decide_buttons(grant: &Grant, links: &Links) -> Value {
    let page = links.grant(grant);
    let elements = if links.confirm_in_browser {
        vec![link_button("Approve or deny in jit-broker", "open", &page)]
    } else {
        let id = grant.id.to_string();
        vec![
            button("Approve", APPROVE, &id, Some("primary")),
            button("Deny", DENY, &id, Some("danger")),
            link_button("Open in jit-broker", "open", &page),
        ]
    };
    json!({"type": "actions", "block_id": "decide", "elements": elements})
}

/// A request for approval, as posted and as updated after each answer.
pub fn request(grant: &Grant, reviews: &[Review], needed: u8, links: &Links) -> (String, Value) {
    let (role, user) = (escape(grant.role.as_str()), escape(grant.user.as_str()));
    let approvals = reviews
        .iter()
        .filter(|r| r.verdict == Verdict::Approve)
        .count();
    let headline = match grant.state {
        GrantState::PendingApproval => {
            format!("*Approval needed:* `{role}` for {user} ({approvals} of {needed} approvals)")
        }
        GrantState::Denied => format!("*Denied:* `{role}` for {user}"),
        GrantState::Cancelled => {
            format!("*No longer waiting:* `{role}` for {user} (lapsed or cancelled)")
        }
        state => format!("*Approved:* `{role}` for {user} (the grant is {state})"),
    };
    let text = headline.replace(['*', '`'], "");
    let mut blocks = vec![section(&headline), facts(grant, links)];
    if let Some(c) = clauses(grant) {
        blocks.push(c);
    }
    if !reviews.is_empty() {
        blocks.push(section(&answers(reviews)));
    }
    if grant.state == GrantState::PendingApproval {
        blocks.push(decide_buttons(grant, links));
    } else {
        blocks.push(json!({"type": "actions", "block_id": "open", "elements": [
            link_button("Open in jit-broker", "open", &links.grant(grant))]}));
    }
    (text, Value::Array(blocks))
}

/// What an extension request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub requested_by: String,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// `pending`, `approved` or `denied`.
    pub state: String,
}

/// An extension waiting for approval, as posted and as updated.
pub fn extension(
    grant: &Grant,
    ext: &Extension,
    reviews: &[Review],
    needed: u8,
    links: &Links,
) -> (String, Value) {
    let (role, user) = (escape(grant.role.as_str()), escape(grant.user.as_str()));
    let approvals = reviews
        .iter()
        .filter(|r| r.verdict == Verdict::Approve)
        .count();
    let headline = match ext.state.as_str() {
        "pending" => format!(
            "*Extension needed:* `{role}` for {user} until {} (now ends {}; {approvals} of {needed} approvals)",
            hm(ext.until),
            hm(ext.from)
        ),
        state => format!(
            "*Extension {state}:* `{role}` for {user} until {}",
            hm(ext.until)
        ),
    };
    let text = headline.replace(['*', '`'], "");
    let mut blocks = vec![section(&headline), facts(grant, links)];
    if !reviews.is_empty() {
        blocks.push(section(&answers(reviews)));
    }
    if ext.state == "pending" {
        blocks.push(decide_buttons(grant, links));
    }
    (text, Value::Array(blocks))
}

/// The requester's direct message with an outcome (`kind` the audit event).
pub fn outcome(
    grant: &Grant,
    kind: &str,
    by: &str,
    comment: &str,
    links: &Links,
) -> (String, Value) {
    let role = escape(grant.role.as_str());
    let comment = if comment.is_empty() {
        String::new()
    } else {
        format!(": {}", quoted(comment))
    };
    let what = match kind {
        "grant_approved" => format!(
            "Your request for `{role}` was approved by {}. It is active from {} to {}.",
            escape(by),
            hm(grant.starts_at),
            hm(grant.expires_at)
        ),
        "grant_denied" => format!(
            "Your request for `{role}` was denied by {}{comment}.",
            escape(by)
        ),
        "extension_approved" => format!(
            "Your extension of `{role}` was approved by {}: it now ends {}.",
            escape(by),
            hm(grant.expires_at)
        ),
        "extension_denied" => format!(
            "Your extension of `{role}` was denied by {}{comment}; it still ends {}.",
            escape(by),
            hm(grant.expires_at)
        ),
        _ => format!("Your request for `{role}` is no longer waiting (lapsed or cancelled)."),
    };
    let text = what.replace('`', "");
    let blocks = json!([section(&what), {"type": "actions", "block_id": "open", "elements": [
        link_button("Open in jit-broker", "open", &links.grant(grant))]}]);
    (text, blocks)
}

/// The holder's warning before the end, with Extend and Drop; `done` says
/// what became of it (then no buttons).
pub fn nudge(grant: &Grant, links: &Links, done: Option<&str>) -> (String, Value) {
    let role = escape(grant.role.as_str());
    let headline = format!(
        "Your `{role}` ends at {} ({}).",
        hm(grant.expires_at),
        links.ticket(grant)
    );
    let text = headline.replace('`', "");
    let mut blocks = vec![section(&headline)];
    match done {
        Some(done) => blocks.push(context(&escape(done))),
        None => {
            let id = grant.id.to_string();
            blocks.push(json!({"type": "actions", "block_id": "nudge", "elements": [
                button(&format!("Extend {}", jit_app::chat::CHAT_EXTENSION), EXTEND, &id, Some("primary")),
                button("Drop now", DROP, &id, Some("danger")),
                link_button("Open in jit-broker", "open", &links.grant(grant)),
            ]}));
        }
    }
    (text, Value::Array(blocks))
}

/// The modal that asks why a request is denied.
pub fn deny_modal(grant: &Grant) -> Value {
    json!({
        "type": "modal",
        "callback_id": DENY_REASON,
        "private_metadata": grant.id.to_string(),
        "title": {"type": "plain_text", "text": "Deny the request"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            section(&format!("`{}` for {}", escape(grant.role.as_str()), escape(grant.user.as_str()))),
            {"type": "input", "block_id": REASON, "label": {"type": "plain_text", "text": "Why"},
             "element": {"type": "plain_text_input", "action_id": REASON, "multiline": true, "max_length": 2000}},
        ],
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test
    use super::*;
    use jit_domain::{Justification, RoleName, TicketId, UserName, ValidGrantRequest};

    fn grant(state: GrantState) -> Grant {
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let request = ValidGrantRequest {
            user: UserName::parse("eng@example.com").unwrap(),
            role: RoleName::parse("Recording Admin").unwrap(),
            ticket: Some(TicketId::parse("CHG0012345").unwrap()),
            justification: Justification::parse("export <calls> & recordings").unwrap(),
            starts_at: t0,
            expires_at: t0 + chrono::TimeDelta::minutes(30),
        };
        Grant {
            state,
            ..Grant::from_request(request, "api-key", t0)
        }
    }

    fn links(confirm_in_browser: bool) -> Links {
        Links {
            public_url: "https://jit.bank.example/".into(),
            servicenow_url: Some("https://acme.service-now.com".into()),
            confirm_in_browser,
        }
    }

    fn action_ids(blocks: &Value) -> Vec<String> {
        blocks
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["action_id"].as_str().map(str::to_owned))
            .collect()
    }

    #[test]
    fn a_pending_request_has_approve_deny_and_the_page_and_escapes_what_people_typed() {
        let g = grant(GrantState::PendingApproval);
        let (text, blocks) = request(&g, &[], 1, &links(false));
        assert!(text.starts_with("Approval needed: Recording Admin for eng@example.com"));
        assert_eq!(action_ids(&blocks), ["approve", "deny", "open"]);
        let shown = blocks.to_string();
        assert!(
            shown.contains("`export &lt;calls&gt; &amp; recordings`"),
            "{shown}"
        );
        assert!(
            shown.contains("https://acme.service-now.com/nav_to.do?uri=change_request.do?sysparm_query=number=CHG0012345|CHG0012345"),
            "{shown}"
        );
        assert!(shown.contains(&format!("https://jit.bank.example/grants/{}", g.id)));
        // The blocks are Block Kit as slack-morphism models it.
        serde_json::from_value::<Vec<slack_morphism::prelude::SlackBlock>>(blocks).unwrap();
    }

    #[test]
    fn confirm_in_browser_leaves_only_a_link_and_a_decided_request_no_buttons() {
        let (_, blocks) = request(&grant(GrantState::PendingApproval), &[], 1, &links(true));
        assert_eq!(action_ids(&blocks), ["open"]);
        let url = blocks.as_array().unwrap().last().unwrap()["elements"][0]["url"].clone();
        assert!(url.as_str().unwrap().contains("/grants/"), "{url}");
        let review = Review {
            approver: UserName::parse("lead@example.com").unwrap(),
            verdict: Verdict::Approve,
            comment: String::new(),
            at: DateTime::<Utc>::from_timestamp(1_800_000_060, 0).unwrap(),
        };
        let (text, blocks) = request(&grant(GrantState::Active), &[review], 1, &links(false));
        assert!(text.starts_with("Approved:"), "{text}");
        assert_eq!(action_ids(&blocks), ["open"]);
        assert!(blocks.to_string().contains("lead@example.com approved at"));
    }

    #[test]
    fn the_warning_offers_extend_and_drop_until_it_is_answered() {
        let g = grant(GrantState::Active);
        let (_, blocks) = nudge(&g, &links(false), None);
        assert_eq!(action_ids(&blocks), ["extend", "drop", "open"]);
        let (_, blocks) = nudge(&g, &links(false), Some("Dropped at 10:20 UTC"));
        assert!(action_ids(&blocks).is_empty());
        let modal = deny_modal(&g);
        assert_eq!(modal["private_metadata"], g.id.to_string());
        serde_json::from_value::<slack_morphism::prelude::SlackView>(modal).unwrap();
    }

    #[test]
    fn what_people_typed_cannot_take_the_messages_layout() {
        let spoof =
            "ok\n\n*APPROVED by the SOC* _trust_ ~this~ <https://evil.example|the policy> `x`";
        let q = quoted(spoof);
        assert!(!q.contains('\n'), "one line: {q}");
        assert!(q.starts_with('`') && q.ends_with('`'), "a code span: {q}");
        assert_eq!(q.matches('`').count(), 2, "no way out of the span: {q}");
        assert!(
            q.contains("&lt;https://evil.example|the policy&gt;"),
            "no link: {q}"
        );
        assert_eq!(quoted("  \n "), "");
    }
}
