//! Alerts the SOC will not learn to ignore: a kept finding is told when it
//! opens and when it resolves, never on every sweep; a break-glass login is a
//! P1 once, across a restart too; the daily digest lists what is open; and
//! every SOC event reaches a SIEM endpoint (a real HTTP receiver) as signed
//! JSON, queued while it is down and delivered once it is back.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App as ActixApp, HttpRequest, HttpResponse, HttpServer, web};
use chrono::TimeDelta;
use jit_app::{App, Feed, FeedConfig, ReconcileConfig};
use jit_domain::SweepKind;
use jit_e2e::app::{Stack, spawn_app_with, t0, test_policy};
use jit_e2e::genesys::Genesys;
use jit_e2e::{Backend, SmtpPeer, Tenant};
use jit_genesys_standin::{ALL_DIVISIONS, Settings};
use jit_notify::Recipients;
use jit_notify::webhook::{WebhookConfig, WebhookSink, signature};
use jit_server::config::WebhookSettings;
use rstest::rstest;
use secrecy::SecretString;
use serde_json::{Value, json};

const ADMIN: &str = "Master Admin";
const BREAK_GLASS: &str = "breakglass@example.com";

fn sweep_config() -> ReconcileConfig {
    ReconcileConfig {
        requests_per_second: 1000,
        ..ReconcileConfig::default()
    }
}

async fn kinds(stack: &Stack, kind: &str) -> Vec<Value> {
    stack
        .store
        .audit_events(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.data)
        .collect()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_kept_finding_is_told_when_it_opens_and_when_it_resolves(#[case] backend: Backend) {
    let (stack, tenant) = Stack::with_users(
        backend,
        &[(BREAK_GLASS, &[ADMIN]), ("eng@example.com", &["Employee"])],
    )
    .await;
    let sweep = |kind| {
        let app = stack.app.clone();
        async move {
            app.reconcile(kind, "test", false, "sweeper", &sweep_config())
                .await
                .unwrap()
        }
    };
    // Seen by a deep sweep, then by a holders sweep, then again: told once.
    for kind in [SweepKind::Deep, SweepKind::Holders, SweepKind::Holders] {
        let run = sweep(kind).await;
        assert_eq!((run.findings, run.actions), (1, 0), "{run:?}");
        stack.advance(60);
    }
    let opened = kinds(&stack, "incident_opened").await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0]["kind"], "break_glass_held");
    assert_eq!(opened[0]["user"], BREAK_GLASS);
    assert!(jit_app::notifies("incident_opened", &opened[0]));
    let runs = kinds(&stack, "reconcile_run").await;
    assert!(
        runs.iter().all(|r| !jit_app::notifies("reconcile_run", r)),
        "sweeps that only saw it again send nothing"
    );
    let open = stack.app.open_incidents().await.unwrap();
    assert_eq!(open.len(), 1);

    // The digest lists it, with what the account holds.
    stack.app.soc_digest().await.unwrap();
    let digest = kinds(&stack, "soc_digest").await;
    assert_eq!(digest[0]["break_glass"][0]["user"], BREAK_GLASS);
    assert_eq!(digest[0]["break_glass"][0]["holds"], json!([ADMIN]));
    let smtp = SmtpPeer::start();
    let mailer = stack.mailer(
        &smtp,
        Recipients {
            default: vec!["soc@bank.example".into()],
            by_kind: BTreeMap::new(),
        },
    );
    mailer.run_due().await.unwrap();
    let subjects: Vec<String> = smtp.messages().into_iter().map(|m| m.subject).collect();
    assert_eq!(
        subjects,
        [
            format!("[jit-broker][P3] Open: break-glass account {BREAK_GLASS} holds {ADMIN}"),
            "[jit-broker][P3] Daily digest: 1 open incidents, 0 overdue revocations, 0 grant groups"
                .to_owned(),
        ],
        "one email for the incident, one digest; none per sweep"
    );

    // The account gives the role back: the next sweep that looks for it
    // resolves the incident, once.
    tenant.remove_role(BREAK_GLASS, ADMIN).await;
    sweep(SweepKind::Holders).await;
    stack.advance(60);
    sweep(SweepKind::Holders).await;
    let resolved = kinds(&stack, "incident_resolved").await;
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0]["user"], BREAK_GLASS);
    assert!(stack.app.open_incidents().await.unwrap().is_empty());

    // Back again: a new incident, told again.
    tenant.add_role(BREAK_GLASS, ADMIN).await;
    sweep(SweepKind::Holders).await;
    assert_eq!(kinds(&stack, "incident_opened").await.len(), 2);
}

/// Genesys Cloud's last-token date from the Genesys Cloud stand-in: the
/// first login after a check is a P1, mailed to the P1 list; a restart (a
/// new broker over the same database) neither repeats nor misses one.
#[tokio::test]
async fn a_break_glass_login_is_a_p1_once_across_a_restart() {
    let genesys = Genesys::start(Settings::default(), &[ADMIN]).await;
    let g = &genesys.standin;
    let account = g.add_user(BREAK_GLASS);
    let admin = g.org().role_by_name(ADMIN).unwrap().id.clone();
    g.grant(&account, &admin, ALL_DIVISIONS);
    let stack = Stack::new(Backend::Sqlite, Arc::new(genesys.client(&test_policy()))).await;
    let check =
        |app: Arc<App>| async move { app.check_break_glass_logins("poller").await.unwrap() };

    let first = check(stack.app.clone()).await;
    assert_eq!(
        (first.accounts, first.alerts, first.unsupported),
        (1, 0, false)
    );
    stack.advance(60);
    g.user_logged_in(&account, t0() + TimeDelta::seconds(30));
    assert_eq!(check(stack.app.clone()).await.alerts, 1);
    stack.advance(60);
    assert_eq!(check(stack.app.clone()).await.alerts, 0, "the same login");

    // A restart: a new broker over the same database and a fresh client.
    let store = jit_store::open(&stack.database_url, true, 2).await.unwrap();
    let restarted = Arc::new(App::new(
        store,
        Arc::new(genesys.client(&test_policy())),
        Arc::new(jit_itsm::NoTicketSystem),
        stack.clock.clone(),
        Arc::new(test_policy()),
    ));
    assert_eq!(check(restarted.clone()).await.alerts, 0, "not repeated");
    stack.advance(60);
    g.user_logged_in(&account, t0() + TimeDelta::seconds(150));
    assert_eq!(check(restarted).await.alerts, 1, "not missed");

    let alerts = kinds(&stack, "break_glass_login").await;
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0]["user"], BREAK_GLASS);
    assert_eq!(alerts[0]["roles"], json!([ADMIN]));
    assert_eq!(
        jit_domain::severity("break_glass_login", &alerts[0]),
        jit_domain::Severity::P1
    );

    // Mailed to the P1 list, severity in the subject.
    let smtp = SmtpPeer::start();
    let mailer = stack.mailer(
        &smtp,
        Recipients {
            default: vec!["soc@bank.example".into()],
            by_kind: BTreeMap::from([("P1".to_owned(), vec!["oncall@bank.example".to_owned()])]),
        },
    );
    mailer.run_due().await.unwrap();
    let mails = smtp.messages();
    let p1: Vec<_> = mails
        .iter()
        .filter(|m| m.subject.contains("BREAK-GLASS USED"))
        .collect();
    assert_eq!(p1.len(), 2, "{mails:?}");
    assert!(
        p1[0].subject.starts_with("[jit-broker][P1]"),
        "{}",
        p1[0].subject
    );
    assert!(p1[0].to.contains("oncall@bank.example"), "{}", p1[0].to);
    assert!(p1[0].text.contains(ADMIN), "{}", p1[0].text);
}

/// What the receiver got: each request's headers and body.
type Received = Arc<Mutex<Vec<(BTreeMap<String, String>, String)>>>;

/// A real HTTP receiver that records what it is sent, or answers 503.
struct Receiver {
    url: String,
    up: Arc<AtomicBool>,
    got: Received,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    async fn start() -> Self {
        let up = Arc::new(AtomicBool::new(true));
        let got = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new((up.clone(), got.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        type State = (
            Arc<AtomicBool>,
            Arc<Mutex<Vec<(BTreeMap<String, String>, String)>>>,
        );
        async fn receive(req: HttpRequest, body: String, s: web::Data<State>) -> HttpResponse {
            if !s.0.load(Ordering::SeqCst) {
                return HttpResponse::ServiceUnavailable().finish();
            }
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            s.1.lock().unwrap().push((headers, body));
            HttpResponse::Accepted().finish()
        }
        let server = HttpServer::new(move || {
            ActixApp::new()
                .app_data(state.clone())
                .route("/siem", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://{addr}/siem"),
            up,
            got,
            handle,
        }
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_siem_feed_queues_while_the_receiver_is_down_and_delivers_each_event_once(
    #[case] backend: Backend,
) {
    let (stack, _tenant) = Stack::with_users(backend, &[("eng@example.com", &["Employee"])]).await;
    let receiver = Receiver::start().await;
    let secret = SecretString::from("siem-shared-secret-0123456789");
    let sink = WebhookSink::new(WebhookConfig {
        name: "siem".into(),
        url: url::Url::parse(&receiver.url).unwrap(),
        secret: secret.clone(),
        bearer_token: Some(SecretString::from("siem-token")),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let feed = Feed::new(
        stack.store.clone(),
        Arc::new(sink),
        stack.clock.clone(),
        "test-feed".into(),
        FeedConfig::default(),
    );

    // Down while a grant starts and ends: nothing is lost.
    receiver.up.store(false, Ordering::SeqCst);
    stack
        .request(
            json!({"user": "eng@example.com", "role": ADMIN, "ticket": "CHG0000400",
                        "duration": "30m", "justification": "Rotate the SIP trunk certificate"}),
        )
        .await;
    stack.run_due().await;
    assert_eq!(feed.run_due().await.unwrap(), 0);
    stack.advance(30 * 60);
    stack.run_due().await;
    assert_eq!(feed.run_due().await.unwrap(), 0, "waiting out its back-off");
    assert!(receiver.got.lock().unwrap().is_empty());

    // Back: everything the SOC hears, in audit order, each once.
    receiver.up.store(true, Ordering::SeqCst);
    stack.advance(10 * 60);
    assert_eq!(feed.run_due().await.unwrap(), 2);
    stack.advance(10 * 60);
    assert_eq!(feed.run_due().await.unwrap(), 0, "nothing twice");
    let got = receiver.got.lock().unwrap().clone();
    let bodies: Vec<Value> = got
        .iter()
        .map(|(_, b)| serde_json::from_str(b).unwrap())
        .collect();
    let kinds: Vec<&str> = bodies.iter().map(|b| b["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["grant_activated", "grant_ended"]);
    assert!(bodies[0]["seq"].as_i64() < bodies[1]["seq"].as_i64());
    for ((headers, body), parsed) in got.iter().zip(&bodies) {
        let id = parsed["id"].as_str().unwrap();
        assert_eq!(headers["x-jit-event-id"], id);
        assert!(id.starts_with(&format!("jit-{}-", parsed["seq"])), "{id}");
        assert_eq!(parsed["severity"], "P3");
        assert_eq!(parsed["data"]["user"], "eng@example.com");
        assert_eq!(headers["authorization"], "Bearer siem-token");
        let expected = signature(&secret, &headers["x-jit-timestamp"], body.as_bytes());
        assert_eq!(
            headers["x-jit-signature"], expected,
            "signed over timestamp and body"
        );
    }
    // The audit chain travels with it.
    let events = stack.store.audit_events(0, 100).await.unwrap();
    let activated = events.iter().find(|e| e.kind == "grant_activated").unwrap();
    assert_eq!(bodies[0]["hash"], activated.hash);
    receiver.handle.stop(false).await;
}

/// As `jit-broker serve` wires it: `[[notify.webhooks]]` feeds the receiver
/// while the broker runs.
#[tokio::test]
async fn a_configured_siem_endpoint_is_fed_while_the_broker_runs() {
    let tenant = Tenant::new();
    tenant.create_user("eng@example.com", &["Employee"]).await;
    let receiver = Receiver::start().await;
    let url = receiver.url.clone();
    let app = spawn_app_with(Backend::Sqlite, Some(&tenant.base_url), |c| {
        c.notify.webhooks = vec![WebhookSettings {
            name: "siem".into(),
            url,
            secret: Some(SecretString::from("siem-shared-secret-0123456789")),
            secret_file: None,
            bearer_token: None,
            bearer_token_file: None,
            timeout_secs: 5,
        }];
    })
    .await;
    let (status, body) = app
        .request_grant(&json!({"user": "eng@example.com", "role": ADMIN, "ticket": "CHG0000401",
                               "duration": "30m", "justification": "Rotate the SIP trunk certificate"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let kinds: Vec<String> = receiver
            .got
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, b)| serde_json::from_str::<Value>(b).ok())
            .filter_map(|b| b["kind"].as_str().map(str::to_owned))
            .collect();
        if kinds.contains(&"grant_activated".to_owned()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never fed: {kinds:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver.handle.stop(false).await;
}
