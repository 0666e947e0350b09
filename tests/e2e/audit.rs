//! Evidence an auditor can check without trusting the broker: the chain and
//! its signed checkpoints name every kind of tampering (an edit, a deletion,
//! a reordering, a tail cut off, a tail rewritten, a forged checkpoint) on
//! both backends; an export verifies on its own, through the real command;
//! the API pages the same events.

use std::process::Command;

use jit_app::{AuditFilter, CheckpointSigner};
use jit_e2e::app::{API_KEY, READER_KEY, Stack, spawn_app};
use jit_e2e::{Backend, Tenant};
use jit_store::{BrokenLink, CheckpointKey};
use rstest::rstest;
use serde_json::json;
use sqlx::Connection;

const ENG: &str = "eng@example.com";

/// A log of a grant's life (request, activation, expiry), signed at its head
/// by a checkpoint, then two more events the checkpoint does not cover.
async fn signed_log(backend: Backend) -> (Stack, CheckpointKey, i64) {
    let (stack, _tenant) = Stack::with_users(backend, &[(ENG, &["Employee"])]).await;
    stack
        .request(
            json!({"user": ENG, "role": "Master Admin", "ticket": "CHG0000500",
                        "duration": "30m", "justification": "Rotate the SIP trunk certificate"}),
        )
        .await;
    stack.run_due().await;
    let key = CheckpointKey::generate();
    let cp = stack.app.checkpoint_audit(&key).await.unwrap().unwrap();
    assert!(
        stack.app.checkpoint_audit(&key).await.unwrap().is_none(),
        "nothing new: no second checkpoint"
    );
    stack.advance(30 * 60);
    stack.run_due().await;
    (stack, key, cp.seq)
}

async fn tamper(backend: Backend, url: &str, sql: &str) {
    let unguarded = match backend {
        Backend::Sqlite => {
            format!("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; {sql}")
        }
        Backend::Postgres => format!(
            "ALTER TABLE audit DISABLE TRIGGER audit_no_update; {sql}; ALTER TABLE audit ENABLE TRIGGER audit_no_update"
        ),
    };
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(unguarded.clone()))
                .execute(&mut c)
                .await
                .unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(unguarded.clone()))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}

async fn verdict(stack: &Stack, key: &CheckpointKey) -> Result<jit_store::AuditReport, BrokenLink> {
    jit_store::verify_audit(stack.store.as_ref(), Some(&key.public_hex()))
        .await
        .unwrap()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn every_kind_of_tampering_is_detected_and_named(#[case] backend: Backend) {
    // Untouched: everything verifies against the trusted key.
    let (stack, key, signed) = signed_log(backend).await;
    let report = verdict(&stack, &key).await.unwrap();
    assert_eq!(report.checkpoints, 1);
    assert!(report.events > signed as u64 && report.trusted_key);
    let other = CheckpointKey::generate();
    let forged = jit_store::verify_audit(stack.store.as_ref(), Some(&other.public_hex()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(forged.seq, signed, "{forged}");
    assert!(
        forged
            .reason
            .contains("not validly signed by the trusted key"),
        "{forged}"
    );

    // An edit.
    let (stack, key, _) = signed_log(backend).await;
    tamper(
        backend,
        &stack.database_url,
        "UPDATE audit SET actor = 'mallory' WHERE seq = 2",
    )
    .await;
    let broken = verdict(&stack, &key).await.unwrap_err();
    assert_eq!(broken.seq, 2, "{broken}");
    assert!(broken.reason.contains("altered"), "{broken}");

    // A deletion.
    let (stack, key, _) = signed_log(backend).await;
    tamper(
        backend,
        &stack.database_url,
        "DELETE FROM audit WHERE seq = 3",
    )
    .await;
    let broken = verdict(&stack, &key).await.unwrap_err();
    assert_eq!(broken.seq, 4, "{broken}");
    assert!(broken.reason.contains("expected seq 3"), "{broken}");

    // A reordering: events 2 and 3 swap places.
    let (stack, key, _) = signed_log(backend).await;
    tamper(
        backend,
        &stack.database_url,
        "UPDATE audit SET seq = -2 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = -2",
    )
    .await;
    let broken = verdict(&stack, &key).await.unwrap_err();
    assert_eq!(broken.seq, 2, "{broken}");

    // The tail cut off, back into what the checkpoint covers (the
    // checkpoint's own event and everything after it go too).
    let (stack, key, signed) = signed_log(backend).await;
    tamper(
        backend,
        &stack.database_url,
        &format!("DELETE FROM audit WHERE seq >= {}", signed - 1),
    )
    .await;
    let broken = verdict(&stack, &key).await.unwrap_err();
    assert_eq!(broken.seq, signed - 1, "{broken}");
    assert!(broken.reason.contains("the tail was cut off"), "{broken}");

    // The tail rewritten: cut, then a consistent new chain appended through
    // the store itself. Every link verifies; the checkpoint does not.
    let (stack, key, signed) = signed_log(backend).await;
    tamper(
        backend,
        &stack.database_url,
        &format!("DELETE FROM audit WHERE seq >= {signed}"),
    )
    .await;
    for _ in 0..3 {
        stack
            .store
            .append_audit(jit_app::NewAudit {
                at: jit_e2e::app::t0(),
                actor: "mallory".into(),
                kind: "grant_requested",
                grant: None,
                ticket: None,
                data: json!({"user": "mallory@example.com"}),
            })
            .await
            .unwrap();
    }
    let broken = verdict(&stack, &key).await.unwrap_err();
    assert_eq!(broken.seq, signed, "{broken}");
    assert!(
        broken.reason.contains("rewritten after the checkpoint"),
        "{broken}"
    );
}

/// `jit-broker audit export` and `audit verify --file`, the real command
/// over the test's database: a whole export and a filtered one verify on
/// their own; an edited line is named.
#[tokio::test]
async fn an_export_verifies_on_its_own_and_names_an_edited_line() {
    let (stack, key, signed) = signed_log(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let jit = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_jit-broker-under-test"))
            .current_dir(jit_e2e::workspace_root())
            .env("JIT_DATABASE__URL", &stack.database_url)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let public = key.public_hex();
    let whole = dir.path().join("whole.jsonl");
    let (code, _, err) = jit(&["audit", "export", "--out", whole.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = jit(&[
        "audit",
        "verify",
        "--file",
        whole.to_str().unwrap(),
        "--public-key",
        &public,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("0 gaps") && out.contains("1 checkpoints (1 matched"),
        "{out}"
    );

    // One user's events only: gaps, still verified event by event.
    let mine = dir.path().join("mine.jsonl");
    let (code, _, err) = jit(&[
        "audit",
        "export",
        "--user",
        ENG,
        "--out",
        mine.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    // Without a trusted key, a checkpoint's own key proves nothing: said
    // loudly and refused, unless accepted explicitly.
    let (code, out, err) = jit(&["audit", "verify", "--file", mine.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(err.contains("WARNING: no trusted public key"), "{err}");
    let (code, out, err) = jit(&[
        "audit",
        "verify",
        "--file",
        mine.to_str().unwrap(),
        "--trust-embedded-key",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("WARNING: no trusted public key"),
        "still said: {err}"
    );
    assert!(!out.contains(" 0 gaps"), "{out}");

    // An edited line.
    let text = std::fs::read_to_string(&whole).unwrap();
    let edited = text.replacen(ENG, "someone-else@example.com", 1);
    assert_ne!(text, edited);
    std::fs::write(&whole, edited).unwrap();
    let (code, _, err) = jit(&["audit", "verify", "--file", whole.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("altered"), "{err}");

    // The database itself verifies through the command too.
    let (code, out, err) = jit(&["audit", "verify", "--public-key", &public]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("1 checkpoints"), "{out}");

    // A checkpoint signed now covers the newer events as well.
    let cp = stack.app.checkpoint_audit(&key).await.unwrap().unwrap();
    assert!(cp.seq > signed);
    let (key_id, _) = key.sign_head(cp.seq, &cp.hash);
    assert_eq!(cp.key_id, key_id);
    let filter = AuditFilter {
        grant: None,
        ..AuditFilter::default()
    };
    let page = stack.app.audit_page(&filter, 0, 1000).await.unwrap();
    let checkpoints = stack.app.audit_checkpoints().await.unwrap();
    let report = jit_store::verify_slice(&page.events, &checkpoints, Some(&public)).unwrap();
    assert_eq!(report.checkpoints_matched, 2);
}

#[tokio::test]
async fn the_api_pages_the_audit_log_for_admin_keys() {
    let tenant = Tenant::new();
    tenant.create_user(ENG, &["Employee"]).await;
    let app = spawn_app(Backend::Sqlite, Some(&tenant.base_url)).await;
    let (status, body) = app
        .request_grant(&json!({"user": ENG, "role": "Master Admin", "ticket": "CHG0000501",
                               "duration": "30m", "justification": "Rotate the SIP trunk certificate"}))
        .await;
    assert_eq!(status, 201, "{body}");
    // Activated: the log now holds more than one event naming the user.
    tenant
        .wait_for_role(
            ENG,
            "Master Admin",
            true,
            std::time::Duration::from_secs(10),
        )
        .await;
    let get = |path: String, key: &'static str| {
        let http = app.http.clone();
        let base = app.base.clone();
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (status, _) = get("/api/v1/audit".into(), READER_KEY).await;
    assert_eq!(status, 403, "the audit log is for admin keys");
    let (status, first) = get(format!("/api/v1/audit?user={ENG}&limit=1"), API_KEY).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    assert_eq!(first["items"][0]["data"]["user"], ENG);
    assert!(first["items"][0]["hash"].is_string() && first["items"][0]["prev_hash"].is_string());
    let cursor = first["next_cursor"].as_i64().unwrap();
    let (status, rest) = get(format!("/api/v1/audit?user={ENG}&cursor={cursor}"), API_KEY).await;
    assert_eq!(status, 200, "{rest}");
    assert!(rest["items"][0]["seq"].as_i64().unwrap() > first["items"][0]["seq"].as_i64().unwrap());
    let (status, bad) = get("/api/v1/audit?cursor=-1".into(), API_KEY).await;
    assert_eq!(status, 422, "{bad}");
    assert!(bad.to_string().contains("cursor"), "{bad}");
    app.running.stop().await;
}
