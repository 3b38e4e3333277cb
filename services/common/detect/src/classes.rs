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

/// The measurements a class is decided on.
struct Measures {
    users: f64,
    per_user: f64,
    letters: f64,
    new_share: f64,
    ms_per_user: f64,
    link_share: f64,
}

fn measures(c: &Cluster) -> Measures {
    let users = c.unique_users().max(1) as f64;
    let spread_ms = c.last_seen_ms.saturating_sub(c.first_seen_ms).max(0) as f64;
    Measures {
        users,
        per_user: c.count as f64 / users,
        letters: f64::from(c.letters),
        new_share: c.new_users as f64 / users,
        ms_per_user: spread_ms / users,
        link_share: if c.count == 0 {
            0.0
        } else {
            f64::from(c.link_messages) / c.count as f64
        },
    }
}

/// The class of a group, checked in order: allow list, links, flood, bot
/// wave (copypasta-length text, once per user, mostly from first-time
/// chatters, arriving fast), then copypasta against crowd reaction by text
/// length. Cheap: called for every message of an event.
pub fn class_of(c: &Cluster, p: &DetectorParams) -> SpamEventClass {
    let m = measures(c);
    if c.allowed {
        SpamEventClass::CrowdReaction
    } else if m.link_share >= 0.5 {
        SpamEventClass::LinkPromo
    } else if m.per_user >= p.flood_min_messages_per_user {
        SpamEventClass::Flood
    } else if m.new_share >= p.bot_wave_min_new_share
        && m.letters >= f64::from(p.copypasta_min_letters)
        && m.per_user < 1.5
        && m.users >= f64::from(p.bot_wave_min_users)
        && m.ms_per_user <= p.bot_wave_max_ms_per_user as f64
    {
        SpamEventClass::BotWave
    } else if m.letters >= f64::from(p.copypasta_min_letters) {
        SpamEventClass::Copypasta
    } else {
        SpamEventClass::CrowdReaction
    }
}

/// The class of a group and the measurements behind it, with their
/// thresholds (for the event's updates).
pub fn classify(c: &Cluster, p: &DetectorParams) -> (SpamEventClass, Vec<Trigger>) {
    let class = class_of(c, p);
    let m = measures(c);
    let evidence = match class {
        _ if c.allowed => vec![ev(
            "allowed_phrase",
            1.0,
            1.0,
            "on the channel's allow list",
        )],
        SpamEventClass::LinkPromo => vec![ev("link_share", m.link_share, 0.5, &c.link_domain)],
        SpamEventClass::Flood => vec![ev(
            "messages_per_user",
            m.per_user,
            p.flood_min_messages_per_user,
            "",
        )],
        SpamEventClass::BotWave => vec![
            ev(
                "new_chatter_share",
                m.new_share,
                p.bot_wave_min_new_share,
                "",
            ),
            ev(
                "ms_per_user",
                m.ms_per_user,
                p.bot_wave_max_ms_per_user as f64,
                "",
            ),
        ],
        _ => vec![
            ev(
                "letters",
                m.letters,
                f64::from(p.copypasta_min_letters),
                "letters and digits of the repeated unit",
            ),
            ev(
                "messages_per_user",
                m.per_user,
                p.flood_min_messages_per_user,
                "",
            ),
        ],
    };
    (class, evidence)
}
