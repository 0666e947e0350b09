//! The organisation the stand-in keeps in memory: users, roles, divisions,
//! groups, grants, OAuth clients. Pure: every method is a rule of the model,
//! the HTTP layer only translates.
//!
//! The model follows what Genesys Cloud documents (docs/genesys-cloud.md):
//! a role is held as a grant (subject, role, division); a subject is a user
//! or a group, and a group's members hold its grants; `*` is the division
//! "all divisions". Where Genesys is silent, [`Switches`] choose.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

/// The division id that means "every division".
pub const ALL_DIVISIONS: &str = "*";

/// Where a SCIM `add` on `roles` lands: undocumented, so a switch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScimAddLandsIn {
    /// The user's home division (what the Admin UI defaults to).
    #[default]
    HomeDivision,
    /// All divisions (`*`).
    AllDivisions,
}

/// What a SCIM `remove` of a role takes away: undocumented, so a switch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScimRemoveTakes {
    /// Only the grant in the home division; grants elsewhere stay.
    #[default]
    HomeDivisionOnly,
    /// The user's direct grants of the role in every division.
    EveryDivision,
}

/// The stand-in's choices where Genesys Cloud's behaviour is not documented.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switches {
    pub scim_add_lands_in: ScimAddLandsIn,
    pub scim_remove_takes: ScimRemoveTakes,
    /// Whether SCIM's `roles` also names roles a user holds only through a
    /// group (default: direct grants only).
    pub scim_lists_group_roles: bool,
    /// Whether SCIM's `roles` leaves out grants made in a division other
    /// than home (default: it names a role granted in any division).
    pub scim_lists_home_division_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub user_name: String,
    pub active: bool,
    /// Bumped on every change to the user's grants: SCIM's `meta.version`.
    pub version: u64,
    pub last_token_issued: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub id: String,
    pub name: String,
    /// Permission strings such as `authorization:grant:add`, `*` for all.
    pub permissions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Division {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub members: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    pub id: String,
    pub name: String,
    pub secret: String,
    /// (role id, division id) pairs the client holds.
    pub role_divisions: Vec<(String, String)>,
}

/// One grant: the subject (user or group id), the role id, the division id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantKey {
    pub subject: String,
    pub role: String,
    pub division: String,
}

/// A grant as a subject's read shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantView {
    /// Who holds it directly: the user, or the group it comes through.
    pub subject: String,
    pub role: String,
    pub division: String,
    pub made_at: DateTime<Utc>,
}

/// Why a write was refused (the HTTP layer answers 400 or 404).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoSuchSubject(String),
    NoSuchRole(String),
    NoSuchDivision(String),
    /// SCIM `If-Match` named another version.
    StaleVersion {
        expected: String,
        current: String,
    },
    BadPatch(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    User,
    Group,
}

#[derive(Debug, Default)]
pub struct Org {
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
    pub divisions: BTreeMap<String, Division>,
    pub home_division: String,
    pub groups: BTreeMap<String, Group>,
    pub grants: BTreeMap<GrantKey, DateTime<Utc>>,
    pub clients: BTreeMap<String, OAuthClient>,
}

impl Org {
    pub fn role_by_name(&self, name: &str) -> Option<&Role> {
        self.roles.values().find(|r| r.name == name)
    }

    pub fn division_by_name(&self, name: &str) -> Option<&Division> {
        self.divisions.values().find(|d| d.name == name)
    }

    pub fn user_by_name(&self, user_name: &str) -> Option<&User> {
        self.users
            .values()
            .find(|u| u.user_name.eq_ignore_ascii_case(user_name))
    }

    pub fn subject_kind(&self, id: &str) -> Option<SubjectKind> {
        if self.users.contains_key(id) {
            Some(SubjectKind::User)
        } else if self.groups.contains_key(id) {
            Some(SubjectKind::Group)
        } else {
            None
        }
    }

    /// The division's name as a read shows it (`*` is "All divisions").
    pub fn division_name(&self, id: &str) -> String {
        match self.divisions.get(id) {
            Some(d) => d.name.clone(),
            None if id == ALL_DIVISIONS => "All divisions".into(),
            None => id.to_owned(),
        }
    }

    fn known_division(&self, id: &str) -> bool {
        id == ALL_DIVISIONS || self.divisions.contains_key(id)
    }

    /// The subject's grants: its own, and with `through_groups` those of the
    /// groups it belongs to (`includeDuplicates=true`).
    pub fn grants_of(&self, subject: &str, through_groups: bool) -> Vec<GrantView> {
        let mut via: Vec<&str> = vec![subject];
        if through_groups {
            via.extend(
                self.groups
                    .values()
                    .filter(|g| g.members.contains(subject))
                    .map(|g| g.id.as_str()),
            );
        }
        self.grants
            .iter()
            .filter(|(k, _)| via.contains(&k.subject.as_str()))
            .map(|(k, at)| GrantView {
                subject: k.subject.clone(),
                role: k.role.clone(),
                division: k.division.clone(),
                made_at: *at,
            })
            .collect()
    }

    /// A subject's own grants as the audit trail names them: "role in division".
    pub fn grant_names(&self, subject: &str) -> BTreeSet<String> {
        self.grants_of(subject, false)
            .into_iter()
            .map(|g| {
                let role = self
                    .roles
                    .get(&g.role)
                    .map_or(g.role.as_str(), |r| r.name.as_str());
                format!("{role} in {}", self.division_name(&g.division))
            })
            .collect()
    }

    /// Every subject holding `role`, each with the divisions of its grants.
    pub fn subject_grants(&self, role: &str) -> BTreeMap<String, BTreeSet<String>> {
        let mut holders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for k in self.grants.keys().filter(|k| k.role == role) {
            holders
                .entry(k.subject.clone())
                .or_default()
                .insert(k.division.clone());
        }
        holders
    }

    /// Users holding `role` by a grant of their own (any division).
    pub fn direct_holders(&self, role: &str) -> Vec<&User> {
        let subjects = self.subject_grants(role);
        self.users
            .values()
            .filter(|u| subjects.contains_key(&u.id))
            .collect()
    }

    /// The role names SCIM lists for a user.
    pub fn scim_roles(&self, user: &str, switches: &Switches) -> Vec<String> {
        let names: BTreeSet<String> = self
            .grants_of(user, switches.scim_lists_group_roles)
            .into_iter()
            .filter(|g| {
                !switches.scim_lists_home_division_only
                    || g.division == self.home_division
                    || g.division == ALL_DIVISIONS
            })
            .filter_map(|g| self.roles.get(&g.role).map(|r| r.name.clone()))
            .collect();
        names.into_iter().collect()
    }

    /// Adds the pairs to a subject; all are checked before any is made.
    pub fn bulk_add(
        &mut self,
        subject: &str,
        pairs: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        self.check_pairs(subject, pairs)?;
        let mut changed = false;
        for (role, division) in pairs {
            let key = GrantKey {
                subject: subject.to_owned(),
                role: role.clone(),
                division: division.clone(),
            };
            if let std::collections::btree_map::Entry::Vacant(e) = self.grants.entry(key) {
                e.insert(now);
                changed = true;
            }
        }
        if changed {
            self.touch(subject);
        }
        Ok(())
    }

    /// Removes the pairs from a subject (absent ones are no-ops); every
    /// other grant of the subject stays.
    pub fn bulk_remove(
        &mut self,
        subject: &str,
        pairs: &[(String, String)],
    ) -> Result<(), Refusal> {
        self.check_pairs(subject, pairs)?;
        let mut changed = false;
        for (role, division) in pairs {
            changed |= self
                .grants
                .remove(&GrantKey {
                    subject: subject.to_owned(),
                    role: role.clone(),
                    division: division.clone(),
                })
                .is_some();
        }
        if changed {
            self.touch(subject);
        }
        Ok(())
    }

    fn check_pairs(&self, subject: &str, pairs: &[(String, String)]) -> Result<(), Refusal> {
        if self.subject_kind(subject).is_none() {
            return Err(Refusal::NoSuchSubject(subject.to_owned()));
        }
        for (role, division) in pairs {
            if !self.roles.contains_key(role) {
                return Err(Refusal::NoSuchRole(role.clone()));
            }
            if !self.known_division(division) {
                return Err(Refusal::NoSuchDivision(division.clone()));
            }
        }
        Ok(())
    }

    /// A SCIM role add or remove (by role name), as the switches say.
    pub fn scim_change_role(
        &mut self,
        user: &str,
        role_name: &str,
        add: bool,
        switches: &Switches,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        let role = self
            .role_by_name(role_name)
            .ok_or_else(|| Refusal::NoSuchRole(role_name.to_owned()))?
            .id
            .clone();
        let home = self.home_division.clone();
        if add {
            let division = match switches.scim_add_lands_in {
                ScimAddLandsIn::HomeDivision => home,
                ScimAddLandsIn::AllDivisions => ALL_DIVISIONS.to_owned(),
            };
            return self.bulk_add(user, &[(role, division)], now);
        }
        let pairs: Vec<(String, String)> = match switches.scim_remove_takes {
            ScimRemoveTakes::HomeDivisionOnly => vec![(role, home)],
            ScimRemoveTakes::EveryDivision => self
                .grants_of(user, false)
                .into_iter()
                .filter(|g| g.role == role)
                .map(|g| (g.role, g.division))
                .collect(),
        };
        self.bulk_remove(user, &pairs)
    }

    /// A change to a subject's grants is a change to its members' SCIM view.
    fn touch(&mut self, subject: &str) {
        if let Some(u) = self.users.get_mut(subject) {
            u.version += 1;
        } else if let Some(g) = self.groups.get(subject) {
            for m in g.members.clone() {
                if let Some(u) = self.users.get_mut(&m) {
                    u.version += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn org() -> Org {
        let mut o = Org {
            home_division: "home".into(),
            ..Org::default()
        };
        for (id, name) in [("home", "Home"), ("emea", "EMEA")] {
            o.divisions.insert(
                id.into(),
                Division {
                    id: id.into(),
                    name: name.into(),
                },
            );
        }
        o.roles.insert(
            "r-ma".into(),
            Role {
                id: "r-ma".into(),
                name: "Master Admin".into(),
                permissions: vec!["*".into()],
            },
        );
        o.users.insert(
            "u1".into(),
            User {
                id: "u1".into(),
                user_name: "eng@example.com".into(),
                active: true,
                version: 1,
                last_token_issued: None,
            },
        );
        o.groups.insert(
            "g1".into(),
            Group {
                id: "g1".into(),
                name: "Admins".into(),
                members: BTreeSet::from(["u1".to_owned()]),
            },
        );
        o
    }

    fn pair(role: &str, division: &str) -> (String, String) {
        (role.into(), division.into())
    }

    #[test]
    fn bulk_writes_touch_only_the_named_pairs() {
        let mut o = org();
        o.bulk_add("u1", &[pair("r-ma", "home"), pair("r-ma", "emea")], at())
            .unwrap();
        o.bulk_remove("u1", &[pair("r-ma", "home")]).unwrap();
        let left: Vec<String> = o
            .grants_of("u1", false)
            .into_iter()
            .map(|g| g.division)
            .collect();
        assert_eq!(left, vec!["emea".to_owned()]);
        assert_eq!(o.users["u1"].version, 3);
    }

    #[test]
    fn a_bad_pair_writes_nothing() {
        let mut o = org();
        let refused = o.bulk_add("u1", &[pair("r-ma", "home"), pair("r-ma", "nowhere")], at());
        assert_eq!(refused, Err(Refusal::NoSuchDivision("nowhere".into())));
        assert!(o.grants.is_empty());
    }

    #[test]
    fn group_grants_reach_members_only_with_duplicates() {
        let mut o = org();
        o.bulk_add("g1", &[pair("r-ma", ALL_DIVISIONS)], at())
            .unwrap();
        assert!(o.grants_of("u1", false).is_empty());
        let through = o.grants_of("u1", true);
        assert_eq!(through.len(), 1);
        assert_eq!(through[0].subject, "g1");
        assert!(o.scim_roles("u1", &Switches::default()).is_empty());
        let listing = Switches {
            scim_lists_group_roles: true,
            ..Switches::default()
        };
        assert_eq!(
            o.scim_roles("u1", &listing),
            vec!["Master Admin".to_owned()]
        );
    }

    #[test]
    fn scim_writes_follow_the_switches() {
        let mut o = org();
        let home_only = Switches::default();
        o.bulk_add("u1", &[pair("r-ma", "emea")], at()).unwrap();
        o.scim_change_role("u1", "Master Admin", true, &home_only, at())
            .unwrap();
        o.scim_change_role("u1", "Master Admin", false, &home_only, at())
            .unwrap();
        // The grant in EMEA survives a SCIM remove that takes the home one only.
        assert_eq!(
            o.scim_roles("u1", &home_only),
            vec!["Master Admin".to_owned()]
        );
        let everywhere = Switches {
            scim_add_lands_in: ScimAddLandsIn::AllDivisions,
            scim_remove_takes: ScimRemoveTakes::EveryDivision,
            ..Switches::default()
        };
        o.scim_change_role("u1", "Master Admin", true, &everywhere, at())
            .unwrap();
        assert!(
            o.grants_of("u1", false)
                .iter()
                .any(|g| g.division == ALL_DIVISIONS)
        );
        o.scim_change_role("u1", "Master Admin", false, &everywhere, at())
            .unwrap();
        assert!(o.grants_of("u1", false).is_empty());
    }
}
