//! The states a grant moves through and the reasons it ends, with their
//! stored spelling. Kept apart from `grant` so the policy decision can name
//! the state it leads to without depending on the grant itself.

use serde::{Deserialize, Serialize};

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
