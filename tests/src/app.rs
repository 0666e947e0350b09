//! Building the broker for a test: in-process with a manual clock, or the
//! real HTTP server on port 0 with the system clock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use jit_app::{App, Clock, Directory, ManualClock, Store, SystemClock, Worker, WorkerConfig};
use jit_domain::Policy;
use jit_itsm::{ServiceNowAuth, ServiceNowClient, ServiceNowConfig};
use jit_scim::{ScimAuth, ScimClient, ScimConfig};
use jit_server::config::{ApiKeyConfig, Config};
use jit_server::sandbox_servicenow::ChangeBook;
use secrecy::SecretString;
use serde_json::Value;

use crate::{Backend, SCIM_TOKEN, fresh_database, workspace_root};

pub const API_KEY: &str = "e2e-api-key-0123456789abcdef";

/// The justification every test grant gives.
pub const GRANT_JUSTIFICATION: &str = "Rotate the SIP trunk certificate";

/// The one grant-request body the tests send: `Master Admin` for `user`
/// under `ticket`, lasting `duration` (callers add or override fields).
pub fn grant_request(user: &str, ticket: &str, duration: &str) -> Value {
    serde_json::json!({
        "user": user, "role": "Master Admin", "ticket": ticket, "duration": duration,
        "justification": GRANT_JUSTIFICATION,
    })
}
/// The typed command a JSON grant request carries (as the API's edge reads it).
pub fn command(body: &Value) -> jit_domain::GrantRequestForm {
    serde_json::from_value(body.clone()).expect("a grant request object")
}

/// A key without `admin`: may request grants, may not start sweeps.
pub const READER_KEY: &str = "e2e-reader-key-0123456789abcdef";

pub fn shipped_policy_path() -> PathBuf {
    workspace_root().join("policies/policy.toml")
}

pub fn shipped_policy() -> Policy {
    jit_server::load_policy(&shipped_policy_path()).expect("the shipped policy is valid")
}

/// The tests' policy: the shipped shape, open to test users, with a role
/// for each ticket clause (tests/fixtures/policy.toml).
pub fn test_policy_path() -> PathBuf {
    workspace_root().join("tests/fixtures/policy.toml")
}

pub fn test_policy() -> Policy {
    jit_server::load_policy(&test_policy_path()).expect("the test policy is valid")
}

pub const SERVICENOW_USER: &str = "jit-broker-e2e";
pub const SERVICENOW_PASSWORD: &str = "e2e-servicenow-password";

/// The ServiceNow stand-in on its own port, requiring basic auth.
pub struct ServiceNow {
    pub changes: ChangeBook,
    pub url: String,
    handle: actix_web::dev::ServerHandle,
}

impl ServiceNow {
    pub async fn start() -> Self {
        let changes = ChangeBook::default();
        changes.require_basic_auth(SERVICENOW_USER, SERVICENOW_PASSWORD);
        let (addr, handle) = jit_server::sandbox_servicenow::serve(changes.clone())
            .await
            .expect("start the ServiceNow stand-in");
        Self {
            changes,
            url: format!("http://{addr}/"),
            handle,
        }
    }

    pub fn client(&self, clock: Arc<dyn Clock>) -> ServiceNowClient {
        ServiceNowClient::new(
            ServiceNowConfig {
                instance_url: url::Url::parse(&self.url).expect("stand-in URL"),
                auth: ServiceNowAuth::Basic {
                    user: SERVICENOW_USER.into(),
                    password: SecretString::from(SERVICENOW_PASSWORD),
                },
                timeout: Duration::from_secs(2),
                role_field: "u_jit_role".into(),
                bind_roles: true,
            },
            clock,
        )
        .expect("ServiceNow client")
    }

    /// Puts an approved change in Implement, assigned to `user`, for `role`,
    /// open from a little before `now` for a week, unless one with this
    /// number is already there.
    pub fn approve(&self, ticket: &str, user: &str, role: &str, now: DateTime<Utc>) {
        if !self.changes.has_change(ticket) {
            self.changes.put_change(ChangeBook::approved_change(
                ticket,
                user,
                role,
                now,
                TimeDelta::days(7),
            ));
        }
    }

    /// Seeds the change a grant-request body cites, as approved for its user.
    pub fn approve_body(&self, body: &Value, now: DateTime<Utc>) {
        if let (Some(t), Some(u)) = (body["ticket"].as_str(), body["user"].as_str()) {
            self.approve(t, u, body["role"].as_str().unwrap_or("Master Admin"), now);
        }
    }
}

impl Drop for ServiceNow {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { handle.stop(false).await });
        }
    }
}

/// A SCIM client for a base URL, as the broker configures it.
pub fn scim_client(base_url: &str, timeout: Duration) -> ScimClient {
    ScimClient::new(ScimConfig {
        base_url: url::Url::parse(base_url).expect("base URL"),
        users_path: "Users".into(),
        auth: ScimAuth::Bearer(SecretString::from(SCIM_TOKEN)),
        timeout,
        platform_api: None,
    })
    .expect("SCIM client")
}

/// The use cases and worker in-process, over a real store, with a clock the
/// test moves.
pub struct Stack {
    pub app: Arc<App>,
    pub worker: Worker,
    pub clock: Arc<ManualClock>,
    pub store: Arc<dyn Store>,
    pub database_url: String,
    pub servicenow: ServiceNow,
}

/// 2026-11-23T10:00:00Z: tests start here.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_428_000, 0).expect("t0")
}

impl Stack {
    pub async fn new(backend: Backend, directory: Arc<dyn Directory>) -> Self {
        Self::with_policy(backend, directory, test_policy()).await
    }

    pub async fn with_policy(
        backend: Backend,
        directory: Arc<dyn Directory>,
        policy: Policy,
    ) -> Self {
        let clock = Arc::new(ManualClock::new(t0()));
        Self::with_clock(backend, directory, policy, clock).await
    }

    /// A stack on `clock` (shared with a stand-in that keeps the same time).
    pub async fn with_clock(
        backend: Backend,
        directory: Arc<dyn Directory>,
        policy: Policy,
        clock: Arc<ManualClock>,
    ) -> Self {
        let database_url = fresh_database(backend).await;
        let store = jit_store::open(&database_url, true, 5)
            .await
            .expect("open store");
        let servicenow = ServiceNow::start().await;
        let tickets = Arc::new(servicenow.client(clock.clone()));
        let app = Arc::new(App::new(
            store.clone(),
            directory,
            tickets,
            clock.clone() as Arc<dyn Clock>,
            Arc::new(policy),
        ));
        let config = WorkerConfig {
            retry_base: Duration::from_secs(1),
            ..WorkerConfig::default()
        };
        let worker = Worker::new(app.clone(), "test-worker".into(), config);
        Self {
            app,
            worker,
            clock,
            store,
            database_url,
            servicenow,
        }
    }

    /// A stack over a fresh scim2-server tenant holding `users` with their
    /// baseline roles.
    pub async fn with_users(backend: Backend, users: &[(&str, &[&str])]) -> (Self, crate::Tenant) {
        let tenant = crate::Tenant::new();
        for (name, roles) in users {
            tenant.create_user(name, roles).await;
        }
        let stack = Self::new(
            backend,
            Arc::new(scim_client(&tenant.base_url, Duration::from_secs(5))),
        )
        .await;
        (stack, tenant)
    }

    /// A mailer over this stack's store and clock, sending to `smtp` (plain
    /// SMTP on localhost) with `recipients`.
    pub fn mailer(
        &self,
        smtp: &crate::SmtpPeer,
        recipients: jit_notify::Recipients,
    ) -> jit_app::Mailer {
        self.mailer_with(smtp, recipients, |_| {})
    }

    /// The same, with the SMTP settings adjusted by `edit` (TLS tests).
    pub fn mailer_with(
        &self,
        smtp: &crate::SmtpPeer,
        recipients: jit_notify::Recipients,
        edit: impl FnOnce(&mut jit_notify::SmtpConfig),
    ) -> jit_app::Mailer {
        let mut config = jit_notify::SmtpConfig {
            host: "127.0.0.1".into(),
            port: smtp.port,
            tls: jit_notify::TlsMode::None,
            username: None,
            password: None,
            timeout: Duration::from_secs(5),
            from: "jit-broker@bank.example".into(),
            recipients,
            templates_dir: None,
            ca_file: None,
        };
        edit(&mut config);
        let notifier =
            jit_notify::SmtpNotifier::new(config, Duration::from_secs(60)).expect("SMTP notifier");
        jit_app::Mailer::new(
            self.store.clone(),
            Arc::new(notifier),
            self.clock.clone(),
            "test-mailer".into(),
            jit_app::MailerConfig::default(),
        )
    }

    pub fn advance(&self, secs: i64) {
        self.clock.advance(TimeDelta::seconds(secs));
    }

    pub async fn run_due(&self) -> usize {
        self.worker.run_due().await.expect("run due jobs")
    }

    /// Requests a grant citing a change the stand-in holds as approved for
    /// the body's user (seeded here unless the test put one there).
    pub async fn request(&self, body: Value) -> jit_domain::Grant {
        self.servicenow.approve_body(&body, t0());
        self.app
            .request_grant("test", &command(&body))
            .await
            .expect("grant accepted")
    }

    pub async fn audit_kinds(&self) -> Vec<String> {
        let events = self.store.audit_events(0, 10_000).await.expect("audit");
        events.into_iter().map(|e| e.kind).collect()
    }
}

/// The real server on port 0 with a fresh database (zero2prod's `spawn_app`).
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub running: jit_server::Running,
    pub database_url: String,
    pub servicenow: ServiceNow,
}

pub const WEBHOOK_SECRET: &str = "e2e-webhook-secret-0123456789abcdef";

/// The broker as `jit-broker serve` runs it, on port 0. Its sweeps and SOC
/// schedules run only when a test asks (one firing mid-test would be a
/// guess at timing).
pub async fn spawn_app(backend: Backend, scim_base_url: Option<&str>) -> TestApp {
    spawn_app_with(backend, scim_base_url, |_| {}).await
}

/// [`spawn_app`] with the config changed by `tweak` before the start.
pub async fn spawn_app_with(
    backend: Backend,
    scim_base_url: Option<&str>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let database_url = fresh_database(backend).await;
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        policy: test_policy_path(),
        ..Config::default()
    };
    // `--dev` (no SCIM target given) runs as the README says: the shipped
    // policy and the built-in sandboxes. Otherwise the ServiceNow stand-in.
    let servicenow = ServiceNow::start().await;
    if scim_base_url.is_some() {
        config.servicenow.instance_url = Some(servicenow.url.clone());
        config.servicenow.user = Some(SERVICENOW_USER.into());
        config.servicenow.password = Some(SecretString::from(SERVICENOW_PASSWORD));
        config.servicenow.webhook_secret = Some(SecretString::from(WEBHOOK_SECRET));
        // Relayed Genesys events are accepted (with the stand-in's secret).
        config.events.secret = Some(SecretString::from(crate::genesys::EVENTS_SECRET));
        config.servicenow.timeout_secs = 2;
    } else {
        config.policy = shipped_policy_path();
    }
    config.database.url = SecretString::from(database_url.clone());
    config.database.max_connections = 5;
    config.api_keys = vec![
        ApiKeyConfig {
            name: "e2e".into(),
            sha256: jit_server::api::hash_key(API_KEY),
            admin: true,
            grant_requests_per_minute: None,
        },
        ApiKeyConfig {
            name: "e2e-reader".into(),
            sha256: jit_server::api::hash_key(READER_KEY),
            admin: false,
            grant_requests_per_minute: None,
        },
    ];
    let dev = scim_base_url.is_none();
    if let Some(base) = scim_base_url {
        config.scim.base_url = Some(base.to_owned());
        config.scim.bearer_token = Some(SecretString::from(SCIM_TOKEN));
    }
    config.reconciler.enabled = false;
    config.notify.digest_cron = String::new();
    config.notify.break_glass_cron = String::new();
    tweak(&mut config);
    let running = jit_server::start(config, dev, Arc::new(SystemClock))
        .await
        .expect("start the broker");
    TestApp {
        base: format!("http://{}", running.addr),
        http: reqwest::Client::new(),
        running,
        database_url,
        servicenow,
    }
}

impl TestApp {
    /// Seeds the change a grant-request body cites as approved for its user,
    /// then POSTs it.
    pub async fn request_grant(&self, body: &Value) -> (u16, Value) {
        self.servicenow.approve_body(body, SystemClock.now());
        self.post("/api/v1/grants", body).await
    }

    /// A signed ServiceNow webhook delivery of `record`.
    pub async fn webhook(&self, delivery: &str, record: &Value) -> (u16, Value, bool) {
        let verifier = jit_itsm::WebhookVerifier::new(
            SecretString::from(WEBHOOK_SECRET),
            Duration::from_secs(300),
        );
        let body = serde_json::to_vec(record).expect("json");
        let ts = SystemClock.now().timestamp();
        let signature = verifier.sign(ts, delivery, &body);
        self.raw_webhook(
            &[
                ("X-JIT-Timestamp", ts.to_string()),
                ("X-JIT-Delivery", delivery.to_owned()),
                ("X-JIT-Signature", signature),
            ],
            body,
        )
        .await
    }

    pub async fn raw_webhook(
        &self,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (u16, Value, bool) {
        let mut r = self
            .http
            .post(format!("{}/webhooks/servicenow", self.base))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        let r = r.send().await.expect("POST webhook");
        let status = r.status().as_u16();
        let replayed = r.headers().contains_key("x-jit-replayed");
        (status, r.json().await.unwrap_or(Value::Null), replayed)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The grant, once `field` is set (a verified change is recorded just
    /// after the read-back that proves it); as it is after 10 s otherwise.
    pub async fn grant_with(&self, id: &str, field: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, g) = self.get(&format!("/api/v1/grants/{id}")).await;
            if !g[field].is_null() || std::time::Instant::now() > deadline {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}
