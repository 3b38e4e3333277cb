//! What the detector remembers about one user in one stream, and the
//! suspicion triggers evaluated on it.
//!
//! About 150 bytes per user plus the login (measured by the `state_size`
//! benchmark): counters, not messages. The average delay between messages is
//! `(last − first) / (n − 1)`, the mean of consecutive gaps in time order, so
//! it needs no history and messages arriving out of order change nothing.

use spamscope_proto::v1::{Roles, Trigger};

use crate::params::DetectorParams;

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
    let mut bits = 0;
    for (on, bit) in [
        (r.broadcaster, role::BROADCASTER),
        (r.moderator, role::MODERATOR),
        (r.vip, role::VIP),
        (r.member, role::MEMBER),
        (r.verified, role::VERIFIED),
        (r.staff, role::STAFF),
    ] {
        if on {
            bits |= bit;
        }
    }
    bits | (r.member_months.min(0x00FF_FFFF) << role::MONTHS_SHIFT)
}

/// Recent groups of similar messages a user posted in, with counts.
pub const RECENT_CLUSTERS: usize = 4;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserState {
    pub user_id: String,
    pub login: String,
    pub messages: u32,
    pub deleted: u32,
    pub total_graphemes: u64,
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
    pub moderated: bool,
    pub moderated_detail: String,
    pub flagged: bool,
    pub recent: Vec<(u64, u32)>,
    pub spam_event_messages: u32,
    pub blacklist_hits: u32,
    pub blacklist_detail: String,
    /// Largest repetition ratio of one message (graphemes / graphemes of
    /// the normalised form).
    pub max_repetition: f32,
}

impl UserState {
    pub fn new(user_id: &str, login: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            login: login.to_owned(),
            first_ts_ms: i64::MAX,
            last_ts_ms: i64::MIN,
            prev_ts_ms: i64::MIN,
            last_seen_ms: i64::MIN,
            ..Self::default()
        }
    }

    /// Users who cannot be spammers in practice, as the params define them.
    pub fn exempt(&self, p: &DetectorParams) -> bool {
        let has = |bit| self.roles & bit != 0;
        let months = self.roles >> role::MONTHS_SHIFT;
        (p.exempt_moderators && has(role::MODERATOR))
            || (p.exempt_broadcaster && (has(role::BROADCASTER) || has(role::STAFF)))
            || (p.exempt_vips && has(role::VIP))
            || (p.exempt_verified && has(role::VERIFIED))
            || (p.exempt_supporters && self.supporter)
            || (p.exempt_members && has(role::MEMBER) && months >= p.member_exempt_min_months)
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
        (self.messages >= 2)
            .then(|| (self.last_ts_ms - self.first_ts_ms) as f64 / f64::from(self.messages - 1))
    }

    pub fn avg_graphemes(&self) -> Option<f64> {
        (self.messages >= 1).then(|| self.total_graphemes as f64 / f64::from(self.messages))
    }

    /// The triggers that fire for this user, with observed values and
    /// thresholds. `delay_threshold_ms` already accounts for slow mode.
    pub fn triggers(&self, p: &DetectorParams, delay_threshold_ms: f64) -> Vec<Trigger> {
        let mut out = Vec::new();
        let mut fire = |name: &str, observed: f64, threshold: f64, detail: String| {
            out.push(Trigger {
                name: name.to_owned(),
                observed,
                threshold,
                detail,
            });
        };
        if p.moderator_actions && self.moderated {
            fire("moderator_action", 1.0, 1.0, self.moderated_detail.clone());
        }
        if p.max_deleted_messages > 0 && self.deleted >= p.max_deleted_messages {
            fire(
                "deleted_messages",
                f64::from(self.deleted),
                f64::from(p.max_deleted_messages),
                String::new(),
            );
        }
        if p.max_avg_length > 0
            && self.messages >= p.min_messages_for_length.max(1)
            && let Some(avg) = self.avg_graphemes()
            && avg >= f64::from(p.max_avg_length)
        {
            fire(
                "avg_length",
                avg,
                f64::from(p.max_avg_length),
                String::new(),
            );
        }
        if delay_threshold_ms > 0.0
            && self.messages >= p.min_messages_for_delay.max(2)
            && let Some(avg) = self.avg_delay_ms()
            && avg < delay_threshold_ms
        {
            fire("avg_delay", avg, delay_threshold_ms, String::new());
        }
        let similar = self.recent.iter().map(|(_, n)| *n).max().unwrap_or(0);
        if p.max_similar_messages > 0 && similar >= p.max_similar_messages {
            fire(
                "similar_messages",
                f64::from(similar),
                f64::from(p.max_similar_messages),
                String::new(),
            );
        }
        if p.max_spam_event_messages > 0 && self.spam_event_messages >= p.max_spam_event_messages {
            fire(
                "spam_event_messages",
                f64::from(self.spam_event_messages),
                f64::from(p.max_spam_event_messages),
                String::new(),
            );
        }
        if p.max_repetition > 0.0 && f64::from(self.max_repetition) >= p.max_repetition {
            fire(
                "repetitive_message",
                f64::from(self.max_repetition),
                p.max_repetition,
                String::new(),
            );
        }
        if self.blacklist_hits > 0 {
            let name = if self.blacklist_detail.starts_with("name:") {
                "blacklisted_name"
            } else {
                "blacklisted_text"
            };
            fire(
                name,
                f64::from(self.blacklist_hits),
                1.0,
                self.blacklist_detail.clone(),
            );
        }
        out
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

    #[test]
    fn average_delay_divides_by_gaps_not_messages() {
        assert_eq!(user(5, 0, 4_000).avg_delay_ms(), Some(1_000.0));
        assert_eq!(user(1, 0, 0).avg_delay_ms(), None);
    }

    #[test]
    fn delay_trigger_respects_min_messages_and_threshold() {
        let p = DetectorParams::default();
        let fast = user(p.min_messages_for_delay, 0, 1_000);
        assert!(
            fast.triggers(&p, 1_500.0)
                .iter()
                .any(|t| t.name == "avg_delay")
        );
        let few = user(p.min_messages_for_delay - 1, 0, 100);
        assert!(
            !few.triggers(&p, 1_500.0)
                .iter()
                .any(|t| t.name == "avg_delay")
        );
        // Slow mode raised the threshold: the same user now fires at 40 s.
        let slow = user(p.min_messages_for_delay, 0, 3 * 31_000);
        assert!(
            slow.triggers(&p, 36_000.0)
                .iter()
                .any(|t| t.name == "avg_delay")
        );
        assert!(
            !slow
                .triggers(&p, 1_500.0)
                .iter()
                .any(|t| t.name == "avg_delay")
        );
    }

    #[test]
    fn exemptions_are_params() {
        let mut p = DetectorParams::default();
        let mut u = UserState::new("1", "u");
        u.roles = pack_roles(&Roles {
            member: true,
            member_months: 2,
            ..Roles::default()
        });
        assert!(
            !u.exempt(&p),
            "a two-month subscriber is not exempt by default"
        );
        p.member_exempt_min_months = 0;
        assert!(u.exempt(&p));
        p.exempt_members = false;
        assert!(!u.exempt(&p));
        u.roles = pack_roles(&Roles {
            moderator: true,
            ..Roles::default()
        });
        assert!(u.exempt(&p));
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
