//! What was done with a privilege: the target's audit events of a grant's
//! window, the passes that collect them (a preliminary one when the role is
//! removed, final ones later for events that arrive late), and the views
//! of them: grouped for the grant page, summed up for an email, digested for
//! the audit chain.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One event of the target's audit trail (Genesys Cloud's audit API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityEvent {
    /// The target's event id: a pass adds only ids it has not seen.
    pub id: String,
    pub at: DateTime<Utc>,
    pub service: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub entity_name: String,
    pub status: String,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub client_id: Option<String>,
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<PropertyChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyChange {
    pub property: String,
    pub old_values: Vec<String>,
    pub new_values: Vec<String>,
}

/// When the passes of a grant's activity run, after its role was removed:
/// the first (at once) is preliminary; the later ones catch late arrivals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassPlan {
    /// The final passes' delays after the removal, ascending.
    pub finals: Vec<TimeDelta>,
}

impl Default for PassPlan {
    fn default() -> Self {
        Self {
            finals: vec![TimeDelta::minutes(15), TimeDelta::hours(24)],
        }
    }
}

impl PassPlan {
    /// Every pass as (number, due time) for a role removed at `removed_at`:
    /// number 0 is preliminary.
    pub fn schedule(&self, removed_at: DateTime<Utc>) -> Vec<(u32, DateTime<Utc>)> {
        std::iter::once(TimeDelta::zero())
            .chain(self.finals.iter().copied())
            .enumerate()
            .map(|(n, delay)| (u32::try_from(n).unwrap_or(u32::MAX), removed_at + delay))
            .collect()
    }
}

/// Which pass, as records and emails name it.
pub fn pass_name(number: u32) -> String {
    match number {
        0 => "preliminary".into(),
        n => format!("final {n}"),
    }
}

/// What a pass found, against what earlier passes had: how it is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PassOutcome {
    /// The preliminary pass (or a look on demand): the record as it stands.
    Collected,
    /// A later pass found events the earlier ones had not: the record changed.
    Amended,
    /// A later pass found nothing new.
    Confirmed,
}

impl PassOutcome {
    pub fn of(pass: u32, new_events: usize) -> Self {
        match (pass, new_events) {
            (0, _) => Self::Collected,
            (_, 0) => Self::Confirmed,
            _ => Self::Amended,
        }
    }

    /// The audit event kind the pass is recorded as.
    pub fn audit_kind(self) -> &'static str {
        match self {
            Self::Collected => "activity_collected",
            Self::Amended => "activity_amended",
            Self::Confirmed => "activity_confirmed",
        }
    }
}

/// The audit event kind a pass is recorded as: a grant's by its outcome; a
/// break-glass login's follow-up is told the first time, and later only
/// with news.
pub fn pass_kind(pass: u32, new_events: usize, break_glass: bool) -> &'static str {
    match break_glass {
        false => PassOutcome::of(pass, new_events).audit_kind(),
        true if pass == 0 || new_events > 0 => "break_glass_activity",
        true => PassOutcome::Confirmed.audit_kind(),
    }
}

/// A subject's events after a read: those kept before and the new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// What the read found that was not kept yet, once each.
    pub fresh: Vec<ActivityEvent>,
    /// Everything kept, the fresh ones last.
    pub all: Vec<ActivityEvent>,
}

/// Adds what a read `found` to what was `known`, idempotent by event id.
pub fn merge(known: Vec<ActivityEvent>, found: Vec<ActivityEvent>) -> Merged {
    let ids: BTreeSet<String> = known.iter().map(|e| e.id.clone()).collect();
    let fresh = new_events(&ids, found);
    let mut all = known;
    all.extend(fresh.iter().cloned());
    Merged { fresh, all }
}

/// The events of `found` whose ids are not in `known`, once each.
pub fn new_events(known: &BTreeSet<String>, found: Vec<ActivityEvent>) -> Vec<ActivityEvent> {
    let mut seen = known.clone();
    found
        .into_iter()
        .filter(|e| seen.insert(e.id.clone()))
        .collect()
}

/// Keeps what the grantee did, not the broker's own writes (its client's).
pub fn not_by_client(events: Vec<ActivityEvent>, own_client: Option<&str>) -> Vec<ActivityEvent> {
    events
        .into_iter()
        .filter(|e| own_client.is_none() || e.client_id.as_deref() != own_client)
        .collect()
}

/// SHA-256 of the set, in id order, each event in its stored form: the same
/// set gives the same digest whichever pass found which event.
pub fn digest(events: &[ActivityEvent]) -> String {
    let mut sorted: Vec<&ActivityEvent> = events.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut hash = Sha256::new();
    for event in sorted {
        // A struct of strings and dates: serialising cannot fail.
        hash.update(serde_json::to_vec(event).unwrap_or_default());
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())
}

/// Counts by service and action, and the first events: what an email says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActivitySummary {
    pub total: usize,
    /// (service, action, count), most frequent first.
    pub counts: Vec<(String, String, usize)>,
    /// The earliest events, at most [`SUMMARY_FIRST`].
    pub first: Vec<ActivityEvent>,
}

/// How many events an email lists one by one.
pub const SUMMARY_FIRST: usize = 10;

pub fn summary(events: &[ActivityEvent]) -> ActivitySummary {
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in events {
        *counts
            .entry((e.service.clone(), e.action.clone()))
            .or_default() += 1;
    }
    let mut counts: Vec<(String, String, usize)> =
        counts.into_iter().map(|((s, a), n)| (s, a, n)).collect();
    counts.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
    let mut first = events.to_vec();
    first.sort_by_key(|e| e.at);
    first.truncate(SUMMARY_FIRST);
    ActivitySummary {
        total: events.len(),
        counts,
        first,
    }
}

/// Events grouped as the grant page shows them: by service, then entity
/// type, then action; each group in time order.
pub type Grouped = BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<ActivityEvent>>>>;

pub fn grouped(events: &[ActivityEvent]) -> Grouped {
    let mut groups = Grouped::new();
    for e in events {
        groups
            .entry(e.service.clone())
            .or_default()
            .entry(e.entity_type.clone())
            .or_default()
            .entry(e.action.clone())
            .or_default()
            .push(e.clone());
    }
    for by_type in groups.values_mut() {
        for by_action in by_type.values_mut() {
            for list in by_action.values_mut() {
                list.sort_by_key(|e| e.at);
            }
        }
    }
    groups
}

/// The audit event kinds a pass is recorded as (each carries the digest).
pub const PASS_KINDS: [&str; 4] = [
    "activity_collected",
    "activity_amended",
    "activity_confirmed",
    "break_glass_activity",
];

/// The digest the chain last recorded for each subject, from audit events
/// `(kind, data)` in chain order.
pub fn recorded_digests<'a>(
    events: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
) -> BTreeMap<String, String> {
    let mut digests = BTreeMap::new();
    for (kind, data) in events {
        if PASS_KINDS.contains(&kind)
            && let (Some(subject), Some(digest)) =
                (data["subject"].as_str(), data["digest"].as_str())
        {
            digests.insert(subject.to_owned(), digest.to_owned());
        }
    }
    digests
}

/// Subjects whose kept events no longer match the digest the chain last
/// recorded for them (an event added, changed or removed outside a pass).
pub fn digest_mismatches<'a>(
    recorded: &BTreeMap<String, String>,
    kept: impl IntoIterator<Item = (&'a str, &'a [ActivityEvent])>,
) -> Vec<String> {
    let mut kept: BTreeMap<&str, &[ActivityEvent]> = kept.into_iter().collect();
    recorded
        .iter()
        .filter(|(subject, digest_recorded)| {
            digest(kept.remove(subject.as_str()).unwrap_or_default()) != **digest_recorded
        })
        .map(|(subject, _)| subject.clone())
        .collect()
}

/// Who changed a subject's grants so that it holds `role`, as the audit
/// trail of its grants says: the latest event in `events` whose grants went
/// from without the role to with it.
pub fn who_granted<'a>(events: &'a [ActivityEvent], role: &str) -> Option<&'a ActivityEvent> {
    let names = |values: &[String]| values.iter().any(|v| grant_names_role(v, role));
    events
        .iter()
        .filter(|e| {
            e.changes
                .iter()
                .any(|c| names(&c.new_values) && !names(&c.old_values))
        })
        .max_by_key(|e| e.at)
}

/// "Master Admin in All divisions" names the role "Master Admin".
fn grant_names_role(value: &str, role: &str) -> bool {
    value == role
        || value
            .strip_prefix(role)
            .is_some_and(|rest| rest.starts_with(" in "))
}

/// How the other writer is named: "alice@example.com through client Terraform".
pub fn writer_of(event: &ActivityEvent) -> String {
    let who = event
        .user_name
        .clone()
        .or_else(|| event.user_id.clone())
        .unwrap_or_else(|| "no user (the client on its own)".into());
    let client = event
        .client_name
        .clone()
        .or_else(|| event.client_id.clone())
        .unwrap_or_else(|| "an unknown client".into());
    format!("{who} through client {client}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap_or_default()
    }

    fn event(id: &str, minute: i64, service: &str, action: &str) -> ActivityEvent {
        ActivityEvent {
            id: id.into(),
            at: at(minute),
            service: service.into(),
            action: action.into(),
            entity_type: "Queue".into(),
            entity_id: format!("q-{id}"),
            entity_name: format!("Queue {id}"),
            status: "SUCCESS".into(),
            user_id: Some("u-alice".into()),
            user_name: Some("alice@example.com".into()),
            client_id: Some("admin-ui".into()),
            client_name: Some("Admin UI".into()),
            changes: Vec::new(),
        }
    }

    #[test]
    fn passes_run_at_once_then_at_each_final_delay() {
        let plan = PassPlan::default();
        let removed = at(0);
        assert_eq!(
            plan.schedule(removed),
            vec![(0, at(0)), (1, at(15)), (2, at(24 * 60))]
        );
        assert_eq!(pass_name(0), "preliminary");
        assert_eq!(PassOutcome::of(0, 0), PassOutcome::Collected);
        assert_eq!(PassOutcome::of(1, 0), PassOutcome::Confirmed);
        assert_eq!(PassOutcome::of(2, 1), PassOutcome::Amended);
    }

    #[test]
    fn a_break_glass_follow_up_is_told_first_and_then_only_with_news() {
        assert_eq!(pass_kind(0, 0, true), "break_glass_activity");
        assert_eq!(pass_kind(1, 0, true), "activity_confirmed");
        assert_eq!(pass_kind(1, 2, true), "break_glass_activity");
        assert_eq!(pass_kind(0, 0, false), "activity_collected");
        assert_eq!(pass_kind(2, 1, false), "activity_amended");
        let merged = merge(
            vec![event("1", 0, "Routing", "Update")],
            vec![
                event("1", 0, "Routing", "Update"),
                event("2", 1, "Routing", "Delete"),
            ],
        );
        assert_eq!(merged.fresh.len(), 1);
        assert_eq!(merged.all.len(), 2);
    }

    #[test]
    fn the_brokers_own_writes_are_left_out() {
        let mut own = event("1", 0, "Authorization", "Update");
        own.client_id = Some("jit-broker".into());
        let kept = not_by_client(
            vec![own, event("2", 1, "Routing", "Update")],
            Some("jit-broker"),
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].id, "2");
    }

    #[test]
    fn the_summary_counts_by_service_and_action_and_lists_the_first_ten() {
        let events: Vec<ActivityEvent> = (0..12)
            .map(|n| {
                let action = if n % 3 == 0 { "Delete" } else { "Update" };
                event(&format!("{n:02}"), 12 - n, "Routing", action)
            })
            .collect();
        let s = summary(&events);
        assert_eq!(s.total, 12);
        assert_eq!(
            s.counts,
            vec![
                ("Routing".into(), "Update".into(), 8),
                ("Routing".into(), "Delete".into(), 4)
            ]
        );
        assert_eq!(s.first.len(), SUMMARY_FIRST);
        assert_eq!(s.first[0].id, "11", "earliest first");
    }

    #[test]
    fn the_writer_is_the_latest_change_that_added_the_role() {
        let mut by_hand = event("1", 0, "Authorization", "Update");
        by_hand.changes = vec![PropertyChange {
            property: "grants".into(),
            old_values: vec![],
            new_values: vec!["Master Admin in All divisions".into()],
        }];
        let mut unrelated = event("2", 5, "Authorization", "Update");
        unrelated.changes = vec![PropertyChange {
            property: "grants".into(),
            old_values: vec!["Master Admin in All divisions".into()],
            new_values: vec![
                "Master Admin in All divisions".into(),
                "Master Admin Lite in Home".into(),
            ],
        }];
        let events = [by_hand, unrelated];
        assert_eq!(
            who_granted(&events, "Master Admin").map(|e| e.id.as_str()),
            Some("1")
        );
        assert_eq!(
            who_granted(&events, "Master Admin Lite").map(|e| e.id.as_str()),
            Some("2")
        );
        assert_eq!(
            writer_of(&events[0]),
            "alice@example.com through client Admin UI"
        );
    }

    #[test]
    fn a_changed_event_no_longer_matches_the_recorded_digest() {
        let events = vec![
            event("1", 0, "Routing", "Update"),
            event("2", 1, "Routing", "Delete"),
        ];
        let data = serde_json::json!({"subject": "g1", "digest": digest(&events)});
        let recorded = recorded_digests([("activity_collected", &data)]);
        assert!(digest_mismatches(&recorded, [("g1", events.as_slice())]).is_empty());
        let mut tampered = events.clone();
        tampered[1].action = "Update".into();
        assert_eq!(
            digest_mismatches(&recorded, [("g1", tampered.as_slice())]),
            ["g1"]
        );
        assert_eq!(digest_mismatches(&recorded, []), ["g1"], "a set removed");
    }

    proptest! {
        /// Whatever order passes find events in, and however often they
        /// find them again, the set and its digest come out the same.
        #[test]
        fn passes_are_idempotent_and_the_digest_is_the_sets(
            ids in proptest::collection::vec(0u8..20, 0..30),
            split in 0usize..30,
        ) {
            let events: Vec<ActivityEvent> = ids
                .iter()
                .map(|n| event(&n.to_string(), i64::from(*n), "Routing", "Update"))
                .collect();
            let split = split.min(events.len());
            let mut known = BTreeSet::new();
            let mut record = Vec::new();
            for found in [events[..split].to_vec(), events.clone(), events[split..].to_vec()] {
                let fresh = new_events(&known, found);
                known.extend(fresh.iter().map(|e| e.id.clone()));
                record.extend(fresh);
            }
            let unique: BTreeSet<&u8> = ids.iter().collect();
            prop_assert_eq!(record.len(), unique.len());
            let mut reversed = record.clone();
            reversed.reverse();
            prop_assert_eq!(digest(&record), digest(&reversed));
        }
    }
}
