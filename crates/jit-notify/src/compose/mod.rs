//! What one audit event says to people: one function per kind of notice,
//! each giving the headline, the summary and what the broker did.

use std::time::Duration;

use jit_app::{AuditEvent, Notice};
use jit_domain::{FindingOutcome, Severity, severity};

mod activity;
mod soc;
use serde::Serialize;
use serde_json::Value;

/// What one email says, before layout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Composed {
    /// The recipients' key: the event kind, or `emergency_grant`.
    pub kind: String,
    pub severity: Severity,
    pub alert: bool,
    pub headline: String,
    pub summary: String,
    pub facts: Vec<(String, String)>,
    pub action: String,
    pub findings: Vec<jit_app::FindingRecord>,
    pub seq: i64,
    pub at: String,
    /// People the notice is for besides the configured lists: a role's
    /// approvers (a request waits for them), a requester (the outcome).
    pub people: Vec<String>,
}

/// Notices for people rather than the SOC: sent to them (and to the kind's
/// own list, if configured), never to the SOC's default list.
pub const PERSONAL_KINDS: [&str; 2] = ["approval_requested", "request_outcome"];

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

/// " Comment: …" when an approver left one.
fn comment_suffix(d: &Value) -> String {
    d["comment"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(|c| format!(" Comment: {c}"))
        .unwrap_or_default()
}

/// The approvers a request names (users; groups hear through
/// `[notify.recipients] approval_requested`).
fn approvers(d: &Value) -> Vec<String> {
    d["approvers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

/// The words of one notice, before the facts and the people are added.
struct Words {
    kind: String,
    alert: bool,
    headline: String,
    summary: String,
    action: String,
}

fn words(
    kind: &'static str,
    alert: bool,
    headline: String,
    summary: String,
    action: impl Into<String>,
) -> Words {
    Words {
        kind: kind.to_owned(),
        alert,
        headline,
        summary,
        action: action.into(),
    }
}

/// One event and the names every notice uses.
struct Event<'a> {
    notice: &'a Notice,
    e: &'a AuditEvent,
    d: &'a Value,
    user: String,
    role: String,
    ticket: String,
    at: String,
}

/// The words for one notice. Pure: the tests read them without SMTP.
pub fn compose(notice: &Notice, slo: Duration) -> Composed {
    let ev = Event::new(notice);
    let mut facts = ev.grant_facts();
    let mut people = Vec::new();
    let d = ev.d;
    let w = match ev.e.kind.as_str() {
        "grant_requested" if d["state"] == "pending_approval" => {
            people = approvers(d);
            ev.approval_requested()
        }
        "extension_requested" => {
            people = approvers(d);
            ev.extension_requested()
        }
        // An emergency grant made longer is the SOC's business too.
        "grant_extended" | "extension_approved" if d["emergency"] == true => {
            if ev.e.kind == "extension_approved" {
                people.push(text(&d["requested_by"]));
            }
            ev.emergency_extension()
        }
        "extension_approved" | "extension_denied" => {
            people.push(text(&d["requested_by"]));
            ev.extension_outcome()
        }
        "grant_approved" | "grant_denied" | "grant_cancelled" => {
            people.push(ev.user.clone());
            ev.request_outcome()
        }
        "grant_activated" => ev.grant_activated(),
        "grant_ended" => ev.grant_ended(slo),
        "converge_failed" => ev.converge_failed(),
        "revocation_overdue" => ev.revocation_overdue(),
        "grant_requested" => ev.emergency_grant(),
        "conflicting_writer_detected" => ev.conflicting_writer(&mut facts),
        "user_names_collided" => ev.user_names_collided(&mut facts),
        "reconcile_run" => ev.reconcile_run(&mut facts),
        "incident_opened" | "incident_resolved" => ev.incident(&mut facts),
        "break_glass_login" => ev.break_glass_login(&mut facts),
        "soc_digest" => ev.soc_digest(&mut facts),
        "activity_collected" | "activity_amended" | "break_glass_activity" => {
            ev.activity(&mut facts)
        }
        _ => ev.other(),
    };
    Composed {
        kind: w.kind,
        severity: severity(&ev.e.kind, d),
        alert: w.alert,
        headline: w.headline,
        summary: w.summary,
        facts,
        action: w.action,
        // The run's strips and failures; what it only reported is an incident.
        findings: notice
            .findings
            .iter()
            .filter(|f| f.action != FindingOutcome::Reported)
            .cloned()
            .collect(),
        seq: ev.e.seq,
        at: ev.at,
        people,
    }
}

impl<'a> Event<'a> {
    fn new(notice: &'a Notice) -> Self {
        let e = &notice.event;
        let d = &e.data;
        let grant = notice.grant.as_ref();
        Self {
            notice,
            e,
            d,
            user: grant.map_or_else(|| text(&d["user"]), |g| g.user.to_string()),
            role: grant.map_or_else(|| text(&d["role"]), |g| g.role.to_string()),
            ticket: e.ticket.clone().unwrap_or_else(|| "none".into()),
            at: e.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        }
    }

    /// Who, which role, which ticket; and the grant's window and origin.
    fn grant_facts(&self) -> Vec<(String, String)> {
        let mut facts = vec![
            ("User".to_owned(), self.user.clone()),
            ("Role".to_owned(), self.role.clone()),
            ("Ticket".to_owned(), self.ticket.clone()),
        ];
        if let Some(g) = &self.notice.grant {
            facts.push((
                "Window".into(),
                format!(
                    "{} – {} (UTC)",
                    g.starts_at.format("%Y-%m-%d %H:%M:%S"),
                    g.expires_at.format("%Y-%m-%d %H:%M:%S")
                ),
            ));
            facts.push((
                "Requested by".into(),
                format!("{} (via {})", g.requested_by, g.origin),
            ));
            facts.push(("Justification".into(), g.justification.to_string()));
            facts.push(("Grant".into(), g.id.to_string()));
        }
        facts
    }

    fn approval_requested(&self) -> Words {
        let (d, user, role, ticket) = (self.d, &self.user, &self.role, &self.ticket);
        words(
            "approval_requested",
            false,
            format!("Approval needed: {role} for {user} ({ticket})"),
            format!(
                "{user} asks for {role} under {ticket}, from {} to {}, and the policy needs your approval.",
                text(&d["starts_at"]),
                text(&d["expires_at"])
            ),
            "Nothing happens until enough approvers agree: approve or deny it on the broker's Approvals page. Unanswered, it lapses.",
        )
    }

    fn extension_requested(&self) -> Words {
        let (d, user, role, ticket) = (self.d, &self.user, &self.role, &self.ticket);
        words(
            "approval_requested",
            false,
            format!("Approval needed: extend {role} for {user} ({ticket})"),
            format!(
                "{} asks to extend {user}'s {role} under {ticket} from {} to {}; the approved window ends at {}.",
                self.e.actor,
                text(&d["from"]),
                text(&d["until"]),
                text(&d["from"])
            ),
            "The grant keeps its approved end until enough approvers agree: approve or deny it on the broker's Approvals page. Unanswered, it lapses.",
        )
    }

    fn extension_outcome(&self) -> Words {
        let (d, user, role, ticket, at) = (self.d, &self.user, &self.role, &self.ticket, &self.at);
        let outcome = if self.e.kind == "extension_approved" {
            "approved"
        } else {
            "denied"
        };
        let comment = comment_suffix(d);
        words(
            "request_outcome",
            false,
            format!("Your extension of {role} was {outcome}"),
            format!(
                "The extension of {user}'s {role} ({ticket}) to {} was {outcome} by {} at {at}.{comment}",
                text(&d["until"]),
                self.e.actor
            ),
            if outcome == "approved" {
                "The grant now ends at the new time; the role is removed then."
            } else {
                "The grant keeps its approved end."
            },
        )
    }

    fn request_outcome(&self) -> Words {
        let (role, ticket, at) = (&self.role, &self.ticket, &self.at);
        let outcome = match self.e.kind.as_str() {
            "grant_approved" => "approved",
            "grant_denied" => "denied",
            _ => "lapsed without approval",
        };
        let by = match self.e.kind.as_str() {
            "grant_cancelled" => String::new(),
            _ => format!(" by {}", self.e.actor),
        };
        let comment = comment_suffix(self.d);
        words(
            "request_outcome",
            false,
            format!("Your request for {role} was {outcome}"),
            format!("Your request for {role} ({ticket}) was {outcome}{by} at {at}.{comment}"),
            if outcome == "approved" {
                "Adds the role when the grant's window starts and removes it when it ends; see My access."
            } else {
                "Nothing was granted."
            },
        )
    }

    fn grant_activated(&self) -> Words {
        let (user, role, ticket, at) = (&self.user, &self.role, &self.ticket, &self.at);
        words(
            "grant_activated",
            false,
            format!("{role} granted to {user} ({ticket})"),
            format!("{user}'s grant of {role} became active at {at}."),
            "Adds the role through SCIM, verifies it by reading the user back, and removes it at expiry; a failure is reported in a separate alert.",
        )
    }

    fn grant_ended(&self, slo: Duration) -> Words {
        let (d, user, role, at) = (self.d, &self.user, &self.role, &self.at);
        let reason = text(&d["reason"]);
        let note = d["note"]
            .as_str()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        words(
            "grant_ended",
            false,
            format!("{role} ended for {user}: {reason}"),
            format!("{user}'s grant of {role} ended at {at}: {reason}{note}."),
            format!(
                "Removes the role through SCIM and verifies the removal by reading the user back; if it is still present {} s after the end, an OVERDUE alert follows.",
                slo.as_secs()
            ),
        )
    }

    fn converge_failed(&self) -> Words {
        let (user, role, at) = (&self.user, &self.role, &self.at);
        words(
            "converge_failed",
            true,
            format!("FAILED to apply {role} for {user}"),
            format!(
                "The directory refused a change for {user} / {role} at {at}: {}.",
                text(&self.d["error"])
            ),
            "Stopped retrying (the error is permanent) and recorded it on the grant. Check the user in Genesys Cloud now: if the grant has ended, the role may still be present.",
        )
    }

    fn revocation_overdue(&self) -> Words {
        let d = self.d;
        words(
            "revocation_overdue",
            true,
            format!("OVERDUE: {} still holds {}", self.user, self.role),
            format!(
                "The grant ended at {} ({}), but {} s later the role has not been removed (SLO {} s). Last error: {}.",
                text(&d["ended_at"]),
                text(&d["end_reason"]),
                text(&d["overdue_secs"]),
                text(&d["slo_secs"]),
                text(&d["error"])
            ),
            "Keeps retrying the removal with backoff. Remove the role by hand in Genesys Cloud if the target stays down.",
        )
    }

    fn emergency_grant(&self) -> Words {
        let (user, role, ticket, at) = (&self.user, &self.role, &self.ticket, &self.at);
        words(
            "emergency_grant",
            true,
            format!("EMERGENCY grant: {role} for {user} on {ticket}, before approval"),
            format!(
                "{user} was granted {role} at {at} under the policy's emergency-change rule: {ticket} is not approved yet.",
            ),
            "Applies the grant for at most the emergency duration and ends it when the change closes, is cancelled or is rejected.",
        )
    }

    fn user_names_collided(&self, facts: &mut Vec<(String, String)>) -> Words {
        let collisions = self.d["collisions"].as_array().cloned().unwrap_or_default();
        facts.clear();
        for c in &collisions {
            facts.push((
                text(&c["table"]),
                format!("{} ({})", text(&c["names"]), text(&c["shared"])),
            ));
        }
        words(
            "user_names_collided",
            true,
            format!(
                "{} record(s) of one person under two spellings were made one",
                collisions.len()
            ),
            "User names now have one form (compared without case). Before, rows that differ only by case counted as different people: an approver answering twice, say. The earliest of each was kept; the spellings are listed.".into(),
            "Check each: an answer given twice by one approver may have approved a request that needed two people.",
        )
    }

    fn emergency_extension(&self) -> Words {
        let (d, user, role, ticket, at) = (self.d, &self.user, &self.role, &self.ticket, &self.at);
        words(
            "emergency_grant",
            true,
            format!("EMERGENCY grant extended: {role} for {user} on {ticket}, before approval"),
            format!(
                "{}'s emergency grant of {role} was extended from {} to {} at {at} (by {}); {ticket} is not approved yet.",
                user,
                text(&d["from"]),
                text(&d["until"]),
                self.e.actor
            ),
            "Keeps the whole emergency window within the emergency duration until the change is approved, and ends it when the change closes, is cancelled or is rejected.",
        )
    }

    fn other(&self) -> Words {
        let other = self.e.kind.as_str();
        Words {
            kind: other.to_owned(),
            alert: false,
            headline: format!("{other}: {} / {}", self.user, self.role),
            summary: format!("Audit event {other} at {}.", self.at),
            action: "Recorded it in the audit log.".into(),
        }
    }
}
