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
        let data = canonical_json(&e.data);
        let recomputed = event_hash(
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
        );
        if recomputed != e.hash {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"d": [true, null], "c": "x\"y"}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"x\"y","d":[true,null]},"b":1}"#
        );
    }
}
