//! jit-server: wiring only. Config → policy → store → directory → app →
//! worker + HTTP. `start` is what the binary runs and what tests call on
//! port 0 with a fresh database.

pub mod cli;
pub mod config;
pub mod http;
pub mod sandbox;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App as ActixApp, HttpServer, web};
use anyhow::{Context, bail};
use jit_app::{App, Clock, Directory, Worker};
use jit_domain::Policy;
use jit_scim::{ScimAuth, ScimClient, ScimConfig};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Notify, oneshot};
use tracing_actix_web::TracingLogger;

use crate::config::{ApiKeyConfig, Config, ScimProfile, secret};

/// The API key `serve --dev` accepts when no key is configured. Public by
/// design: the sandbox holds nothing real.
pub const DEV_API_KEY: &str = "dev-sandbox-key";
/// Where `serve --dev` keeps its data unless told otherwise.
pub const DEV_DATABASE_URL: &str = "sqlite://jit-broker-dev.db";

pub fn load_policy(path: &Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
    Ok(Policy::from_toml(&path.display().to_string(), &text)?)
}

/// The SCIM client the config describes.
pub fn directory_from_config(config: &Config) -> anyhow::Result<ScimClient> {
    let s = &config.scim;
    let timeout = Duration::from_secs(s.timeout_secs.max(1));
    let parse = |key: &str, v: &str| {
        url::Url::parse(v).with_context(|| format!("`scim.{key}` is not a URL"))
    };
    let mut scim = match s.profile {
        ScimProfile::Generic => {
            let Some(base) = &s.base_url else {
                bail!("`scim.base_url` is required for the generic SCIM profile")
            };
            let token = secret("scim.bearer_token", &s.bearer_token, &s.bearer_token_file)?
                .context("`scim.bearer_token` (or `scim.bearer_token_file`) is required for the generic SCIM profile")?;
            ScimConfig {
                base_url: parse("base_url", base)?,
                users_path: "Users".into(),
                auth: ScimAuth::Bearer(token),
                timeout,
            }
        }
        ScimProfile::Genesys => {
            let client_id = s
                .client_id
                .clone()
                .context("`scim.client_id` is required for the genesys profile")?;
            let client_secret = secret("scim.client_secret", &s.client_secret, &s.client_secret_file)?
                .context("`scim.client_secret` (or `scim.client_secret_file`) is required for the genesys profile")?;
            let region = s.region.as_deref().unwrap_or("mypurecloud.com");
            let mut c = ScimConfig::genesys(region, client_id, client_secret)?;
            if let Some(base) = &s.base_url {
                c.base_url = parse("base_url", base)?;
            }
            if let (Some(token_url), ScimAuth::ClientCredentials { token_url: t, .. }) =
                (&s.token_url, &mut c.auth)
            {
                *t = parse("token_url", token_url)?;
            }
            c
        }
    };
    if let Some(p) = &s.users_path {
        scim.users_path = p.clone();
    }
    scim.timeout = timeout;
    Ok(ScimClient::new(scim)?)
}

/// A started broker: HTTP server and worker.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub worker_wake: Arc<Notify>,
    server: actix_web::dev::ServerHandle,
    server_task: tokio::task::JoinHandle<std::io::Result<()>>,
    worker_stop: oneshot::Sender<()>,
    worker_task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the HTTP server stops by itself (it does not handle signals).
    pub async fn stopped(&mut self) {
        let _ = (&mut self.server_task).await;
    }

    pub async fn stop(self) {
        self.server.stop(true).await;
        let _ = self.server_task.await;
        let _ = self.worker_stop.send(());
        let _ = self.worker_task.await;
    }
}

/// Starts the broker. `dev`: the in-memory sandbox directory and, when no
/// API key is configured, [`DEV_API_KEY`].
pub async fn start(config: Config, dev: bool, clock: Arc<dyn Clock>) -> anyhow::Result<Running> {
    let policy = Arc::new(load_policy(&config.policy)?);
    let store = jit_store::open(
        config.database.url.expose_secret(),
        true,
        config.database.max_connections,
    )
    .await
    .context("opening the database")?;
    let listener = TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;

    let directory: Arc<dyn Directory> = if dev {
        Arc::new(ScimClient::new(ScimConfig {
            base_url: url::Url::parse(&format!("http://{addr}{}", sandbox::BASE_PATH))?,
            users_path: "Users".into(),
            auth: ScimAuth::Bearer(SecretString::from("sandbox")),
            timeout: Duration::from_secs(5),
        })?)
    } else {
        Arc::new(directory_from_config(&config)?)
    };
    let mut keys = config.api_keys.clone();
    if dev && keys.is_empty() {
        keys.push(ApiKeyConfig {
            name: "dev".into(),
            sha256: http::hash_key(DEV_API_KEY),
        });
    }
    if keys.is_empty() {
        tracing::warn!("no api_keys configured: every API call will be refused");
    }

    let app = Arc::new(App::new(store, directory, clock, policy));
    let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let worker = Arc::new(Worker::new(
        app.clone(),
        owner,
        config.worker.to_worker_config(),
    ));
    let worker_wake = worker.waker();
    let (worker_stop, stop_rx) = oneshot::channel::<()>();
    let worker_task = tokio::spawn(worker.run(async {
        let _ = stop_rx.await;
    }));

    let state = web::Data::new(http::ApiState {
        app: app.clone(),
        keys,
        worker_wake: worker_wake.clone(),
        max_body_bytes: config.max_body_bytes,
    });
    let sandbox = dev.then(|| web::Data::new(sandbox::SandboxDirectory::seeded()));
    let server = HttpServer::new(move || {
        let mut a = ActixApp::new()
            .wrap(TracingLogger::default())
            .app_data(state.clone())
            .configure(http::routes);
        if let Some(sandbox) = &sandbox {
            a = a.app_data(sandbox.clone()).configure(sandbox::routes);
        }
        a
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let server_task = tokio::spawn(server);
    if dev {
        tracing::warn!(%addr, api_key = DEV_API_KEY, "SANDBOX MODE: in-memory SCIM directory at {}; nothing real is touched", sandbox::BASE_PATH);
    }
    tracing::info!(%addr, "jit-broker listening");
    Ok(Running {
        addr,
        app,
        worker_wake,
        server: handle,
        server_task,
        worker_stop,
        worker_task,
    })
}
