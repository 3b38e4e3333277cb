//! ChannelChat and SpamEventDetail: what JetStream keeps of a stream, read
//! back (see [`crate::kept`]).
//!
//! - A chat page is the newest events before a sequence, with the scores
//!   the detector published for its messages. Its page token is the
//!   sequence of its oldest stored message.
//! - An event's detail is its last update, the scores attributed to it
//!   (users, timeline) and its messages, found by scanning the stream's
//!   outputs and chat back to the event's start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use prost::Message;
use spamscope_bus::subjects;
use spamscope_proto::StreamKey;
use spamscope_proto::v1::{
    ChannelActionsResponse, ChannelChatResponse, ChatEvent, DetectorOutput, EventUser,
    MessageScore, NukeSuggestion, SpamEvent, SpamEventDetailResponse, TimelinePoint,
    UserActivityResponse, chat_event, detector_output,
};

use crate::kept::{self, Kept, ScanEnd};
use crate::{Gateway, GatewayError};

/// Stored messages one call reads at most, in all.
const MAX_VISIT: usize = 300_000;
/// A stream's latest outputs looked through for its suggested nukes, and
/// for how long at most.
const SUGGESTIONS_VISIT: usize = 20_000;
const SUGGESTIONS_TIME: std::time::Duration = std::time::Duration::from_millis(500);
/// Scores looked through for one chat page, per event asked for.
const SCORES_PER_EVENT: usize = 16;
/// Timeline bucket of an event, in milliseconds.
pub const TIMELINE_BUCKET_MS: i64 = 10_000;
/// Users listed for an event.
const MAX_USERS: usize = 100;
/// Moderator actions listed for a user, and pending ones held while
/// reading back (a deletion is read before the message it names).
const MAX_ACTIONS: usize = 1000;
const MAX_PENDING: usize = 20_000;
/// Outputs up to this long before an event's first message still belong
/// to the scan (outputs of one stream are published in chat order, but a
/// decision can carry an earlier time).
const SLACK_MS: i64 = 60_000;

fn unavailable(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Unavailable(e.to_string())
}

/// The event time of a detector output.
fn output_ms(o: &DetectorOutput) -> Option<i64> {
    match o.kind.as_ref()? {
        detector_output::Kind::SpamEvent(e) => Some(e.last_seen_ms),
        detector_output::Kind::Decision(d) => Some(d.at_ms),
        detector_output::Kind::MessageScore(s) => Some(s.ts_ms),
        detector_output::Kind::Action(a) => Some(a.at_ms),
        detector_output::Kind::NukeSuggestion(n) => Some(n.at_ms),
        detector_output::Kind::CommandResult(c) => Some(c.at_ms),
    }
}

impl Gateway {
    /// The audit trail of `key` (of `user` when given) from the history
    /// store, newest first, each record at its latest status; with the
    /// first page of everyone's trail, the stream's recent suggested nukes.
    pub async fn actions_of(
        &self,
        key: &StreamKey,
        user: &str,
        limit: usize,
        page_token: Option<String>,
    ) -> Result<ChannelActionsResponse, GatewayError> {
        let user = (!user.is_empty()).then(|| user.to_owned());
        let suggestions = async {
            if user.is_none() && page_token.is_none() {
                self.suggestions_of(key, limit).await
            } else {
                Ok(Vec::new())
            }
        };
        let page =
            self.history
                .channel_actions(key.to_string(), user.clone(), limit, page_token.clone());
        let (nuke_suggestions, page) = tokio::join!(suggestions, page);
        let (nuke_suggestions, page) = (nuke_suggestions?, page?);
        Ok(ChannelActionsResponse {
            complete: page.next.is_none(),
            next_page_token: page.next.unwrap_or_default(),
            actions: page.items,
            nuke_suggestions,
        })
    }

    /// The stream's suggested nukes among its latest outputs on SPAM
    /// ([`SUGGESTIONS_VISIT`] at most), newest first, one per spam event.
    async fn suggestions_of(
        &self,
        key: &StreamKey,
        limit: usize,
    ) -> Result<Vec<NukeSuggestion>, GatewayError> {
        let mut spam = self.spam_stream().await?;
        let (first, last) = kept::bounds(&mut spam).await.map_err(unavailable)?;
        let subject = subjects::spam_stream(key.platform.key(), &key.id);
        let mut suggested: BTreeMap<u64, NukeSuggestion> = BTreeMap::new();
        // A stream with few outputs among many reads slowly backwards:
        // the newest suggestions found in the time allowed are enough.
        let scan = kept::scan_back(&spam, first, &subject, last + 1, SUGGESTIONS_VISIT, |m| {
            if let Some(detector_output::Kind::NukeSuggestion(n)) =
                DetectorOutput::decode(m.payload).ok().and_then(|o| o.kind)
            {
                suggested.entry(n.spam_event_id).or_insert(n);
            }
            if suggested.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if let Ok(r) = tokio::time::timeout(SUGGESTIONS_TIME, scan).await {
            r.map_err(unavailable)?;
        }
        let mut out: Vec<NukeSuggestion> = suggested.into_values().collect();
        out.sort_by_key(|n| std::cmp::Reverse(n.at_ms));
        Ok(out)
    }

    async fn spam_stream(&self) -> Result<Stream, GatewayError> {
        self.bus
            .js
            .get_stream(subjects::SPAM_STREAM)
            .await
            .map_err(|e| unavailable(format!("JetStream: {e}")))
    }

    pub(crate) async fn chat_stream(
        &self,
        key: &StreamKey,
    ) -> Result<(Stream, String), GatewayError> {
        let shard = spamscope_routing::shard_of(&key.to_string(), self.shards);
        let stream = self
            .bus
            .js
            .get_stream(subjects::chat_stream(shard))
            .await
            .map_err(|e| unavailable(format!("JetStream: {e}")))?;
        Ok((stream, subjects::chat(shard, key.platform.key(), &key.id)))
    }

    /// The sequence after the last chat of `subject`; None when none is kept.
    pub(crate) async fn chat_end(
        stream: &Stream,
        subject: &str,
    ) -> Result<Option<u64>, GatewayError> {
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(Some(m.sequence + 1)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(format!("JetStream: {e}"))),
        }
    }

    /// A page of the kept chat of `key`: about `limit` events before
    /// sequence `before` (None: the newest).
    pub async fn chat_page(
        &self,
        key: &StreamKey,
        limit: usize,
        before: Option<u64>,
    ) -> Result<ChannelChatResponse, GatewayError> {
        let (mut stream, subject) = self.chat_stream(key).await?;
        let before = match before {
            Some(b) => b,
            None => match Self::chat_end(&stream, &subject).await? {
                Some(b) => b,
                None => return Ok(ChannelChatResponse::default()),
            },
        };
        let (first, _) = kept::bounds(&mut stream).await.map_err(unavailable)?;
        // Newest first while reading; the page is returned oldest first.
        let mut batches: Vec<Vec<ChatEvent>> = Vec::new();
        let (mut events, mut oldest) = (0usize, None::<Kept>);
        let mut undecodable = 0u32;
        let end = kept::scan_back(&stream, first, &subject, before, MAX_VISIT, |m| {
            match spamscope_proto::decode_chat(
                subjects::is_batch(m.headers.as_ref()),
                m.payload.clone(),
            ) {
                Ok(evs) => {
                    events += evs.len();
                    batches.push(evs);
                }
                Err(_) => undecodable += 1,
            }
            oldest = Some(m);
            if events >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
        .map_err(unavailable)?;
        let events: Vec<ChatEvent> = batches.into_iter().rev().flatten().collect();
        let scores = match &oldest {
            Some(o) => self.scores_of(key, &events, o).await?,
            None => Vec::new(),
        };
        let next_page_token = match (&oldest, end) {
            (Some(o), ScanEnd::Stopped | ScanEnd::Budget) if o.seq > first => o.seq.to_string(),
            _ => String::new(),
        };
        Ok(ChannelChatResponse {
            events,
            scores,
            next_page_token,
            undecodable,
        })
    }

    /// The scores the detector published for the messages of `events`,
    /// read forward from when the oldest of them was stored.
    async fn scores_of(
        &self,
        key: &StreamKey,
        events: &[ChatEvent],
        oldest: &Kept,
    ) -> Result<Vec<MessageScore>, GatewayError> {
        let mut wanted: HashSet<&str> = events
            .iter()
            .filter(|e| matches!(e.kind, Some(chat_event::Kind::Message(_))))
            .map(|e| e.event_id.as_str())
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let spam = self.spam_stream().await?;
        let mut scores = Vec::new();
        kept::read(
            &spam,
            &subjects::spam_stream(key.platform.key(), &key.id),
            DeliverPolicy::ByStartTime {
                start_time: oldest.published,
            },
            u64::MAX,
            (wanted.len() * SCORES_PER_EVENT).min(MAX_VISIT),
            |m| {
                if let Ok(DetectorOutput {
                    kind: Some(detector_output::Kind::MessageScore(s)),
                }) = DetectorOutput::decode(m.payload)
                    && wanted.remove(s.message_id.as_str())
                {
                    scores.push(s);
                }
                if wanted.is_empty() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .await
        .map_err(unavailable)?;
        Ok(scores)
    }

    /// Spam event `id` of `key` with its messages (at most `limit`), users
    /// and timeline.
    pub async fn event_detail(
        &self,
        key: &StreamKey,
        id: u64,
        limit: usize,
    ) -> Result<SpamEventDetailResponse, GatewayError> {
        let mut spam = self.spam_stream().await?;
        let (first, last) = kept::bounds(&mut spam).await.map_err(unavailable)?;
        let mut event: Option<SpamEvent> = None;
        let mut ids: HashSet<String> = HashSet::new();
        let mut users: HashMap<String, u64> = HashMap::new();
        let mut timeline: BTreeMap<i64, u64> = BTreeMap::new();
        let mut scored = 0u64;
        let subject = subjects::spam_stream(key.platform.key(), &key.id);
        kept::scan_back(&spam, first, &subject, last + 1, MAX_VISIT, |m| {
            let Ok(o) = DetectorOutput::decode(m.payload) else {
                return ControlFlow::Continue(());
            };
            let at = output_ms(&o);
            match o.kind {
                // Newest first: the first seen is the last update.
                Some(detector_output::Kind::SpamEvent(e))
                    if e.event_id == id && event.is_none() =>
                {
                    event = Some(e);
                }
                Some(detector_output::Kind::MessageScore(s)) if s.spam_event_id == id => {
                    scored += 1;
                    *timeline
                        .entry(s.ts_ms.div_euclid(TIMELINE_BUCKET_MS) * TIMELINE_BUCKET_MS)
                        .or_default() += 1;
                    if ids.len() < MAX_VISIT {
                        ids.insert(s.message_id);
                    }
                    if users.len() < MAX_VISIT || users.contains_key(&s.user_login) {
                        *users.entry(s.user_login).or_default() += 1;
                    }
                }
                _ => {}
            }
            match (&event, at) {
                (Some(e), Some(at)) if at < e.first_seen_ms - SLACK_MS => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        })
        .await
        .map_err(unavailable)?;
        let Some(event) = event else {
            return Err(GatewayError::NotFound(format!(
                "no spam event {id} of {key} is kept (detector outputs are kept for \
                 --spam-max-age; the history keeps the event itself)"
            )));
        };
        let mut messages = Vec::new();
        let mut found = 0usize;
        let (mut chat, subject) = self.chat_stream(key).await?;
        if let Some(end) = Self::chat_end(&chat, &subject).await? {
            let (first, _) = kept::bounds(&mut chat).await.map_err(unavailable)?;
            kept::scan_back(&chat, first, &subject, end, MAX_VISIT, |m| {
                let Ok(evs) =
                    spamscope_proto::decode_chat(subjects::is_batch(m.headers.as_ref()), m.payload)
                else {
                    return ControlFlow::Continue(());
                };
                let mut older = false;
                for ev in evs.into_iter().rev() {
                    older |= ev.ts_ms < event.first_seen_ms - SLACK_MS;
                    if ids.contains(&ev.event_id) {
                        found += 1;
                        if messages.len() < limit {
                            messages.push(ev);
                        }
                    }
                }
                if older || found == ids.len() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .await
            .map_err(unavailable)?;
            messages.reverse();
        }
        let mut users: Vec<EventUser> = users
            .into_iter()
            .map(|(user_login, messages)| EventUser {
                user_login,
                messages,
            })
            .collect();
        users.sort_by(|a, b| {
            b.messages
                .cmp(&a.messages)
                .then_with(|| a.user_login.cmp(&b.user_login))
        });
        users.truncate(MAX_USERS);
        Ok(SpamEventDetailResponse {
            event: Some(event),
            messages,
            users,
            timeline: timeline
                .into_iter()
                .map(|(at_ms, messages)| TimelinePoint { at_ms, messages })
                .collect(),
            scored_messages: scored,
            messages_found: found as u64,
        })
    }

    /// What `user` (login or id) did in stream `key`, and what moderators
    /// did about it, from the kept chat and outputs.
    pub async fn activity_of(
        &self,
        key: &StreamKey,
        user: &str,
        limit: usize,
    ) -> Result<UserActivityResponse, GatewayError> {
        let login = user.to_lowercase();
        // Compared without allocating: this runs on every stored message.
        let is_user = |l: &str, id: &str| {
            (!l.is_empty() && l.chars().flat_map(char::to_lowercase).eq(login.chars()))
                || (!id.is_empty() && id == user)
        };
        let mut messages: Vec<ChatEvent> = Vec::new();
        let mut actions: Vec<ChatEvent> = Vec::new();
        // Read before what they refer to: deletions by target message,
        // removals by user id.
        let mut deletions: HashMap<String, ChatEvent> = HashMap::new();
        let mut removals: Vec<ChatEvent> = Vec::new();
        let mut user_ids: HashSet<String> = HashSet::new();
        let (mut chat, subject) = self.chat_stream(key).await?;
        let mut complete = true;
        if let Some(end) = Self::chat_end(&chat, &subject).await? {
            let (first, _) = kept::bounds(&mut chat).await.map_err(unavailable)?;
            let scan = kept::scan_back(&chat, first, &subject, end, MAX_VISIT, |m| {
                let Ok(evs) =
                    spamscope_proto::decode_chat(subjects::is_batch(m.headers.as_ref()), m.payload)
                else {
                    return ControlFlow::Continue(());
                };
                for ev in evs.into_iter().rev() {
                    match &ev.kind {
                        Some(chat_event::Kind::Message(msg)) => {
                            let Some(a) = &msg.author else { continue };
                            if !is_user(&a.login, &a.user_id) {
                                continue;
                            }
                            if !a.user_id.is_empty() {
                                user_ids.insert(a.user_id.clone());
                            }
                            if let Some(d) = deletions.remove(&ev.event_id)
                                && actions.len() < MAX_ACTIONS
                            {
                                actions.push(d);
                            }
                            if messages.len() < limit {
                                messages.push(ev);
                            }
                        }
                        Some(chat_event::Kind::MessageDeleted(d)) if !d.by_author => {
                            if is_user(&d.user_login, &d.user_id) {
                                if actions.len() < MAX_ACTIONS {
                                    actions.push(ev);
                                }
                            } else if d.user_login.is_empty()
                                && d.user_id.is_empty()
                                && deletions.len() < MAX_PENDING
                            {
                                deletions.insert(d.target_message_id.clone(), ev);
                            }
                        }
                        Some(chat_event::Kind::UserTimedOut(t))
                            if is_user(&t.user_login, &t.user_id)
                                && actions.len() < MAX_ACTIONS =>
                        {
                            actions.push(ev);
                        }
                        Some(chat_event::Kind::UserBanned(b))
                            if is_user(&b.user_login, &b.user_id)
                                && actions.len() < MAX_ACTIONS =>
                        {
                            actions.push(ev);
                        }
                        Some(chat_event::Kind::UserMessagesRemoved(_))
                            if removals.len() < MAX_PENDING =>
                        {
                            removals.push(ev);
                        }
                        _ => {}
                    }
                }
                ControlFlow::Continue(())
            })
            .await
            .map_err(unavailable)?;
            complete &= scan == ScanEnd::Start;
        }
        for r in removals {
            if let Some(chat_event::Kind::UserMessagesRemoved(x)) = &r.kind
                && (user_ids.contains(&x.user_id) || x.user_id == user)
                && actions.len() < MAX_ACTIONS
            {
                actions.push(r);
            }
        }
        // The spam events of their messages: the scores name the user's
        // login and the event; each event's last update is read first.
        let mut spam = self.spam_stream().await?;
        let (first, last) = kept::bounds(&mut spam).await.map_err(unavailable)?;
        let mut latest: HashMap<u64, SpamEvent> = HashMap::new();
        let mut theirs: HashSet<u64> = HashSet::new();
        let subject = subjects::spam_stream(key.platform.key(), &key.id);
        let scan = kept::scan_back(&spam, first, &subject, last + 1, MAX_VISIT, |m| {
            match DetectorOutput::decode(m.payload).ok().and_then(|o| o.kind) {
                Some(detector_output::Kind::SpamEvent(e))
                    if latest.len() < MAX_PENDING && !latest.contains_key(&e.event_id) =>
                {
                    latest.insert(e.event_id, e);
                }
                Some(detector_output::Kind::MessageScore(s))
                    if s.spam_event_id != 0 && is_user(&s.user_login, "") =>
                {
                    theirs.insert(s.spam_event_id);
                }
                _ => {}
            }
            ControlFlow::Continue(())
        })
        .await
        .map_err(unavailable)?;
        complete &= scan == ScanEnd::Start;
        let mut spam_events: Vec<SpamEvent> = theirs
            .into_iter()
            .filter_map(|id| latest.remove(&id))
            .collect();
        spam_events.sort_by_key(|e| std::cmp::Reverse(e.last_seen_ms));
        messages.reverse();
        actions.sort_by_key(|e| e.ts_ms);
        Ok(UserActivityResponse {
            messages,
            moderation: actions,
            spam_events,
            complete,
        })
    }
}
