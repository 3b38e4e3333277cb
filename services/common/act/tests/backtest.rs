//! Backtests on the bundled real chat (#xqcow, 2019-09-15, with its
//! moderators' timeouts, bans and deletions).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use spamscope_act::Policies;
use spamscope_act::backtest::{self, BacktestReport};
use spamscope_detect::ScoreModel;
use spamscope_detect::eval::predictive_params;
use spamscope_proto::v1::{ChatEvent, chat_event::Kind};

fn xqcow() -> Vec<ChatEvent> {
    let files = spamscope_chat::replay::read_files(&[spamscope_testkit::xqcow()]).unwrap();
    spamscope_chat::replay::merge(files)
}

fn run(events: &[ChatEvent], policy: &str) -> BacktestReport {
    let truth = backtest::truth_of(events);
    let rec = vec![("xqcow".to_owned(), events.to_vec(), truth)];
    backtest::run(
        &rec,
        &Policies::from_toml(policy).unwrap(),
        predictive_params(),
        Arc::new(ScoreModel::bundled()),
    )
    .unwrap()
}

const ALL_AUTO: &str = r#"
[defaults]
dry_run = false
flagged_users = "auto"
copypasta = "auto"
bot_wave = "auto"
link_promo = "auto"
flood = "auto"
"#;

/// Logins with a moderator, broadcaster or VIP badge in the log, and
/// logins the moderators acted on, counted from the events directly.
fn roles_and_moderated(events: &[ChatEvent]) -> (BTreeSet<String>, BTreeSet<String>, usize) {
    let mut privileged = BTreeSet::new();
    let mut moderated = BTreeSet::new();
    let mut chatters = BTreeSet::new();
    let mut authors: HashMap<&str, String> = HashMap::new();
    for ev in events {
        match &ev.kind {
            Some(Kind::Message(m)) => {
                let a = m.author.as_ref().unwrap();
                let r = a.roles.unwrap_or_default();
                if r.moderator || r.broadcaster || r.vip || r.staff {
                    privileged.insert(a.login.to_lowercase());
                }
                chatters.insert(a.login.to_lowercase());
                authors.insert(&ev.event_id, a.login.to_lowercase());
            }
            Some(Kind::UserTimedOut(t)) => {
                moderated.insert(t.user_login.to_lowercase());
            }
            Some(Kind::UserBanned(b)) => {
                moderated.insert(b.user_login.to_lowercase());
            }
            Some(Kind::MessageDeleted(d)) if !d.by_author => {
                if !d.user_login.is_empty() {
                    moderated.insert(d.user_login.to_lowercase());
                } else if let Some(a) = authors.get(d.target_message_id.as_str()) {
                    moderated.insert(a.clone());
                }
            }
            _ => {}
        }
    }
    (privileged, moderated, chatters.len())
}

#[test]
fn acting_on_everything_stays_dry_spares_the_privileged_and_agrees_with_the_moderators() {
    let events = xqcow();
    let (privileged, moderated, chatters) = roles_and_moderated(&events);
    assert!(!privileged.is_empty(), "the log has moderators");
    let r = run(&events, ALL_AUTO);
    assert_eq!(r.chatters, chatters);
    assert_eq!(r.moderated_users, moderated.len());
    // Even with `dry_run = false`, a backtest only reports.
    assert!(
        r.examples.iter().all(|e| e.status.name() == "dry_run"),
        "{:?}",
        r.examples
    );
    for e in &r.examples {
        assert!(!privileged.contains(&e.action.target.user_login.to_lowercase()));
    }
    // Few users, most of them moderated too (measured 4 users, all 4
    // moderated, on 1,208 chatters).
    assert!(
        r.auto.users >= 3 && r.auto.users_per_1000_chatters <= 6.0,
        "{:?}",
        r.auto
    );
    assert!(r.auto.agreement >= 0.75, "{:?}", r.auto);
    assert_eq!(r.auto, r.if_accepted, "nothing is only suggested");
    // Every user counted as moderated really was, by the log's own count.
    let flagged = r.rules["flagged_users"].users_moderated;
    assert!(flagged <= moderated.len());
}

#[test]
fn the_default_policy_only_suggests() {
    let events = xqcow();
    let r = run(&events, "");
    assert_eq!(r.auto.actions, 0, "{:?}", r.auto);
    assert!(r.users_suggested >= 3, "{r:?}");
    assert!(r.if_accepted.users >= r.users_suggested);
    assert!(
        r.rules.values().all(|x| x.mode == "suggest"),
        "{:?}",
        r.rules
    );
}

#[test]
fn an_allowed_user_is_spared_and_counted() {
    let events = xqcow();
    let all = run(&events, ALL_AUTO);
    let first = all.examples[0].action.target.user_login.clone();
    let spared = run(&events, &format!("{ALL_AUTO}allow = [{first:?}]\n"));
    assert_eq!(spared.protected_users, 1, "{spared:?}");
    assert_eq!(spared.auto.users, all.auto.users - 1);
    assert!(
        spared
            .examples
            .iter()
            .all(|e| e.action.target.user_login != first)
    );
}

#[test]
fn each_recording_counts_its_own_users_as_eval_does() {
    // Two days of one channel: a user moderated on both counts twice, as
    // in `eval --moderation` (found on normvio-dev, where merging them
    // matched actions to moderators' actions of another day).
    let events = xqcow();
    let one = run(&events, ALL_AUTO);
    let truth = backtest::truth_of(&events);
    let recs = vec![
        ("day1".to_owned(), events.clone(), truth.clone()),
        ("day2".to_owned(), events.clone(), truth),
    ];
    let two = backtest::run(
        &recs,
        &Policies::from_toml(ALL_AUTO).unwrap(),
        predictive_params(),
        Arc::new(ScoreModel::bundled()),
    )
    .unwrap();
    assert_eq!(two.chatters, 2 * one.chatters);
    assert_eq!(two.moderated_users, 2 * one.moderated_users);
    assert_eq!(two.auto.users, 2 * one.auto.users);
    assert_eq!(two.auto.users_moderated, 2 * one.auto.users_moderated);
}
