//! Live per-stream statistics from the chat and output subjects.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use prost::Message;
use spamscope_bus::Bus;
use spamscope_proto::StreamKey;
use spamscope_proto::v1::{
    ChannelSummary, ChatEvent, DetectorOutput, Platform, SpamEventState, chat_event,
    detector_output,
};
use tokio_util::sync::CancellationToken;

const WINDOW: Duration = Duration::from_secs(60);
/// A stream with no chat and no output for this long, and no active spam
/// event, leaves the live map (it held every stream and spam event id ever
/// seen); it comes back with its next message.
pub const IDLE: Duration = Duration::from_secs(3600);
/// How often idle streams are looked for.
const TRIM_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct StreamStats {
    platform: i32,
    stream_id: String,
    /// The channel's id where the source names one (YouTube: the video's
    /// channel); empty otherwise.
    channel_id: String,
    messages: VecDeque<Instant>,
    /// (when, spam messages added).
    spam: VecDeque<(Instant, u64)>,
    /// event id → (last count, active).
    events: HashMap<u64, (u64, bool)>,
    last_message_ms: i64,
    /// When this gateway last saw chat or an output of the stream.
    seen: Option<Instant>,
    /// When this gateway last saw a chat message of the stream.
    last_chat: Option<Instant>,
    /// The platform said the stream ended, and no message came since.
    ended: bool,
}

/// Rolling one-minute rates per stream.
#[derive(Debug, Clone, Default)]
pub struct Live {
    inner: Arc<Mutex<BTreeMap<String, StreamStats>>>,
}

impl Live {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, StreamStats>) -> R) -> R {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    pub fn on_chat(&self, ev: &ChatEvent) {
        let key = ev.stream_key();
        self.with(|m| {
            let s = m.entry(key).or_default();
            s.seen = Some(Instant::now());
            s.platform = ev.platform;
            s.stream_id.clone_from(&ev.stream_id);
            if !ev.channel_id.is_empty() && s.channel_id != ev.channel_id {
                s.channel_id.clone_from(&ev.channel_id);
            }
            match &ev.kind {
                Some(chat_event::Kind::Message(_)) => {
                    s.messages.push_back(Instant::now());
                    s.last_message_ms = s.last_message_ms.max(ev.ts_ms);
                    s.last_chat = Some(Instant::now());
                    s.ended = false;
                }
                Some(chat_event::Kind::StreamEnded(_)) => {
                    s.ended = true;
                    for e in s.events.values_mut() {
                        e.1 = false;
                    }
                }
                _ => {}
            }
        });
    }

    pub fn on_output(&self, o: &DetectorOutput) {
        let Some(detector_output::Kind::SpamEvent(e)) = &o.kind else {
            return;
        };
        let key = StreamKey::format(Platform::of(e.platform), &e.stream_id);
        self.with(|m| {
            let s = m.entry(key).or_default();
            s.seen = Some(Instant::now());
            s.platform = e.platform;
            s.stream_id.clone_from(&e.stream_id);
            let entry = s.events.entry(e.event_id).or_insert((0, true));
            let added = e.count.saturating_sub(entry.0);
            // Crowd reactions are chat: neither spam messages nor active
            // spam events.
            *entry = (
                entry.0.max(e.count),
                e.spam && e.state == SpamEventState::Active as i32,
            );
            if added > 0 && e.spam {
                s.spam.push_back((Instant::now(), added));
            }
        });
    }

    /// True when this gateway has seen chat or outputs of stream `key`
    /// (and has not forgotten it as idle).
    pub fn contains(&self, key: &str) -> bool {
        self.with(|m| m.contains_key(key))
    }

    /// The channel key (`<platform>.<channel>`, as channel params are keyed)
    /// of stream `key`, where it is another key than the stream's: known
    /// for YouTube videos whose chat named their channel since this gateway
    /// started.
    pub fn channel_of(&self, key: &str) -> Option<String> {
        self.with(|m| {
            let s = m.get(key)?;
            let chan = spamscope_detect::channel_name(
                Platform::of(s.platform),
                &s.stream_id,
                &s.channel_id,
            );
            let ckey = StreamKey::format(Platform::of(s.platform), &chan);
            (ckey != key).then_some(ckey)
        })
    }

    /// The streams seen of channel `channel_key`, other than itself.
    pub fn streams_of(&self, channel_key: &str) -> Vec<String> {
        self.with(|m| {
            m.iter()
                .filter(|(k, s)| {
                    !s.channel_id.is_empty()
                        && k.as_str() != channel_key
                        && StreamKey::format(Platform::of(s.platform), &s.channel_id) == channel_key
                })
                .map(|(k, _)| k.clone())
                .collect()
        })
    }

    /// Forgets streams idle for `idle` with no active spam event, and the
    /// ended spam events of the others; returns how many streams went.
    pub fn trim(&self, idle: Duration) -> usize {
        let now = Instant::now();
        self.with(|m| {
            let before = m.len();
            m.retain(|_, s| {
                let active = s.events.values().any(|(_, a)| *a);
                let recent = s.seen.is_some_and(|t| now.duration_since(t) < idle);
                active || recent
            });
            for s in m.values_mut() {
                if s.events.len() > 1_000 {
                    s.events.retain(|_, (_, active)| *active);
                }
            }
            before - m.len()
        })
    }

    /// Streams in the map.
    pub fn len(&self) -> usize {
        self.with(|m| m.len())
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Busiest first.
    pub fn summaries(&self, limit: usize) -> Vec<ChannelSummary> {
        let now = Instant::now();
        let mut out: Vec<ChannelSummary> = self.with(|m| {
            m.iter_mut()
                .map(|(k, s)| {
                    while s.messages.front().is_some_and(|t| now - *t > WINDOW) {
                        s.messages.pop_front();
                    }
                    while s.spam.front().is_some_and(|(t, _)| now - *t > WINDOW) {
                        s.spam.pop_front();
                    }
                    ChannelSummary {
                        stream: k.clone(),
                        platform: s.platform,
                        stream_id: s.stream_id.clone(),
                        messages_per_minute: s.messages.len() as f64,
                        spam_messages_per_minute: s.spam.iter().map(|(_, n)| *n).sum::<u64>()
                            as f64,
                        active_spam_events: s.events.values().filter(|(_, a)| *a).count() as u32,
                        last_message_ms: s.last_message_ms,
                        ended: s.ended,
                        quiet_ms: s.last_chat.map_or(-1, |t| {
                            i64::try_from(now.duration_since(t).as_millis()).unwrap_or(i64::MAX)
                        }),
                    }
                })
                .collect()
        });
        out.sort_by(|a, b| {
            b.messages_per_minute
                .total_cmp(&a.messages_per_minute)
                .then(b.last_message_ms.cmp(&a.last_message_ms))
                .then(a.stream.cmp(&b.stream))
        });
        out.truncate(limit);
        out
    }
}

/// Follows every chat and output subject until `stop`; an error when it
/// cannot subscribe or the subscriptions end before that.
pub async fn follow(bus: Bus, live: Live, stop: CancellationToken) -> Result<(), String> {
    let subscribe = |subject: String| {
        let client = bus.client.clone();
        async move {
            client
                .subscribe(subject.clone())
                .await
                .map_err(|e| format!("subscribe {subject}: {e}"))
        }
    };
    let mut chat = subscribe(spamscope_bus::subjects::CHAT_ALL.to_owned()).await?;
    let mut spam = subscribe(spamscope_bus::subjects::SPAM_ALL.to_owned()).await?;
    let mut trim = tokio::time::interval(TRIM_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = trim.tick() => { live.trim(IDLE); }
            Some(m) = chat.next() => {
                let batch = spamscope_bus::subjects::is_batch(m.headers.as_ref());
                for ev in spamscope_proto::decode_chat(batch, m.payload).unwrap_or_default() {
                    live.on_chat(&ev);
                }
            }
            Some(m) = spam.next() => if let Ok(o) = DetectorOutput::decode(m.payload) { live.on_output(&o) },
            else => return Err("the NATS subscriptions ended".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spamscope_proto::v1::{ChatMessage, SpamEvent};

    fn chat(stream: &str) -> ChatEvent {
        ChatEvent {
            platform: Platform::Twitch as i32,
            stream_id: stream.into(),
            ts_ms: 1,
            kind: Some(chat_event::Kind::Message(ChatMessage::default())),
            ..Default::default()
        }
    }

    #[test]
    fn idle_streams_leave_the_map_unless_spam_is_active() {
        let live = Live::default();
        for s in ["quiet", "raided"] {
            live.on_chat(&chat(s));
        }
        live.on_output(&DetectorOutput {
            kind: Some(detector_output::Kind::SpamEvent(SpamEvent {
                platform: Platform::Twitch as i32,
                stream_id: "raided".into(),
                event_id: 7,
                count: 5,
                spam: true,
                state: SpamEventState::Active as i32,
                ..Default::default()
            })),
        });
        assert_eq!(live.trim(Duration::from_secs(60)), 0);
        assert_eq!(live.len(), 2);
        // Everything idle: the stream whose spam event is still active stays.
        assert_eq!(live.trim(Duration::ZERO), 1);
        assert_eq!(live.summaries(10)[0].stream, "twitch.raided");
        // It comes back with its next message.
        live.on_chat(&chat("quiet"));
        assert_eq!(live.len(), 2);
    }

    #[test]
    fn a_stream_is_ended_when_the_platform_says_so_until_chat_comes_again() {
        let live = Live::default();
        let state = |live: &Live| {
            let c = live.summaries(10).pop().unwrap();
            (c.ended, c.quiet_ms)
        };
        live.on_chat(&ChatEvent {
            kind: Some(chat_event::Kind::RoomState(Default::default())),
            ..chat("show")
        });
        assert_eq!(state(&live), (false, -1), "no message seen yet");
        live.on_chat(&chat("show"));
        let (ended, quiet) = state(&live);
        assert!(!ended && (0..5_000).contains(&quiet));
        live.on_chat(&ChatEvent {
            kind: Some(chat_event::Kind::StreamEnded(Default::default())),
            ..chat("show")
        });
        assert!(state(&live).0);
        live.on_chat(&chat("show"));
        assert!(!state(&live).0);
    }
}
