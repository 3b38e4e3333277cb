//! The engine: from chat and detector outputs to suggested and taken
//! actions, under each channel's [`Policy`].
//!
//! It is pure (events and their times in, records out), so a live actor, a
//! backtest over recorded chat and the tests drive the same code:
//!
//! - [`Engine::on_chat`] with every chat event: it remembers the recent
//!   messages of each stream (up to the policy's look-back), who is
//!   protected, and keeps active nukes acting on new copies during their
//!   grace window. Moderators' own timeouts, bans and deletions come out as
//!   [`Output::Moderator`].
//! - [`Engine::on_detector`] with every detector output: a spam event whose
//!   class the policy acts on is suggested ([`Output::NukeSuggested`]) or
//!   nuked at once; a flagged user gets the ladder's next step, suggested
//!   or taken.
//! - [`Engine::nuke`], [`Engine::accept`] and [`Engine::undo`]: what a
//!   moderator asks for.
//!
//! Actions come out as [`Record`]s: `pending` (to send), `dry_run` (the
//! channel is in dry-run), `suggested` or `protected`. Whoever sends them
//! reports the platform's answer back with [`Engine::settle`], which an
//! undo needs (a YouTube ban's id).
//!
//! Parts: this file (chat, detector outputs, nukes, the ladder);
//! `commands` (what moderators ask for: nuke, undo, accept, undo of one
//! action); `snapshot` (the state a shard's checkpoint keeps, and the chat
//! before it read again); `publish` ([`to_detector_output`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde::Serialize;
use spamscope_detect::classes::class_name;
use spamscope_detect::clusters::similarity;
use spamscope_proto::StreamKey;
use spamscope_proto::v1::{
    ChatEvent, DetectorOutput, Platform, Roles, SpamEvent, SpamEventClass, chat_event::Kind,
    detector_output,
};

use crate::action::{Action, ActionKind, Record, Status, Target};
use crate::policy::{MAX_GRACE, MAX_LOOKBACK, Mode, Policies, Policy, Step};

mod commands;
mod publish;
mod snapshot;
pub use publish::to_detector_output;
pub use snapshot::SNAPSHOT_VERSION;

/// Most recent messages kept per stream, whatever the look-back.
pub const MAX_RECENT: usize = 50_000;
/// How far a command's time may be from its stream's newest message
/// before it takes that message's time instead.
const COMMAND_CLOCK_SLACK_MS: i64 = 600_000;
/// Most messages of one user deleted by one step.
const MAX_DELETES_PER_USER: usize = 20;
/// Suggestions kept for a moderator to accept; the oldest go first.
const MAX_SUGGESTIONS: usize = 10_000;
/// Users remembered as protected per stream (moderators, VIPs, the
/// broadcaster seen in chat).
const MAX_PROTECTED: usize = 10_000;
/// Users with strikes remembered per stream.
const MAX_STRUCK: usize = 100_000;
/// Nukes remembered (for undo); the oldest go first.
const MAX_NUKES: usize = 10_000;
/// A moderator's timeout that ends within this long of the one holding
/// the user repeats it (no record of its own).
const REPEAT_SLACK_MS: i64 = 2_000;
/// Spam events remembered per stream (whether each was suggested or
/// nuked already); the oldest go first.
const MAX_EVENTS_SEEN: usize = 10_000;
/// Timeouts and bans remembered for an undo one by one; the oldest go
/// first.
const MAX_ACTED: usize = 100_000;

/// A moderator's own action seen in the chat. It is published as an
/// action record (status `done`, by `moderator`) beside spamscope's own,
/// so the audit trail holds what the moderators did too.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeratorAction {
    /// Its record id (0 where nothing is published: a backtest's warm-up).
    pub id: u64,
    pub stream: String,
    /// Twitch broadcaster id or YouTube channel id, when known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel_id: String,
    pub at_ms: i64,
    /// `timeout`, `ban` or `delete`.
    pub action: &'static str,
    pub user_id: String,
    pub user_login: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u32>,
}

/// A spam event a moderator may nuke (the console's button).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NukeSuggestion {
    pub stream: String,
    pub at_ms: i64,
    pub event_id: u64,
    pub class: &'static str,
    #[serde(skip)]
    pub class_id: SpamEventClass,
    pub users: u64,
    /// Copies a user must have sent to be acted on when it is accepted.
    pub min_copies: usize,
    pub text: String,
    pub by: String,
}

/// What became of a moderator's command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandReply {
    pub stream: String,
    /// The command's event id.
    pub command_id: String,
    pub at_ms: i64,
    /// Empty when it was done.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nuke: Option<NukeReport>,
}

/// What the engine says.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Output {
    Record(Box<Record>),
    NukeSuggested(NukeSuggestion),
    Moderator(ModeratorAction),
    CommandResult(CommandReply),
}

/// What a moderator asked for cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
}

/// Nuke a spam event or a phrase in one stream.
#[derive(Debug, Clone, Default)]
pub struct NukeRequest {
    /// `twitch.xqcow`.
    pub stream: String,
    /// The spam event to nuke; or
    pub event_id: Option<u64>,
    /// a text: messages like it are nuked.
    pub text: Option<String>,
    /// Reach back to this time (default: the policy's look-back).
    pub since_ms: Option<i64>,
    /// Keep acting on new copies this long (default: the policy's grace).
    pub grace: Option<Duration>,
    /// One step for every user (default: each user's next ladder step).
    pub step: Option<Step>,
    /// Act only on users who sent at least this many copies (a flood is a
    /// few users repeating themselves: one copy is a bystander echoing).
    /// 0 or 1: everyone.
    pub min_copies: usize,
    /// Who asks (a moderator's name or a rule).
    pub by: String,
    /// Only report, even where the channel acts.
    pub dry_run: bool,
}

/// What a nuke did at once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NukeReport {
    pub nuke: u64,
    pub stream: String,
    /// Messages that matched, and their distinct senders.
    pub messages: usize,
    pub users: usize,
    /// Users not acted on because they are protected.
    pub protected: usize,
    /// Acting on new copies until then.
    pub until_ms: i64,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
struct Seen {
    ts_ms: i64,
    message_id: String,
    user_id: String,
    login: String,
    text: String,
    roles: Option<Roles>,
}

#[derive(Debug, Clone)]
struct EventSeen {
    class: i32,
    text: String,
    users: u64,
    first_seen_ms: i64,
    /// Acted on (nuke id) or suggested already.
    nuked: Option<u64>,
    suggested: bool,
}

#[derive(Debug, Default)]
struct StreamState {
    platform: i32,
    stream_id: String,
    channel_id: String,
    recent: VecDeque<Seen>,
    /// Login → why the user is never acted on (from their roles in chat).
    protected: HashMap<String, &'static str>,
    /// User → times of spamscope's actions on them (strikes).
    strikes: HashMap<String, VecDeque<i64>>,
    events: HashMap<u64, EventSeen>,
    /// User → the time of the last flag answered (suggested or acted
    /// on): a flag delivered again is not answered twice, a new flag (the
    /// detector forgot the user, then flagged them again) is.
    flag_handled: HashMap<String, i64>,
    /// User → until when a moderator's own timeout or ban holds them
    /// (`i64::MAX` for a ban): spamscope leaves them alone meanwhile.
    held: HashMap<String, i64>,
}

#[derive(Debug)]
struct Nuke {
    id: u64,
    stream: String,
    event_id: Option<u64>,
    text: String,
    by: String,
    step: Option<Step>,
    min_copies: usize,
    /// The earliest message it reaches.
    since_ms: i64,
    dry_run: bool,
    until_ms: i64,
    /// Users acted on by this nuke.
    users: HashSet<String>,
    /// Records of this nuke that an undo takes back: id → action.
    undoable: BTreeMap<u64, (Action, bool)>,
    undone: bool,
}

/// Who asks for an action on a user, why, and how far it goes.
#[derive(Debug)]
struct Ask {
    by: String,
    evidence: String,
    event_id: Option<u64>,
    nuke: Option<u64>,
    /// The step for everyone (else each user's next ladder step).
    step: Option<Step>,
    /// `suggested`, `dry_run` or `pending` (unless the user is protected).
    status: Status,
}

/// What the engine chose not to do, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Actions not taken because a moderator's own timeout or ban already
    /// held the user.
    pub left_to_moderators: u64,
}

/// Users remembered as held by a moderator's timeout or ban per stream.
const MAX_HELD: usize = 100_000;

fn hold(st: &mut StreamState, user: String, until: i64, now: i64) {
    if st.held.len() >= MAX_HELD && !st.held.contains_key(&user) {
        st.held.retain(|_, u| *u > now);
        if st.held.len() >= MAX_HELD {
            return;
        }
    }
    // A new timeout replaces the one before, longer or shorter (a
    // moderator shortening a timeout lifts it), as on Twitch; a ban holds
    // until it is lifted.
    let e = st.held.entry(user).or_insert(until);
    if *e != i64::MAX {
        *e = until;
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Engine {
    counts: Counts,
    policies: Policies,
    /// Least similarity for a message to count as a copy of a nuked text.
    similarity: f64,
    streams: HashMap<String, StreamState>,
    nukes: BTreeMap<u64, Nuke>,
    suggestions: BTreeMap<u64, Record>,
    /// Timeouts and bans sent or reported (dry run), by record id, that a
    /// moderator may undo one by one ([`Engine::undo_action`]).
    acted: BTreeMap<u64, Record>,
    next_id: u64,
}

fn user_of(login: &str, user_id: &str) -> String {
    if login.is_empty() {
        user_id.to_owned()
    } else {
        login.to_lowercase()
    }
}

/// Why a user is never acted on, if they are: the channel's allow list,
/// their roles in the chat, or being the channel itself (a Twitch channel's
/// login is its broadcaster's, which logs without badges still show).
fn protection(
    p: &Policy,
    login: &str,
    roles: Option<&Roles>,
    channel_login: Option<&str>,
) -> Option<&'static str> {
    if p.allows(login) {
        return Some("on the channel's allow list");
    }
    if channel_login.is_some_and(|c| c.eq_ignore_ascii_case(login)) {
        return Some("the broadcaster");
    }
    let r = roles?;
    if r.broadcaster {
        Some("the broadcaster")
    } else if r.moderator || r.staff {
        Some("a moderator")
    } else if r.vip && p.protect_vips {
        Some("a VIP")
    } else {
        None
    }
}

impl Engine {
    pub fn new(policies: Policies) -> Self {
        Self {
            policies,
            similarity: spamscope_detect::DetectorParams::default().similarity_threshold,
            streams: HashMap::new(),
            nukes: BTreeMap::new(),
            suggestions: BTreeMap::new(),
            acted: BTreeMap::new(),
            next_id: 1,
            counts: Counts::default(),
        }
    }

    /// What it chose not to do so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Replaces the policies (from the next event on).
    pub fn set_policies(&mut self, p: Policies) {
        self.policies = p;
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn stream(&mut self, key: &str, platform: i32, stream_id: &str) -> &mut StreamState {
        self.streams
            .entry(key.to_owned())
            .or_insert_with(|| StreamState {
                platform,
                stream_id: stream_id.to_owned(),
                ..StreamState::default()
            })
    }

    /// Feeds one chat event (in time order).
    pub fn on_chat(&mut self, ev: &ChatEvent, out: &mut Vec<Output>) {
        self.chat(ev, out, true);
    }

    /// [`Engine::on_chat`]; without `act`, only what it remembers of the
    /// chat (recent messages, protected users, moderators' holds): no nuke
    /// acts on the message, no command runs.
    fn chat(&mut self, ev: &ChatEvent, out: &mut Vec<Output>, act: bool) {
        let key = ev.stream_key();
        let now = ev.ts_ms;
        // A moderator's action becomes a record (not when only remembered:
        // its record was published the first time), unless it repeats one
        // that holds the user already (two moderators, or a moderator and
        // a bot, timing out the same user within a second: Twitch sends
        // both).
        let held_until = |login: &str, id: &str| {
            self.streams
                .get(&key)
                .and_then(|st| st.held.get(&user_of(login, id)))
                .copied()
        };
        let moderated = match &ev.kind {
            Some(Kind::UserTimedOut(t)) => {
                let until = now.saturating_add(i64::from(t.duration_s) * 1000);
                held_until(&t.user_login, &t.user_id)
                    .is_none_or(|h| h.abs_diff(until) > REPEAT_SLACK_MS as u64)
            }
            Some(Kind::UserBanned(b)) => held_until(&b.user_login, &b.user_id) != Some(i64::MAX),
            Some(Kind::MessageDeleted(d)) => !d.by_author,
            _ => false,
        };
        let record_id = if act && moderated { self.id() } else { 0 };
        let policy = self.policies.of(&key);
        let st = self
            .streams
            .entry(key.clone())
            .or_insert_with(|| StreamState {
                platform: ev.platform,
                stream_id: ev.stream_id.clone(),
                ..StreamState::default()
            });
        if !ev.channel_id.is_empty() && st.channel_id != ev.channel_id {
            st.channel_id.clone_from(&ev.channel_id);
        }
        let channel_id = if moderated {
            st.channel_id.clone()
        } else {
            String::new()
        };
        let moderator = |action, user_id: &str, login: &str, duration_s| {
            Output::Moderator(ModeratorAction {
                id: record_id,
                stream: key.clone(),
                channel_id: channel_id.clone(),
                at_ms: now,
                action,
                user_id: user_id.to_owned(),
                user_login: login.to_owned(),
                duration_s,
            })
        };
        match &ev.kind {
            Some(Kind::Message(m)) => {
                let a = m.author.clone().unwrap_or_default();
                let seen = Seen {
                    ts_ms: now,
                    message_id: ev.event_id.clone(),
                    user_id: a.user_id,
                    login: a.login,
                    text: m.text.clone(),
                    roles: a.roles,
                };
                let user = user_of(&seen.login, &seen.user_id);
                let channel = (ev.platform() == Platform::Twitch).then_some(ev.stream_id.as_str());
                if let Some(why) = protection(policy, &seen.login, seen.roles.as_ref(), channel)
                    && (st.protected.len() < MAX_PROTECTED || st.protected.contains_key(&user))
                {
                    st.protected.insert(user, why);
                }
                // Forget what is older than the look-back.
                let horizon = now.saturating_sub(policy.lookback.as_millis() as i64);
                while st
                    .recent
                    .front()
                    .is_some_and(|s| s.ts_ms < horizon || st.recent.len() >= MAX_RECENT)
                {
                    st.recent.pop_front();
                }
                if act {
                    st.recent.push_back(seen.clone());
                    self.grace_check(&key, &seen, out);
                } else {
                    st.recent.push_back(seen);
                }
            }
            Some(Kind::UserTimedOut(t)) => {
                let until = now.saturating_add(i64::from(t.duration_s) * 1000);
                hold(st, user_of(&t.user_login, &t.user_id), until, now);
                out.push(moderator(
                    "timeout",
                    &t.user_id,
                    &t.user_login,
                    Some(t.duration_s),
                ));
            }
            Some(Kind::UserBanned(b)) => {
                hold(st, user_of(&b.user_login, &b.user_id), i64::MAX, now);
                out.push(moderator("ban", &b.user_id, &b.user_login, None))
            }
            Some(Kind::MessageDeleted(d)) if !d.by_author => {
                out.push(moderator("delete", &d.user_id, &d.user_login, None));
            }
            Some(Kind::Command(c)) if act => {
                let reply = self.command(ev, c, out);
                out.push(Output::CommandResult(reply));
            }
            Some(Kind::StreamEnded(_)) => {
                // Nukes of an ended stream stop; the stream's memory goes.
                for n in self.nukes.values_mut().filter(|n| n.stream == key) {
                    n.until_ms = n.until_ms.min(now);
                }
                self.streams.remove(&key);
            }
            _ => {}
        }
    }

    /// A new message during an active nuke's grace window: act on its
    /// sender if it is a copy.
    fn grace_check(&mut self, key: &str, seen: &Seen, out: &mut Vec<Output>) {
        let user = user_of(&seen.login, &seen.user_id);
        let hits: Vec<u64> = self
            .nukes
            .values()
            .filter(|n| {
                n.stream == key
                    && !n.undone
                    && seen.ts_ms <= n.until_ms
                    && similarity(&n.text, &seen.text) >= self.similarity
            })
            .map(|n| n.id)
            .collect();
        for id in hits {
            let Some(n) = self.nukes.get(&id) else {
                continue;
            };
            let acted = n.users.contains(&user);
            if !acted && n.min_copies > 1 {
                // Only once they have sent enough copies since the nuke's start.
                let copies = self.streams.get(key).map_or(0, |st| {
                    st.recent
                        .iter()
                        .filter(|s| {
                            s.ts_ms >= n.since_ms
                                && user_of(&s.login, &s.user_id) == user
                                && similarity(&n.text, &s.text) >= self.similarity
                        })
                        .count()
                });
                if copies < n.min_copies {
                    continue;
                }
            }
            // A user this nuke already acted on only loses the new copy.
            let step = if acted { Some(Step::Delete) } else { n.step };
            let ask = Ask {
                by: format!("nuke:{id} by {}", n.by),
                evidence: format!("sent a copy during nuke {id}'s grace window"),
                event_id: n.event_id,
                nuke: Some(id),
                step,
                status: if n.dry_run {
                    Status::DryRun
                } else {
                    Status::Pending
                },
            };
            self.act_on_user(
                key,
                &user,
                std::slice::from_ref(seen),
                &ask,
                seen.ts_ms,
                out,
            );
        }
    }

    /// Feeds one detector output.
    pub fn on_detector(&mut self, o: &DetectorOutput, out: &mut Vec<Output>) {
        match &o.kind {
            Some(detector_output::Kind::SpamEvent(e)) => self.on_event(e, out),
            Some(detector_output::Kind::Decision(d)) => {
                let key = StreamKey::format(Platform::of(d.platform), &d.stream_id);
                let policy = self.policies.of(&key).clone();
                let user = user_of(&d.user_login, &d.user_id);
                let st = self.stream(&key, d.platform, &d.stream_id);
                if policy.flagged_users == Mode::Off
                    || st.flag_handled.get(&user).is_some_and(|at| *at >= d.at_ms)
                {
                    return;
                }
                if st.flag_handled.len() >= MAX_STRUCK && !st.flag_handled.contains_key(&user) {
                    // Flags answered longer ago than the strike memory no
                    // longer matter for a repeat.
                    let forget = d
                        .at_ms
                        .saturating_sub(policy.strike_memory.as_millis() as i64);
                    st.flag_handled.retain(|_, at| *at >= forget);
                }
                st.flag_handled.insert(user.clone(), d.at_ms);
                // Their latest message: one suggestion per flag, and the
                // next rung, a timeout, clears the rest on the platform.
                let mut theirs: Vec<Seen> = st
                    .recent
                    .iter()
                    .rev()
                    .find(|s| user_of(&s.login, &s.user_id) == user)
                    .cloned()
                    .into_iter()
                    .collect();
                if theirs.is_empty() {
                    theirs.push(Seen {
                        ts_ms: d.at_ms,
                        message_id: String::new(),
                        user_id: d.user_id.clone(),
                        login: d.user_login.clone(),
                        text: String::new(),
                        roles: None,
                    });
                }
                let evidence: Vec<String> = d
                    .triggers
                    .iter()
                    .map(|t| {
                        if t.detail.is_empty() {
                            t.name.clone()
                        } else {
                            format!("{} ({})", t.name, t.detail)
                        }
                    })
                    .collect();
                let evidence = format!(
                    "flagged: suspicion {:.2} of {:.2}: {}",
                    d.suspicion,
                    d.flag_threshold,
                    evidence.join(", ")
                );
                let ask = Ask {
                    by: "policy:flagged_users".to_owned(),
                    evidence,
                    event_id: None,
                    nuke: None,
                    step: None,
                    status: match policy.flagged_users {
                        Mode::Suggest => Status::Suggested,
                        _ if policy.dry_run => Status::DryRun,
                        _ => Status::Pending,
                    },
                };
                let before = out.len();
                self.act_on_user(&key, &user, &theirs, &ask, d.at_ms, out);
                let new: Vec<Record> = out[before..]
                    .iter()
                    .filter_map(|o| match o {
                        Output::Record(r) if r.status == Status::Suggested => Some((**r).clone()),
                        _ => None,
                    })
                    .collect();
                for r in new {
                    self.keep_suggestion(r);
                }
            }
            _ => {}
        }
    }

    fn keep_suggestion(&mut self, r: Record) {
        if self.suggestions.len() >= MAX_SUGGESTIONS {
            self.suggestions.pop_first();
        }
        self.suggestions.insert(r.id, r);
    }

    fn on_event(&mut self, e: &SpamEvent, out: &mut Vec<Output>) {
        let key = StreamKey::format(Platform::of(e.platform), &e.stream_id);
        let policy = self.policies.of(&key).clone();
        let st = self.stream(&key, e.platform, &e.stream_id);
        // A channel that never ends (Twitch) sees events without end: the
        // oldest are forgotten past a bound (their updates are long over).
        if st.events.len() >= MAX_EVENTS_SEEN
            && !st.events.contains_key(&e.event_id)
            && let Some(oldest) = st
                .events
                .iter()
                .min_by_key(|(_, s)| s.first_seen_ms)
                .map(|(id, _)| *id)
        {
            st.events.remove(&oldest);
        }
        let seen = st.events.entry(e.event_id).or_insert_with(|| EventSeen {
            class: e.class,
            text: e.text.clone(),
            users: 0,
            first_seen_ms: e.first_seen_ms,
            nuked: None,
            suggested: false,
        });
        seen.class = e.class;
        seen.users = e.unique_users;
        if !e.text.is_empty() {
            seen.text.clone_from(&e.text);
        }
        let mode = policy.for_class(e.class());
        if !e.spam || mode == Mode::Off || e.unique_users < policy.min_event_users {
            return;
        }
        let class = class_name(e.class());
        match mode {
            Mode::Suggest if !seen.suggested => {
                seen.suggested = true;
                out.push(Output::NukeSuggested(NukeSuggestion {
                    stream: key,
                    at_ms: e.last_seen_ms,
                    event_id: e.event_id,
                    class,
                    class_id: e.class(),
                    users: e.unique_users,
                    min_copies: min_copies_for(e.class()),
                    text: e.text.clone(),
                    by: format!("policy:{class}"),
                }));
            }
            Mode::Auto if seen.nuked.is_none() => {
                let req = NukeRequest {
                    stream: key,
                    event_id: Some(e.event_id),
                    by: format!("policy:{class}"),
                    dry_run: policy.dry_run,
                    min_copies: min_copies_for(e.class()),
                    ..NukeRequest::default()
                };
                // The event exists (just recorded), so this cannot fail.
                let _ = self.nuke(&req, e.last_seen_ms, out);
            }
            _ => {}
        }
    }

    /// Nukes a spam event or a phrase: every user who sent a copy since
    /// `since_ms` (or within the look-back) gets their next step, and new
    /// copies during the grace window too. Moderators, the broadcaster and
    /// allowed users are never touched.
    pub fn nuke(
        &mut self,
        req: &NukeRequest,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<NukeReport, EngineError> {
        let key = StreamKey::parse(&req.stream)
            .map_err(|e| EngineError::Invalid(format!("stream: {e}")))?
            .to_string();
        let policy = self.policies.of(&key).clone();
        let grace = req.grace.unwrap_or(policy.grace);
        if grace > MAX_GRACE {
            return Err(EngineError::Invalid(format!(
                "grace: at most {}s",
                MAX_GRACE.as_secs()
            )));
        }
        let st = self
            .streams
            .get_mut(&key)
            .ok_or_else(|| EngineError::NotFound(format!("no recent chat in {key}")))?;
        let default_since = now_ms.saturating_sub(policy.lookback.as_millis() as i64);
        let (text, event_id, default_since) = match (req.event_id, &req.text) {
            (Some(id), None) => {
                let ev = st
                    .events
                    .get(&id)
                    .ok_or_else(|| EngineError::NotFound(format!("no spam event {id} in {key}")))?;
                // The whole event, as far back as the chat is remembered.
                (
                    ev.text.clone(),
                    Some(id),
                    default_since.min(ev.first_seen_ms),
                )
            }
            (None, Some(t)) if !t.trim().is_empty() => (t.clone(), None, default_since),
            _ => {
                return Err(EngineError::Invalid(
                    "name either a spam event or a text to nuke".into(),
                ));
            }
        };
        let lookback_from = now_ms.saturating_sub(MAX_LOOKBACK.as_millis() as i64);
        let since = req.since_ms.unwrap_or(default_since).max(lookback_from);
        let threshold = self.similarity;
        let matched: Vec<Seen> = st
            .recent
            .iter()
            // Everything remembered came before the nuke, whatever its
            // time says: a platform's clock and the gateway's differ.
            .filter(|s| s.ts_ms >= since && similarity(&text, &s.text) >= threshold)
            .cloned()
            .collect();
        if let Some(id) = event_id
            && let Some(ev) = st.events.get_mut(&id)
        {
            ev.nuked = Some(self.next_id);
        }
        let id = self.id();
        let dry_run = req.dry_run || policy.dry_run;
        if self.nukes.len() >= MAX_NUKES {
            self.nukes.pop_first();
        }
        self.nukes.insert(
            id,
            Nuke {
                id,
                stream: key.clone(),
                event_id,
                text,
                by: req.by.clone(),
                step: req.step,
                min_copies: req.min_copies,
                since_ms: since,
                dry_run,
                until_ms: now_ms.saturating_add(grace.as_millis() as i64),
                users: HashSet::new(),
                undoable: BTreeMap::new(),
                undone: false,
            },
        );
        // Each user's matching messages, in order of their first.
        let mut by_user: Vec<(String, Vec<Seen>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for s in matched.iter() {
            let u = user_of(&s.login, &s.user_id);
            let i = *index.entry(u.clone()).or_insert_with(|| {
                by_user.push((u, Vec::new()));
                by_user.len() - 1
            });
            if by_user[i].1.len() < MAX_DELETES_PER_USER {
                by_user[i].1.push(s.clone());
            }
        }
        by_user.retain(|(_, msgs)| msgs.len() >= req.min_copies);
        let what = match event_id {
            Some(e) => format!("spam event {e}"),
            None => "the nuked text".to_owned(),
        };
        let since_text = time_text(since);
        let mut protected = 0;
        for (user, msgs) in &by_user {
            let ask = Ask {
                by: format!("nuke:{id} by {}", req.by),
                evidence: format!(
                    "sent {} cop{} of {what} since {since_text}",
                    msgs.len(),
                    if msgs.len() == 1 { "y" } else { "ies" },
                ),
                event_id,
                nuke: Some(id),
                step: req.step,
                status: if dry_run {
                    Status::DryRun
                } else {
                    Status::Pending
                },
            };
            let before = out.len();
            self.act_on_user(&key, user, msgs, &ask, now_ms, out);
            if out[before..].iter().any(
                |o| matches!(o, Output::Record(r) if matches!(r.status, Status::Protected { .. })),
            ) {
                protected += 1;
            }
        }
        let until_ms = self.nukes.get(&id).map_or(now_ms, |n| n.until_ms);
        Ok(NukeReport {
            nuke: id,
            stream: key,
            messages: by_user.iter().map(|(_, m)| m.len()).sum(),
            users: by_user.len(),
            protected,
            until_ms,
            dry_run,
        })
    }

    /// One user's next step (or `ask.step`), on the messages given (the
    /// newest last; a deletion removes each of them).
    fn act_on_user(
        &mut self,
        key: &str,
        user: &str,
        msgs: &[Seen],
        ask: &Ask,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        let policy = self.policies.of(key);
        let Some(first) = msgs.first() else { return };
        let Some(st) = self.streams.get_mut(key) else {
            return;
        };
        if st.held.get(user).is_some_and(|until| *until > now_ms) {
            // The moderators got there first.
            self.counts.left_to_moderators += 1;
            return;
        }
        let channel =
            (Platform::of(st.platform) == Platform::Twitch).then_some(st.stream_id.as_str());
        let protected = protection(policy, &first.login, first.roles.as_ref(), channel)
            .or_else(|| st.protected.get(user).copied());
        // Strikes within the memory.
        let memory = policy.strike_memory.as_millis() as i64;
        let strikes = st.strikes.get_mut(user).map_or(0, |q| {
            while q.front().is_some_and(|t| *t < now_ms - memory) {
                q.pop_front();
            }
            q.len()
        });
        let mut step = ask.step.unwrap_or_else(|| policy.step(strikes));
        let ids: Vec<&str> = msgs
            .iter()
            .map(|m| m.message_id.as_str())
            .filter(|m| !m.is_empty())
            .collect();
        if step == Step::Delete && ids.is_empty() {
            // Nothing to delete: the ladder's next rung that is not one.
            match policy
                .ladder
                .iter()
                .skip(strikes)
                .find(|s| **s != Step::Delete)
            {
                Some(s) => step = *s,
                None => return,
            }
        }
        let kinds: Vec<(ActionKind, &str)> = match step {
            Step::Delete => ids.into_iter().map(|m| (ActionKind::Delete, m)).collect(),
            Step::Timeout(d) => vec![(
                ActionKind::Timeout {
                    seconds: u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
                },
                "",
            )],
            Step::Ban => vec![(ActionKind::Ban, "")],
        };
        let status = match protected {
            Some(why) => Status::Protected {
                reason: format!("{} is {why}", first.login),
            },
            None => ask.status.clone(),
        };
        let counts = matches!(status, Status::DryRun | Status::Pending);
        if counts && (st.strikes.len() < MAX_STRUCK || st.strikes.contains_key(user)) {
            st.strikes
                .entry(user.to_owned())
                .or_default()
                .push_back(now_ms);
        }
        let reason: String = format!("spamscope: {}", ask.evidence)
            .chars()
            .take(500)
            .collect();
        let records: Vec<Record> = kinds
            .into_iter()
            .map(|(kind, message_id)| Record {
                id: 0,
                at_ms: now_ms,
                stream: key.to_owned(),
                action: Action {
                    kind,
                    target: Target {
                        platform: st.platform,
                        stream_id: st.stream_id.clone(),
                        channel_id: st.channel_id.clone(),
                        user_id: first.user_id.clone(),
                        user_login: first.login.clone(),
                        message_id: message_id.to_owned(),
                    },
                    reason: reason.clone(),
                    undo_handle: String::new(),
                },
                status: status.clone(),
                by: ask.by.clone(),
                evidence: ask.evidence.clone(),
                event_id: ask.event_id,
                nuke: ask.nuke,
                undoes: None,
            })
            .collect();
        for mut r in records {
            r.id = self.id();
            if counts && let Some(n) = ask.nuke.and_then(|n| self.nukes.get_mut(&n)) {
                n.users.insert(user.to_owned());
                if r.action.kind.undoable() {
                    n.undoable.insert(r.id, (r.action.clone(), true));
                }
            }
            if counts {
                self.remember_acted(&r);
            }
            out.push(Output::Record(Box::new(r)));
        }
    }

    /// Keeps a timeout or ban for an undo of its own.
    fn remember_acted(&mut self, r: &Record) {
        if !r.action.kind.undoable() {
            return;
        }
        if self.acted.len() >= MAX_ACTED {
            self.acted.pop_first();
        }
        self.acted.insert(r.id, r.clone());
    }
}

/// Copies a user must have sent before a nuke of an event of this class
/// acts on them: a flood is its few repeaters, not whoever echoed once.
pub fn min_copies_for(class: SpamEventClass) -> usize {
    if class == SpamEventClass::Flood { 2 } else { 1 }
}

/// A time for people (UTC, RFC 3339).
fn time_text(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}
