//! A SANDBOX stand-in for ServiceNow's Table API: change requests and group
//! memberships held in memory, served under `/sandbox/servicenow` by
//! `serve --dev`, and on its own port by the tests, which change records
//! during a test and assert on the exact queries the broker sent.
//!
//! It implements what the broker uses: `GET /api/now/table/{table}` with an
//! encoded `sysparm_query` of `field=value` clauses joined by `^` and `^OR`,
//! `sysparm_fields` and `sysparm_limit`, answering `{"result": [...]}` with
//! flat string values (as with `sysparm_exclude_reference_link=true`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};

pub const BASE_PATH: &str = "/sandbox/servicenow";

/// How many answered requests the stand-in remembers (tests read them).
pub const KEPT_QUERIES: usize = 1000;

/// One request the stand-in answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedQuery {
    pub table: String,
    pub params: BTreeMap<String, String>,
}

#[derive(Default)]
struct Book {
    tables: BTreeMap<String, Vec<Map<String, Value>>>,
    /// The last [`KEPT_QUERIES`] requests: a sandbox left running for days
    /// must not keep every one.
    queries: std::collections::VecDeque<RecordedQuery>,
    /// Answer 503 to everything (ServiceNow down).
    down: bool,
    basic_auth: Option<(String, String)>,
    /// OAuth mode: the client credentials `oauth_token.do` accepts, and the
    /// bearer tokens it has issued and not revoked.
    oauth_client: Option<(String, String)>,
    tokens: Vec<String>,
    tokens_issued: usize,
}

/// The stand-in's data; cheap to clone, shared with the server.
#[derive(Clone, Default)]
pub struct ChangeBook(Arc<Mutex<Book>>);

/// ServiceNow's date format, UTC.
pub fn sn_date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

impl ChangeBook {
    fn lock(&self) -> MutexGuard<'_, Book> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests must carry these basic-auth credentials.
    pub fn require_basic_auth(&self, user: &str, password: &str) {
        self.lock().basic_auth = Some((user.to_owned(), password.to_owned()));
    }

    /// Requests must carry a bearer token from `oauth_token.do`, which takes
    /// these client credentials (`grant_type=client_credentials`).
    /// (Instead of basic auth.)
    pub fn require_oauth(&self, client_id: &str, client_secret: &str) {
        let mut b = self.lock();
        b.basic_auth = None;
        b.oauth_client = Some((client_id.to_owned(), client_secret.to_owned()));
    }

    /// Revokes every token issued so far (a rotated or expired token).
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    pub fn tokens_issued(&self) -> usize {
        self.lock().tokens_issued
    }

    /// Adds or replaces (by `number`) a change record of flat string fields.
    pub fn put_change(&self, record: Value) {
        let Value::Object(record) = record else {
            return;
        };
        let mut book = self.lock();
        let rows = book.tables.entry("change_request".into()).or_default();
        rows.retain(|r| r.get("number") != record.get("number"));
        rows.push(record);
    }

    pub fn has_change(&self, number: &str) -> bool {
        self.lock()
            .tables
            .get("change_request")
            .is_some_and(|rows| {
                rows.iter()
                    .any(|r| r.get("number").and_then(Value::as_str) == Some(number))
            })
    }

    /// Sets fields of an existing change.
    pub fn update_change(&self, number: &str, fields: Value) {
        let mut book = self.lock();
        if let (Some(rows), Value::Object(fields)) = (book.tables.get_mut("change_request"), fields)
        {
            for row in rows
                .iter_mut()
                .filter(|r| r.get("number").and_then(Value::as_str) == Some(number))
            {
                row.extend(fields.clone());
            }
        }
    }

    pub fn add_group_member(&self, group_sys_id: &str, email: &str) {
        let record = json!({"sys_id": format!("m-{group_sys_id}-{email}"), "group": group_sys_id, "user.email": email, "user.user_name": email.split('@').next().unwrap_or(email)});
        if let Value::Object(record) = record {
            self.lock()
                .tables
                .entry("sys_user_grmember".into())
                .or_default()
                .push(record);
        }
    }

    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Every request answered so far, oldest first.
    pub fn queries(&self) -> Vec<RecordedQuery> {
        self.lock().queries.iter().cloned().collect()
    }

    pub fn clear_queries(&self) {
        self.lock().queries.clear();
    }

    /// A change in Implement, approved, assigned to `assignee`, for `role`,
    /// with a window around `now`: the usual happy path.
    pub fn approved_change(
        number: &str,
        assignee: &str,
        role: &str,
        now: DateTime<Utc>,
        window: TimeDelta,
    ) -> Value {
        json!({
            "number": number,
            "sys_id": format!("sys-{number}"),
            "state": "-1",
            "approval": "approved",
            "start_date": sn_date(now - TimeDelta::minutes(5)),
            "end_date": sn_date(now + window),
            "assigned_to": format!("user-{assignee}"),
            "assigned_to.user_name": assignee.split('@').next().unwrap_or(assignee),
            "assigned_to.email": assignee,
            "assignment_group": "grp-ops",
            "assignment_group.name": "Contact Centre Ops",
            "type": "normal",
            "u_jit_role": role,
        })
    }

    /// The dev sandbox's changes, relative to `now`.
    pub fn seeded(now: DateTime<Utc>) -> Self {
        let book = Self::default();
        book.put_change(Self::approved_change(
            "CHG0000001",
            "alice@example.com",
            "Master Admin",
            now,
            TimeDelta::hours(8),
        ));
        let mut scheduled = Self::approved_change(
            "CHG0000002",
            "bob@example.com",
            "Telephony Admin",
            now,
            TimeDelta::hours(8),
        );
        scheduled["state"] = json!("-2");
        book.put_change(scheduled);
        let mut unapproved = Self::approved_change(
            "CHG0000003",
            "carol@example.com",
            "Master Admin",
            now,
            TimeDelta::hours(8),
        );
        unapproved["state"] = json!("-3");
        unapproved["approval"] = json!("requested");
        book.put_change(unapproved);
        // A change for the role with approvals (CHG0000001 is for Master
        // Admin only: citing it for another role is refused).
        book.put_change(Self::approved_change(
            "CHG0000004",
            "alice@example.com",
            "Recording Admin",
            now,
            TimeDelta::hours(8),
        ));
        book
    }
}

/// `a=1^b=2^ORc=3` → `[[a=1], [b=2, c=3]]`: AND of OR-groups.
fn parse_query(query: &str) -> Vec<Vec<(String, String)>> {
    let mut groups: Vec<Vec<(String, String)>> = Vec::new();
    // Ordering clauses (`ORDERBYfield`) change no result set here.
    for clause in query
        .split('^')
        .filter(|c| !c.is_empty() && !c.starts_with("ORDERBY"))
    {
        let (or, clause) = match clause.strip_prefix("OR") {
            Some(rest) => (true, rest),
            None => (false, clause),
        };
        let Some((field, value)) = clause.split_once('=') else {
            continue;
        };
        let condition = (field.to_owned(), value.to_owned());
        match groups.last_mut() {
            Some(last) if or => last.push(condition),
            _ => groups.push(vec![condition]),
        }
    }
    groups
}

fn matches(row: &Map<String, Value>, groups: &[Vec<(String, String)>]) -> bool {
    groups.iter().all(|any| {
        any.iter()
            .any(|(f, v)| row.get(f).and_then(Value::as_str) == Some(v.as_str()))
    })
}

fn basic_auth_ok(req: &HttpRequest, expected: &Option<(String, String)>) -> bool {
    use base64::Engine;
    let Some((user, password)) = expected else {
        return true;
    };
    let want = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .is_some_and(|got| got == want)
}

async fn table(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<BTreeMap<String, String>>,
    book: web::Data<ChangeBook>,
) -> HttpResponse {
    let table = path.into_inner();
    let params = query.into_inner();
    let mut b = book.lock();
    if b.queries.len() == KEPT_QUERIES {
        b.queries.pop_front();
    }
    b.queries.push_back(RecordedQuery {
        table: table.clone(),
        params: params.clone(),
    });
    if b.down {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"error": {"message": "sandbox: ServiceNow is down", "detail": null}, "status": "failure"}));
    }
    let bearer_ok = match &b.oauth_client {
        None => true,
        Some(_) => req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| b.tokens.iter().any(|issued| issued == t)),
    };
    if !bearer_ok || !basic_auth_ok(&req, &b.basic_auth) {
        return HttpResponse::Unauthorized()
            .json(json!({"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"}, "status": "failure"}));
    }
    let groups = parse_query(params.get("sysparm_query").map_or("", String::as_str));
    let fields: Option<Vec<&str>> = params.get("sysparm_fields").map(|f| f.split(',').collect());
    let limit = params
        .get("sysparm_limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX);
    let result: Vec<Value> = b
        .tables
        .get(&table)
        .into_iter()
        .flatten()
        .filter(|row| matches(row, &groups))
        .take(limit)
        .map(|row| match &fields {
            None => Value::Object(row.clone()),
            Some(fields) => Value::Object(
                fields
                    .iter()
                    .map(|f| {
                        let v = row.get(*f).cloned().unwrap_or_else(|| json!(""));
                        ((*f).to_owned(), v)
                    })
                    .collect(),
            ),
        })
        .collect();
    HttpResponse::Ok()
        .insert_header(("X-Sandbox", "true"))
        .json(json!({ "result": result }))
}

async fn oauth_token(
    form: web::Form<BTreeMap<String, String>>,
    book: web::Data<ChangeBook>,
) -> HttpResponse {
    let mut b = book.lock();
    let presented = (
        form.get("grant_type").map(String::as_str),
        form.get("client_id"),
        form.get("client_secret"),
    );
    match (&b.oauth_client, presented) {
        (Some((id, secret)), (Some("client_credentials"), Some(i), Some(s)))
            if i == id && s == secret =>
        {
            b.tokens_issued += 1;
            let token = format!("sandbox-token-{}", b.tokens_issued);
            b.tokens.push(token.clone());
            HttpResponse::Ok().json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 1799, "scope": "useraccount"}))
        }
        _ => HttpResponse::Unauthorized()
            .json(json!({"error": "access_denied", "error_description": "access_denied"})),
    }
}

/// Mounts the stand-in under `prefix` (`/sandbox/servicenow` or ``).
pub fn routes(prefix: &str) -> impl FnOnce(&mut web::ServiceConfig) + '_ {
    move |cfg| {
        cfg.route(
            &format!("{prefix}/api/now/table/{{table}}"),
            web::get().to(table),
        )
        .route(
            &format!("{prefix}/oauth_token.do"),
            web::post().to(oauth_token),
        );
    }
}

/// The stand-in on its own port (tests): its address and a handle to stop it.
pub async fn serve(book: ChangeBook) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let data = web::Data::new(book);
    let server = HttpServer::new(move || App::new().app_data(data.clone()).configure(routes("")))
        .workers(1)
        .bind("127.0.0.1:0")?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("no address bound"))?;
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok((addr, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_queries_are_and_of_or_groups() {
        let q = parse_query("group=g1^user.email=a@x^ORuser.user_name=a@x");
        assert_eq!(q.len(), 2);
        assert_eq!(q[1].len(), 2);
        let row: Map<String, Value> = serde_json::from_value(
            json!({"group": "g1", "user.email": "b@x", "user.user_name": "a@x"}),
        )
        .unwrap();
        assert!(matches(&row, &q));
        let other: Map<String, Value> =
            serde_json::from_value(json!({"group": "g2", "user.user_name": "a@x"})).unwrap();
        assert!(!matches(&other, &q));
    }
}
