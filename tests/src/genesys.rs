//! The Genesys Cloud stand-in (crates/jit-genesys-standin) on a port of its
//! own, and the broker's directory client for it, configured as
//! `serve` configures the genesys profile: OAuth client credentials, the
//! Authorization API for grants, the client's budget paced at 95 %.

use std::sync::Arc;

use actix_web::web;
use jit_domain::Policy;
use jit_genesys_standin::{Counts, GenesysStandIn, Settings};
use jit_scim::{ScimClient, ScimConfig};
use secrecy::SecretString;

pub const CLIENT_ID: &str = "jit-broker-e2e";
const CLIENT_SECRET: &str = "e2e-genesys-secret";
/// The header secret the stand-in relays events with.
pub const EVENTS_SECRET: &str = "e2e-events-secret-0123456789abcdef0123";

pub struct Genesys {
    pub standin: web::Data<GenesysStandIn>,
    pub base: String,
    server: actix_web::dev::ServerHandle,
}

impl Drop for Genesys {
    fn drop(&mut self) {
        let handle = self.server.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { handle.stop(false).await });
        }
    }
}

impl Genesys {
    /// A stand-in organisation with the broker's OAuth client, the home
    /// division and the roles `roles` (all permissions).
    pub async fn start(settings: Settings, roles: &[&str]) -> Self {
        Self::start_with_clock(settings, roles, GenesysStandIn::system_clock()).await
    }

    /// The same, keeping the time of `clock` (a test's injected clock, so
    /// that the audit trail and the broker agree on when things happened).
    pub async fn start_with_clock(
        settings: Settings,
        roles: &[&str],
        clock: jit_genesys_standin::Clock,
    ) -> Self {
        let standin = web::Data::new(GenesysStandIn::new(settings, clock));
        standin.add_client_with_permissions(
            CLIENT_ID,
            CLIENT_SECRET,
            "jit-broker",
            &jit_scim::doctor::needed_permissions(true),
        );
        for role in roles {
            standin.add_role(role, &["*"]);
        }
        let (base, server) =
            jit_genesys_standin::serve(standin.clone()).expect("serve the stand-in");
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            standin,
            base,
            server: handle,
        }
    }

    /// The broker's client, built as `serve` builds it from a config
    /// pointing at this stand-in: grants through the Authorization API with
    /// the divisions `policy` names, paced inside 300 requests a minute.
    pub fn client(&self, policy: &Policy) -> ScimClient {
        let mut config = jit_server::config::Config::default();
        self.configure(&mut config);
        jit_server::directory_from_config(&config, policy).expect("Genesys client")
    }

    /// The same client before grants moved to the Authorization API: roles
    /// by SCIM `PATCH` (for comparison), paced the same.
    pub fn scim_client(&self) -> ScimClient {
        let config = ScimConfig::genesys_at(
            &self.base,
            CLIENT_ID.into(),
            SecretString::from(CLIENT_SECRET),
        )
        .expect("stand-in URL");
        let pace = jit_genesys_standin::REQUESTS_PER_MINUTE * 19 / 20;
        ScimClient::new(config)
            .expect("Genesys client")
            .with_budget(Arc::new(jit_app::Budget::per_minute(pace, pace / 60)))
    }

    /// Points a broker's config at this stand-in (the genesys profile) and
    /// accepts its relayed events with `EVENTS_SECRET`.
    pub fn configure(&self, config: &mut jit_server::config::Config) {
        let s = &mut config.scim;
        s.profile = jit_server::config::ScimProfile::Genesys;
        s.base_url = Some(format!("{}/api/v2/scim/v2", self.base));
        s.token_url = Some(format!("{}/oauth/token", self.base));
        s.platform_url = Some(format!("{}/", self.base));
        s.client_id = Some(CLIENT_ID.into());
        s.client_secret = Some(SecretString::from(CLIENT_SECRET));
        s.bearer_token = None;
        config.events.secret = Some(SecretString::from(EVENTS_SECRET));
    }

    /// From now on every grant change and login is relayed to the broker at
    /// `broker_base`, as EventBridge would.
    pub fn relay_to(&self, broker_base: &str) {
        self.standin.relay_to(jit_genesys_standin::relay::Relay {
            url: format!("{broker_base}/webhooks/genesys/events"),
            header: jit_server::config::EventsSettings::default().header,
            secret: EVENTS_SECRET.into(),
        });
    }

    /// (role, division name) pairs `user` holds in their own name.
    pub fn grants_of(&self, user: &str) -> std::collections::BTreeSet<(String, String)> {
        self.standin.grants_of(user)
    }

    pub fn requests(&self) -> u64 {
        Counts::get(&self.standin.counts.requests)
    }

    pub fn limited(&self) -> u64 {
        Counts::get(&self.standin.counts.limited)
    }
}
