//! SOC email against a real SMTP server (aiosmtpd): each event kind reaches
//! its recipients with who, which role, which ticket, when and what the
//! broker did; an SMTP outage queues mail that is delivered once it is back.

use std::collections::BTreeMap;

use chrono::TimeDelta;
use jit_domain::SweepKind;
use jit_e2e::app::{Stack, t0};
use jit_e2e::{Backend, SmtpPeer};
use jit_notify::Recipients;
use jit_server::sandbox_servicenow::ChangeBook;
use serde_json::json;

const ENG: &str = "eng@example.com";

fn recipients() -> Recipients {
    Recipients {
        default: vec!["soc@bank.example".into()],
        by_kind: BTreeMap::from([(
            "grant_activated".to_owned(),
            vec![
                "cx-ops@bank.example".to_owned(),
                "soc@bank.example".to_owned(),
            ],
        )]),
    }
}

fn request(user: &str, ticket: &str) -> serde_json::Value {
    jit_e2e::app::grant_request(user, ticket, "30m")
}

#[tokio::test]
async fn each_event_kind_reaches_its_recipients_with_its_content() {
    let smtp = SmtpPeer::start();
    let (stack, _tenant) = Stack::with_users(
        Backend::Sqlite,
        &[
            (ENG, &["Employee"]),
            ("tel@example.com", &["Employee"]),
            ("mallory@example.com", &["Employee", "Master Admin"]),
        ],
    )
    .await;
    let mailer = stack.mailer(&smtp, recipients());

    // Activation, then expiry.
    let grant = stack.request(request(ENG, "CHG0000300")).await;
    stack.run_due().await;
    assert_eq!(mailer.run_due().await.unwrap(), 1);
    stack.advance(30 * 60);
    stack.run_due().await;
    assert_eq!(mailer.run_due().await.unwrap(), 1);

    // A permanent directory failure: a user the directory does not know.
    stack
        .request(request("ghost@example.com", "CHG0000301"))
        .await;
    stack.run_due().await;

    // An emergency change granted before its approval.
    let mut c = ChangeBook::approved_change(
        "CHG0000302",
        "bob@example.com",
        "Telephony Admin",
        t0(),
        TimeDelta::hours(4),
    );
    c["approval"] = json!("requested");
    c["type"] = json!("emergency");
    stack.servicenow.changes.put_change(c);
    stack
        .servicenow
        .changes
        .add_group_member("grp-ops", "tel@example.com");
    let mut body = request("tel@example.com", "CHG0000302");
    body["role"] = json!("Telephony Admin");
    stack.request(body).await;

    // A sweep finding mallory's standing Master Admin.
    let config = jit_app::ReconcileConfig {
        requests_per_second: 1000,
        ..Default::default()
    };
    let run = stack
        .app
        .reconcile(SweepKind::Deep, "test", false, "sweeper", &config)
        .await
        .unwrap();
    assert_eq!(run.findings, 1);
    mailer.run_due().await.unwrap();
    assert_eq!(
        mailer.run_due().await.unwrap(),
        0,
        "nothing left, nothing sent twice"
    );

    let mail = smtp.messages();
    let subjects: Vec<&str> = mail.iter().map(|m| m.subject.as_str()).collect();
    // Six: the unknown user's grant did activate before its failure.
    assert_eq!(mail.len(), 6, "{subjects:#?}");
    let find = |needle: &str| {
        mail.iter()
            .find(|m| m.subject.contains(needle))
            .unwrap_or_else(|| panic!("no mail with `{needle}` in {subjects:#?}"))
    };

    let activated = find("Master Admin granted to eng@example.com");
    assert_eq!(
        activated.subject,
        "[jit-broker][P3] Master Admin granted to eng@example.com (CHG0000300)"
    );
    assert!(
        activated.to.contains("cx-ops@bank.example") && activated.to.contains("soc@bank.example"),
        "{}",
        activated.to
    );
    assert!(activated.from.contains("jit-broker@bank.example"));
    for fact in [
        "User: eng@example.com",
        "Role: Master Admin",
        "Ticket: CHG0000300",
        "Rotate the SIP trunk certificate",
        &grant.id.to_string(),
        "What the broker did: Adds the role",
    ] {
        assert!(
            activated.text.contains(fact),
            "`{fact}` in {}",
            activated.text
        );
    }
    assert!(
        activated
            .html
            .contains("<th align=\"left\">Ticket</th><td>CHG0000300</td>"),
        "{}",
        activated.html
    );
    assert!(
        activated.message_id.starts_with("<audit-"),
        "{}",
        activated.message_id
    );

    let ended = find("Master Admin ended for eng@example.com: expired");
    assert_eq!(ended.to, "soc@bank.example");
    assert!(
        ended.text.contains("OVERDUE alert follows"),
        "{}",
        ended.text
    );

    let failed = find("[P1] FAILED to apply Master Admin for ghost@example.com");
    assert!(failed.text.contains("not found"), "{}", failed.text);

    let emergency = find("[P2] EMERGENCY grant: Telephony Admin for tel@example.com on CHG0000302");
    assert!(
        emergency.text.contains("not approved yet"),
        "{}",
        emergency.text
    );

    let sweep = find("[P2] standing privilege: mallory@example.com held Master Admin (removed)");
    assert!(
        sweep.text.contains("mallory@example.com held Master Admin"),
        "{}",
        sweep.text
    );
    assert!(
        sweep.html.contains("<td>standing_privilege</td>"),
        "{}",
        sweep.html
    );
}

#[tokio::test]
async fn with_smtp_down_mail_is_queued_then_delivered_exactly_once() {
    let mut smtp = SmtpPeer::start();
    smtp.stop();
    let (stack, _tenant) = Stack::with_users(Backend::Postgres, &[(ENG, &["Employee"])]).await;
    let mailer = stack.mailer(&smtp, recipients());
    stack.request(request(ENG, "CHG0000310")).await;
    stack.run_due().await;
    assert_eq!(mailer.run_due().await.unwrap(), 1, "attempted, refused");
    assert_eq!(
        mailer.run_due().await.unwrap(),
        0,
        "backing off, not hammering"
    );

    smtp.resume();
    assert_eq!(
        mailer.run_due().await.unwrap(),
        0,
        "still waiting for its retry time"
    );
    stack.advance(10);
    assert_eq!(mailer.run_due().await.unwrap(), 1, "delivered on retry");
    stack.advance(3600);
    assert_eq!(mailer.run_due().await.unwrap(), 0);
    let mail = smtp.messages();
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0]
            .subject
            .contains("Master Admin granted to eng@example.com")
    );
}

#[tokio::test]
async fn a_many_finding_sweep_is_one_digest() {
    let smtp = SmtpPeer::start();
    let users: Vec<String> = (0..6).map(|i| format!("admin{i}@example.com")).collect();
    let seeded: Vec<(&str, &[&str])> = users
        .iter()
        .map(|u| (u.as_str(), &["Master Admin"][..]))
        .collect();
    let (stack, tenant) = Stack::with_users(Backend::Sqlite, &seeded).await;
    let mailer = stack.mailer(&smtp, recipients());
    let config = jit_app::ReconcileConfig {
        requests_per_second: 1000,
        ..Default::default()
    };
    stack
        .app
        .reconcile(SweepKind::Deep, "test", false, "sweeper", &config)
        .await
        .unwrap();
    mailer.run_due().await.unwrap();
    let mail = smtp.messages();
    assert_eq!(mail.len(), 1, "one digest, not six mails");
    assert_eq!(
        mail[0].subject,
        "[jit-broker][P2] Reconciler: 6 findings, 6 roles stripped"
    );
    for u in &users {
        assert!(mail[0].text.contains(u.as_str()), "{u} listed");
        assert!(tenant.roles_of(u).await.is_empty(), "{u} stripped");
    }
}

#[tokio::test]
async fn starttls_is_required_and_the_certificate_verified() {
    let (smtp, ca) = SmtpPeer::start_starttls();
    let (stack, _tenant) = Stack::with_users(Backend::Sqlite, &[(ENG, &["Employee"])]).await;
    stack.request(request(ENG, "CHG0000320")).await;
    stack.run_due().await;

    // Plain SMTP to a server that requires STARTTLS: refused for good.
    let plain = stack.mailer(&smtp, recipients());
    assert_eq!(plain.run_due().await.unwrap(), 1);
    assert!(smtp.messages().is_empty());

    // Another event, sent over STARTTLS with the relay's CA trusted.
    stack.advance(30 * 60);
    stack.run_due().await;
    let tls = stack.mailer_with(&smtp, recipients(), |c| {
        c.host = "localhost".into();
        c.tls = jit_notify::TlsMode::StartTls;
        c.ca_file = Some(ca.clone());
    });
    assert_eq!(tls.run_due().await.unwrap(), 1);
    let mail = smtp.messages();
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0].subject.contains("ended for eng@example.com"),
        "{}",
        mail[0].subject
    );

    // Without the CA the self-signed certificate is not trusted: nothing is sent.
    let untrusted = stack.mailer_with(&smtp, recipients(), |c| {
        c.host = "localhost".into();
        c.tls = jit_notify::TlsMode::StartTls;
    });
    stack
        .request(
            json!({"user": ENG, "role": "Master Admin", "ticket": "CHG0000321", "duration": "30m",
                        "justification": "Rotate the SIP trunk certificate"}),
        )
        .await;
    stack.run_due().await;
    assert_eq!(untrusted.run_due().await.unwrap(), 1);
    assert_eq!(
        smtp.messages().len(),
        1,
        "no mail over an unverified connection"
    );
}

#[tokio::test]
async fn smtp_auth_uses_the_configured_login() {
    let (smtp, ca) = SmtpPeer::start_with_auth("jit-broker", "smtp-pass-0123");
    let (stack, _tenant) = Stack::with_users(Backend::Sqlite, &[(ENG, &["Employee"])]).await;
    let with_password = |password: &'static str| {
        let ca = ca.clone();
        move |c: &mut jit_notify::SmtpConfig| {
            c.host = "localhost".into();
            c.tls = jit_notify::TlsMode::StartTls;
            c.ca_file = Some(ca);
            c.username = Some("jit-broker".into());
            c.password = Some(secrecy::SecretString::from(password));
        }
    };
    stack.request(request(ENG, "CHG0000330")).await;
    stack.run_due().await;
    // Without credentials the server refuses the mail (530 authentication required).
    let anonymous = stack.mailer_with(&smtp, recipients(), |c| {
        with_password("unused")(c);
        c.username = None;
        c.password = None;
    });
    assert_eq!(anonymous.run_due().await.unwrap(), 1);
    assert!(smtp.messages().is_empty(), "refused without a login");
    let pool = sqlx::SqlitePool::connect(&stack.database_url)
        .await
        .unwrap();
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, last_error FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "failed", "{error:?}");

    stack.advance(30 * 60);
    stack.run_due().await;
    let right = stack.mailer_with(&smtp, recipients(), with_password("smtp-pass-0123"));
    assert_eq!(right.run_due().await.unwrap(), 1);
    let mail = smtp.messages();
    assert_eq!(mail.len(), 1);
    assert!(mail[0].subject.contains("ended for eng@example.com"));
}

/// A request that waits for approval is mailed to the role's named approvers
/// (not to the SOC's list); its outcome is mailed to the requester.
#[tokio::test]
async fn approvers_hear_of_a_waiting_request_and_the_requester_of_its_outcome() {
    let smtp = SmtpPeer::start();
    let (stack, _tenant) = Stack::with_users(Backend::Sqlite, &[(ENG, &["Employee"])]).await;
    let mailer = stack.mailer(&smtp, recipients());
    let mut body = request(ENG, "CHG0000310");
    body["role"] = json!("Recording Admin");
    let grant = stack.request(body).await;
    assert_eq!(grant.state, jit_domain::GrantState::PendingApproval);
    assert_eq!(mailer.run_due().await.unwrap(), 1);
    let lead = jit_app::Person {
        user: jit_domain::UserName::parse("lead@example.com").unwrap(),
        groups: Default::default(),
    };
    stack
        .app
        .review_grant(&lead, grant.id, jit_domain::Verdict::Approve, "CHG checked")
        .await
        .unwrap();
    assert_eq!(mailer.run_due().await.unwrap(), 1);

    let mail = smtp.messages();
    let subjects: Vec<&str> = mail.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(mail.len(), 2, "{subjects:#?}");
    let asked = mail
        .iter()
        .find(|m| {
            m.subject
                .contains("Approval needed: Recording Admin for eng@example.com")
        })
        .unwrap_or_else(|| panic!("{subjects:#?}"));
    assert!(asked.to.contains("lead@example.com"), "{}", asked.to);
    assert!(
        !asked.to.contains("soc@bank.example"),
        "not the SOC's list: {}",
        asked.to
    );
    let outcome = mail
        .iter()
        .find(|m| {
            m.subject
                .contains("Your request for Recording Admin was approved")
        })
        .unwrap_or_else(|| panic!("{subjects:#?}"));
    assert_eq!(outcome.to.trim(), ENG);
    assert!(outcome.text.contains("by lead@example.com") && outcome.text.contains("CHG checked"));
}
