//! Actions on a platform and the audit record of each.

use serde::Serialize;
use spamscope_proto::v1::Platform;

/// What to do to a user or a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionKind {
    /// Remove one message.
    Delete,
    /// Time the user out for this many seconds.
    Timeout {
        seconds: u32,
    },
    Ban,
    /// Lift a timeout or a ban.
    Unban,
}

impl ActionKind {
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Delete => "delete",
            ActionKind::Timeout { .. } => "timeout",
            ActionKind::Ban => "ban",
            ActionKind::Unban => "unban",
        }
    }

    /// Whether an undo can take it back (a deletion cannot).
    pub fn undoable(self) -> bool {
        matches!(self, ActionKind::Timeout { .. } | ActionKind::Ban)
    }
}

/// Whom or what an action is on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Target {
    #[serde(serialize_with = "platform_key")]
    pub platform: i32,
    /// Twitch channel login or YouTube video id.
    pub stream_id: String,
    /// Twitch broadcaster id (room-id) or YouTube channel id, when known.
    pub channel_id: String,
    pub user_id: String,
    pub user_login: String,
    /// The message, for a deletion.
    pub message_id: String,
}

fn platform_key<S: serde::Serializer>(p: &i32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(Platform::of(*p).key())
}

/// One action to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    #[serde(flatten)]
    pub kind: ActionKind,
    pub target: Target,
    /// Sent to the platform as the reason (Twitch shows it to moderators).
    pub reason: String,
    /// What a platform answered when the action was done, needed to undo it
    /// (a YouTube ban's id).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub undo_handle: String,
}

/// Where an action stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// Waiting for a moderator to accept it.
    Suggested,
    /// The channel is in dry-run: this is what would have been sent.
    DryRun,
    /// To be sent.
    Pending,
    /// The platform did it.
    Done { answer: String },
    /// The platform refused or could not be reached; `reason` says why.
    Failed { reason: String },
    /// Not sent: the user is protected (moderator, broadcaster, VIP or on
    /// the allow list).
    Protected { reason: String },
}

impl Status {
    pub fn name(&self) -> &'static str {
        match self {
            Status::Suggested => "suggested",
            Status::DryRun => "dry_run",
            Status::Pending => "pending",
            Status::Done { .. } => "done",
            Status::Failed { .. } => "failed",
            Status::Protected { .. } => "protected",
        }
    }
}

/// The audit record of one action, suggested or taken: what, on whom,
/// who or which rule asked, the evidence, and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// Unique within the engine that made it.
    pub id: u64,
    pub at_ms: i64,
    /// `twitch.xqcow`.
    pub stream: String,
    pub action: Action,
    #[serde(flatten)]
    pub status: Status,
    /// The rule (`policy:bot_wave`, `policy:flagged_users`), the nuke
    /// (`nuke:3 by alice`) or the moderator that asked for it.
    pub by: String,
    /// Why, in words a moderator reads: the event or the user's evidence.
    pub evidence: String,
    /// The spam event it acts on, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<u64>,
    /// The nuke it belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nuke: Option<u64>,
    /// For an undo: the record it takes back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undoes: Option<u64>,
}

impl Record {
    /// A record as published ([`spamscope_proto::v1::ActionRecord`]): its
    /// stream key and the action; `None` for an action or status this
    /// build does not know.
    pub fn from_proto(a: &spamscope_proto::v1::ActionRecord) -> Option<Self> {
        let kind = match a.action.as_str() {
            "delete" => ActionKind::Delete,
            "timeout" => ActionKind::Timeout {
                seconds: a.timeout_s,
            },
            "ban" => ActionKind::Ban,
            "unban" => ActionKind::Unban,
            _ => return None,
        };
        let status = match a.status.as_str() {
            "suggested" => Status::Suggested,
            "dry_run" => Status::DryRun,
            "pending" => Status::Pending,
            "done" => Status::Done {
                answer: a.detail.clone(),
            },
            "failed" => Status::Failed {
                reason: a.detail.clone(),
            },
            "protected" => Status::Protected {
                reason: a.detail.clone(),
            },
            _ => return None,
        };
        let nonzero = |v: u64| (v != 0).then_some(v);
        Some(Self {
            id: a.record_id,
            at_ms: a.at_ms,
            stream: spamscope_proto::StreamKey::format(Platform::of(a.platform), &a.stream_id),
            action: Action {
                kind,
                target: Target {
                    platform: a.platform,
                    stream_id: a.stream_id.clone(),
                    channel_id: a.channel_id.clone(),
                    user_id: a.user_id.clone(),
                    user_login: a.user_login.clone(),
                    message_id: a.message_id.clone(),
                },
                reason: format!("spamscope: {}", a.evidence)
                    .chars()
                    .take(500)
                    .collect(),
                undo_handle: String::new(),
            },
            status,
            by: a.by.clone(),
            evidence: a.evidence.clone(),
            event_id: nonzero(a.spam_event_id),
            nuke: nonzero(a.nuke_id),
            undoes: nonzero(a.undoes),
        })
    }
}
