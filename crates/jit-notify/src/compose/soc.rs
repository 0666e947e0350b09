//! The SOC's notices about what sweeps and logins found: conflicting
//! writers, sweep findings, incidents, break-glass use, the daily digest.

use jit_domain::FindingOutcome;
use serde_json::Value;

use super::{Event, Words, text, words};

impl Event<'_> {
    pub(super) fn conflicting_writer(&self, facts: &mut Vec<(String, String)>) -> Words {
        let (user, role) = (&self.user, &self.role);
        let c = &self.d["conflict"];
        let removals: Vec<String> = c["removals"]
            .as_array()
            .map(|r| r.iter().map(text).collect())
            .unwrap_or_default();
        let window = c["window_secs"].as_u64().unwrap_or(0);
        facts.push(("Removals verified".into(), removals.join(", ")));
        facts.push((
            "Came back".into(),
            format!("{} times within {window} s", text(&c["reappearances"])),
        ));
        facts.push(("Next strip".into(), text(&c["next_strip_at"])));
        if let Some(writer) = self.d["granted_by"].as_str() {
            facts.push(("Granted by".into(), writer.to_owned()));
        }
        facts.push(("Run".into(), text(&self.d["run"])));
        words(
            "conflicting_writer",
            true,
            format!("HIGH: another writer keeps re-adding {role} to {user}"),
            format!(
                "{role} came back on {user} {} times within {window} s, each time after the broker had removed it and verified the removal by reading the user back. Something else writes `roles`: the IdP's own Genesys Cloud SCIM app mapping roles, a script, or an admin account.",
                text(&c["reappearances"])
            ),
            "Keeps stripping the role, waiting longer between strips of this pair (doubling up to the configured maximum). Find the writer and stop it; if that system should own the role, mark it `report_only` in the policy. This alert is sent once per pattern, not on every sweep.",
        )
    }

    pub(super) fn reconcile_run(&self, facts: &mut Vec<(String, String)>) -> Words {
        let d = self.d;
        let acted: Vec<&jit_app::FindingRecord> = self
            .notice
            .findings
            .iter()
            .filter(|f| f.action != FindingOutcome::Reported)
            .collect();
        let n = acted.len();
        let stripped = acted
            .iter()
            .filter(|f| f.action == FindingOutcome::Removed)
            .count();
        let headline = match acted.as_slice() {
            [one] => format!(
                "{}: {} held {} ({})",
                one.kind.replace('_', " "),
                one.user,
                one.role,
                one.action.as_str().replace('_', " ")
            ),
            _ => format!("Reconciler: {n} findings, {stripped} roles stripped"),
        };
        *facts = vec![
            ("Run".into(), text(&d["run"])),
            ("Trigger".into(), text(&d["trigger"])),
            ("Dry run".into(), text(&d["dry_run"])),
            ("Users scanned".into(), text(&d["users_scanned"])),
            ("Errors".into(), text(&d["errors"])),
        ];
        words(
            "reconcile_run",
            true,
            headline,
            format!(
                "The directory sweep that ended at {} found privileged roles held without an active grant.",
                self.at
            ),
            if d["dry_run"] == Value::Bool(true) {
                "Nothing: this was a dry run."
            } else {
                "Removed each role marked `removed` through SCIM and verified it by reading the user back; a `deferred` one (a pair that keeps coming back) is stripped by the first sweep after its delay; `reported` ones (break-glass accounts, roles the policy marks report-only) were left in place."
            },
        )
    }

    pub(super) fn incident(&self, facts: &mut Vec<(String, String)>) -> Words {
        let (d, user, role, at) = (self.d, &self.user, &self.role, &self.at);
        let finding = d["kind"].as_str().unwrap_or_default();
        let opened = self.e.kind == "incident_opened";
        *facts = vec![
            ("Who".into(), user.clone()),
            ("Role".into(), role.clone()),
            ("Finding".into(), finding.to_owned()),
            ("Detail".into(), text(&d["detail"])),
            (
                "Sweep".into(),
                format!("{} ({})", text(&d["run"]), text(&d["sweep"])),
            ),
        ];
        if !opened {
            facts.push(("Open since".into(), text(&d["opened_at"])));
        }
        let what = match finding {
            "break_glass_held" => format!("break-glass account {user} holds {role}"),
            "oauth_client_privileged" => format!("{user} holds {role}"),
            "conflicting_writer" => format!("another writer keeps re-adding {role} to {user}"),
            "group_grant" => format!("{user} holds {role} (the policy allows this group)"),
            "directory_disagreement" => {
                format!("SCIM and the Authorization API disagree about {user} and {role}")
            }
            _ => format!("{user} holds {role} (a report-only role)"),
        };
        if opened {
            words(
                "incident_opened",
                false,
                format!("Open: {what}"),
                format!(
                    "A sweep at {at} found that {what}. This is reported, not stripped, and you hear of it once: now, and when a sweep no longer sees it."
                ),
                "Left it in place (break-glass accounts and report-only roles are the policy's exceptions; OAuth clients are integrations). Check it is expected; the daily digest lists it while it lasts.",
            )
        } else {
            words(
                "incident_resolved",
                false,
                format!("Resolved: {what}"),
                format!("The sweep that ended at {at} no longer sees that {what}."),
                "Nothing more: the incident is closed; it opens again if a sweep sees it again.",
            )
        }
    }

    pub(super) fn break_glass_login(&self, facts: &mut Vec<(String, String)>) -> Words {
        let (d, user) = (self.d, &self.user);
        let roles = match &d["roles"] {
            Value::Array(r) => r.iter().map(text).collect::<Vec<_>>().join(", "),
            other => text(other),
        };
        *facts = vec![
            ("Account".into(), user.clone()),
            ("Logged in".into(), text(&d["logged_in_at"])),
            ("Previous login".into(), text(&d["previous_login_at"])),
            ("Holds now".into(), roles.clone()),
        ];
        words(
            "break_glass_login",
            true,
            format!(
                "BREAK-GLASS USED: {user} logged in at {}",
                text(&d["logged_in_at"])
            ),
            format!(
                "The break-glass account {user} logged in at {} and holds {roles}. Break-glass accounts hold privileged roles by design; using one is an emergency or an attack.",
                text(&d["logged_in_at"])
            ),
            "Recorded the login so it is raised once. Reach the account's custodian now and confirm an authorised emergency (an incident or change number). If nobody can, treat it as a compromise: disable the account in Genesys Cloud and rotate its credentials.",
        )
    }

    pub(super) fn soc_digest(&self, facts: &mut Vec<(String, String)>) -> Words {
        let d = self.d;
        let count = |key: &str| d[key].as_array().map_or(0, Vec::len);
        let list = |v: &Value| {
            v.as_array()
                .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        };
        let lines = |key: &str, line: &dyn Fn(&Value) -> String| {
            d[key]
                .as_array()
                .map(|a| a.iter().map(line).collect::<Vec<_>>().join("; "))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "none".into())
        };
        let since = |c: &Value| {
            format!(
                "{} holds {} since {}",
                text(&c["subject"]),
                text(&c["role"]),
                text(&c["since"])
            )
        };
        let pair_since = |c: &Value| {
            format!(
                "{} / {} since {}",
                text(&c["subject"]),
                text(&c["role"]),
                text(&c["since"])
            )
        };
        *facts = vec![
            (
                "Break-glass accounts".into(),
                lines("break_glass", &|b| {
                    format!(
                        "{} holds [{}], last login {}",
                        text(&b["user"]),
                        list(&b["holds"]),
                        text(&b["last_login_at"])
                    )
                }),
            ),
            (
                "Privileged OAuth clients".into(),
                lines("oauth_clients", &since),
            ),
            (
                "Conflicting writers".into(),
                lines("conflicting_writers", &pair_since),
            ),
            (
                "Report-only roles held".into(),
                lines("report_only", &pair_since),
            ),
            (
                "Overdue revocations".into(),
                lines("overdue_revocations", &|o| {
                    format!(
                        "{} still holds {} ({} s past the end)",
                        text(&o["user"]),
                        text(&o["role"]),
                        text(&o["overdue_secs"])
                    )
                }),
            ),
            (
                "Grants since yesterday".into(),
                lines("grants", &|g| {
                    format!(
                        "{} under {}: {}",
                        text(&g["role"]),
                        text(&g["ticket"]),
                        list(&g["grants"])
                    )
                }),
            ),
        ];
        let break_glass_holding = d["break_glass"].as_array().map_or(0, |b| {
            b.iter()
                .filter(|x| x["holds"].as_array().is_some_and(|h| !h.is_empty()))
                .count()
        });
        words(
            "soc_digest",
            false,
            format!(
                "Daily digest: {} open incidents, {} overdue revocations, {} grant groups",
                count("oauth_clients")
                    + count("conflicting_writers")
                    + count("report_only")
                    + break_glass_holding,
                count("overdue_revocations"),
                count("grants"),
            ),
            format!("What is open at {}, and the last day's grants.", self.at),
            "Nothing: this is a summary. Each item was raised once when it opened.",
        )
    }
}
