//! The holders sweep: who holds each privileged role, as the directory
//! answers (a SCIM filter, or Genesys Cloud's subject grants with groups).

use std::num::NonZeroU32;

use jit_domain::{FindingAction, FindingOutcome, RoleName, UserName, judge_group_grant};

use super::ReconcileConfig;
use crate::app::App;
use crate::budget::{Lane, in_lane};
use crate::error::AppError;
use crate::ports::{GroupHolder, ReconcileRun};

impl App {
    /// The holders of each privileged role, as the directory answers; where
    /// it cannot say, everyone is listed instead (it still must be swept).
    pub(super) async fn ask_holders(
        &self,
        run: &mut ReconcileRun,
        owner: &str,
        config: &ReconcileConfig,
        limiter: &governor::DefaultDirectRateLimiter,
    ) -> Result<(), AppError> {
        self.discover_privileged(false).await?;
        let roles: Vec<RoleName> = self.rules().privileged_roles().cloned().collect();
        for role in &roles {
            self.renew_lease(run, owner, config).await?;
            limiter.until_ready().await;
            let Some(holders) = self
                .sweep_call(config, || self.directory.role_holders(role))
                .await?
            else {
                tracing::warn!(
                    "the directory cannot list a role's holders: the holders sweep lists everyone"
                );
                return self.list_everyone(run, owner, config, limiter).await;
            };
            run.pages += holders.requests;
            for user in holders.users {
                run.users_scanned += 1;
                let Ok(user) = UserName::parse(&user) else {
                    run.errors += 1;
                    continue;
                };
                self.examine(run, &user, role, config, limiter).await?;
            }
            for group in &holders.groups {
                self.examine_group(run, group, role, limiter).await?;
            }
            self.store.update_run(run, None).await?;
        }
        Ok(())
    }

    /// A group holding a privileged role: stripped from the group (its
    /// members hold it without a grant of their own) unless the policy
    /// makes the group an exception; either way one finding names them all.
    pub(super) async fn examine_group(
        &self,
        run: &mut ReconcileRun,
        group: &GroupHolder,
        role: &RoleName,
        limiter: &governor::DefaultDirectRateLimiter,
    ) -> Result<(), AppError> {
        let judgement = judge_group_grant(
            &self.rules(),
            &group.name,
            role,
            &group.members,
            &group.divisions,
        );
        let action = match (judgement.action, run.dry_run) {
            (FindingAction::Strip, true) => FindingOutcome::WouldRemove,
            (FindingAction::Strip, false) => {
                // Read, remove, read back.
                if let Some(three) = NonZeroU32::new(3) {
                    let _ = limiter.until_n_ready(three).await;
                }
                match in_lane(
                    Lane::Revocation,
                    self.directory.strip_group_role(group, role),
                )
                .await
                {
                    Ok(()) => {
                        run.actions += 1;
                        FindingOutcome::Removed
                    }
                    Err(e) => {
                        tracing::warn!(group = %group.name, %role, error = %e, "reconcile: could not strip a group's role");
                        run.errors += 1;
                        FindingOutcome::Failed
                    }
                }
            }
            _ => FindingOutcome::Reported,
        };
        let who = format!("group {} ({})", group.name, group.id);
        self.record_finding(run, &who, role, &judgement, action)
            .await
    }
}
