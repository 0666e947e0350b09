//! `jit-broker policy check`: is the policy valid, what does it say, and
//! how would it decide a sample request.

use std::process::ExitCode;

use jit_app::Clock;
use jit_domain::policy::{format_duration, parse_duration};
use jit_domain::{
    ChangeState, ChangeTicket, Given, GrantRequestForm, Person, Policy, Team, TicketEvidence,
    decide, validate_grant_request,
};

use super::PolicyCheck;
use crate::config::Config;

pub(super) async fn policy_check(config: &Config, check: PolicyCheck) -> anyhow::Result<ExitCode> {
    let path = check.file.clone().unwrap_or_else(|| config.policy.clone());
    let policy = crate::load_policy(&path)?;
    let privileged = policy.roles().filter(|r| r.privileged).count();
    println!(
        "{}: valid ({} roles, {privileged} privileged)",
        path.display(),
        policy.roles().count()
    );
    let (Some(user), Some(role)) = (check.user.clone(), check.role.clone()) else {
        print_catalogue(&policy);
        print_permission_roles(config, &policy).await;
        return Ok(ExitCode::SUCCESS);
    };
    sample_decision(&policy, check, user, role)
}

/// One line per role: what the policy says of it.
fn print_catalogue(policy: &Policy) {
    println!(
        "\n{:<20}  {:<10}  {:<8}  {:<8}  {:<6}  {:<22}  {:<16}  {:<9}  ELIGIBLE",
        "ROLE", "PRIVILEGED", "DEFAULT", "MAX", "TICKET", "STATES", "REQUESTER", "APPROVALS"
    );
    for r in policy.roles() {
        let states: Vec<&str> = r.change_states.iter().map(|s| s.as_str()).collect();
        let mut eligible: Vec<String> = r.eligible.users.iter().map(|u| u.to_string()).collect();
        eligible.extend(r.eligible.groups.iter().map(|g| format!("group:{g}")));
        if r.eligible.anyone {
            eligible.insert(0, "*".into());
        }
        println!(
            "{:<20}  {:<10}  {:<8}  {:<8}  {:<6}  {:<22}  {:<16}  {:<9}  {}",
            r.name.as_str(),
            r.privileged,
            format_duration(r.default_duration),
            format_duration(r.max_duration),
            if r.require_ticket { "yes" } else { "no" },
            states.join(","),
            format!("{:?}", r.requester).to_lowercase(),
            r.approvals,
            eligible.join(", ")
        );
    }
}

/// The org's roles each privileged permission makes privileged (asked of
/// the configured directory; the catalogue's word wins for those it names).
async fn print_permission_roles(config: &Config, policy: &Policy) {
    if policy.privileged_permissions.is_empty() {
        return;
    }
    println!("\nprivileged by permission (asked of the directory):");
    let directory = match crate::directory_from_config(config, policy) {
        Ok(d) => d,
        Err(e) => {
            println!("  cannot ask: {e:#}");
            return;
        }
    };
    for permission in &policy.privileged_permissions {
        let found = jit_app::Directory::roles_with_permission(&directory, permission).await;
        let line = match found {
            Ok(Some(roles)) => {
                let roles: Vec<String> = roles
                    .into_iter()
                    .map(|r| {
                        match jit_domain::RoleName::parse(&r)
                            .ok()
                            .and_then(|n| policy.role(&n))
                        {
                            Some(named) if !named.privileged => {
                                format!("{r} (baseline in the catalogue)")
                            }
                            Some(_) => r,
                            None => format!("{r} (not in the catalogue: privileged by this rule)"),
                        }
                    })
                    .collect();
                if roles.is_empty() {
                    "no role".to_owned()
                } else {
                    roles.join(", ")
                }
            }
            Ok(None) => "the directory cannot say (genesys profile only)".to_owned(),
            Err(e) => format!("cannot ask: {e}"),
        };
        println!("  {permission:<32} {line}");
    }
}

/// A sample request (and change) through the same rules as a real one.
fn sample_decision(
    policy: &Policy,
    check: PolicyCheck,
    user: String,
    role: String,
) -> anyhow::Result<ExitCode> {
    let now = jit_app::SystemClock.now();
    let text = |given: &Option<String>| given.clone().map_or(Given::Absent, Given::Text);
    let form = GrantRequestForm {
        user: Given::Text(user),
        role: Given::Text(role),
        justification: Given::Text("policy check sample request".into()),
        duration: text(&check.duration),
        ticket: text(&check.ticket),
        ..GrantRequestForm::default()
    };
    let valid = match validate_grant_request(&form, policy, now) {
        Ok(v) => v,
        Err(errors) => {
            println!("\nthe request itself is refused:");
            for e in errors {
                println!("  {:<12} {:<18} {}", e.field, e.rule, e.message);
            }
            return Ok(ExitCode::from(3));
        }
    };
    let state: ChangeState = check
        .change_state
        .parse()
        .map_err(|_| anyhow::anyhow!("--change-state: unknown state `{}`", check.change_state))?;
    let window = parse_duration(&check.window).map_err(|m| anyhow::anyhow!("--window: {m}"))?;
    let assignee = check.assignee.unwrap_or_else(|| valid.user.to_string());
    let ticket = valid.ticket.clone().map(|number| ChangeTicket {
        number,
        sys_id: "sample".into(),
        state: Some(state),
        state_code: state.code().to_string(),
        approval: check.approval.clone(),
        start_date: Some(now - chrono::TimeDelta::minutes(5)),
        end_date: Some(now + window),
        assigned_to: Some(Person {
            sys_id: "sample".into(),
            user_name: None,
            email: Some(assignee.clone()),
        }),
        assignment_group: Some(Team {
            sys_id: "sample".into(),
            name: Some("sample group".into()),
        }),
        change_type: check.change_type.clone(),
        roles: vec![],
        roles_field: None,
        read_at: now,
    });
    let evidence = match &ticket {
        None => TicketEvidence::NotCited,
        Some(t) => TicketEvidence::Found {
            ticket: t,
            group_member: Some(check.in_assignment_group),
        },
    };
    let groups = check.groups.into_iter().collect();
    let decision = decide(policy, &valid, &groups, evidence, now);
    println!(
        "\nsample: `{}` as `{}` for {}{}",
        valid.user,
        valid.role,
        format_duration(valid.expires_at - valid.starts_at),
        ticket.as_ref().map_or(String::new(), |t| format!(
            ", citing {} ({}, {}, {} change assigned to {assignee}, window ends in {})",
            t.number, state, t.approval, t.change_type, check.window
        ))
    );
    println!("\n{:<6}  {:<40}  {:<24}  WHY", "RESULT", "CLAUSE", "RULE");
    for r in &decision.reasons {
        println!(
            "{:<6}  {:<40}  {:<24}  {}",
            if r.allowed { "allow" } else { "DENY" },
            r.clause,
            r.rule,
            r.message
        );
    }
    if decision.allowed {
        println!(
            "\ndecision: ALLOW → {} until {}{}",
            decision.state,
            decision.expires_at.format("%Y-%m-%d %H:%M:%S UTC"),
            if decision.emergency {
                " (emergency: SOC alerted)"
            } else {
                ""
            }
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\ndecision: DENY");
        Ok(ExitCode::from(3))
    }
}
