//! Detector outputs as JSON objects, one per output, with a `"kind"` of
//! `"spam_event"`, `"decision"` or `"message_score"`. The CLI prints them;
//! their keys are a documented interface (README).

use serde_json::{Value, json};
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

pub fn to_json(o: &DetectorOutput) -> Value {
    let mut v = body(o);
    if let Value::Object(m) = &mut v {
        m.insert("key".into(), Value::String(crate::output_key(o)));
    }
    v
}

fn body(o: &DetectorOutput) -> Value {
    match &o.kind {
        Some(Kind::SpamEvent(e)) => json!({
            "kind": "spam_event",
            "stream": stream(e.platform, &e.stream_id),
            "event_id": e.event_id,
            "version": e.version,
            "fingerprint": e.fingerprint,
            "text": e.text,
            "count": e.count,
            "unique_users": e.unique_users,
            "first_seen_ms": e.first_seen_ms,
            "last_seen_ms": e.last_seen_ms,
            "state": state_name(e.state),
            "sample_users": e.sample_users,
            "class": crate::classes::class_name(e.class()),
            "spam": e.spam,
            "class_evidence": e.class_evidence.iter().map(|t| json!({
                "name": t.name,
                "observed": t.observed,
                "threshold": t.threshold,
                "detail": t.detail,
            })).collect::<Vec<_>>(),
        }),
        Some(Kind::Decision(d)) => json!({
            "kind": "decision",
            "stream": stream(d.platform, &d.stream_id),
            "user": if d.user_login.is_empty() { &d.user_id } else { &d.user_login },
            "user_id": d.user_id,
            "at_ms": d.at_ms,
            "messages_seen": d.messages_seen,
            "slow_mode_s": d.slow_mode_s,
            "slow_mode_inferred": d.slow_mode_inferred,
            "suspicion": d.suspicion,
            "flag_threshold": d.flag_threshold,
            "triggers": d.triggers.iter().map(|t| json!({
                "name": t.name,
                "observed": t.observed,
                "threshold": t.threshold,
                "norm": t.norm,
                "contribution": t.contribution,
                "count": t.count,
                "detail": t.detail,
            })).collect::<Vec<_>>(),
        }),
        Some(Kind::MessageScore(s)) => json!({
            "kind": "message_score",
            "stream": stream(s.platform, &s.stream_id),
            "message_id": s.message_id,
            "user": s.user_login,
            "score": s.score,
            "spam_event_id": s.spam_event_id,
            "spam_event_class": if s.spam_event_id == 0 { "" } else { crate::classes::class_name(s.spam_event_class()) },
            "ts_ms": s.ts_ms,
        }),
        None => json!({"kind": "unknown"}),
    }
}
