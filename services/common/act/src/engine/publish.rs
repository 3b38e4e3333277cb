//! The engine's outputs as published on SPAM (`DetectorOutput`).

use spamscope_proto::StreamKey;
use spamscope_proto::v1::{DetectorOutput, detector_output};

use super::{ActionKind, Output, Status};

/// The engine's outputs as detector outputs, to publish beside the
/// detector's own (a moderator's action is in the chat already: none).
pub fn to_detector_output(o: &Output) -> Option<DetectorOutput> {
    use spamscope_proto::v1::{ActionRecord, CommandResult, NukeSuggestion as NukeProto};
    let split = |stream: &str| -> (i32, String) {
        match StreamKey::parse(stream) {
            Ok(k) => (k.platform as i32, k.id),
            Err(_) => (0, stream.to_owned()),
        }
    };
    let kind = match o {
        Output::Record(r) => {
            let t = &r.action.target;
            let detail = match &r.status {
                Status::Done { answer } => answer.clone(),
                Status::Failed { reason } | Status::Protected { reason } => reason.clone(),
                _ => String::new(),
            };
            detector_output::Kind::Action(ActionRecord {
                platform: t.platform,
                stream_id: t.stream_id.clone(),
                channel_id: t.channel_id.clone(),
                record_id: r.id,
                at_ms: r.at_ms,
                action: r.action.kind.name().to_owned(),
                timeout_s: match r.action.kind {
                    ActionKind::Timeout { seconds } => seconds,
                    _ => 0,
                },
                user_id: t.user_id.clone(),
                user_login: t.user_login.clone(),
                message_id: t.message_id.clone(),
                status: r.status.name().to_owned(),
                detail,
                by: r.by.clone(),
                evidence: r.evidence.clone(),
                spam_event_id: r.event_id.unwrap_or(0),
                nuke_id: r.nuke.unwrap_or(0),
                undoes: r.undoes.unwrap_or(0),
            })
        }
        Output::NukeSuggested(n) => {
            let (platform, stream_id) = split(&n.stream);
            detector_output::Kind::NukeSuggestion(NukeProto {
                platform,
                stream_id,
                spam_event_id: n.event_id,
                at_ms: n.at_ms,
                class: n.class_id as i32,
                users: n.users,
                text: n.text.clone(),
                by: n.by.clone(),
            })
        }
        Output::CommandResult(c) => {
            let (platform, stream_id) = split(&c.stream);
            detector_output::Kind::CommandResult(CommandResult {
                platform,
                stream_id,
                command_id: c.command_id.clone(),
                at_ms: c.at_ms,
                ok: c.error.is_empty(),
                error: c.error.clone(),
                nuke_id: c.nuke.as_ref().map_or(0, |n| n.nuke),
                users: c.nuke.as_ref().map_or(0, |n| n.users as u64),
                messages: c.nuke.as_ref().map_or(0, |n| n.messages as u64),
            })
        }
        Output::Moderator(m) if m.id != 0 => {
            let (platform, stream_id) = split(&m.stream);
            let what = match (m.action, m.duration_s) {
                ("timeout", Some(s)) => format!("timed out for {s} s"),
                ("ban", _) => "banned".to_owned(),
                _ => "had a message deleted".to_owned(),
            };
            detector_output::Kind::Action(ActionRecord {
                platform,
                stream_id,
                channel_id: m.channel_id.clone(),
                record_id: m.id,
                at_ms: m.at_ms,
                action: m.action.to_owned(),
                timeout_s: m.duration_s.unwrap_or(0),
                user_id: m.user_id.clone(),
                user_login: m.user_login.clone(),
                message_id: String::new(),
                status: "done".to_owned(),
                detail: "seen in the chat".to_owned(),
                by: "moderator".to_owned(),
                evidence: format!("{} {what} by a moderator", m.user_login),
                spam_event_id: 0,
                nuke_id: 0,
                undoes: 0,
            })
        }
        Output::Moderator(_) => return None,
    };
    Some(DetectorOutput { kind: Some(kind) })
}
