//! YouTube: the Data API's live chat moderation.
//!
//! - the live chat of a video: `GET
//!   /videos?part=liveStreamingDetails&id=<video>` →
//!   `liveStreamingDetails.activeLiveChatId` (asked once per video);
//! - timeout and ban: `POST /liveChat/bans?part=snippet` with a
//!   `temporary` (with `banDurationSeconds`) or `permanent` ban of the
//!   author's channel id; the answer's `id` is what an undo needs;
//! - unban: `DELETE /liveChat/bans?id=<ban id>`;
//! - delete a message: `DELETE /liveChat/messages?id=<message id>`.
//!
//! Requests carry an OAuth access token of the channel owner or a
//! moderator (scope `youtube.force-ssl`). The API says it is rate limiting
//! with 429 or with a 403 whose reason is `rateLimitExceeded` or
//! `userRateLimitExceeded`; both are retried with doubling waits, up to
//! [`MAX_TRIES`](crate::platform::MAX_TRIES) times.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use spamscope_proto::v1::Platform;

use crate::action::{Action, ActionKind};
use crate::platform::{Moderator, RateGate, SendError, Sent, request};

/// The Data API's address.
pub const YOUTUBE_URL: &str = "https://www.googleapis.com/youtube/v3";

#[derive(Clone)]
pub struct YoutubeConfig {
    pub base_url: String,
    /// OAuth access token.
    pub token: String,
}

impl std::fmt::Debug for YoutubeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YoutubeConfig")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Most videos whose live chat id is remembered.
const MAX_CHATS: usize = 10_000;

#[derive(Debug)]
pub struct Youtube {
    cfg: YoutubeConfig,
    http: reqwest::Client,
    gate: RateGate,
    /// Video id → live chat id.
    chats: Mutex<HashMap<String, String>>,
}

impl Youtube {
    pub fn new(cfg: YoutubeConfig) -> Result<Self, SendError> {
        Url::parse(&cfg.base_url)
            .map_err(|e| SendError::Unusable(format!("YouTube address {:?}: {e}", cfg.base_url)))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| SendError::Transport(e.to_string()))?;
        Ok(Self {
            cfg,
            http,
            gate: RateGate::default(),
            chats: Mutex::new(HashMap::new()),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), SendError> {
        let url = Url::parse_with_params(
            &format!("{}/{path}", self.cfg.base_url.trim_end_matches('/')),
            query,
        )
        .map_err(|e| SendError::Unusable(e.to_string()))?;
        let reason = |v: &Value| {
            v["error"]["errors"][0]["reason"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        request(
            &self.gate,
            || {
                let req = self
                    .http
                    .request(method.clone(), url.clone())
                    .bearer_auth(&self.cfg.token);
                match &body {
                    Some(b) => req.json(b),
                    None => req,
                }
            },
            |status, v| {
                status == StatusCode::TOO_MANY_REQUESTS
                    || (status == StatusCode::FORBIDDEN
                        && matches!(
                            reason(v).as_str(),
                            "rateLimitExceeded" | "userRateLimitExceeded"
                        ))
            },
            |v| {
                let message = v["error"]["message"].as_str()?;
                let why = reason(v);
                Some(if why.is_empty() {
                    message.to_owned()
                } else {
                    format!("{message} ({why})")
                })
            },
        )
        .await
    }

    /// The live chat of a video, asked once.
    async fn live_chat(&self, video: &str) -> Result<String, SendError> {
        if let Some(c) = self
            .chats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(video)
        {
            return Ok(c.clone());
        }
        let (_, v) = self
            .call(
                Method::GET,
                "videos",
                &[("part", "liveStreamingDetails"), ("id", video)],
                None,
            )
            .await?;
        let chat = v["items"][0]["liveStreamingDetails"]["activeLiveChatId"]
            .as_str()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| SendError::Unusable(format!("video {video} has no active live chat")))?
            .to_owned();
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        if chats.len() >= MAX_CHATS {
            chats.clear();
        }
        chats.insert(video.to_owned(), chat.clone());
        Ok(chat)
    }
}

#[async_trait]
impl Moderator for Youtube {
    fn platform(&self) -> Platform {
        Platform::Youtube
    }

    async fn send(&self, a: &Action) -> Result<Sent, SendError> {
        let t = &a.target;
        match a.kind {
            ActionKind::Delete => {
                if t.message_id.is_empty() {
                    return Err(SendError::Unusable("no message id to delete".into()));
                }
                let (s, _) = self
                    .call(
                        Method::DELETE,
                        "liveChat/messages",
                        &[("id", &t.message_id)],
                        None,
                    )
                    .await?;
                Ok(Sent {
                    answer: format!("{} message deleted", s.as_u16()),
                    undo_handle: String::new(),
                })
            }
            ActionKind::Timeout { .. } | ActionKind::Ban => {
                if t.user_id.is_empty() {
                    return Err(SendError::Unusable(format!(
                        "no channel id known for {}",
                        t.user_login
                    )));
                }
                let chat = self.live_chat(&t.stream_id).await?;
                let mut snippet = json!({
                    "liveChatId": chat,
                    "type": "permanent",
                    "bannedUserDetails": {"channelId": t.user_id},
                });
                if let ActionKind::Timeout { seconds } = a.kind {
                    snippet["type"] = json!("temporary");
                    snippet["banDurationSeconds"] = json!(seconds);
                }
                let (s, v) = self
                    .call(
                        Method::POST,
                        "liveChat/bans",
                        &[("part", "snippet")],
                        Some(json!({ "snippet": snippet })),
                    )
                    .await?;
                let id = v["id"].as_str().unwrap_or("").to_owned();
                Ok(Sent {
                    answer: format!(
                        "{} {} ban {id}",
                        s.as_u16(),
                        snippet["type"].as_str().unwrap_or("")
                    ),
                    undo_handle: id,
                })
            }
            ActionKind::Unban => {
                if a.undo_handle.is_empty() {
                    return Err(SendError::Unusable(
                        "YouTube lifts a ban by its id, and this ban's id is not known".into(),
                    ));
                }
                let (s, _) = self
                    .call(
                        Method::DELETE,
                        "liveChat/bans",
                        &[("id", &a.undo_handle)],
                        None,
                    )
                    .await?;
                Ok(Sent {
                    answer: format!("{} ban lifted", s.as_u16()),
                    undo_handle: String::new(),
                })
            }
        }
    }
}
