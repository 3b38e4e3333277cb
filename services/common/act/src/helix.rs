//! Twitch: the Helix moderation API.
//!
//! - timeout and ban: `POST /moderation/bans?broadcaster_id&moderator_id`
//!   with `{"data": {"user_id", "duration", "reason"}}` (no duration: a
//!   ban); scope `moderator:manage:banned_users`;
//! - unban (lifts a timeout too): `DELETE
//!   /moderation/bans?broadcaster_id&moderator_id&user_id`; same scope;
//! - delete a message: `DELETE
//!   /moderation/chat?broadcaster_id&moderator_id&message_id`; scope
//!   `moderator:manage:chat_messages`.
//!
//! Every request carries the moderator's user access token
//! (`Authorization: Bearer`) and the app's `Client-Id`. Twitch announces
//! its rate limit in `Ratelimit-Remaining` and `Ratelimit-Reset` (Unix
//! seconds): requests wait while none are left, and a 429 is retried after
//! the reset, up to [`MAX_TRIES`](crate::platform::MAX_TRIES) times.
//!
//! The requests are written here rather than through `twitch_api`: that
//! crate reads its base URL once per process from the environment and does
//! not hand back the rate-limit headers, and both matter here (a stand-in
//! server per test, a proxy per deployment, waiting on the reset).

use async_trait::async_trait;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use spamscope_proto::v1::Platform;

use crate::action::{Action, ActionKind};
use crate::platform::{Moderator, RateGate, SendError, Sent, request};

/// Twitch's API address.
pub const HELIX_URL: &str = "https://api.twitch.tv/helix";

/// Who acts, with what.
#[derive(Clone)]
pub struct HelixConfig {
    /// `https://api.twitch.tv/helix` (another address: a proxy or a test
    /// server).
    pub base_url: String,
    pub client_id: String,
    /// The moderator's user access token (without `oauth:`).
    pub token: String,
    /// The moderator's Twitch user id: actions are taken as them.
    pub moderator_id: String,
}

impl std::fmt::Debug for HelixConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("HelixConfig")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("moderator_id", &self.moderator_id)
            .finish_non_exhaustive()
    }
}

/// The Helix client.
#[derive(Debug)]
pub struct Helix {
    cfg: HelixConfig,
    http: reqwest::Client,
    gate: RateGate,
}

impl Helix {
    pub fn new(cfg: HelixConfig) -> Result<Self, SendError> {
        Url::parse(&cfg.base_url)
            .map_err(|e| SendError::Unusable(format!("Helix address {:?}: {e}", cfg.base_url)))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| SendError::Transport(e.to_string()))?;
        Ok(Self {
            cfg,
            http,
            gate: RateGate::default(),
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
        request(
            &self.gate,
            || {
                let req = self
                    .http
                    .request(method.clone(), url.clone())
                    .bearer_auth(&self.cfg.token)
                    .header("Client-Id", &self.cfg.client_id);
                match &body {
                    Some(b) => req.json(b),
                    None => req,
                }
            },
            |status, _| status == StatusCode::TOO_MANY_REQUESTS,
            |v| v["message"].as_str().map(str::to_owned),
        )
        .await
    }
}

#[async_trait]
impl Moderator for Helix {
    fn platform(&self) -> Platform {
        Platform::Twitch
    }

    async fn send(&self, a: &Action) -> Result<Sent, SendError> {
        let t = &a.target;
        if t.channel_id.is_empty() {
            return Err(SendError::Unusable(format!(
                "no broadcaster id (room-id) known for twitch.{}",
                t.stream_id
            )));
        }
        let ids = [
            ("broadcaster_id", t.channel_id.as_str()),
            ("moderator_id", self.cfg.moderator_id.as_str()),
        ];
        let need_user = || {
            if t.user_id.is_empty() {
                Err(SendError::Unusable(format!(
                    "no Twitch user id known for {}",
                    t.user_login
                )))
            } else {
                Ok(())
            }
        };
        match a.kind {
            ActionKind::Delete => {
                if t.message_id.is_empty() {
                    return Err(SendError::Unusable("no message id to delete".into()));
                }
                let mut q = ids.to_vec();
                q.push(("message_id", &t.message_id));
                let (s, _) = self
                    .call(Method::DELETE, "moderation/chat", &q, None)
                    .await?;
                Ok(Sent {
                    answer: format!("{} message deleted", s.as_u16()),
                    undo_handle: String::new(),
                })
            }
            ActionKind::Timeout { .. } | ActionKind::Ban => {
                need_user()?;
                let mut data = json!({"user_id": t.user_id, "reason": a.reason});
                if let ActionKind::Timeout { seconds } = a.kind {
                    data["duration"] = json!(seconds);
                }
                let (s, v) = self
                    .call(
                        Method::POST,
                        "moderation/bans",
                        &ids,
                        Some(json!({ "data": data })),
                    )
                    .await?;
                let end = v["data"][0]["end_time"].as_str().unwrap_or("");
                Ok(Sent {
                    answer: if end.is_empty() {
                        format!("{} banned", s.as_u16())
                    } else {
                        format!("{} timed out until {end}", s.as_u16())
                    },
                    undo_handle: String::new(),
                })
            }
            ActionKind::Unban => {
                need_user()?;
                let mut q = ids.to_vec();
                q.push(("user_id", &t.user_id));
                let (s, _) = self
                    .call(Method::DELETE, "moderation/bans", &q, None)
                    .await?;
                Ok(Sent {
                    answer: format!("{} unbanned", s.as_u16()),
                    undo_handle: String::new(),
                })
            }
        }
    }
}
