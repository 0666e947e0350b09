//! Building the broker for a test: in-process with a manual clock, or the
//! real HTTP server on port 0 with the system clock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use jit_app::{App, Clock, Directory, ManualClock, Store, SystemClock, Worker, WorkerConfig};
use jit_domain::Policy;
use jit_scim::{ScimAuth, ScimClient, ScimConfig};
use jit_server::config::{ApiKeyConfig, Config};
use secrecy::SecretString;
use serde_json::Value;

use crate::{Backend, SCIM_TOKEN, fresh_database, workspace_root};

pub const API_KEY: &str = "e2e-api-key-0123456789abcdef";

pub fn shipped_policy_path() -> PathBuf {
    workspace_root().join("policies/policy.toml")
}

pub fn shipped_policy() -> Policy {
    jit_server::load_policy(&shipped_policy_path()).expect("the shipped policy is valid")
}

/// A SCIM client for a base URL, as the broker configures it.
pub fn scim_client(base_url: &str, timeout: Duration) -> ScimClient {
    ScimClient::new(ScimConfig {
        base_url: url::Url::parse(base_url).expect("base URL"),
        users_path: "Users".into(),
        auth: ScimAuth::Bearer(SecretString::from(SCIM_TOKEN)),
        timeout,
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
}

/// 2026-11-23T10:00:00Z: tests start here.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_428_000, 0).expect("t0")
}

impl Stack {
    pub async fn new(backend: Backend, directory: Arc<dyn Directory>) -> Self {
        Self::with_policy(backend, directory, shipped_policy()).await
    }

    pub async fn with_policy(
        backend: Backend,
        directory: Arc<dyn Directory>,
        policy: Policy,
    ) -> Self {
        let database_url = fresh_database(backend).await;
        let store = jit_store::open(&database_url, true, 5)
            .await
            .expect("open store");
        let clock = Arc::new(ManualClock::new(t0()));
        let app = Arc::new(App::new(
            store.clone(),
            directory,
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
        }
    }

    pub fn advance(&self, secs: i64) {
        self.clock.advance(TimeDelta::seconds(secs));
    }

    pub async fn run_due(&self) -> usize {
        self.worker.run_due().await.expect("run due jobs")
    }

    pub async fn request(&self, body: Value) -> jit_domain::Grant {
        self.app
            .request_grant("test", &body)
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
}

pub async fn spawn_app(backend: Backend, scim_base_url: Option<&str>) -> TestApp {
    let database_url = fresh_database(backend).await;
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        policy: shipped_policy_path(),
        ..Config::default()
    };
    config.database.url = SecretString::from(database_url.clone());
    config.database.max_connections = 5;
    config.api_keys = vec![ApiKeyConfig {
        name: "e2e".into(),
        sha256: jit_server::http::hash_key(API_KEY),
    }];
    let dev = scim_base_url.is_none();
    if let Some(base) = scim_base_url {
        config.scim.base_url = Some(base.to_owned());
        config.scim.bearer_token = Some(SecretString::from(SCIM_TOKEN));
    }
    let running = jit_server::start(config, dev, Arc::new(SystemClock))
        .await
        .expect("start the broker");
    TestApp {
        base: format!("http://{}", running.addr),
        http: reqwest::Client::new(),
        running,
        database_url,
    }
}

impl TestApp {
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
