//! Sending actions to a platform: the client trait, its errors, the rate
//! gate both clients share, and [`execute`], which sends pending records
//! and writes each answer into its record.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use spamscope_proto::v1::Platform;
use tracing::warn;

use crate::action::{Action, Record, Status};

/// What the platform answered to an action it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// A short account of the answer for the audit trail.
    pub answer: String,
    /// What an undo needs (a YouTube ban's id); empty when nothing.
    pub undo_handle: String,
}

/// Why an action was not done. Never holds a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// 401: the token is missing, expired or revoked.
    #[error("the platform refused the token (401): {0}")]
    Unauthorized(String),
    /// 403: the account is not a moderator there, or the token lacks a
    /// scope.
    #[error("not allowed (403): {0}")]
    Forbidden(String),
    /// 429 on every try.
    #[error("rate limited: still refused after {0} tries")]
    RateLimited(u32),
    /// The platform refused this one action (already banned, no such
    /// message, ...): the others go on.
    #[error("refused ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// What the action needs is missing (no channel id, no ban id).
    #[error("{0}")]
    Unusable(String),
    #[error("cannot reach the platform: {0}")]
    Transport(String),
}

/// A platform's moderation API.
#[async_trait]
pub trait Moderator: Send + Sync + std::fmt::Debug {
    fn platform(&self) -> Platform;
    async fn send(&self, action: &Action) -> Result<Sent, SendError>;
}

/// Sends every pending record through the moderator of its platform, one
/// after another, and writes the answer into the record (`done` with the
/// answer and the undo handle, or `failed` with the reason). Records of
/// another status are left as they are.
pub async fn execute(moderators: &[&dyn Moderator], records: &mut [Record]) {
    for r in records.iter_mut().filter(|r| r.status == Status::Pending) {
        let platform = Platform::of(r.action.target.platform);
        let Some(m) = moderators.iter().find(|m| m.platform() == platform) else {
            r.status = Status::Failed {
                reason: format!("no {} credentials configured", platform.key()),
            };
            continue;
        };
        match m.send(&r.action).await {
            Ok(sent) => {
                r.action.undo_handle = sent.undo_handle;
                r.status = Status::Done {
                    answer: sent.answer,
                };
            }
            Err(e) => {
                warn!(stream = %r.stream, user = %r.action.target.user_login, action = r.action.kind.name(), error = %e, "action failed");
                r.status = Status::Failed {
                    reason: e.to_string(),
                };
            }
        }
    }
}

/// Tries of one request that the platform rate-limits (429) before giving
/// up on it.
pub const MAX_TRIES: u32 = 5;
/// Longest wait for a rate-limit window to reset.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The rate limit a platform announced: requests left in the window and
/// when it resets. Requests wait while none are left.
#[derive(Debug, Default)]
pub struct RateGate {
    state: Mutex<Option<(u64, SystemTime)>>,
}

impl RateGate {
    /// Waits until a request may go.
    pub async fn wait(&self) {
        let wait = {
            let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match *s {
                Some((0, reset)) => reset.duration_since(SystemTime::now()).ok(),
                _ => None,
            }
        };
        if let Some(w) = wait {
            tokio::time::sleep(w.min(MAX_WAIT)).await;
        }
    }

    /// Records `remaining` requests left until `reset` (Unix seconds).
    pub fn update(&self, remaining: Option<u64>, reset_unix_s: Option<u64>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match (remaining, reset_unix_s) {
            (Some(r), Some(t)) => *s = Some((r, UNIX_EPOCH + Duration::from_secs(t))),
            (Some(r), None) => {
                if let Some((left, _)) = s.as_mut() {
                    *left = r;
                }
            }
            _ => {}
        }
    }

    /// How long to wait after the `try_no`-th 429 (from 1): until the
    /// announced reset when there is one, else doubling from 500 ms.
    pub fn backoff(&self, try_no: u32) -> Duration {
        let announced = {
            let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.and_then(|(_, reset)| reset.duration_since(SystemTime::now()).ok())
        };
        let doubling = Duration::from_millis(500) * 2u32.saturating_pow(try_no.saturating_sub(1));
        announced
            .filter(|d| !d.is_zero())
            .unwrap_or(doubling)
            .min(MAX_WAIT)
    }
}

/// Sends the request `build` makes until the platform answers something
/// other than a rate limit (`limited`), at most [`MAX_TRIES`] times, waiting
/// on `gate` before each try and after each refusal. A success is its
/// status and JSON body; a failure is a [`SendError`] whose message
/// `message` reads from the body (or its start when it says nothing).
pub(crate) async fn request(
    gate: &RateGate,
    build: impl Fn() -> reqwest::RequestBuilder,
    limited: impl Fn(reqwest::StatusCode, &serde_json::Value) -> bool,
    message: impl Fn(&serde_json::Value) -> Option<String>,
) -> Result<(reqwest::StatusCode, serde_json::Value), SendError> {
    use reqwest::StatusCode;
    for try_no in 1..=MAX_TRIES {
        gate.wait().await;
        let resp = build()
            .send()
            .await
            .map_err(|e| SendError::Transport(e.without_url().to_string()))?;
        let h = resp.headers();
        gate.update(
            header_u64(h, "ratelimit-remaining"),
            header_u64(h, "ratelimit-reset"),
        );
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if status.is_success() {
            return Ok((status, v));
        }
        if limited(status, &v) {
            tokio::time::sleep(gate.backoff(try_no)).await;
            continue;
        }
        let message = message(&v).unwrap_or_else(|| excerpt(&text));
        return Err(match status {
            StatusCode::UNAUTHORIZED => SendError::Unauthorized(message),
            StatusCode::FORBIDDEN => SendError::Forbidden(message),
            s => SendError::Rejected {
                status: s.as_u16(),
                message,
            },
        });
    }
    Err(SendError::RateLimited(MAX_TRIES))
}

/// A header as a number.
pub(crate) fn header_u64(h: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The start of a response body for an error message (bodies from outside
/// are not trusted to be short).
pub(crate) fn excerpt(body: &str) -> String {
    let mut s: String = body.chars().take(300).collect();
    if body.chars().count() > 300 {
        s.push('…');
    }
    s
}
