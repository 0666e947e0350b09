//! The states a grant moves through and the reasons it ends, with their
//! stored spelling. Kept apart from `grant` so the policy decision can name
//! the state it leads to without depending on the grant itself.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::names::UnknownName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    PendingApproval,
    Approved,
    Active,
    Ended,
    Denied,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Expired,
    Dropped,
    TicketClosed,
    RevokedByAdmin,
}

/// The one place state and reason names meet their stored spelling.
macro_rules! snake_names {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$(<$ty>::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $name),+ }
            }
        }
        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $($name => Ok(<$ty>::$variant),)+ _ => Err(UnknownName(s.to_owned())) }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

snake_names!(GrantState {
    PendingApproval => "pending_approval",
    Approved => "approved",
    Active => "active",
    Ended => "ended",
    Denied => "denied",
    Cancelled => "cancelled",
});
snake_names!(EndReason {
    Expired => "expired",
    Dropped => "dropped",
    TicketClosed => "ticket_closed",
    RevokedByAdmin => "revoked_by_admin",
});

impl GrantState {
    /// A terminal grant never changes state again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Ended | Self::Denied | Self::Cancelled)
    }
}
