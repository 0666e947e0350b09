//! What the SOC must hear beyond grants and sweeps: a break-glass account
//! being used (P1), and a daily digest of what is open.
//!
//! Break-glass accounts hold privileged roles by design, so holding is not
//! news; logging in is. Each account's newest login is read from the
//! directory (Genesys Cloud: the last token issued) on a short schedule and
//! kept in the store, so that a restart neither misses nor repeats one.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use jit_domain::{FindingKind, GrantState, UserName, login_is_news};
use serde::Serialize;
use serde_json::json;

use crate::app::{App, SYSTEM_ACTOR};
use crate::budget::{Lane, in_lane};
use crate::error::AppError;
use crate::ports::{DirectoryError, GrantFilter, NewAudit};

/// A break-glass account logged in (P1).
pub const BREAK_GLASS_LOGIN: &str = "break_glass_login";
/// The daily digest of what is open.
pub const SOC_DIGEST: &str = "soc_digest";
const LOGIN_LEASE: &str = "break-glass-logins";

/// What one round of break-glass checks found.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct LoginCheck {
    pub accounts: u32,
    pub alerts: u32,
    /// The directory cannot tell when a user last logged in (generic SCIM).
    pub unsupported: bool,
}

impl App {
    /// Reads each break-glass account's newest login and raises a P1 for
    /// one newer than the last seen. One replica at a time (a lease).
    pub async fn check_break_glass_logins(&self, owner: &str) -> Result<LoginCheck, AppError> {
        let accounts: Vec<UserName> = self.policy.break_glass_users().cloned().collect();
        let mut report = LoginCheck::default();
        if accounts.is_empty() {
            return Ok(report);
        }
        let now = self.now();
        if !self
            .store
            .try_lease(LOGIN_LEASE, owner, now, now + TimeDelta::minutes(1))
            .await?
        {
            return Err(AppError::Busy(
                "another replica is checking break-glass logins".into(),
            ));
        }
        let mut result = Ok(());
        for account in &accounts {
            result = self.check_login(account, &mut report).await;
            if result.is_err() || report.unsupported {
                break;
            }
        }
        self.store.release_lease(LOGIN_LEASE, owner).await?;
        result.map(|()| report)
    }

    async fn check_login(
        &self,
        account: &UserName,
        report: &mut LoginCheck,
    ) -> Result<(), AppError> {
        let login = match in_lane(Lane::Sweep, self.directory.last_login(account)).await {
            Ok(Some(login)) => login,
            Ok(None) => {
                report.unsupported = true;
                return Ok(());
            }
            Err(DirectoryError::UserNotFound(_)) => {
                tracing::warn!(%account, "break-glass account not found in the directory");
                return Ok(());
            }
            Err(e) => return Err(AppError::Directory(e)),
        };
        report.accounts += 1;
        let now = self.now();
        let previous = self.store.last_login_seen(account).await?;
        let (alert, follow_up) = match (login_is_news(previous, login, now), login) {
            (true, Some(at)) => {
                report.alerts += 1;
                let (alert, directory_id) =
                    self.login_alert(account, at, previous.flatten(), now).await;
                (Some(alert), directory_id.map(|id| (id, at)))
            }
            _ => (None, None),
        };
        self.store
            .record_login_check(account, login, now, alert)
            .await?;
        // What the account does from its login on is read later and mailed
        // as a follow-up (the trail fills in after the fact).
        if let Some((directory_id, at)) = follow_up {
            self.schedule_login_activity(account, &directory_id, at)
                .await?;
        }
        Ok(())
    }

    async fn login_alert(
        &self,
        account: &UserName,
        at: DateTime<Utc>,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> (NewAudit, Option<String>) {
        // What the account can do now; the alert goes out without it rather
        // than not at all.
        let (roles, directory_id) =
            match in_lane(Lane::Sweep, self.directory.find_user(account)).await {
                Ok(user) => (json!(user.roles), Some(user.id)),
                Err(e) => (json!(format!("unknown: {e}")), None),
            };
        tracing::error!(%account, logged_in_at = %at, "break-glass account used");
        let alert = NewAudit {
            at: now,
            actor: SYSTEM_ACTOR.into(),
            kind: BREAK_GLASS_LOGIN,
            grant: None,
            ticket: None,
            data: json!({
                "user": account, "logged_in_at": at, "previous_login_at": previous,
                "roles": roles,
            }),
        };
        (alert, directory_id)
    }

    /// The daily digest: open incidents (break-glass accounts and what they
    /// hold, privileged OAuth clients, conflicting writers), overdue
    /// revocations, and the last day's grants by role and ticket. Written as
    /// one audit event, mailed like the others.
    pub async fn soc_digest(&self) -> Result<(), AppError> {
        let now = self.now();
        let since = now - TimeDelta::days(1);
        let incidents = self.store.open_incidents().await?;
        let listed = |kind: FindingKind| {
            incidents
                .iter()
                .filter(|i| i.kind == kind)
                .map(|i| json!({"subject": i.subject, "role": i.role, "since": i.opened_at}))
                .collect::<Vec<_>>()
        };
        let mut break_glass = Vec::new();
        for account in self.policy.break_glass_users() {
            let holds: Vec<&str> = incidents
                .iter()
                .filter(|i| i.kind == FindingKind::BreakGlassHeld && i.subject == account.as_str())
                .map(|i| i.role.as_str())
                .collect();
            let last_login = self.store.last_login_seen(account).await?.flatten();
            break_glass.push(json!({"user": account, "holds": holds, "last_login_at": last_login}));
        }
        let mut overdue = Vec::new();
        let ended = self
            .store
            .grants(&GrantFilter {
                state: Some(GrantState::Ended),
                limit: 1000,
                ..GrantFilter::default()
            })
            .await?;
        for g in &ended {
            if g.role_added_at.is_some()
                && let Some(late) = g.revocation_overdue(now, self.revocation_slo)
            {
                overdue.push(json!({
                    "grant": g.id, "user": g.user, "role": g.role, "ended_at": g.ended_at,
                    "overdue_secs": late.num_seconds(),
                }));
            }
        }
        let recent = self
            .store
            .grants(&GrantFilter {
                limit: 1000,
                ..GrantFilter::default()
            })
            .await?;
        let mut by_role: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for g in recent.iter().filter(|g| g.created_at >= since) {
            let ticket = g
                .ticket
                .as_ref()
                .map_or("none".to_owned(), |t| t.to_string());
            by_role
                .entry((g.role.to_string(), ticket))
                .or_default()
                .push(format!("{} ({})", g.user, g.state.as_str()));
        }
        let grants: Vec<_> = by_role
            .into_iter()
            .map(|((role, ticket), users)| json!({"role": role, "ticket": ticket, "grants": users}))
            .collect();
        let audit = NewAudit {
            at: now,
            actor: SYSTEM_ACTOR.into(),
            kind: SOC_DIGEST,
            grant: None,
            ticket: None,
            data: json!({
                "since": since,
                "break_glass": break_glass,
                "oauth_clients": listed(FindingKind::OauthClientPrivileged),
                "conflicting_writers": listed(FindingKind::ConflictingWriter),
                "report_only": listed(FindingKind::StandingPrivilege),
                "overdue_revocations": overdue,
                "grants": grants,
            }),
        };
        self.store.append_audit(audit).await?;
        Ok(())
    }
}
