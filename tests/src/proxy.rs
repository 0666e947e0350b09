//! A proxy in front of the real scim2-server that counts every request and,
//! when told, enforces a budget of N requests a minute the way Genesys Cloud
//! does (one second of burst; `429` with `Retry-After` and Genesys's body
//! text). Tests and benchmarks use it to see what the broker costs a target.

use std::net::TcpListener;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
}

struct Upstream {
    base: String,
    http: reqwest::Client,
    counts: Arc<Counts>,
    limiter: Option<DefaultDirectRateLimiter>,
    down: Arc<AtomicBool>,
}

pub struct ScimProxy {
    /// The proxied tenant's base URL (use it as the SCIM base URL).
    pub base_url: String,
    pub counts: Arc<Counts>,
    down: Arc<AtomicBool>,
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
        let state = web::Data::new(Upstream {
            base: origin,
            http: reqwest::Client::new(),
            counts: counts.clone(),
            limiter,
            down: down.clone(),
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
            handle,
        }
    }

    /// While down, every request is answered 503 with no hint of when to
    /// come back, as a target in an outage does.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
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
    back.body(res.bytes().await.unwrap_or_default())
}
