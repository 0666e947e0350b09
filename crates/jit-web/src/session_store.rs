//! actix-session's storage in the broker's own database (SQLite or
//! PostgreSQL), so that sign-out, the timeouts and "end all sessions" end a
//! session on every replica: the cookie carries only a random id (encrypted
//! and signed), the database only that id's SHA-256.

use std::collections::HashMap;
use std::sync::Arc;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration as CookieDuration;
use jit_app::{App, StoredSession};
use sha2::{Digest, Sha256};

use crate::session::{WHO, random_token};

/// The session values actix-session keeps (each a JSON text).
type SessionState = HashMap<String, String>;

pub struct DatabaseSessions {
    app: Arc<App>,
    idle: chrono::TimeDelta,
    absolute: chrono::TimeDelta,
}

impl DatabaseSessions {
    pub fn new(app: Arc<App>, idle: std::time::Duration, absolute: std::time::Duration) -> Self {
        Self {
            app,
            idle: chrono::TimeDelta::from_std(idle).unwrap_or(chrono::TimeDelta::minutes(30)),
            absolute: chrono::TimeDelta::from_std(absolute).unwrap_or(chrono::TimeDelta::hours(10)),
        }
    }
}

/// How long a session nobody has signed in to may idle (a sign-in in
/// progress): short, so that a flood of `/login` visits cannot pile rows up.
const ANONYMOUS_IDLE: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

impl DatabaseSessions {
    fn idle_for(&self, user: Option<&str>) -> chrono::TimeDelta {
        match user {
            Some(_) => self.idle,
            None => self.idle.min(ANONYMOUS_IDLE),
        }
    }
}

/// What the database keys a session by: a stolen copy of the table opens
/// nothing.
fn id_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The signed-in user a session's values name, for "end all of a person's
/// sessions".
fn user_of(state: &SessionState) -> Option<String> {
    let who: serde_json::Value = serde_json::from_str(state.get(WHO)?).ok()?;
    who["user"].as_str().map(str::to_owned)
}

fn encode(state: &SessionState) -> Result<String, anyhow::Error> {
    Ok(serde_json::to_string(state)?)
}

impl SessionStore for DatabaseSessions {
    async fn load(&self, key: &SessionKey) -> Result<Option<SessionState>, LoadError> {
        let row = self
            .app
            .store
            .load_session(&id_hash(key.as_ref()), self.app.now())
            .await
            .map_err(|e| LoadError::Other(e.into()))?;
        row.map(|r| serde_json::from_str(&r.state))
            .transpose()
            .map_err(|e| LoadError::Deserialization(e.into()))
    }

    async fn save(
        &self,
        state: SessionState,
        _ttl: &CookieDuration,
    ) -> Result<SessionKey, SaveError> {
        let key = random_token();
        let now = self.app.now();
        let user = user_of(&state);
        let row = StoredSession {
            id_hash: id_hash(&key),
            expires_at: now + self.idle_for(user.as_deref()),
            user,
            state: encode(&state).map_err(SaveError::Serialization)?,
            created_at: now,
            absolute_at: now + self.absolute,
        };
        self.app
            .store
            .insert_session(&row)
            .await
            .map_err(|e| SaveError::Other(e.into()))?;
        SessionKey::try_from(key).map_err(|e| SaveError::Other(e.into()))
    }

    async fn update(
        &self,
        key: SessionKey,
        state: SessionState,
        _ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        let now = self.app.now();
        let text = encode(&state).map_err(UpdateError::Serialization)?;
        let user = user_of(&state);
        let live = self
            .app
            .store
            .update_session(
                &id_hash(key.as_ref()),
                user.as_deref(),
                &text,
                now + self.idle_for(user.as_deref()),
                now,
            )
            .await
            .map_err(|e| UpdateError::Other(e.into()))?;
        if !live {
            // Ended while this request ran (signed out elsewhere, revoked):
            // nothing is written, so nothing is brought back.
            tracing::info!("a session ended while its request ran; not renewed");
        }
        Ok(key)
    }

    async fn update_ttl(&self, _key: &SessionKey, _ttl: &CookieDuration) -> anyhow::Result<()> {
        // The idle end moves with each update (at most once a minute); the
        // middleware is set to extend on state changes only.
        Ok(())
    }

    async fn delete(&self, key: &SessionKey) -> anyhow::Result<()> {
        Ok(self
            .app
            .store
            .delete_session(&id_hash(key.as_ref()))
            .await?)
    }
}
