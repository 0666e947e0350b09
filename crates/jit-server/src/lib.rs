//! jit-server: wiring only. Config → policy → store → directory → app →
//! worker + HTTP. `start` is what the binary runs and what tests call on
//! port 0 with a fresh database.

pub mod api;
pub mod cli;
pub mod config;
mod request_log;
pub mod sandbox;
pub mod sandbox_servicenow;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App as ActixApp, HttpServer, web};
use anyhow::{Context, bail};
use jit_app::{App, Clock, Directory, TicketSystem, Worker};
use jit_domain::{Policy, SweepKind};
use jit_itsm::{
    NoTicketSystem, ServiceNowAuth, ServiceNowClient, ServiceNowConfig, WebhookVerifier,
};
use jit_scim::{ScimAuth, ScimClient, ScimConfig};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Notify, oneshot};
use tracing_actix_web::TracingLogger;

use crate::config::{ApiKeyConfig, Config, ScimProfile, secret};

/// The API key `serve --dev` accepts when no key is configured. Public by
/// design: the sandbox holds nothing real.
pub const DEV_API_KEY: &str = "dev-sandbox-key";

/// How many emails the `--dev` sandbox mailbox keeps.
pub const SANDBOX_MAILS_KEPT: usize = 300;
/// The webhook secret `serve --dev` uses when none is configured.
pub const DEV_WEBHOOK_SECRET: &str = "dev-sandbox-webhook-secret";
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
                platform_api: None,
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
    // One second of the pace as burst, rounded down: with the pace's 5 %
    // headroom this leaves the target's own one-second burst a token of
    // slack for requests that arrive closer together than they were sent.
    let budget = match s.pace_per_minute() {
        Some(pace) => jit_app::Budget::per_minute(pace, pace / 60),
        None => jit_app::Budget::unlimited(),
    };
    Ok(ScimClient::new(scim)?.with_budget(Arc::new(budget)))
}

/// The ServiceNow client the config describes; `None` without `instance_url`.
pub fn tickets_from_config(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Option<ServiceNowClient>> {
    let s = &config.servicenow;
    let Some(instance) = &s.instance_url else {
        return Ok(None);
    };
    let mut instance_url =
        url::Url::parse(instance).context("`servicenow.instance_url` is not a URL")?;
    if !instance_url.path().ends_with('/') {
        let path = format!("{}/", instance_url.path());
        instance_url.set_path(&path);
    }
    let password = secret("servicenow.password", &s.password, &s.password_file)?;
    let client_secret = secret(
        "servicenow.client_secret",
        &s.client_secret,
        &s.client_secret_file,
    )?;
    let auth = match (&s.user, password, &s.client_id, client_secret) {
        (_, _, Some(client_id), Some(client_secret)) => ServiceNowAuth::ClientCredentials {
            token_url: match &s.token_url {
                Some(t) => url::Url::parse(t).context("`servicenow.token_url` is not a URL")?,
                None => instance_url.join("oauth_token.do")?,
            },
            client_id: client_id.clone(),
            client_secret,
        },
        (Some(user), Some(password), None, None) => ServiceNowAuth::Basic {
            user: user.clone(),
            password,
        },
        _ => bail!(
            "`servicenow` needs `user` + `password` (basic auth) or `client_id` + `client_secret` (OAuth)"
        ),
    };
    let config = ServiceNowConfig {
        instance_url,
        auth,
        timeout: Duration::from_secs(s.timeout_secs.max(1)),
        role_field: s.role_field.clone(),
    };
    Ok(Some(ServiceNowClient::new(config, clock)?))
}

/// The SMTP notifier the config describes; `None` without `notify.smtp_host`.
pub fn notifier_from_config(config: &Config) -> anyhow::Result<Option<jit_notify::SmtpNotifier>> {
    let n = &config.notify;
    let Some(host) = &n.smtp_host else {
        return Ok(None);
    };
    let smtp = jit_notify::SmtpConfig {
        host: host.clone(),
        port: n.smtp_port,
        tls: match n.tls {
            config::SmtpTls::Starttls => jit_notify::TlsMode::StartTls,
            config::SmtpTls::Tls => jit_notify::TlsMode::Tls,
            config::SmtpTls::None => jit_notify::TlsMode::None,
        },
        username: n.username.clone(),
        password: secret("notify.password", &n.password, &n.password_file)?,
        timeout: Duration::from_secs(n.timeout_secs.max(1)),
        from: n.from.clone(),
        recipients: jit_notify::Recipients {
            default: n.to.clone(),
            by_kind: n.recipients.clone(),
        },
        templates_dir: n.templates_dir.clone(),
        ca_file: n.ca_file.clone(),
    };
    Ok(Some(jit_notify::SmtpNotifier::new(
        smtp,
        Duration::from_secs(n.revocation_slo_secs),
    )?))
}

/// The directory of commands that never reach it (audit export,
/// checkpoints): any call is a permanent error.
struct NoDirectory;

#[async_trait::async_trait]
impl Directory for NoDirectory {
    async fn list_users(
        &self,
        _start_index: u64,
        _count: u32,
    ) -> Result<jit_app::DirectoryPage, jit_app::DirectoryError> {
        Err(no_directory())
    }
    async fn find_user(
        &self,
        _user: &jit_domain::UserName,
    ) -> Result<jit_app::DirectoryUser, jit_app::DirectoryError> {
        Err(no_directory())
    }
    async fn get_user(&self, _id: &str) -> Result<jit_app::DirectoryUser, jit_app::DirectoryError> {
        Err(no_directory())
    }
    async fn change_role(
        &self,
        _user: &jit_app::DirectoryUser,
        _role: &jit_domain::RoleName,
        _change: jit_domain::RoleChange,
    ) -> Result<Option<jit_app::DirectoryUser>, jit_app::DirectoryError> {
        Err(no_directory())
    }
}

fn no_directory() -> jit_app::DirectoryError {
    jit_app::DirectoryError::Permanent("this command does not reach the directory".into())
}

/// The use cases over the store alone, for commands that read or sign the
/// audit log and never reach the directory or ServiceNow.
pub fn bare_app(config: &Config, store: Arc<dyn jit_app::Store>) -> anyhow::Result<App> {
    Ok(App::new(
        store,
        Arc::new(NoDirectory),
        Arc::new(jit_itsm::NoTicketSystem),
        Arc::new(jit_app::SystemClock),
        Arc::new(load_policy(&config.policy)?),
    ))
}

/// The process's metrics recorder, installed once (several brokers in one
/// test process share it).
fn prometheus() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::Mutex<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::Mutex::new(None);
    let mut handle = HANDLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(h) = handle.as_ref() {
        return Ok(h.clone());
    }
    // Seconds: from a fast converge to a removal that waited out an outage.
    let buckets = [
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    let installed = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&buckets)?
        .install_recorder()?;
    *handle = Some(installed.clone());
    Ok(installed)
}

/// How often a replica renews its presence, and how long it counts for.
const REPLICA_BEAT: Duration = Duration::from_secs(2);
const REPLICA_LEASE: Duration = Duration::from_secs(15);

/// Keeps this replica counted among the live ones and its budget at
/// `pace` over their number, until `stop`; then leaves the count at once.
async fn share_budget(
    store: Arc<dyn jit_app::Store>,
    clock: Arc<dyn Clock>,
    owner: String,
    budget: Arc<jit_app::Budget>,
    pace: u32,
    stop: impl std::future::Future<Output = ()>,
) {
    const PREFIX: &str = "replica:";
    let name = format!("{PREFIX}{owner}");
    let lease =
        chrono::TimeDelta::from_std(REPLICA_LEASE).unwrap_or(chrono::TimeDelta::seconds(15));
    tokio::pin!(stop);
    loop {
        let now = clock.now();
        let live = match store.try_lease(&name, &owner, now, now + lease).await {
            Ok(_) => store.live_leases(PREFIX, now).await,
            Err(e) => Err(e),
        };
        match live {
            Ok(n) => {
                let share = (pace / n.max(1)).max(1);
                if budget.pace_per_minute() != Some(share) {
                    tracing::info!(
                        replicas = n,
                        requests_per_minute = share,
                        "directory budget shared"
                    );
                    budget.set_per_minute(share);
                }
            }
            Err(e) => tracing::warn!(error = %e, "counting live replicas failed; the pace stays"),
        }
        tokio::select! {
            _ = tokio::time::sleep(REPLICA_BEAT) => {}
            _ = &mut stop => break,
        }
    }
    if let Err(e) = store.release_lease(&name, &owner).await {
        tracing::warn!(error = %e, "leaving the replica count failed; it lapses by itself");
    }
}

/// The SIEM endpoints the config describes (`[[notify.webhooks]]`).
pub fn sinks_from_config(config: &Config) -> anyhow::Result<Vec<jit_notify::webhook::WebhookSink>> {
    let mut names = std::collections::BTreeSet::new();
    let mut sinks = Vec::new();
    for w in &config.notify.webhooks {
        if !names.insert(w.name.as_str()) {
            bail!("notify.webhooks: the name `{}` is used twice", w.name);
        }
        let url = url::Url::parse(&w.url)
            .with_context(|| format!("notify.webhooks `{}`: url `{}`", w.name, w.url))?;
        let Some(signing) = secret("notify.webhooks.secret", &w.secret, &w.secret_file)? else {
            bail!(
                "notify.webhooks `{}`: a `secret` (or `secret_file`) signs every event",
                w.name
            );
        };
        sinks.push(jit_notify::webhook::WebhookSink::new(
            jit_notify::webhook::WebhookConfig {
                name: w.name.clone(),
                url,
                secret: signing,
                bearer_token: secret(
                    "notify.webhooks.bearer_token",
                    &w.bearer_token,
                    &w.bearer_token_file,
                )?,
                timeout: Duration::from_secs(w.timeout_secs.max(1)),
            },
        )?);
    }
    Ok(sinks)
}

/// A started broker: HTTP server and worker.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub worker_wake: Arc<Notify>,
    server: actix_web::dev::ServerHandle,
    /// `None` once [`Running::stopped`] saw it end.
    server_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    worker_stop: oneshot::Sender<()>,
    worker_task: tokio::task::JoinHandle<()>,
    /// Who this replica is in every lease it takes.
    owner: String,
    scheduler: Option<tokio_cron_scheduler::JobScheduler>,
    /// The directory budget, when its pace is shared among live replicas.
    pub shared_budget: Option<Arc<jit_app::Budget>>,
    /// Held while serving a SQLite file.
    _serve_lock: Option<jit_store::ServeLock>,
    /// The mailer and the SIEM feeds: stopped with the broker.
    background: Vec<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    /// `serve --dev`: the sandbox ServiceNow's changes (tests edit them).
    pub sandbox_changes: Option<sandbox_servicenow::ChangeBook>,
}

impl Running {
    /// Waits until the HTTP server stops by itself (it does not handle signals).
    pub async fn stopped(&mut self) {
        if let Some(task) = &mut self.server_task {
            let _ = task.await;
            self.server_task = None;
        }
    }

    /// Stops gracefully, as on SIGTERM: no new schedule fires, no connection
    /// or job is taken; jobs and the email in flight finish within their
    /// bounds (`worker.shutdown_grace_secs` for jobs); everything still
    /// leased to this replica is handed back so another one takes it at
    /// once; then requests in flight get 5 s more.
    pub async fn stop(mut self) {
        tracing::info!("stopping");
        if let Some(mut scheduler) = self.scheduler.take() {
            let _ = scheduler.shutdown().await;
        }
        // No new connection is accepted, but the HTTP server stops last.
        // Each of its workers runs its own runtime, and a PostgreSQL or HTTP
        // connection a request opened lives on it: whoever uses that
        // connection while the runtime ends loses the call. So the jobs, the
        // mailer and the hand-back all finish while those runtimes are up.
        self.server.pause().await;
        let _ = self.worker_stop.send(());
        let background = self.background.drain(..).map(|(stop, task)| {
            let _ = stop.send(());
            task
        });
        let background = futures_util::future::join_all(background);
        let _ = tokio::join!(&mut self.worker_task, background);
        hand_back(&self.app, &self.owner).await;
        self.server.stop(true).await;
        if let Some(task) = self.server_task.take() {
            let _ = task.await;
        }
        tracing::info!("stopped");
    }
}

/// Everything still leased to this replica goes back in one
/// transaction. A request still in flight cannot claim a job (the
/// worker has stopped); a sweep one started loses its lease and may
/// overlap another replica's for at most the 5 s the requests have
/// left, which the re-decision before every write keeps harmless.
async fn hand_back(app: &App, owner: &str) {
    match app.store.release_owner(owner).await {
        Ok(released) => tracing::info!(
            jobs = released.job_ids.len(),
            job_ids = ?released.job_ids,
            outbox = released.outbox,
            leases = released.leases,
            "leases handed back"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "handing back leases failed; they lapse by themselves")
        }
    }
}

/// Starts the broker. `dev`: the in-memory sandbox directory and, when no
/// API key is configured, [`DEV_API_KEY`].
pub async fn start(config: Config, dev: bool, clock: Arc<dyn Clock>) -> anyhow::Result<Running> {
    let policy = Arc::new(load_policy(&config.policy)?);
    // Before opening: a second `serve` on one SQLite file must not write.
    let serve_lock = jit_store::lock_for_serving(config.database.url.expose_secret())?;
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

    let mut shared_budget = None;
    let directory: Arc<dyn Directory> = if dev {
        Arc::new(ScimClient::new(ScimConfig {
            base_url: url::Url::parse(&format!("http://{addr}{}", sandbox::BASE_PATH))?,
            users_path: "Users".into(),
            auth: ScimAuth::Bearer(SecretString::from("sandbox")),
            timeout: Duration::from_secs(5),
            platform_api: None,
        })?)
    } else {
        let client = directory_from_config(&config)?;
        shared_budget = (config.scim.replicas == 0 && client.budget().pace_per_minute().is_some())
            .then(|| client.budget());
        Arc::new(client)
    };
    let sandbox_changes = dev.then(|| sandbox_servicenow::ChangeBook::seeded(clock.now()));
    let tickets: Arc<dyn TicketSystem> = match (dev, tickets_from_config(&config, clock.clone())?) {
        (_, Some(client)) => Arc::new(client),
        (true, None) => {
            if let Some(book) = &sandbox_changes {
                book.require_basic_auth("sandbox", "sandbox");
            }
            Arc::new(ServiceNowClient::new(
                ServiceNowConfig {
                    instance_url: url::Url::parse(&format!(
                        "http://{addr}{}/",
                        sandbox_servicenow::BASE_PATH
                    ))?,
                    auth: ServiceNowAuth::Basic {
                        user: "sandbox".into(),
                        password: SecretString::from("sandbox"),
                    },
                    timeout: Duration::from_secs(5),
                    role_field: config.servicenow.role_field.clone(),
                },
                clock.clone(),
            )?)
        }
        (false, None) => {
            if let Some(role) = policy.roles().find(|r| r.privileged && r.require_ticket) {
                bail!(
                    "the policy requires a change ticket for `{}` but no ServiceNow instance is configured \
                     (set servicenow.instance_url, or require_ticket = false in the policy)",
                    role.name
                );
            }
            Arc::new(NoTicketSystem)
        }
    };
    let ticket_system_configured = dev || config.servicenow.instance_url.is_some();
    let webhook_secret = secret(
        "servicenow.webhook_secret",
        &config.servicenow.webhook_secret,
        &config.servicenow.webhook_secret_file,
    )?
    .or_else(|| dev.then(|| SecretString::from(DEV_WEBHOOK_SECRET)));
    let webhook = webhook_secret.map(|secret| {
        WebhookVerifier::new(
            secret,
            Duration::from_secs(config.servicenow.webhook_max_skew_secs),
        )
    });
    let mut keys = config.api_keys.clone();
    if dev && keys.is_empty() {
        keys.push(ApiKeyConfig {
            name: "dev".into(),
            sha256: api::hash_key(DEV_API_KEY),
            admin: true,
        });
    }
    if keys.is_empty() {
        tracing::warn!("no api_keys configured: every API call will be refused");
    }

    if config.reconciler.oauth_clients && (dev || config.scim.profile != ScimProfile::Genesys) {
        bail!(
            "`reconciler.oauth_clients` needs the genesys SCIM profile (the Platform API lists OAuth clients)"
        );
    }
    let notifier = notifier_from_config(&config)?;
    let mut app = App::new(store, directory, tickets, clock, policy);
    app.revocation_slo =
        chrono::TimeDelta::seconds(i64::try_from(config.notify.revocation_slo_secs).unwrap_or(60));
    app.soc_group = config.web.soc_group.clone();
    let app = Arc::new(app);
    let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let reconcile = config.reconciler.to_reconcile_config();
    let mut worker = Worker::new(
        app.clone(),
        owner.clone(),
        config
            .worker
            .to_worker_config()
            .within_budget(config.scim.pace_per_minute()),
    );
    if let Some(budget) = &shared_budget {
        worker = worker.following(budget.clone());
    }
    let worker = Arc::new(worker);
    let worker_wake = worker.waker();
    let pulse = worker.pulse();
    let pages = web_from_config(&config, dev, addr, app.clone(), worker_wake.clone()).await?;
    let mut background = Vec::new();
    let mut spawn = |run: Box<dyn FnOnce(oneshot::Receiver<()>) -> tokio::task::JoinHandle<()>>| {
        let (stop, stop_rx) = oneshot::channel::<()>();
        background.push((stop, run(stop_rx)));
    };
    // `--dev` without SMTP: the emails go to the sandbox mailbox instead, so
    // the outbox drains and a newcomer can read them.
    let mailbox = (dev && notifier.is_none())
        .then(|| {
            jit_notify::sandbox::SandboxMailbox::new(
                SANDBOX_MAILS_KEPT,
                Duration::from_secs(config.notify.revocation_slo_secs),
            )
        })
        .transpose()?
        .map(Arc::new);
    let mail_to: Option<Arc<dyn jit_app::Notifier>> = match (notifier, &mailbox) {
        (Some(smtp), _) => Some(Arc::new(smtp)),
        (None, Some(sandbox)) => Some(sandbox.clone()),
        (None, None) => None,
    };
    match mail_to {
        Some(notifier) => {
            let mailer = Arc::new(jit_app::Mailer::new(
                app.store.clone(),
                notifier,
                app.clock.clone(),
                owner.clone(),
                jit_app::MailerConfig::default(),
            ));
            spawn(Box::new(move |stop| {
                tokio::spawn(mailer.run(async {
                    let _ = stop.await;
                }))
            }));
        }
        None => {
            tracing::warn!(
                "notify.smtp_host is not set: SOC email is queued in the outbox but not sent"
            );
        }
    }
    // Replicas sharing one OAuth client split its budget: each renews a
    // lease of its own and paces at the pace over the live leases.
    if let Some(budget) = shared_budget.clone() {
        let (store, clock, me) = (app.store.clone(), app.clock.clone(), owner.clone());
        let pace = budget.pace_per_minute().unwrap_or(1);
        spawn(Box::new(move |stop| {
            tokio::spawn(share_budget(store, clock, me, budget, pace, async {
                let _ = stop.await;
            }))
        }));
    }
    // Histograms keep every sample until upkeep folds them into buckets; a
    // broker nobody scrapes would otherwise keep each grant's latencies.
    let metrics = prometheus()?;
    let upkeep = metrics.clone();
    spawn(Box::new(move |stop| {
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => upkeep.run_upkeep(),
                    _ = &mut stop => break,
                }
            }
        })
    }));
    for sink in sinks_from_config(&config)? {
        let feed = Arc::new(jit_app::Feed::new(
            app.store.clone(),
            Arc::new(sink),
            app.clock.clone(),
            owner.clone(),
            jit_app::FeedConfig::default(),
        ));
        spawn(Box::new(move |stop| {
            tokio::spawn(feed.run(async {
                let _ = stop.await;
            }))
        }));
    }
    let (worker_stop, stop_rx) = oneshot::channel::<()>();
    let worker_task = tokio::spawn(worker.run(async {
        let _ = stop_rx.await;
    }));

    let bearer = pages.as_ref().and_then(|p| match &p.login {
        jit_web::Login::Oidc(oidc) => Some(oidc.clone()),
        jit_web::Login::Sandbox(_) => None,
    });
    let state = web::Data::new(api::ApiState {
        bearer,
        app: app.clone(),
        keys,
        worker_wake: worker_wake.clone(),
        max_body_bytes: config.max_body_bytes,
        webhook,
        reconcile: reconcile.clone(),
        owner: owner.clone(),
        pulse,
        metrics,
        ticket_system_configured,
        servicenow_seen: tokio::sync::Mutex::new(None),
    });
    let sandbox = dev.then(|| web::Data::new(sandbox::SandboxDirectory::seeded()));
    let sandbox_book = sandbox_changes.clone().map(web::Data::new);
    let server = HttpServer::new(move || {
        let mut a = ActixApp::new()
            .wrap(TracingLogger::<request_log::RequestLog>::new())
            .app_data(state.clone())
            .configure(api::routes);
        if let Some(sandbox) = &sandbox {
            a = a.app_data(sandbox.clone()).configure(sandbox::routes);
        }
        if let Some(mailbox) = &mailbox {
            a = a
                .app_data(web::Data::from(mailbox.clone()))
                .configure(sandbox::mailbox_routes);
        }
        if let Some(book) = &sandbox_book {
            a = a
                .app_data(book.clone())
                .configure(sandbox_servicenow::routes(sandbox_servicenow::BASE_PATH));
        }
        // Last: the pages own `/`.
        if let Some(pages) = &pages {
            a = a.service(jit_web::service(pages.clone()));
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
    let ticket_poll = ticket_system_configured.then_some(config.servicenow.poll_cron.as_str());
    let sweeps = if config.reconciler.enabled {
        vec![
            (
                SweepKind::Holders,
                "reconciler.holders_cron",
                config.reconciler.holders_cron.as_str(),
            ),
            (
                SweepKind::Deep,
                "reconciler.deep_cron",
                config.reconciler.deep_cron.as_str(),
            ),
        ]
    } else {
        Vec::new()
    };
    let mut soc = Vec::new();
    if !config.notify.digest_cron.is_empty() {
        soc.push((
            SocJob::Digest,
            "notify.digest_cron",
            config.notify.digest_cron.as_str(),
        ));
    }
    // Only Genesys Cloud says when a user last logged in.
    let logins_readable = !dev && config.scim.profile == ScimProfile::Genesys;
    if logins_readable
        && !config.notify.break_glass_cron.is_empty()
        && app.policy.break_glass_users().next().is_some()
    {
        soc.push((
            SocJob::BreakGlassLogins,
            "notify.break_glass_cron",
            config.notify.break_glass_cron.as_str(),
        ));
    }
    if let Some(key) = config.audit.checkpoint_key()? {
        soc.push((
            SocJob::Checkpoint(Arc::new(key)),
            "audit.checkpoint_cron",
            config.audit.checkpoint_cron.as_str(),
        ));
    }
    let scheduler = start_schedules(
        app.clone(),
        ticket_poll,
        &sweeps,
        soc,
        reconcile,
        owner.clone(),
    )
    .await?;
    tracing::info!(%addr, "jit-broker listening");
    Ok(Running {
        addr,
        app,
        worker_wake,
        server: handle,
        server_task: Some(server_task),
        worker_stop,
        worker_task,
        owner,
        scheduler,
        shared_budget,
        _serve_lock: serve_lock,
        background,
        sandbox_changes,
    })
}

/// The engineer's pages as configured: OpenID Connect when `[web.oidc]` names
/// a provider, the labelled sandbox login with `--dev`, otherwise none.
async fn web_from_config(
    config: &Config,
    dev: bool,
    addr: SocketAddr,
    app: Arc<App>,
    wake: Arc<Notify>,
) -> anyhow::Result<Option<web::Data<jit_web::Web>>> {
    let w = &config.web;
    if !w.enabled {
        return Ok(None);
    }
    let public_url = w
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let login = match (&w.oidc.issuer_url, dev) {
        (Some(issuer), _) => {
            let client_secret = secret(
                "web.oidc.client_secret",
                &w.oidc.client_secret,
                &w.oidc.client_secret_file,
            )?
            .context(
                "`web.oidc.client_secret` (or `_file`) is required with `web.oidc.issuer_url`",
            )?;
            let oidc = jit_web::Oidc::discover(jit_web::OidcConfig {
                issuer_url: issuer.clone(),
                client_id: w
                    .oidc
                    .client_id
                    .clone()
                    .context("`web.oidc.client_id` is required with `web.oidc.issuer_url`")?,
                client_secret,
                redirect_url: format!("{}/auth/callback", public_url.trim_end_matches('/')),
                post_logout_url: format!("{}/signed-out", public_url.trim_end_matches('/')),
                user_claim: w.oidc.user_claim.clone(),
                groups_claim: w.oidc.groups_claim.clone(),
                scopes: w.oidc.scopes.clone(),
            })
            .await?;
            jit_web::Login::Oidc(Arc::new(oidc))
        }
        (None, true) => jit_web::Login::Sandbox(sandbox::login_users()),
        (None, false) => {
            tracing::warn!(
                "no [web.oidc] provider configured: the web form is off (the JSON API works)"
            );
            return Ok(None);
        }
    };
    let session_key = match secret(
        "web.session_secret",
        &w.session_secret,
        &w.session_secret_file,
    )? {
        Some(s) => jit_web::Web::session_key_from(&s),
        None if dev => jit_web::Web::random_session_key(),
        None => bail!(
            "`web.session_secret` (or `_file`, at least 64 bytes) is required for the web form"
        ),
    };
    if !w.secure_cookies
        && !dev
        && !public_url.starts_with("http://127.0.0.1")
        && !public_url.starts_with("http://localhost")
    {
        bail!("`web.secure_cookies = false` is only allowed on localhost");
    }
    let settings = jit_web::WebSettings {
        session_key,
        secure_cookies: w.secure_cookies && !(dev && public_url.starts_with("http://")),
        idle_timeout: Duration::from_secs(w.idle_timeout_secs.max(60)),
        absolute_timeout: Duration::from_secs(w.absolute_timeout_secs.max(300)),
    };
    Ok(Some(web::Data::new(jit_web::Web::new(
        app, login, settings, wake,
    )?)))
}

/// The periodic triggers: the ticket poll behind the webhook and the
/// reconciler sweep. Both are idempotent, so a missed or doubled tick (or
/// several replicas firing) does no harm; per-grant timing never depends on
/// them (expiry comes from the durable jobs table).
/// The SOC's and the auditor's periodic work.
#[derive(Clone)]
enum SocJob {
    Digest,
    BreakGlassLogins,
    Checkpoint(Arc<jit_store::CheckpointKey>),
}

async fn start_schedules(
    app: Arc<App>,
    ticket_poll: Option<&str>,
    sweeps: &[(SweepKind, &str, &str)],
    soc: Vec<(SocJob, &str, &str)>,
    config: jit_app::ReconcileConfig,
    owner: String,
) -> anyhow::Result<Option<tokio_cron_scheduler::JobScheduler>> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    if ticket_poll.is_none() && sweeps.is_empty() && soc.is_empty() {
        return Ok(None);
    }
    let scheduler = JobScheduler::new().await?;
    if let Some(cron) = ticket_poll {
        let app = app.clone();
        let job = Job::new_async(cron, move |_, _| {
            let app = app.clone();
            Box::pin(async move {
                match app.recheck_tickets().await {
                    Ok(report) => tracing::info!(
                        checked = report.tickets_checked, ended = report.grants_ended,
                        unavailable = report.unavailable.len(), "ticket poll"
                    ),
                    Err(e) => tracing::error!(error = %e, "ticket poll failed"),
                }
            })
        })
        .with_context(|| format!("`servicenow.poll_cron` `{cron}` is not a cron schedule (sec min hour day month weekday)"))?;
        scheduler.add(job).await?;
    }
    for &(kind, setting, cron) in sweeps {
        let (app, config, owner) = (app.clone(), config.clone(), owner.clone());
        let job = Job::new_async(cron, move |_, _| {
            let (app, config, owner) = (app.clone(), config.clone(), owner.clone());
            Box::pin(async move {
                match app.reconcile(kind, "cron", false, &owner, &config).await {
                    Ok(_) => {}
                    Err(jit_app::AppError::Busy(why)) => tracing::debug!(%why, "reconcile skipped"),
                    Err(e) => {
                        tracing::error!(kind = kind.as_str(), error = %e, "reconcile sweep failed")
                    }
                }
            })
        })
        .with_context(|| {
            format!("`{setting}` `{cron}` is not a cron schedule (sec min hour day month weekday)")
        })?;
        scheduler.add(job).await?;
    }
    for (what, setting, cron) in soc {
        let (app, owner) = (app.clone(), owner.clone());
        let job = Job::new_async(cron, move |_, _| {
            let (app, owner, what) = (app.clone(), owner.clone(), what.clone());
            Box::pin(async move {
                match what {
                    SocJob::Checkpoint(key) => match app.checkpoint_audit(key.as_ref()).await {
                        Ok(Some(cp)) => tracing::info!(seq = cp.seq, "audit checkpoint signed"),
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "signing an audit checkpoint failed"),
                    },
                    SocJob::Digest => {
                        if let Err(e) = app.soc_digest().await {
                            tracing::error!(error = %e, "the SOC digest failed");
                        }
                    }
                    SocJob::BreakGlassLogins => match app.check_break_glass_logins(&owner).await {
                        Ok(check) if check.unsupported => tracing::warn!(
                            "the directory cannot tell when a break-glass account last logged in"
                        ),
                        Ok(_) => {}
                        Err(jit_app::AppError::Busy(why)) => tracing::debug!(%why, "skipped"),
                        Err(e) => tracing::error!(error = %e, "checking break-glass logins failed"),
                    },
                }
            })
        })
        .with_context(|| {
            format!("`{setting}` `{cron}` is not a cron schedule (sec min hour day month weekday)")
        })?;
        scheduler.add(job).await?;
    }
    scheduler.start().await?;
    Ok(Some(scheduler))
}
