//! `[limits]`: how much any one caller, and all callers together, may ask
//! of the broker: the pace of grant requests, and what an HTTP client may
//! hold (time to send a request, connections, body sizes). Listed in
//! docs/security.md.

use std::collections::HashMap;
use std::num::NonZeroU32;

use serde::Deserialize;

use super::ApiKeyConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSettings {
    /// Grant requests a minute from one person (web form, ID token); 0:
    /// unlimited.
    pub grant_requests_per_minute_per_person: u32,
    /// Grant requests a minute from one API key without a pace of its own
    /// (`api_keys[].grant_requests_per_minute`); 0: unlimited.
    pub grant_requests_per_minute_per_key: u32,
    /// A client must send its request line and headers within this.
    pub client_request_timeout_secs: u64,
    /// A client must send the whole body within this once its headers
    /// arrived (a body that trickles is cut off).
    pub body_timeout_secs: u64,
    /// Open HTTP connections at once, all clients together (kept below the
    /// process's file descriptors, which the broker raises at start).
    pub max_connections: usize,
    /// Open HTTP connections at once from one peer address.
    pub max_connections_per_peer: usize,
    /// The largest webhook body (ServiceNow, Genesys events, Slack), read
    /// only up to this before its signature is checked.
    pub webhook_max_body_bytes: usize,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            grant_requests_per_minute_per_person: 10,
            grant_requests_per_minute_per_key: 120,
            client_request_timeout_secs: 5,
            body_timeout_secs: 5,
            max_connections: 2048,
            max_connections_per_peer: 256,
            webhook_max_body_bytes: 16 * 1024,
        }
    }
}

impl LimitsSettings {
    /// The pace of grant requests, per person and per key.
    pub fn request_limits(&self, keys: &[ApiKeyConfig]) -> jit_app::RequestLimits {
        jit_app::RequestLimits {
            per_person: NonZeroU32::new(self.grant_requests_per_minute_per_person),
            per_key: NonZeroU32::new(self.grant_requests_per_minute_per_key),
            keys: keys
                .iter()
                .filter_map(|k| {
                    k.grant_requests_per_minute
                        .map(|n| (k.name.clone(), NonZeroU32::new(n)))
                })
                .collect::<HashMap<_, _>>(),
        }
    }
}
