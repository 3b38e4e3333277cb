//! What the detector remembers about one user in one stream: counters, the
//! evidence gathered against the user and the suspicion it adds up to.
//!
//! Counters, not messages: the average delay between messages is
//! `(last − first) / (n − 1)`, the mean of consecutive gaps in time order,
//! so it needs no history and messages arriving out of order change
//! nothing. Evidence is kept per kind (at most one entry per
//! [`EvidenceKind`]), so a user's state stays small however much they post.

use std::borrow::Cow;

use compact_str::CompactString;
use smallvec::SmallVec;

use spamscope_proto::v1::{Roles, Trigger};

use crate::params::DetectorParams;
use crate::stable::round3;

/// Role bits kept per user.
pub mod role {
    pub const BROADCASTER: u32 = 1;
    pub const MODERATOR: u32 = 1 << 1;
    pub const VIP: u32 = 1 << 2;
    pub const MEMBER: u32 = 1 << 3;
    pub const VERIFIED: u32 = 1 << 4;
    pub const STAFF: u32 = 1 << 5;
    /// Member months live in the bits above this shift.
    pub const MONTHS_SHIFT: u32 = 8;
}

/// Packs roles into one word: flags in the low byte, member months above.
pub fn pack_roles(r: &Roles) -> u32 {
    // Each flag times its bit: no branch per role (once per message).
    let flags = [
        (r.broadcaster, role::BROADCASTER),
        (r.moderator, role::MODERATOR),
        (r.vip, role::VIP),
        (r.member, role::MEMBER),
        (r.verified, role::VERIFIED),
        (r.staff, role::STAFF),
    ]
    .iter()
    .fold(0, |bits, &(on, bit)| bits | (u32::from(on) * bit));
    flags | (r.member_months.min(0x00FF_FFFF) << role::MONTHS_SHIFT)
}

/// Recent groups of similar messages a user posted in, with counts.
pub const RECENT_CLUSTERS: usize = 4;

/// Kinds of evidence against a user (the `name` of a [`Trigger`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum EvidenceKind {
    ModeratorAction = 0,
    DeletedMessages = 1,
    Wall = 2,
    LongMessage = 3,
    RepeatedMessage = 4,
    FastMessages = 5,
    Link = 6,
    SelfPromotion = 7,
    SpamEvent = 8,
    BlacklistedText = 9,
    BlacklistedName = 10,
}

impl EvidenceKind {
    pub const ALL: [EvidenceKind; 11] = [
        Self::ModeratorAction,
        Self::DeletedMessages,
        Self::Wall,
        Self::LongMessage,
        Self::RepeatedMessage,
        Self::FastMessages,
        Self::Link,
        Self::SelfPromotion,
        Self::SpamEvent,
        Self::BlacklistedText,
        Self::BlacklistedName,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ModeratorAction => "moderator_action",
            Self::DeletedMessages => "deleted_messages",
            Self::Wall => "wall",
            Self::LongMessage => "long_message",
            Self::RepeatedMessage => "repeated_message",
            Self::FastMessages => "fast_messages",
            Self::Link => "link",
            Self::SelfPromotion => "self_promotion",
            Self::SpamEvent => "spam_event",
            Self::BlacklistedText => "blacklisted_text",
            Self::BlacklistedName => "blacklisted_name",
        }
    }

    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    /// Evidence a moderator gave: it flags at once, whatever the weights.
    pub fn decisive(self) -> bool {
        matches!(self, Self::ModeratorAction | Self::DeletedMessages)
    }

    /// Evidence that no channel's culture makes normal (links, promotion,
    /// the channel's own blacklists): the flag budget does not hold it
    /// back, so a wave of link bots in a small chat is flagged bot by bot.
    pub fn outside_budget(self) -> bool {
        self.decisive()
            || matches!(
                self,
                Self::Link | Self::SelfPromotion | Self::BlacklistedText | Self::BlacklistedName
            )
    }
}

/// Evidence of one kind against a user.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub kind: EvidenceKind,
    /// Messages (or actions) that showed it.
    pub count: u32,
    /// What it added to the suspicion, summed, before decay.
    pub contribution: f32,
    /// The strongest observation, the channel's norm then, the threshold.
    pub observed: f32,
    pub norm: f32,
    pub threshold: f32,
    /// Which link, pattern, class or action.
    pub detail: String,
}

/// One observation to add to a user's evidence.
#[derive(Debug, Clone)]
pub struct Observation {
    pub kind: EvidenceKind,
    /// Evidence before the role weight.
    pub weight: f64,
    pub observed: f64,
    pub norm: f64,
    pub threshold: f64,
    pub detail: Cow<'static, str>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserState {
    /// The user id, then the login, in one string (a user's state is
    /// kept small: a busy stream tracks a hundred thousand). Up to 24
    /// bytes (a Twitch id and login, most of the time) it is inline: no
    /// allocation for most users.
    pub(crate) names: CompactString,
    /// Bytes of `names` that are the user id.
    pub(crate) id_len: u32,
    pub messages: u32,
    pub deleted: u32,
    /// Earliest and latest message times (event time).
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    /// Time of the previous message in arrival order (for the gap
    /// histogram that infers slow mode).
    pub prev_ts_ms: i64,
    /// Latest event that involved the user (eviction).
    pub last_seen_ms: i64,
    pub roles: u32,
    pub supporter: bool,
    /// Named in `trusted_users` (checked when the user is first seen and
    /// when params change).
    pub trusted: bool,
    pub flagged: bool,
    /// Most chatters are in one group: that one is inline (a `SmallVec`
    /// of one is the size of a `Vec`), more are on the heap.
    pub recent: SmallVec<[(u64, u32); 1]>,
    /// Suspicion as of `suspicion_at_ms` (it decays from there).
    pub suspicion: f32,
    pub suspicion_at_ms: i64,
    /// A moderator acted (timeout, ban, removal) or deleted enough messages.
    pub decisive: bool,
    /// What was observed, by kind; none for most chatters, so boxed
    /// ([`UserState::evidence`]): never an empty box.
    #[allow(
        clippy::box_collection,
        reason = "8 bytes for each of the many users without evidence, a Vec takes 24"
    )]
    pub(crate) evidence: Option<Box<Vec<Evidence>>>,
    /// When the user was last counted in the channel norms as a chatter,
    /// a waller, a repeater and a spam-event member (each at most once
    /// per norm half-life, so one heavy spammer is one chatter).
    pub norm_marks: [i64; 4],
}

/// A user id and a login as [`UserState`] keeps them.
pub(crate) fn pack_names(user_id: &str, login: &str) -> (CompactString, u32) {
    match u32::try_from(user_id.len()) {
        Ok(n) => {
            let mut names = CompactString::with_capacity(user_id.len() + login.len());
            names.push_str(user_id);
            names.push_str(login);
            (names, n)
        }
        // Never from chat (ids are at most 256 bytes).
        Err(_) => (CompactString::from(login), 0),
    }
}

impl UserState {
    pub fn new(user_id: &str, login: &str) -> Self {
        let (names, id_len) = pack_names(user_id, login);
        Self {
            names,
            id_len,
            first_ts_ms: i64::MAX,
            last_ts_ms: i64::MIN,
            prev_ts_ms: i64::MIN,
            last_seen_ms: i64::MIN,
            suspicion_at_ms: i64::MIN,
            norm_marks: [i64::MIN; 4],
            ..Self::default()
        }
    }

    /// What was observed about the user, by kind.
    pub fn evidence(&self) -> &[Evidence] {
        self.evidence.as_deref().map_or(&[], Vec::as_slice)
    }

    /// The platform's user id (may be empty).
    pub fn user_id(&self) -> &str {
        self.names.get(..self.id_len as usize).unwrap_or("")
    }

    /// The login (may be empty).
    pub fn login(&self) -> &str {
        self.names.get(self.id_len as usize..).unwrap_or("")
    }

    /// Fills the user id and the login where they are empty.
    pub fn fill_names(&mut self, user_id: &str, login: &str) {
        // From the lengths alone: the names are not read on every message.
        let id_missing = self.id_len == 0 && !user_id.is_empty();
        let login_missing = self.names.len() <= self.id_len as usize && !login.is_empty();
        if id_missing || login_missing {
            let id = if id_missing { user_id } else { self.user_id() };
            let name = if login_missing { login } else { self.login() };
            (self.names, self.id_len) = pack_names(id, name);
        }
    }

    /// Users who cannot be spammers in practice: moderators, the
    /// broadcaster and staff (as the params say), trusted bots.
    pub fn exempt(&self, p: &DetectorParams) -> bool {
        let has = |bit| self.roles & bit != 0;
        self.trusted
            || (p.exempt_moderators && has(role::MODERATOR))
            || (p.exempt_broadcaster && (has(role::BROADCASTER) || has(role::STAFF)))
    }

    /// How much evidence against this user counts: the smallest weight of
    /// the roles they hold (1 for none).
    pub fn role_weight(&self, p: &DetectorParams) -> f64 {
        let has = |bit| self.roles & bit != 0;
        let months = self.roles >> role::MONTHS_SHIFT;
        let mut w: f64 = 1.0;
        if has(role::VIP) {
            w = w.min(p.vip_weight);
        }
        if has(role::VERIFIED) {
            w = w.min(p.verified_weight);
        }
        if has(role::MEMBER) {
            w = w.min(if months >= p.member_trust_months {
                p.trusted_member_weight
            } else {
                p.member_weight
            });
        }
        if self.supporter {
            w = w.min(p.supporter_weight);
        }
        w
    }

    /// Suspicion decayed to `at_ms` (never grows back for an earlier time).
    pub fn suspicion_at(&self, at_ms: i64, half_life_ms: u64) -> f64 {
        if self.suspicion_at_ms == i64::MIN || self.suspicion == 0.0 {
            return f64::from(self.suspicion);
        }
        let dt = at_ms.saturating_sub(self.suspicion_at_ms).max(0) as f64;
        f64::from(self.suspicion) * (-dt / half_life_ms as f64 * std::f64::consts::LN_2).exp()
    }

    /// Adds one observation: weighted by the user's roles, summed into
    /// the suspicion decayed to `at_ms`, and kept per kind for the reader.
    pub fn observe(&mut self, o: Observation, at_ms: i64, p: &DetectorParams) {
        // Moderators' evidence is theirs: no role discount.
        let weight = if o.kind.decisive() {
            o.weight
        } else {
            o.weight * self.role_weight(p)
        };
        if o.kind.decisive() {
            self.decisive = true;
        }
        if weight > 0.0 {
            let now = at_ms.max(self.suspicion_at_ms);
            let s = self.suspicion_at(now, p.suspicion_half_life_ms) + weight;
            self.suspicion = s as f32;
            self.suspicion_at_ms = now;
        } else if !o.kind.decisive() {
            return;
        }
        let list = self.evidence.get_or_insert_with(Box::default);
        let e = match list.iter_mut().position(|e| e.kind == o.kind) {
            Some(i) => &mut list[i],
            None => {
                list.push(Evidence {
                    kind: o.kind,
                    count: 0,
                    contribution: 0.0,
                    observed: f32::NEG_INFINITY,
                    norm: 0.0,
                    threshold: o.threshold as f32,
                    detail: String::new(),
                });
                let last = list.len() - 1;
                &mut list[last]
            }
        };
        e.count = e.count.saturating_add(1);
        e.contribution += weight as f32;
        // The fast-messages observation is a delay: lower is stronger.
        let stronger = if o.kind == EvidenceKind::FastMessages {
            e.observed == f32::NEG_INFINITY || (o.observed as f32) < e.observed
        } else {
            (o.observed as f32) >= e.observed
        };
        if stronger {
            e.observed = o.observed as f32;
            e.norm = o.norm as f32;
            e.threshold = o.threshold as f32;
            if !o.detail.is_empty() {
                e.detail = o.detail.into_owned();
            }
        }
    }

    /// Which of (chatter, wall, repeat, spam) to count in the channel norms
    /// for a message at `ts_ms` showing `shown`, marking them counted.
    pub fn norm_counts(&mut self, ts_ms: i64, shown: [bool; 4], half_life_ms: u64) -> [bool; 4] {
        let half = i64::try_from(half_life_ms).unwrap_or(i64::MAX);
        let mut out = [false; 4];
        for i in 0..4 {
            let mark = self.norm_marks[i];
            if shown[i] && (mark == i64::MIN || ts_ms.saturating_sub(mark) >= half) {
                self.norm_marks[i] = ts_ms;
                out[i] = true;
            }
        }
        out
    }

    /// What this user's own marks as a waller, a repeater and a spam-event
    /// member weigh in the channel norms at `ts_ms` (each decays from when
    /// it was counted). Not the chatter mark: no share leaves it out, and
    /// nearly every user has one to decay.
    pub fn norm_weights(&self, ts_ms: i64, half_life_ms: u64) -> [f64; 3] {
        [1, 2, 3].map(|i| {
            let mark = self.norm_marks[i];
            if mark == i64::MIN {
                0.0
            } else {
                let dt = ts_ms.saturating_sub(mark).max(0) as f64;
                (-dt / half_life_ms as f64 * std::f64::consts::LN_2).exp()
            }
        })
    }

    /// Counts a message in group `cluster`; returns the user's count there.
    pub fn note_cluster(&mut self, cluster: u64) -> u32 {
        if let Some(e) = self.recent.iter_mut().find(|(c, _)| *c == cluster) {
            e.1 += 1;
            return e.1;
        }
        if self.recent.len() >= RECENT_CLUSTERS {
            // Forget the group with the fewest messages (oldest on ties).
            if let Some(i) = self
                .recent
                .iter()
                .enumerate()
                .min_by_key(|(i, (_, n))| (*n, *i))
                .map(|(i, _)| i)
            {
                self.recent.remove(i);
            }
        }
        self.recent.push((cluster, 1));
        1
    }

    pub fn count_in(&self, cluster: u64) -> u32 {
        self.recent
            .iter()
            .find(|(c, _)| *c == cluster)
            .map_or(0, |(_, n)| *n)
    }

    /// Mean gap between the user's messages, if there are two or more.
    pub fn avg_delay_ms(&self) -> Option<f64> {
        (self.messages >= 2).then(|| {
            self.last_ts_ms.saturating_sub(self.first_ts_ms) as f64 / f64::from(self.messages - 1)
        })
    }

    /// Whether the user is to be flagged at `at_ms` with the suspicion
    /// threshold at `threshold`.
    pub fn should_flag(&self, at_ms: i64, threshold: f64, p: &DetectorParams) -> bool {
        self.decisive || self.suspicion_at(at_ms, p.suspicion_half_life_ms) >= threshold - 1e-9
    }

    /// Whether any of the evidence is outside the flag budget.
    pub fn has_evidence_outside_budget(&self) -> bool {
        self.evidence()
            .iter()
            .any(|e| e.kind.outside_budget() && e.contribution > 0.0)
    }

    /// The evidence as triggers, strongest contribution first (decisive
    /// moderator evidence before everything).
    pub fn triggers(&self) -> Vec<Trigger> {
        let mut ev: Vec<&Evidence> = self.evidence().iter().collect();
        ev.sort_by(|a, b| {
            b.kind
                .decisive()
                .cmp(&a.kind.decisive())
                .then(b.contribution.total_cmp(&a.contribution))
                .then(a.kind.cmp(&b.kind))
        });
        ev.into_iter()
            .map(|e| Trigger {
                name: e.kind.name().to_owned(),
                observed: round3(f64::from(e.observed)),
                threshold: round3(f64::from(e.threshold)),
                detail: e.detail.clone(),
                norm: round3(f64::from(e.norm)),
                contribution: round3(f64::from(e.contribution)),
                count: e.count,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(messages: u32, first: i64, last: i64) -> UserState {
        UserState {
            messages,
            first_ts_ms: first,
            last_ts_ms: last,
            ..UserState::new("1", "u")
        }
    }

    fn obs(kind: EvidenceKind, weight: f64, observed: f64) -> Observation {
        Observation {
            kind,
            weight,
            observed,
            norm: 0.0,
            threshold: 1.0,
            detail: Cow::Borrowed(""),
        }
    }

    #[test]
    fn average_delay_divides_by_gaps_not_messages() {
        assert_eq!(user(5, 0, 4_000).avg_delay_ms(), Some(1_000.0));
        assert_eq!(user(1, 0, 0).avg_delay_ms(), None);
    }

    #[test]
    fn suspicion_adds_up_and_halves_per_half_life() {
        let p = DetectorParams::default();
        let mut u = UserState::new("1", "u");
        let w = p.flag_threshold() * 0.6;
        u.observe(obs(EvidenceKind::Wall, w, 200.0), 0, &p);
        assert!(!u.should_flag(0, p.flag_threshold(), &p));
        u.observe(obs(EvidenceKind::Wall, w, 300.0), 0, &p);
        assert!(u.should_flag(0, p.flag_threshold(), &p));
        // A raised threshold (a channel past its flag budget) needs more.
        assert!(!u.should_flag(0, p.flag_threshold() * 1.5, &p));
        let half = i64::try_from(p.suspicion_half_life_ms).unwrap();
        assert!((u.suspicion_at(half, p.suspicion_half_life_ms) - w).abs() < 1e-6);
        assert!(!u.should_flag(half, p.flag_threshold(), &p));
        // An earlier time does not bring suspicion back up.
        assert!((u.suspicion_at(-half, p.suspicion_half_life_ms) - 2.0 * w).abs() < 1e-6);
        let t = u.triggers();
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].count, t[0].observed), (2, 300.0));
        assert!((t[0].contribution - 2.0 * w).abs() < 1e-3);
    }

    #[test]
    fn roles_weigh_instead_of_exempting() {
        let p = DetectorParams::default();
        let mut sub = UserState::new("1", "sub");
        sub.roles = pack_roles(&Roles {
            member: true,
            member_months: 9,
            ..Roles::default()
        });
        assert!(!sub.exempt(&p));
        assert_eq!(sub.role_weight(&p), p.member_weight);
        // Evidence that alone flags anyone else.
        let w = p.flag_threshold();
        sub.observe(obs(EvidenceKind::Wall, w, 200.0), 0, &p);
        assert!(
            !sub.should_flag(0, p.flag_threshold(), &p),
            "a subscriber's one wall is not enough"
        );
        sub.observe(obs(EvidenceKind::Wall, w, 200.0), 0, &p);
        assert!(sub.should_flag(0, p.flag_threshold(), &p), "two are");
        let mut long = sub.clone();
        long.roles = pack_roles(&Roles {
            member: true,
            member_months: 24,
            ..Roles::default()
        });
        assert_eq!(long.role_weight(&p), p.trusted_member_weight);
        let mut m = UserState::new("2", "m");
        m.roles = pack_roles(&Roles {
            moderator: true,
            ..Roles::default()
        });
        assert!(m.exempt(&p));
        let mut p2 = p.clone();
        p2.exempt_moderators = false;
        assert!(!m.exempt(&p2));
    }

    #[test]
    fn moderator_evidence_is_decisive_even_for_members() {
        let p = DetectorParams::default();
        let mut u = UserState::new("1", "u");
        u.roles = pack_roles(&Roles {
            member: true,
            member_months: 30,
            ..Roles::default()
        });
        u.observe(obs(EvidenceKind::ModeratorAction, 1.0, 1.0), 0, &p);
        assert!(u.should_flag(0, p.flag_threshold(), &p));
        assert_eq!(u.triggers()[0].name, "moderator_action");
    }

    #[test]
    fn recent_groups_are_bounded() {
        let mut u = UserState::new("1", "u");
        for c in 0..10 {
            u.note_cluster(c);
        }
        assert_eq!(u.note_cluster(9), 2);
        assert!(u.recent.len() <= RECENT_CLUSTERS);
    }
}
