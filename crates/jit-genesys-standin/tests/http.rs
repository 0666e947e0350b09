//! The stand-in over HTTP, as the broker meets it.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::sync::{Arc, Mutex};

use actix_web::web;
use chrono::{DateTime, TimeDelta, Utc};
use jit_genesys_standin::{ALL_DIVISIONS, GenesysStandIn, Settings};
use serde_json::{Value, json};

struct Running {
    base: String,
    standin: web::Data<GenesysStandIn>,
    now: Arc<Mutex<DateTime<Utc>>>,
    http: reqwest::Client,
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

async fn spawn(settings: Settings) -> Running {
    let now = Arc::new(Mutex::new(t0()));
    let clock_now = now.clone();
    let standin = web::Data::new(GenesysStandIn::new(
        settings,
        Arc::new(move || *clock_now.lock().unwrap()),
    ));
    standin.add_client_with_permissions(
        "broker",
        "broker-secret",
        "jit-broker",
        &[
            "directory:user:view",
            "authorization:grant:view",
            "authorization:grant:add",
            "authorization:grant:delete",
            "authorization:role:view",
            "audits:audit:view",
        ],
    );
    let (base, server) = jit_genesys_standin::serve(standin.clone()).unwrap();
    tokio::spawn(server);
    Running {
        base,
        standin,
        now,
        http: reqwest::Client::new(),
    }
}

impl Running {
    async fn token(&self) -> String {
        let answer: Value = self
            .http
            .post(format!("{}/oauth/token", self.base))
            .basic_auth("broker", Some("broker-secret"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["access_token"].as_str().unwrap().to_owned()
    }

    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn post_json(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    fn advance(&self, by: TimeDelta) {
        *self.now.lock().unwrap() += by;
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> u16 {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

#[tokio::test]
async fn grants_are_written_and_read_per_division() {
    let g = spawn(Settings::default()).await;
    let user = g.standin.add_user("eng@example.com");
    let role = g.standin.add_role("Master Admin", &["*"]);
    let emea = g.standin.add_division("EMEA");
    let token = g.token().await;

    let add = json!({"grants": [{"roleId": role, "divisionId": ALL_DIVISIONS}, {"roleId": role, "divisionId": emea}]});
    let path = format!("/api/v2/authorization/subjects/{user}/bulkadd?subjectType=PC_USER");
    assert_eq!(g.post(&token, &path, add).await, 204);
    let (status, subject) = g
        .get(&token, &format!("/api/v2/authorization/subjects/{user}"))
        .await;
    assert_eq!(status, 200);
    let divisions: Vec<&str> = subject["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|gr| gr["division"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(divisions.len(), 2, "{subject}");
    assert!(divisions.contains(&ALL_DIVISIONS) && divisions.contains(&emea.as_str()));

    // SCIM shows the name only, once.
    let (_, scim) = g
        .get(&token, &format!("/api/v2/scim/v2/users/{user}"))
        .await;
    assert_eq!(scim["roles"], json!([{"value": "Master Admin"}]));

    let remove = json!({"grants": [{"roleId": role, "divisionId": emea}]});
    let path = format!("/api/v2/authorization/subjects/{user}/bulkremove?subjectType=PC_USER");
    assert_eq!(g.post(&token, &path, remove).await, 204);
    assert_eq!(
        g.standin.grants_of(&user),
        [("Master Admin".to_owned(), "All divisions".to_owned())].into()
    );

    // A bulk add naming an unknown division changes nothing.
    let bad = json!({"grants": [{"roleId": role, "divisionId": "nowhere"}]});
    let path = format!("/api/v2/authorization/subjects/{user}/bulkadd?subjectType=PC_USER");
    assert_eq!(g.post(&token, &path, bad).await, 400);
    assert_eq!(g.standin.grants_of(&user).len(), 1);
}

#[tokio::test]
async fn a_role_lists_users_and_groups_with_their_divisions() {
    let g = spawn(Settings::default()).await;
    let alice = g.standin.add_user("alice@example.com");
    let bob = g.standin.add_user("bob@example.com");
    let role = g.standin.add_role("Master Admin", &["*"]);
    let admins = g.standin.add_group("Contact centre admins", &[&bob]);
    g.standin.grant(&alice, &role, &g.standin.home_division());
    g.standin.grant(&admins, &role, ALL_DIVISIONS);
    let token = g.token().await;

    let (_, holders) = g
        .get(
            &token,
            &format!("/api/v2/authorization/roles/{role}/subjectgrants?pageSize=25&pageNumber=1"),
        )
        .await;
    let kinds: Vec<(&str, &str)> = holders["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["divisions"][0]["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(kinds.contains(&("PC_GROUP", ALL_DIVISIONS)), "{holders}");
    assert!(kinds.contains(&("PC_USER", "division-home")), "{holders}");

    // Bob holds it only through the group: shown with includeDuplicates.
    let (_, own) = g
        .get(&token, &format!("/api/v2/authorization/subjects/{bob}"))
        .await;
    assert_eq!(own["grants"], json!([]));
    let (_, all) = g
        .get(
            &token,
            &format!("/api/v2/authorization/subjects/{bob}?includeDuplicates=true"),
        )
        .await;
    assert_eq!(all["grants"][0]["subjectId"], json!(admins));
    let (_, members) = g
        .get(&token, &format!("/api/v2/groups/{admins}/members"))
        .await;
    assert_eq!(members["entities"][0]["id"], json!(bob));
}

#[tokio::test]
async fn a_stale_if_match_is_refused_as_genesys_does() {
    let g = spawn(Settings::default()).await;
    let user = g.standin.add_user("eng@example.com");
    g.standin.add_role("Master Admin", &["*"]);
    let token = g.token().await;
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "roles", "value": [{"value": "Master Admin"}]}]});
    let r = g
        .http
        .patch(format!("{}/api/v2/scim/v2/users/{user}", g.base))
        .bearer_auth(&token)
        .header("If-Match", "W/\"7\"")
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scimType"], json!("invalidVers"));
    let r = g
        .http
        .patch(format!("{}/api/v2/scim/v2/users/{user}", g.base))
        .bearer_auth(&token)
        .header("If-Match", "W/\"1\"")
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["meta"]["version"], json!("W/\"2\""));
    assert_eq!(
        g.standin.grants_of(&user),
        [("Master Admin".to_owned(), "Home".to_owned())].into()
    );
}

#[tokio::test]
async fn tokens_expire_and_the_budget_answers_429() {
    let g = spawn(Settings {
        per_minute: Some(3),
        burst: 3,
        token_lifetime: TimeDelta::minutes(5),
        ..Settings::default()
    })
    .await;
    let token = g.token().await;
    for _ in 0..3 {
        assert_eq!(
            g.get(&token, "/api/v2/authorization/divisions/home")
                .await
                .0,
            200
        );
    }
    let r = g
        .http
        .get(format!("{}/api/v2/authorization/divisions/home", g.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let wait: u64 = r.headers()["Retry-After"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("Retry the request in [{wait}] seconds"))
    );

    *g.now.lock().unwrap() = t0() + TimeDelta::minutes(5);
    assert_eq!(
        g.get(&token, "/api/v2/authorization/divisions/home")
            .await
            .0,
        401
    );
    let bad = g
        .http
        .post(format!("{}/oauth/token", g.base))
        .basic_auth("broker", Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
}

fn interval(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    format!("{}/{}", from.to_rfc3339(), to.to_rfc3339())
}

#[tokio::test]
async fn the_audit_trail_answers_both_queries_with_paging_and_late_arrivals() {
    use jit_genesys_standin::audit::Action;
    let g = spawn(Settings {
        audit_query_polls: 2,
        ..Settings::default()
    })
    .await;
    let alice = g.standin.add_user("alice@example.com");
    let bob = g.standin.add_user("bob@example.com");
    for n in 0..3 {
        g.standin.record(Action::by(
            &alice,
            "Routing",
            "Queue",
            &format!("Queue {n}"),
            "Update",
        ));
    }
    g.standin
        .record(Action::by(&bob, "Routing", "Queue", "Bob's", "Update"));
    let late = g.standin.record(
        Action::by(&alice, "Architect", "Flow", "Main IVR", "Publish")
            .late_by(TimeDelta::minutes(5)),
    );
    let token = g.token().await;
    let window = interval(t0() - TimeDelta::hours(1), t0() + TimeDelta::hours(1));
    let by_alice = json!([{"property": "UserId", "value": alice}]);

    // Realtime: pages by number; the late one is not there yet.
    let (status, first) = g
        .post_json(
            &token,
            "/api/v2/audits/query/realtime",
            json!({"interval": window, "filters": by_alice, "pageNumber": 1, "pageSize": 2}),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["total"], 3);
    assert_eq!(first["pageCount"], 2);
    assert_eq!(first["entities"][0]["entity"]["name"], "Queue 0");
    assert_eq!(first["entities"][0]["user"]["name"], "alice@example.com");
    assert_eq!(first["entities"][0]["client"]["id"], "admin-ui");

    // Asynchronous: queued, running until polled enough, results by cursor.
    g.advance(TimeDelta::minutes(6));
    let (status, created) = g
        .post_json(
            &token,
            "/api/v2/audits/query",
            json!({"interval": window, "filters": by_alice}),
        )
        .await;
    assert_eq!((status, created["state"].as_str()), (200, Some("Queued")));
    let id = created["id"].as_str().unwrap();
    let polls: Vec<String> = {
        let mut states = Vec::new();
        for _ in 0..3 {
            let (_, p) = g.get(&token, &format!("/api/v2/audits/query/{id}")).await;
            states.push(p["state"].as_str().unwrap().to_owned());
        }
        states
    };
    assert_eq!(polls, ["Running", "Running", "Succeeded"]);
    let (_, page1) = g
        .get(
            &token,
            &format!("/api/v2/audits/query/{id}/results?pageSize=3"),
        )
        .await;
    let cursor = page1["cursor"].as_str().unwrap();
    let (_, page2) = g
        .get(
            &token,
            &format!("/api/v2/audits/query/{id}/results?pageSize=3&cursor={cursor}"),
        )
        .await;
    assert!(page2.get("cursor").is_none(), "{page2}");
    assert_eq!(
        page2["entities"][0]["id"],
        late.as_str(),
        "the late arrival is there now"
    );

    // The documented refusals, and the permission.
    for (body, why) in [
        (json!({"filters": by_alice}), "interval is required"),
        (
            json!({"interval": window, "filters": [{"property": "Action", "value": "Update"}]}),
            "needs an EntityType",
        ),
        (
            json!({"interval": window, "filters": [{"property": "Colour", "value": "x"}]}),
            "unknown filter",
        ),
    ] {
        let (status, answer) = g
            .post_json(&token, "/api/v2/audits/query/realtime", body)
            .await;
        assert_eq!(status, 400);
        assert!(
            answer["message"].as_str().unwrap().contains(why),
            "{answer}"
        );
    }
    let month = interval(t0() - TimeDelta::days(31), t0());
    let (status, _) = g
        .post_json(&token, "/api/v2/audits/query", json!({"interval": month}))
        .await;
    assert_eq!(status, 400, "more than 30 days");
    g.standin
        .add_client_with_permissions("nosy", "nosy-secret", "nosy", &["directory:user:view"]);
    let answer: Value = g
        .http
        .post(format!("{}/oauth/token", g.base))
        .basic_auth("nosy", Some("nosy-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (status, _) = g
        .post_json(
            answer["access_token"].as_str().unwrap(),
            "/api/v2/audits/query/realtime",
            json!({"interval": window}),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_grant_change_is_audited_with_who_and_the_grants_before_and_after() {
    let g = spawn(Settings::default()).await;
    let admin = g.standin.add_user("admin@example.com");
    let alice = g.standin.add_user("alice@example.com");
    let role = g.standin.add_role("Master Admin", &["*"]);
    g.standin
        .grant_by(Some(&admin), "terraform", &alice, &role, ALL_DIVISIONS);
    let token = g.token().await;
    let (_, found) = g
        .post_json(
            &token,
            "/api/v2/audits/query/realtime",
            json!({
                "interval": interval(t0() - TimeDelta::hours(1), t0() + TimeDelta::hours(1)),
                "filters": [{"property": "EntityType", "value": "User"}, {"property": "EntityId", "value": alice}],
            }),
        )
        .await;
    let event = &found["entities"][0];
    assert_eq!(event["user"]["name"], "admin@example.com");
    assert_eq!(event["client"]["id"], "terraform");
    assert_eq!(event["serviceName"], "Authorization");
    assert_eq!(event["propertyChanges"][0]["oldValues"], json!([]));
    assert_eq!(
        event["propertyChanges"][0]["newValues"],
        json!(["Master Admin in All divisions"])
    );
}
