//! Roles privileged by what they can do: a custom role cloned from Master
//! Admin under another name escapes a policy written by role name, so the
//! sweeps also treat as privileged every role of the org that carries one
//! of the policy's `privileged_permissions` (unless the catalogue names it).

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::TimeDelta;
use jit_domain::RoleName;

use crate::app::App;
use crate::budget::{Lane, in_lane};
use crate::error::AppError;

/// The holders sweep asks again after this long; the deep sweep every time.
const REFRESH: TimeDelta = TimeDelta::hours(1);

impl App {
    /// Asks the directory which roles carry a privileged permission (one
    /// query per permission) when it has not for an hour, or `now`; the
    /// sweeps and converge then apply the policy with those roles added.
    /// Returns the roles found that the catalogue does not name.
    pub async fn discover_privileged(&self, now: bool) -> Result<Vec<RoleName>, AppError> {
        let wanted = &self.policy.privileged_permissions;
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let asked_at = self.effective.read().unwrap_or_else(|e| e.into_inner()).1;
        let at = self.now();
        if !now && asked_at.is_some_and(|t| at - t < REFRESH) {
            return Ok(Vec::new());
        }
        let mut found = BTreeSet::new();
        for permission in wanted {
            let roles = in_lane(
                Lane::Sweep,
                self.directory.roles_with_permission(permission),
            )
            .await
            .map_err(AppError::Directory)?;
            // A target that cannot say: the catalogue alone applies.
            found.extend(
                roles
                    .into_iter()
                    .flatten()
                    .filter_map(|r| RoleName::parse(&r).ok()),
            );
        }
        let effective = Arc::new(self.policy.with_privileged(&found));
        let added: Vec<RoleName> = found
            .into_iter()
            .filter(|r| self.policy.role(r).is_none())
            .collect();
        if !added.is_empty() {
            tracing::info!(roles = ?added, "roles privileged by their permissions");
        }
        *self.effective.write().unwrap_or_else(|e| e.into_inner()) = (effective, Some(at));
        Ok(added)
    }
}
