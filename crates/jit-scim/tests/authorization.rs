//! The Authorization API client against the Genesys Cloud stand-in.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use actix_web::web;
use jit_app::ProbeOutcome;
use jit_domain::RoleChange;
use jit_genesys_standin::{GenesysStandIn, Settings};
use jit_scim::authorization::{ALL_DIVISIONS, SubjectKind};
use jit_scim::{ScimClient, ScimConfig};
use secrecy::SecretString;

/// A client of the stand-in at `base` with these OAuth credentials.
fn client_of(base: &str, id: &str, secret: &str) -> ScimClient {
    ScimClient::new(
        ScimConfig::genesys_at(base, id.into(), SecretString::from(secret.to_owned())).unwrap(),
    )
    .unwrap()
}

/// The stand-in, the broker's client for it, and where it listens.
async fn spawn() -> (web::Data<GenesysStandIn>, ScimClient, String) {
    // This client runs without the broker's pacing (its Budget), so the
    // stand-in's 300/min limit is off here; the e2e tests keep it on.
    let standin = web::Data::new(GenesysStandIn::new(
        Settings {
            per_minute: None,
            ..Settings::default()
        },
        GenesysStandIn::system_clock(),
    ));
    standin.add_client_with_permissions(
        "broker",
        "broker-secret",
        "jit-broker",
        &jit_scim::doctor::needed_permissions(false),
    );
    let (base, server) = jit_genesys_standin::serve(standin.clone()).unwrap();
    tokio::spawn(server);
    let client = client_of(&base, "broker", "broker-secret");
    (standin, client, base)
}

#[tokio::test]
async fn grants_are_added_and_removed_pair_by_pair_and_read_back() {
    let (g, client, _) = spawn().await;
    let user = g.add_user("eng@example.com");
    let role = g.add_role("Master Admin", &["*"]);
    let emea = g.add_division("EMEA");
    assert_eq!(client.division_id("*").await.unwrap(), ALL_DIVISIONS);
    assert_eq!(client.division_id("home").await.unwrap(), g.home_division());
    assert_eq!(client.division_id("EMEA").await.unwrap(), emea);
    assert!(client.division_id("Nowhere").await.is_err());
    assert_eq!(
        client.role_id("Master Admin").await.unwrap(),
        Some(role.clone())
    );

    let pairs = vec![
        (role.clone(), ALL_DIVISIONS.to_owned()),
        (role.clone(), emea.clone()),
    ];
    client
        .change_grants(&user, RoleChange::Add, &pairs)
        .await
        .unwrap();
    let read = client.subject_grants(&user, false).await.unwrap();
    let mut divisions: Vec<&str> = read.iter().map(|g| g.division_id.as_str()).collect();
    divisions.sort_unstable();
    assert_eq!(divisions, vec![ALL_DIVISIONS, emea.as_str()]);
    assert!(
        read.iter()
            .all(|g| g.role == "Master Admin" && g.made_at.is_some())
    );

    client
        .change_grants(&user, RoleChange::Remove, &pairs[1..])
        .await
        .unwrap();
    let read = client.subject_grants(&user, false).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].division_id, ALL_DIVISIONS);
}

#[tokio::test]
async fn a_role_is_found_on_users_and_groups_with_its_divisions() {
    let (g, client, _) = spawn().await;
    let alice = g.add_user("alice@example.com");
    let bob = g.add_user("bob@example.com");
    let role = g.add_role("Master Admin", &["*"]);
    let emea = g.add_division("EMEA");
    let admins = g.add_group("Contact centre admins", &[&bob]);
    g.grant(&alice, &role, &emea);
    g.grant(&admins, &role, ALL_DIVISIONS);

    let subjects = client.role_subjects("Master Admin").await.unwrap().unwrap();
    let user = subjects.iter().find(|s| s.id == alice).unwrap();
    assert_eq!(
        (user.kind, user.division_ids.clone()),
        (SubjectKind::User, vec![emea])
    );
    let group = subjects.iter().find(|s| s.id == admins).unwrap();
    assert_eq!(group.kind, SubjectKind::Group);
    assert_eq!(
        client.group_members(&admins).await.unwrap(),
        vec!["bob@example.com"]
    );
    assert!(client.subject_grants(&bob, false).await.unwrap().is_empty());
    let through = client.subject_grants(&bob, true).await.unwrap();
    assert_eq!(through[0].subject_id, admins);
    assert_eq!(client.role_subjects("No Such Role").await.unwrap(), None);
}

#[tokio::test]
async fn an_expired_token_is_replaced_once_and_the_call_succeeds() {
    let (g, client, _) = spawn().await;
    let user = g.add_user("eng@example.com");
    client.subject_grants(&user, false).await.unwrap();
    g.expire_tokens();
    client.subject_grants(&user, false).await.unwrap();
    assert_eq!(jit_genesys_standin::Counts::get(&g.counts.tokens_issued), 2);
    assert_eq!(jit_genesys_standin::Counts::get(&g.counts.unauthorized), 1);
}

#[tokio::test]
async fn the_doctor_names_the_feature_a_missing_permission_breaks() {
    let (g, _, base) = spawn().await;
    g.add_user("eng@example.com");
    // A client whose role lacks authorization:role:view.
    let without: Vec<&str> = jit_scim::doctor::needed_permissions(true)
        .into_iter()
        .filter(|p| *p != "authorization:role:view")
        .collect();
    g.add_client_with_permissions("narrow", "narrow-secret", "narrow", &without);
    let narrow = client_of(&base, "narrow", "narrow-secret");
    let probes = narrow.doctor(true).await;
    let seen: Vec<(&str, ProbeOutcome)> = probes
        .iter()
        .map(|p| (p.permission, p.outcome.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("directory:user:view", ProbeOutcome::Allowed),
            ("authorization:grant:view", ProbeOutcome::Allowed),
            ("authorization:role:view", ProbeOutcome::Missing),
            ("authorization:grant:add", ProbeOutcome::NotProbed),
            ("authorization:grant:delete", ProbeOutcome::NotProbed),
            ("audits:audit:view", ProbeOutcome::Allowed),
            ("oauth:client:view", ProbeOutcome::Allowed),
        ]
    );
    assert!(probes[2].feature.contains("sweeps"));
}
