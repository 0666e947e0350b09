//! A grant request as it arrives (JSON), checked against the policy.
//!
//! Every problem is reported at once, each naming its field, its rule and,
//! where a policy clause decided it, that clause.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::names::{Invalid, Justification, RoleName, TicketId, UserName};
use crate::policy::{Policy, format_duration, parse_duration};

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

struct Fields<'a> {
    body: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn string(&mut self, name: &str) -> Option<&'a str> {
        match self.body.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.errors
                    .push(FieldError::new(name, "type", "must be a string"));
                None
            }
        }
    }

    fn required<T>(&mut self, name: &str, parse: impl Fn(&str) -> Result<T, Invalid>) -> Option<T> {
        match self.string(name) {
            None if self.body.get(name).is_none_or(|v| v.is_null()) => {
                self.errors
                    .push(FieldError::new(name, "required", "is required"));
                None
            }
            None => None,
            Some(raw) => parse(raw)
                .map_err(|e| self.errors.push(FieldError::from_invalid(name, e)))
                .ok(),
        }
    }

    fn timestamp(&mut self, name: &str) -> Option<DateTime<Utc>> {
        let raw = self.string(name)?;
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

/// Checks a JSON body against the policy at `now`.
pub fn validate_grant_request(
    body: &Value,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<ValidGrantRequest, Vec<FieldError>> {
    let Some(body) = body.as_object() else {
        return Err(vec![FieldError::new(
            "",
            "type",
            "the body must be a JSON object",
        )]);
    };
    let mut f = Fields {
        body,
        errors: Vec::new(),
    };
    for key in body.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        f.errors.push(FieldError::new(
            key,
            "unknown_field",
            format!(
                "is not a field of a grant request (expected one of: {})",
                FIELDS.join(", ")
            ),
        ));
    }
    let user = f.required("user", UserName::parse);
    let role = f.required("role", RoleName::parse);
    let ticket = match f.string("ticket") {
        Some(raw) => TicketId::parse(raw)
            .map_err(|e| f.errors.push(FieldError::from_invalid("ticket", e)))
            .ok()
            .map(Some),
        None => Some(None),
    };
    let justification = f.required("justification", Justification::parse);
    let starts_at = f.timestamp("starts_at");
    let expires_at = f.timestamp("expires_at");
    let duration = f.string("duration");

    let role_policy = role.as_ref().and_then(|r| {
        let clause = format!("roles.\"{r}\"");
        match policy.role(r) {
            None => {
                f.errors.push(
                    FieldError::new(
                        "role",
                        "known_role",
                        format!("`{r}` is not in the policy's role catalogue"),
                    )
                    .clause("roles".into()),
                );
                None
            }
            Some(rp) if !rp.privileged => {
                f.errors.push(
                    FieldError::new(
                        "role",
                        "privileged_role",
                        format!("`{r}` is a baseline role the broker never grants or removes"),
                    )
                    .clause(format!("{clause}.privileged")),
                );
                None
            }
            Some(rp) => Some(rp),
        }
    });

    if let (Some(None), Some(rp)) = (&ticket, role_policy)
        && rp.require_ticket
        && body.get("ticket").is_none_or(|v| v.is_null())
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

    let start = match starts_at {
        Some(s) if s < now - START_SKEW => {
            f.errors.push(FieldError::new(
                "starts_at",
                "not_in_past",
                "must not be in the past",
            ));
            None
        }
        Some(s) if s > now + policy.max_schedule_ahead => {
            f.errors.push(
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
    };

    let requested: Option<(&str, TimeDelta)> = match (duration, expires_at, start) {
        (Some(_), Some(_), _) => {
            f.errors.push(FieldError::new(
                "expires_at",
                "exclusive",
                "give either duration or expires_at, not both",
            ));
            None
        }
        (Some(raw), None, _) => match parse_duration(raw) {
            Ok(d) if d > TimeDelta::zero() => Some(("duration", d)),
            Ok(_) => {
                f.errors.push(FieldError::new(
                    "duration",
                    "positive",
                    "must be longer than zero",
                ));
                None
            }
            Err(m) => {
                f.errors.push(FieldError::new("duration", "format", m));
                None
            }
        },
        (None, Some(e), _) if e <= now => {
            f.errors
                .push(FieldError::new("expires_at", "in_future", "is in the past"));
            None
        }
        (None, Some(e), Some(s)) if e <= s => {
            f.errors.push(FieldError::new(
                "expires_at",
                "after_starts_at",
                "must be after starts_at",
            ));
            None
        }
        (None, Some(e), Some(s)) => Some(("expires_at", e - s)),
        (None, None, _) => role_policy.map(|rp| ("duration", rp.default_duration)),
        (None, Some(_), None) => None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::sample;
    use serde_json::json;

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
