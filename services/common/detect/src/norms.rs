//! What is normal in one channel right now: the shares of recently active
//! chatters who posted walls, who repeated their own message and who took
//! part in spam events, as counts that decay with a half-life in event
//! time. Each chatter counts at most once per half-life for each, so one
//! heavy spammer does not make spam look normal. Evidence of a behaviour is
//! divided by how common it is ([`rarity`]): a wall during a rave the whole
//! chat joins is not a wall in quiet chat.

/// Chatters assumed seen before the first one, so the first wall of a
/// stream is not judged against a share of 1 in 1.
const PRIOR_MESSAGES: f64 = 20.0;

/// Chatters assumed seen when judging the flag budget, so a stream's
/// first flags are not judged against a handful of chatters.
const BUDGET_PRIOR_CHATTERS: f64 = 300.0;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChannelNorms {
    pub messages: f64,
    pub walls: f64,
    pub repeats: f64,
    /// Messages in active spam events of a spam class.
    pub spam: f64,
    /// Users flagged (the flag budget).
    pub flags: f64,
    /// Event time the counts are decayed to.
    pub at_ms: i64,
}

impl ChannelNorms {
    /// Decays the counts to `ts_ms` (never backwards).
    pub fn decay_to(&mut self, ts_ms: i64, half_life_ms: u64) {
        if ts_ms <= self.at_ms {
            return;
        }
        if self.messages > 0.0 {
            let dt = ts_ms.saturating_sub(self.at_ms) as f64;
            let f = (-dt / half_life_ms as f64 * std::f64::consts::LN_2).exp();
            self.messages *= f;
            self.walls *= f;
            self.repeats *= f;
            self.spam *= f;
            self.flags *= f;
        }
        self.at_ms = ts_ms;
    }

    /// Counts what one message showed (`[chatter, wall, repeat, spam]`,
    /// each already limited to once per chatter and half-life);
    /// out-of-order times count at the latest time.
    pub fn observe(&mut self, ts_ms: i64, counts: [bool; 4], half_life_ms: u64) {
        let [chatter, wall, repeat, spam] = counts;
        self.decay_to(ts_ms, half_life_ms);
        if chatter {
            self.messages += 1.0;
        }
        if spam {
            self.spam += 1.0;
        }
        if wall {
            self.walls += 1.0;
        }
        if repeat {
            self.repeats += 1.0;
        }
    }

    /// `count` (one of the decayed counts) as a share of the chatters,
    /// less `own` (what the judged user or event put in), never below 0.
    pub fn share_without(&self, count: f64, own: f64) -> f64 {
        (count - own).max(0.0) / (self.messages - own.min(1.0) + PRIOR_MESSAGES).max(1.0)
    }

    /// Share of recent messages that were walls.
    pub fn wall_share(&self) -> f64 {
        self.walls / (self.messages + PRIOR_MESSAGES)
    }

    /// Share of recent messages that were in spam events.
    pub fn spam_share(&self) -> f64 {
        self.spam / (self.messages + PRIOR_MESSAGES)
    }

    /// Share of recent messages in spam events other than one whose own
    /// recent messages (decayed the same way) are `own`.
    pub fn spam_share_without(&self, own: f64) -> f64 {
        (self.spam - own).max(0.0) / (self.messages + PRIOR_MESSAGES)
    }

    /// Counts a flag at `ts_ms`.
    pub fn add_flag(&mut self, ts_ms: i64, half_life_ms: u64) {
        self.decay_to(ts_ms, half_life_ms);
        self.flags += 1.0;
    }

    /// How much the flag threshold is raised so that recent flags stay
    /// within `per_1000` of the recent chatters (0: no budget): 1 while the
    /// next flag keeps the channel within budget, then in proportion to the
    /// excess. A chat where a quarter of the chatters post walls gets the
    /// few worst flagged, not thousands; a stream's first flag always
    /// passes at the plain threshold (`BUDGET_PRIOR_CHATTERS` and at least
    /// one flag).
    pub fn flag_budget_factor(&self, per_1000: f64) -> f64 {
        if per_1000 <= 0.0 {
            return 1.0;
        }
        // The budget in flags now, never below one: the next flag is
        // judged on what the channel would have with it.
        let allowed = ((self.messages + BUDGET_PRIOR_CHATTERS) * per_1000 / 1000.0).max(1.0);
        ((self.flags + 1.0) / allowed).max(1.0)
    }

    /// Share of recent messages that repeated their author's message.
    pub fn repeat_share(&self) -> f64 {
        self.repeats / (self.messages + PRIOR_MESSAGES)
    }
}

/// How unusual a behaviour with this recent share is: 1 when nobody does
/// it, 1/2 at the base share, 1/11 at ten times the base share.
pub fn rarity(share: f64, base_share: f64) -> f64 {
    1.0 / (1.0 + share / base_share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_the_recent_chat() {
        let mut n = ChannelNorms::default();
        for i in 0..100 {
            n.observe(i * 100, [true, i % 4 == 0, false, false], 60_000);
        }
        assert!((n.wall_share() - 25.0 / 120.0).abs() < 0.02, "{n:?}");
        // Ten half-lives of quiet chat later the walls are forgotten.
        for i in 0..100 {
            n.observe(600_000 + i * 100, [true, false, false, false], 60_000);
        }
        assert!(n.wall_share() < 0.01, "{n:?}");
        assert!(rarity(0.0, 0.01) == 1.0 && (rarity(0.1, 0.01) - 1.0 / 11.0).abs() < 1e-9);
    }

    #[test]
    fn flag_budget_raises_the_threshold_only_past_the_budget() {
        let mut n = ChannelNorms::default();
        for i in 0..1000 {
            n.observe(i, [true, false, false, false], 600_000);
        }
        assert_eq!(n.flag_budget_factor(0.0), 1.0);
        // 1,300 chatters (with the prior) at 5 per 1,000: 6.5 flags are
        // within budget, so 6 pass at the plain threshold.
        for _ in 0..6 {
            assert_eq!(n.flag_budget_factor(5.0), 1.0);
            n.add_flag(1000, 600_000);
        }
        let f = n.flag_budget_factor(5.0);
        assert!((f - 7.0 / 6.5).abs() < 1e-3, "{f}");
        // Ten half-lives on, the flags are forgotten with the chatters.
        n.decay_to(6_001_000, 600_000);
        assert_eq!(n.flag_budget_factor(5.0), 1.0);
    }

    #[test]
    fn out_of_order_times_do_not_grow_counts() {
        let mut n = ChannelNorms::default();
        n.observe(10_000, [true, true, false, false], 60_000);
        n.observe(5_000, [true, false, false, false], 60_000);
        assert_eq!(n.at_ms, 10_000);
        assert_eq!(n.messages, 2.0);
    }
}

/// A count that decays with a half-life in event time (one spam event's
/// recent messages).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Decayed {
    pub value: f64,
    pub at_ms: i64,
}

impl Decayed {
    pub fn at(&self, ts_ms: i64, half_life_ms: u64) -> f64 {
        if self.value == 0.0 || ts_ms <= self.at_ms {
            return self.value;
        }
        let dt = ts_ms.saturating_sub(self.at_ms) as f64;
        self.value * (-dt / half_life_ms as f64 * std::f64::consts::LN_2).exp()
    }

    pub fn add(&mut self, ts_ms: i64, half_life_ms: u64) {
        let now = ts_ms.max(self.at_ms);
        self.value = self.at(now, half_life_ms) + 1.0;
        self.at_ms = now;
    }
}
