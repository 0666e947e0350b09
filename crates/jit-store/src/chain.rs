//! The audit chain's arithmetic: `hash = sha256(prev_hash || canonical JSON of the event)`.

use chrono::{DateTime, Utc};
use jit_app::AuditEvent;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// JSON with object keys sorted at every depth and no spaces: one byte string
/// per value, whatever map order a serializer used.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The fields that are hashed, as stored.
pub struct Hashed<'a> {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: &'a str,
    pub kind: &'a str,
    pub grant: Option<String>,
    pub ticket: Option<&'a str>,
    /// Canonical JSON.
    pub data: &'a str,
}

pub fn event_hash(prev_hash: &str, e: &Hashed<'_>) -> String {
    let event = json!({
        "seq": e.seq, "at": e.at.timestamp_millis(), "actor": e.actor, "kind": e.kind,
        "grant": e.grant, "ticket": e.ticket,
        // Parsed back so the hashed text is canonical even if the column was not.
        "data": serde_json::from_str::<Value>(e.data).unwrap_or(Value::String(e.data.to_owned())),
    });
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical_json(&event).as_bytes());
    hex::encode(h.finalize())
}

/// Where a chain stops verifying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {reason}")]
pub struct BrokenLink {
    pub seq: i64,
    pub reason: String,
}

/// Walks events in order, carrying the last verified (seq, hash).
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    last_seq: i64,
    last_hash: String,
    pub verified: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            last_seq: 0,
            last_hash: GENESIS.to_owned(),
            verified: 0,
        }
    }
}

impl ChainVerifier {
    pub fn check(&mut self, e: &AuditEvent) -> Result<(), BrokenLink> {
        let broken = |reason: String| BrokenLink { seq: e.seq, reason };
        if e.seq != self.last_seq + 1 {
            return Err(broken(format!(
                "expected seq {}, found {} (an event is missing)",
                self.last_seq + 1,
                e.seq
            )));
        }
        if e.prev_hash != self.last_hash {
            return Err(broken(
                "prev_hash does not match the previous event's hash".into(),
            ));
        }
        if !event_intact(e) {
            return Err(broken(
                "the event's content does not match its hash (altered)".into(),
            ));
        }
        self.last_seq = e.seq;
        self.last_hash = e.hash.clone();
        self.verified += 1;
        Ok(())
    }
}

/// What a checkpoint signs: the chain's head.
pub fn checkpoint_message(seq: i64, hash: &str) -> String {
    format!("jit-broker audit checkpoint\n{seq}\n{hash}\n")
}

#[derive(Debug, thiserror::Error)]
#[error("checkpoint key: {0}")]
pub struct KeyError(String);

/// The ed25519 key that signs checkpoints. Its file holds the 32 secret
/// bytes as hex on one line (`jit-broker audit keygen` writes one).
pub struct CheckpointKey(ed25519_dalek::SigningKey);

impl CheckpointKey {
    pub fn generate() -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&rand::random()))
    }

    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bytes: [u8; 32] = hex::decode(text.trim())
            .map_err(|e| KeyError(format!("not hex: {e}")))?
            .try_into()
            .map_err(|_| KeyError("an ed25519 secret key is 32 bytes (64 hex digits)".into()))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&bytes)))
    }

    /// The file's content.
    pub fn secret_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// What `jit-broker audit verify --public-key` wants.
    pub fn public_hex(&self) -> String {
        hex::encode(self.0.verifying_key().to_bytes())
    }
}

impl jit_app::CheckpointSigner for CheckpointKey {
    fn sign_head(&self, seq: i64, hash: &str) -> (String, String) {
        use ed25519_dalek::Signer;
        let signature = self.0.sign(checkpoint_message(seq, hash).as_bytes());
        (self.public_hex(), hex::encode(signature.to_bytes()))
    }
}

/// Whether `cp` is signed by the key it names, and (when given) that key is
/// the trusted one.
pub fn checkpoint_valid(cp: &jit_app::AuditCheckpoint, trusted: Option<&str>) -> bool {
    use ed25519_dalek::Verifier;
    if trusted.is_some_and(|t| !t.trim().eq_ignore_ascii_case(&cp.key_id)) {
        return false;
    }
    let Some(key) = hex::decode(&cp.key_id)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
    else {
        return false;
    };
    let Some(signature) = hex::decode(&cp.signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| ed25519_dalek::Signature::from_bytes(&b))
    else {
        return false;
    };
    key.verify(checkpoint_message(cp.seq, &cp.hash).as_bytes(), &signature)
        .is_ok()
}

/// Whether one event's hash follows from its own content and `prev_hash`.
pub fn event_intact(e: &AuditEvent) -> bool {
    let data = canonical_json(&e.data);
    event_hash(
        &e.prev_hash,
        &Hashed {
            seq: e.seq,
            at: e.at,
            actor: &e.actor,
            kind: &e.kind,
            grant: e.grant.map(|g| g.to_string()),
            ticket: e.ticket.as_deref(),
            data: &data,
        },
    ) == e.hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_with_its_own_key_and_content() {
        use jit_app::CheckpointSigner;
        let key = CheckpointKey::generate();
        let again = CheckpointKey::parse(&key.secret_hex()).unwrap();
        assert_eq!(key.public_hex(), again.public_hex());
        let (key_id, signature) = key.sign_head(7, "abc");
        let cp = jit_app::AuditCheckpoint {
            seq: 7,
            hash: "abc".into(),
            at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            key_id,
            signature,
        };
        assert!(checkpoint_valid(&cp, None));
        assert!(checkpoint_valid(&cp, Some(&key.public_hex())));
        let other = CheckpointKey::generate();
        assert!(
            !checkpoint_valid(&cp, Some(&other.public_hex())),
            "not the trusted key"
        );
        let moved = jit_app::AuditCheckpoint {
            seq: 8,
            ..cp.clone()
        };
        assert!(!checkpoint_valid(&moved, None), "the signed head moved");
        assert!(CheckpointKey::parse("abcd").is_err());
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"d": [true, null], "c": "x\"y"}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"x\"y","d":[true,null]},"b":1}"#
        );
    }
}
