//! `--dev`'s Slack: the Slack stand-in (crates/jit-slack-standin) under
//! `/sandbox/slack/api`, a workspace with the sandbox's people, and a page,
//! `/sandbox/slack`, that shows what the bot posted with its buttons: a
//! click is signed and posted to the broker's own callback, as Slack would.

use actix_web::{HttpResponse, web};
use jit_slack_standin::{SlackStandIn, block_actions, interaction_body, sign};
use serde::Deserialize;
use serde_json::Value;
use std::fmt::Write as _;

/// The channel approval requests go to in the sandbox.
pub const CHANNEL: &str = "#jit-approvals";
pub const BASE_PATH: &str = "/sandbox/slack";

pub struct SandboxSlack {
    pub standin: web::Data<SlackStandIn>,
    /// The stand-in's Web API, as the broker's client reaches it.
    pub api_url: String,
    /// The broker's own interaction callback.
    callback: String,
}

impl SandboxSlack {
    /// The workspace: the sandbox login's people, by the same emails.
    pub fn seeded(addr: std::net::SocketAddr) -> Self {
        let standin = SlackStandIn::new(crate::DEV_SLACK_TOKEN);
        for user in crate::sandbox::login_users() {
            let email = user.user.to_string();
            let name = email.split('@').next().unwrap_or_default().to_owned();
            standin.add_user(&name, &email);
        }
        Self {
            standin: web::Data::new(standin),
            api_url: format!("http://{addr}{BASE_PATH}/api"),
            callback: format!("http://{addr}/webhooks/slack/interactions"),
        }
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(BASE_PATH, web::get().to(page))
        .route(&format!("{BASE_PATH}/click"), web::post().to(click))
        .service(web::scope(BASE_PATH).configure(jit_slack_standin::routes));
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What the bot posted, newest first, each button a form.
async fn page(sandbox: web::Data<SandboxSlack>) -> HttpResponse {
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>Sandbox Slack</title>\
         <style>body{font:14px system-ui;max-width:60em;margin:2em auto}\
         .m{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;margin:.6em 0}\
         .c{color:#666;font-size:12px}form{display:inline}</style>\
         <h1>Sandbox Slack</h1><p class=c>What jit-broker's bot posted. A button is \
         clicked as the person you pick, signed with the sandbox signing secret and \
         posted to the broker's callback, as Slack would.</p>",
    );
    let users: Vec<String> = crate::sandbox::login_users()
        .into_iter()
        .map(|u| u.user.to_string())
        .collect();
    let mut messages = sandbox.standin.messages();
    messages.reverse();
    for m in messages {
        let _ = write!(
            html,
            "<div class=m><div class=c>{} · {}{}</div><p>{}</p>",
            escape(&m.channel),
            escape(&m.ts),
            m.only_for
                .as_ref()
                .map(|u| format!(" · only for {}", escape(u)))
                .unwrap_or_default(),
            escape(&m.text)
        );
        for block in m.blocks.as_array().into_iter().flatten() {
            for button in block["elements"].as_array().into_iter().flatten() {
                let (Some(action), Some(value)) =
                    (button["action_id"].as_str(), button["value"].as_str())
                else {
                    continue;
                };
                let options: String = users
                    .iter()
                    .map(|u| format!("<option>{}</option>", escape(u)))
                    .collect();
                let _ = write!(
                    html,
                    "<form method=post action=\"{BASE_PATH}/click\">\
                     <input type=hidden name=channel value=\"{}\"><input type=hidden name=ts value=\"{}\">\
                     <input type=hidden name=action value=\"{}\"><input type=hidden name=value value=\"{}\">\
                     <select name=who>{options}</select> <button>{}</button></form> ",
                    escape(&m.channel),
                    escape(&m.ts),
                    escape(action),
                    escape(value),
                    escape(button["text"]["text"].as_str().unwrap_or(action))
                );
            }
        }
        html.push_str("</div>");
    }
    HttpResponse::Ok()
        .insert_header(("X-Sandbox", "true"))
        .content_type("text/html; charset=utf-8")
        .body(html)
}

#[derive(Deserialize)]
struct Click {
    channel: String,
    ts: String,
    action: String,
    value: String,
    who: String,
}

/// A click, as Slack would send it: signed, to the broker's callback.
async fn click(sandbox: web::Data<SandboxSlack>, form: web::Form<Click>) -> HttpResponse {
    let Some(user) = sandbox.standin.user_by_email(&form.who) else {
        return HttpResponse::NotFound().body("no such sandbox Slack user");
    };
    let payload: Value = block_actions(&user, &form.action, &form.value, &form.channel, &form.ts);
    let body = interaction_body(&payload);
    // The sandbox's clock is the system's, as Slack's is.
    #[allow(clippy::disallowed_methods)]
    let at = chrono::Utc::now().timestamp();
    let sent = reqwest::Client::new()
        .post(&sandbox.callback)
        .header("X-Slack-Request-Timestamp", at.to_string())
        .header(
            "X-Slack-Signature",
            sign(crate::DEV_SLACK_SIGNING_SECRET, at, &body),
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(_) => HttpResponse::SeeOther()
            .insert_header(("Location", BASE_PATH))
            .finish(),
        Err(e) => HttpResponse::BadGateway().body(format!("the callback failed: {e}")),
    }
}
