//! Detector parameters: the one place where defaults live.
//!
//! Params are layered defaults → channel → stream. A layer is a JSON object
//! holding only the keys it changes; layering merges key by key and then
//! validates, so an error names the key (`unknown key "max_lenght"`,
//! `similarity_threshold must be in (0, 1]`).

use std::sync::Arc;

use regex::{RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use spamscope_chat::normalize::{normalize, similarity_key};

/// Well-known chat bots: they post the channel's links, timers and
/// repeated notices, which is what a spammer does, and are never flagged.
pub const KNOWN_BOTS: [&str; 14] = [
    "nightbot",
    "fossabot",
    "streamelements",
    "streamlabs",
    "moobot",
    "wizebot",
    "sery_bot",
    "botrixoficial",
    "soundalerts",
    "kofistreambot",
    "supibot",
    "pokemoncommunitygame",
    "frostytoolsdotcom",
    "own3d",
];

/// Self-promotion and begging phrasing, matched against the lower-case
/// text: "follow my channel", "I'm live", "sub 4 sub".
fn default_promo_patterns() -> Vec<String> {
    [
        r"\b(follow|sub(scribe)?|check out|come (watch|see|join)|go to|join)\b.{0,25}\b(my|me)\b.{0,15}\b(channel|stream|twitch|youtube|yt|discord|tiktok|insta(gram)?|page|server)\b",
        r"\b(i'?m|i am|im) (now )?live\b",
        r"\bmy (channel|stream|twitch|youtube|tiktok)\b.{0,30}\b(follow|sub|check|watch|grow|support)",
        r"\b(follow|sub) (4|for) (follow|sub)\b",
        r"\b(help|support) me (grow|reach)\b",
        r"\b(away|close) (from|to) \d+ (followers|subs)\b",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Every tunable of the detector, with its default. Times are milliseconds
/// of event time, lengths are graphemes, letters count letters and digits.
///
/// How a user gets flagged: each message can add evidence (a wall, a
/// repeat of the user's own message, a link, ...); each piece is weighted
/// by how unusual the behaviour is in the channel right now and by the
/// user's roles, summed into a suspicion that halves every
/// `suspicion_half_life_ms`, and the user is flagged when the suspicion
/// reaches `0.5 / sensitivity` (raised past the channel's flag budget).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorParams {
    // ---- flags: how much evidence flags a user ----
    /// Moves along the trade-off between few flags and catching more:
    /// a user is flagged at a suspicion of `0.5 / sensitivity`. 1 is the
    /// default; 2 flags on half the evidence, 0.5 needs twice as much.
    #[schemars(range(min = 0.05, max = 20.0))]
    pub sensitivity: f64,
    /// Suspicion halves after this long without new evidence.
    #[schemars(range(min = 1_000, max = 86_400_000))]
    pub suspicion_half_life_ms: u64,
    /// Flags per 1,000 recent chatters a channel may get at the plain
    /// threshold (counted over `norm_half_life_ms`); past it the threshold
    /// rises in proportion, so a chat where walls are the culture gets its
    /// worst few flagged instead of hundreds. Users with evidence no culture
    /// makes normal (moderator actions, links, self-promotion, blacklists)
    /// are judged at the plain threshold. 0 turns the budget off.
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub flag_budget_per_1000: f64,

    // ---- who is never flagged, and how roles weigh ----
    /// Moderators are never flagged.
    pub exempt_moderators: bool,
    /// The broadcaster / channel owner and platform staff are never flagged.
    pub exempt_broadcaster: bool,
    /// Logins never flagged (the channel's bots); case-insensitive.
    #[schemars(length(max = 10_000))]
    pub trusted_users: Vec<String>,
    /// Evidence against a VIP counts this much (1 = like anyone, 0 = exempt).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub vip_weight: f64,
    /// ...against a verified user (YouTube check mark, Twitch partner).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub verified_weight: f64,
    /// ...against a member / subscriber of fewer than `member_trust_months`.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub member_weight: f64,
    /// ...against a member / subscriber of at least `member_trust_months`.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub trusted_member_weight: f64,
    /// Months of membership from which `trusted_member_weight` applies.
    pub member_trust_months: u32,
    /// ...against a user who paid in this stream (super chat, sticker,
    /// bits, subs, gifts, membership).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub supporter_weight: f64,

    // ---- evidence fed by moderators ----
    /// A moderator timed out, banned or removed the user: flagged at once.
    pub moderator_actions: bool,
    /// Flag after this many of the user's messages were deleted by
    /// moderators (0 disables).
    pub max_deleted_messages: u32,

    // ---- evidence from the user's own messages ----
    /// A message of at least this many graphemes that repeats its unit at
    /// least `wall_min_repetition` times is a wall (emote walls,
    /// `WORD WORD WORD ...`).
    pub wall_min_graphemes: u32,
    /// Walls: how many times the text repeats its unit at least (see
    /// `wall_min_graphemes`).
    #[schemars(range(min = 0.0, max = 100.0))]
    pub wall_min_repetition: f64,
    /// A message of at least this many graphemes is long even when it does
    /// not repeat (ASCII art, essays).
    pub long_message_graphemes: u32,
    /// Evidence of a wall of `long_message_graphemes` in a channel where
    /// nobody posts walls (scales with length, up to three times; a long
    /// message that does not repeat counts half).
    #[schemars(range(min = 0.0, max = 100.0))]
    pub wall_weight: f64,
    /// A user's message similar to one they already sent recently counts
    /// as a repeat when it has at least this many letters and does not
    /// start with `!` (a bot command)...
    pub repeat_min_letters: u32,
    /// ...with this weight per earlier copy, for a 20-letter message
    /// (scales with length up to 4×).
    #[schemars(range(min = 0.0, max = 100.0))]
    pub repeat_weight: f64,
    /// The average delay between the user's messages is below this (macro
    /// spam), over at least `min_messages_for_delay` messages...
    pub min_avg_delay_ms: u64,
    /// Fast messages: how many of the user's messages the average delay
    /// needs (see `min_avg_delay_ms`).
    pub min_messages_for_delay: u32,
    /// ...(with slow mode on, announced or inferred, the threshold becomes
    /// at least `slow_mode × slow_mode_factor`)...
    #[schemars(range(min = 0.0, max = 100.0))]
    pub slow_mode_factor: f64,
    /// ...adds this per message.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub fast_weight: f64,
    /// A link to a domain not in `allowed_domains` (subdomains included),
    /// outside bot commands (`!sr https://...`).
    #[schemars(range(min = 0.0, max = 100.0))]
    pub link_weight: f64,
    /// Domains whose links are normal here (subdomains included): no
    /// link evidence for them.
    #[schemars(length(max = 10_000))]
    pub allowed_domains: Vec<String>,
    /// Self-promotion or begging phrasing (case-insensitive regular
    /// expressions on the lower-case text).
    pub promo_patterns: Vec<String>,
    /// What a message matching `promo_patterns` adds.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub promo_weight: f64,
    /// A message in an active spam event of a spam class (copypasta, flood;
    /// twice this in a bot wave); link waves count as links.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub spam_event_weight: f64,
    /// Case-insensitive regular expressions matched against the normalised
    /// message text, and against the normalised user name (login and
    /// display name): each match is strong evidence (weight 1).
    pub blacklist: Vec<String>,
    /// The same for user names (see `blacklist`).
    pub name_blacklist: Vec<String>,

    // ---- what is normal in this channel right now ----
    /// The channel's recent behaviour (share of walls, of repeats) decays
    /// with this half-life...
    #[schemars(range(min = 1_000, max = 86_400_000))]
    pub norm_half_life_ms: u64,
    /// ...and evidence of a behaviour is divided by `1 + share / base`:
    /// walls while 10 % of the chat posts walls count 1/11 of a wall in
    /// quiet chat.
    #[schemars(range(max = 1.0), extend("exclusiveMinimum" = 0.0))]
    pub norm_base_share: f64,
    /// The same for messages in spam events: a spam wave that takes over
    /// the chat is still spam, so its base share is higher.
    #[schemars(range(max = 1.0), extend("exclusiveMinimum" = 0.0))]
    pub spam_norm_base_share: f64,
    /// Phrases and emotes normal in this channel (matched on the
    /// similarity key: letters and digits, case folded): never evidence,
    /// and their spam events are crowd reactions.
    #[schemars(length(max = 10_000))]
    pub allowed_phrases: Vec<String>,

    // ---- similarity and spam events ----
    /// Estimated Jaccard similarity (character 3-grams of the similarity
    /// key) from which two messages count as the same spam.
    #[schemars(range(max = 1.0), extend("exclusiveMinimum" = 0.0))]
    pub similarity_threshold: f64,
    /// A group of similar messages becomes a spam event with this many
    /// distinct users...
    #[schemars(range(min = 1))]
    pub spam_min_users: u32,
    /// ...and this many messages.
    pub spam_min_count: u32,
    /// A spam event ends after this long without a new message (at least
    /// `tick_ms`).
    pub spam_quiet_ms: u64,
    /// Spam event updates are emitted on this tick of event time.
    #[schemars(range(min = 1_000, max = 600_000))]
    pub tick_ms: u64,
    /// Weight of membership in a spam-class event in the message score
    /// (halved for copypastas; crowd reactions add nothing).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub score_event_weight: f64,
    /// Event classes: a copypasta has at least this many letters in its
    /// unit; shorter text from many users is a crowd reaction...
    pub copypasta_min_letters: u32,
    /// ...a flood has at least this many messages per user...
    #[schemars(range(min = 0.0, max = 100.0))]
    pub flood_min_messages_per_user: f64,
    /// ...a bot wave is copypasta-length text sent about once per user,
    /// with at least this share of first-time chatters (Twitch's first-msg
    /// tag, or the user's first message in the stream), at least
    /// `bot_wave_min_users` users, arriving at least one per
    /// `bot_wave_max_ms_per_user` on average.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub bot_wave_min_new_share: f64,
    /// Bot waves: the fewest users a wave has (see `bot_wave_min_new_share`).
    pub bot_wave_min_users: u32,
    /// Bot waves: the longest average gap between the wave's users, in
    /// milliseconds (see `bot_wave_min_new_share`).
    pub bot_wave_max_ms_per_user: u64,

    // ---- bounded state ----
    /// Users tracked per stream; the least recently seen are evicted beyond.
    #[schemars(range(min = 1, max = 10_000_000))]
    pub max_users: u32,
    /// A user idle for this long is forgotten (flags are reported first).
    pub user_idle_ms: u64,
    /// Groups of similar messages tracked per stream.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_clusters: u32,
    /// A group (or ended spam event) idle for this long is forgotten.
    pub cluster_idle_ms: u64,
    /// Recent message ids remembered per stream to attribute deletions
    /// that do not name the author (YouTube).
    #[schemars(range(min = 1, max = 10_000_000))]
    pub max_tracked_message_ids: u32,
}

impl Default for DetectorParams {
    fn default() -> Self {
        Self {
            sensitivity: 1.0,
            suspicion_half_life_ms: 5 * 60_000,
            flag_budget_per_1000: 3.0,
            exempt_moderators: true,
            exempt_broadcaster: true,
            trusted_users: KNOWN_BOTS.iter().map(|s| (*s).to_owned()).collect(),
            vip_weight: 0.5,
            verified_weight: 0.5,
            member_weight: 0.8,
            trusted_member_weight: 0.5,
            member_trust_months: 12,
            supporter_weight: 0.5,
            moderator_actions: true,
            max_deleted_messages: 1,
            wall_min_graphemes: 60,
            wall_min_repetition: 3.0,
            long_message_graphemes: 150,
            wall_weight: 0.4,
            repeat_min_letters: 8,
            repeat_weight: 0.06,
            min_avg_delay_ms: 1_500,
            min_messages_for_delay: 4,
            slow_mode_factor: 1.2,
            fast_weight: 0.25,
            link_weight: 1.0,
            allowed_domains: vec!["clips.twitch.tv".to_owned()],
            promo_patterns: default_promo_patterns(),
            promo_weight: 0.6,
            spam_event_weight: 0.05,
            blacklist: Vec::new(),
            name_blacklist: Vec::new(),
            norm_half_life_ms: 5 * 60_000,
            norm_base_share: 0.01,
            spam_norm_base_share: 0.1,
            allowed_phrases: Vec::new(),
            similarity_threshold: 0.5,
            spam_min_users: 3,
            spam_min_count: 5,
            spam_quiet_ms: 60_000,
            tick_ms: 10_000,
            score_event_weight: 0.6,
            copypasta_min_letters: 25,
            flood_min_messages_per_user: 3.0,
            bot_wave_min_new_share: 0.8,
            bot_wave_min_users: 5,
            bot_wave_max_ms_per_user: 1_500,
            max_users: 50_000,
            user_idle_ms: 30 * 60_000,
            max_clusters: 5_000,
            cluster_idle_ms: 5 * 60_000,
            max_tracked_message_ids: 20_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    #[error("params: {0} is not a JSON object")]
    NotAnObject(String),
    #[error("params: unknown key {0:?}")]
    UnknownKey(String),
    #[error("params: key {key:?}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: &str, reason: impl Into<String>) -> ParamsError {
    ParamsError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

impl DetectorParams {
    /// Defaults overridden by each layer in turn (channel, then stream).
    pub fn layered(layers: &[&Value]) -> Result<Self, ParamsError> {
        let defaults = serde_json::to_value(Self::default())
            .map_err(|e| ParamsError::NotAnObject(e.to_string()))?;
        let Value::Object(mut merged) = defaults else {
            return Err(ParamsError::NotAnObject("defaults".into()));
        };
        for layer in layers {
            match layer {
                Value::Null => {}
                Value::Object(o) => merge(&mut merged, o)?,
                other => return Err(ParamsError::NotAnObject(other.to_string())),
            }
        }
        let params: Self = serde_json::from_value(Value::Object(merged.clone())).map_err(|e| {
            // Name the key serde choked on: find the first key whose value
            // alone does not deserialise.
            let key = merged
                .iter()
                .find(|(k, v)| {
                    let mut one = Map::new();
                    one.insert((*k).clone(), (*v).clone());
                    serde_json::from_value::<Self>(Value::Object(one)).is_err()
                })
                .map_or_else(|| "?".to_owned(), |(k, _)| k.clone());
            invalid(&key, e.to_string())
        })?;
        params.validate()?;
        Ok(params)
    }

    /// Every key with its type, default, range and meaning (its doc
    /// comment), as a JSON Schema: what the console's params form shows.
    pub fn schema() -> Value {
        serde_json::to_value(schemars::schema_for!(DetectorParams)).unwrap_or(Value::Null)
    }

    /// Checks ranges (the schema states the same ones); the error names the
    /// key.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if !(self.similarity_threshold > 0.0 && self.similarity_threshold <= 1.0) {
            return Err(invalid("similarity_threshold", "must be in (0, 1]"));
        }
        if !(1_000..=600_000).contains(&self.tick_ms) {
            return Err(invalid("tick_ms", "must be between 1000 and 600000"));
        }
        if !(self.sensitivity.is_finite() && (0.05..=20.0).contains(&self.sensitivity)) {
            return Err(invalid("sensitivity", "must be between 0.05 and 20"));
        }
        if !(self.flag_budget_per_1000.is_finite()
            && (0.0..=1000.0).contains(&self.flag_budget_per_1000))
        {
            return Err(invalid(
                "flag_budget_per_1000",
                "must be between 0 and 1000",
            ));
        }
        for (name, v) in [
            ("vip_weight", self.vip_weight),
            ("verified_weight", self.verified_weight),
            ("member_weight", self.member_weight),
            ("trusted_member_weight", self.trusted_member_weight),
            ("supporter_weight", self.supporter_weight),
            ("score_event_weight", self.score_event_weight),
            ("bot_wave_min_new_share", self.bot_wave_min_new_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid(name, "must be in [0, 1]"));
            }
        }
        for (name, v) in [
            ("slow_mode_factor", self.slow_mode_factor),
            ("wall_min_repetition", self.wall_min_repetition),
            ("wall_weight", self.wall_weight),
            ("repeat_weight", self.repeat_weight),
            ("fast_weight", self.fast_weight),
            ("link_weight", self.link_weight),
            ("promo_weight", self.promo_weight),
            ("spam_event_weight", self.spam_event_weight),
            (
                "flood_min_messages_per_user",
                self.flood_min_messages_per_user,
            ),
        ] {
            if !(v.is_finite() && (0.0..=100.0).contains(&v)) {
                return Err(invalid(name, "must be finite, between 0 and 100"));
            }
        }
        for (name, v) in [
            ("norm_base_share", self.norm_base_share),
            ("spam_norm_base_share", self.spam_norm_base_share),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                return Err(invalid(name, "must be in (0, 1]"));
            }
        }
        for (name, v) in [
            ("suspicion_half_life_ms", self.suspicion_half_life_ms),
            ("norm_half_life_ms", self.norm_half_life_ms),
        ] {
            if !(1_000..=86_400_000).contains(&v) {
                return Err(invalid(name, "must be between 1000 and 86400000"));
            }
        }
        if self.spam_min_users == 0 {
            return Err(invalid("spam_min_users", "must be at least 1"));
        }
        if self.spam_quiet_ms < self.tick_ms {
            return Err(invalid("spam_quiet_ms", "must be at least tick_ms"));
        }
        for (name, v, max) in [
            ("max_users", self.max_users, 10_000_000),
            ("max_clusters", self.max_clusters, 1_000_000),
            (
                "max_tracked_message_ids",
                self.max_tracked_message_ids,
                10_000_000,
            ),
        ] {
            if v == 0 || v > max {
                return Err(invalid(name, format!("must be between 1 and {max}")));
            }
        }
        for (name, list) in [
            ("trusted_users", &self.trusted_users),
            ("allowed_domains", &self.allowed_domains),
            ("allowed_phrases", &self.allowed_phrases),
        ] {
            if list.len() > 10_000 {
                return Err(invalid(name, "at most 10000 entries"));
            }
        }
        compile_set("blacklist", &self.blacklist)?;
        compile_set("name_blacklist", &self.name_blacklist)?;
        compile_set("promo_patterns", &self.promo_patterns)?;
        Ok(())
    }

    /// The level of suspicion that flags a user.
    pub fn flag_threshold(&self) -> f64 {
        0.5 / self.sensitivity
    }
}

fn merge(into: &mut Map<String, Value>, layer: &Map<String, Value>) -> Result<(), ParamsError> {
    for (k, v) in layer {
        if !into.contains_key(k) {
            return Err(ParamsError::UnknownKey(k.clone()));
        }
        into.insert(k.clone(), v.clone());
    }
    Ok(())
}

fn compile_set(key: &str, patterns: &[String]) -> Result<RegexSet, ParamsError> {
    RegexSetBuilder::new(patterns)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| invalid(key, e.to_string()))
}

/// Params with their regular expressions compiled, shared by the stream
/// detectors that use them.
#[derive(Debug)]
pub struct CompiledParams {
    /// Unique to this compilation in this process (the text cache keys
    /// pattern results by it).
    pub id: u64,
    pub params: DetectorParams,
    pub blacklist: RegexSet,
    pub name_blacklist: RegexSet,
    pub promo: RegexSet,
    /// Hashes of the trusted logins, lower case.
    pub trusted: rustc_hash::FxHashSet<u64>,
    /// Hashes of the similarity keys of the allowed phrases.
    pub allowed_keys: rustc_hash::FxHashSet<u64>,
    /// Allowed domains, lower case.
    pub allowed_domains: Vec<String>,
}

impl CompiledParams {
    pub fn new(params: DetectorParams) -> Result<Arc<Self>, ParamsError> {
        params.validate()?;
        let hash = crate::stable::stable_hash;
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ok(Arc::new(Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            blacklist: compile_set("blacklist", &params.blacklist)?,
            name_blacklist: compile_set("name_blacklist", &params.name_blacklist)?,
            promo: compile_set("promo_patterns", &params.promo_patterns)?,
            trusted: params
                .trusted_users
                .iter()
                .map(|u| hash(u.trim().trim_start_matches('@').to_lowercase().as_str()))
                .collect(),
            allowed_keys: params
                .allowed_phrases
                .iter()
                .map(|p| hash(&similarity_key(&normalize(p)).key))
                .collect(),
            allowed_domains: params
                .allowed_domains
                .iter()
                .map(|d| d.trim().to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect(),
            params,
        }))
    }

    /// The built-in params, compiled once per process (two regex sets and
    /// a JSON round trip: about as much work as a few thousand messages).
    pub fn defaults() -> Arc<Self> {
        static DEFAULTS: std::sync::LazyLock<Arc<CompiledParams>> =
            std::sync::LazyLock::new(|| {
                #[allow(clippy::expect_used)] // the defaults are validated by a unit test
                CompiledParams::new(DetectorParams::default()).expect("default params are valid")
            });
        Arc::clone(&DEFAULTS)
    }
}

#[cfg(test)]
mod tests {

    /// The schema's ranges are the ones `validate` enforces: every bound it
    /// states is accepted and a step past it is refused, and every key has
    /// its meaning.
    #[test]
    fn schema_states_the_ranges_validate_enforces() {
        let schema = DetectorParams::schema();
        let props = schema["properties"].as_object().unwrap();
        let defaults = serde_json::to_value(DetectorParams::default()).unwrap();
        assert_eq!(props.len(), defaults.as_object().unwrap().len());
        // (spam_quiet_ms must be at least tick_ms: set it out of the way.)
        let ok = |k: &str, v: Value| {
            let mut layer = serde_json::json!({ "spam_quiet_ms": 600_000 });
            layer[k] = v;
            DetectorParams::layered(&[&layer]).is_ok()
        };
        let mut bounds = 0;
        for (k, p) in props {
            assert!(
                p["description"].as_str().is_some_and(|d| d.len() > 10),
                "{k} has no meaning"
            );
            let integer = p["type"] == "integer";
            let step = |b: f64| {
                if integer {
                    1.0
                } else {
                    b.abs().max(1.0) * 1e-6
                }
            };
            let num = |x: f64| {
                if integer {
                    serde_json::json!(x as i64)
                } else {
                    serde_json::json!(x)
                }
            };
            // (Unsigned types state a minimum of 0, which serde enforces.)
            if let Some(min) = p["minimum"].as_f64()
                && !(integer && min == 0.0)
            {
                assert!(ok(k, num(min)), "{k} = {min} refused");
                assert!(!ok(k, num(min - step(min))), "{k} below {min} accepted");
                bounds += 1;
            }
            if let Some(max) = p["maximum"].as_f64()
                && max < 1e15
            {
                assert!(ok(k, num(max)), "{k} = {max} refused");
                assert!(!ok(k, num(max + step(max))), "{k} above {max} accepted");
                bounds += 1;
            }
            if let Some(min) = p["exclusiveMinimum"].as_f64() {
                assert!(!ok(k, num(min)), "{k} = {min} accepted");
                assert!(ok(k, num(min + step(min))), "{k} just above {min} refused");
                bounds += 1;
            }
            if let Some(max) = p["maxItems"].as_u64() {
                let list =
                    |n: u64| Value::Array((0..n).map(|i| Value::String(format!("x{i}"))).collect());
                assert!(ok(k, list(max)) && !ok(k, list(max + 1)), "{k} length");
                bounds += 1;
            }
        }
        assert!(bounds > 40, "only {bounds} bounds stated");
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_valid() {
        DetectorParams::default().validate().unwrap();
        let _ = CompiledParams::defaults();
    }

    #[test]
    fn layers_override_in_order() {
        let channel = json!({"long_message_graphemes": 100, "tick_ms": 5000});
        let stream = json!({"long_message_graphemes": 80});
        let p = DetectorParams::layered(&[&channel, &stream]).unwrap();
        assert_eq!(p.long_message_graphemes, 80);
        assert_eq!(p.tick_ms, 5000);
        assert_eq!(p.spam_min_users, DetectorParams::default().spam_min_users);
    }

    #[test]
    fn errors_name_the_key() {
        let e = DetectorParams::layered(&[&json!({"max_lenght": 1})]).unwrap_err();
        assert!(e.to_string().contains("max_lenght"), "{e}");
        let e = DetectorParams::layered(&[&json!({"similarity_threshold": 2.0})]).unwrap_err();
        assert!(e.to_string().contains("similarity_threshold"), "{e}");
        let e = DetectorParams::layered(&[&json!({"tick_ms": "fast"})]).unwrap_err();
        assert!(e.to_string().contains("tick_ms"), "{e}");
        let e = DetectorParams::layered(&[&json!({"blacklist": ["(unclosed"]})]).unwrap_err();
        assert!(e.to_string().contains("blacklist"), "{e}");
        assert!(DetectorParams::layered(&[&json!([1])]).is_err());
        let e = DetectorParams::layered(&[&json!({"sensitivity": 0})]).unwrap_err();
        assert!(e.to_string().contains("sensitivity"), "{e}");
        let e = DetectorParams::layered(&[&json!({"member_weight": 1.5})]).unwrap_err();
        assert!(e.to_string().contains("member_weight"), "{e}");
        let e = DetectorParams::layered(&[&json!({"promo_patterns": ["(x"]})]).unwrap_err();
        assert!(e.to_string().contains("promo_patterns"), "{e}");
    }
}
