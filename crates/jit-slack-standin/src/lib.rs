//! A Slack stand-in: the parts of Slack's Web API jit-broker calls, and the
//! signed interaction callbacks Slack sends back, modelled on Slack's
//! documentation (docs/slack.md), in memory. `jit-broker serve --dev`
//! mounts it under `/sandbox/slack`, and the tests run it on a port of their
//! own, so both exercise the same Slack path.
//!
//! - Web API methods under `/api/<method>`: `chat.postMessage`,
//!   `chat.update`, `chat.postEphemeral`, `conversations.open`,
//!   `users.info`, `users.lookupByEmail`, `views.open`. A bot token in
//!   `Authorization: Bearer`; every answer is HTTP 200 with `{"ok": …}` (an
//!   error is `{"ok": false, "error": "…"}`), except a rate limit: `429`
//!   with `Retry-After`.
//! - Rate limits as Slack documents them: `chat.postMessage` about one
//!   message a second per channel (short bursts allowed), the other methods
//!   by tier (a minute's worth, then 429).
//! - [`sign`] and the payload builders make interaction callbacks as Slack
//!   signs them (`v0=` HMAC-SHA256 over `v0:<timestamp>:<body>`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::{HttpRequest, HttpResponse, web};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

/// A workspace member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackUser {
    pub id: String,
    pub name: String,
    pub email: String,
}

/// A message as posted (and as last updated).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub channel: String,
    pub ts: String,
    pub text: String,
    pub blocks: Value,
    /// How many times `chat.update` rewrote it.
    pub updates: u32,
    /// For an ephemeral message: the only user who sees it.
    pub only_for: Option<String>,
}

/// What reached the stand-in, for tests.
#[derive(Debug, Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub limited: AtomicU64,
    pub refused_down: AtomicU64,
}

impl Counts {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Workspace {
    users: Vec<SlackUser>,
    messages: Vec<Message>,
    /// user id → their direct-message channel.
    dms: HashMap<String, String>,
    /// Modals opened: (trigger id, view).
    views: Vec<(String, Value)>,
    next_ts: u64,
}

pub struct SlackStandIn {
    token: String,
    workspace: Mutex<Workspace>,
    limiters: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
    /// Answer every call 503, as during an outage.
    down: AtomicBool,
    pub counts: Counts,
}

impl SlackStandIn {
    /// A workspace whose bot token is `token`.
    pub fn new(token: &str) -> Self {
        Self {
            token: token.to_owned(),
            workspace: Mutex::default(),
            limiters: Mutex::default(),
            down: AtomicBool::new(false),
            counts: Counts::default(),
        }
    }

    fn workspace(&self) -> MutexGuard<'_, Workspace> {
        self.workspace.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A member with `email`; their Slack user id.
    pub fn add_user(&self, name: &str, email: &str) -> String {
        let mut w = self.workspace();
        let id = format!("U{:08}", w.users.len() + 1);
        w.users.push(SlackUser {
            id: id.clone(),
            name: name.to_owned(),
            email: email.to_owned(),
        });
        id
    }

    pub fn user_by_email(&self, email: &str) -> Option<SlackUser> {
        self.workspace()
            .users
            .iter()
            .find(|u| u.email == email)
            .cloned()
    }

    /// Slack unreachable (every call 503) or back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Every message in `channel` (ephemeral ones included), oldest first.
    pub fn messages_in(&self, channel: &str) -> Vec<Message> {
        self.workspace()
            .messages
            .iter()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect()
    }

    /// Every message, oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.workspace().messages.clone()
    }

    /// The direct messages the bot sent `user_id`.
    pub fn direct_messages(&self, user_id: &str) -> Vec<Message> {
        let channel = self.workspace().dms.get(user_id).cloned();
        channel.map(|c| self.messages_in(&c)).unwrap_or_default()
    }

    /// Ephemeral messages shown to `user_id` only.
    pub fn ephemeral_for(&self, user_id: &str) -> Vec<Message> {
        self.workspace()
            .messages
            .iter()
            .filter(|m| m.only_for.as_deref() == Some(user_id))
            .cloned()
            .collect()
    }

    /// Modals opened, with the trigger that opened each.
    pub fn views(&self) -> Vec<(String, Value)> {
        self.workspace().views.clone()
    }

    /// `Err(seconds)` past the method's (and channel's) rate.
    fn spend(&self, key: &str, quota: Quota) -> Result<(), u64> {
        let limiter = {
            let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
            limiters
                .entry(key.to_owned())
                .or_insert_with(|| Arc::new(RateLimiter::direct(quota)))
                .clone()
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            wait.as_secs() + 1
        })
    }
}

/// Slack's signature of an interaction: `v0=` and the hex HMAC-SHA256 of
/// `v0:<timestamp>:<body>` under the app's signing secret.
pub fn sign(signing_secret: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(signing_secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// The body Slack posts to an interactivity URL: the payload as a form field.
pub fn interaction_body(payload: &Value) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

fn next_trigger() -> u64 {
    static TRIGGERS: AtomicU64 = AtomicU64::new(1);
    TRIGGERS.fetch_add(1, Ordering::Relaxed)
}

/// A button click (`block_actions`) by `user` on a message in `channel`.
pub fn block_actions(
    user: &SlackUser,
    action_id: &str,
    value: &str,
    channel: &str,
    message_ts: &str,
) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": user.id, "username": user.name, "name": user.name, "team_id": "T0000001"},
        "api_app_id": "A0000001",
        "team": {"id": "T0000001", "domain": "bank"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": false},
        // Slack gives every click a trigger of its own.
        "trigger_id": format!("{}.{}.{action_id}.{}", message_ts.replace('.', ""), user.id, next_trigger()),
        "channel": {"id": channel},
        "message": {"ts": message_ts},
        "response_url": "https://hooks.slack.invalid/actions/T0000001/1/x",
        "actions": [{
            "type": "button", "action_id": action_id, "block_id": "decide",
            "value": value, "action_ts": message_ts,
        }],
    })
}

/// A modal submitted (`view_submission`) by `user`: the deny reason.
pub fn view_submission(user: &SlackUser, callback_id: &str, metadata: &str, reason: &str) -> Value {
    json!({
        "type": "view_submission",
        "user": {"id": user.id, "username": user.name, "name": user.name, "team_id": "T0000001"},
        "api_app_id": "A0000001",
        "team": {"id": "T0000001", "domain": "bank"},
        "trigger_id": format!("submit.{}.{metadata}.{}", user.id, next_trigger()),
        "view": {
            "id": format!("V{}", metadata.len()),
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": metadata,
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
        },
    })
}

// ------------------------------------------------------------------ HTTP

type Standin = web::Data<SlackStandIn>;

/// Mounts the Web API under `/api` (the caller picks the prefix).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/{method}", web::post().to(call))
        .route("/api/{method}", web::get().to(call));
}

/// Serves `standin` on a free port of 127.0.0.1 (tests): its API base URL
/// (`…/api`), and the server to spawn.
pub fn serve(standin: Standin) -> std::io::Result<(String, actix_web::dev::Server)> {
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(standin.clone())
            .configure(routes)
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")?;
    let base = format!("http://{}/api", server.addrs()[0]);
    Ok((base, server.run()))
}

fn error(code: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({"ok": false, "error": code}))
}

/// Arguments from the query string, a JSON body or a form body (Slack takes all three).
fn arguments(req: &HttpRequest, body: &[u8]) -> HashMap<String, Value> {
    let mut args: HashMap<String, Value> =
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        args.extend(map);
    } else {
        args.extend(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))),
        );
    }
    args
}

fn text_of(args: &HashMap<String, Value>, key: &str) -> String {
    args.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Blocks given as JSON or as a JSON string (form bodies).
fn blocks_of(args: &HashMap<String, Value>) -> Value {
    match args.get("blocks") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => Value::Null,
    }
}

const PER_SECOND: NonZeroU32 = NonZeroU32::MIN;
/// Tier 3 (50+ a minute) and tier 4 (100+ a minute), as a minute's worth.
const TIER_3: u32 = 50;
const TIER_4: u32 = 100;

fn quota_for(method: &str, channel: &str) -> (String, Quota) {
    let per_minute = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
    match method {
        // "One message per second per channel, short bursts allowed."
        "chat.postMessage" => (
            format!("{method}:{channel}"),
            Quota::per_second(PER_SECOND).allow_burst(NonZeroU32::new(3).unwrap_or(PER_SECOND)),
        ),
        "users.info" | "users.lookupByEmail" | "views.open" => {
            (method.to_owned(), per_minute(TIER_4))
        }
        _ => (method.to_owned(), per_minute(TIER_3)),
    }
}

async fn call(
    req: HttpRequest,
    standin: Standin,
    method: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if standin.down.load(Ordering::SeqCst) {
        standin.counts.refused_down.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::ServiceUnavailable().finish();
    }
    standin.counts.requests.fetch_add(1, Ordering::Relaxed);
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(standin.token.as_str()) {
        return error(if bearer.is_none() {
            "not_authed"
        } else {
            "invalid_auth"
        });
    }
    let args = arguments(&req, &body);
    let (key, quota) = quota_for(&method, &text_of(&args, "channel"));
    if let Err(seconds) = standin.spend(&key, quota) {
        standin.counts.limited.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", seconds.to_string()))
            .json(json!({"ok": false, "error": "ratelimited"}));
    }
    match method.as_str() {
        "chat.postMessage" | "chat.postEphemeral" => post(&standin, &method, &args),
        "chat.update" => update(&standin, &args),
        "conversations.open" => open_dm(&standin, &args),
        "users.info" | "users.lookupByEmail" => user(&standin, &method, &args),
        "views.open" => {
            let trigger = text_of(&args, "trigger_id");
            if trigger.is_empty() {
                return error("invalid_trigger_id");
            }
            let view = match args.get("view") {
                Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
                Some(v) => v.clone(),
                None => return error("invalid_arguments"),
            };
            let mut shown = view.clone();
            let id = {
                let mut w = standin.workspace();
                w.views.push((trigger, view));
                format!("V{:08}", w.views.len())
            };
            if let Value::Object(fields) = &mut shown {
                fields.insert("id".into(), json!(id));
                fields.insert("team_id".into(), json!("T0000001"));
                fields.insert("hash".into(), json!(format!("{id}.hash")));
                fields.insert("state".into(), json!({"values": {}}));
            }
            HttpResponse::Ok().json(json!({"ok": true, "view": shown}))
        }
        _ => error("unknown_method"),
    }
}

fn post(standin: &SlackStandIn, method: &str, args: &HashMap<String, Value>) -> HttpResponse {
    let channel = text_of(args, "channel");
    if channel.is_empty() {
        return error("channel_not_found");
    }
    let text = text_of(args, "text");
    let blocks = blocks_of(args);
    if text.is_empty() && blocks.is_null() {
        return error("no_text");
    }
    let only_for = (method == "chat.postEphemeral").then(|| text_of(args, "user"));
    let mut w = standin.workspace();
    w.next_ts += 1;
    let ts = format!("1800000000.{:06}", w.next_ts);
    w.messages.push(Message {
        channel: channel.clone(),
        ts: ts.clone(),
        text,
        blocks,
        updates: 0,
        only_for: only_for.clone(),
    });
    if only_for.is_some() {
        return HttpResponse::Ok().json(json!({"ok": true, "message_ts": ts}));
    }
    HttpResponse::Ok()
        .json(json!({"ok": true, "channel": channel, "ts": ts, "message": {"ts": ts}}))
}

fn update(standin: &SlackStandIn, args: &HashMap<String, Value>) -> HttpResponse {
    let (channel, ts) = (text_of(args, "channel"), text_of(args, "ts"));
    let (text, blocks) = (text_of(args, "text"), blocks_of(args));
    let mut w = standin.workspace();
    let Some(m) = w
        .messages
        .iter_mut()
        .find(|m| m.channel == channel && m.ts == ts)
    else {
        return error("message_not_found");
    };
    m.text = text.clone();
    m.blocks = blocks;
    m.updates += 1;
    HttpResponse::Ok().json(
        json!({"ok": true, "channel": channel, "ts": ts, "text": text,
        "message": {"ts": ts, "text": text}}),
    )
}

fn open_dm(standin: &SlackStandIn, args: &HashMap<String, Value>) -> HttpResponse {
    // A comma-separated string, as documented (clients also send an array).
    let user = match args.get("users") {
        Some(Value::Array(ids)) => ids
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        _ => text_of(args, "users"),
    };
    let mut w = standin.workspace();
    if !w.users.iter().any(|u| u.id == user) {
        return error("user_not_found");
    }
    let next = format!("D{:08}", w.dms.len() + 1);
    let channel = w.dms.entry(user).or_insert(next).clone();
    HttpResponse::Ok().json(json!({"ok": true, "channel": {"id": channel}}))
}

fn user(standin: &SlackStandIn, method: &str, args: &HashMap<String, Value>) -> HttpResponse {
    let w = standin.workspace();
    let found = if method == "users.info" {
        let id = text_of(args, "user");
        w.users.iter().find(|u| u.id == id)
    } else {
        let email = text_of(args, "email");
        w.users.iter().find(|u| u.email == email)
    };
    match found {
        Some(u) => HttpResponse::Ok().json(json!({"ok": true, "user": {
            "id": u.id, "team_id": "T0000001", "name": u.name, "real_name": u.name,
            "deleted": false, "is_bot": false,
            "profile": {"email": u.email, "real_name": u.name, "display_name": u.name},
        }})),
        None => error(if method == "users.info" {
            "user_not_found"
        } else {
            "users_not_found"
        }),
    }
}
