//! The ServiceNow webhook's authentication: an HMAC-SHA256 over the
//! timestamp, the delivery id and the raw body, with a shared secret.
//!
//! Signing the timestamp and delivery id with the body (not the body alone)
//! makes the skew check and the replay guard meaningful: neither header can be
//! changed without breaking the signature. The sender computes
//!
//! ```text
//! X-JIT-Timestamp: <unix seconds>
//! X-JIT-Delivery:  <unique id, e.g. the sys_id of the event + a counter>
//! X-JIT-Signature: v1=<base64 or hex of HMAC-SHA256(secret, "<timestamp>.<delivery>.<body>")>
//! ```
//!
//! (ServiceNow's `GlideCertificateEncryption.generateMac` yields base64.)

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use jit_domain::TicketId;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

pub const TIMESTAMP_HEADER: &str = "X-JIT-Timestamp";
pub const DELIVERY_HEADER: &str = "X-JIT-Delivery";
pub const SIGNATURE_HEADER: &str = "X-JIT-Signature";

const SIGNATURE_VERSION: &str = "v1=";

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("the {TIMESTAMP_HEADER} header must be Unix seconds")]
    BadTimestamp,
    #[error("the {TIMESTAMP_HEADER} is {0} s away from now, more than the allowed skew")]
    StaleTimestamp(i64),
    #[error("the {DELIVERY_HEADER} header must be 1 to 128 letters, digits or . _ : -")]
    BadDeliveryId,
    #[error("the signature does not match")]
    BadSignature,
    #[error("the body is not a change record: {0}")]
    BadBody(String),
}

impl WebhookError {
    /// The header or body field the error is about, for the 4xx body.
    pub fn field(&self) -> &'static str {
        match self {
            Self::MissingHeader(h) => h,
            Self::BadTimestamp | Self::StaleTimestamp(_) => TIMESTAMP_HEADER,
            Self::BadDeliveryId => DELIVERY_HEADER,
            Self::BadSignature => SIGNATURE_HEADER,
            Self::BadBody(_) => "number",
        }
    }

    pub fn rule(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "required",
            Self::BadTimestamp => "format",
            Self::StaleTimestamp(_) => "max_skew",
            Self::BadDeliveryId => "format",
            Self::BadSignature => "hmac_sha256",
            Self::BadBody(_) => "change_record",
        }
    }
}

/// The three authentication headers as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebhookHeaders<'a> {
    pub timestamp: Option<&'a str>,
    pub delivery: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// A delivery whose signature and timestamp checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDelivery {
    pub delivery_id: String,
    pub sent_at: DateTime<Utc>,
}

pub struct WebhookVerifier {
    secret: SecretString,
    max_skew: Duration,
}

impl WebhookVerifier {
    pub fn new(secret: SecretString, max_skew: Duration) -> Self {
        Self { secret, max_skew }
    }

    /// Checks headers and signature over the raw `body` at `now`. Order:
    /// cheap format checks, then the skew, then the MAC (compared in
    /// constant time by `hmac`).
    /// What can be refused before the body is read: a missing header, a
    /// malformed or stale timestamp, a bad delivery id. An unsigned flood
    /// is turned away without the broker reading a byte of its bodies.
    pub fn precheck(
        &self,
        headers: WebhookHeaders<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), WebhookError> {
        self.headers_of(headers, now).map(|_| ())
    }

    /// The headers checked, as (timestamp, delivery, signature, sent at).
    fn headers_of<'h>(
        &self,
        headers: WebhookHeaders<'h>,
        now: DateTime<Utc>,
    ) -> Result<(&'h str, &'h str, &'h str, DateTime<Utc>), WebhookError> {
        let timestamp = headers
            .timestamp
            .ok_or(WebhookError::MissingHeader(TIMESTAMP_HEADER))?;
        let delivery = headers
            .delivery
            .ok_or(WebhookError::MissingHeader(DELIVERY_HEADER))?;
        let signature = headers
            .signature
            .ok_or(WebhookError::MissingHeader(SIGNATURE_HEADER))?;
        let secs: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| WebhookError::BadTimestamp)?;
        let sent_at = DateTime::from_timestamp(secs, 0).ok_or(WebhookError::BadTimestamp)?;
        if !valid_delivery_id(delivery) {
            return Err(WebhookError::BadDeliveryId);
        }
        let skew = (now - sent_at).num_seconds();
        if skew.unsigned_abs() > self.max_skew.as_secs() {
            return Err(WebhookError::StaleTimestamp(skew));
        }
        Ok((timestamp, delivery, signature, sent_at))
    }

    pub fn verify(
        &self,
        headers: WebhookHeaders<'_>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<VerifiedDelivery, WebhookError> {
        let (timestamp, delivery, signature, sent_at) = self.headers_of(headers, now)?;
        let given = decode_signature(signature).ok_or(WebhookError::BadSignature)?;
        let mut mac = self.mac(timestamp.trim(), delivery);
        mac.update(body);
        mac.verify_slice(&given)
            .map_err(|_| WebhookError::BadSignature)?;
        Ok(VerifiedDelivery {
            delivery_id: delivery.to_owned(),
            sent_at,
        })
    }

    fn mac(&self, timestamp: &str, delivery: &str) -> HmacSha256 {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail here.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(self.secret.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(delivery.as_bytes());
        mac.update(b".");
        mac
    }

    /// The header value a sender computes (used by tests and the docs' example).
    pub fn sign(&self, timestamp: i64, delivery: &str, body: &[u8]) -> String {
        let mut mac = self.mac(&timestamp.to_string(), delivery);
        mac.update(body);
        format!(
            "{SIGNATURE_VERSION}{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }
}

fn valid_delivery_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// `v1=` then 32 bytes as hex (64 chars) or base64 (44 chars).
fn decode_signature(header: &str) -> Option<Vec<u8>> {
    let raw = header.trim().strip_prefix(SIGNATURE_VERSION)?;
    let bytes = if raw.len() == 64 {
        hex::decode(raw).ok()?
    } else {
        base64::engine::general_purpose::STANDARD.decode(raw).ok()?
    };
    (bytes.len() == 32).then_some(bytes)
}

/// The change number from a webhook body (a change-request record). Only the
/// number is taken from it: everything else is read again from ServiceNow.
pub fn change_number(body: &[u8]) -> Result<TicketId, WebhookError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::BadBody(e.to_string()))?;
    let number = value
        .get("number")
        .and_then(|n| n.as_str())
        .ok_or_else(|| WebhookError::BadBody("`number` (a string) is required".into()))?;
    TicketId::parse(number).map_err(|e| WebhookError::BadBody(format!("`number` {}", e.message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> WebhookVerifier {
        WebhookVerifier::new(SecretString::from("s3cret"), Duration::from_secs(300))
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_428_000, 0).unwrap()
    }

    const BODY: &[u8] = br#"{"number":"CHG0012345","state":"-1"}"#;

    fn headers<'a>(ts: &'a str, sig: &'a str) -> WebhookHeaders<'a> {
        WebhookHeaders {
            timestamp: Some(ts),
            delivery: Some("d-1"),
            signature: Some(sig),
        }
    }

    #[test]
    fn a_signed_delivery_verifies_in_base64_and_hex() {
        let v = verifier();
        let sig = v.sign(1_795_428_000, "d-1", BODY);
        let ok = v.verify(headers("1795428000", &sig), BODY, now()).unwrap();
        assert_eq!(ok.delivery_id, "d-1");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sig.trim_start_matches("v1="))
            .unwrap();
        let hex_sig = format!("v1={}", hex::encode(raw));
        assert!(
            v.verify(headers("1795428000", &hex_sig), BODY, now())
                .is_ok()
        );
    }

    #[test]
    fn every_tampering_is_refused() {
        let v = verifier();
        let sig = v.sign(1_795_428_000, "d-1", BODY);
        let other_body = br#"{"number":"CHG0099999","state":"-1"}"#;
        assert_eq!(
            v.verify(headers("1795428000", &sig), other_body, now()),
            Err(WebhookError::BadSignature)
        );
        // The timestamp is signed: moving it breaks the signature.
        assert_eq!(
            v.verify(headers("1795428001", &sig), BODY, now()),
            Err(WebhookError::BadSignature)
        );
        let mut h = headers("1795428000", &sig);
        h.delivery = Some("d-2");
        assert_eq!(v.verify(h, BODY, now()), Err(WebhookError::BadSignature));
        let wrong_key = WebhookVerifier::new(SecretString::from("other"), Duration::from_secs(300));
        assert_eq!(
            wrong_key.verify(headers("1795428000", &sig), BODY, now()),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            v.verify(headers("1795428000", "v1=abc"), BODY, now()),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            v.verify(
                headers("1795428000", sig.trim_start_matches("v1=")),
                BODY,
                now()
            ),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn stale_missing_and_malformed_headers() {
        let v = verifier();
        let old = 1_795_428_000 - 301;
        let sig = v.sign(old, "d-1", BODY);
        assert_eq!(
            v.verify(headers(&old.to_string(), &sig), BODY, now()),
            Err(WebhookError::StaleTimestamp(301))
        );
        let future = 1_795_428_000 + 301;
        let sig = v.sign(future, "d-1", BODY);
        assert!(matches!(
            v.verify(headers(&future.to_string(), &sig), BODY, now()),
            Err(WebhookError::StaleTimestamp(-301))
        ));
        assert_eq!(
            v.verify(headers("yesterday", "v1=x"), BODY, now()),
            Err(WebhookError::BadTimestamp)
        );
        let mut h = headers("1795428000", "v1=x");
        h.delivery = None;
        assert_eq!(
            v.verify(h, BODY, now()),
            Err(WebhookError::MissingHeader(DELIVERY_HEADER))
        );
        h.delivery = Some("has space");
        assert_eq!(v.verify(h, BODY, now()), Err(WebhookError::BadDeliveryId));
    }

    #[test]
    fn only_the_number_is_taken_from_the_body() {
        assert_eq!(change_number(BODY).unwrap().as_str(), "CHG0012345");
        assert!(change_number(b"{}").is_err());
        assert!(change_number(br#"{"number":"INC1"}"#).is_err());
        assert!(change_number(b"not json").is_err());
    }
}
