//! A proxy in front of the real scim2-server that counts every request and,
//! when told, enforces a budget of N requests a minute the way Genesys Cloud
//! does (one second of burst; `429` with `Retry-After` and Genesys's body
//! text). Tests and benchmarks use it to see what the broker costs a target.
//!
//! Genesys Cloud's own API (grants, holders, logins) is the Genesys Cloud
//! stand-in's (crates/jit-genesys-standin, `crate::genesys`), not this proxy's.

use std::net::TcpListener;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

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
}

/// See `Upstream::upstream_slots`.
const UPSTREAM_SLOTS: usize = 16;

pub struct ScimProxy {
    /// The proxied tenant's base URL (use it as the SCIM base URL).
    pub base_url: String,
    pub counts: Arc<Counts>,
    down: Arc<AtomicBool>,
    latency_ms: Arc<AtomicU64>,
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
        let state = web::Data::new(Upstream {
            base: origin,
            http: reqwest::Client::new(),
            counts: counts.clone(),
            limiter,
            down: down.clone(),
            latency_ms: latency_ms.clone(),
            upstream_slots: tokio::sync::Semaphore::new(UPSTREAM_SLOTS),
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
            counts,
            down,
            latency_ms,
            handle,
        }
    }

    /// The broker's SCIM client for this proxy.
    pub fn client(&self) -> jit_scim::ScimClient {
        jit_scim::ScimClient::new(jit_scim::ScimConfig {
            base_url: url::Url::parse(&self.base_url).expect("proxy URL"),
            users_path: "Users".into(),
            auth: jit_scim::ScimAuth::Bearer(secrecy::SecretString::from(crate::SCIM_TOKEN)),
            timeout: std::time::Duration::from_secs(30),
            platform_api: None,
        })
        .expect("SCIM client")
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
