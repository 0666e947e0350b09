//! Parse-don't-validate newtypes: a value of these types has passed its rule.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stored or configured name (a state, a reason, a change state) that
/// matches none of the names its type knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown name `{0}`")]
pub struct UnknownName(pub String);

/// Why a raw value was refused: `rule` is a stable machine name, `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub rule: &'static str,
    pub message: String,
}

impl Invalid {
    fn new(rule: &'static str, message: impl Into<String>) -> Self {
        Self {
            rule,
            message: message.into(),
        }
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(|e| serde::de::Error::custom(e.message))
            }
        }
    };
}

string_newtype!(
    /// A directory user's `userName` (in Genesys Cloud, the login e-mail).
    UserName
);
string_newtype!(
    /// A directory role's name, exactly as the directory spells it (`Master Admin`).
    RoleName
);
string_newtype!(
    /// A ServiceNow change request number: `CHG` and 7 to 12 digits.
    TicketId
);
string_newtype!(
    /// Why the engineer needs the role, in their words; stored and audited.
    Justification
);

impl UserName {
    pub const MAX_LEN: usize = 256;

    /// The one canonical form every comparison, key, lock, row and look-up
    /// uses: trimmed, ASCII letters lowered. A user name is an e-mail address
    /// (Genesys Cloud's login), compared without case by Genesys, by the
    /// identity providers and by SCIM (`userName` is `caseExact: false`,
    /// RFC 7643 §4.1.1); `ALICE@example.com` is alice. Letters beyond ASCII
    /// are kept as given (SQLite's `lower()` and the migration lower ASCII
    /// only, so stored and parsed names agree).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let v = raw.trim();
        if v.is_empty() {
            return Err(Invalid::new("required", "must not be empty"));
        }
        if v.len() > Self::MAX_LEN {
            return Err(Invalid::new(
                "max_length",
                format!("must be at most {} bytes", Self::MAX_LEN),
            ));
        }
        if has_control(v) || v.contains('"') {
            return Err(Invalid::new(
                "charset",
                "must not contain control characters or quotes",
            ));
        }
        Ok(Self(v.to_ascii_lowercase()))
    }

    /// Whether `raw` (an actor's name as recorded, which may predate the
    /// canonical form, or be an API key's name) names this user.
    pub fn is(&self, raw: &str) -> bool {
        self.0.eq_ignore_ascii_case(raw.trim())
    }
}

impl RoleName {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let v = raw.trim();
        if v.is_empty() {
            return Err(Invalid::new("required", "must not be empty"));
        }
        if v.len() > Self::MAX_LEN {
            return Err(Invalid::new(
                "max_length",
                format!("must be at most {} bytes", Self::MAX_LEN),
            ));
        }
        // The role name ends up inside a SCIM filter path `roles[value eq "…"]`.
        if has_control(v) || v.contains('"') || v.contains('\\') {
            return Err(Invalid::new(
                "charset",
                "must not contain control characters, quotes or backslashes",
            ));
        }
        Ok(Self(v.to_owned()))
    }
}

impl TicketId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let v = raw.trim();
        let digits = v.strip_prefix("CHG").unwrap_or("");
        if digits.len() < 7 || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Invalid::new(
                "format",
                "must be a ServiceNow change number: CHG followed by 7 to 12 digits, e.g. CHG0012345",
            ));
        }
        Ok(Self(v.to_owned()))
    }
}

impl Justification {
    pub const MIN_LEN: usize = 10;
    pub const MAX_LEN: usize = 2000;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let v = raw.trim();
        if v.is_empty() {
            return Err(Invalid::new("required", "must not be empty"));
        }
        let chars = v.chars().count();
        if chars < Self::MIN_LEN {
            return Err(Invalid::new(
                "min_length",
                format!("must be at least {} characters", Self::MIN_LEN),
            ));
        }
        if chars > Self::MAX_LEN {
            return Err(Invalid::new(
                "max_length",
                format!("must be at most {} characters", Self::MAX_LEN),
            ));
        }
        if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(Invalid::new(
                "charset",
                "must not contain control characters",
            ));
        }
        Ok(Self(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_numbers() {
        assert!(TicketId::parse("CHG0012345").is_ok());
        assert!(TicketId::parse(" CHG001234567 ").is_ok());
        for bad in [
            "",
            "CHG",
            "CHG123456",
            "chg0012345",
            "INC0012345",
            "CHG00123x5",
            "CHG0012345678901",
        ] {
            assert_eq!(TicketId::parse(bad).unwrap_err().rule, "format", "{bad}");
        }
    }

    #[test]
    fn role_names_cannot_break_out_of_a_scim_filter() {
        assert!(RoleName::parse("Master Admin").is_ok());
        assert_eq!(RoleName::parse("x\"] or [").unwrap_err().rule, "charset");
        assert_eq!(RoleName::parse("a\\b").unwrap_err().rule, "charset");
        assert_eq!(RoleName::parse("  ").unwrap_err().rule, "required");
    }

    #[test]
    fn user_names_and_justifications() {
        assert_eq!(UserName::parse(" a@b.c ").unwrap().as_str(), "a@b.c");
        assert_eq!(
            UserName::parse("ALICE@Example.COM").unwrap(),
            UserName::parse("alice@example.com").unwrap(),
            "one canonical form"
        );
        assert_eq!(
            UserName::parse("Ünïcode@b.c").unwrap().as_str(),
            "Ünïcode@b.c"
        );
        assert!(
            UserName::parse("alice@example.com")
                .unwrap()
                .is(" ALICE@example.com")
        );
        assert_eq!(UserName::parse("a\u{0}b").unwrap_err().rule, "charset");
        assert_eq!(
            UserName::parse(&"x".repeat(300)).unwrap_err().rule,
            "max_length"
        );
        assert_eq!(
            Justification::parse("short").unwrap_err().rule,
            "min_length"
        );
        assert!(Justification::parse("Rotate the SIP trunk certificate\nper runbook").is_ok());
    }
}
