//! A grant request as it arrived (from the API's JSON or the page's form),
//! checked against the policy.
//!
//! Every problem is reported at once, each naming its field, its rule and,
//! where a policy clause decided it, that clause.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};

use crate::names::{Invalid, Justification, RoleName, TicketId, UserName};
use crate::policy::{Policy, RolePolicy, format_duration, parse_duration};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub rule: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl FieldError {
    pub fn new(field: &str, rule: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            rule: rule.to_owned(),
            message: message.into(),
            policy: None,
        }
    }

    fn from_invalid(field: &str, e: Invalid) -> Self {
        Self::new(field, e.rule, e.message)
    }

    fn clause(mut self, clause: String) -> Self {
        self.policy = Some(clause);
        self
    }
}

/// A request that passed every rule; its window is final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidGrantRequest {
    pub user: UserName,
    pub role: RoleName,
    /// Absent only for a role whose policy does not require a ticket.
    pub ticket: Option<TicketId>,
    pub justification: Justification,
    pub starts_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One field as a door received it. Only the shape is known here; every
/// rule about its content is checked by the validators of this crate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Given {
    /// Missing, or JSON `null`.
    #[default]
    Absent,
    Text(String),
    /// Present but not a string (a number, a list...): a `type` error.
    NotText,
}

impl Given {
    /// Text that is blank after trimming counts as absent (a form's empty box).
    pub fn text_or_absent(raw: &str) -> Self {
        match raw.trim() {
            "" => Self::Absent,
            t => Self::Text(t.to_owned()),
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }
}

impl<'de> Deserialize<'de> for Given {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Null => Self::Absent,
            serde_json::Value::String(s) => Self::Text(s),
            _ => Self::NotText,
        })
    }
}

/// The grant-request command every door builds: the API by serde from its
/// JSON body, the page from its form. Nothing in it is trusted yet.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GrantRequestForm {
    pub user: Given,
    pub role: Given,
    pub ticket: Given,
    pub duration: Given,
    pub expires_at: Given,
    pub starts_at: Given,
    pub justification: Given,
    /// Keys that are not fields of a request (refused, each by name).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, IgnoredAny>,
}

const FIELDS: &[&str] = &[
    "user",
    "role",
    "ticket",
    "duration",
    "expires_at",
    "starts_at",
    "justification",
];

/// A start this little in the past is clock skew, taken as "now".
const START_SKEW: TimeDelta = TimeDelta::seconds(60);

#[derive(Default)]
struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    fn string<'a>(&mut self, name: &str, given: &'a Given) -> Option<&'a str> {
        match given {
            Given::Absent => None,
            Given::Text(s) => Some(s),
            Given::NotText => {
                self.errors
                    .push(FieldError::new(name, "type", "must be a string"));
                None
            }
        }
    }

    fn required<T>(
        &mut self,
        name: &str,
        given: &Given,
        parse: impl Fn(&str) -> Result<T, Invalid>,
    ) -> Option<T> {
        if given.is_absent() {
            self.errors
                .push(FieldError::new(name, "required", "is required"));
        }
        let raw = self.string(name, given)?;
        parse(raw)
            .map_err(|e| self.errors.push(FieldError::from_invalid(name, e)))
            .ok()
    }

    fn timestamp(&mut self, name: &str, given: &Given) -> Option<DateTime<Utc>> {
        let raw = self.string(name, given)?;
        match DateTime::parse_from_rfc3339(raw) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                self.errors.push(FieldError::new(
                    name,
                    "format",
                    "must be an RFC 3339 timestamp with offset, e.g. 2026-11-23T14:00:00Z",
                ));
                None
            }
        }
    }
}

/// Checks a request against the policy at `now`.
pub fn validate_grant_request(
    form: &GrantRequestForm,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<ValidGrantRequest, Vec<FieldError>> {
    let mut f = Fields::default();
    for key in form.unknown.keys() {
        f.errors.push(FieldError::new(
            key,
            "unknown_field",
            format!(
                "is not a field of a grant request (expected one of: {})",
                FIELDS.join(", ")
            ),
        ));
    }
    let user = f.required("user", &form.user, UserName::parse);
    let role = f.required("role", &form.role, RoleName::parse);
    let ticket = match f.string("ticket", &form.ticket) {
        Some(raw) => TicketId::parse(raw)
            .map_err(|e| f.errors.push(FieldError::from_invalid("ticket", e)))
            .ok()
            .map(Some),
        None => Some(None),
    };
    let justification = f.required("justification", &form.justification, Justification::parse);
    let starts_at = f.timestamp("starts_at", &form.starts_at);
    let expires_at = f.timestamp("expires_at", &form.expires_at);
    let duration = f.string("duration", &form.duration);

    let role_policy = role.as_ref().and_then(|r| {
        privileged_role(policy, r)
            .map_err(|e| f.errors.push(e))
            .ok()
    });
    if let (Some(None), Some(rp)) = (&ticket, role_policy)
        && rp.require_ticket
        && form.ticket.is_absent()
    {
        f.errors.push(
            FieldError::new(
                "ticket",
                "required",
                "is required: cite an approved change ticket",
            )
            .clause(format!("roles.\"{}\".require_ticket", rp.name)),
        );
    }
    let start = f.start(starts_at, policy, now);
    let requested = match (duration, expires_at) {
        (None, None) => role_policy.map(|rp| ("duration", rp.default_duration)),
        given => f.length(given, start, now),
    };
    if let (Some(rp), Some((field, length))) = (role_policy, requested)
        && length > rp.max_duration
    {
        f.errors.push(
            FieldError::new(
                field,
                "max_duration",
                format!(
                    "{} exceeds the maximum of {} for `{}`",
                    format_duration(length),
                    format_duration(rp.max_duration),
                    rp.name
                ),
            )
            .clause(format!("roles.\"{}\".max_duration", rp.name)),
        );
    }

    match (user, role, ticket, justification, start, requested) {
        (
            Some(user),
            Some(role),
            Some(ticket),
            Some(justification),
            Some(starts_at),
            Some((_, length)),
        ) if f.errors.is_empty() => Ok(ValidGrantRequest {
            user,
            role,
            ticket,
            justification,
            starts_at,
            expires_at: starts_at + length,
        }),
        _ => Err(f.errors),
    }
}

/// The rule every door applies to a role it is asked to grant: in the
/// policy's catalogue, and privileged (baseline roles are never touched).
pub fn privileged_role<'p>(
    policy: &'p Policy,
    role: &RoleName,
) -> Result<&'p RolePolicy, FieldError> {
    match policy.role(role) {
        None => Err(FieldError::new(
            "role",
            "known_role",
            format!("`{role}` is not in the policy's role catalogue"),
        )
        .clause("roles".into())),
        Some(rp) if !rp.privileged => Err(FieldError::new(
            "role",
            "privileged_role",
            format!("`{role}` is a baseline role the broker never grants or removes"),
        )
        .clause(format!("roles.\"{role}\".privileged"))),
        Some(rp) => Ok(rp),
    }
}

impl Fields {
    /// When the grant starts: now unless a (near) future start was asked.
    fn start(
        &mut self,
        starts_at: Option<DateTime<Utc>>,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match starts_at {
            Some(s) if s < now - START_SKEW => {
                self.errors.push(FieldError::new(
                    "starts_at",
                    "not_in_past",
                    "must not be in the past",
                ));
                None
            }
            Some(s) if s > now + policy.max_schedule_ahead => {
                self.errors.push(
                    FieldError::new(
                        "starts_at",
                        "max_schedule_ahead",
                        format!(
                            "must be within {} from now",
                            format_duration(policy.max_schedule_ahead)
                        ),
                    )
                    .clause("max_schedule_ahead".into()),
                );
                None
            }
            Some(s) => Some(s.max(now)),
            None => Some(now),
        }
    }

    /// The length asked for by `duration` or `expires_at`, with the field
    /// that asked (a `max_duration` refusal names it).
    fn length(
        &mut self,
        (duration, expires_at): (Option<&str>, Option<DateTime<Utc>>),
        start: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<(&'static str, TimeDelta)> {
        let refused = |f: &mut Self, field: &str, rule: &str, message: String| {
            f.errors.push(FieldError::new(field, rule, message));
            None
        };
        match (duration, expires_at, start) {
            (Some(_), Some(_), _) => refused(
                self,
                "expires_at",
                "exclusive",
                "give either duration or expires_at, not both".into(),
            ),
            (Some(raw), None, _) => match parse_duration(raw) {
                Ok(d) if d >= MIN_GRANT => Some(("duration", d)),
                Ok(d) if d > TimeDelta::zero() => refused(
                    self,
                    "duration",
                    "min_duration",
                    format!("must be at least {}", format_duration(MIN_GRANT)),
                ),
                Ok(_) => refused(
                    self,
                    "duration",
                    "positive",
                    "must be longer than zero".into(),
                ),
                Err(m) => refused(self, "duration", "format", m),
            },
            (None, Some(e), _) if e <= now => {
                refused(self, "expires_at", "in_future", "is in the past".into())
            }
            (None, Some(e), Some(s)) if e <= s => refused(
                self,
                "expires_at",
                "after_starts_at",
                "must be after starts_at".into(),
            ),
            (None, Some(e), Some(s)) if e - s < MIN_GRANT => refused(
                self,
                "expires_at",
                "min_duration",
                format!(
                    "must be at least {} after starts_at",
                    format_duration(MIN_GRANT)
                ),
            ),
            (None, Some(e), Some(s)) => Some(("expires_at", e - s)),
            (None, Some(_), None) | (None, None, _) => None,
        }
    }
}

/// The shortest grant: times are kept to the millisecond, and a grant
/// shorter than this one is no grant at all.
pub const MIN_GRANT: TimeDelta = TimeDelta::seconds(1);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::sample;
    use serde_json::{Value, json};

    /// The API's edge: JSON to the typed form, then the rules.
    fn validate_grant_request(
        body: &Value,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<ValidGrantRequest, Vec<FieldError>> {
        let form: GrantRequestForm = serde_json::from_value(body.clone()).unwrap();
        super::validate_grant_request(&form, policy, now)
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn base() -> Value {
        json!({"user": "eng@example.com", "role": "Master Admin", "ticket": "CHG0012345",
               "duration": "2h", "justification": "Rotate the SIP trunk certificate"})
    }

    fn with(patch: Value) -> Value {
        let mut b = base();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    }

    fn rules(body: Value) -> Vec<(String, String)> {
        validate_grant_request(&body, &sample(), now())
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.rule))
            .collect()
    }

    #[test]
    fn a_good_request() {
        let v = validate_grant_request(&base(), &sample(), now()).unwrap();
        assert_eq!(v.starts_at, now());
        assert_eq!(v.expires_at, now() + TimeDelta::hours(2));
    }

    #[test]
    fn the_role_default_applies_without_duration() {
        let v = validate_grant_request(&with(json!({"duration": null})), &sample(), now()).unwrap();
        assert_eq!(v.expires_at - v.starts_at, TimeDelta::hours(1));
    }

    #[test]
    fn expires_at_sets_the_window() {
        let body = with(
            json!({"duration": null, "starts_at": "2026-11-23T11:00:00Z", "expires_at": "2026-11-23T12:30:00+00:00"}),
        );
        let v = validate_grant_request(&body, &sample(), now()).unwrap();
        assert_eq!(v.expires_at - v.starts_at, TimeDelta::minutes(90));
    }

    #[test]
    fn each_rule_names_its_field() {
        let table: Vec<(Value, Vec<(&str, &str)>)> = vec![
            (
                with(json!({"duration": "5h"})),
                vec![("duration", "max_duration")],
            ),
            (
                with(json!({"duration": "0s"})),
                vec![("duration", "positive")],
            ),
            (
                with(json!({"duration": "1ns"})),
                vec![("duration", "min_duration")],
            ),
            (
                with(
                    json!({"duration": null, "starts_at": "2026-11-23T11:00:00Z", "expires_at": "2026-11-23T11:00:00.0001Z"}),
                ),
                vec![("expires_at", "min_duration")],
            ),
            (
                with(json!({"duration": "soon"})),
                vec![("duration", "format")],
            ),
            (with(json!({"role": "Lord"})), vec![("role", "known_role")]),
            (
                with(json!({"role": "Employee"})),
                vec![("role", "privileged_role")],
            ),
            (
                with(json!({"ticket": "INC123"})),
                vec![("ticket", "format")],
            ),
            (
                with(json!({"justification": null})),
                vec![("justification", "required")],
            ),
            (
                with(json!({"justification": "   "})),
                vec![("justification", "required")],
            ),
            (with(json!({"user": 7})), vec![("user", "type")]),
            (
                with(json!({"duration": null, "expires_at": "2026-11-23T09:00:00Z"})),
                vec![("expires_at", "in_future")],
            ),
            (
                with(json!({"duration": null, "expires_at": "yesterday"})),
                vec![("expires_at", "format")],
            ),
            (
                with(json!({"expires_at": "2026-11-23T11:00:00Z"})),
                vec![("expires_at", "exclusive")],
            ),
            (
                with(json!({"starts_at": "2026-11-23T08:00:00Z"})),
                vec![("starts_at", "not_in_past")],
            ),
            (
                with(json!({"starts_at": "2026-12-23T08:00:00Z"})),
                vec![("starts_at", "max_schedule_ahead")],
            ),
            (
                with(json!({"admin": true})),
                vec![("admin", "unknown_field")],
            ),
            (
                with(
                    json!({"duration": null, "starts_at": "2026-11-23T12:00:00Z", "expires_at": "2026-11-23T11:00:00Z"}),
                ),
                vec![("expires_at", "after_starts_at")],
            ),
            (
                json!({}),
                vec![
                    ("user", "required"),
                    ("role", "required"),
                    ("justification", "required"),
                ],
            ),
            (with(json!({"ticket": null})), vec![("ticket", "required")]),
        ];
        for (body, expected) in table {
            let got = rules(body.clone());
            let expected: Vec<(String, String)> = expected
                .into_iter()
                .map(|(f, r)| (f.to_owned(), r.to_owned()))
                .collect();
            assert_eq!(got, expected, "{body}");
        }
    }

    #[test]
    fn the_denying_clause_is_named() {
        let errs =
            validate_grant_request(&with(json!({"duration": "5h"})), &sample(), now()).unwrap_err();
        assert_eq!(
            errs[0].policy.as_deref(),
            Some("roles.\"Master Admin\".max_duration")
        );
        assert!(
            errs[0].message.contains("5h exceeds the maximum of 4h"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn the_ticket_is_optional_only_where_policy_says_so() {
        let v = validate_grant_request(
            &with(json!({"role": "Recording Admin", "ticket": null, "duration": "1h"})),
            &sample(),
            now(),
        )
        .unwrap();
        assert_eq!(v.ticket, None);
        let errs =
            validate_grant_request(&with(json!({"ticket": null})), &sample(), now()).unwrap_err();
        assert_eq!(
            errs[0].policy.as_deref(),
            Some("roles.\"Master Admin\".require_ticket")
        );
    }

    #[test]
    fn a_small_skew_in_the_past_starts_now() {
        let v = validate_grant_request(
            &with(json!({"starts_at": "2026-11-23T09:59:30Z"})),
            &sample(),
            now(),
        )
        .unwrap();
        assert_eq!(v.starts_at, now());
    }
}
