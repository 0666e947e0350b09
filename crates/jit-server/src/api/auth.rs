//! Who calls: an API key (its SHA-256 compared in constant time) or a
//! person vouched for by an ID token from the web form's provider.

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use jit_app::Person;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, ApiState};
use crate::config::ApiKeyConfig;

/// The authenticated API caller: an API key (its name is the audited actor)
/// or a person vouched for by an ID token from the identity provider.
pub struct Caller {
    pub name: String,
    admin: bool,
    pub person: Option<Person>,
}

impl Caller {
    pub(super) fn admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// The caller as every use case takes it: who may do what is decided
    /// there, the same for the web form.
    pub fn as_caller(&self) -> jit_domain::Caller {
        match &self.person {
            Some(p) => jit_domain::Caller::Person {
                user: p.user.clone(),
                groups: p.groups.clone(),
            },
            None => jit_domain::Caller::Key {
                name: self.name.clone(),
                admin: self.admin,
            },
        }
    }
}

fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `sha256` hex of a key, as the config wants it.
pub fn hash_key(key: &str) -> String {
    hex::encode(key_digest(key))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<ApiState>>().cloned();
        let key = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|k| k.trim().to_owned());
        Box::pin(async move {
            let state = state.ok_or(ApiError::Unauthorized)?;
            let key = key.ok_or(ApiError::Unauthorized)?;
            let digest = key_digest(&key);
            // Compare against every key, in constant time, so timing says nothing.
            let mut matched: Option<&ApiKeyConfig> = None;
            for k in &state.keys {
                let mut expected = [0u8; 32];
                if hex::decode_to_slice(&k.sha256, &mut expected).is_ok()
                    && bool::from(expected.ct_eq(&digest))
                {
                    matched = Some(k);
                }
            }
            if let Some(k) = matched {
                return Ok(Caller {
                    name: k.name.clone(),
                    admin: k.admin,
                    person: None,
                });
            }
            // Not a key: an ID token from the web form's provider, if any.
            let oidc = state.bearer.as_ref().ok_or(ApiError::Unauthorized)?;
            if key.split('.').count() != 3 {
                return Err(ApiError::Unauthorized);
            }
            let (person, issued_at) = oidc
                .verify_bearer(&key)
                .await
                .map_err(|e| ApiError::BadIdToken(e.to_string()))?;
            // "Sign out everywhere" ends the tokens issued before it too.
            let ended = state
                .app
                .store
                .sessions_ended_at(person.user.as_str())
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            if ended.is_some_and(|ended| issued_at <= ended) {
                return Err(ApiError::BadIdToken(format!(
                    "this ID token was issued before all of {}'s sessions were ended; sign in again",
                    person.user
                )));
            }
            Ok(Caller {
                name: person.user.to_string(),
                admin: false,
                person: Some(person),
            })
        })
    }
}
