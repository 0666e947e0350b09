//! A proxy in front of the real scim2-server that counts every request and,
//! when told, enforces a budget of N requests a minute the way Genesys Cloud
//! does (one second of burst; `429` with `Retry-After` and Genesys's body
//! text). Tests and benchmarks use it to see what the broker costs a target.
//!
//! It also stands in for the two Genesys Cloud Platform API endpoints that
//! list a role's holders (`/api/v2/authorization/roles?name=` and
//! `/api/v2/authorization/roles/{id}/users`), answering from the proxied
//! scim2-server's state: a role added through SCIM shows up among the role's
//! users. Those requests count and spend the same budget, as on Genesys.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// What went through the proxy.
#[derive(Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub gets: AtomicU64,
    pub patches: AtomicU64,
    pub limited: AtomicU64,
    /// Answered 503 because the target was "down".
    pub refused_down: AtomicU64,
    /// Every PATCH the target answered, in the order answered.
    patches_seen: Mutex<Vec<PatchSeen>>,
}

/// One PATCH as the target saw it.
#[derive(Debug, Clone)]
pub struct PatchSeen {
    /// When the target's answer came back.
    pub answered_at: chrono::DateTime<chrono::Utc>,
    /// The resource, e.g. `/t…/Users/{id}`.
    pub path: String,
    pub body: Value,
    pub status: u16,
}

impl PatchSeen {
    /// The SCIM id of the user it changed.
    pub fn user_id(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }

    /// `add` or `remove`: what its one operation does to a role.
    pub fn op(&self) -> &str {
        self.body["Operations"][0]["op"]
            .as_str()
            .unwrap_or_default()
    }

    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Counts {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
    pub fn patches(&self) -> u64 {
        self.patches.load(Ordering::SeqCst)
    }
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::SeqCst)
    }
    pub fn refused_down(&self) -> u64 {
        self.refused_down.load(Ordering::SeqCst)
    }
    pub fn patches_seen(&self) -> Vec<PatchSeen> {
        self.patches_seen.lock().expect("patches").clone()
    }
}

struct Upstream {
    base: String,
    http: reqwest::Client,
    counts: Arc<Counts>,
    limiter: Option<DefaultDirectRateLimiter>,
    down: Arc<AtomicBool>,
    /// Added before each answer, in milliseconds, as a distant target's.
    latency_ms: Arc<AtomicU64>,
    /// Requests passed to scim2-server at once; the rest wait their turn,
    /// as behind a real API's front end. Its dev server (HTTP/1.0, a listen
    /// backlog of 5) drops connections beyond a few dozen at once, which
    /// would measure the test server, not the broker.
    upstream_slots: tokio::sync::Semaphore,
    platform: Arc<Platform>,
}

/// The Platform API stand-in's own state; who holds a role is scim2-server's.
struct Platform {
    /// The tenant's path on scim2-server.
    tenant_path: String,
    /// Role name → id, assigned on first sight (every role exists).
    role_ids: Mutex<HashMap<String, String>>,
    /// Holders the role-users answer leaves out, as a faulty answer would.
    omitted: Mutex<HashSet<String>>,
    /// userName → when the user last logged in (the last token issued).
    logins: Mutex<HashMap<String, chrono::DateTime<chrono::Utc>>>,
    /// The largest page it serves, whatever `pageSize` asks.
    max_page_size: AtomicU64,
}

impl Platform {
    fn role_id(&self, name: &str) -> String {
        let mut ids = self.role_ids.lock().expect("role ids");
        ids.entry(name.to_owned())
            .or_insert_with(|| uuid::Uuid::new_v4().to_string())
            .clone()
    }

    fn role_name(&self, id: &str) -> Option<String> {
        let ids = self.role_ids.lock().expect("role ids");
        ids.iter().find(|(_, v)| *v == id).map(|(k, _)| k.clone())
    }
}

/// See `Upstream::upstream_slots`.
const UPSTREAM_SLOTS: usize = 16;

pub struct ScimProxy {
    /// The proxied tenant's base URL (use it as the SCIM base URL).
    pub base_url: String,
    /// The Platform API stand-in's base (`http://127.0.0.1:port/`).
    pub platform_url: String,
    pub counts: Arc<Counts>,
    down: Arc<AtomicBool>,
    latency_ms: Arc<AtomicU64>,
    platform: Arc<Platform>,
    handle: actix_web::dev::ServerHandle,
}

impl ScimProxy {
    /// Proxies `upstream` (a tenant's base URL); `per_minute`: the budget.
    pub async fn start(upstream: &str, per_minute: Option<u32>) -> Self {
        let counts = Arc::new(Counts::default());
        let url = url::Url::parse(upstream).expect("upstream URL");
        let path = url.path().trim_end_matches('/').to_owned();
        let origin = format!("{}://{}", url.scheme(), url.authority());
        let limiter = per_minute.and_then(NonZeroU32::new).map(|n| {
            let burst = NonZeroU32::new(n.get().div_ceil(60)).unwrap_or(NonZeroU32::MIN);
            RateLimiter::direct(Quota::per_minute(n).allow_burst(burst))
        });
        let down = Arc::new(AtomicBool::new(false));
        let latency_ms = Arc::new(AtomicU64::new(0));
        let platform = Arc::new(Platform {
            tenant_path: path.clone(),
            role_ids: Mutex::default(),
            omitted: Mutex::default(),
            logins: Mutex::default(),
            max_page_size: AtomicU64::new(500),
        });
        let state = web::Data::new(Upstream {
            base: origin,
            http: reqwest::Client::new(),
            counts: counts.clone(),
            limiter,
            down: down.clone(),
            latency_ms: latency_ms.clone(),
            upstream_slots: tokio::sync::Semaphore::new(UPSTREAM_SLOTS),
            platform: platform.clone(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(forward))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            base_url: format!("http://{addr}{path}"),
            platform_url: format!("http://{addr}/"),
            counts,
            down,
            latency_ms,
            platform,
            handle,
        }
    }

    /// The broker's SCIM client for this proxy; with `genesys`, it asks the
    /// Platform API stand-in for a role's holders.
    pub fn client(&self, genesys: bool) -> jit_scim::ScimClient {
        jit_scim::ScimClient::new(jit_scim::ScimConfig {
            base_url: url::Url::parse(&self.base_url).expect("proxy URL"),
            users_path: "Users".into(),
            auth: jit_scim::ScimAuth::Bearer(secrecy::SecretString::from(crate::SCIM_TOKEN)),
            timeout: std::time::Duration::from_secs(30),
            platform_api: genesys.then(|| url::Url::parse(&self.platform_url).expect("proxy URL")),
        })
        .expect("SCIM client")
    }

    /// The Platform API leaves `user` out of every role's users.
    pub fn omit_holder(&self, user: &str) {
        let mut omitted = self.platform.omitted.lock().expect("omitted");
        omitted.insert(user.to_owned());
    }

    /// `user` logged in at `at`, as Genesys Cloud's `lastTokenIssued` will say.
    pub fn log_in(&self, user: &str, at: chrono::DateTime<chrono::Utc>) {
        let mut logins = self.platform.logins.lock().expect("logins");
        logins.insert(user.to_owned(), at);
    }

    /// Pages of role users hold at most `n` (to make paging visible).
    pub fn cap_page_size(&self, n: u64) {
        self.platform
            .max_page_size
            .store(n.max(1), Ordering::SeqCst);
    }

    /// The role is re-created under a new id: the old one answers 404.
    pub fn change_role_id(&self, role: &str) {
        let mut ids = self.platform.role_ids.lock().expect("role ids");
        ids.insert(role.to_owned(), uuid::Uuid::new_v4().to_string());
    }

    /// While down, every request is answered 503 with no hint of when to
    /// come back, as a target in an outage does.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Every answer takes this much longer, as across a WAN to Genesys Cloud
    /// (jobs are then in flight when a replica is killed or stopped).
    pub fn set_latency(&self, latency: std::time::Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.latency_ms.store(ms, Ordering::SeqCst);
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn forward(req: HttpRequest, body: web::Bytes, up: web::Data<Upstream>) -> HttpResponse {
    up.counts.requests.fetch_add(1, Ordering::SeqCst);
    match req.method().as_str() {
        "GET" => up.counts.gets.fetch_add(1, Ordering::SeqCst),
        "PATCH" => up.counts.patches.fetch_add(1, Ordering::SeqCst),
        _ => 0,
    };
    if up.down.load(Ordering::SeqCst) {
        up.counts.refused_down.fetch_add(1, Ordering::SeqCst);
        return HttpResponse::ServiceUnavailable().body("down for maintenance");
    }
    if let Some(limiter) = &up.limiter
        && limiter.check().is_err()
    {
        up.counts.limited.fetch_add(1, Ordering::SeqCst);
        return HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", "2"))
            .content_type("application/json")
            .body(
                r#"{"message":"Rate limit exceeded the maximum. Retry the request in [2] seconds","code":"too.many.requests","status":429}"#,
            );
    }
    let latency = up.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    let Ok(_slot) = up.upstream_slots.acquire().await else {
        return HttpResponse::ServiceUnavailable().finish();
    };
    if req.path().starts_with("/api/v2/") {
        return platform(&req, &up).await;
    }
    let url = format!("{}{}", up.base, req.uri());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let mut out = up.http.request(method, url).body(body.to_vec());
    for name in ["authorization", "content-type", "if-match", "accept"] {
        if let Some(v) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
            out = out.header(name, v);
        }
    }
    let Ok(res) = out.send().await else {
        return HttpResponse::BadGateway().finish();
    };
    let status = actix_web::http::StatusCode::from_u16(res.status().as_u16())
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    let mut back = HttpResponse::build(status);
    for name in ["content-type", "etag", "location", "retry-after"] {
        if let Some(v) = res.headers().get(name).and_then(|v| v.to_str().ok()) {
            back.insert_header((name, v.to_owned()));
        }
    }
    let answer = res.bytes().await.unwrap_or_default();
    if req.method() == actix_web::http::Method::PATCH {
        let seen = PatchSeen {
            // The target's own time: what the broker's clock says is not the question.
            #[allow(clippy::disallowed_methods)]
            answered_at: chrono::Utc::now(),
            path: req.path().to_owned(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            status: status.as_u16(),
        };
        up.counts.patches_seen.lock().expect("patches").push(seen);
    }
    back.body(answer)
}

/// The Platform API stand-in: a role's id by name, and a role's users page
/// by page, read from scim2-server with a `roles.value` filter.
async fn platform(req: &HttpRequest, up: &Upstream) -> HttpResponse {
    let query: HashMap<String, String> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let p = &up.platform;
    let path = req.path();
    if let Some(id) = path.strip_prefix("/api/v2/users/") {
        return platform_user(req, up, id).await;
    }
    if path == "/api/v2/authorization/roles" {
        let Some(name) = query.get("name") else {
            return HttpResponse::BadRequest().finish();
        };
        let id = p.role_id(name);
        return HttpResponse::Ok().json(json!({
            "entities": [{"id": id, "name": name}],
            "pageSize": 25, "pageNumber": 1, "total": 1, "pageCount": 1,
        }));
    }
    let Some(name) = path
        .strip_prefix("/api/v2/authorization/roles/")
        .and_then(|rest| rest.strip_suffix("/users"))
        .and_then(|id| p.role_name(id))
    else {
        return HttpResponse::NotFound().json(json!({
            "message": "The requested role was not found", "code": "not.found", "status": 404,
        }));
    };
    let number: u64 = query
        .get("pageNumber")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .max(1);
    let size: u64 = query
        .get("pageSize")
        .and_then(|n| n.parse().ok())
        .unwrap_or(25)
        .clamp(1, p.max_page_size.load(Ordering::SeqCst));
    let filter = format!("roles.value eq {}", Value::String(name.clone()));
    let mut upstream = up
        .http
        .get(format!("{}{}/Users", up.base, p.tenant_path))
        .query(&[
            ("filter", filter),
            ("startIndex", ((number - 1) * size + 1).to_string()),
            ("count", size.to_string()),
            ("attributes", "userName".to_owned()),
        ]);
    if let Some(v) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        upstream = upstream.header("authorization", v);
    }
    let Ok(list) = upstream.send().await else {
        return HttpResponse::BadGateway().finish();
    };
    let list: Value = list.json().await.unwrap_or(Value::Null);
    let total = list["totalResults"].as_u64().unwrap_or(0);
    let omitted = p.omitted.lock().expect("omitted").clone();
    let entities: Vec<Value> = list["Resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| {
            let name = u["userName"].as_str()?;
            (!omitted.contains(name))
                .then(|| json!({"id": u["id"], "name": name, "username": name, "email": name}))
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "entities": entities, "pageSize": size, "pageNumber": number,
        "total": total, "pageCount": total.div_ceil(size),
    }))
}

/// `GET /api/v2/users/{id}?expand=lasttokenissued`: the user as scim2-server
/// holds it, with the last login the test set.
async fn platform_user(req: &HttpRequest, up: &Upstream, id: &str) -> HttpResponse {
    let mut upstream = up
        .http
        .get(format!("{}{}/Users/{id}", up.base, up.platform.tenant_path));
    if let Some(v) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        upstream = upstream.header("authorization", v);
    }
    let Ok(answer) = upstream.send().await else {
        return HttpResponse::BadGateway().finish();
    };
    if answer.status() == reqwest::StatusCode::NOT_FOUND {
        return HttpResponse::NotFound().json(json!({
            "message": "The requested user was not found", "code": "not.found", "status": 404,
        }));
    }
    let user: Value = answer.json().await.unwrap_or(Value::Null);
    let name = user["userName"].as_str().unwrap_or_default().to_owned();
    let login = up
        .platform
        .logins
        .lock()
        .expect("logins")
        .get(&name)
        .copied();
    let mut body = json!({"id": id, "name": name, "username": name, "email": name});
    if let Some(at) = login
        && req.query_string().contains("lasttokenissued")
    {
        body["lastTokenIssued"] = json!({"dateIssued": at.to_rfc3339()});
    }
    HttpResponse::Ok().json(body)
}
