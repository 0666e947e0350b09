//! The web form's peers: a real OpenID provider (npm `oidc-provider`, started
//! per test on its own port) and a real headless Chromium driven through
//! chromedriver. `scripts/test` installs both.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use jit_app::Clock;
use jit_server::config::{ApiKeyConfig, Config};
use secrecy::SecretString;
use serde_json::Value;
use sha2::Digest;

use crate::app::{API_KEY, SERVICENOW_PASSWORD, SERVICENOW_USER, ServiceNow};
use crate::{
    Backend, Cleanup, SCIM_TOKEN, Tenant, free_port, fresh_database, on_exit, wait_for_port,
    workspace_root,
};

pub const CLIENT_ID: &str = "jit-broker";
pub const CLIENT_SECRET: &str = "jit-broker-test-secret-0123456789";
pub const OTHER_CLIENT_ID: &str = "other-app";
pub const OTHER_CLIENT_SECRET: &str = "other-app-test-secret-0123456789";
pub const OTHER_REDIRECT: &str = "http://127.0.0.1:9/cb";
/// 64 bytes: signs and encrypts the session cookie.
pub const SESSION_SECRET: &str =
    "web-test-session-secret-web-test-session-secret-web-test-session-!";

/// Where the provider puts the person's claims (`email`, `groups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claims {
    /// In the ID token itself.
    InIdToken,
    /// Only in the UserInfo answer (OIDC Core 5.4; oidc-provider's default):
    /// the code flow's ID token carries `sub` alone.
    FromUserInfo,
}

/// A provider process the test stops itself (killed when dropped).
pub struct Running(std::process::Child);

impl Running {
    pub fn stop(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One test's OpenID provider.
pub struct OidcPeer {
    pub issuer: String,
}

impl OidcPeer {
    /// Starts `tests/peers/oidc/provider.mjs` on a free port, claims in the
    /// ID token.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(Claims::InIdToken)
    }

    /// A provider on `port` signing with a key made at its start: started
    /// again on the same port, it has rotated its keys. The caller stops it.
    pub fn start_rotating(port: u16) -> anyhow::Result<(Self, Running)> {
        let dir = workspace_root().join("tests/peers/oidc");
        let child = Command::new("node")
            .arg("provider.mjs")
            .arg(port.to_string())
            .env("JIT_OIDC_FRESH_KEY", "1")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(log_file("oidc-provider"))
            .spawn()
            .context("spawning node (oidc-provider)")?;
        wait_for_port(port, "oidc-provider", Duration::from_secs(20))?;
        Ok((
            Self {
                issuer: format!("http://127.0.0.1:{port}"),
            },
            Running(child),
        ))
    }

    pub fn start_with(claims: Claims) -> anyhow::Result<Self> {
        let dir = workspace_root().join("tests/peers/oidc");
        if !dir.join("node_modules/oidc-provider").exists() {
            bail!(
                "{} has no node_modules: `scripts/test` installs oidc-provider",
                dir.display()
            );
        }
        let port = free_port();
        let child = Command::new("node")
            .arg("provider.mjs")
            .arg(port.to_string())
            .args((claims == Claims::FromUserInfo).then_some("userinfo"))
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(log_file("oidc-provider"))
            .spawn()
            .context("spawning node (oidc-provider)")?;
        on_exit(Cleanup::Kill(child));
        wait_for_port(port, "oidc-provider", Duration::from_secs(20))?;
        Ok(Self {
            issuer: format!("http://127.0.0.1:{port}"),
        })
    }

    /// An ID token for `login`, issued to `client_id`, as a CLI or another
    /// application would obtain it: the code flow with PKCE, by hand.
    pub async fn id_token(
        &self,
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        login: &str,
    ) -> anyhow::Result<String> {
        let http = cookie_client();
        let verifier = "a-pkce-verifier-long-enough-for-the-rfc-7636-minimum-of-43-chars";
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let mut auth = url::Url::parse(&format!("{}/auth", self.issuer))?;
        auth.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid email groups")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", "test-state")
            .append_pair("nonce", "test-nonce")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let back = provider_login(&http, auth.as_str(), login, redirect_uri).await?;
        let code = url::Url::parse(&back)?
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .context("no code")?;
        let token: Value = http
            .post(format!("{}/token", self.issuer))
            .basic_auth(client_id, Some(client_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
            ])
            .send()
            .await?
            .json()
            .await?;
        token["id_token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no id_token in {token}"))
    }
}

/// A log file for a peer under `target/peer-logs/` (its errors explain a failure).
fn log_file(name: &str) -> Stdio {
    let dir = workspace_root().join("target/peer-logs");
    let _ = std::fs::create_dir_all(&dir);
    std::fs::File::create(dir.join(format!("{name}-{}.log", free_port())))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// A browser-like HTTP client: keeps cookies, follows nothing by itself.
pub fn cookie_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

/// Walks the provider's devInteractions pages (login, then consent) from
/// `start` until it redirects to `back_to`; returns that URL (not followed).
pub async fn provider_login(
    http: &reqwest::Client,
    start: &str,
    login: &str,
    back_to: &str,
) -> anyhow::Result<String> {
    let mut url = start.to_owned();
    for _ in 0..12 {
        if url.starts_with(back_to) {
            return Ok(url);
        }
        let res = http.get(&url).send().await?;
        if let Some(next) = res.headers().get("location") {
            url = absolute(&url, next.to_str()?)?;
            continue;
        }
        let status = res.status();
        let page = res.text().await?;
        let action = page
            .split("action=\"")
            .nth(1)
            .and_then(|a| a.split('"').next())
            .with_context(|| format!("no form on {url} ({status}): {page}"))?;
        let target = absolute(&url, action)?;
        // devInteractions: a login form, then a consent form, each naming
        // its step in a hidden `prompt` field.
        let prompt = page
            .split("name=\"prompt\" value=\"")
            .nth(1)
            .and_then(|p| p.split('"').next())
            .unwrap_or("consent");
        let form: Vec<(&str, &str)> = if page.contains("name=\"login\"") {
            vec![("prompt", prompt), ("login", login), ("password", "any")]
        } else {
            vec![("prompt", prompt)]
        };
        let res = http.post(&target).form(&form).send().await?;
        url = absolute(
            &target,
            res.headers()
                .get("location")
                .with_context(|| format!("{target} answered {} without a redirect", res.status()))?
                .to_str()?,
        )?;
    }
    bail!("the provider never sent the browser back to {back_to}")
}

fn absolute(base: &str, location: &str) -> anyhow::Result<String> {
    Ok(url::Url::parse(base)?.join(location)?.to_string())
}

/// The real server with the web form on, signing in through `oidc`.
pub struct WebApp {
    pub base: String,
    pub running: jit_server::Running,
    pub oidc: OidcPeer,
    pub servicenow: ServiceNow,
    pub tenant: Tenant,
    pub database_url: String,
}

pub fn web_policy_path() -> PathBuf {
    workspace_root().join("tests/fixtures/web-policy.toml")
}

/// Starts a provider and the broker (SQLite, real SCIM tenant holding
/// `users`) with its web form signing in through that provider.
pub async fn spawn_web_app(users: &[(&str, &[&str])], clock: Arc<dyn Clock>) -> WebApp {
    spawn_web_app_on(Backend::Sqlite, Claims::InIdToken, users, clock).await
}

/// The same, on `backend`, with the provider putting its claims where
/// `claims` says.
pub async fn spawn_web_app_on(
    backend: Backend,
    claims: Claims,
    users: &[(&str, &[&str])],
    clock: Arc<dyn Clock>,
) -> WebApp {
    spawn_web_app_with(backend, claims, users, clock, |_| {}).await
}

/// The same, with the config changed by `tweak` before the start (another
/// directory, say).
pub async fn spawn_web_app_with(
    backend: Backend,
    claims: Claims,
    users: &[(&str, &[&str])],
    clock: Arc<dyn Clock>,
    tweak: impl FnOnce(&mut Config),
) -> WebApp {
    let oidc = OidcPeer::start_with(claims).expect("oidc-provider");
    spawn_web_app_at(backend, oidc, users, clock, tweak).await
}

/// The same, signing in through `oidc`, a provider the caller started.
pub async fn spawn_web_app_at(
    backend: Backend,
    oidc: OidcPeer,
    users: &[(&str, &[&str])],
    clock: Arc<dyn Clock>,
    tweak: impl FnOnce(&mut Config),
) -> WebApp {
    let tenant = Tenant::new();
    for (name, roles) in users {
        tenant.create_user(name, roles).await;
    }
    let servicenow = ServiceNow::start().await;
    let database_url = fresh_database(backend).await;
    let mut config = web_config(&database_url, &oidc, &servicenow, &tenant);
    tweak(&mut config);
    let running = jit_server::start(config, false, clock)
        .await
        .expect("start the broker with its web form");
    let base = format!("http://{}", running.addr);
    WebApp {
        base,
        running,
        oidc,
        servicenow,
        tenant,
        database_url,
    }
}

/// The configuration of a broker with its web form against these peers.
fn web_config(
    database_url: &str,
    oidc: &OidcPeer,
    servicenow: &ServiceNow,
    tenant: &Tenant,
) -> Config {
    let mut config = Config {
        // Port 0: the broker's public URL (and so its OIDC callback) is the
        // address it bound.
        listen: "127.0.0.1:0".parse().expect("addr"),
        policy: web_policy_path(),
        ..Config::default()
    };
    config.database.url = SecretString::from(database_url.to_owned());
    config.servicenow.instance_url = Some(servicenow.url.clone());
    config.servicenow.user = Some(SERVICENOW_USER.into());
    config.servicenow.password = Some(SecretString::from(SERVICENOW_PASSWORD));
    config.scim.base_url = Some(tenant.base_url.clone());
    config.scim.bearer_token = Some(SecretString::from(SCIM_TOKEN));
    config.api_keys = vec![ApiKeyConfig {
        name: "e2e".into(),
        sha256: jit_server::api::hash_key(API_KEY),
        admin: true,
        grant_requests_per_minute: None,
    }];
    config.web.secure_cookies = false;
    config.web.session_secret = Some(SecretString::from(SESSION_SECRET));
    config.web.soc_group = "soc".into();
    config.web.oidc.issuer_url = Some(oidc.issuer.clone());
    config.web.oidc.client_id = Some(CLIENT_ID.into());
    config.web.oidc.client_secret = Some(SecretString::from(CLIENT_SECRET));
    config.web.oidc.scopes = vec!["openid".into(), "email".into(), "groups".into()];
    config
}

impl WebApp {
    /// Another replica of the same broker: same database (PostgreSQL),
    /// provider, ServiceNow and directory, its own port. Answers its base URL.
    pub async fn replica(&self, clock: Arc<dyn Clock>) -> (String, jit_server::Running) {
        let config = web_config(
            &self.database_url,
            &self.oidc,
            &self.servicenow,
            &self.tenant,
        );
        let running = jit_server::start(config, false, clock)
            .await
            .expect("start a second replica");
        (format!("http://{}", running.addr), running)
    }

    /// Signs `login` in through the provider in a fresh cookie jar.
    pub async fn sign_in(&self, login: &str) -> reqwest::Client {
        self.sign_in_with_cookie(login).await.0
    }

    /// The same, also answering the session cookie (`jit_session=…`) the
    /// broker set.
    pub async fn sign_in_with_cookie(&self, login: &str) -> (reqwest::Client, String) {
        let (http, back) = self.start_login(login).await;
        let done = http.get(&back).send().await.expect("callback");
        assert_eq!(done.status(), 303, "callback");
        let cookie = done
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|c| c.to_str().ok())
            .find(|c| c.starts_with("jit_session="))
            .and_then(|c| c.split(';').next())
            .expect("a session cookie")
            .to_owned();
        (http, cookie)
    }

    /// A sign-in taken as far as the provider's redirect back to the broker:
    /// the cookie jar and the callback URL (with `code` and `state`), not
    /// yet visited.
    pub async fn start_login(&self, login: &str) -> (reqwest::Client, String) {
        let http = cookie_client();
        let start = http
            .get(format!("{}/login", self.base))
            .send()
            .await
            .expect("GET /login");
        let to_provider = start.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        let back = provider_login(
            &http,
            &to_provider,
            login,
            &format!("{}/auth/callback", self.base),
        )
        .await
        .expect("provider login");
        (http, back)
    }
}

/// The CSRF token a page's forms carry.
pub fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a form with a CSRF token")
        .to_owned()
}

// ---------------------------------------------------------------- browser

/// The shared chromedriver; each test opens its own browser sessions.
pub fn chromedriver() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning chromedriver (scripts/test installs chromium-driver)");
        on_exit(Cleanup::Kill(child));
        wait_for_port(port, "chromedriver", Duration::from_secs(20)).expect("chromedriver");
        format!("http://127.0.0.1:{port}")
    })
}

/// A new headless Chromium with an empty profile (its own cookies).
pub async fn browser() -> fantoccini::Client {
    let profile = tempfile::Builder::new()
        .prefix("jit-chromium-")
        .tempdir()
        .expect("tempdir")
        .keep();
    // Chromium writes to it until chromedriver is killed at exit.
    on_exit(Cleanup::RemoveDir(profile.clone()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    fantoccini::ClientBuilder::native()
        .capabilities(caps)
        .connect(chromedriver())
        .await
        .expect("a headless Chromium session")
}

/// Where the browser test saves its screenshots.
pub fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
        .join("target/web-screenshots");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Types `login` into the provider's sign-in page the browser is on, then
/// consents.
pub async fn provider_sign_in(b: &fantoccini::Client, login: &str) {
    b.wait()
        .for_element(fantoccini::Locator::Css("input[name=login]"))
        .await
        .expect("the provider's sign-in page");
    let field = |css: &'static str| b.find(fantoccini::Locator::Css(css));
    field("input[name=login]")
        .await
        .expect("the provider's sign-in page")
        .send_keys(login)
        .await
        .expect("the provider's sign-in page");
    field("input[name=password]")
        .await
        .expect("the provider's sign-in page")
        .send_keys("any")
        .await
        .expect("the provider's sign-in page");
    field("button[type=submit]")
        .await
        .expect("the provider's sign-in page")
        .click()
        .await
        .expect("the provider's sign-in page");
    b.wait()
        .for_element(fantoccini::Locator::Css(
            "input[name=prompt][value=consent]",
        ))
        .await
        .expect("the provider's sign-in page");
    field("button[type=submit]")
        .await
        .expect("the provider's sign-in page")
        .click()
        .await
        .expect("the provider's sign-in page");
}
