//! In-process stand-ins for the moderation APIs spamscope sends actions
//! to, served over real HTTP on loopback: Twitch Helix
//! (`/moderation/bans`, `/moderation/chat`) and the YouTube Data API
//! (`/videos`, `/liveChat/bans`, `/liveChat/messages`). They answer with
//! the request and response shapes of the platforms' documentation,
//! including their errors: 401 for a bad token or a missing scope, 403
//! when the acting user is not a moderator, 400/404 for one action that
//! cannot be done, and rate limiting (Helix: `Ratelimit-*` headers and
//! 429; YouTube: 429 or 403 `rateLimitExceeded`). Every call is recorded.
//! Nothing here talks to a real platform.

// The gates answer with the refusal itself; size does not matter in a test server.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde_json::{Value, json};

/// One request a stand-in received.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Value,
    /// The status it answered.
    pub status: u16,
    pub at: std::time::Instant,
}

/// What the Helix stand-in knows and does.
#[derive(Debug)]
pub struct HelixState {
    pub client_id: String,
    /// Token → its scopes.
    pub tokens: HashMap<String, BTreeSet<String>>,
    /// Broadcaster id → moderator ids.
    pub moderators: HashMap<String, BTreeSet<String>>,
    /// (broadcaster, user) → end time (Unix s; `None` for a ban).
    pub bans: BTreeMap<(String, String), Option<u64>>,
    /// Message ids that exist, and those deleted.
    pub messages: BTreeSet<String>,
    pub deleted: BTreeSet<String>,
    /// Users Twitch refuses to ban (staff, the broadcaster, ...).
    pub unbannable: BTreeSet<String>,
    /// Requests allowed per one-second window.
    pub limit: u32,
    /// Answer the next this-many requests with 429.
    pub force_429: u32,
    pub calls: Vec<Call>,
    window: (u64, u32),
}

/// The Helix stand-in; lives as long as the test's runtime.
#[derive(Debug, Clone)]
pub struct FakeHelix {
    /// Base address, as `HelixConfig::base_url` takes it.
    pub url: String,
    pub state: Arc<Mutex<HelixState>>,
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn helix_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "error": status.canonical_reason().unwrap_or(""),
            "status": status.as_u16(),
            "message": message,
        })),
    )
        .into_response()
}

type HS = Arc<Mutex<HelixState>>;

/// Checks the token, the scope, the moderator and the rate limit; on
/// success returns the rate-limit headers to send.
fn helix_gate(
    st: &mut HelixState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    scope: &str,
) -> Result<HeaderMap, Response> {
    let now = unix_s();
    if st.window.0 != now {
        st.window = (now, 0);
    }
    let mut h = HeaderMap::new();
    let reset = HeaderValue::from_str(&(now + 1).to_string()).unwrap();
    h.insert("ratelimit-limit", HeaderValue::from(st.limit));
    h.insert("ratelimit-reset", reset);
    if st.force_429 > 0 || st.window.1 >= st.limit {
        st.force_429 = st.force_429.saturating_sub(1);
        h.insert("ratelimit-remaining", HeaderValue::from(0));
        let mut r = helix_error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        r.headers_mut().extend(h);
        return Err(r);
    }
    st.window.1 += 1;
    h.insert(
        "ratelimit-remaining",
        HeaderValue::from(st.limit - st.window.1),
    );
    let with = |mut r: Response, h: &HeaderMap| {
        r.headers_mut().extend(h.clone());
        r
    };
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let Some(scopes) = st.tokens.get(token) else {
        return Err(with(
            helix_error(StatusCode::UNAUTHORIZED, "Invalid OAuth token"),
            &h,
        ));
    };
    if headers.get("client-id").and_then(|v| v.to_str().ok()) != Some(st.client_id.as_str()) {
        return Err(with(
            helix_error(
                StatusCode::UNAUTHORIZED,
                "Client ID and OAuth token do not match",
            ),
            &h,
        ));
    }
    if !scopes.contains(scope) {
        return Err(with(
            helix_error(StatusCode::UNAUTHORIZED, &format!("Missing scope: {scope}")),
            &h,
        ));
    }
    let (Some(b), Some(m)) = (q.get("broadcaster_id"), q.get("moderator_id")) else {
        return Err(with(
            helix_error(
                StatusCode::BAD_REQUEST,
                "Missing required parameter \"broadcaster_id\" or \"moderator_id\"",
            ),
            &h,
        ));
    };
    if !st.moderators.get(b).is_some_and(|ms| ms.contains(m)) {
        return Err(with(
            helix_error(
                StatusCode::FORBIDDEN,
                "The user in moderator_id is not one of the broadcaster's moderators.",
            ),
            &h,
        ));
    }
    Ok(h)
}

fn record(
    calls: &mut Vec<Call>,
    m: &Method,
    path: &str,
    q: &HashMap<String, String>,
    body: &Value,
    status: u16,
) {
    calls.push(Call {
        method: m.to_string(),
        path: path.to_owned(),
        query: q.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        body: body.clone(),
        status,
        at: std::time::Instant::now(),
    });
}

async fn helix_bans(
    State(s): State<HS>,
    method: Method,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Option<axum::Json<Value>>,
) -> Response {
    let body = body.map(|b| b.0).unwrap_or(Value::Null);
    let mut st = s.lock().unwrap();
    let r = match helix_gate(&mut st, &headers, &q, "moderator:manage:banned_users") {
        Err(r) => r,
        Ok(h) => {
            let b = q["broadcaster_id"].clone();
            let mut r = if method == Method::POST {
                let user = body["data"]["user_id"].as_str().unwrap_or("").to_owned();
                let duration = body["data"]["duration"].as_u64();
                if user.is_empty() {
                    helix_error(
                        StatusCode::BAD_REQUEST,
                        "Missing required field \"user_id\"",
                    )
                } else if st.unbannable.contains(&user) {
                    helix_error(
                        StatusCode::BAD_REQUEST,
                        "The user specified in the user_id field may not be banned.",
                    )
                } else if duration.is_none()
                    && matches!(st.bans.get(&(b.clone(), user.clone())), Some(None))
                {
                    helix_error(
                        StatusCode::BAD_REQUEST,
                        "The user specified in the user_id field is already banned.",
                    )
                } else if duration.is_some_and(|d| d == 0 || d > 1_209_600) {
                    helix_error(StatusCode::BAD_REQUEST, "The duration is not valid.")
                } else {
                    let end = duration.map(|d| unix_s() + d);
                    st.bans.insert((b.clone(), user.clone()), end);
                    let end_time = end.map(|e| {
                        jiff::Timestamp::from_second(e as i64)
                            .map(|t| t.to_string())
                            .unwrap_or_default()
                    });
                    axum::Json(json!({"data": [{
                        "broadcaster_id": b,
                        "moderator_id": q["moderator_id"],
                        "user_id": user,
                        "created_at": jiff::Timestamp::now().to_string(),
                        "end_time": end_time,
                    }]}))
                    .into_response()
                }
            } else {
                let user = q.get("user_id").cloned().unwrap_or_default();
                if st.bans.remove(&(b, user)).is_some() {
                    StatusCode::NO_CONTENT.into_response()
                } else {
                    helix_error(
                        StatusCode::BAD_REQUEST,
                        "The user specified in the user_id field is not banned.",
                    )
                }
            };
            r.headers_mut().extend(h);
            r
        }
    };
    record(
        &mut st.calls,
        &method,
        "moderation/bans",
        &q,
        &body,
        r.status().as_u16(),
    );
    r
}

async fn helix_chat(
    State(s): State<HS>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = s.lock().unwrap();
    let r = match helix_gate(&mut st, &headers, &q, "moderator:manage:chat_messages") {
        Err(r) => r,
        Ok(h) => {
            let id = q.get("message_id").cloned().unwrap_or_default();
            let mut r = if st.messages.contains(&id) && !st.deleted.contains(&id) {
                st.deleted.insert(id);
                StatusCode::NO_CONTENT.into_response()
            } else {
                helix_error(
                    StatusCode::NOT_FOUND,
                    "The message specified in the message_id parameter was not found.",
                )
            };
            r.headers_mut().extend(h);
            r
        }
    };
    record(
        &mut st.calls,
        &Method::DELETE,
        "moderation/chat",
        &q,
        &Value::Null,
        r.status().as_u16(),
    );
    r
}

impl FakeHelix {
    /// A Helix on a free loopback port: app `client_id`, and `token` with
    /// both moderation scopes, held by user `moderator_id`, a moderator of
    /// `broadcaster_id`. At most `limit` requests per second.
    pub async fn start(
        client_id: &str,
        token: &str,
        moderator_id: &str,
        broadcaster_id: &str,
        limit: u32,
    ) -> Self {
        let st = HelixState {
            client_id: client_id.to_owned(),
            tokens: HashMap::from([(
                token.to_owned(),
                BTreeSet::from([
                    "moderator:manage:banned_users".to_owned(),
                    "moderator:manage:chat_messages".to_owned(),
                ]),
            )]),
            moderators: HashMap::from([(
                broadcaster_id.to_owned(),
                BTreeSet::from([moderator_id.to_owned()]),
            )]),
            bans: BTreeMap::new(),
            messages: BTreeSet::new(),
            deleted: BTreeSet::new(),
            unbannable: BTreeSet::new(),
            limit,
            force_429: 0,
            calls: Vec::new(),
            window: (0, 0),
        };
        let state = Arc::new(Mutex::new(st));
        let app = Router::new()
            .route(
                "/helix/moderation/bans",
                axum::routing::post(helix_bans).delete(helix_bans),
            )
            .route("/helix/moderation/chat", delete(helix_chat))
            .with_state(Arc::clone(&state));
        let url = serve(app).await;
        Self {
            url: format!("{url}/helix"),
            state,
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }
}

/// What the YouTube stand-in knows and does.
#[derive(Debug, Default)]
pub struct YoutubeState {
    /// Tokens of the channel owner or a moderator.
    pub tokens: BTreeSet<String>,
    /// Tokens valid but of a user who is not a moderator of the chats.
    pub not_moderator: BTreeSet<String>,
    /// Video id → live chat id.
    pub videos: HashMap<String, String>,
    /// Ban id → (live chat, channel id, type, seconds).
    pub bans: BTreeMap<String, (String, String, String, Option<u64>)>,
    pub messages: BTreeSet<String>,
    pub deleted: BTreeSet<String>,
    /// Answer the next this-many requests with 429, and the ones after
    /// with 403 `rateLimitExceeded`.
    pub force_429: u32,
    pub force_403_rate: u32,
    pub calls: Vec<Call>,
    next_ban: u64,
}

#[derive(Debug, Clone)]
pub struct FakeYoutube {
    /// Base address, as `YoutubeConfig::base_url` takes it.
    pub url: String,
    pub state: Arc<Mutex<YoutubeState>>,
}

fn yt_error(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": "youtube.liveChat", "reason": reason}],
        }})),
    )
        .into_response()
}

type YS = Arc<Mutex<YoutubeState>>;

fn yt_gate(st: &mut YoutubeState, headers: &HeaderMap, moderating: bool) -> Result<(), Response> {
    if st.force_429 > 0 {
        st.force_429 -= 1;
        return Err(yt_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rateLimitExceeded",
            "The request was sent too soon after the previous one.",
        ));
    }
    if st.force_403_rate > 0 {
        st.force_403_rate -= 1;
        return Err(yt_error(
            StatusCode::FORBIDDEN,
            "rateLimitExceeded",
            "The request was sent too soon after the previous one.",
        ));
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if st.not_moderator.contains(token) {
        if moderating {
            return Err(yt_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "The request is not properly authorized to moderate this live chat.",
            ));
        }
        return Ok(());
    }
    if !st.tokens.contains(token) {
        return Err(yt_error(
            StatusCode::UNAUTHORIZED,
            "authError",
            "Request had invalid authentication credentials.",
        ));
    }
    Ok(())
}

async fn yt_videos(
    State(s): State<YS>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = s.lock().unwrap();
    let r = match yt_gate(&mut st, &headers, false) {
        Err(r) => r,
        Ok(()) => {
            let id = q.get("id").cloned().unwrap_or_default();
            let items: Vec<Value> = st
                .videos
                .get(&id)
                .map(|chat| {
                    json!({"kind": "youtube#video", "id": id,
                           "liveStreamingDetails": {"activeLiveChatId": chat}})
                })
                .into_iter()
                .collect();
            axum::Json(json!({"kind": "youtube#videoListResponse", "items": items})).into_response()
        }
    };
    record(
        &mut st.calls,
        &Method::GET,
        "videos",
        &q,
        &Value::Null,
        r.status().as_u16(),
    );
    r
}

async fn yt_bans(
    State(s): State<YS>,
    method: Method,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Option<axum::Json<Value>>,
) -> Response {
    let body = body.map(|b| b.0).unwrap_or(Value::Null);
    let mut st = s.lock().unwrap();
    let r = match yt_gate(&mut st, &headers, true) {
        Err(r) => r,
        Ok(()) if method == Method::POST => {
            let sn = &body["snippet"];
            let chat = sn["liveChatId"].as_str().unwrap_or("").to_owned();
            let channel = sn["bannedUserDetails"]["channelId"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let kind = sn["type"].as_str().unwrap_or("").to_owned();
            let secs = sn["banDurationSeconds"].as_u64();
            if !st.videos.values().any(|c| *c == chat) {
                yt_error(
                    StatusCode::NOT_FOUND,
                    "liveChatNotFound",
                    "The live chat was not found.",
                )
            } else if channel.is_empty()
                || !(kind == "permanent" || (kind == "temporary" && secs.is_some()))
            {
                yt_error(
                    StatusCode::BAD_REQUEST,
                    "invalidValue",
                    "The ban is not valid.",
                )
            } else {
                st.next_ban += 1;
                let id = format!("ban-{}", st.next_ban);
                st.bans.insert(id.clone(), (chat, channel, kind, secs));
                axum::Json(
                    json!({"kind": "youtube#liveChatBan", "etag": "e", "id": id, "snippet": sn}),
                )
                .into_response()
            }
        }
        Ok(()) => {
            let id = q.get("id").cloned().unwrap_or_default();
            if st.bans.remove(&id).is_some() {
                StatusCode::NO_CONTENT.into_response()
            } else {
                yt_error(
                    StatusCode::NOT_FOUND,
                    "liveChatBanNotFound",
                    "The ban was not found.",
                )
            }
        }
    };
    record(
        &mut st.calls,
        &method,
        "liveChat/bans",
        &q,
        &body,
        r.status().as_u16(),
    );
    r
}

async fn yt_messages(
    State(s): State<YS>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = s.lock().unwrap();
    let r = match yt_gate(&mut st, &headers, true) {
        Err(r) => r,
        Ok(()) => {
            let id = q.get("id").cloned().unwrap_or_default();
            if st.messages.contains(&id) && st.deleted.insert(id) {
                StatusCode::NO_CONTENT.into_response()
            } else {
                yt_error(
                    StatusCode::NOT_FOUND,
                    "liveChatMessageNotFound",
                    "The message was not found.",
                )
            }
        }
    };
    record(
        &mut st.calls,
        &Method::DELETE,
        "liveChat/messages",
        &q,
        &Value::Null,
        r.status().as_u16(),
    );
    r
}

impl FakeYoutube {
    /// A Data API on a free loopback port accepting `token`, where video
    /// `video` has the live chat `live_chat`.
    pub async fn start(token: &str, video: &str, live_chat: &str) -> Self {
        let st = YoutubeState {
            tokens: BTreeSet::from([token.to_owned()]),
            videos: HashMap::from([(video.to_owned(), live_chat.to_owned())]),
            ..YoutubeState::default()
        };
        let state = Arc::new(Mutex::new(st));
        let app = Router::new()
            .route("/youtube/v3/videos", get(yt_videos))
            .route(
                "/youtube/v3/liveChat/bans",
                axum::routing::post(yt_bans).delete(yt_bans),
            )
            .route("/youtube/v3/liveChat/messages", delete(yt_messages))
            .with_state(Arc::clone(&state));
        let url = serve(app).await;
        Self {
            url: format!("{url}/youtube/v3"),
            state,
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }
}

/// Serves `app` on a free loopback port until the runtime ends.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}
