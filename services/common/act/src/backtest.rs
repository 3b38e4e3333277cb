//! A policy over recorded chat: what it would have done, and how that
//! compares with what the moderators did.
//!
//! Each recording is replayed on its own through the detector (with the
//! triggers fed by moderator actions off, so nothing echoes the moderators)
//! and the [`Engine`], every channel forced into dry-run. Suggestions are
//! counted twice: as offered, and as if a moderator had accepted each at
//! once (a suggested nuke is then run in dry-run), so the report shows
//! both what the policy does alone and what it leads to.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use spamscope_detect::eval::{Truth, moderated_users};
use spamscope_detect::stream::user_key;
use spamscope_detect::{Detector, ParamsError, ScoreModel};
use spamscope_proto::v1::{ChatEvent, DetectorOutput, Platform, chat_event::Kind};

use crate::action::{Record, Status};
use crate::engine::{Engine, NukeRequest, Output};
use crate::policy::Policies;

/// One rule's share of what the policy would have done.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RuleReport {
    /// `auto`, `suggest` (counted as if accepted) or `grace` (copies sent
    /// during a nuke's grace window).
    pub mode: String,
    /// Actions by kind (`delete`, `timeout`, `ban`).
    pub actions: BTreeMap<String, usize>,
    /// Distinct users acted on, and how many of them the moderators also
    /// acted on in the same recording.
    pub users: usize,
    pub users_moderated: usize,
    /// users_moderated / users.
    pub agreement: f64,
    /// Median of (the moderators' first action − ours) over the users both
    /// acted on, seconds; positive when spamscope would have been first.
    pub lead_time_median_s: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BacktestReport {
    pub recordings: usize,
    pub chatters: usize,
    /// Users the moderators timed out, banned or deleted messages of.
    pub moderated_users: usize,
    /// What happens with nobody clicking: the `auto` rules.
    pub auto: Summary,
    /// What happens if every suggestion is accepted at once.
    pub if_accepted: Summary,
    /// Suggestions offered: nukes by class, flagged users.
    pub nukes_suggested: BTreeMap<String, usize>,
    pub users_suggested: usize,
    /// Users a rule matched but who are protected (moderators, the
    /// broadcaster, VIPs, the allow list): never acted on.
    pub protected_users: usize,
    /// Actions not taken because a moderator's own timeout or ban already
    /// held the user.
    pub left_to_moderators: u64,
    /// Per rule (`flagged_users`, `copypasta`, ...).
    pub rules: BTreeMap<String, RuleReport>,
    /// The first actions, for reading.
    pub examples: Vec<Record>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub actions: usize,
    pub users: usize,
    pub users_per_1000_chatters: f64,
    pub users_moderated: usize,
    /// Share of the users acted on that the moderators acted on too.
    pub agreement: f64,
    /// Share of the moderated users it acted on.
    pub moderated_covered: f64,
}

/// Actions listed in the report.
const EXAMPLES: usize = 20;

/// The rule behind a record: `flagged_users`, a class name, or `grace`.
fn rule_of(r: &Record) -> (String, &'static str) {
    let by = r.by.rsplit(" by ").next().unwrap_or(&r.by);
    let (accepted, by) = match by.strip_prefix("backtest:") {
        Some(b) => (true, b),
        None => (false, by),
    };
    let rule = by
        .strip_prefix("policy:")
        .map(|s| s.split_whitespace().next().unwrap_or(s))
        .unwrap_or("manual")
        .to_owned();
    if r.evidence.contains("grace window") {
        return (rule, "grace");
    }
    (rule, if accepted { "suggest" } else { "auto" })
}

/// A user of one recording: (recording, stream, user key). A user of two
/// recordings (two days of one channel) counts in each, as in
/// `eval --moderation`.
type UserOf = (usize, String, u64);
/// User → the first action's time.
type FirstActions = HashMap<UserOf, i64>;

#[derive(Default)]
struct Tally {
    /// rule → (mode, kind → n, users)
    rules: BTreeMap<String, (String, BTreeMap<String, usize>, FirstActions)>,
    auto: FirstActions,
    all: FirstActions,
    auto_actions: usize,
    all_actions: usize,
    protected: HashSet<UserOf>,
    suggested_users: HashSet<UserOf>,
}

/// Runs `policies` over each recording (a name and its time-ordered
/// events, with stream ends) and compares with the moderators' actions
/// (`truth` per recording, from [`moderated_users`] and any labels).
pub fn run(
    recordings: &[(String, Vec<ChatEvent>, Truth)],
    policies: &Policies,
    params: serde_json::Value,
    model: Arc<ScoreModel>,
) -> Result<BacktestReport, ParamsError> {
    let dry = policies.clone().all_dry_run();
    let mut report = BacktestReport {
        recordings: recordings.len(),
        ..BacktestReport::default()
    };
    let mut tally = Tally::default();
    let mut truth_all: FirstActions = HashMap::new();
    let mut nukes_suggested: BTreeMap<String, usize> = BTreeMap::new();
    for (rec, (_, events, truth)) in recordings.iter().enumerate() {
        let mut d = Detector::new(Arc::clone(&model));
        let mut det_out: Vec<DetectorOutput> = Vec::new();
        d.set_default_params(params.clone(), &mut det_out)?;
        let mut engine = Engine::new(dry.clone());
        let mut out: Vec<Output> = Vec::new();
        let mut chatters: HashSet<(String, u64)> = HashSet::new();
        for ev in events {
            if let Some(Kind::Message(m)) = &ev.kind {
                let a = m.author.as_ref();
                chatters.insert((
                    ev.stream_key(),
                    user_key(
                        ev.platform(),
                        a.map_or("", |a| &a.user_id),
                        a.map_or("", |a| &a.login),
                    ),
                ));
            }
            engine.on_chat(ev, &mut out);
            det_out.clear();
            d.handle(ev, &mut det_out);
            for o in &det_out {
                engine.on_detector(o, &mut out);
            }
            let mut i = 0;
            while i < out.len() {
                if let Output::NukeSuggested(s) = &out[i] {
                    *nukes_suggested.entry(s.class.to_owned()).or_default() += 1;
                    // As if a moderator accepted it at once.
                    let req = NukeRequest {
                        stream: s.stream.clone(),
                        event_id: Some(s.event_id),
                        by: format!("backtest:{}", s.by),
                        dry_run: true,
                        min_copies: s.min_copies,
                        ..NukeRequest::default()
                    };
                    let mut more = Vec::new();
                    let _ = engine.nuke(&req, s.at_ms, &mut more);
                    out.extend(more);
                }
                i += 1;
            }
            for o in out.drain(..) {
                if let Output::Record(r) = o {
                    tally_record(&mut tally, rec, *r, &mut report.examples);
                }
            }
        }
        report.chatters += chatters.len();
        report.left_to_moderators += engine.counts().left_to_moderators;
        for ((stream, user), m) in truth {
            truth_all.insert((rec, stream.clone(), *user), m.first_action_ms);
        }
    }
    report.moderated_users = truth_all.len();
    report.nukes_suggested = nukes_suggested;
    report.users_suggested = tally.suggested_users.len();
    report.protected_users = tally.protected.len();
    let summary = |users: &FirstActions, actions: usize, chatters: usize| {
        let moderated = users.keys().filter(|k| truth_all.contains_key(*k)).count();
        Summary {
            actions,
            users: users.len(),
            users_per_1000_chatters: ratio(users.len() * 1000, chatters),
            users_moderated: moderated,
            agreement: ratio(moderated, users.len()),
            moderated_covered: ratio(moderated, truth_all.len()),
        }
    };
    report.auto = summary(&tally.auto, tally.auto_actions, report.chatters);
    report.if_accepted = summary(&tally.all, tally.all_actions, report.chatters);
    for (rule, (mode, kinds, users)) in tally.rules {
        let mut leads: Vec<f64> = users
            .iter()
            .filter_map(|(k, ours)| truth_all.get(k).map(|m| (m - ours) as f64 / 1000.0))
            .collect();
        leads.sort_by(f64::total_cmp);
        let moderated = leads.len();
        report.rules.insert(
            rule,
            RuleReport {
                mode,
                actions: kinds,
                users: users.len(),
                users_moderated: moderated,
                agreement: ratio(moderated, users.len()),
                lead_time_median_s: leads
                    .get(leads.len() / 2)
                    .copied()
                    .filter(|_| !leads.is_empty()),
            },
        );
    }
    Ok(report)
}

/// The policy at one other sensitivity, every suggestion accepted.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CurvePoint {
    pub sensitivity: f64,
    pub users: usize,
    pub users_per_1000_chatters: f64,
    pub agreement: f64,
    pub moderated_covered: f64,
    /// The harmonic mean of agreement and coverage: how well it matched
    /// the moderators, both in whom it acted on and whom it missed.
    pub f1: f64,
}

/// [`run`] again at each of `sensitivities` (the detector param).
pub fn curve(
    recordings: &[(String, Vec<ChatEvent>, Truth)],
    policies: &Policies,
    params: &serde_json::Value,
    model: &Arc<ScoreModel>,
    sensitivities: &[f64],
) -> Result<Vec<CurvePoint>, ParamsError> {
    let mut out = Vec::with_capacity(sensitivities.len());
    for s in sensitivities {
        let mut layer = params.clone();
        match &mut layer {
            serde_json::Value::Object(o) => {
                o.insert("sensitivity".into(), serde_json::json!(s));
            }
            _ => layer = serde_json::json!({ "sensitivity": s }),
        }
        let r = run(recordings, policies, layer, Arc::clone(model))?;
        let a = &r.if_accepted;
        let f1 = if a.agreement + a.moderated_covered > 0.0 {
            2.0 * a.agreement * a.moderated_covered / (a.agreement + a.moderated_covered)
        } else {
            0.0
        };
        out.push(CurvePoint {
            sensitivity: *s,
            users: a.users,
            users_per_1000_chatters: a.users_per_1000_chatters,
            agreement: a.agreement,
            moderated_covered: a.moderated_covered,
            f1,
        });
    }
    Ok(out)
}

/// The sensitivity of `curve` that matched the moderators best (highest
/// F1; the last of equals).
pub fn best(curve: &[CurvePoint]) -> Option<f64> {
    curve
        .iter()
        .max_by(|a, b| a.f1.total_cmp(&b.f1))
        .map(|c| c.sensitivity)
}

/// The report as JSON, with the curve and its best sensitivity when one
/// was asked for (what `spamscope eval --policy --json` prints and the
/// gateway's `Backtest` answers).
pub fn report_json(r: &BacktestReport, curve: &[CurvePoint]) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(o) = &mut v
        && !curve.is_empty()
    {
        o.insert(
            "curve".into(),
            serde_json::to_value(curve).unwrap_or_default(),
        );
        o.insert("best_sensitivity".into(), serde_json::json!(best(curve)));
    }
    v
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn tally_record(t: &mut Tally, rec: usize, r: Record, examples: &mut Vec<Record>) {
    let tg = &r.action.target;
    let key = (
        rec,
        r.stream.clone(),
        user_key(Platform::of(tg.platform), &tg.user_id, &tg.user_login),
    );
    match &r.status {
        Status::Protected { .. } => {
            t.protected.insert(key);
            return;
        }
        Status::Suggested => {
            t.suggested_users.insert(key.clone());
        }
        _ => {}
    }
    let (rule, mode) = rule_of(&r);
    let mode = if r.status == Status::Suggested {
        "suggest"
    } else {
        mode
    };
    let e = t
        .rules
        .entry(if mode == "grace" {
            format!("{rule} (grace)")
        } else {
            rule
        })
        .or_insert_with(|| (mode.to_owned(), BTreeMap::new(), HashMap::new()));
    *e.1.entry(r.action.kind.name().to_owned()).or_default() += 1;
    e.2.entry(key.clone()).or_insert(r.at_ms);
    t.all_actions += 1;
    t.all.entry(key.clone()).or_insert(r.at_ms);
    // A grace-window action of an accepted nuke is not an auto action.
    let auto = mode == "auto" || (mode == "grace" && !r.by.contains("backtest"));
    if auto {
        t.auto_actions += 1;
        t.auto.entry(key).or_insert(r.at_ms);
    }
    if examples.len() < EXAMPLES {
        examples.push(r);
    }
}

/// The moderators' actions of one recording, from its events.
pub fn truth_of(events: &[ChatEvent]) -> Truth {
    moderated_users(events).0
}
