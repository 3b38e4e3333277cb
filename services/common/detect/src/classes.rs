//! What a spam event is: a crowd reaction (chat, not spam), a copypasta, a
//! bot wave, link or promotion spam, or a flood, decided from what the
//! detector saw of the group's messages, with the measurements behind the
//! decision as evidence.

use spamscope_proto::v1::{SpamEventClass, Trigger};

use crate::params::DetectorParams;
use crate::stable::round3;

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

/// The measurements of a group a class is decided on.
#[derive(Debug, Clone, Copy)]
pub struct Measures {
    /// Distinct users (at least 1).
    pub users: f64,
    pub per_user: f64,
    /// Letters and digits of the repeated unit.
    pub letters: f64,
    /// Share of the users who are first-time chatters.
    pub new_share: f64,
    /// Time from the first message to the last, per user.
    pub ms_per_user: f64,
    /// Share of the messages with a link.
    pub link_share: f64,
}

/// The class of a group, checked in order: allow list, links, flood, bot
/// wave (copypasta-length text, once per user, mostly from first-time
/// chatters, arriving fast), then copypasta against crowd reaction by text
/// length. Cheap: called for every message of an event. `allowed`: the
/// group's text is on the channel's allow list.
pub fn class_of(m: &Measures, allowed: bool, p: &DetectorParams) -> SpamEventClass {
    if allowed {
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
/// thresholds (for the event's updates); `link_domain` names the link of
/// link spam.
pub fn classify(
    m: &Measures,
    allowed: bool,
    link_domain: &str,
    p: &DetectorParams,
) -> (SpamEventClass, Vec<Trigger>) {
    let class = class_of(m, allowed, p);
    let evidence = match class {
        _ if allowed => vec![ev(
            "allowed_phrase",
            1.0,
            1.0,
            "on the channel's allow list",
        )],
        SpamEventClass::LinkPromo => vec![ev("link_share", m.link_share, 0.5, link_domain)],
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
