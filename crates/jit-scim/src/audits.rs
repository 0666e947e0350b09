//! Genesys Cloud's audit trail: what a user did, and who changed a user's
//! grants. Recent windows go to the realtime query (one request a page);
//! older ones, beyond its reach, to the asynchronous query (create, poll,
//! pages by cursor). Events arrive late by an undocumented delay, so the
//! caller reads again later (docs/genesys-cloud.md, "What was done").

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use jit_domain::activity::{ActivityEvent, PropertyChange};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::authorization::Page;
use crate::{ScimAuth, ScimClient, ScimError};

/// The realtime query reaches about 14 days back; older windows (less a
/// margin) go to the asynchronous query.
const REALTIME_REACH: TimeDelta = TimeDelta::days(13);
/// The asynchronous query's longest interval.
const ASYNC_MAX_INTERVAL: TimeDelta = TimeDelta::days(30);
/// Events a page: the realtime query's pages, and the asynchronous
/// results' (documented up to 500).
const REALTIME_PAGE: u64 = 100;
const RESULTS_PAGE: u64 = 500;
/// How often, and how many times, an asynchronous query is polled.
const POLL_EVERY: Duration = Duration::from_millis(500);
const POLLS: u32 = 120;

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct ChangeJson {
    #[serde(default)]
    property: String,
    #[serde(rename = "oldValues", default)]
    old_values: Vec<Value>,
    #[serde(rename = "newValues", default)]
    new_values: Vec<Value>,
}

#[derive(Deserialize)]
struct EventJson {
    id: String,
    #[serde(rename = "eventDate")]
    event_date: DateTime<Utc>,
    #[serde(rename = "serviceName", default)]
    service_name: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(rename = "entityType", default)]
    entity_type: Option<String>,
    #[serde(default)]
    entity: Option<Named>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    user: Option<Named>,
    #[serde(default)]
    client: Option<Named>,
    #[serde(rename = "propertyChanges", default)]
    property_changes: Vec<ChangeJson>,
}

fn strings(values: Vec<Value>) -> Vec<String> {
    values
        .into_iter()
        .map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
        .collect()
}

impl From<EventJson> for ActivityEvent {
    fn from(e: EventJson) -> Self {
        let (entity_id, entity_name) = e
            .entity
            .map(|n| (n.id.unwrap_or_default(), n.name.unwrap_or_default()))
            .unwrap_or_default();
        Self {
            id: e.id,
            at: e.event_date,
            service: e.service_name.unwrap_or_default(),
            action: e.action.unwrap_or_default(),
            entity_type: e.entity_type.unwrap_or_default(),
            entity_id,
            entity_name,
            status: e.status.unwrap_or_default(),
            user_id: e.user.as_ref().and_then(|u| u.id.clone()),
            user_name: e.user.and_then(|u| u.name),
            client_id: e.client.as_ref().and_then(|c| c.id.clone()),
            client_name: e.client.and_then(|c| c.name),
            changes: e
                .property_changes
                .into_iter()
                .map(|c| PropertyChange {
                    property: c.property,
                    old_values: strings(c.old_values),
                    new_values: strings(c.new_values),
                })
                .collect(),
        }
    }
}

#[derive(Deserialize)]
struct Created {
    id: String,
    #[serde(default)]
    state: String,
}

#[derive(Deserialize)]
struct Results {
    #[serde(default)]
    entities: Vec<EventJson>,
    #[serde(default)]
    cursor: Option<String>,
}

fn interval(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let iso = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!("{}/{}", iso(from), iso(to))
}

impl ScimClient {
    /// The broker's own OAuth client id (its writes are audited too).
    pub fn own_client_id(&self) -> Option<&str> {
        match &self.config.auth {
            ScimAuth::ClientCredentials { client_id, .. } => Some(client_id),
            ScimAuth::Bearer(_) => None,
        }
    }

    /// The audit events matching every `(property, value)` filter from
    /// `from` to `to`, oldest first, as the trail has them by `now`.
    pub async fn audit_events(
        &self,
        filters: &[(&str, &str)],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ActivityEvent>, ScimError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let filters: Vec<Value> = filters
            .iter()
            .map(|(p, v)| json!({"property": p, "value": v}))
            .collect();
        let mut events = if now - from <= REALTIME_REACH {
            self.realtime(&filters, from, to).await?
        } else {
            // Beyond the realtime reach: the asynchronous query, a month a go.
            let mut events = Vec::new();
            let mut start = from;
            while start < to {
                let end = (start + ASYNC_MAX_INTERVAL).min(to);
                events.extend(self.asynchronous(&filters, start, end).await?);
                start = end;
            }
            events
        };
        events.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        Ok(events)
    }

    async fn realtime(
        &self,
        filters: &[Value],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ActivityEvent>, ScimError> {
        let url = self.platform_url("api/v2/audits/query/realtime")?;
        let mut events = Vec::new();
        for page in 1u64.. {
            let body = json!({
                "interval": interval(from, to),
                "filters": filters,
                "sort": [{"name": "Timestamp", "sortOrder": "ascending"}],
                "pageNumber": page,
                "pageSize": REALTIME_PAGE,
            });
            let found: Page<EventJson> = Self::json(
                self.send(Method::POST, url.clone(), |r| r.json(&body))
                    .await?,
            )
            .await?;
            let done = found.entities.is_empty() || found.page_count.is_none_or(|n| page >= n);
            events.extend(found.entities.into_iter().map(ActivityEvent::from));
            if done {
                break;
            }
        }
        Ok(events)
    }

    async fn asynchronous(
        &self,
        filters: &[Value],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ActivityEvent>, ScimError> {
        let body = json!({"interval": interval(from, to), "filters": filters});
        let url = self.platform_url("api/v2/audits/query")?;
        let mut query: Created =
            Self::json(self.send(Method::POST, url, |r| r.json(&body)).await?).await?;
        let mut polls = 0;
        while query.state != "Succeeded" {
            match query.state.as_str() {
                "Failed" | "Cancelled" => {
                    return Err(ScimError::Decode(format!(
                        "audit query {} ended {}",
                        query.id, query.state
                    )));
                }
                _ if polls == POLLS => {
                    return Err(ScimError::Decode(format!(
                        "audit query {} still {} after {POLLS} polls",
                        query.id, query.state
                    )));
                }
                _ => {}
            }
            tokio::time::sleep(POLL_EVERY).await;
            polls += 1;
            let url = self.platform_url(&format!("api/v2/audits/query/{}", query.id))?;
            query = Self::json(self.send(Method::GET, url, |r| r).await?).await?;
        }
        let mut events = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url =
                self.platform_url(&format!("api/v2/audits/query/{}/results", query.id))?;
            url.query_pairs_mut()
                .append_pair("pageSize", &RESULTS_PAGE.to_string());
            if let Some(c) = &cursor {
                url.query_pairs_mut().append_pair("cursor", c);
            }
            let page: Results = Self::json(self.send(Method::GET, url, |r| r).await?).await?;
            events.extend(page.entities.into_iter().map(ActivityEvent::from));
            match page.cursor {
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                _ => return Ok(events),
            }
        }
    }
}
