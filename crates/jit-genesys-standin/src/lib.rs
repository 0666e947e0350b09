//! A Genesys Cloud stand-in: the parts of Genesys Cloud jit-broker talks to,
//! modelled on the documented behaviour (docs/genesys-cloud.md), in memory.
//! `jit-broker serve --dev` mounts it, and the tests run it on a port of
//! their own, so both exercise the same Genesys path.
//!
//! - OAuth client credentials: `POST /oauth/token` (HTTP Basic), bearer
//!   tokens that expire (401 after).
//! - Each OAuth client's budget: 300 requests a minute by default, answered
//!   past it with 429, `Retry-After` and Genesys's "Retry the request in [N]
//!   seconds" body.
//! - SCIM Users (`/api/v2/scim/v2/users`, Genesys's lower-case paths,
//!   `meta.version` and `If-Match`), whose `roles` shows role names only.
//! - The Authorization API: a subject's grants, bulk add and remove, a role's
//!   subject grants, role users, roles and divisions; group members; a user's
//!   last token; the OAuth clients.
//! - The audit trail: every grant change, and whatever a test records, by
//!   the realtime query (recent past, pages by number) or the asynchronous
//!   one (polled, pages by cursor); an action can arrive late.
//!
//! Where Genesys is silent (which division a SCIM role add lands in, what a
//! SCIM remove takes), [`Switches`] choose, so that the broker can be tested
//! to be right either way.

pub mod audit;
mod http;
pub mod org;
pub mod relay;

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, TimeDelta, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

pub use http::routes;
pub use org::{
    ALL_DIVISIONS, Division, GrantKey, Group, OAuthClient, Org, Role, ScimAddLandsIn,
    ScimRemoveTakes, Switches, User,
};

/// Serves `standin` on a free port of 127.0.0.1 (tests, benchmarks): its
/// base URL, and the server to spawn.
pub fn serve(
    standin: actix_web::web::Data<GenesysStandIn>,
) -> std::io::Result<(String, actix_web::dev::Server)> {
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(standin.clone())
            .configure(routes)
    })
    .workers(2)
    .disable_signals()
    .bind("127.0.0.1:0")?;
    let base = format!("http://{}", server.addrs()[0]);
    Ok((base, server.run()))
}

/// The stand-in's clock: the tests' injected one, or the system's.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The client a change made by hand in the Admin UI is audited under.
pub const BY_HAND: &str = "admin-ui";

/// Genesys Cloud's documented default budget per OAuth client.
pub const REQUESTS_PER_MINUTE: u32 = 300;

/// How the stand-in is set up.
#[derive(Clone)]
pub struct Settings {
    pub switches: Switches,
    /// Requests a minute per OAuth client before 429 (`None`: no limit).
    pub per_minute: Option<u32>,
    /// How many of them may come at once; then they refill evenly over the minute.
    pub burst: u32,
    pub token_lifetime: TimeDelta,
    /// Polls an asynchronous audit query answers Running before Succeeded.
    pub audit_query_polls: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            switches: Switches::default(),
            per_minute: Some(REQUESTS_PER_MINUTE),
            // The documented fact is 300 a minute, no more: no per-second
            // limit is documented, so a minute's worth may come at once.
            burst: REQUESTS_PER_MINUTE,
            token_lifetime: TimeDelta::hours(24),
            audit_query_polls: 1,
        }
    }
}

/// What reached the stand-in, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Counts {
    /// Every API request with a valid token (429s included).
    pub requests: AtomicU64,
    pub limited: AtomicU64,
    pub unauthorized: AtomicU64,
    /// Refused 403: the client's roles lack the endpoint's permission.
    pub forbidden: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub scim_reads: AtomicU64,
    pub scim_writes: AtomicU64,
    pub grant_reads: AtomicU64,
    pub grant_writes: AtomicU64,
    /// Audit queries: realtime, asynchronous creates, polls and result pages.
    pub audit_reads: AtomicU64,
    pub other: AtomicU64,
}

impl Counts {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

struct Token {
    client: String,
    expires_at: DateTime<Utc>,
}

pub struct GenesysStandIn {
    org: Mutex<Org>,
    switches: Mutex<Switches>,
    settings: Settings,
    clock: Clock,
    tokens: Mutex<HashMap<String, Token>>,
    limiters: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
    /// The largest page the Platform API answers (Genesys: 500).
    max_page_size: AtomicU64,
    /// A fault for the tests, not a Genesys behaviour: subjects a role's
    /// holders answer leaves out.
    omitted: Mutex<BTreeSet<String>>,
    /// Where events go (Genesys's EventBridge forwarding), when set.
    relay: Mutex<Option<relay::Relay>>,
    trail: Mutex<audit::Trail>,
    pub counts: Counts,
}

impl GenesysStandIn {
    pub fn new(settings: Settings, clock: Clock) -> Self {
        let org = Org {
            home_division: "division-home".into(),
            divisions: [(
                "division-home".to_owned(),
                Division {
                    id: "division-home".into(),
                    name: "Home".into(),
                },
            )]
            .into(),
            ..Org::default()
        };
        Self {
            org: Mutex::new(org),
            switches: Mutex::new(settings.switches),
            settings,
            clock,
            tokens: Mutex::default(),
            limiters: Mutex::default(),
            max_page_size: AtomicU64::new(500),
            omitted: Mutex::default(),
            relay: Mutex::default(),
            trail: Mutex::default(),
            counts: Counts::default(),
        }
    }

    /// The system clock (`serve --dev`).
    pub fn system_clock() -> Clock {
        // The stand-in is not the broker: it keeps Genesys's own time.
        #[allow(clippy::disallowed_methods)]
        Arc::new(Utc::now)
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// The organisation, to seed or inspect (tests, the sandbox).
    pub fn org(&self) -> MutexGuard<'_, Org> {
        self.org.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn switches(&self) -> Switches {
        *self.switches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes an undocumented behaviour while running (a test of both ways).
    pub fn set_switches(&self, switches: Switches) {
        *self.switches.lock().unwrap_or_else(|e| e.into_inner()) = switches;
    }

    // ------------------------------------------------------------ seeding

    pub fn add_division(&self, name: &str) -> String {
        let id = new_id("division");
        self.org().divisions.insert(
            id.clone(),
            Division {
                id: id.clone(),
                name: name.into(),
            },
        );
        id
    }

    pub fn add_role(&self, name: &str, permissions: &[&str]) -> String {
        let id = new_id("role");
        self.org().roles.insert(
            id.clone(),
            Role {
                id: id.clone(),
                name: name.into(),
                permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            },
        );
        id
    }

    pub fn add_user(&self, user_name: &str) -> String {
        let id = new_id("user");
        self.org().users.insert(
            id.clone(),
            User {
                id: id.clone(),
                user_name: user_name.into(),
                active: true,
                version: 1,
                last_token_issued: None,
            },
        );
        id
    }

    pub fn add_group(&self, name: &str, members: &[&str]) -> String {
        let id = new_id("group");
        self.org().groups.insert(
            id.clone(),
            Group {
                id: id.clone(),
                name: name.into(),
                members: members
                    .iter()
                    .map(|m| (*m).to_owned())
                    .collect::<BTreeSet<_>>(),
            },
        );
        id
    }

    /// An OAuth client that may call the API, with the roles it holds.
    pub fn add_client(&self, id: &str, secret: &str, name: &str, roles: &[(&str, &str)]) {
        self.org().clients.insert(
            id.into(),
            OAuthClient {
                id: id.into(),
                name: name.into(),
                secret: secret.into(),
                role_divisions: roles
                    .iter()
                    .map(|(r, d)| ((*r).to_owned(), (*d).to_owned()))
                    .collect(),
            },
        );
    }

    /// An OAuth client whose role carries exactly `permissions` (granted
    /// in every division), as an administrator would set one up.
    pub fn add_client_with_permissions(
        &self,
        id: &str,
        secret: &str,
        name: &str,
        permissions: &[&str],
    ) {
        let role = self.add_role(&format!("{name} (OAuth client role)"), permissions);
        self.add_client(id, secret, name, &[(role.as_str(), ALL_DIVISIONS)]);
    }

    /// Whether any role the client holds carries `permission` (or `*`).
    fn client_may(&self, client: &str, permission: &str) -> bool {
        let org = self.org();
        let Some(c) = org.clients.get(client) else {
            return false;
        };
        c.role_divisions.iter().any(|(role, _)| {
            org.roles
                .get(role)
                .is_some_and(|r| r.permissions.iter().any(|p| p == "*" || p == permission))
        })
    }

    /// Forwards events from now on: an audit event for every change of a
    /// subject's grants, a token event for every login.
    pub fn relay_to(&self, relay: relay::Relay) {
        *self.relay.lock().unwrap_or_else(|e| e.into_inner()) = Some(relay);
    }

    /// A change to `subject`'s grants by `client` (and the user `actor`
    /// when a person made it): audited with the grants before and after,
    /// and relayed when events are.
    pub(crate) fn grants_changed(
        &self,
        subject: &str,
        client: &str,
        actor: Option<&str>,
        before: BTreeSet<String>,
    ) {
        let (is_group, name, after) = {
            let org = self.org();
            let is_group = org.groups.contains_key(subject);
            let name = if is_group {
                org.groups.get(subject).map(|g| g.name.clone())
            } else {
                org.users.get(subject).map(|u| u.user_name.clone())
            };
            (is_group, name.unwrap_or_default(), org.grant_names(subject))
        };
        let action = audit::Action {
            user: actor.map(str::to_owned),
            client: client.to_owned(),
            service: "Authorization".into(),
            entity_type: if is_group { "Group" } else { "User" }.into(),
            entity_id: subject.to_owned(),
            entity_name: name,
            action: "Update".into(),
            at: None,
            late_by: TimeDelta::zero(),
            changes: vec![(
                "grants".into(),
                before.into_iter().collect(),
                after.into_iter().collect(),
            )],
        };
        let event = self.audit_event(action);
        let Some(to) = self.relay.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        relay::send(&to, relay::audited(subject, is_group, event, self.now()));
    }

    /// Puts an action in the audit trail; its event id.
    pub fn record(&self, action: audit::Action) -> String {
        self.audit_event(action)["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn audit_event(&self, action: audit::Action) -> serde_json::Value {
        let at = action.at.unwrap_or_else(|| self.now());
        let id = uuid::Uuid::new_v4().to_string();
        let (user_name, client_name) = {
            let org = self.org();
            let user_name = action
                .user
                .as_ref()
                .and_then(|u| org.users.get(u))
                .map(|u| u.user_name.clone());
            let client_name = org
                .clients
                .get(&action.client)
                .map_or_else(|| action.client.clone(), |c| c.name.clone());
            (user_name, client_name)
        };
        let event = audit::event_json(&id, &action, at, user_name.as_deref(), &client_name);
        self.trail().records.push(audit::Record {
            event: event.clone(),
            at,
            visible_at: at + action.late_by,
            user: action.user,
            client: action.client,
            action: action.action,
            entity_type: action.entity_type,
            entity_id: action.entity_id,
        });
        event
    }

    pub(crate) fn trail(&self) -> MutexGuard<'_, audit::Trail> {
        self.trail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers pages of at most `n` (to make a short answer page).
    pub fn cap_page_size(&self, n: u64) {
        self.max_page_size.store(n, Ordering::Relaxed);
    }

    pub(crate) fn max_page_size(&self) -> u64 {
        self.max_page_size.load(Ordering::Relaxed)
    }

    /// A fault: the role holders answer leaves `subject` out (defence in
    /// depth is tested against it: the deep sweep lists everyone).
    pub fn omit_from_holders(&self, subject: &str) {
        self.omitted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(subject.to_owned());
    }

    pub(crate) fn omitted(&self) -> BTreeSet<String> {
        self.omitted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The role deleted and created again under a new id (as an admin
    /// would): the old id answers 404, its grants are gone. The new id.
    pub fn recreate_role(&self, name: &str) -> String {
        let mut org = self.org();
        let Some(old) = org.role_by_name(name).cloned() else {
            drop(org);
            return self.add_role(name, &["*"]);
        };
        org.roles.remove(&old.id);
        org.grants.retain(|k, _| k.role != old.id);
        let id = new_id("role");
        org.roles.insert(
            id.clone(),
            Role {
                id: id.clone(),
                ..old
            },
        );
        id
    }

    /// A grant made outside the broker (an admin by hand, Terraform, the IdP).
    pub fn grant(&self, subject: &str, role: &str, division: &str) {
        self.grant_by(None, BY_HAND, subject, role, division);
    }

    /// A grant made outside the broker by the user `actor` (if a person)
    /// through the OAuth client `client`, audited as such.
    pub fn grant_by(
        &self,
        actor: Option<&str>,
        client: &str,
        subject: &str,
        role: &str,
        division: &str,
    ) {
        let now = self.now();
        let before = self.org().grant_names(subject);
        // Seeding with ids it has just made: a refusal is a bug in the test.
        let added = self
            .org()
            .bulk_add(subject, &[(role.to_owned(), division.to_owned())], now);
        if let Err(refusal) = added {
            panic!("stand-in seed refused: {refusal:?}");
        }
        self.grants_changed(subject, client, actor, before);
    }

    pub fn home_division(&self) -> String {
        self.org().home_division.clone()
    }

    /// (role name, division name) pairs a subject holds directly.
    pub fn grants_of(&self, subject: &str) -> BTreeSet<(String, String)> {
        let org = self.org();
        org.grants_of(subject, false)
            .into_iter()
            .map(|g| {
                let role = org
                    .roles
                    .get(&g.role)
                    .map_or(g.role.clone(), |r| r.name.clone());
                (role, org.division_name(&g.division))
            })
            .collect()
    }

    /// Records a login (the last token issued to a user).
    pub fn user_logged_in(&self, user: &str, at: DateTime<Utc>) {
        if let Some(u) = self.org().users.get_mut(user) {
            u.last_token_issued = Some(at);
        }
        let to = self.relay.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(to) = to {
            relay::send(&to, relay::token_issued(user, at));
        }
    }

    // ------------------------------------------------------- auth, budget

    fn issue_token(&self, client_id: &str, secret: &str) -> Option<(String, TimeDelta)> {
        let known = self
            .org()
            .clients
            .get(client_id)
            .is_some_and(|c| c.secret == secret);
        if !known {
            return None;
        }
        let token = format!("standin-{}", uuid::Uuid::new_v4().simple());
        let lifetime = self.settings.token_lifetime;
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                token.clone(),
                Token {
                    client: client_id.to_owned(),
                    expires_at: self.now() + lifetime,
                },
            );
        self.counts.tokens_issued.fetch_add(1, Ordering::Relaxed);
        Some((token, lifetime))
    }

    /// The client a live token belongs to.
    pub(crate) fn client_of(&self, token: &str) -> Option<String> {
        let now = self.now();
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(token)
            .filter(|t| now < t.expires_at)
            .map(|t| t.client.clone())
    }

    /// Ends every token now (a test of the broker's refresh after a 401).
    pub fn expire_tokens(&self) {
        let now = self.now();
        for t in self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
        {
            t.expires_at = now;
        }
    }

    /// `Err(seconds)` when the client has spent its minute's budget.
    fn spend(&self, client: &str) -> Result<(), u64> {
        let Some(per_minute) = self.settings.per_minute.and_then(NonZeroU32::new) else {
            return Ok(());
        };
        let limiter = {
            let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
            limiters
                .entry(client.to_owned())
                .or_insert_with(|| {
                    let burst = NonZeroU32::new(self.settings.burst).unwrap_or(NonZeroU32::MIN);
                    Arc::new(RateLimiter::direct(
                        Quota::per_minute(per_minute).allow_burst(burst),
                    ))
                })
                .clone()
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            wait.as_secs() + 1
        })
    }
}

fn new_id(kind: &str) -> String {
    format!("{kind}-{}", uuid::Uuid::new_v4())
}
