//! The ticket system port: ServiceNow's changes.

use async_trait::async_trait;
use jit_domain::{ChangeTicket, TicketId, UserName};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// No answer we can decide on (down, timed out, 5xx, refused our
    /// credentials, unreadable): a request is refused, never granted on a guess.
    #[error("ServiceNow could not be asked: {0}")]
    Unavailable(String),
}

/// The change-management system (ServiceNow's Table API).
#[async_trait]
pub trait TicketSystem: Send + Sync {
    /// The change request with this number, read now; `None` if there is none.
    async fn change(&self, number: &TicketId) -> Result<Option<ChangeTicket>, TicketError>;
    /// Whether `user` is a member of the group with this `sys_id`.
    async fn is_group_member(
        &self,
        group_sys_id: &str,
        user: &UserName,
    ) -> Result<bool, TicketError>;
    /// Approved changes assigned to `user`, read now (at most `limit`): the
    /// web form's pick-list, filtered by the policy afterwards.
    async fn changes_assigned_to(
        &self,
        user: &UserName,
        limit: u32,
    ) -> Result<Vec<ChangeTicket>, TicketError>;
}
