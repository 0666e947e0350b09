//! What was done with a privilege: the summary of a pass over the Genesys
//! Cloud audit trail (a grant's window, or a break-glass account's actions
//! since its login).

use serde_json::Value;

use super::{Event, Words, text, words};

impl Event<'_> {
    pub(super) fn activity(&self, facts: &mut Vec<(String, String)>) -> Words {
        let (d, user, role) = (self.d, &self.user, &self.role);
        let total = d["total"].as_u64().unwrap_or(0);
        let new = d["new"].as_u64().unwrap_or(0);
        let window = format!(
            "{} – {}",
            text(&d["window"]["from"]),
            text(&d["window"]["to"])
        );
        let counts: Vec<String> = d["summary"]["counts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{} {} × {}", text(&c[0]), text(&c[1]), text(&c[2])))
            .collect();
        facts.push(("Window".into(), window.clone()));
        facts.push((
            "Pass".into(),
            format!("{} ({} new, {total} in all)", text(&d["pass_name"]), new),
        ));
        facts.push((
            "By service and action".into(),
            none_if_empty(counts.join("; ")),
        ));
        let first: Vec<String> = d["summary"]["first"]
            .as_array()
            .into_iter()
            .flatten()
            .map(event_line)
            .collect();
        facts.push(("First events".into(), none_if_empty(first.join("\n"))));
        facts.push(("Digest (SHA-256)".into(), text(&d["digest"])));
        let seen = "Events are Genesys Cloud's audit trail of the user (the broker's own grant changes left out); an action can reach the trail late, so the trail is read again later and you hear again only if it found more.";
        match self.e.kind.as_str() {
            "break_glass_activity" => words(
                "break_glass_activity",
                true,
                format!(
                    "Break-glass follow-up: {user} did {total} audited actions since the login"
                ),
                format!(
                    "What the break-glass account {user} did from its login ({window}), {}: {total} audited actions.",
                    text(&d["pass_name"])
                ),
                format!("Check each action against the emergency it was used for. {seen}"),
            ),
            "activity_amended" => words(
                "activity_amended",
                false,
                format!("{role} for {user}: {new} more actions found late"),
                format!(
                    "A later read of the audit trail for {user}'s grant of {role} ({window}) found {new} actions the first read had not; {total} in all now."
                ),
                format!("Recorded the amended set and its digest in the audit chain. {seen}"),
            ),
            _ => words(
                "activity_collected",
                false,
                format!("{role} for {user}: what was done ({total} actions, preliminary)"),
                format!(
                    "While {user} held {role} ({window}), Genesys Cloud audited {total} actions by them. This is preliminary."
                ),
                format!("Recorded the set and its digest in the audit chain. {seen}"),
            ),
        }
    }
}

fn none_if_empty(s: String) -> String {
    if s.is_empty() { "none".into() } else { s }
}

/// "2026-12-01T10:00:00Z Routing Queue `Billing` Update".
fn event_line(e: &Value) -> String {
    format!(
        "{} {} {} `{}` {}",
        text(&e["at"]),
        text(&e["service"]),
        text(&e["entity_type"]),
        text(&e["entity_name"]),
        text(&e["action"])
    )
}
