//! Several real `jit-broker serve` processes on one PostgreSQL, as an
//! operator runs them for high availability: what the replica test and the
//! replica benchmark start, stop, kill and read back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jit_app::{GrantFilter, Store};
use jit_domain::Grant;
use serde_json::{Value, json};

use crate::app::{API_KEY, SERVICENOW_PASSWORD, SERVICENOW_USER, test_policy_path};
use crate::{SCIM_TOKEN, free_port};

/// One replica's process and where it answers.
pub struct Replica {
    child: Child,
    pub base: String,
}

impl Replica {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// N replicas sharing one config file: one database, one SCIM target (the
/// same OAuth client), one ServiceNow.
pub struct Fleet {
    dir: tempfile::TempDir,
    bin: PathBuf,
    config: PathBuf,
    replicas: Vec<Option<Replica>>,
}

/// What the replicas are pointed at.
pub struct FleetTargets<'a> {
    pub database_url: &'a str,
    pub scim_base_url: &'a str,
    pub servicenow_url: &'a str,
    /// The target's budget (`scim.requests_per_minute`), if it has one.
    pub requests_per_minute: Option<u32>,
    /// More TOML, appended to the config (sections of its own).
    pub extra: &'a str,
}

impl Fleet {
    /// `bin`: the `jit-broker` binary to run.
    pub fn new(bin: &Path, size: usize, targets: &FleetTargets<'_>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("jit-fleet-")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("jit-broker.toml");
        std::fs::write(
            &config,
            format!(
                "policy = {policy:?}\n[database]\nurl = {db:?}\nmax_connections = 10\n\
                 [scim]\nbase_url = {scim:?}\n{budget}\
                 [servicenow]\ninstance_url = {sn:?}\nuser = {sn_user:?}\n\
                 [[api_keys]]\nname = \"fleet\"\nsha256 = {hash:?}\nadmin = true\n\
                 [log]\nformat = \"json\"\n{extra}\n",
                policy = test_policy_path().display().to_string(),
                db = targets.database_url,
                scim = targets.scim_base_url,
                budget = targets
                    .requests_per_minute
                    .map(|n| format!("requests_per_minute = {n}\n"))
                    .unwrap_or_default(),
                sn = targets.servicenow_url,
                sn_user = SERVICENOW_USER,
                hash = jit_server::api::hash_key(API_KEY),
                extra = targets.extra,
            ),
        )
        .expect("write the config");
        Self {
            dir,
            bin: bin.to_owned(),
            config,
            replicas: (0..size).map(|_| None).collect(),
        }
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("replica-{i}.log"))
    }

    /// Starts replica `i` (again) on a new port; returns once it listens,
    /// which it does only after the database is open and migrated.
    pub async fn start(&mut self, i: usize) -> &Replica {
        let replica = self.start_detached(i).await;
        self.adopt(i, replica)
    }

    /// Takes in a replica started with [`Fleet::start_detached`].
    pub fn adopt(&mut self, i: usize, replica: Replica) -> &Replica {
        assert!(self.replicas[i].is_none(), "replica {i} is running");
        self.replicas[i].insert(replica)
    }

    /// [`Fleet::start`] without taking the fleet: several start at once.
    pub async fn start_detached(&self, i: usize) -> Replica {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("replica log");
        let port = free_port();
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("JIT_SCIM__BEARER_TOKEN", SCIM_TOKEN)
            .env("JIT_SERVICENOW__PASSWORD", SERVICENOW_PASSWORD)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start jit-broker");
        let mut replica = Replica {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = replica.child.try_wait() {
                panic!("replica {i} exited ({status}): {}", self.log(i));
            }
            assert!(Instant::now() < deadline, "replica {i} did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        replica
    }

    /// SIGKILL: no shutdown code runs, leases lapse by themselves.
    pub fn kill(&mut self, i: usize) {
        let mut replica = self.replicas[i].take().expect("a running replica");
        replica.child.kill().expect("SIGKILL");
        replica.child.wait().expect("reap");
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid(i)).expect("pid");
        // SAFETY: signals a child of ours that has not been reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal {signal}");
    }

    /// SIGSTOP: the replica is frozen, so a test can read what it holds
    /// knowing it cannot change.
    pub fn pause(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    /// SIGCONT, after [`Fleet::pause`].
    pub fn resume(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    /// SIGTERM, as an orchestrator stops a pod (and SIGCONT, in case it was
    /// paused); answers how the process exited and how long it took.
    pub async fn terminate(&mut self, i: usize) -> (ExitStatus, Duration) {
        let started = Instant::now();
        self.signal(i, libc::SIGTERM);
        self.resume(i);
        let mut replica = self.replicas[i].take().expect("a running replica");
        let deadline = started + Duration::from_secs(120);
        loop {
            if let Some(status) = replica.child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            assert!(Instant::now() < deadline, "replica {i} ignored SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Replica `i`'s process id (it leads the owner name of its leases).
    pub fn pid(&self, i: usize) -> u32 {
        self.replicas[i].as_ref().expect("a running replica").pid()
    }

    /// The running replicas' base URLs.
    pub fn bases(&self) -> Vec<String> {
        self.replicas
            .iter()
            .flatten()
            .map(|r| r.base.clone())
            .collect()
    }

    /// Replica `i`'s log, over all its lives.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Runs the broker's CLI against the fleet's config (e.g. `audit verify`).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run jit-broker")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for replica in self.replicas.iter_mut().flatten() {
            let _ = replica.child.kill();
            let _ = replica.child.wait();
        }
    }
}

/// Files `n` grant requests, `in_flight` at a time, spread round-robin over
/// `bases`; `body(i)` makes request `i` when it is sent. Every one must be
/// accepted; answers the grant ids in request order.
pub async fn request_grants(
    bases: &[String],
    n: usize,
    body: impl Fn(usize) -> Value + Send + Sync + 'static,
    in_flight: usize,
) -> Vec<String> {
    let http = reqwest::Client::new();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let body = std::sync::Arc::new(body);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (http, next, body, bases) = (http.clone(), next.clone(), body.clone(), bases.to_vec());
        set.spawn(async move {
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return made;
                }
                let base = &bases[i % bases.len()];
                let answer = http
                    .post(format!("{base}/api/v1/grants"))
                    .bearer_auth(API_KEY)
                    .json(&body(i))
                    .send()
                    .await
                    .expect("POST /api/v1/grants");
                let status = answer.status();
                let grant: Value = answer.json().await.expect("grant JSON");
                assert_eq!(status, 201, "grant {i}: {grant}");
                made.push((i, grant["id"].as_str().expect("id").to_owned()));
            }
        });
    }
    let mut ids = Vec::new();
    while let Some(made) = set.join_next().await {
        ids.extend(made.expect("request task"));
    }
    ids.sort();
    ids.into_iter().map(|(_, id)| id).collect()
}

/// A grant request body for `user`'s own change ticket.
pub fn grant_body(user: &str, ticket: &str, starts_at: DateTime<Utc>, duration: &str) -> Value {
    let mut body = crate::app::grant_request(user, ticket, duration);
    body["starts_at"] = json!(starts_at.to_rfc3339());
    body
}

/// Every grant in the database, read directly.
pub async fn all_grants(store: &dyn Store) -> Result<Vec<Grant>, jit_app::StoreError> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .grants(&GrantFilter {
                before,
                limit: 500,
                ..GrantFilter::default()
            })
            .await?;
        let Some(last) = page.last() else {
            return Ok(all);
        };
        before = Some(last.id);
        all.extend(page);
    }
}

/// Waits until every one of `want` grants has ended with its removal
/// verified (the state, not a guess at time); answers them.
pub async fn wait_for_all_removed(
    database_url: &str,
    want: usize,
    timeout: Duration,
) -> Vec<Grant> {
    let deadline = Instant::now() + timeout;
    let mut store: Option<std::sync::Arc<dyn Store>> = None;
    loop {
        if store.is_none() {
            store = jit_store::open(database_url, false, 2).await.ok();
        }
        // A read that fails (the database restarting) is simply read again.
        if let Some(Ok(grants)) = match &store {
            Some(s) => Some(all_grants(s.as_ref()).await),
            None => None,
        } {
            let done = grants
                .iter()
                .filter(|g| g.role_removed_at.is_some())
                .count();
            if grants.len() == want && done == want {
                return grants;
            }
            assert!(
                Instant::now() < deadline,
                "{done} of {want} removals verified after {timeout:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
