//! jit-server: wiring only. Config → policy → store → directory → app →
//! worker + HTTP. `start` is what the binary runs and what tests call on
//! port 0 with a fresh database.

pub mod api;
pub mod cli;
pub mod config;
mod request_log;
pub mod sandbox;
pub mod sandbox_servicenow;
pub mod sandbox_slack;
mod slack;
pub mod telemetry;

mod adapters;
mod background;
pub mod connections;
mod events;
mod replicas;
mod running;
mod schedules;

pub use adapters::{
    bare_app, directory_from_config, grant_divisions, load_policy, notifier_from_config,
    sinks_from_config, tickets_from_config,
};
pub use running::Running;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App as ActixApp, HttpServer, web};
use anyhow::{Context, bail};
use jit_app::{App, Clock, Worker};
use secrecy::ExposeSecret;
use tokio::sync::{Notify, oneshot};
use tracing_actix_web::TracingLogger;

use crate::config::{Config, ScimProfile, secret};

/// The API key `serve --dev` accepts when no key is configured. Public by
/// design: the sandbox holds nothing real.
pub const DEV_API_KEY: &str = "dev-sandbox-key";

/// How many emails the `--dev` sandbox mailbox keeps.
pub const SANDBOX_MAILS_KEPT: usize = 300;
/// The webhook secret `serve --dev` uses when none is configured.
pub const DEV_WEBHOOK_SECRET: &str = "dev-sandbox-webhook-secret-0123456789";
/// The header secret `serve --dev` accepts relayed Genesys events with, and
/// its Genesys Cloud stand-in relays them with, when none is configured.
pub const DEV_EVENTS_SECRET: &str = "dev-sandbox-events-secret-0123456789abcdef";
/// `--dev`'s sandbox Slack: the bot token and the signing secret (public).
pub const DEV_SLACK_TOKEN: &str = "xoxb-dev-sandbox";
pub const DEV_SLACK_SIGNING_SECRET: &str = "dev-sandbox-slack-signing-secret";
/// Where `serve --dev` keeps its data unless told otherwise.
pub const DEV_DATABASE_URL: &str = "sqlite://jit-broker-dev.db";

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

/// Starts the broker. `dev`: the in-memory sandbox directory and, when no
/// API key is configured, [`DEV_API_KEY`].
pub async fn start(config: Config, dev: bool, clock: Arc<dyn Clock>) -> anyhow::Result<Running> {
    let policy = Arc::new(adapters::policy_for(&config, dev)?);
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

    let (directory, shared_budget) = adapters::directory_for(&config, &policy, dev, addr)?;
    let sandbox_changes = dev.then(|| sandbox_servicenow::ChangeBook::seeded(clock.now()));
    let tickets = adapters::tickets_for(
        &config,
        addr,
        clock.clone(),
        &policy,
        sandbox_changes.as_ref(),
    )?;
    let ticket_system_configured = dev || config.servicenow.instance_url.is_some();
    let webhook = adapters::webhook_for(&config, dev)?;
    let keys = adapters::api_keys_for(&config, dev);
    if config.reconciler.oauth_clients && !dev && config.scim.profile != ScimProfile::Genesys {
        bail!(
            "`reconciler.oauth_clients` needs the genesys SCIM profile (the Platform API lists OAuth clients)"
        );
    }
    let notifier = notifier_from_config(&config)?;
    let mut app = App::new(store, directory, tickets, clock, policy);
    app.revocation_slo =
        chrono::TimeDelta::seconds(i64::try_from(config.notify.revocation_slo_secs).unwrap_or(60));
    app.soc_group = config.web.soc_group.clone();
    app.activity_plan = config.activity.plan()?;
    app.request_limiter = jit_app::RequestLimiter::new(&config.limits.request_limits(&keys));
    let app = Arc::new(app);
    // Rows that became one when user names took one form are told, once.
    if app
        .store
        .report_user_name_collisions(app.now(), jit_app::SYSTEM_ACTOR, "user_names_collided")
        .await?
    {
        tracing::warn!(
            "user names that differed only by case were merged: see the audit event user_names_collided"
        );
    }
    let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let reconcile = config.reconciler.to_reconcile_config();
    let worker = worker_for(&config, &app, &owner, shared_budget.as_ref());
    let worker_wake = worker.waker();
    let pulse = worker.pulse();
    let pages = web_from_config(&config, dev, addr, app.clone(), worker_wake.clone()).await?;
    let metrics = prometheus()?;
    let chat = adapters::chat_for(&config, dev, addr, &app)?;
    let mut background = background::start(
        &config,
        dev,
        &app,
        &owner,
        shared_budget.clone(),
        background::Outlets {
            smtp: notifier,
            chat_feeds: chat.feeds,
        },
        metrics.clone(),
    )?;
    let (worker_stop, stop_rx) = oneshot::channel::<()>();
    let worker_task = tokio::spawn(worker.run(async {
        let _ = stop_rx.await;
    }));

    let files = connections::raise_file_limit(config.limits.max_connections);
    let state = web::Data::new(api::ApiState {
        bearer: id_token_verifier(pages.as_ref()),
        app: app.clone(),
        keys,
        worker_wake: worker_wake.clone(),
        max_body_bytes: config.max_body_bytes,
        webhook_max_body_bytes: config.limits.webhook_max_body_bytes,
        files,
        webhook,
        reconcile: reconcile.clone(),
        owner: owner.clone(),
        pulse,
        metrics,
        ticket_system_configured,
        servicenow_seen: tokio::sync::Mutex::new(None),
        permissions: Arc::default(),
        events: background.events.take(),
        slack: chat.door,
    });
    probe_permissions(&app, &config, &state);
    let server = http_server(
        listener,
        &config.limits,
        files,
        state,
        Sandboxes {
            genesys: dev.then(|| web::Data::new(sandbox::genesys_seeded(&app.policy, addr))),
            changes: sandbox_changes.clone().map(web::Data::new),
            mailbox: background.mailbox.clone(),
            slack: chat.sandbox.map(web::Data::from),
        },
        pages,
    )?;
    let handle = server.handle();
    let server_task = tokio::spawn(server);
    if dev {
        tracing::warn!(%addr, api_key = DEV_API_KEY, "SANDBOX MODE: an in-memory Genesys Cloud at {} (the org: {}/org); nothing real is touched", sandbox::BASE_PATH, sandbox::BASE_PATH);
    }
    let scheduler = schedules::start_from_config(
        &config,
        dev,
        ticket_system_configured,
        app.clone(),
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
        background: background.tasks,
        sandbox_changes,
    })
}

/// The web form's OpenID provider, to verify ID tokens on the API too.
fn id_token_verifier(pages: Option<&web::Data<jit_web::Web>>) -> Option<Arc<jit_web::Oidc>> {
    pages.and_then(|p| match &p.login {
        jit_web::Login::Oidc(oidc) => Some(oidc.clone()),
        jit_web::Login::Sandbox(_) => None,
    })
}

/// Probes the directory's permissions once, in the background: a missing
/// one is logged as the feature that will fail, and readiness shows it.
fn probe_permissions(app: &Arc<App>, config: &Config, state: &api::ApiState) {
    let (app, slot) = (app.clone(), state.permissions.clone());
    let oauth_clients = config.reconciler.oauth_clients;
    tokio::spawn(async move {
        let Some(probes) = app.directory.probe_permissions(oauth_clients).await else {
            return;
        };
        for p in &probes {
            match &p.outcome {
                jit_app::ProbeOutcome::Missing => tracing::error!(
                    feature = p.feature,
                    permission = p.permission,
                    "the directory's OAuth client lacks a permission: this feature will fail"
                ),
                jit_app::ProbeOutcome::Failed(why) => tracing::warn!(
                    feature = p.feature, permission = p.permission, %why,
                    "could not check a permission of the directory's OAuth client"
                ),
                _ => {}
            }
        }
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(probes);
    });
}

/// The converge worker, paced inside the directory's budget (and following
/// the replicas' shared lease, if any).
fn worker_for(
    config: &Config,
    app: &Arc<App>,
    owner: &str,
    shared_budget: Option<&Arc<jit_app::Budget>>,
) -> Arc<Worker> {
    let mut worker = Worker::new(
        app.clone(),
        owner.to_owned(),
        config
            .worker
            .to_worker_config()
            .within_budget(config.scim.pace_per_minute()),
    );
    if let Some(budget) = shared_budget {
        worker = worker.following(budget.clone());
    }
    Arc::new(worker)
}

/// The sandboxes `serve --dev` mounts beside the API.
struct Sandboxes {
    genesys: Option<web::Data<jit_genesys_standin::GenesysStandIn>>,
    changes: Option<web::Data<sandbox_servicenow::ChangeBook>>,
    mailbox: Option<Arc<jit_notify::sandbox::SandboxMailbox>>,
    slack: Option<web::Data<sandbox_slack::SandboxSlack>>,
}

/// The HTTP server: the API and webhooks, the sandboxes, then the pages
/// (which own `/`). Two workers; signals are the broker's to handle.
/// HTTP workers: the revocation path runs on the main runtime, not on them.
const HTTP_WORKERS: usize = 2;

fn http_server(
    listener: TcpListener,
    limits: &config::LimitsSettings,
    files: connections::Files,
    state: web::Data<api::ApiState>,
    sandboxes: Sandboxes,
    pages: Option<web::Data<jit_web::Web>>,
) -> anyhow::Result<actix_web::dev::Server> {
    let body_deadline = Duration::from_secs(limits.body_timeout_secs.max(1));
    let peers = connections::PeerConnections::new(limits.max_connections_per_peer);
    Ok(HttpServer::new(move || {
        let mut a = ActixApp::new()
            .wrap(actix_web::middleware::from_fn(move |req, next| {
                connections::body_deadline(body_deadline, req, next)
            }))
            .wrap(TracingLogger::<request_log::RequestLog>::new())
            .app_data(state.clone())
            .configure(api::routes);
        if let Some(genesys) = &sandboxes.genesys {
            a = a
                .app_data(genesys.clone())
                .configure(sandbox::genesys_routes);
        }
        if let Some(mailbox) = &sandboxes.mailbox {
            a = a
                .app_data(web::Data::from(mailbox.clone()))
                .configure(sandbox::mailbox_routes);
        }
        if let Some(slack) = &sandboxes.slack {
            a = a
                .app_data(slack.clone())
                .app_data(slack.standin.clone())
                .configure(sandbox_slack::routes);
        }
        if let Some(book) = &sandboxes.changes {
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
    .workers(HTTP_WORKERS)
    // actix counts connections per worker.
    .max_connections(files.max_connections.div_ceil(HTTP_WORKERS).max(1))
    .client_request_timeout(Duration::from_secs(
        limits.client_request_timeout_secs.max(1),
    ))
    .client_disconnect_timeout(Duration::from_secs(1))
    .keep_alive(Duration::from_secs(
        limits.client_request_timeout_secs.max(1) * 2,
    ))
    .on_connect(move |connection, ext| peers.on_connect(connection, ext))
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?
    .run())
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
