//! The audit query API: `POST /api/v2/audits/query/realtime` (answered at
//! once, recent past only, paged by number) and the asynchronous
//! `POST /api/v2/audits/query`, polled by id, its results paged by cursor.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;
use crate::audit::{ASYNC_MAX_INTERVAL, AsyncQuery, Query, REALTIME_REACH};

const AUDIT_VIEW: &[&str] = &["audits:audit:view"];
/// The largest page either query answers.
const MAX_PAGE: u64 = 500;

pub(super) async fn realtime(
    req: HttpRequest,
    standin: Standin,
    body: web::Json<Value>,
) -> HttpResponse {
    admit!(req, standin, audit_reads, AUDIT_VIEW);
    let query = match Query::parse(&body) {
        Ok(q) => q,
        Err(why) => return platform_error(400, "bad.request", &why),
    };
    let now = standin.now();
    let found = standin.trail().matching(&query, now, Some(REALTIME_REACH));
    let paging = Paging {
        page_size: body["pageSize"].as_u64(),
        page_number: body["pageNumber"].as_u64(),
        name: None,
        permission: None,
    };
    HttpResponse::Ok().json(page(found, &paging, MAX_PAGE.min(standin.max_page_size())))
}

pub(super) async fn create(
    req: HttpRequest,
    standin: Standin,
    body: web::Json<Value>,
) -> HttpResponse {
    admit!(req, standin, audit_reads, AUDIT_VIEW);
    let query = match Query::parse(&body) {
        Ok(q) => q,
        Err(why) => return platform_error(400, "bad.request", &why),
    };
    if query.to - query.from > ASYNC_MAX_INTERVAL {
        return platform_error(400, "bad.request", "interval may span at most 30 days");
    }
    let now = standin.now();
    let id = uuid::Uuid::new_v4().to_string();
    let mut trail = standin.trail();
    let results = trail.matching(&query, now, None);
    trail.queries.insert(
        id.clone(),
        AsyncQuery {
            results,
            polls_left: standin.settings.audit_query_polls,
        },
    );
    HttpResponse::Ok().json(json!({"id": id, "state": "Queued"}))
}

pub(super) async fn poll(
    req: HttpRequest,
    standin: Standin,
    id: web::Path<String>,
) -> HttpResponse {
    admit!(req, standin, audit_reads, AUDIT_VIEW);
    let mut trail = standin.trail();
    let Some(q) = trail.queries.get_mut(id.as_str()) else {
        return platform_error(404, "not.found", "audit query not found");
    };
    let state = if q.polls_left == 0 {
        "Succeeded"
    } else {
        q.polls_left -= 1;
        "Running"
    };
    HttpResponse::Ok().json(json!({"id": id.as_str(), "state": state}))
}

#[derive(Deserialize)]
pub(super) struct Cursor {
    cursor: Option<String>,
    #[serde(rename = "pageSize")]
    page_size: Option<u64>,
}

pub(super) async fn results(
    req: HttpRequest,
    standin: Standin,
    id: web::Path<String>,
    q: web::Query<Cursor>,
) -> HttpResponse {
    admit!(req, standin, audit_reads, AUDIT_VIEW);
    let trail = standin.trail();
    let Some(query) = trail.queries.get(id.as_str()) else {
        return platform_error(404, "not.found", "audit query not found");
    };
    if query.polls_left > 0 {
        return platform_error(400, "bad.request", "the query has not succeeded yet");
    }
    let start = match q.cursor.as_deref() {
        None => 0,
        Some(c) => match c
            .strip_prefix("after-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return platform_error(400, "bad.request", "unknown cursor"),
        },
    };
    let size = q
        .page_size
        .unwrap_or(25)
        .clamp(1, MAX_PAGE.min(standin.max_page_size()));
    let size = usize::try_from(size).unwrap_or(25);
    let entities: Vec<&Value> = query.results.iter().skip(start).take(size).collect();
    let next = start + entities.len();
    let mut body = json!({"id": id.as_str(), "pageSize": size, "entities": entities});
    if next < query.results.len() {
        body["cursor"] = json!(format!("after-{next}"));
    }
    HttpResponse::Ok().json(body)
}
