//! Detector parameters: the one place where defaults live.
//!
//! Params are layered defaults → channel → stream. A layer is a JSON object
//! holding only the keys it changes; layering merges key by key and then
//! validates, so an error names the key (`unknown key "max_lenght"`,
//! `similarity_threshold must be in (0, 1]`).

use std::sync::Arc;

use regex::{RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Every tunable of the detector, with its default. Times are milliseconds
/// of event time, lengths are graphemes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorParams {
    // ---- exemptions: users who cannot be spammers in practice ----
    /// Moderators are never flagged.
    pub exempt_moderators: bool,
    /// The broadcaster / channel owner and platform staff are never flagged.
    pub exempt_broadcaster: bool,
    /// VIPs are never flagged.
    pub exempt_vips: bool,
    /// Verified users (YouTube check mark, Twitch partner) are never flagged.
    pub exempt_verified: bool,
    /// Users who paid in this stream (super chat, sticker, bits, subs, gifts,
    /// membership) are never flagged.
    pub exempt_supporters: bool,
    /// Members / subscribers with at least `member_exempt_min_months` are
    /// never flagged. On the xqcow log 12 of the 25 users moderators acted on
    /// were subscribers, most of them new: a badge alone is not trust.
    pub exempt_members: bool,
    pub member_exempt_min_months: u32,

    // ---- suspicion triggers (a threshold of 0 disables the trigger) ----
    /// Flag after this many of the user's messages were deleted by moderators.
    pub max_deleted_messages: u32,
    /// Flag users that moderators timed out, banned or removed.
    pub moderator_actions: bool,
    /// Flag when the average message length reaches this many graphemes...
    pub max_avg_length: u32,
    /// ...over at least this many messages.
    pub min_messages_for_length: u32,
    /// Flag when the average delay between the user's messages is below
    /// this (macro spam)...
    pub min_avg_delay_ms: u64,
    /// ...over at least this many messages.
    pub min_messages_for_delay: u32,
    /// With slow mode on (announced or inferred) the delay threshold becomes
    /// at least `slow_mode × slow_mode_factor`: users posting as fast as
    /// slow mode lets them.
    pub slow_mode_factor: f64,
    /// Flag when this many of the user's messages are similar to each other.
    pub max_similar_messages: u32,
    /// Flag when this many of the user's messages belong to spam events...
    pub max_spam_event_messages: u32,
    /// ...counting only messages of at least this many graphemes (saying
    /// "lol" with the crowd is not suspicious; pasting a copypasta is).
    pub spam_trigger_min_graphemes: u32,
    /// Flag when one message repeats a unit this many times (its length over
    /// the length of its normalised form, where repeats are compressed):
    /// emoji floods, emote walls...
    pub max_repetition: f64,
    /// ...for messages of at least this many graphemes.
    pub repetition_min_graphemes: u32,
    /// Case-insensitive regular expressions matched against the normalised
    /// message text.
    pub blacklist: Vec<String>,
    /// Case-insensitive regular expressions matched against the normalised
    /// user name (login and display name).
    pub name_blacklist: Vec<String>,

    // ---- similarity and spam events ----
    /// Estimated Jaccard similarity (character 3-grams of the normalised
    /// text) from which two messages count as the same spam.
    pub similarity_threshold: f64,
    /// A group of similar messages becomes a spam event with this many
    /// distinct users...
    pub spam_min_users: u32,
    /// ...and this many messages.
    pub spam_min_count: u32,
    /// A spam event ends after this long without a new message.
    pub spam_quiet_ms: u64,
    /// Spam event updates are emitted on this tick of event time.
    pub tick_ms: u64,
    /// Weight of spam-event membership in the message score.
    pub score_event_weight: f64,

    // ---- bounded state ----
    /// Users tracked per stream; the least recently seen are evicted beyond.
    pub max_users: u32,
    /// A user idle for this long is forgotten (flags are reported first).
    pub user_idle_ms: u64,
    /// Groups of similar messages tracked per stream.
    pub max_clusters: u32,
    /// A group (or ended spam event) idle for this long is forgotten.
    pub cluster_idle_ms: u64,
    /// Recent message ids remembered per stream to attribute deletions
    /// that do not name the author (YouTube).
    pub max_tracked_message_ids: u32,
}

impl Default for DetectorParams {
    fn default() -> Self {
        Self {
            exempt_moderators: true,
            exempt_broadcaster: true,
            exempt_vips: true,
            exempt_verified: true,
            exempt_supporters: true,
            exempt_members: true,
            member_exempt_min_months: 6,
            max_deleted_messages: 1,
            moderator_actions: true,
            max_avg_length: 150,
            min_messages_for_length: 1,
            min_avg_delay_ms: 1_500,
            min_messages_for_delay: 4,
            slow_mode_factor: 1.2,
            max_similar_messages: 8,
            max_spam_event_messages: 3,
            spam_trigger_min_graphemes: 20,
            max_repetition: 4.0,
            repetition_min_graphemes: 8,
            blacklist: Vec::new(),
            name_blacklist: Vec::new(),
            similarity_threshold: 0.5,
            spam_min_users: 3,
            spam_min_count: 5,
            spam_quiet_ms: 60_000,
            tick_ms: 10_000,
            score_event_weight: 0.6,
            max_users: 50_000,
            user_idle_ms: 30 * 60_000,
            max_clusters: 5_000,
            cluster_idle_ms: 5 * 60_000,
            max_tracked_message_ids: 20_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    #[error("params: {0} is not a JSON object")]
    NotAnObject(String),
    #[error("params: unknown key {0:?}")]
    UnknownKey(String),
    #[error("params: key {key:?}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: &str, reason: impl Into<String>) -> ParamsError {
    ParamsError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

impl DetectorParams {
    /// Defaults overridden by each layer in turn (channel, then stream).
    pub fn layered(layers: &[&Value]) -> Result<Self, ParamsError> {
        let defaults = serde_json::to_value(Self::default())
            .map_err(|e| ParamsError::NotAnObject(e.to_string()))?;
        let Value::Object(mut merged) = defaults else {
            return Err(ParamsError::NotAnObject("defaults".into()));
        };
        for layer in layers {
            match layer {
                Value::Null => {}
                Value::Object(o) => merge(&mut merged, o)?,
                other => return Err(ParamsError::NotAnObject(other.to_string())),
            }
        }
        let params: Self = serde_json::from_value(Value::Object(merged.clone())).map_err(|e| {
            // Name the key serde choked on: find the first key whose value
            // alone does not deserialise.
            let key = merged
                .iter()
                .find(|(k, v)| {
                    let mut one = Map::new();
                    one.insert((*k).clone(), (*v).clone());
                    serde_json::from_value::<Self>(Value::Object(one)).is_err()
                })
                .map_or_else(|| "?".to_owned(), |(k, _)| k.clone());
            invalid(&key, e.to_string())
        })?;
        params.validate()?;
        Ok(params)
    }

    /// Checks ranges; the error names the key.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if !(self.similarity_threshold > 0.0 && self.similarity_threshold <= 1.0) {
            return Err(invalid("similarity_threshold", "must be in (0, 1]"));
        }
        if !(1_000..=600_000).contains(&self.tick_ms) {
            return Err(invalid("tick_ms", "must be between 1000 and 600000"));
        }
        if !(self.slow_mode_factor.is_finite() && self.slow_mode_factor >= 0.0) {
            return Err(invalid("slow_mode_factor", "must be finite and >= 0"));
        }
        if !(self.max_repetition.is_finite() && self.max_repetition >= 0.0) {
            return Err(invalid("max_repetition", "must be finite and >= 0"));
        }
        if !(0.0..=1.0).contains(&self.score_event_weight) {
            return Err(invalid("score_event_weight", "must be in [0, 1]"));
        }
        if self.spam_min_users == 0 {
            return Err(invalid("spam_min_users", "must be at least 1"));
        }
        if self.spam_quiet_ms < self.tick_ms {
            return Err(invalid("spam_quiet_ms", "must be at least tick_ms"));
        }
        for (name, v, max) in [
            ("max_users", self.max_users, 10_000_000),
            ("max_clusters", self.max_clusters, 1_000_000),
            (
                "max_tracked_message_ids",
                self.max_tracked_message_ids,
                10_000_000,
            ),
        ] {
            if v == 0 || v > max {
                return Err(invalid(name, format!("must be between 1 and {max}")));
            }
        }
        compile_set("blacklist", &self.blacklist)?;
        compile_set("name_blacklist", &self.name_blacklist)?;
        Ok(())
    }
}

fn merge(into: &mut Map<String, Value>, layer: &Map<String, Value>) -> Result<(), ParamsError> {
    for (k, v) in layer {
        if !into.contains_key(k) {
            return Err(ParamsError::UnknownKey(k.clone()));
        }
        into.insert(k.clone(), v.clone());
    }
    Ok(())
}

fn compile_set(key: &str, patterns: &[String]) -> Result<RegexSet, ParamsError> {
    RegexSetBuilder::new(patterns)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| invalid(key, e.to_string()))
}

/// Params with their regular expressions compiled, shared by the stream
/// detectors that use them.
#[derive(Debug)]
pub struct CompiledParams {
    pub params: DetectorParams,
    pub blacklist: RegexSet,
    pub name_blacklist: RegexSet,
}

impl CompiledParams {
    pub fn new(params: DetectorParams) -> Result<Arc<Self>, ParamsError> {
        params.validate()?;
        Ok(Arc::new(Self {
            blacklist: compile_set("blacklist", &params.blacklist)?,
            name_blacklist: compile_set("name_blacklist", &params.name_blacklist)?,
            params,
        }))
    }

    pub fn defaults() -> Arc<Self> {
        #[allow(clippy::expect_used)] // the defaults are validated by a unit test
        Self::new(DetectorParams::default()).expect("default params are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_valid() {
        DetectorParams::default().validate().unwrap();
        let _ = CompiledParams::defaults();
    }

    #[test]
    fn layers_override_in_order() {
        let channel = json!({"max_avg_length": 100, "tick_ms": 5000});
        let stream = json!({"max_avg_length": 80});
        let p = DetectorParams::layered(&[&channel, &stream]).unwrap();
        assert_eq!(p.max_avg_length, 80);
        assert_eq!(p.tick_ms, 5000);
        assert_eq!(p.spam_min_users, DetectorParams::default().spam_min_users);
    }

    #[test]
    fn errors_name_the_key() {
        let e = DetectorParams::layered(&[&json!({"max_lenght": 1})]).unwrap_err();
        assert!(e.to_string().contains("max_lenght"), "{e}");
        let e = DetectorParams::layered(&[&json!({"similarity_threshold": 2.0})]).unwrap_err();
        assert!(e.to_string().contains("similarity_threshold"), "{e}");
        let e = DetectorParams::layered(&[&json!({"tick_ms": "fast"})]).unwrap_err();
        assert!(e.to_string().contains("tick_ms"), "{e}");
        let e = DetectorParams::layered(&[&json!({"blacklist": ["(unclosed"]})]).unwrap_err();
        assert!(e.to_string().contains("blacklist"), "{e}");
        assert!(DetectorParams::layered(&[&json!([1])]).is_err());
    }
}
