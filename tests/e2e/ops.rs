//! What an operator watches: `/metrics` in Prometheus text format (scraped
//! and parsed here) and `/readyz` with the checks a load balancer gates on.

use std::collections::BTreeMap;
use std::time::Duration;

use jit_e2e::app::spawn_app;
use jit_e2e::{Backend, Tenant};
use serde_json::json;

/// One sample of the text format: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// The Prometheus text exposition format, as far as this broker writes it:
/// `# HELP`/`# TYPE` comments and `name{label="value",…} value` lines.
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("a number in `{line}`"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').expect("closing brace");
                let labels = rest
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        samples.push((name, labels, value));
    }
    samples
}

fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name && label.is_none_or(|(k, v)| labels.get(k).map(String::as_str) == Some(v))
        })
        .map(|(_, _, v)| *v)
        .reduce(|a, b| a + b)
}

#[tokio::test]
async fn metrics_parse_and_readiness_reports_its_checks() {
    let tenant = Tenant::new();
    tenant.create_user("eng@example.com", &["Employee"]).await;
    let app = spawn_app(Backend::Sqlite, Some(&tenant.base_url)).await;
    let (status, body) = app
        .request_grant(&json!({"user": "eng@example.com", "role": "Master Admin",
                               "ticket": "CHG0000600", "duration": "30m",
                               "justification": "Rotate the SIP trunk certificate"}))
        .await;
    assert_eq!(status, 201, "{body}");
    tenant
        .wait_for_role(
            "eng@example.com",
            "Master Admin",
            true,
            Duration::from_secs(10),
        )
        .await;

    let r = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
    );
    let samples = parse(&r.text().await.unwrap());
    assert!(value(&samples, "jit_grants", Some(("state", "active"))).unwrap() >= 1.0);
    assert!(
        value(
            &samples,
            "jit_directory_requests_total",
            Some(("method", "PATCH"))
        )
        .unwrap()
            >= 1.0
    );
    assert!(value(&samples, "jit_activation_latency_seconds_count", None).unwrap() >= 1.0);
    assert!(
        samples
            .iter()
            .any(|(n, l, _)| n == "jit_activation_latency_seconds_bucket" && l.contains_key("le")),
        "a histogram, not a summary"
    );
    assert_eq!(value(&samples, "jit_revocations_overdue", None), Some(0.0));
    assert!(value(&samples, "jit_outbox_pending", None).is_some());
    assert!(value(&samples, "jit_outbox_oldest_age_seconds", None).is_some());

    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["database"], "ok");
    assert_eq!(ready["checks"]["schema"]["ok"], true);
    assert_eq!(ready["checks"]["worker"], "running");
    assert_eq!(ready["info"]["servicenow"], "reachable");
    assert!(
        ready["info"]["directory"]
            .as_str()
            .unwrap()
            .starts_with("reachable")
    );
    app.running.stop().await;
}

/// ServiceNow down: reported, not gating (grants wait on it, sweeps and
/// expiries do not).
#[tokio::test]
async fn readiness_reports_servicenow_down_without_gating_on_it() {
    let tenant = Tenant::new();
    let app = jit_e2e::app::spawn_app_with(Backend::Sqlite, Some(&tenant.base_url), |c| {
        c.servicenow.instance_url = Some(format!("http://127.0.0.1:{}", jit_e2e::free_port()));
    })
    .await;
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready", "{ready}");
    let servicenow = ready["info"]["servicenow"].as_str().unwrap();
    assert!(servicenow.starts_with("unreachable"), "{servicenow}");
    app.running.stop().await;
}
