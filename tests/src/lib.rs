//! The end-to-end harness: real peers, started here, stopped at exit.
//!
//! - `scim2-server` (PyPI; someone else's SCIM 2.0 server) from `.venv-peers`,
//!   one per test process with `--dynamic-tenants`: each test gets its own
//!   tenant, so tests share nothing.
//! - PostgreSQL: `JIT_TEST_DATABASE_URL` when set, else a throwaway cluster
//!   (initdb and pg_ctl as the postgres user, on a free port); each test gets its own database.
//! - SQLite: a fresh file per test.
//!
//! `scripts/test` installs the peers; the harness only starts them.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub mod app;
pub mod fleet;
pub mod genesys;
pub mod proxy;
pub mod slack;
pub mod web;

pub const SCIM_TOKEN: &str = "e2e-scim-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The `p`th percentile (0–100) of ascending `sorted`, by the nearest rank
/// between its ends.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

// ------------------------------------------------------------- cleanup

enum Cleanup {
    Kill(Child),
    PgStop(PathBuf),
    /// Removed after every process is gone (a browser profile, say).
    RemoveDir(PathBuf),
}

static CLEANUP: Mutex<Vec<Cleanup>> = Mutex::new(Vec::new());

extern "C" fn cleanup_at_exit() {
    let mut list = CLEANUP.lock().unwrap_or_else(|p| p.into_inner());
    list.sort_by_key(|c| matches!(c, Cleanup::RemoveDir(_)));
    for c in list.drain(..) {
        match c {
            Cleanup::Kill(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Cleanup::PgStop(dir) => {
                let _ = Command::new("runuser")
                    .args(["-u", "postgres", "--", &pg_bin("pg_ctl"), "-D"])
                    .arg(dir.join("data"))
                    .args(["-m", "immediate", "stop"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = std::fs::remove_dir_all(&dir);
            }
            Cleanup::RemoveDir(dir) => {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
}

fn on_exit(c: Cleanup) {
    static REGISTER: OnceLock<()> = OnceLock::new();
    REGISTER.get_or_init(|| unsafe {
        // SAFETY: registers a plain extern "C" fn; libtest returns from main normally, so it runs.
        libc::atexit(cleanup_at_exit);
    });
    CLEANUP.lock().unwrap_or_else(|p| p.into_inner()).push(c);
}

/// Waits (bounded) until something listens on `port` of 127.0.0.1.
pub fn wait_for_port(port: u16, what: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not start listening on port {port} within {timeout:?}")
}

// ---------------------------------------------------------------- SCIM

/// The shared `scim2-server`; tests take a tenant each.
pub struct ScimPeer {
    pub port: u16,
}

pub fn scim_peer() -> &'static ScimPeer {
    static PEER: OnceLock<ScimPeer> = OnceLock::new();
    PEER.get_or_init(|| {
        start_scim_peer().expect("start scim2-server (run scripts/test, which installs it)")
    })
}

/// A program of the Python test peers' venv (`scripts/test` installs it).
pub fn peer_program(name: &str) -> PathBuf {
    std::env::var_os("JIT_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv-peers"))
        .join("bin")
        .join(name)
}

fn start_scim_peer() -> anyhow::Result<ScimPeer> {
    let exe = peer_program("scim2-server");
    if !exe.exists() {
        bail!(
            "{} is missing: `scripts/test` installs the test peers",
            exe.display()
        );
    }
    let port = free_port();
    let child = Command::new(&exe)
        .args([
            "--hostname",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--bearer-token",
            SCIM_TOKEN,
            "--dynamic-tenants",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawning {}", exe.display()))?;
    on_exit(Cleanup::Kill(child));
    wait_for_port(port, "scim2-server", Duration::from_secs(20))?;
    Ok(ScimPeer { port })
}

/// One test's own directory on the shared SCIM server.
#[derive(Clone)]
pub struct Tenant {
    pub base_url: String,
    http: reqwest::Client,
}

impl Tenant {
    pub fn new() -> Self {
        let peer = scim_peer();
        Self {
            base_url: format!(
                "http://127.0.0.1:{}/t{}",
                peer.port,
                uuid::Uuid::new_v4().simple()
            ),
            http: reqwest::Client::new(),
        }
    }

    /// Creates a user with baseline roles; returns its SCIM id.
    pub async fn create_user(&self, user_name: &str, roles: &[&str]) -> String {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name, "active": true,
            "roles": roles.iter().map(|r| json!({"value": r})).collect::<Vec<_>>(),
        });
        let r = self
            .http
            .post(format!("{}/Users", self.base_url))
            .bearer_auth(SCIM_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("POST /Users");
        assert_eq!(r.status(), 201, "creating {user_name}");
        let v: Value = r.json().await.expect("user JSON");
        v["id"].as_str().expect("id").to_owned()
    }

    /// The user as the server holds it, read directly (not through the broker).
    async fn user(&self, user_name: &str) -> Value {
        let filter = format!("userName eq \"{user_name}\"");
        let mut list = self.list_users(&[("filter", filter)]).await;
        list["Resources"][0].take()
    }

    /// `GET /Users` with `query`, read directly.
    async fn list_users(&self, query: &[(&str, String)]) -> Value {
        self.http
            .get(format!("{}/Users", self.base_url))
            .query(query)
            .bearer_auth(SCIM_TOKEN)
            .send()
            .await
            .expect("GET /Users")
            .json()
            .await
            .expect("list JSON")
    }

    /// Creates `n` users at once (8 requests in flight), named and given
    /// baseline roles by `user(i)`; answers how long it took.
    pub async fn fill(
        &self,
        n: usize,
        user: impl Fn(usize) -> (String, &'static [&'static str]) + Send + Sync + 'static,
    ) -> Duration {
        let started = std::time::Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let user = Arc::new(user);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (tenant, next, user) = (self.clone(), next.clone(), user.clone());
            set.spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let (name, roles) = user(i);
                    tenant.create_user(&name, roles).await;
                }
            });
        }
        while set.join_next().await.is_some() {}
        started.elapsed()
    }

    /// Adds a role behind the broker's back, as an admin or another system would.
    pub async fn add_role(&self, user_name: &str, role: &str) {
        let add = json!({"op": "add", "path": "roles", "value": [{"value": role}]});
        self.patch_roles(user_name, add, &format!("adding {role}"))
            .await;
    }

    /// Takes a role away behind the broker's back.
    pub async fn remove_role(&self, user_name: &str, role: &str) {
        let path = format!("roles[value eq {}]", json!(role));
        let remove = json!({"op": "remove", "path": path});
        self.patch_roles(user_name, remove, &format!("removing {role}"))
            .await;
    }

    async fn patch_roles(&self, user_name: &str, operation: Value, what: &str) {
        let user = self.user(user_name).await;
        let id = user["id"].as_str().expect("user id");
        let patch = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [operation],
        });
        let r = self
            .http
            .patch(format!("{}/Users/{id}", self.base_url))
            .bearer_auth(SCIM_TOKEN)
            .json(&patch)
            .send()
            .await
            .expect("PATCH /Users");
        assert!(
            r.status().is_success(),
            "{what} for {user_name}: {}",
            r.status()
        );
    }

    /// Every user of the tenant, read directly: SCIM id → (userName, roles).
    pub async fn users(&self) -> HashMap<String, (String, Vec<String>)> {
        let mut users = HashMap::new();
        loop {
            let page = self
                .list_users(&[
                    ("startIndex", (users.len() + 1).to_string()),
                    ("count", "500".to_owned()),
                ])
                .await;
            let resources = page["Resources"].as_array().cloned().unwrap_or_default();
            if resources.is_empty() {
                return users;
            }
            for u in resources {
                let roles = u["roles"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["value"].as_str().map(str::to_owned))
                    .collect();
                let name = u["userName"].as_str().unwrap_or_default().to_owned();
                users.insert(
                    u["id"].as_str().unwrap_or_default().to_owned(),
                    (name, roles),
                );
            }
        }
    }

    /// The roles the server holds for a user, read directly (not through the broker).
    pub async fn roles_of(&self, user_name: &str) -> Vec<String> {
        let mut roles: Vec<String> = self.user(user_name).await["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["value"].as_str().map(str::to_owned))
            .collect();
        roles.sort();
        roles
    }

    /// Polls until `user` holds (or does not hold) `role`; returns when it did.
    pub async fn wait_for_role(
        &self,
        user: &str,
        role: &str,
        held: bool,
        timeout: Duration,
    ) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if self.roles_of(user).await.iter().any(|r| r == role) == held {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "{user} {} {role} after {timeout:?}",
                if held { "never got" } else { "still holds" }
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Default for Tenant {
    fn default() -> Self {
        Self::new()
    }
}

// ------------------------------------------------------------ databases

fn pg_bin(name: &str) -> String {
    format!("/usr/lib/postgresql/15/bin/{name}")
}

/// `postgres://…/postgres` of the server tests create their databases on.
fn postgres_admin_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("JIT_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => PgCluster::start()
            .map(|c| c.admin_url())
            .expect("start a throwaway PostgreSQL cluster"),
    })
}

/// A throwaway PostgreSQL 15 cluster of one's own (initdb, `fsync=off`),
/// which a test may stop and start again on the same port; removed when
/// the test binary exits.
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
}

impl PgCluster {
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("jit-pg-").tempdir()?.keep();
        Command::new("chown").arg("postgres").arg(&dir).status()?;
        let cluster = Self {
            dir,
            port: free_port(),
        };
        let data = cluster.dir.join("data").display().to_string();
        cluster.pg(&[
            &pg_bin("initdb"),
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ])?;
        cluster.start_again()?;
        on_exit(Cleanup::PgStop(cluster.dir.clone()));
        Ok(cluster)
    }

    fn pg(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// `postgres://…/postgres`, to create databases on.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again), on the same port; returns once it accepts.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let dir = self.dir.display().to_string();
        let opts = format!(
            "-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port
        );
        self.pg(&[
            &pg_bin("pg_ctl"),
            "-D",
            &format!("{dir}/data"),
            "-l",
            &format!("{dir}/log"),
            "-w",
            "-o",
            &opts,
            "start",
        ])
    }

    /// Stops the server as an operator's restart does (`-m fast`: open
    /// connections are cut, committed work is kept).
    pub fn stop(&self) -> anyhow::Result<()> {
        let data = self.dir.join("data").display().to_string();
        self.pg(&[&pg_bin("pg_ctl"), "-D", &data, "-m", "fast", "-w", "stop"])
    }

    /// A new, empty database on this cluster.
    pub async fn create_database(&self) -> String {
        create_database_on(&self.admin_url()).await
    }
}

/// A database URL no other test uses.
pub async fn fresh_database(backend: Backend) -> String {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::Builder::new()
                .prefix("jit-sqlite-")
                .tempdir()
                .expect("tempdir")
                .keep();
            format!("sqlite://{}", dir.join("jit.db").display())
        }
        Backend::Postgres => create_database_on(postgres_admin_url()).await,
    }
}

async fn create_database_on(admin: &str) -> String {
    let name = format!("jit_test_{}", uuid::Uuid::new_v4().simple());
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{name}")
}

// ---------------------------------------------------------------- SMTP

/// A real SMTP server (`aiosmtpd`, PyPI) writing each message it accepts to
/// a Maildir; one per test, so a test can stop it and start it again on the
/// same port.
pub struct SmtpPeer {
    pub port: u16,
    maildir: tempfile::TempDir,
    child: Option<Child>,
    /// STARTTLS required, with this certificate and key.
    tls: Option<(PathBuf, PathBuf)>,
    /// AUTH required with this login and password (implies `tls`).
    auth: Option<(String, String)>,
}

/// One message as the SMTP server stored it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub subject: String,
    pub to: String,
    pub from: String,
    pub message_id: String,
    pub text: String,
    pub html: String,
}

impl SmtpPeer {
    pub fn start() -> Self {
        Self::start_with(None, None)
    }

    /// A server that requires STARTTLS, with a certificate for `localhost`
    /// issued by a fresh test CA; answers the CA's PEM path.
    pub fn start_starttls() -> (Self, PathBuf) {
        Self::start_tls(None)
    }

    /// STARTTLS and AUTH (LOGIN/PLAIN) required with `user` / `password`.
    pub fn start_with_auth(user: &str, password: &str) -> (Self, PathBuf) {
        Self::start_tls(Some((user.to_owned(), password.to_owned())))
    }

    fn start_tls(auth: Option<(String, String)>) -> (Self, PathBuf) {
        let dir = tempfile::tempdir().expect("tls dir").keep();
        let p = |name: &str| dir.join(name);
        std::fs::write(
            p("leaf.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("extensions file");
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .current_dir(&dir)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl");
            assert!(status.success(), "openssl {args:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=jit-e2e test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ]);
        (
            Self::start_with(Some((p("cert.pem"), p("key.pem"))), auth),
            p("ca.pem"),
        )
    }

    fn start_with(tls: Option<(PathBuf, PathBuf)>, auth: Option<(String, String)>) -> Self {
        let maildir = tempfile::tempdir().expect("maildir");
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.path().join(sub)).expect("maildir folders");
        }
        let mut peer = Self {
            port: free_port(),
            maildir,
            child: None,
            tls,
            auth,
        };
        peer.resume();
        peer
    }

    /// Starts the server again on the same port (after `stop`).
    pub fn resume(&mut self) {
        let python = peer_program("python");
        let mut command = Command::new(&python);
        match (&self.tls, &self.auth) {
            (Some((cert, key)), Some((user, password))) => {
                command
                    .arg(workspace_root().join("tests/peers/smtp_auth.py"))
                    .arg(self.port.to_string())
                    .arg(self.maildir.path())
                    .args([cert, key])
                    .args([user, password]);
            }
            _ => {
                command
                    .args(["-m", "aiosmtpd", "-n", "-l"])
                    .arg(format!("127.0.0.1:{}", self.port))
                    .args(self.tls.iter().flat_map(|(cert, key)| {
                        [
                            "--tlscert".into(),
                            cert.as_os_str().to_owned(),
                            "--tlskey".into(),
                            key.as_os_str().to_owned(),
                        ]
                    }))
                    .args(["-c", "aiosmtpd.handlers.Mailbox"])
                    .arg(self.maildir.path());
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd (scripts/test installs it)");
        self.child = Some(child);
        wait_for_port(self.port, "aiosmtpd", Duration::from_secs(20)).expect("aiosmtpd listening");
    }

    /// Stops the server: connections are refused until `resume`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        let mut files: Vec<_> = std::fs::read_dir(self.maildir.path().join("new"))
            .expect("maildir/new")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files
            .iter()
            .map(|path| {
                let raw = std::fs::read(path).expect("message file");
                let mail = mailparse::parse_mail(&raw).expect("RFC 5322 message");
                let header = |name: &str| {
                    mailparse::MailHeaderMap::get_first_value(mail.headers.as_slice(), name)
                        .unwrap_or_default()
                };
                let part = |mime: &str| {
                    mail.subparts
                        .iter()
                        .find(|p| p.ctype.mimetype == mime)
                        .and_then(|p| p.get_body().ok())
                        .unwrap_or_default()
                };
                ReceivedMail {
                    subject: header("Subject"),
                    to: header("To"),
                    from: header("From"),
                    message_id: header("Message-ID"),
                    text: part("text/plain"),
                    html: part("text/html"),
                }
            })
            .collect()
    }
}

impl Drop for SmtpPeer {
    fn drop(&mut self) {
        self.stop();
    }
}
