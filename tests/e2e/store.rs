//! The Store's own promises, the same on SQLite and PostgreSQL.

use chrono::TimeDelta;
use jit_app::{NewAudit, NewJob, Store};
use jit_domain::{Grant, GrantState, RoleName, UserName};
use jit_e2e::app::t0;
use jit_e2e::{Backend, fresh_database};
use rstest::rstest;
use serde_json::json;
use sqlx::Connection;

async fn store(backend: Backend) -> (std::sync::Arc<dyn Store>, String) {
    let url = fresh_database(backend).await;
    (jit_store::open(&url, true, 5).await.expect("open"), url)
}

fn job(user: &str, secs: i64) -> NewJob {
    NewJob {
        user: UserName::parse(user).unwrap(),
        role: RoleName::parse("Master Admin").unwrap(),
        grant: None,
        due_at: t0() + TimeDelta::seconds(secs),
        removal: true,
    }
}

fn audit(kind: &'static str, n: i64) -> NewAudit {
    NewAudit {
        at: t0() + TimeDelta::seconds(n),
        actor: "tester".into(),
        kind,
        grant: None,
        ticket: None,
        data: json!({"n": n, "nested": {"b": 1, "a": [1, "two"]}}),
    }
}

fn sample_grant(offset_ms: i64) -> Grant {
    let at = t0() + TimeDelta::milliseconds(offset_ms);
    let request = jit_domain::ValidGrantRequest {
        user: UserName::parse("eng@example.com").unwrap(),
        role: RoleName::parse("Master Admin").unwrap(),
        ticket: Some(jit_domain::TicketId::parse("CHG0012345").unwrap()),
        justification: jit_domain::Justification::parse("store test justification").unwrap(),
        starts_at: at,
        expires_at: at + TimeDelta::hours(1),
    };
    Grant::from_request(request, "tester", at)
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn jobs_are_leased_retried_and_reclaimed_after_a_crash(#[case] backend: Backend) {
    let (store, _) = store(backend).await;
    let g = sample_grant(0);
    store
        .insert_grant(
            &g,
            &[job("a@example.com", 0), job("b@example.com", 10)],
            audit("x", 0),
        )
        .await
        .unwrap();
    let lease = |s: i64| t0() + TimeDelta::seconds(s);

    let claimed = store.claim_jobs("w1", t0(), lease(30), 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "only the job due now");
    assert_eq!(
        (claimed[0].user.as_str(), claimed[0].attempts),
        ("a@example.com", 1)
    );
    assert!(
        store
            .claim_jobs("w2", t0(), lease(30), 10)
            .await
            .unwrap()
            .is_empty(),
        "leased to w1"
    );
    assert_eq!(
        store.next_due().await.unwrap(),
        Some(t0() + TimeDelta::seconds(10))
    );

    // w1 "crashes": after the lease, w2 claims the same job again.
    let reclaimed = store
        .claim_jobs("w2", lease(31), lease(61), 10)
        .await
        .unwrap();
    let a = reclaimed
        .iter()
        .find(|j| j.user.as_str() == "a@example.com")
        .expect("reclaimed");
    assert_eq!(a.attempts, 2);
    // The old owner's late answer is ignored.
    store.complete_job(a, "w1", lease(32), None).await.unwrap();
    assert!(
        store
            .claim_jobs("w3", lease(40), lease(70), 10)
            .await
            .unwrap()
            .is_empty(),
        "still w2's"
    );

    store
        .retry_job(a.id, "w2", lease(100), "HTTP 503")
        .await
        .unwrap();
    // b is still leased to w2 until +61 s: that is the next moment anything can be claimed.
    assert_eq!(store.next_due().await.unwrap(), Some(lease(61)));
    let b = reclaimed
        .iter()
        .find(|j| j.user.as_str() == "b@example.com")
        .expect("b was due too");
    store
        .fail_job(b.id, "w2", lease(33), "permanent", None)
        .await
        .unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(lease(100)));
    let again = store
        .claim_jobs("w2", lease(100), lease(130), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    store
        .complete_job(&again[0], "w2", lease(101), None)
        .await
        .unwrap();
    assert_eq!(
        store.next_due().await.unwrap(),
        None,
        "nothing pending: done and failed jobs stay done"
    );
}

/// A replica stopping gracefully hands back what it holds: another claims
/// its jobs and takes its sweep lease at once, not when the leases lapse;
/// what others hold stays theirs.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_stopping_replica_hands_back_its_jobs_and_leases(#[case] backend: Backend) {
    let (store, _) = store(backend).await;
    let g = sample_grant(0);
    store
        .insert_grant(
            &g,
            &[job("a@example.com", 0), job("b@example.com", 0)],
            audit("x", 0),
        )
        .await
        .unwrap();
    let at = |s: i64| t0() + TimeDelta::seconds(s);
    assert_eq!(
        store
            .claim_jobs("w1", at(0), at(30), 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .claim_jobs("w2", at(0), at(30), 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .try_lease("reconciler-holders", "w1", at(0), at(600))
            .await
            .unwrap()
    );
    assert!(
        store
            .try_lease("replica:w2", "w2", at(0), at(15))
            .await
            .unwrap()
    );

    let released = store.release_owner("w1").await.unwrap();
    assert_eq!(
        (released.job_ids.len(), released.outbox, released.leases),
        (1, 0, 1)
    );
    let taken = store.claim_jobs("w3", at(1), at(31), 10).await.unwrap();
    assert_eq!(taken.len(), 1, "w1's job, at once; w2's stays w2's");
    assert_eq!(released.job_ids, vec![taken[0].id]);
    assert!(
        store
            .try_lease("reconciler-holders", "w3", at(1), at(601))
            .await
            .unwrap(),
        "the sweep lease is free at once"
    );
    assert!(
        !store
            .try_lease("replica:w2", "w3", at(1), at(16))
            .await
            .unwrap()
    );
    assert_eq!(store.release_owner("w1").await.unwrap(), Default::default());
}

/// Hundreds of grants made in the same millisecond (the clock does not move)
/// list newest first, and paging by cursor neither skips nor repeats one.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn grants_made_in_one_millisecond_page_newest_first(#[case] backend: Backend) {
    let (store, _) = store(backend).await;
    let mut created = Vec::new();
    for i in 0..300 {
        let mut g = sample_grant(0);
        g.user = UserName::parse(&format!("eng{i}@example.com")).unwrap();
        store
            .insert_grant(&g, &[], audit("grant_requested", 0))
            .await
            .unwrap();
        created.push(g.id);
    }
    let mut listed = Vec::new();
    let mut before = None;
    loop {
        let filter = jit_app::GrantFilter {
            before,
            limit: 7,
            ..jit_app::GrantFilter::default()
        };
        let page = store.grants(&filter).await.unwrap();
        listed.extend(page.iter().map(|g| g.id));
        match page.last() {
            Some(last) if page.len() == 7 => before = Some(last.id),
            _ => break,
        }
    }
    created.reverse();
    assert_eq!(listed.len(), 300);
    assert_eq!(listed, created, "newest first, every grant once");
    // The ticket poll reads only what it can act on: live grants, and for
    // the webhook's once-per-change rule, those it made.
    let filtered = |live: bool, origin: Option<&str>| {
        let store = store.clone();
        let filter = jit_app::GrantFilter {
            live,
            origin: origin.map(str::to_owned),
            limit: 1000,
            ..jit_app::GrantFilter::default()
        };
        async move { store.grants(&filter).await.unwrap().len() }
    };
    let cancelled = jit_domain::Transition {
        from: GrantState::Approved,
        to: GrantState::Cancelled,
        end_reason: None,
        at: t0() + TimeDelta::seconds(10),
    };
    for id in &created[..100] {
        assert!(
            store
                .transition(*id, &cancelled, None, &[], audit("grant_cancelled", 10))
                .await
                .unwrap()
        );
    }
    assert_eq!(filtered(true, None).await, 200, "only the live ones");
    assert_eq!(filtered(false, Some("api")).await, 300);
    assert_eq!(filtered(false, Some("servicenow")).await, 0);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_transition_applies_once_and_a_lost_race_writes_nothing(#[case] backend: Backend) {
    let (store, _) = store(backend).await;
    let g = sample_grant(0);
    store
        .insert_grant(&g, &[], audit("grant_requested", 0))
        .await
        .unwrap();
    let t = g.advance(g.starts_at).expect("activation due");
    assert!(
        store
            .transition(
                g.id,
                &t,
                None,
                &[job("a@example.com", 5)],
                audit("grant_activated", 1)
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition(
                g.id,
                &t,
                None,
                &[job("a@example.com", 5)],
                audit("grant_activated", 2)
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.audit_events(0, 100).await.unwrap().len(),
        2,
        "the lost race wrote no audit event"
    );
    assert_eq!(
        store
            .claim_jobs(
                "w",
                t0() + TimeDelta::seconds(9),
                t0() + TimeDelta::seconds(60),
                10
            )
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.grant(g.id).await.unwrap().unwrap().state,
        GrantState::Active
    );
    assert_eq!(store.grants_for(&g.user, &g.role).await.unwrap().len(), 1);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_audit_chain_verifies_and_names_the_first_altered_event(#[case] backend: Backend) {
    let (store, url) = store(backend).await;
    for n in 1..=4 {
        store.append_audit(audit("event", n)).await.unwrap();
    }
    assert_eq!(
        jit_store::verify_audit(store.as_ref(), None)
            .await
            .unwrap()
            .map(|r| r.events),
        Ok(4)
    );

    let tamper = |sql: &'static str| {
        let url = url.clone();
        async move {
            match backend {
                Backend::Sqlite => {
                    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                    sqlx::raw_sql(sql).execute(&mut c).await.map(|_| ())
                }
                Backend::Postgres => {
                    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                    sqlx::raw_sql(sql).execute(&mut c).await.map(|_| ())
                }
            }
        }
    };
    // A plain edit is refused by the database itself.
    assert!(
        tamper("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
            .await
            .is_err()
    );
    assert!(tamper("DELETE FROM audit WHERE seq = 4").await.is_err());
    // Someone with the power to drop the guard still cannot hide the edit.
    let bypass = match backend {
        Backend::Sqlite => {
            "DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'mallory' WHERE seq = 2"
        }
        Backend::Postgres => {
            "ALTER TABLE audit DISABLE TRIGGER audit_no_update; UPDATE audit SET actor = 'mallory' WHERE seq = 2"
        }
    };
    tamper(bypass).await.unwrap();
    let broken = jit_store::verify_audit(store.as_ref(), None)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(broken.seq, 2, "{broken}");
}

#[test]
fn sqlite_and_postgres_migrations_stay_in_step() {
    let (sqlite, postgres) = jit_store::migration_versions();
    assert!(!sqlite.is_empty());
    assert_eq!(
        sqlite, postgres,
        "every migration exists for both backends, with the same version"
    );
}

/// A pair has one pending job: work asked of it joins that job (the
/// earliest due wins); a removal is claimed before an activation due
/// earlier; and work that joins a running job makes it run once more.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_pair_has_one_job_and_removals_go_first(#[case] backend: Backend) {
    let (store, _) = store(backend).await;
    let at = |s: i64| t0() + TimeDelta::seconds(s);
    let activation = |user: &str, secs: i64| NewJob {
        removal: false,
        ..job(user, secs)
    };
    store
        .insert_grant(
            &sample_grant(0),
            &[
                activation("a@example.com", 0),
                job("b@example.com", 1),
                activation("a@example.com", 3),
            ],
            audit("x", 0),
        )
        .await
        .unwrap();
    let first = store.claim_jobs("w1", at(2), at(30), 1).await.unwrap();
    assert_eq!(first[0].user.as_str(), "b@example.com", "the removal first");
    let second = store.claim_jobs("w1", at(2), at(30), 10).await.unwrap();
    assert_eq!(second.len(), 1, "a's two asks are one job");
    let a = &second[0];
    assert_eq!((a.user.as_str(), a.due_at), ("a@example.com", at(0)));
    // More work for a while it runs: it stays pending, due again now.
    store
        .insert_grant(&sample_grant(1), &[job("a@example.com", 2)], audit("x", 1))
        .await
        .unwrap();
    store.complete_job(a, "w1", at(3), None).await.unwrap();
    let again = store.claim_jobs("w2", at(3), at(33), 10).await.unwrap();
    assert_eq!(again.len(), 1, "work that joined a running job runs");
    assert_eq!(again[0].attempts, 1, "as new work");
    // Done, with the pair's next wake scheduled in the same transaction.
    let next = job("a@example.com", 60);
    store
        .complete_job(&again[0], "w2", at(4), Some(&next))
        .await
        .unwrap();
    assert_eq!(
        store.next_due().await.unwrap(),
        Some(at(30)),
        "b's lease, then a at +60"
    );
    store
        .complete_job(&first[0], "w1", at(5), None)
        .await
        .unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(at(60)));
}
