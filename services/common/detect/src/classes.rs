//! What a spam event is: a crowd reaction (chat, not spam), a copypasta, a
//! bot wave, link or promotion spam, or a flood, decided from what the
//! detector saw of the group's messages, with the measurements behind the
//! decision as evidence.

use spamscope_proto::v1::{SpamEventClass, Trigger};

use crate::clusters::Cluster;
use crate::params::DetectorParams;
use crate::user::round3;

/// Lower-case class name as in JSON output and evaluation reports.
pub fn class_name(c: SpamEventClass) -> &'static str {
    match c {
        SpamEventClass::CrowdReaction => "crowd_reaction",
        SpamEventClass::Copypasta => "copypasta",
        SpamEventClass::BotWave => "bot_wave",
        SpamEventClass::LinkPromo => "link_promo",
        SpamEventClass::Flood => "flood",
        SpamEventClass::Unspecified => "unspecified",
    }
}

/// Whether a class is spam (a crowd reaction is not).
pub fn is_spam(c: SpamEventClass) -> bool {
    matches!(
        c,
        SpamEventClass::Copypasta
            | SpamEventClass::BotWave
            | SpamEventClass::LinkPromo
            | SpamEventClass::Flood
    )
}

/// How much membership in an event of this class weighs in the message
/// score (times `score_event_weight`) and in a user's evidence (times
/// `spam_event_weight`).
pub fn class_weight(c: SpamEventClass) -> f64 {
    match c {
        SpamEventClass::BotWave | SpamEventClass::Flood | SpamEventClass::LinkPromo => 1.0,
        SpamEventClass::Copypasta => 0.5,
        SpamEventClass::CrowdReaction | SpamEventClass::Unspecified => 0.0,
    }
}

fn ev(name: &str, observed: f64, threshold: f64, detail: &str) -> Trigger {
    Trigger {
        name: name.to_owned(),
        observed: round3(observed),
        threshold: round3(threshold),
        detail: detail.to_owned(),
        ..Trigger::default()
    }
}

/// The class of a group and why. Checked in order: allow list, links,
/// flood, bot wave (copypasta-length text, once per user, mostly from
/// first-time chatters, arriving fast), then copypasta against crowd
/// reaction by text length.
pub fn classify(c: &Cluster, p: &DetectorParams) -> (SpamEventClass, Vec<Trigger>) {
    let users = c.unique_users().max(1) as f64;
    let per_user = c.count as f64 / users;
    let letters = f64::from(c.letters);
    if c.allowed {
        return (
            SpamEventClass::CrowdReaction,
            vec![ev(
                "allowed_phrase",
                1.0,
                1.0,
                "on the channel's allow list",
            )],
        );
    }
    if c.count > 0 && u64::from(c.link_messages) * 2 >= c.count {
        let share = f64::from(c.link_messages) / c.count as f64;
        return (
            SpamEventClass::LinkPromo,
            vec![ev("link_share", share, 0.5, &c.link_domain)],
        );
    }
    if per_user >= p.flood_min_messages_per_user {
        return (
            SpamEventClass::Flood,
            vec![ev(
                "messages_per_user",
                per_user,
                p.flood_min_messages_per_user,
                "",
            )],
        );
    }
    let new_share = c.new_users as f64 / users;
    let spread_ms = c.last_seen_ms.saturating_sub(c.first_seen_ms).max(0) as f64;
    let ms_per_user = spread_ms / users;
    if new_share >= p.bot_wave_min_new_share
        && letters >= f64::from(p.copypasta_min_letters)
        && per_user < 1.5
        && users >= f64::from(p.bot_wave_min_users)
        && ms_per_user <= p.bot_wave_max_ms_per_user as f64
    {
        return (
            SpamEventClass::BotWave,
            vec![
                ev("new_chatter_share", new_share, p.bot_wave_min_new_share, ""),
                ev(
                    "ms_per_user",
                    ms_per_user,
                    p.bot_wave_max_ms_per_user as f64,
                    "",
                ),
            ],
        );
    }
    let length = ev(
        "letters",
        letters,
        f64::from(p.copypasta_min_letters),
        "letters and digits of the repeated unit",
    );
    let spread = ev(
        "messages_per_user",
        per_user,
        p.flood_min_messages_per_user,
        "",
    );
    if letters >= f64::from(p.copypasta_min_letters) {
        (SpamEventClass::Copypasta, vec![length, spread])
    } else {
        (SpamEventClass::CrowdReaction, vec![length, spread])
    }
}
