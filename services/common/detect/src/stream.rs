//! The detector of one stream (a Twitch channel or a YouTube video).
//!
//! Pure: [`StreamDetector::handle`] takes one chat event and appends what it
//! caused to an output vector. Time is event time: the largest timestamp
//! seen (the watermark) drives ticks, so a replay gives the same outputs at
//! any speed. Events may arrive out of order; nothing assumes they don't.

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};

use rustc_hash::FxHashMap;
use spamscope_chat::normalize::{grapheme_len, normalize};
use spamscope_proto::v1::{
    Author, ChatEvent, ChatMessage, Decision, DetectorOutput, MessageScore, Platform, SpamEvent,
    chat_event::Kind, detector_output,
};

use crate::clusters::{Clusters, Message, Signer, stable_hash};
use crate::params::CompiledParams;
use crate::score::{ScoreModel, combine};
use crate::user::{UserState, pack_roles};

/// Gap histogram buckets: whole seconds 0..=120.
pub const GAP_BUCKETS: usize = 121;
/// Gaps needed before slow mode is inferred.
const MIN_GAP_SAMPLES: u32 = 30;
/// Slow mode is inferred when at most this share of gaps is shorter.
const SLOW_MODE_QUANTILE: f64 = 0.02;

pub(crate) static SIGNER: LazyLock<Signer> = LazyLock::new(Signer::default);

/// Counters a stream detector keeps about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamCounters {
    pub events: u64,
    /// Deletions whose message (and so author) the detector never saw.
    pub unknown_deletions: u64,
}

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
    pub(crate) clusters: Clusters,
    /// Recent message ids (hashed) and their authors, oldest first.
    pub(crate) message_ids: VecDeque<(u64, u64)>,
    pub(crate) message_index: FxHashMap<u64, u64>,
    /// Slow mode announced by the platform (Twitch ROOMSTATE, YouTube mode
    /// change); `None` until one arrives.
    pub(crate) slow_mode_s: Option<u32>,
    pub(crate) gap_histogram: Vec<u32>,
    pub(crate) counters: StreamCounters,
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
            clusters: Clusters::default(),
            message_ids: VecDeque::new(),
            message_index: FxHashMap::default(),
            slow_mode_s: None,
            gap_histogram: vec![0; GAP_BUCKETS],
            counters: StreamCounters::default(),
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

    pub fn watermark_ms(&self) -> Option<i64> {
        (self.watermark_ms != i64::MIN).then_some(self.watermark_ms)
    }

    /// Slow mode in effect: announced, else inferred from the chat.
    pub fn slow_mode(&self) -> (u32, bool) {
        match self.slow_mode_s {
            Some(s) => (s, false),
            None => (self.inferred_slow_mode_s(), true),
        }
    }

    fn inferred_slow_mode_s(&self) -> u32 {
        let total: u32 = self.gap_histogram.iter().sum();
        if total < MIN_GAP_SAMPLES {
            return 0;
        }
        let allowed = (f64::from(total) * SLOW_MODE_QUANTILE).floor() as u32;
        let mut below = 0;
        for (secs, n) in self.gap_histogram.iter().enumerate() {
            below += n;
            if below > allowed {
                return if secs >= 2 { secs as u32 } else { 0 };
            }
        }
        0
    }

    fn delay_threshold_ms(&self) -> f64 {
        let p = &self.params.params;
        let (slow, _) = self.slow_mode();
        (p.min_avg_delay_ms as f64).max(f64::from(slow) * 1000.0 * p.slow_mode_factor)
    }

    /// Handles one event of this stream.
    pub fn handle(&mut self, ev: &ChatEvent, out: &mut Vec<DetectorOutput>) {
        self.counters.events += 1;
        if self.channel_id.is_empty() && !ev.channel_id.is_empty() {
            self.channel_id.clone_from(&ev.channel_id);
        }
        self.advance_to(ev.ts_ms, out);
        let ts = ev.ts_ms;
        match &ev.kind {
            Some(Kind::Message(m)) => self.on_message(ev, m, out),
            Some(Kind::MessageDeleted(d)) => {
                let key = if !d.user_login.is_empty() || !d.user_id.is_empty() {
                    Some(user_key(self.platform, &d.user_id, &d.user_login))
                } else {
                    self.message_index
                        .get(&stable_hash(&d.target_message_id))
                        .copied()
                };
                match key.and_then(|k| self.users.get_mut(&k).map(|u| (k, u))) {
                    Some((k, u)) => {
                        u.deleted += 1;
                        u.last_seen_ms = u.last_seen_ms.max(ts);
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
                    let u = self
                        .users
                        .entry(key)
                        .or_insert_with(|| UserState::new(&a.user_id, &a.login));
                    u.supporter = true;
                    u.last_seen_ms = u.last_seen_ms.max(ts);
                }
            }
            Some(Kind::StreamEnded(_)) => self.finish(out),
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
        let u = self
            .users
            .entry(key)
            .or_insert_with(|| UserState::new(user_id, login));
        u.moderated = true;
        u.moderated_detail = detail;
        u.last_seen_ms = u.last_seen_ms.max(ts);
        self.evaluate(key, ts, out);
    }

    fn on_message(&mut self, ev: &ChatEvent, m: &ChatMessage, out: &mut Vec<DetectorOutput>) {
        let ts = ev.ts_ms;
        let p = &self.params.params;
        let no_author = Author::default();
        let author = m.author.as_ref().unwrap_or(&no_author);
        let key = user_key(self.platform, &author.user_id, &author.login);
        let normalized = normalize(&m.text);
        let norm_hash = stable_hash(&normalized);
        let graphemes = grapheme_len(&m.text) as u64;

        // Remember who wrote this message, for deletions that only name it.
        if !ev.event_id.is_empty() {
            let mid = stable_hash(&ev.event_id);
            self.message_ids.push_back((mid, key));
            self.message_index.insert(mid, key);
            while self.message_ids.len() > p.max_tracked_message_ids as usize {
                if let Some((old, _)) = self.message_ids.pop_front() {
                    self.message_index.remove(&old);
                }
            }
        }

        let is_new = !self.users.contains_key(&key);
        let u = self
            .users
            .entry(key)
            .or_insert_with(|| UserState::new(&author.user_id, &author.login));
        if u.login.is_empty() {
            u.login.clone_from(&author.login);
        }
        if u.user_id.is_empty() {
            u.user_id.clone_from(&author.user_id);
        }
        if let Some(r) = &author.roles {
            u.roles = pack_roles(r);
        }
        if m.bits > 0 {
            u.supporter = true;
        }
        if u.messages > 0 && ts > u.prev_ts_ms {
            let secs = ((ts - u.prev_ts_ms) / 1000) as usize;
            if let Some(slot) = self.gap_histogram.get_mut(secs) {
                *slot += 1;
            }
        }
        u.prev_ts_ms = ts;
        u.messages += 1;
        u.total_graphemes += graphemes;
        u.first_ts_ms = u.first_ts_ms.min(ts);
        u.last_ts_ms = u.last_ts_ms.max(ts);
        u.last_seen_ms = u.last_seen_ms.max(ts);
        if graphemes >= u64::from(p.repetition_min_graphemes) {
            let ratio = graphemes as f32 / grapheme_len(&normalized).max(1) as f32;
            u.max_repetition = u.max_repetition.max(ratio);
        }

        let params = Arc::clone(&self.params);
        if !params.blacklist.is_empty()
            && let Some(i) = params.blacklist.matches(&normalized).iter().next()
        {
            u.blacklist_hits += 1;
            u.blacklist_detail = format!("text: {}", params.params.blacklist[i]);
        }
        if is_new && !params.name_blacklist.is_empty() {
            let name = format!(
                "{} {}",
                normalize(&author.login),
                normalize(&author.display_name)
            );
            if let Some(i) = params.name_blacklist.matches(&name).iter().next() {
                u.blacklist_hits += 1;
                u.blacklist_detail = format!("name: {}", params.params.name_blacklist[i]);
            }
        }

        let a = self.clusters.assign(
            &SIGNER,
            params.params.similarity_threshold,
            params.params.spam_min_users,
            params.params.spam_min_count,
            Message {
                normalized: &normalized,
                norm_hash,
                text: &m.text,
                user: key,
                login: &author.login,
                ts_ms: ts,
            },
        );
        // Messages of a group are alike, so this message's length stands for
        // the group's when earlier members are credited on promotion.
        let counts_as_spam =
            a.in_active_event && graphemes >= u64::from(params.params.spam_trigger_min_graphemes);
        if let Some(u) = self.users.get_mut(&key) {
            u.note_cluster(a.cluster);
            if counts_as_spam && !a.promoted_now {
                u.spam_event_messages += 1;
            }
        }
        if a.promoted_now && counts_as_spam {
            // Everyone who already posted in the group now has messages in a
            // spam event; credit them in a fixed order.
            let mut members: Vec<u64> = self
                .clusters
                .get(a.cluster)
                .map(|c| c.users.iter().copied().collect())
                .unwrap_or_default();
            members.sort_unstable();
            for member in members {
                if let Some(mu) = self.users.get_mut(&member) {
                    mu.spam_event_messages += mu.count_in(a.cluster);
                }
                if member != key {
                    self.evaluate(member, ts, out);
                }
            }
        }
        self.evaluate(key, ts, out);

        if self.emit_scores {
            let content = self.model.content_probability(&m.text);
            let score = combine(content, a.in_active_event, params.params.score_event_weight);
            out.push(DetectorOutput {
                kind: Some(detector_output::Kind::MessageScore(MessageScore {
                    platform: self.platform as i32,
                    stream_id: self.stream_id.clone(),
                    message_id: ev.event_id.clone(),
                    user_login: author.login.clone(),
                    score,
                    spam_event_id: if a.in_active_event { a.cluster } else { 0 },
                    ts_ms: ts,
                })),
            });
        }
    }

    /// Flags the user if a trigger fires (once; a flag is never lost).
    fn evaluate(&mut self, key: u64, at_ms: i64, out: &mut Vec<DetectorOutput>) {
        let threshold = self.delay_threshold_ms();
        let (slow, inferred) = self.slow_mode();
        let p = &self.params.params;
        let Some(u) = self.users.get_mut(&key) else {
            return;
        };
        if u.flagged || u.exempt(p) {
            return;
        }
        let triggers = u.triggers(p, threshold);
        if triggers.is_empty() {
            return;
        }
        u.flagged = true;
        out.push(DetectorOutput {
            kind: Some(detector_output::Kind::Decision(Decision {
                platform: self.platform as i32,
                stream_id: self.stream_id.clone(),
                user_id: u.user_id.clone(),
                user_login: u.login.clone(),
                at_ms,
                triggers,
                messages_seen: u64::from(u.messages),
                slow_mode_s: slow,
                slow_mode_inferred: inferred,
            })),
        });
    }

    /// Runs the ticks due by event time `ts_ms`. Call it with wall-clock
    /// time when a live stream is quiet, so spam events still end.
    pub fn advance_to(&mut self, ts_ms: i64, out: &mut Vec<DetectorOutput>) {
        let tick = i64::try_from(self.params.params.tick_ms).unwrap_or(10_000);
        if self.watermark_ms == i64::MIN {
            self.watermark_ms = ts_ms;
            self.next_tick_ms = ts_ms - ts_ms.rem_euclid(tick) + tick;
            return;
        }
        if ts_ms <= self.watermark_ms {
            return;
        }
        self.watermark_ms = ts_ms;
        if ts_ms >= self.next_tick_ms {
            // One tick at the last boundary reached, however many passed.
            let boundary = ts_ms - ts_ms.rem_euclid(tick);
            self.tick(boundary, out);
            self.next_tick_ms = boundary + tick;
        }
    }

    fn tick(&mut self, now_ms: i64, out: &mut Vec<DetectorOutput>) {
        let p = &self.params.params;
        let emit = self
            .clusters
            .tick(now_ms, p.spam_quiet_ms, p.cluster_idle_ms, p.max_clusters);
        for id in emit {
            self.emit_event(id, out);
        }
        self.evict_users(now_ms);
    }

    fn evict_users(&mut self, now_ms: i64) {
        let p = &self.params.params;
        let idle = i64::try_from(p.user_idle_ms).unwrap_or(i64::MAX);
        self.users
            .retain(|_, u| now_ms.saturating_sub(u.last_seen_ms) < idle);
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
    }

    fn emit_event(&mut self, id: u64, out: &mut Vec<DetectorOutput>) {
        let Some(c) = self.clusters.mark_emitted(id) else {
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
                sample_users: c.sample_users.clone(),
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
        let mut keys: Vec<u64> = self.users.keys().copied().collect();
        keys.sort_unstable();
        let at = self.watermark_ms().unwrap_or(0);
        for k in keys {
            self.evaluate(k, at, out);
        }
    }
}
