//! `[events]`: Genesys Cloud events relayed by Amazon EventBridge (an API
//! destination with a header secret) to `POST /webhooks/genesys/events`.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSettings {
    /// The relay's header secret, at least 32 bytes. Without one the
    /// endpoint refuses everything (503).
    pub secret: Option<SecretString>,
    pub secret_file: Option<PathBuf>,
    /// The header EventBridge's connection sends it in.
    pub header: String,
    /// EventBridge `source`s accepted (`aws.partner/genesys.com/…`); empty:
    /// any source that knows the secret.
    pub sources: Vec<String>,
}

impl Default for EventsSettings {
    fn default() -> Self {
        Self {
            secret: None,
            secret_file: None,
            header: "X-JIT-Events-Secret".into(),
            sources: Vec::new(),
        }
    }
}
