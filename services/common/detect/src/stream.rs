//! The detector of one stream (a Twitch channel or a YouTube video).
//!
//! Pure: [`StreamDetector::handle`] takes one chat event and appends what it
//! caused to an output vector. Time is event time: the largest timestamp
//! seen (the watermark) drives ticks, so a replay gives the same outputs at
//! any speed. Events may arrive out of order; nothing assumes they don't.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use spamscope_chat::links;
use spamscope_chat::normalize::normalize;
use spamscope_proto::v1::{
    Author, ChatEvent, ChatMessage, Decision, DetectorOutput, MessageScore, Platform, SpamEvent,
    SpamEventClass, chat_event::Kind, detector_output,
};

use crate::classes::{class_name, class_weight, is_spam};
use crate::clusters::{Clusters, Message};
use crate::idle::IdleQueue;
use crate::norms::{ChannelNorms, rarity};
use crate::params::{CompiledParams, DetectorParams};
use crate::score::{ScoreModel, combine};
use crate::stable::{round3, stable_hash};
use crate::user::{EvidenceKind, Observation, UserState, pack_roles};

/// Gap histogram buckets: whole seconds 0..=120.
pub const GAP_BUCKETS: usize = 121;
/// A repeat adds its weight once per earlier copy, up to this many times:
/// the fifth copy weighs four times the second, later ones no more.
const MAX_REPEAT_STEP: u32 = 4;
/// Gaps needed before slow mode is inferred.
const MIN_GAP_SAMPLES: u32 = 30;
/// Slow mode is inferred when at most this share of gaps is shorter.
const SLOW_MODE_QUANTILE: f64 = 0.02;

/// Counters a stream detector keeps about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamCounters {
    pub events: u64,
    /// Deletions whose message (and so author) the detector never saw.
    pub unknown_deletions: u64,
}

/// How often (event time) idle users and groups are swept.
const SWEEP_MS: i64 = 60_000;

#[derive(Debug)]
pub struct StreamDetector {
    pub(crate) platform: Platform,
    pub(crate) stream_id: String,
    pub(crate) channel_id: String,
    pub(crate) params: Arc<CompiledParams>,
    pub(crate) model: Arc<ScoreModel>,
    pub(crate) emit_scores: bool,
    /// Largest event time seen; `i64::MIN` before the first event.
    pub(crate) watermark_ms: i64,
    pub(crate) next_tick_ms: i64,
    pub(crate) users: FxHashMap<u64, UserState>,
    /// Every tracked user by the time they were last seen when queued,
    /// so that the sweep visits only users who may be idle, not every
    /// user each minute (a busy stream tracks thousands: a full visit was
    /// a quarter of the loop's cache misses). A user is queued at a time
    /// no later than their `last_seen_ms`; when taken and seen since, they
    /// are queued again at that time. A user already gone is skipped.
    pub(crate) user_queue: IdleQueue,
    pub(crate) clusters: Clusters,
    /// Recent message ids (hashed) and their authors, oldest first.
    pub(crate) message_ids: VecDeque<(u64, u64)>,
    /// The same by id, built when a deletion first needs it (Twitch
    /// deletions name their author, so most streams never do).
    pub(crate) message_index: Option<FxHashMap<u64, u64>>,
    /// Slow mode announced by the platform (Twitch ROOMSTATE, YouTube mode
    /// change); `None` until one arrives.
    pub(crate) slow_mode_s: Option<u32>,
    pub(crate) gap_histogram: Vec<u32>,
    /// Sum of `gap_histogram`.
    pub(crate) gap_total: u32,
    pub(crate) counters: StreamCounters,
    /// What is normal in this channel right now.
    pub(crate) norms: ChannelNorms,
}

/// The key of a user within a stream: Twitch by login (CLEARMSG names only
/// the login), YouTube by channel id (deletions name only the id).
pub fn user_key(platform: Platform, user_id: &str, login: &str) -> u64 {
    let id = match platform {
        Platform::Twitch if !login.is_empty() => login,
        _ if !user_id.is_empty() => user_id,
        _ => login,
    };
    stable_hash(id)
}

impl StreamDetector {
    pub fn new(
        platform: Platform,
        stream_id: &str,
        params: Arc<CompiledParams>,
        model: Arc<ScoreModel>,
    ) -> Self {
        Self {
            platform,
            stream_id: stream_id.to_owned(),
            channel_id: String::new(),
            params,
            model,
            emit_scores: false,
            watermark_ms: i64::MIN,
            next_tick_ms: i64::MIN,
            users: FxHashMap::default(),
            user_queue: IdleQueue::default(),
            clusters: Clusters::default(),
            message_ids: VecDeque::new(),
            message_index: None,
            slow_mode_s: None,
            gap_histogram: vec![0; GAP_BUCKETS],
            gap_total: 0,
            counters: StreamCounters::default(),
            norms: ChannelNorms::default(),
        }
    }

    /// Also emit a [`MessageScore`] for every message.
    pub fn with_scores(mut self, on: bool) -> Self {
        self.emit_scores = on;
        self
    }

    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    pub fn platform(&self) -> Platform {
        self.platform
    }

    pub fn counters(&self) -> &StreamCounters {
        &self.counters
    }

    pub fn tracked_users(&self) -> usize {
        self.users.len()
    }

    pub fn tracked_groups(&self) -> usize {
        self.clusters.len()
    }

    /// A tracked user's state (`user_id` or `login` as the platform keys
    /// users: Twitch by login, YouTube by channel id).
    pub fn user(&self, user_id: &str, login: &str) -> Option<&UserState> {
        self.users.get(&user_key(self.platform, user_id, login))
    }

    /// What is normal in this channel right now.
    pub fn norms(&self) -> &ChannelNorms {
        &self.norms
    }

    pub fn watermark_ms(&self) -> Option<i64> {
        (self.watermark_ms != i64::MIN).then_some(self.watermark_ms)
    }

    /// Slow mode in effect (seconds): announced, else inferred from the
    /// chat; and whether it was inferred.
    pub fn slow_mode(&self) -> (u32, bool) {
        slow_mode(self.slow_mode_s, &self.gap_histogram, self.gap_total)
    }

    /// Handles one event of this stream.
    pub fn handle(&mut self, ev: &ChatEvent, out: &mut Vec<DetectorOutput>) {
        if matches!(ev.kind, Some(Kind::Command(_))) {
            // For the policy engine; its time is not the chat's.
            return;
        }
        self.counters.events += 1;
        if self.channel_id.is_empty() && !ev.channel_id.is_empty() {
            self.channel_id.clone_from(&ev.channel_id);
        }
        self.advance_to(ev.ts_ms, out);
        let ts = ev.ts_ms;
        match &ev.kind {
            Some(Kind::Message(m)) => self.on_message(ev, m, out),
            // The author's own retraction says nothing about them.
            Some(Kind::MessageDeleted(d)) if d.by_author => {}
            Some(Kind::MessageDeleted(d)) => {
                let key = if !d.user_login.is_empty() || !d.user_id.is_empty() {
                    Some(user_key(self.platform, &d.user_id, &d.user_login))
                } else {
                    let ids = &self.message_ids;
                    self.message_index
                        .get_or_insert_with(|| ids.iter().copied().collect())
                        .get(&stable_hash(&d.target_message_id))
                        .copied()
                };
                let p = Arc::clone(&self.params);
                let max = p.params.max_deleted_messages;
                match key.and_then(|k| self.users.get_mut(&k).map(|u| (k, u))) {
                    Some((k, u)) => {
                        u.deleted += 1;
                        u.last_seen_ms = u.last_seen_ms.max(ts);
                        if max > 0 && u.deleted >= max {
                            u.observe(
                                Observation {
                                    kind: EvidenceKind::DeletedMessages,
                                    weight: 1.0,
                                    observed: f64::from(u.deleted),
                                    norm: 0.0,
                                    threshold: f64::from(max),
                                    detail: Cow::Borrowed(""),
                                },
                                ts,
                                &p.params,
                            );
                        }
                        self.evaluate(k, ts, out);
                    }
                    None => self.counters.unknown_deletions += 1,
                }
            }
            Some(Kind::UserTimedOut(t)) => {
                let detail = format!("timed out for {} s", t.duration_s);
                self.on_moderated(&t.user_id, &t.user_login, detail, ts, out);
            }
            Some(Kind::UserBanned(b)) => {
                self.on_moderated(&b.user_id, &b.user_login, "banned".into(), ts, out);
            }
            Some(Kind::UserMessagesRemoved(r)) => {
                self.on_moderated(&r.user_id, "", "all messages removed".into(), ts, out);
            }
            Some(Kind::RoomState(rs)) => {
                if let Some(s) = rs.slow_mode_s {
                    self.slow_mode_s = Some(s);
                }
            }
            Some(Kind::Support(s)) => {
                if let Some(a) = &s.author
                    && (!a.user_id.is_empty() || !a.login.is_empty())
                {
                    let key = user_key(self.platform, &a.user_id, &a.login);
                    let (u, _) = tracked_user(
                        &mut self.users,
                        &mut self.user_queue,
                        key,
                        (&a.user_id, &a.login),
                        ts,
                    );
                    u.supporter = true;
                    u.last_seen_ms = u.last_seen_ms.max(ts);
                }
            }
            Some(Kind::StreamEnded(_)) => self.finish(out),
            Some(Kind::Command(_)) => {}
            Some(Kind::ChatCleared(_) | Kind::UserNotice(_)) | None => {}
        }
    }

    fn on_moderated(
        &mut self,
        user_id: &str,
        login: &str,
        detail: String,
        ts: i64,
        out: &mut Vec<DetectorOutput>,
    ) {
        let key = user_key(self.platform, user_id, login);
        let p = Arc::clone(&self.params);
        let (u, _) = tracked_user(
            &mut self.users,
            &mut self.user_queue,
            key,
            (user_id, login),
            ts,
        );
        u.last_seen_ms = u.last_seen_ms.max(ts);
        if p.params.moderator_actions {
            u.observe(
                Observation {
                    kind: EvidenceKind::ModeratorAction,
                    weight: 1.0,
                    observed: 1.0,
                    norm: 0.0,
                    threshold: 1.0,
                    detail: Cow::Owned(detail),
                },
                ts,
                &p.params,
            );
        }
        self.evaluate(key, ts, out);
    }

    fn on_message(&mut self, ev: &ChatEvent, m: &ChatMessage, out: &mut Vec<DetectorOutput>) {
        let ts = ev.ts_ms;
        let params = Arc::clone(&self.params);
        let p = &params.params;
        let no_author = Author::default();
        let author = m.author.as_ref().unwrap_or(&no_author);
        let key = user_key(self.platform, &author.user_id, &author.login);
        // Normal form, similarity key, hashes, length and links: once per
        // distinct text.
        let facts = crate::text::facts(&m.text);
        let normalized = facts.normalized.as_str();
        let (norm_hash, key_hash) = (facts.norm_hash, facts.key_hash);
        // Length only matters from the shortest length threshold up (a
        // text has at least as many bytes as graphemes).
        let graphemes =
            if m.text.len() >= p.wall_min_graphemes.min(p.long_message_graphemes) as usize {
                facts.graphemes
            } else {
                0
            };
        let allowed = !params.allowed_keys.is_empty() && params.allowed_keys.contains(&key_hash);
        let link = facts.links.iter().find(|l| {
            !params
                .allowed_domains
                .iter()
                .any(|d| links::host_is_under(&l.host, d))
        });

        // Remember who wrote this message, for deletions that only name it.
        if !ev.event_id.is_empty() {
            let mid = stable_hash(&ev.event_id);
            self.message_ids.push_back((mid, key));
            if let Some(index) = &mut self.message_index {
                index.insert(mid, key);
            }
            while self.message_ids.len() > p.max_tracked_message_ids as usize {
                if let Some((old, _)) = self.message_ids.pop_front()
                    && let Some(index) = &mut self.message_index
                {
                    index.remove(&old);
                }
            }
        }

        let (u, is_new) = tracked_user(
            &mut self.users,
            &mut self.user_queue,
            key,
            (&author.user_id, &author.login),
            ts,
        );
        u.fill_names(&author.user_id, &author.login);
        if is_new {
            u.trusted = is_trusted(&params, u.login());
        }
        let mut first_time = false;
        if let Some(r) = &author.roles {
            u.roles = pack_roles(r);
            first_time = r.first_time_chatter;
        }
        if m.bits > 0 {
            u.supporter = true;
        }
        if u.messages > 0 && ts > u.prev_ts_ms {
            let secs = (ts.saturating_sub(u.prev_ts_ms) / 1000) as usize;
            if let Some(slot) = self.gap_histogram.get_mut(secs) {
                *slot += 1;
                self.gap_total = self.gap_total.saturating_add(1);
            }
        }
        let new_user = first_time || u.messages == 0;
        u.prev_ts_ms = ts;
        u.messages += 1;
        u.first_ts_ms = u.first_ts_ms.min(ts);
        u.last_ts_ms = u.last_ts_ms.max(ts);
        u.last_seen_ms = u.last_seen_ms.max(ts);

        let a = self.clusters.assign(
            p,
            Message {
                norm_hash,
                key: &facts.key,
                key_hash,
                letters: facts.letters as u32,
                normalized,
                text: &m.text,
                user: key,
                login: &author.login,
                ts_ms: ts,
                new_user,
                link_domain: link.map(|l| l.domain.as_str()),
                allowed,
                derived: &facts.derived,
            },
        );

        // What this message says about its author, weighed against what is
        // normal in the channel right now.
        // At most one observation of each kind per message: on the stack.
        let mut seen = Seen::new();
        let own = u.note_cluster(a.cluster);
        // 1 when the user is alone in the group, 1/n with n - 1 others: a
        // crowd saying the same is chat. Not for a spam-class event, whose
        // crowd is the spam.
        let in_spam = a.in_active_event && is_spam(a.class);
        let crowd = if in_spam {
            1.0
        } else {
            1.0 / (a.users.max(1) as f64).sqrt()
        };
        let g = graphemes as f64;
        let long = f64::from(p.long_message_graphemes.max(1));
        let copies = if graphemes >= u64::from(p.wall_min_graphemes) {
            facts.copies(&m.text)
        } else {
            1.0
        };
        let wall = !allowed
            && graphemes >= u64::from(p.wall_min_graphemes)
            && f64::from(copies) >= p.wall_min_repetition;
        let long_message = !allowed && !wall && graphemes >= u64::from(p.long_message_graphemes);
        let key_len = facts.key_chars;
        let repeat =
            !allowed && own >= 2 && key_len >= p.repeat_min_letters as usize && !facts.command;
        // Shares before this message. For a message in a spam event, the
        // norm is the share of *other* spam: a channel where waves are the
        // culture discounts them, a single wave that takes over the chat
        // is still spam.
        let own_spam = self
            .clusters
            .get_mut(a.cluster)
            .map_or(0.0, |c| c.spam_recent_at(ts, p.norm_half_life_ms));
        // The user's own marks do not count: how unusual a behaviour is
        // is measured on the other chatters.
        self.norms.decay_to(ts, p.norm_half_life_ms);
        let [own_walls, own_repeats, own_spam_marks] = u.norm_weights(ts, p.norm_half_life_ms);
        let (wall_share, repeat_share, spam_share) = (
            self.norms.share_without(self.norms.walls, own_walls),
            self.norms.share_without(self.norms.repeats, own_repeats),
            self.norms
                .share_without(self.norms.spam, own_spam.max(own_spam_marks)),
        );
        let repeat_share = if in_spam { spam_share } else { repeat_share };
        let counts = u.norm_counts(
            ts,
            [true, wall || long_message, repeat, in_spam],
            p.norm_half_life_ms,
        );
        if counts[3]
            && let Some(c) = self.clusters.get_mut(a.cluster)
        {
            c.add_spam_recent(ts, p.norm_half_life_ms);
        }
        self.norms.observe(ts, counts, p.norm_half_life_ms);
        if wall || long_message {
            let weight = p.wall_weight
                * (g.min(3.0 * long) / long)
                * rarity(wall_share, p.norm_base_share)
                * crowd;
            seen.push(Observation {
                kind: if wall {
                    EvidenceKind::Wall
                } else {
                    EvidenceKind::LongMessage
                },
                weight: if wall { weight } else { weight / 2.0 },
                observed: g,
                norm: wall_share,
                threshold: f64::from(if wall {
                    p.wall_min_graphemes
                } else {
                    p.long_message_graphemes
                }),
                detail: Cow::Borrowed(""),
            });
        }
        if repeat {
            let size = (key_len as f64).min(80.0) / 20.0;
            seen.push(Observation {
                kind: EvidenceKind::RepeatedMessage,
                weight: p.repeat_weight
                    * size
                    * f64::from((own - 1).min(MAX_REPEAT_STEP))
                    * rarity(repeat_share, p.norm_base_share)
                    * crowd,
                observed: f64::from(own),
                norm: repeat_share,
                threshold: 2.0,
                detail: Cow::Borrowed(""),
            });
        }
        if let Some(l) = link.filter(|_| !facts.command) {
            seen.push(Observation {
                kind: EvidenceKind::Link,
                weight: p.link_weight,
                observed: 1.0,
                norm: 0.0,
                threshold: 1.0,
                detail: Cow::Owned(l.domain.clone()),
            });
        }
        let hits = facts.patterns(&params, &m.text);
        if !allowed && let Some(i) = hits.promo {
            seen.push(Observation {
                kind: EvidenceKind::SelfPromotion,
                weight: p.promo_weight,
                observed: 1.0,
                norm: 0.0,
                threshold: 1.0,
                detail: Cow::Owned(p.promo_patterns[i].clone()),
            });
        }
        let event_weight = spam_event_evidence(a.class, p.spam_event_weight)
            * rarity(spam_share, p.spam_norm_base_share);
        // One message in the active event (its author's, or on promotion
        // each earlier member's).
        let spam_event = || Observation {
            kind: EvidenceKind::SpamEvent,
            weight: event_weight,
            observed: 1.0,
            norm: spam_share,
            threshold: 1.0,
            detail: Cow::Borrowed(class_name(a.class)),
        };
        if a.in_active_event && event_weight > 0.0 && !a.promoted_now {
            seen.push(spam_event());
        }
        if let Some(i) = hits.blacklist {
            seen.push(Observation {
                kind: EvidenceKind::BlacklistedText,
                weight: 1.0,
                observed: 1.0,
                norm: 0.0,
                threshold: 1.0,
                detail: Cow::Owned(p.blacklist[i].clone()),
            });
        }
        if is_new && !params.name_blacklist.is_empty() {
            let name = format!(
                "{} {}",
                normalize(&author.login),
                normalize(&author.display_name)
            );
            if let Some(i) = params.name_blacklist.matches(&name).iter().next() {
                seen.push(Observation {
                    kind: EvidenceKind::BlacklistedName,
                    weight: 1.0,
                    observed: 1.0,
                    norm: 0.0,
                    threshold: 1.0,
                    detail: Cow::Owned(p.name_blacklist[i].clone()),
                });
            }
        }
        // Slow mode reads the gap histogram: only for users with enough
        // messages to judge their pace.
        let enough = u.messages >= p.min_messages_for_delay.max(2);
        if enough
            && p.fast_weight > 0.0
            && let Some(avg) = u.avg_delay_ms()
        {
            let (slow, _) = slow_mode(self.slow_mode_s, &self.gap_histogram, self.gap_total);
            let delay_threshold = delay_threshold_ms(p, slow);
            if avg < delay_threshold {
                seen.push(Observation {
                    kind: EvidenceKind::FastMessages,
                    weight: p.fast_weight * rarity(repeat_share, p.norm_base_share),
                    observed: avg,
                    norm: f64::from(slow),
                    threshold: delay_threshold,
                    detail: Cow::Borrowed(""),
                });
            }
        }
        for o in seen.drain(..) {
            u.observe(o, ts, p);
        }
        if a.promoted_now && event_weight > 0.0 {
            // Everyone who already posted in the group now has messages in
            // a spam event; credit them in a fixed order.
            let mut members: Vec<u64> = self
                .clusters
                .get(a.cluster)
                .map(|c| c.users.iter().copied().collect())
                .unwrap_or_default();
            members.sort_unstable();
            for member in members {
                if let Some(mu) = self.users.get_mut(&member) {
                    let n = mu.count_in(a.cluster);
                    for _ in 0..n.min(8) {
                        mu.observe(spam_event(), ts, p);
                    }
                }
                if member != key {
                    self.evaluate(member, ts, out);
                }
            }
        }
        self.evaluate(key, ts, out);

        if self.emit_scores {
            let content = self.model.content_probability(&m.text);
            let event = if a.in_active_event {
                class_weight(a.class) * p.score_event_weight
            } else {
                0.0
            };
            out.push(DetectorOutput {
                kind: Some(detector_output::Kind::MessageScore(MessageScore {
                    platform: self.platform as i32,
                    stream_id: self.stream_id.clone(),
                    message_id: ev.event_id.clone(),
                    user_login: author.login.clone(),
                    score: combine(content, event),
                    spam_event_id: if a.in_active_event { a.cluster } else { 0 },
                    ts_ms: ts,
                    spam_event_class: if a.in_active_event { a.class as i32 } else { 0 },
                })),
            });
        }
    }

    /// Flags the user if the evidence reaches the threshold (once; a flag
    /// is never lost).
    fn evaluate(&mut self, key: u64, at_ms: i64, out: &mut Vec<DetectorOutput>) {
        let p = &self.params.params;
        let Some(u) = self.users.get(&key) else {
            return;
        };
        self.norms.decay_to(at_ms, p.norm_half_life_ms);
        if u.flagged || u.exempt(p) {
            return;
        }
        let threshold = if u.has_evidence_outside_budget() {
            p.flag_threshold()
        } else {
            p.flag_threshold() * self.norms.flag_budget_factor(p.flag_budget_per_1000)
        };
        if !u.should_flag(at_ms, threshold, p) {
            return;
        }
        let (slow, inferred) = self.slow_mode();
        let p = &self.params.params;
        let Some(u) = self.users.get_mut(&key) else {
            return;
        };
        u.flagged = true;
        // Moderators' own actions are not flags for them to read.
        if !u.decisive {
            self.norms.add_flag(at_ms, p.norm_half_life_ms);
        }
        out.push(DetectorOutput {
            kind: Some(detector_output::Kind::Decision(Decision {
                platform: self.platform as i32,
                stream_id: self.stream_id.clone(),
                user_id: u.user_id().to_owned(),
                user_login: u.login().to_owned(),
                at_ms,
                triggers: u.triggers(),
                messages_seen: u64::from(u.messages),
                slow_mode_s: slow,
                slow_mode_inferred: inferred,
                suspicion: round3(u.suspicion_at(at_ms, p.suspicion_half_life_ms)),
                flag_threshold: round3(threshold),
            })),
        });
    }

    /// Runs the ticks due by event time `ts_ms`. Call it with wall-clock
    /// time when a live stream is quiet, so spam events still end.
    pub fn advance_to(&mut self, ts_ms: i64, out: &mut Vec<DetectorOutput>) {
        let tick = i64::try_from(self.params.params.tick_ms).unwrap_or(10_000);
        if self.watermark_ms == i64::MIN {
            self.watermark_ms = ts_ms;
            self.next_tick_ms = ts_ms
                .saturating_sub(ts_ms.rem_euclid(tick))
                .saturating_add(tick);
            return;
        }
        if ts_ms <= self.watermark_ms {
            return;
        }
        self.watermark_ms = ts_ms;
        if ts_ms >= self.next_tick_ms {
            // One tick at the last boundary reached, however many passed.
            let boundary = ts_ms.saturating_sub(ts_ms.rem_euclid(tick));
            // Idle users and groups are swept once a minute of event time
            // (each tick that enters a new minute), not on every tick.
            let previous = self.next_tick_ms.saturating_sub(tick);
            let sweep = boundary.div_euclid(SWEEP_MS) != previous.div_euclid(SWEEP_MS);
            self.tick(boundary, sweep, out);
            self.next_tick_ms = boundary.saturating_add(tick);
        }
    }

    fn tick(&mut self, now_ms: i64, sweep: bool, out: &mut Vec<DetectorOutput>) {
        let p = &self.params.params;
        let emit = self.clusters.tick(
            now_ms,
            p.spam_quiet_ms,
            p.cluster_idle_ms,
            p.max_clusters,
            sweep,
        );
        for id in emit {
            self.emit_event(id, out);
        }
        self.evict_users(now_ms, sweep);
    }

    /// Forgets idle users (on a sweep) and the least recently seen beyond
    /// `max_users` (on every tick).
    fn evict_users(&mut self, now_ms: i64, sweep: bool) {
        let p = &self.params.params;
        let idle = i64::try_from(p.user_idle_ms).unwrap_or(i64::MAX);
        if sweep {
            // A user last seen an idle time ago has an entry at least
            // that old (an entry is never later than the user's last
            // sight), so the due entries hold every such user; the others
            // among them are queued again.
            for key in self.user_queue.take_due(now_ms.saturating_sub(idle)) {
                match self.users.get(&key) {
                    None => {}
                    Some(u) if now_ms.saturating_sub(u.last_seen_ms) >= idle => {
                        self.users.remove(&key);
                    }
                    Some(u) => self.user_queue.push(u.last_seen_ms, key),
                }
            }
        }
        let over = self.users.len().saturating_sub(p.max_users as usize);
        if over > 0 {
            let mut by_age: Vec<(i64, u64)> = self
                .users
                .iter()
                .map(|(k, u)| (u.last_seen_ms, *k))
                .collect();
            by_age.sort_unstable();
            for (_, k) in by_age.into_iter().take(over) {
                self.users.remove(&k);
            }
        }
        // Users forgotten for the bound leave entries behind (and one who
        // comes back has two); the queue is rebuilt before it doubles.
        if self.user_queue.len() > 2 * self.users.len() + 1024 {
            self.requeue_users();
        }
    }

    /// Queues every tracked user at their last sight (after a restore, or
    /// to clear the queue of users gone).
    pub(crate) fn requeue_users(&mut self) {
        self.user_queue = self
            .users
            .iter()
            .map(|(k, u)| (u.last_seen_ms, *k))
            .collect();
    }

    fn emit_event(&mut self, id: u64, out: &mut Vec<DetectorOutput>) {
        let Some((c, class_evidence)) = self.clusters.mark_emitted(id, &self.params.params) else {
            return;
        };
        out.push(DetectorOutput {
            kind: Some(detector_output::Kind::SpamEvent(SpamEvent {
                platform: self.platform as i32,
                stream_id: self.stream_id.clone(),
                event_id: c.id,
                fingerprint: c.fingerprint.clone(),
                text: c.text.clone(),
                count: c.count,
                unique_users: c.unique_users(),
                first_seen_ms: c.first_seen_ms,
                last_seen_ms: c.last_seen_ms,
                state: c.state as i32,
                version: c.version,
                sample_users: c.sample_logins(),
                class: c.class as i32,
                spam: is_spam(c.class),
                class_evidence,
            })),
        });
    }

    /// The stream ended: emit the final state of its spam events. The owner
    /// drops the detector afterwards.
    pub fn finish(&mut self, out: &mut Vec<DetectorOutput>) {
        for id in self.clusters.end_all() {
            self.emit_event(id, out);
        }
    }

    /// New params for this stream: re-evaluates every tracked user (in a
    /// fixed order) and flags those the new params catch.
    pub fn set_params(&mut self, params: Arc<CompiledParams>, out: &mut Vec<DetectorOutput>) {
        self.params = params;
        for u in self.users.values_mut() {
            u.trusted = is_trusted(&self.params, u.login());
        }
        let mut keys: Vec<u64> = self.users.keys().copied().collect();
        keys.sort_unstable();
        let at = self.watermark_ms().unwrap_or(0);
        for k in keys {
            self.evaluate(k, at, out);
        }
    }
}

/// Slow mode: `announced`, else inferred from the histogram of gaps
/// between a user's messages (`total` of them): the shortest gap, in whole
/// seconds, that all but a small share of gaps reach. And whether it was
/// inferred.
fn slow_mode(announced: Option<u32>, gaps: &[u32], total: u32) -> (u32, bool) {
    if let Some(s) = announced {
        return (s, false);
    }
    if total < MIN_GAP_SAMPLES {
        return (0, true);
    }
    let allowed = (f64::from(total) * SLOW_MODE_QUANTILE).floor() as u32;
    let mut below = 0u32;
    for (secs, n) in gaps.iter().enumerate() {
        below = below.saturating_add(*n);
        if below > allowed {
            return (if secs >= 2 { secs as u32 } else { 0 }, true);
        }
    }
    (0, true)
}

/// The average delay below which a user's messages are fast, with slow
/// mode at `slow` seconds.
fn delay_threshold_ms(p: &DetectorParams, slow: u32) -> f64 {
    (p.min_avg_delay_ms as f64).max(f64::from(slow) * 1000.0 * p.slow_mode_factor)
}

/// The state of user `key` (`names`: id and login), tracked from now
/// (`ts_ms`) when new; and whether it is new.
fn tracked_user<'a>(
    users: &'a mut FxHashMap<u64, UserState>,
    queue: &mut IdleQueue,
    key: u64,
    names: (&str, &str),
    ts_ms: i64,
) -> (&'a mut UserState, bool) {
    match users.entry(key) {
        Entry::Occupied(e) => (e.into_mut(), false),
        Entry::Vacant(e) => {
            // Queued no later than the caller's `last_seen_ms = ts_ms`.
            queue.push(ts_ms, key);
            (e.insert(UserState::new(names.0, names.1)), true)
        }
    }
}

/// Whether a login is one of the params' trusted users.
fn is_trusted(params: &CompiledParams, login: &str) -> bool {
    if params.trusted.is_empty() || login.is_empty() {
        return false;
    }
    // Twitch logins are lower-case ASCII already: no copy for them.
    let hash = if login
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        stable_hash(login)
    } else {
        stable_hash(&login.to_lowercase())
    };
    params.trusted.contains(&hash)
}

/// Evidence a message in an active event of this class adds to its author:
/// twice as much in a bot wave; none in a crowd reaction, and none in a
/// link wave (its links are evidence already).
fn spam_event_evidence(class: SpamEventClass, weight: f64) -> f64 {
    match class {
        SpamEventClass::BotWave => 2.0 * weight,
        SpamEventClass::Copypasta | SpamEventClass::Flood => weight,
        _ => 0.0,
    }
}

/// The observations of one message, at most one of each kind: on the
/// stack (no allocation per message, and nothing to clear or drop beyond
/// those pushed).
type Seen = SmallVec<[Observation; 8]>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::DetectorParams;

    /// Users forgotten for `max_users` leave their queue entries behind;
    /// the queue still stays within twice the users (plus slack), and
    /// every tracked user keeps an entry no later than their last sight.
    #[test]
    fn the_user_queue_stays_bounded_and_covers_every_user() {
        let p = CompiledParams::new(DetectorParams {
            max_users: 100,
            ..DetectorParams::default()
        })
        .unwrap();
        let model = Arc::new(ScoreModel::bundled());
        let mut d = StreamDetector::new(Platform::Twitch, "c", p, model);
        let mut out = Vec::new();
        let mut longest = 0;
        for i in 0..20_000i64 {
            // 3,000 chatters in turn: each comes back after being pushed
            // out by the bound.
            let login = format!("user{}", i % 3_000);
            let ev = ChatEvent {
                platform: Platform::Twitch as i32,
                stream_id: "c".into(),
                event_id: format!("m{i}"),
                ts_ms: i * 50,
                kind: Some(Kind::Message(ChatMessage {
                    author: Some(Author {
                        login: login.clone(),
                        ..Author::default()
                    }),
                    text: format!("text {i}"),
                    ..ChatMessage::default()
                })),
                ..ChatEvent::default()
            };
            d.handle(&ev, &mut out);
            out.clear();
            longest = longest.max(d.user_queue.len());
            assert!(d.user_queue.len() <= 2 * d.users.len() + 1024 + 200);
        }
        assert!(longest > 1_000, "the bound never left entries: {longest}");
        for (k, u) in &d.users {
            assert!(
                d.user_queue
                    .iter()
                    .any(|(at, key)| key == *k && at <= u.last_seen_ms)
            );
        }
    }

    #[test]
    fn trusted_logins_match_in_any_case() {
        let p = CompiledParams::new(DetectorParams {
            trusted_users: vec!["Nightbot".into(), "ünïbot".into()],
            ..DetectorParams::default()
        })
        .unwrap();
        for login in ["nightbot", "NightBot", "NIGHTBOT", "ünïbot", "ÜNÏBOT"] {
            assert!(is_trusted(&p, login), "{login}");
        }
        for login in ["", "nightbot2", "night bot", "unibot"] {
            assert!(!is_trusted(&p, login), "{login}");
        }
    }
}
