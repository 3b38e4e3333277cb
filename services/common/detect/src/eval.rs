//! Evaluation on real data.
//!
//! - [`run_recording`] and [`score`]: which users the detector flags
//!   compared with the users moderators acted on (timed out, banned,
//!   removed, or whose messages they deleted), each recording replayed on
//!   its own, with flags per 1,000 chatters and, given a labels file
//!   ([`Label`]), recall for spam-like categories and the rest apart. The
//!   detector runs with the moderation triggers off, so it is scored on
//!   what it finds by itself, not on echoing the moderators.
//! - [`classification`]: precision, recall, F1, accuracy and PR-AUC of
//!   message scores against labels.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use spamscope_proto::StreamKey;
use spamscope_proto::v1::{
    ChatEvent, DetectorOutput, Platform, SpamEventState, chat_event::Kind, detector_output,
};

use crate::stream::user_key;
use crate::{Detector, ParamsError, ScoreModel};

/// A flagged user, with when.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Flag {
    pub stream: String,
    pub user: String,
    pub at_ms: i64,
    pub triggers: Vec<String>,
}

/// Categories of moderator action that are spam-like (NormVio's labels).
pub const SPAM_LIKE_CATEGORIES: [&str; 3] = ["Excessive & Repetitive", "Advertisements", "Begging"];

/// One moderated user of a labels file (`labels.json` of normvio-dev: an
/// array of these).
#[derive(Debug, Clone, serde::Deserialize, Serialize, PartialEq)]
pub struct Label {
    pub channel: String,
    pub user: String,
    /// The annotators' category of why the user was moderated.
    pub label: String,
    /// Spam-like category; derived from `label` when absent.
    #[serde(default)]
    pub spammy: Option<bool>,
    #[serde(default)]
    pub action: String,
    pub action_ms: i64,
    /// The log the action is in (`<channel>-<date>.irc`).
    pub file: String,
}

impl Label {
    pub fn spam_like(&self) -> bool {
        self.spammy
            .unwrap_or_else(|| SPAM_LIKE_CATEGORIES.contains(&self.label.as_str()))
    }
}

/// Parses a labels file (a JSON array of [`Label`]).
pub fn parse_labels(text: &str) -> Result<Vec<Label>, serde_json::Error> {
    serde_json::from_str(text)
}

/// Whom the moderators acted on in one recording, and when first.
#[derive(Debug, Clone, PartialEq)]
pub struct Moderated {
    pub name: String,
    pub first_action_ms: i64,
    /// The labelled category, when a labels file names the user.
    pub category: Option<String>,
    pub spam_like: bool,
}

/// (stream key, user key) → the moderators' action on that user.
pub type Truth = HashMap<(String, u64), Moderated>;

/// Users moderators acted on in the events, with the first time, and the
/// number of deletions whose author is unknown.
pub fn moderated_users(events: &[ChatEvent]) -> (Truth, usize) {
    let mut authors: HashMap<String, (u64, String)> = HashMap::new();
    let mut acted: Truth = HashMap::new();
    let mut unattributed = 0;
    for ev in events {
        let stream = ev.stream_key();
        let mut act = |key: u64, name: &str, ts: i64| {
            let e = acted
                .entry((stream.clone(), key))
                .or_insert_with(|| Moderated {
                    name: name.to_owned(),
                    first_action_ms: ts,
                    category: None,
                    spam_like: false,
                });
            e.first_action_ms = e.first_action_ms.min(ts);
        };
        match &ev.kind {
            Some(Kind::Message(m)) => {
                let a = m.author.clone().unwrap_or_default();
                let key = user_key(ev.platform(), &a.user_id, &a.login);
                authors.insert(ev.event_id.clone(), (key, a.login));
            }
            // Only a moderator's deletion is a moderator action.
            Some(Kind::MessageDeleted(d)) if d.by_author => {}
            Some(Kind::MessageDeleted(d)) => {
                if !d.user_login.is_empty() {
                    act(
                        user_key(ev.platform(), &d.user_id, &d.user_login),
                        &d.user_login,
                        ev.ts_ms,
                    );
                } else if let Some((key, name)) = authors.get(&d.target_message_id) {
                    act(*key, &name.clone(), ev.ts_ms);
                } else {
                    unattributed += 1;
                }
            }
            Some(Kind::UserTimedOut(t)) => act(
                user_key(ev.platform(), &t.user_id, &t.user_login),
                &t.user_login,
                ev.ts_ms,
            ),
            Some(Kind::UserBanned(b)) => act(
                user_key(ev.platform(), &b.user_id, &b.user_login),
                &b.user_login,
                ev.ts_ms,
            ),
            Some(Kind::UserMessagesRemoved(r)) => act(
                user_key(ev.platform(), &r.user_id, ""),
                &r.user_id,
                ev.ts_ms,
            ),
            _ => {}
        }
    }
    (acted, unattributed)
}

/// Adds the labels of one recording (file name `file`, with or without
/// `.gz`) to what its log says: labels give the category and the time of
/// the action, and name moderated users the log lost.
pub fn apply_labels(truth: &mut Truth, labels: &[Label], file: &str) {
    let file = file.strip_suffix(".gz").unwrap_or(file);
    for l in labels.iter().filter(|l| l.file == file) {
        let key = (
            StreamKey::format(Platform::Twitch, &l.channel.to_lowercase()),
            user_key(Platform::Twitch, "", &l.user.to_lowercase()),
        );
        let e = truth.entry(key).or_insert_with(|| Moderated {
            name: l.user.clone(),
            first_action_ms: l.action_ms,
            category: None,
            spam_like: false,
        });
        e.first_action_ms = e.first_action_ms.min(l.action_ms);
        e.category = Some(l.label.clone());
        e.spam_like = l.spam_like();
    }
}

/// Params that switch off every trigger fed by moderator actions.
pub fn predictive_params() -> serde_json::Value {
    json!({"moderator_actions": false, "max_deleted_messages": 0})
}

/// What the detector did over one recording.
#[derive(Debug, Clone, Default)]
pub struct RecordingRun {
    pub name: String,
    /// (stream key, user key) → the user's first flag.
    pub flags: BTreeMap<(String, u64), Flag>,
    /// Distinct authors of messages (per stream).
    pub chatters: usize,
    /// Spam events (final states) by class.
    pub spam_events: BTreeMap<String, usize>,
    pub truth: Truth,
    pub unattributed_deletions: usize,
}

/// Runs the detector over one recording's `events` (timestamp-ordered,
/// with stream ends) with `params` layered on the defaults.
pub fn run_recording(
    name: &str,
    events: &[ChatEvent],
    params: serde_json::Value,
    model: Arc<ScoreModel>,
) -> Result<RecordingRun, ParamsError> {
    let (truth, unattributed) = moderated_users(events);
    let mut d = Detector::new(model);
    let mut out: Vec<DetectorOutput> = Vec::new();
    d.set_default_params(params, &mut out)?;
    let mut run = RecordingRun {
        name: name.to_owned(),
        truth,
        unattributed_deletions: unattributed,
        ..RecordingRun::default()
    };
    let mut chatters: HashSet<(String, u64)> = HashSet::new();
    for ev in events {
        out.clear();
        if let Some(Kind::Message(m)) = &ev.kind {
            let a = m.author.clone().unwrap_or_default();
            chatters.insert((
                ev.stream_key(),
                user_key(ev.platform(), &a.user_id, &a.login),
            ));
        }
        d.handle(ev, &mut out);
        for o in &out {
            match &o.kind {
                Some(detector_output::Kind::Decision(dec)) => {
                    let stream = StreamKey::format(Platform::of(dec.platform), &dec.stream_id);
                    let key = user_key(ev.platform(), &dec.user_id, &dec.user_login);
                    run.flags
                        .entry((stream.clone(), key))
                        .or_insert_with(|| Flag {
                            stream,
                            user: if dec.user_login.is_empty() {
                                dec.user_id.clone()
                            } else {
                                dec.user_login.clone()
                            },
                            at_ms: dec.at_ms,
                            triggers: dec.triggers.iter().map(|t| t.name.clone()).collect(),
                        });
                }
                Some(detector_output::Kind::SpamEvent(e))
                    if e.state == SpamEventState::Ended as i32 =>
                {
                    *run.spam_events
                        .entry(crate::classes::class_name(e.class()).to_owned())
                        .or_default() += 1;
                }
                _ => {}
            }
        }
    }
    run.chatters = chatters.len();
    Ok(run)
}

/// Recall and lead time over one group of moderated users.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupReport {
    pub moderated_users: usize,
    pub caught: usize,
    pub recall: f64,
    /// Median of (moderator action time − flag time) over the caught,
    /// seconds; positive when the detector was first.
    pub lead_time_median_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModerationReport {
    pub recordings: usize,
    /// Distinct chatters, counted per recording and stream.
    pub chatters: usize,
    pub moderated_users: usize,
    pub flagged_users: usize,
    pub flags_per_1000_chatters: f64,
    pub true_positives: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Median of (moderator action time − flag time) over true positives,
    /// seconds; positive when the detector was first.
    pub lead_time_median_s: Option<f64>,
    /// Moderated users of spam-like categories (with labels; otherwise
    /// every moderated user counts here; with labels, a moderated user no
    /// label names is in neither group).
    pub spam_like: GroupReport,
    /// Moderated users of other categories (harassment, ...), with labels.
    pub other: Option<GroupReport>,
    /// Flagged users no moderator acted on.
    pub unacted_flags: Vec<Flag>,
    /// Moderated users the detector missed.
    pub missed: Vec<String>,
    /// Deletions whose author is unknown (the message predates the log).
    pub unattributed_deletions: usize,
    /// Spam events (final states) the runs produced, by class.
    pub spam_events: BTreeMap<String, usize>,
    /// Flags by their strongest evidence: (flagged, moderated among them).
    pub by_trigger: BTreeMap<String, (usize, usize)>,
}

/// Scores the runs' flags against the moderators' actions. `labelled`:
/// the truth carries categories, so spam-like and other categories are
/// reported apart.
pub fn score(runs: &[RecordingRun], labelled: bool) -> ModerationReport {
    let mut r = ModerationReport {
        recordings: runs.len(),
        chatters: 0,
        moderated_users: 0,
        flagged_users: 0,
        flags_per_1000_chatters: 0.0,
        true_positives: 0,
        precision: 0.0,
        recall: 0.0,
        f1: 0.0,
        lead_time_median_s: None,
        spam_like: group(&[]),
        other: None,
        unacted_flags: Vec::new(),
        missed: Vec::new(),
        unattributed_deletions: 0,
        spam_events: BTreeMap::new(),
        by_trigger: BTreeMap::new(),
    };
    let mut all_leads = Vec::new();
    // (caught, lead) per moderated user of each group.
    let mut spam_like: Vec<Option<f64>> = Vec::new();
    let mut other: Vec<Option<f64>> = Vec::new();
    for run in runs {
        r.chatters += run.chatters;
        r.flagged_users += run.flags.len();
        r.moderated_users += run.truth.len();
        r.unattributed_deletions += run.unattributed_deletions;
        for (class, n) in &run.spam_events {
            *r.spam_events.entry(class.clone()).or_default() += n;
        }
        for (k, f) in &run.flags {
            let first = f.triggers.first().cloned().unwrap_or_default();
            let t = r.by_trigger.entry(first).or_default();
            t.0 += 1;
            t.1 += usize::from(run.truth.contains_key(k));
            match run.truth.get(k) {
                Some(m) => {
                    r.true_positives += 1;
                    all_leads.push((m.first_action_ms - f.at_ms) as f64 / 1000.0);
                }
                None => r.unacted_flags.push(f.clone()),
            }
        }
        let mut missed: Vec<String> = Vec::new();
        for (k, m) in &run.truth {
            let lead = run
                .flags
                .get(k)
                .map(|f| (m.first_action_ms - f.at_ms) as f64 / 1000.0);
            if lead.is_none() {
                missed.push(m.name.clone());
            }
            // With labels, users no label names are in neither group.
            if !labelled || (m.spam_like && m.category.is_some()) {
                spam_like.push(lead);
            } else if m.category.is_some() {
                other.push(lead);
            }
        }
        missed.sort();
        r.missed.extend(missed);
    }
    r.precision = ratio(r.true_positives, r.flagged_users);
    r.recall = ratio(r.true_positives, r.moderated_users);
    r.f1 = f1(r.precision, r.recall);
    r.flags_per_1000_chatters = 1000.0 * ratio(r.flagged_users, r.chatters);
    r.lead_time_median_s = median(&mut all_leads);
    r.spam_like = group(&spam_like);
    if labelled {
        r.other = Some(group(&other));
    }
    r
}

fn group(leads: &[Option<f64>]) -> GroupReport {
    let mut caught: Vec<f64> = leads.iter().flatten().copied().collect();
    GroupReport {
        moderated_users: leads.len(),
        caught: caught.len(),
        recall: ratio(caught.len(), leads.len()),
        lead_time_median_s: median(&mut caught),
    }
}

/// Runs the detector over `events` (one recording) and scores its flags
/// against the moderators' actions in it.
pub fn moderation(
    events: &[ChatEvent],
    params: serde_json::Value,
    model: Arc<ScoreModel>,
) -> Result<ModerationReport, ParamsError> {
    let run = run_recording("", events, params, model)?;
    Ok(score(&[run], false))
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassificationReport {
    pub rows: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub accuracy: f64,
    /// Area under the precision-recall curve (average precision).
    pub pr_auc: f64,
}

/// Scores against labels at `threshold`.
pub fn classification(scored: &[(f64, bool)], threshold: f64) -> ClassificationReport {
    let (mut tp, mut fp, mut tn, mut fneg) = (0usize, 0usize, 0usize, 0usize);
    for &(s, y) in scored {
        match (s >= threshold, y) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => fneg += 1,
        }
    }
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fneg);
    ClassificationReport {
        rows: scored.len(),
        precision,
        recall,
        f1: f1(precision, recall),
        accuracy: ratio(tp + tn, scored.len()),
        pr_auc: average_precision(scored),
    }
}

/// Average precision: mean of the precision at each positive, ranked by
/// score (ties broken pessimistically: negatives first).
pub fn average_precision(scored: &[(f64, bool)]) -> f64 {
    let positives = scored.iter().filter(|(_, y)| *y).count();
    if positives == 0 {
        return 0.0;
    }
    let mut v: Vec<(f64, bool)> = scored.to_vec();
    v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let (mut hits, mut sum) = (0usize, 0.0);
    for (i, (_, y)) in v.iter().enumerate() {
        if *y {
            hits += 1;
            sum += hits as f64 / (i + 1) as f64;
        }
    }
    sum / positives as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics() {
        let r = classification(&[(0.9, true), (0.8, false), (0.2, true), (0.1, false)], 0.5);
        assert_eq!((r.precision, r.recall, r.accuracy), (0.5, 0.5, 0.5));
        assert!((average_precision(&[(0.9, true), (0.1, false)]) - 1.0).abs() < 1e-9);
        assert!((average_precision(&[(0.9, false), (0.1, true)]) - 0.5).abs() < 1e-9);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut []), None);
    }

    /// Only a moderator's deletion makes a moderated user: the author's own
    /// retraction of a message does not.
    #[test]
    fn retractions_are_not_moderation() {
        use spamscope_proto::v1::{Author, ChatMessage, MessageDeleted, chat_event::Kind};
        let ev = |id: &str, ts: i64, kind: Kind| ChatEvent {
            platform: spamscope_proto::v1::Platform::Youtube as i32,
            stream_id: "v".into(),
            event_id: id.into(),
            ts_ms: ts,
            kind: Some(kind),
            ..ChatEvent::default()
        };
        let said = |id: &str, user: &str| {
            ev(
                id,
                1,
                Kind::Message(ChatMessage {
                    author: Some(Author {
                        user_id: user.into(),
                        login: user.into(),
                        ..Author::default()
                    }),
                    text: "hi".into(),
                    ..ChatMessage::default()
                }),
            )
        };
        let deleted = |id: &str, target: &str, by_author: bool| {
            ev(
                id,
                2,
                Kind::MessageDeleted(MessageDeleted {
                    target_message_id: target.into(),
                    by_author,
                    ..MessageDeleted::default()
                }),
            )
        };
        let events = [
            said("m1", "UCa"),
            said("m2", "UCb"),
            deleted("d1", "m1", true),
            deleted("d2", "m2", false),
        ];
        let (truth, unattributed) = moderated_users(&events);
        let names: Vec<&str> = truth.values().map(|m| m.name.as_str()).collect();
        assert_eq!((names, unattributed), (vec!["UCb"], 0));
    }
}
