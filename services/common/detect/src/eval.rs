//! Evaluation on real data.
//!
//! - [`moderation`]: which users the detector flags compared with the users
//!   moderators acted on (timed out, banned, removed, or whose messages they
//!   deleted). The detector runs with the moderation triggers off, so it is
//!   scored on what it finds by itself, not on echoing the moderators.
//! - [`classification`]: precision, recall, F1, accuracy and PR-AUC of
//!   message scores against labels.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use spamscope_proto::v1::{ChatEvent, DetectorOutput, chat_event::Kind, detector_output};

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

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModerationReport {
    pub moderated_users: usize,
    pub flagged_users: usize,
    pub true_positives: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Median of (moderator action time − flag time) over true positives,
    /// seconds; positive when the detector was first.
    pub lead_time_median_s: Option<f64>,
    /// Flagged users no moderator acted on.
    pub unacted_flags: Vec<Flag>,
    /// Moderated users the detector missed.
    pub missed: Vec<String>,
    /// Deletions whose author is unknown (the message predates the log).
    pub unattributed_deletions: usize,
    /// Spam events (final states) the run produced.
    pub spam_events: usize,
}

/// (stream key, user key) → (name, time of the first moderator action).
type Acted = HashMap<(String, u64), (String, i64)>;

/// Users moderators acted on, with the first time, and the number of
/// deletions whose author is unknown.
fn moderated_users(events: &[ChatEvent]) -> (Acted, usize) {
    let mut authors: HashMap<String, (u64, String)> = HashMap::new();
    let mut acted: Acted = HashMap::new();
    let mut unattributed = 0;
    for ev in events {
        let stream = ev.stream_key();
        let mut act = |key: u64, name: &str, ts: i64| {
            let e = acted
                .entry((stream.clone(), key))
                .or_insert_with(|| (name.to_owned(), ts));
            e.1 = e.1.min(ts);
        };
        match &ev.kind {
            Some(Kind::Message(m)) => {
                let a = m.author.clone().unwrap_or_default();
                let key = user_key(ev.platform(), &a.user_id, &a.login);
                authors.insert(ev.event_id.clone(), (key, a.login));
            }
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

/// Params that switch off every trigger fed by moderator actions.
pub fn predictive_params() -> serde_json::Value {
    json!({"moderator_actions": false, "max_deleted_messages": 0})
}

/// Runs the detector over `events` (timestamp-ordered, with stream ends)
/// with `params` layered on the defaults, and scores its flags against the
/// moderators' actions.
pub fn moderation(
    events: &[ChatEvent],
    params: serde_json::Value,
    model: Arc<ScoreModel>,
) -> Result<ModerationReport, ParamsError> {
    let (acted, unattributed) = moderated_users(events);
    let mut d = Detector::new(model);
    let mut out: Vec<DetectorOutput> = Vec::new();
    d.set_default_params(params, &mut out)?;
    let mut flags: BTreeMap<(String, u64), Flag> = BTreeMap::new();
    let mut spam_events = 0;
    for ev in events {
        out.clear();
        d.handle(ev, &mut out);
        for o in &out {
            match &o.kind {
                Some(detector_output::Kind::Decision(dec)) => {
                    let stream = format!(
                        "{}.{}",
                        spamscope_proto::v1::Platform::try_from(dec.platform)
                            .unwrap_or_default()
                            .key(),
                        dec.stream_id
                    );
                    let key = user_key(ev.platform(), &dec.user_id, &dec.user_login);
                    flags.entry((stream.clone(), key)).or_insert_with(|| Flag {
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
                    if e.state == spamscope_proto::v1::SpamEventState::Ended as i32 =>
                {
                    spam_events += 1;
                }
                _ => {}
            }
        }
    }
    let mut leads: Vec<f64> = Vec::new();
    let mut tp = 0;
    let mut unacted = Vec::new();
    for (k, f) in &flags {
        match acted.get(k) {
            Some((_, acted_at)) => {
                tp += 1;
                leads.push((acted_at - f.at_ms) as f64 / 1000.0);
            }
            None => unacted.push(f.clone()),
        }
    }
    let mut missed: Vec<String> = acted
        .iter()
        .filter(|(k, _)| !flags.contains_key(*k))
        .map(|(_, (name, _))| name.clone())
        .collect();
    missed.sort();
    let precision = ratio(tp, flags.len());
    let recall = ratio(tp, acted.len());
    Ok(ModerationReport {
        moderated_users: acted.len(),
        flagged_users: flags.len(),
        true_positives: tp,
        precision,
        recall,
        f1: f1(precision, recall),
        lead_time_median_s: median(&mut leads),
        unacted_flags: unacted,
        missed,
        unattributed_deletions: unattributed,
        spam_events,
    })
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
}
