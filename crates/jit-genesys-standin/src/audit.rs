//! Genesys Cloud's audit trail, in memory: what each user and OAuth client
//! did, queryable synchronously over the recent past (realtime) or by an
//! asynchronous query paged by cursor. An action becomes queryable only
//! after a delay Genesys does not document: each record carries the moment
//! it becomes visible, so late arrivals can be tested.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

/// How far back the realtime query reaches ("about 14 days for some services").
pub const REALTIME_REACH: TimeDelta = TimeDelta::days(14);
/// The longest interval an asynchronous query takes.
pub const ASYNC_MAX_INTERVAL: TimeDelta = TimeDelta::days(30);

/// One action to put in the trail (tests, the sandbox): who did what to
/// which entity, when, and how long before it can be queried.
#[derive(Debug, Clone)]
pub struct Action {
    /// The user id who acted (`None`: an OAuth client on its own).
    pub user: Option<String>,
    /// The OAuth client id it went through.
    pub client: String,
    pub service: String,
    pub entity_type: String,
    pub entity_id: String,
    pub entity_name: String,
    pub action: String,
    /// When it happened (`None`: now).
    pub at: Option<DateTime<Utc>>,
    /// How long after `at` it becomes queryable.
    pub late_by: TimeDelta,
    /// `(property, old values, new values)`.
    pub changes: Vec<(String, Vec<String>, Vec<String>)>,
}

impl Action {
    /// `user` did `action` to an entity through the Admin UI, now.
    pub fn by(
        user: &str,
        service: &str,
        entity_type: &str,
        entity_name: &str,
        action: &str,
    ) -> Self {
        Self {
            user: Some(user.to_owned()),
            client: crate::BY_HAND.to_owned(),
            service: service.to_owned(),
            entity_type: entity_type.to_owned(),
            entity_id: format!("{}-{}", entity_type.to_lowercase(), uuid::Uuid::new_v4()),
            entity_name: entity_name.to_owned(),
            action: action.to_owned(),
            at: None,
            late_by: TimeDelta::zero(),
            changes: Vec::new(),
        }
    }

    /// The same action, queryable only `by` after it happened.
    pub fn late_by(mut self, by: TimeDelta) -> Self {
        self.late_by = by;
        self
    }
}

/// A record in the trail: the event as the API answers it, and what the
/// filters look at.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub event: Value,
    pub at: DateTime<Utc>,
    pub visible_at: DateTime<Utc>,
    pub user: Option<String>,
    pub client: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
}

/// A filter of a query: `property` is one of the documented names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    UserId(String),
    ClientId(String),
    Action(String),
    EntityType(String),
    EntityId(String),
}

impl Filter {
    /// Parses `{"property", "value"}`; `Err` names what is wrong.
    pub fn parse(v: &Value) -> Result<Self, String> {
        let property = v["property"]
            .as_str()
            .ok_or("filters[].property is required")?;
        let value = v["value"]
            .as_str()
            .ok_or("filters[].value is required")?
            .to_owned();
        Ok(match property {
            "UserId" => Self::UserId(value),
            "ClientId" => Self::ClientId(value),
            "Action" => Self::Action(value),
            "EntityType" => Self::EntityType(value),
            "EntityId" => Self::EntityId(value),
            other => return Err(format!("unknown filter property {other}")),
        })
    }

    fn matches(&self, r: &Record) -> bool {
        match self {
            Self::UserId(v) => r.user.as_deref() == Some(v),
            Self::ClientId(v) => &r.client == v,
            Self::Action(v) => r.action.eq_ignore_ascii_case(v),
            Self::EntityType(v) => r.entity_type.eq_ignore_ascii_case(v),
            Self::EntityId(v) => &r.entity_id == v,
        }
    }
}

/// What a query asks: the interval and the filters (all must match).
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub filters: Vec<Filter>,
}

impl Query {
    /// Parses a query body (`interval`, `filters`); `Err` is the 400's message.
    pub fn parse(body: &Value) -> Result<Self, String> {
        let interval = body["interval"]
            .as_str()
            .ok_or("interval is required (\"<start>/<end>\")")?;
        let (from, to) = interval
            .split_once('/')
            .ok_or("interval must be \"<start>/<end>\"")?;
        let parse = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| format!("interval: {s} is not an ISO-8601 date-time"))
        };
        let (from, to) = (parse(from)?, parse(to)?);
        if to <= from {
            return Err("interval must end after it starts".into());
        }
        let filters = match &body["filters"] {
            Value::Null => Vec::new(),
            Value::Array(items) => items.iter().map(Filter::parse).collect::<Result<_, _>>()?,
            _ => return Err("filters must be an array".into()),
        };
        let has_type = filters.iter().any(|f| matches!(f, Filter::EntityType(_)));
        if filters.iter().any(|f| matches!(f, Filter::Action(_))) && !has_type {
            return Err("an Action filter needs an EntityType filter".into());
        }
        Ok(Self { from, to, filters })
    }
}

/// An asynchronous query: its answer is fixed when it is made, and it
/// reports Running until polled `polls_left` times.
#[derive(Debug)]
pub(crate) struct AsyncQuery {
    pub results: Vec<Value>,
    pub polls_left: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Trail {
    pub records: Vec<Record>,
    pub queries: HashMap<String, AsyncQuery>,
}

impl Trail {
    /// The events visible at `now` that the query matches, oldest first;
    /// `reach` limits how far back (the realtime query's window).
    pub fn matching(&self, q: &Query, now: DateTime<Utc>, reach: Option<TimeDelta>) -> Vec<Value> {
        let oldest = reach.map(|r| now - r);
        let mut found: Vec<&Record> = self
            .records
            .iter()
            .filter(|r| r.visible_at <= now)
            .filter(|r| q.from <= r.at && r.at < q.to)
            .filter(|r| oldest.is_none_or(|o| r.at >= o))
            .filter(|r| q.filters.iter().all(|f| f.matches(r)))
            .collect();
        found.sort_by_key(|r| r.at);
        found.into_iter().map(|r| r.event.clone()).collect()
    }
}

/// The event as the audit API answers it.
pub(crate) fn event_json(
    id: &str,
    action: &Action,
    at: DateTime<Utc>,
    user_name: Option<&str>,
    client_name: &str,
) -> Value {
    let changes: Vec<Value> = action
        .changes
        .iter()
        .map(|(p, old, new)| json!({"property": p, "oldValues": old, "newValues": new}))
        .collect();
    let mut event = json!({
        "id": id,
        "client": {"id": action.client, "name": client_name},
        "remoteIp": ["192.0.2.10"],
        "serviceName": action.service,
        "level": "USER",
        "eventDate": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "action": action.action,
        "entityType": action.entity_type,
        "entity": {"id": action.entity_id, "name": action.entity_name},
        "status": "SUCCESS",
        "propertyChanges": changes,
        "context": {},
    });
    if let Some(user) = &action.user {
        event["user"] = json!({"id": user, "name": user_name.unwrap_or(user)});
    }
    event
}
