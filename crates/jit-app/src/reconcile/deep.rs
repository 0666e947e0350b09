//! The deep sweep: every user, page by page; with Genesys Cloud, a
//! cross-check of SCIM's view against the grants; the OAuth-client report.

use std::collections::{BTreeMap, BTreeSet};

use jit_domain::{
    FindingAction, FindingKind, FindingOutcome, Judgement, RoleName, UserName, judge_disagreement,
};

use super::{HoldersByRole, ReconcileConfig};
use crate::app::App;
use crate::budget::{Lane, in_lane};
use crate::error::AppError;
use crate::ports::{DirectoryError, ReconcileRun};

impl App {
    /// Every user of the directory, one page at a time. Where the holders
    /// come from Genesys Cloud's grants, what they said before the listing
    /// is compared with what SCIM's `roles` listed (see [`Self::cross_check`]).
    pub(super) async fn list_everyone(
        &self,
        run: &mut ReconcileRun,
        owner: &str,
        config: &ReconcileConfig,
        limiter: &governor::DefaultDirectRateLimiter,
    ) -> Result<(), AppError> {
        self.discover_privileged(true).await?;
        let mut by_grants = match self.directory.holders_are_grants() {
            true => Some(self.holders_by_role(run, config, limiter).await?),
            false => None,
        };
        // Only privileged holders are kept: a handful, whatever the org's size.
        let mut by_scim: HoldersByRole = BTreeMap::new();
        let mut start_index: u64 = 1;
        loop {
            self.renew_lease(run, owner, config).await?;
            limiter.until_ready().await;
            let page = self
                .sweep_call(config, || {
                    self.directory.list_users(start_index, config.page_size)
                })
                .await?;
            run.pages += 1;
            let listed = page.users.len() as u64;
            for user in page.users {
                run.users_scanned += 1;
                for role in &user.roles {
                    let Ok(role) = RoleName::parse(role) else {
                        continue;
                    };
                    if !self.rules().is_privileged(&role) {
                        continue;
                    }
                    let Ok(user_name) = UserName::parse(&user.user_name) else {
                        run.errors += 1;
                        continue;
                    };
                    by_scim
                        .entry(role.clone())
                        .or_default()
                        .insert(user_name.clone());
                    let found = self
                        .examine(run, &user_name, &role, config, limiter)
                        .await?;
                    // A finding: the pair was judged held (a strip's converge
                    // read the grants; a report is kept as it is), so it is
                    // not a disagreement between SCIM and the grants.
                    if found && let Some(by_grants) = by_grants.as_mut() {
                        by_grants.entry(role.clone()).or_default().insert(user_name);
                    }
                }
            }
            self.store.update_run(run, None).await?;
            start_index += listed;
            if listed == 0 || start_index > page.total_results {
                break;
            }
        }
        match by_grants {
            Some(by_grants) => {
                self.cross_check(run, &by_grants, &by_scim, config, limiter)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Who holds each privileged role by a grant of their own (the holders
    /// answer, users only: groups are the holders sweep's).
    pub(super) async fn holders_by_role(
        &self,
        run: &mut ReconcileRun,
        config: &ReconcileConfig,
        limiter: &governor::DefaultDirectRateLimiter,
    ) -> Result<HoldersByRole, AppError> {
        let mut by_role = BTreeMap::new();
        let roles: Vec<RoleName> = self.rules().privileged_roles().cloned().collect();
        for role in roles {
            limiter.until_ready().await;
            let Some(holders) = self
                .sweep_call(config, || self.directory.role_holders(&role))
                .await?
            else {
                continue;
            };
            run.pages += holders.requests;
            let users = holders
                .users
                .iter()
                .filter_map(|u| UserName::parse(u).ok())
                .collect();
            by_role.insert(role, users);
        }
        Ok(by_role)
    }

    /// SCIM's `roles` and the grants should name the same holders. Where
    /// they do not, and a fresh read of the user's grants confirms it, the
    /// disagreement is a finding of its own (reported: SCIM cannot be trusted
    /// about this privilege); a holder SCIM did not list is then judged like
    /// any other, so a grant SCIM hides is still stripped.
    pub(super) async fn cross_check(
        &self,
        run: &mut ReconcileRun,
        by_grants: &HoldersByRole,
        by_scim: &HoldersByRole,
        config: &ReconcileConfig,
        limiter: &governor::DefaultDirectRateLimiter,
    ) -> Result<(), AppError> {
        let none = BTreeSet::new();
        for (role, granted) in by_grants {
            let listed = by_scim.get(role).unwrap_or(&none);
            for user in listed.symmetric_difference(granted) {
                limiter.until_ready().await;
                let holds = match self
                    .sweep_call(config, || self.directory.find_user(user))
                    .await
                {
                    Ok(now) => now.holds(role),
                    Err(AppError::Directory(DirectoryError::UserNotFound(_))) => continue,
                    Err(e) => return Err(e),
                };
                // Equal now: the pair changed during the sweep.
                let Some(judgement) = judge_disagreement(user, role, listed.contains(user), holds)
                else {
                    continue;
                };
                self.record_finding(
                    run,
                    user.as_str(),
                    role,
                    &judgement,
                    FindingOutcome::Reported,
                )
                .await?;
                if holds {
                    self.examine(run, user, role, config, limiter).await?;
                }
            }
        }
        Ok(())
    }

    /// Integrations holding privileged roles: reported, never stripped.
    pub(super) async fn report_oauth_clients(
        &self,
        run: &mut ReconcileRun,
    ) -> Result<(), AppError> {
        let Some(clients) = in_lane(Lane::Report, self.directory.oauth_clients())
            .await
            .map_err(AppError::Directory)?
        else {
            return Err(AppError::Directory(DirectoryError::Permanent(
                "reconciler.oauth_clients is on but the target offers no OAuth-client listing (Genesys profile only)"
                    .into(),
            )));
        };
        for client in clients {
            for role in &client.roles {
                let Ok(role) = RoleName::parse(role) else {
                    continue;
                };
                if !self.rules().is_privileged(&role) {
                    continue;
                }
                let detail = format!(
                    "OAuth client `{}` holds `{role}`: an integration with standing privilege; review its grant in Genesys Cloud",
                    client.name
                );
                let who = format!("oauth-client {} ({})", client.name, client.id);
                let judgement = Judgement {
                    kind: FindingKind::OauthClientPrivileged,
                    action: FindingAction::Report,
                    detail,
                    conflict: None,
                    granted_by: None,
                };
                self.record_finding(run, &who, &role, &judgement, FindingOutcome::Reported)
                    .await?;
            }
        }
        Ok(())
    }
}
