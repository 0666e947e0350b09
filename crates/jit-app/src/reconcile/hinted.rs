//! Events are hints (jit-domain `hint`): an event about a user makes the
//! broker read that user's grants now and judge each privileged role they
//! hold, exactly as the holders sweep would, recorded as a run of its own
//! (trigger `event`). The event decides nothing: the read does.

use std::num::NonZeroU32;

use governor::{Quota, RateLimiter};
use jit_domain::{RoleName, SweepKind, UserName};

use super::ReconcileConfig;
use crate::app::App;
use crate::budget::{Lane, in_lane};
use crate::error::AppError;
use crate::ports::ReconcileRun;

impl App {
    /// Reads the user with directory id `user_id` now (in the revocation
    /// lane) and judges each privileged role they hold by a grant of their
    /// own; `None` when they hold none (nothing is recorded). No lease:
    /// converge's pair lock and re-decision make it safe beside a sweep.
    pub async fn examine_user_now(
        &self,
        user_id: &str,
        trigger: &str,
        config: &ReconcileConfig,
    ) -> Result<Option<ReconcileRun>, AppError> {
        let user = in_lane(Lane::Revocation, self.directory.user_by_id(user_id))
            .await
            .map_err(AppError::Directory)?;
        let roles: Vec<RoleName> = user
            .roles
            .iter()
            .filter_map(|r| RoleName::parse(r).ok())
            .filter(|r| self.rules().is_privileged(r))
            .collect();
        // Nothing privileged held: nothing to judge, nothing to record.
        if roles.is_empty() {
            return Ok(None);
        }
        let now = self.now();
        let mut run = super::new_run(SweepKind::Holders, trigger, false, now);
        (run.users_scanned, run.pages) = (1, 1);
        self.store.insert_run(&run).await?;
        let rate = NonZeroU32::new(config.requests_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let limiter = RateLimiter::direct(Quota::per_second(rate));
        let result = match UserName::parse(&user.user_name) {
            Ok(name) => {
                let mut examined = Ok(());
                for role in &roles {
                    examined = self
                        .examine(&mut run, &name, role, config, &limiter)
                        .await
                        .map(|_| ());
                    if examined.is_err() {
                        break;
                    }
                }
                examined
            }
            Err(_) => {
                run.errors += 1;
                Ok(())
            }
        };
        self.finish_run(&mut run, &result).await?;
        result.map(|()| Some(run))
    }
}
