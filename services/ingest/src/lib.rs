//! The ingest role: chat events from a source, published to
//! `chat.<shard>.<platform>.<id>` with `Nats-Msg-Id` = the platform event id,
//! so two ingest replicas of the same chat do not double it.
//!
//! Parts: [`publish_events`] (any event sequence, paced), used by the replay
//! source (files through `spamscope_chat::replay`); [`twitch`]: live Twitch chat; [`youtube`]: live YouTube chat.

pub mod cli;
pub mod files;
pub mod twitch;
pub mod youtube;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishAckFuture, PublishError};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use prost::Message;
use spamscope_bus::{Bus, subjects};
use spamscope_chat::replay::{Pacer, Speed};
use spamscope_proto::v1::ChatEvent;
use spamscope_routing::shard_of;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Publishes awaiting their JetStream ack at once.
const IN_FLIGHT: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("source: {0}")]
    Source(String),
    #[error("publish to {subject}: {reason}")]
    Publish { subject: String, reason: String },
}

/// What a run published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub published: u64,
    /// Events JetStream had already seen (same `Nats-Msg-Id`).
    pub duplicates: u64,
    pub interrupted: bool,
    /// Messages awaiting their JetStream ack at once, at most: one per
    /// stream, so this is how many streams were published in parallel.
    pub max_in_flight: usize,
    /// Events larger than the server takes in one message (its
    /// `max_payload`): sent to `dlq.ingest` instead, their first 64 KiB
    /// with the reason.
    pub too_large: u64,
}

impl IngestReport {
    /// Adds the report of a later part of the same run.
    pub fn merge(&mut self, other: &IngestReport) {
        self.published += other.published;
        self.duplicates += other.duplicates;
        self.interrupted |= other.interrupted;
        self.max_in_flight = self.max_in_flight.max(other.max_in_flight);
        self.too_large += other.too_large;
    }
}

/// `Nats-Msg-Id` of a chat event: stream key and platform event id.
pub fn chat_msg_id(ev: &ChatEvent) -> String {
    format!("{}/{}", ev.stream_key(), ev.event_id)
}

/// How ingest publishes a sequence of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOptions {
    /// Events of one stream sent in one message at most. A stream has one
    /// publish awaiting its ack at a time; the events that queue up behind
    /// it meanwhile go together in the next message, so batches form only
    /// under load and add no delay. 1 sends every event on its own, with
    /// its own `Nats-Msg-Id`: then two ingest replicas of the same chat do
    /// not double it (batches of two replicas differ, so JetStream cannot
    /// tell them apart).
    pub max_batch: usize,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// Default of [`PublishOptions::max_batch`].
pub const DEFAULT_MAX_BATCH: usize = 64;

/// Encoded bytes of one batch at most (NATS refuses payloads over its
/// `max_payload`, 1 MiB by default).
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Publishes `events` in order, paced by `speed`, until done or `shutdown`.
/// A failed publish (NATS restarting, say) is resent, the same message
/// with the same `Nats-Msg-Id`, after a backoff: a message that did land is
/// dropped by JetStream as a duplicate, so nothing is lost and nothing
/// doubles.
pub async fn publish_events(
    bus: &Bus,
    events: &[ChatEvent],
    shards: u32,
    speed: Speed,
    opts: PublishOptions,
    shutdown: &CancellationToken,
) -> Result<IngestReport, IngestError> {
    publish_events_observed(bus, events, shards, speed, opts, shutdown, |_| {}).await
}

/// [`publish_events`], calling `on_send(i)` as `events[i]` is handed to
/// NATS (again if it is resent). The benchmark stamps send times with it.
///
/// Order: at most one message per stream awaits its ack, and a failed one
/// is resent before anything after it in its stream, so every stream keeps
/// its order through NATS failures. An event whose stream is busy waits in
/// that stream's queue while events of other streams go past it, so one hot
/// stream does not hold the others back.
pub async fn publish_events_observed(
    bus: &Bus,
    events: &[ChatEvent],
    shards: u32,
    speed: Speed,
    opts: PublishOptions,
    shutdown: &CancellationToken,
    mut on_send: impl FnMut(usize),
) -> Result<IngestReport, IngestError> {
    let mut report = IngestReport::default();
    let mut pacer = Pacer::new(speed);
    let mut next = 0usize;
    let mut w = Window::new(events, shards, opts.max_batch.max(1));
    w.max_event = max_event_bytes(bus);
    let run = async {
        loop {
            let now = Instant::now();
            if !w.retry.is_empty() && now >= w.retry_at {
                w.resend(bus, &mut on_send).await;
                continue;
            }
            // Wake up for the retries when nothing else comes first.
            let retry_in = if w.retry.is_empty() {
                Duration::from_secs(3600)
            } else {
                w.retry_at.saturating_duration_since(now)
            };
            let room = w.busy.len() < IN_FLIGHT && w.queued < QUEUED;
            if next < events.len() && room {
                let wait = pacer.delay(events[next].ts_ms, now);
                if wait.is_zero() {
                    w.offer(bus, next, &mut on_send).await;
                    next += 1;
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait.min(retry_in)) => {}
                    Some((key, r)) = w.acks.next(), if !w.acks.is_empty() => {
                        w.acked(bus, key, r, &mut report, &mut on_send).await;
                    }
                }
            } else if !w.acks.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(retry_in) => {}
                    Some((key, r)) = w.acks.next() => {
                        w.acked(bus, key, r, &mut report, &mut on_send).await;
                    }
                }
            } else if !w.retry.is_empty() {
                tokio::time::sleep(retry_in).await;
            } else {
                return;
            }
        }
    };
    tokio::select! {
        () = run => {}
        _ = shutdown.cancelled() => report.interrupted = true,
    }
    report.max_in_flight = w.max_in_flight;
    report.too_large = w.too_large;
    Ok(report)
}

/// Events held back behind their stream's publish, across all streams.
const QUEUED: usize = 64 * IN_FLIGHT;

/// A stream's key in the window: its platform and id.
type Key<'a> = (i32, &'a str);

type Acked<'a> = (Key<'a>, Result<PublishAck, PublishError>);

/// A busy stream: its message awaiting the ack (event indices, in order)
/// and the events queued behind it.
struct Busy {
    sent: Vec<usize>,
    queue: VecDeque<usize>,
}

/// What is on its way: the messages awaiting their ack (one per stream),
/// per busy stream the events queued behind, and the streams whose message
/// failed and waits to be resent.
struct Window<'a> {
    events: &'a [ChatEvent],
    shards: u32,
    max_batch: usize,
    acks: FuturesUnordered<BoxFuture<'a, Acked<'a>>>,
    busy: HashMap<Key<'a>, Busy>,
    queued: usize,
    retry: Vec<Key<'a>>,
    retry_at: Instant,
    backoff: spamscope_runtime::Backoff,
    /// `busy.len()` at most.
    max_in_flight: usize,
    /// Encoded bytes of one event at most; larger ones are dead letters.
    max_event: usize,
    too_large: u64,
}

impl<'a> Window<'a> {
    fn new(events: &'a [ChatEvent], shards: u32, max_batch: usize) -> Self {
        Self {
            events,
            shards,
            max_batch,
            acks: FuturesUnordered::new(),
            busy: HashMap::new(),
            queued: 0,
            retry: Vec::new(),
            retry_at: Instant::now(),
            backoff: spamscope_runtime::Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
            max_in_flight: 0,
            max_event: usize::MAX,
            too_large: 0,
        }
    }

    fn key(&self, i: usize) -> Key<'a> {
        let e = &self.events[i];
        (e.platform, e.stream_id.as_str())
    }

    /// Sends event `i` now, or queues it behind its stream's message.
    async fn offer(&mut self, bus: &Bus, i: usize, on_send: &mut impl FnMut(usize)) {
        let len = self.events[i].encoded_len();
        if len > self.max_event {
            self.too_large += 1;
            dead_letter_too_large(bus, &self.events[i], self.shards, len, self.max_event).await;
            return;
        }
        let key = self.key(i);
        if let Some(b) = self.busy.get_mut(&key) {
            b.queue.push_back(i);
            self.queued += 1;
            return;
        }
        self.busy.insert(
            key,
            Busy {
                sent: vec![i],
                queue: VecDeque::new(),
            },
        );
        self.max_in_flight = self.max_in_flight.max(self.busy.len());
        self.send(bus, key, on_send).await;
    }

    /// Sends the message of stream `key` (its `sent` events); a failure
    /// puts the stream on the retry list.
    async fn send(&mut self, bus: &Bus, key: Key<'a>, on_send: &mut impl FnMut(usize)) {
        let Some(b) = self.busy.get(&key) else {
            return;
        };
        let batch: Vec<&ChatEvent> = b.sent.iter().map(|i| &self.events[*i]).collect();
        match send_batch(bus, &batch, self.shards).await {
            Ok(ack) => {
                for i in &b.sent {
                    on_send(*i);
                }
                self.acks.push(Box::pin(async move { (key, ack.await) }));
            }
            Err(e) => self.failed(key, &e),
        }
    }

    fn failed(&mut self, key: Key<'a>, e: &dyn std::fmt::Display) {
        warn!(error = %e, stream = %key.1, backoff_ms = self.backoff.peek().as_millis() as u64, "publish failed; resending");
        if self.retry.is_empty() {
            self.retry_at = Instant::now() + self.backoff.next_delay();
        }
        self.retry.push(key);
    }

    /// Resends every failed message, the same events as before.
    async fn resend(&mut self, bus: &Bus, on_send: &mut impl FnMut(usize)) {
        for key in std::mem::take(&mut self.retry) {
            self.send(bus, key, on_send).await;
        }
    }

    /// The message of stream `key` was acknowledged (or not): the events
    /// queued behind it go next, up to `max_batch` in one message.
    async fn acked(
        &mut self,
        bus: &Bus,
        key: Key<'a>,
        r: Result<PublishAck, PublishError>,
        report: &mut IngestReport,
        on_send: &mut impl FnMut(usize),
    ) {
        let ack = match r {
            Ok(ack) => ack,
            Err(e) => {
                self.failed(key, &e);
                return;
            }
        };
        self.backoff.reset();
        let Some(b) = self.busy.get_mut(&key) else {
            return;
        };
        let n = b.sent.len() as u64;
        report.published += n;
        spamscope_telemetry::metrics()
            .events_out
            .add(n, &spamscope_telemetry::service(SERVICE));
        if ack.duplicate {
            report.duplicates += n;
        }
        if b.queue.is_empty() {
            self.busy.remove(&key);
            return;
        }
        // The next message: the queued events, up to the batch limits.
        b.sent.clear();
        let mut bytes = 0;
        while let Some(&j) = b.queue.front() {
            let len = self.events[j].encoded_len();
            if b.sent.len() >= self.max_batch
                || (!b.sent.is_empty() && bytes + len > MAX_BATCH_BYTES)
            {
                break;
            }
            bytes += len;
            b.sent.push(j);
            b.queue.pop_front();
        }
        self.queued -= b.sent.len();
        self.send(bus, key, on_send).await;
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The headers of a chat message of `events` events, the first `ev`: its
/// W3C trace context when the message is traced (a sampled root span
/// `ingest.publish`).
pub(crate) fn chat_headers(ev: &ChatEvent, shard: u32, events: usize) -> HeaderMap {
    use spamscope_telemetry::KeyValue;
    let mut h = HeaderMap::new();
    if let Some(cx) = spamscope_telemetry::root_span("ingest.publish", || {
        vec![
            KeyValue::new("spamscope.stream", ev.stream_key()),
            KeyValue::new("spamscope.shard", i64::from(shard)),
            KeyValue::new("spamscope.events", events as i64),
        ]
    }) {
        spamscope_telemetry::inject(&cx, &mut h);
        spamscope_telemetry::end(&cx);
    }
    spamscope_telemetry::metrics()
        .events_in
        .add(events as u64, &spamscope_telemetry::service(SERVICE));
    h
}

/// The `service` attribute of ingest's metrics.
pub(crate) const SERVICE: &str = "ingest";

/// `Nats-Msg-Id` of a batch: its stream, first and last event ids and
/// size. A resent batch holds the same events, so it has the same id.
pub fn batch_msg_id(batch: &[&ChatEvent]) -> String {
    match batch {
        [] => String::new(),
        [one] => chat_msg_id(one),
        [first, .., last] => format!(
            "{}/{}..{}#{}",
            first.stream_key(),
            first.event_id,
            last.event_id,
            batch.len()
        ),
    }
}

/// Room left for the headers of a chat message below the server's
/// `max_payload`.
const HEADER_ROOM: usize = 8 * 1024;

/// What the dead letter of a too large event keeps of it.
const TOO_LARGE_KEPT: usize = 64 * 1024;

/// Encoded bytes of one event that fit in a message of the server's
/// `max_payload` (1 MiB when the server did not say).
fn max_event_bytes(bus: &Bus) -> usize {
    let max = match bus.client.server_info().max_payload {
        0 => 1024 * 1024,
        n => n,
    };
    max.saturating_sub(HEADER_ROOM)
}

/// An event no message can carry goes to `dlq.ingest` with the reason and
/// its first [`TOO_LARGE_KEPT`] bytes, instead of being retried forever.
async fn dead_letter_too_large(bus: &Bus, ev: &ChatEvent, shards: u32, len: usize, max: usize) {
    let shard = shard_of(&ev.stream_key(), shards);
    let subject = subjects::chat(shard, ev.platform().key(), &ev.stream_id);
    let reason = format!(
        "event {} is {len} bytes encoded, over the {max} bytes one message can carry; its first {} bytes kept",
        chat_msg_id(ev),
        TOO_LARGE_KEPT.min(len)
    );
    warn!(%reason, "event too large to publish");
    let mut payload = ev.encode_to_vec();
    payload.truncate(TOO_LARGE_KEPT);
    if let Err(e) = bus
        .dead_letter("ingest", &subject, &reason, Bytes::from(payload))
        .await
    {
        warn!(error = %e, "dead letter failed");
    }
}

/// Publishes one stream's events: one `ChatEvent`, or a `ChatBatch` with
/// the batch header when there are several.
async fn send_batch(
    bus: &Bus,
    batch: &[&ChatEvent],
    shards: u32,
) -> Result<PublishAckFuture, IngestError> {
    let Some(first) = batch.first() else {
        return Err(IngestError::Source("empty batch".into()));
    };
    let platform = first.platform().key();
    let shard = shard_of(&first.stream_key(), shards);
    let subject = subjects::chat(shard, platform, &first.stream_id);
    let mut headers = chat_headers(first, shard, batch.len());
    let payload = if let [one] = batch {
        one.encode_to_vec()
    } else {
        headers.insert(subjects::BATCH_HEADER, batch.len().to_string().as_str());
        spamscope_proto::encode_chat_batch(batch.iter().copied())
    };
    let publish = PublishMessage::build()
        .payload(Bytes::from(payload))
        .headers(headers)
        .message_id(batch_msg_id(batch));
    bus.js
        .send_publish(subject.clone(), publish)
        .await
        .map_err(|e| IngestError::Publish {
            subject,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> ChatEvent {
        ChatEvent {
            platform: spamscope_proto::v1::Platform::Twitch as i32,
            stream_id: "xqcow".into(),
            event_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn batch_ids_name_their_events_and_a_single_event_keeps_its_own() {
        let (a, b, c) = (ev("a"), ev("b"), ev("c"));
        // One event: the id two ingest replicas of a live chat agree on.
        assert_eq!(batch_msg_id(&[&a]), chat_msg_id(&a));
        assert_eq!(batch_msg_id(&[&a, &b, &c]), "twitch.xqcow/a..c#3");
        // A resend of the same batch has the same id; another batch has not.
        assert_eq!(batch_msg_id(&[&a, &b, &c]), batch_msg_id(&[&a, &b, &c]));
        assert_ne!(batch_msg_id(&[&a, &b]), batch_msg_id(&[&a, &b, &c]));
        assert_ne!(batch_msg_id(&[&a, &c]), batch_msg_id(&[&a, &b, &c]));
    }
}
