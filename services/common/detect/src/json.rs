//! Detector outputs as JSON objects, one per output, with a `"kind"` of
//! `"spam_event"`, `"decision"`, `"message_score"`, or from a policy beside
//! the detector `"action"`, `"nuke_suggestion"` and `"command_result"`. The
//! CLI prints them;
//! their keys are a documented interface (README).
//!
//! One description of each object ([`View`]) serves both forms: a
//! `serde_json::Value` ([`to_json`]) and the bytes written straight to a
//! writer ([`write_json`], the replay writes hundreds of thousands). Its
//! fields are declared in key order, the order a JSON map sorts them in, so
//! both forms print the same bytes.

use serde::Serialize;
use serde_json::Value;
use spamscope_proto::StreamKey;
use spamscope_proto::v1::{DetectorOutput, Platform, SpamEventState, detector_output::Kind};

fn stream(platform: i32, id: &str) -> String {
    StreamKey::format(Platform::of(platform), id)
}

/// Lower-case state name: `active` or `ended`.
pub fn state_name(state: i32) -> &'static str {
    match SpamEventState::try_from(state) {
        Ok(SpamEventState::Active) => "active",
        Ok(SpamEventState::Ended) => "ended",
        _ => "unknown",
    }
}

#[derive(Serialize)]
struct Evidence<'a> {
    detail: &'a str,
    name: &'a str,
    observed: f64,
    threshold: f64,
}

#[derive(Serialize)]
struct SpamEventOut<'a> {
    class: &'a str,
    class_evidence: Vec<Evidence<'a>>,
    count: u64,
    event_id: u64,
    fingerprint: &'a str,
    first_seen_ms: i64,
    key: String,
    kind: &'a str,
    last_seen_ms: i64,
    sample_users: &'a [String],
    spam: bool,
    state: &'a str,
    stream: String,
    text: &'a str,
    unique_users: u64,
    version: u64,
}

#[derive(Serialize)]
struct TriggerOut<'a> {
    contribution: f64,
    count: u32,
    detail: &'a str,
    name: &'a str,
    norm: f64,
    observed: f64,
    threshold: f64,
}

#[derive(Serialize)]
struct DecisionOut<'a> {
    at_ms: i64,
    flag_threshold: f64,
    key: String,
    kind: &'a str,
    messages_seen: u64,
    slow_mode_inferred: bool,
    slow_mode_s: u32,
    stream: String,
    suspicion: f64,
    triggers: Vec<TriggerOut<'a>>,
    user: &'a str,
    user_id: &'a str,
}

#[derive(Serialize)]
struct ScoreOut<'a> {
    key: String,
    kind: &'a str,
    message_id: &'a str,
    score: f64,
    spam_event_class: &'a str,
    spam_event_id: u64,
    stream: String,
    ts_ms: i64,
    user: &'a str,
}

#[derive(Serialize)]
struct UnknownOut {
    key: String,
    kind: &'static str,
}

/// One output as its JSON object.
#[derive(Serialize)]
#[serde(untagged)]
enum View<'a> {
    SpamEvent(SpamEventOut<'a>),
    Decision(DecisionOut<'a>),
    Score(ScoreOut<'a>),
    Action(ActionOut<'a>),
    NukeSuggestion(NukeSuggestionOut<'a>),
    Command(CommandOut<'a>),
    Unknown(UnknownOut),
}

#[derive(Serialize)]
struct ActionOut<'a> {
    action: &'a str,
    at_ms: i64,
    by: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    detail: &'a str,
    evidence: &'a str,
    key: String,
    kind: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message_id: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    nuke_id: u64,
    record_id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    spam_event_id: u64,
    status: &'a str,
    stream: String,
    #[serde(skip_serializing_if = "is_zero_u32")]
    timeout_s: u32,
    #[serde(skip_serializing_if = "is_zero")]
    undoes: u64,
    user: &'a str,
    user_id: &'a str,
}

#[derive(Serialize)]
struct NukeSuggestionOut<'a> {
    at_ms: i64,
    by: &'a str,
    class: &'static str,
    key: String,
    kind: &'static str,
    spam_event_id: u64,
    stream: String,
    text: &'a str,
    users: u64,
}

#[derive(Serialize)]
struct CommandOut<'a> {
    at_ms: i64,
    command_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
    key: String,
    kind: &'static str,
    messages: u64,
    #[serde(skip_serializing_if = "is_zero")]
    nuke_id: u64,
    ok: bool,
    stream: String,
    users: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn view(o: &DetectorOutput) -> View<'_> {
    let key = crate::output_key(o);
    match &o.kind {
        Some(Kind::SpamEvent(e)) => View::SpamEvent(SpamEventOut {
            class: crate::classes::class_name(e.class()),
            class_evidence: e
                .class_evidence
                .iter()
                .map(|t| Evidence {
                    detail: &t.detail,
                    name: &t.name,
                    observed: t.observed,
                    threshold: t.threshold,
                })
                .collect(),
            count: e.count,
            event_id: e.event_id,
            fingerprint: &e.fingerprint,
            first_seen_ms: e.first_seen_ms,
            key,
            kind: "spam_event",
            last_seen_ms: e.last_seen_ms,
            sample_users: &e.sample_users,
            spam: e.spam,
            state: state_name(e.state),
            stream: stream(e.platform, &e.stream_id),
            text: &e.text,
            unique_users: e.unique_users,
            version: e.version,
        }),
        Some(Kind::Decision(d)) => View::Decision(DecisionOut {
            at_ms: d.at_ms,
            flag_threshold: d.flag_threshold,
            key,
            kind: "decision",
            messages_seen: d.messages_seen,
            slow_mode_inferred: d.slow_mode_inferred,
            slow_mode_s: d.slow_mode_s,
            stream: stream(d.platform, &d.stream_id),
            suspicion: d.suspicion,
            triggers: d
                .triggers
                .iter()
                .map(|t| TriggerOut {
                    contribution: t.contribution,
                    count: t.count,
                    detail: &t.detail,
                    name: &t.name,
                    norm: t.norm,
                    observed: t.observed,
                    threshold: t.threshold,
                })
                .collect(),
            user: if d.user_login.is_empty() {
                &d.user_id
            } else {
                &d.user_login
            },
            user_id: &d.user_id,
        }),
        Some(Kind::MessageScore(s)) => View::Score(ScoreOut {
            key,
            kind: "message_score",
            message_id: &s.message_id,
            score: s.score,
            spam_event_class: if s.spam_event_id == 0 {
                ""
            } else {
                crate::classes::class_name(s.spam_event_class())
            },
            spam_event_id: s.spam_event_id,
            stream: stream(s.platform, &s.stream_id),
            ts_ms: s.ts_ms,
            user: &s.user_login,
        }),
        Some(Kind::Action(a)) => View::Action(ActionOut {
            action: &a.action,
            at_ms: a.at_ms,
            by: &a.by,
            detail: &a.detail,
            evidence: &a.evidence,
            key,
            kind: "action",
            message_id: &a.message_id,
            nuke_id: a.nuke_id,
            record_id: a.record_id,
            spam_event_id: a.spam_event_id,
            status: &a.status,
            stream: stream(a.platform, &a.stream_id),
            timeout_s: a.timeout_s,
            undoes: a.undoes,
            user: &a.user_login,
            user_id: &a.user_id,
        }),
        Some(Kind::NukeSuggestion(n)) => View::NukeSuggestion(NukeSuggestionOut {
            at_ms: n.at_ms,
            by: &n.by,
            class: crate::classes::class_name(n.class()),
            key,
            kind: "nuke_suggestion",
            spam_event_id: n.spam_event_id,
            stream: stream(n.platform, &n.stream_id),
            text: &n.text,
            users: n.users,
        }),
        Some(Kind::CommandResult(c)) => View::Command(CommandOut {
            at_ms: c.at_ms,
            command_id: &c.command_id,
            error: &c.error,
            key,
            kind: "command_result",
            messages: c.messages,
            nuke_id: c.nuke_id,
            ok: c.ok,
            stream: stream(c.platform, &c.stream_id),
            users: c.users,
        }),
        None => View::Unknown(UnknownOut {
            key,
            kind: "unknown",
        }),
    }
}

/// `o` as a JSON object.
pub fn to_json(o: &DetectorOutput) -> Value {
    // Plain structs of strings, numbers and lists: nothing in them can fail
    // to become a value.
    serde_json::to_value(view(o)).unwrap_or(Value::Null)
}

/// Writes `o` as one JSON object, the same bytes as serialising
/// [`to_json`]'s value, without building that value.
pub fn write_json(w: &mut impl std::io::Write, o: &DetectorOutput) -> serde_json::Result<()> {
    serde_json::to_writer(w, &view(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct writer gives the bytes of the value, on every output a
    /// replay of both bundled logs gives (with scores), and on an unknown
    /// one.
    #[test]
    fn write_json_matches_to_json_byte_for_byte() {
        use std::sync::Arc;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../testdata");
        let files = spamscope_chat::replay::read_files(&[
            root.join("twitch/xqcow-2019-09-15.irc"),
            root.join("youtube/chilledcow-2020-11.chat-downloader.json"),
        ])
        .unwrap_or_default();
        let events = spamscope_chat::replay::merge(files);
        assert!(events.len() > 6_000);
        let mut d = crate::Detector::new(Arc::new(crate::ScoreModel::bundled())).with_scores(true);
        let mut outs = Vec::new();
        for ev in &events {
            d.handle(ev, &mut outs);
        }
        outs.push(DetectorOutput { kind: None });
        let kinds: std::collections::BTreeSet<&str> = outs
            .iter()
            .map(|o| match o.kind {
                Some(Kind::SpamEvent(_)) => "spam_event",
                Some(Kind::Decision(_)) => "decision",
                Some(Kind::MessageScore(_)) => "message_score",
                Some(_) => "other",
                None => "none",
            })
            .collect();
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        for o in &outs {
            let mut direct = Vec::new();
            write_json(&mut direct, o).unwrap_or_default();
            let via_value = serde_json::to_vec(&to_json(o)).unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&via_value)
            );
        }
    }
}
