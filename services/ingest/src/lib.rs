//! The ingest role: chat events from a source, published to
//! `chat.<shard>.<platform>.<id>` with `Nats-Msg-Id` = the platform event id,
//! so two ingest replicas of the same chat do not double it.
//!
//! Parts: [`publish_events`] (any event sequence, paced), used by the replay
//! source (files through `spamscope_chat::replay`); [`twitch`]: live Twitch chat; [`youtube`]: live YouTube chat.

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
}

/// `Nats-Msg-Id` of a chat event: stream key and platform event id.
pub fn chat_msg_id(ev: &ChatEvent) -> String {
    format!("{}/{}", ev.stream_key(), ev.event_id)
}

/// Publishes `events` in order, paced by `speed`, until done or `shutdown`.
/// A failed publish (NATS restarting, say) is retried with backoff from the
/// first event not yet acknowledged; events that did land are dropped by
/// JetStream as duplicates, so nothing is lost and nothing doubles.
pub async fn publish_events(
    bus: &Bus,
    events: &[ChatEvent],
    shards: u32,
    speed: Speed,
    shutdown: &CancellationToken,
) -> Result<IngestReport, IngestError> {
    publish_events_observed(bus, events, shards, speed, shutdown, |_| {}).await
}

/// [`publish_events`], calling `on_send(i)` as `events[i]` is handed to
/// NATS (again if it is resent). The benchmark stamps send times with it.
///
/// Order: at most one publish per stream awaits its ack, so a failed publish
/// is resent before anything after it in its stream and every stream keeps
/// its order through NATS failures. An event whose stream is busy waits in
/// that stream's queue while events of other streams go past it, so one hot
/// stream does not hold the others back.
pub async fn publish_events_observed(
    bus: &Bus,
    events: &[ChatEvent],
    shards: u32,
    speed: Speed,
    shutdown: &CancellationToken,
    mut on_send: impl FnMut(usize),
) -> Result<IngestReport, IngestError> {
    let mut report = IngestReport::default();
    let mut pacer = Pacer::new(speed);
    let mut next = 0usize;
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut w = Window::new(events);
        let run = async {
            loop {
                let room = w.busy.len() < IN_FLIGHT && w.queued < QUEUED;
                if next < events.len() && room {
                    let wait = pacer.delay(events[next].ts_ms, Instant::now());
                    if wait.is_zero() {
                        w.offer(bus, shards, next, &mut on_send).await?;
                        next += 1;
                        continue;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        Some((i, r)) = w.acks.next(), if !w.acks.is_empty() => {
                            w.acked(bus, shards, i, r, &mut report, &mut on_send).await?;
                        }
                    }
                } else if let Some((i, r)) = w.acks.next().await {
                    w.acked(bus, shards, i, r, &mut report, &mut on_send)
                        .await?;
                } else {
                    return Ok(());
                }
            }
        };
        let failed: (usize, IngestError) = tokio::select! {
            r = run => match r {
                Ok(()) => break,
                Err(f) => f,
            },
            _ = shutdown.cancelled() => {
                report.interrupted = true;
                break;
            }
        };
        // Resend from the oldest event not acknowledged; what did land
        // comes back as a duplicate.
        let (failed, e) = failed;
        let resume = w
            .oldest_unacked()
            .map_or(failed, |o| o.min(failed))
            .min(next);
        warn!(error = %e, resume, "publish failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => { report.interrupted = true; break; }
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
        next = resume;
    }
    Ok(report)
}

/// Events held back behind their stream's publish, across all streams.
const QUEUED: usize = 4 * IN_FLIGHT;

type Acked = (usize, Result<PublishAck, PublishError>);

/// What is on its way: the publishes awaiting their ack (one per stream)
/// and, per busy stream, the events queued behind it.
struct Window<'a> {
    events: &'a [ChatEvent],
    acks: FuturesUnordered<BoxFuture<'static, Acked>>,
    /// Busy stream → (index of its publish in flight, events queued behind).
    busy: HashMap<(i32, &'a str), (usize, VecDeque<usize>)>,
    queued: usize,
}

impl<'a> Window<'a> {
    fn new(events: &'a [ChatEvent]) -> Self {
        Self {
            events,
            acks: FuturesUnordered::new(),
            busy: HashMap::new(),
            queued: 0,
        }
    }

    fn key(&self, i: usize) -> (i32, &'a str) {
        let e = &self.events[i];
        (e.platform, e.stream_id.as_str())
    }

    /// Sends event `i` now, or queues it behind its stream's publish.
    async fn offer(
        &mut self,
        bus: &Bus,
        shards: u32,
        i: usize,
        on_send: &mut impl FnMut(usize),
    ) -> Result<(), (usize, IngestError)> {
        if let Some((_, queue)) = self.busy.get_mut(&self.key(i)) {
            queue.push_back(i);
            self.queued += 1;
            return Ok(());
        }
        self.send(bus, shards, i, on_send).await?;
        self.busy.insert(self.key(i), (i, VecDeque::new()));
        Ok(())
    }

    async fn send(
        &mut self,
        bus: &Bus,
        shards: u32,
        i: usize,
        on_send: &mut impl FnMut(usize),
    ) -> Result<(), (usize, IngestError)> {
        let ack = send(bus, &self.events[i], shards)
            .await
            .map_err(|e| (i, e))?;
        on_send(i);
        self.acks.push(Box::pin(async move { (i, ack.await) }));
        Ok(())
    }

    /// Event `i` was acknowledged (or not): its stream's next event goes.
    async fn acked(
        &mut self,
        bus: &Bus,
        shards: u32,
        i: usize,
        r: Result<PublishAck, PublishError>,
        report: &mut IngestReport,
        on_send: &mut impl FnMut(usize),
    ) -> Result<(), (usize, IngestError)> {
        let ack = r.map_err(|e| {
            (
                i,
                IngestError::Publish {
                    subject: format!("event #{i}"),
                    reason: e.to_string(),
                },
            )
        })?;
        report.published += 1;
        spamscope_telemetry::metrics()
            .events_out
            .add(1, &spamscope_telemetry::service(SERVICE));
        if ack.duplicate {
            report.duplicates += 1;
        }
        let key = self.key(i);
        let Some(entry) = self.busy.get_mut(&key) else {
            return Ok(());
        };
        match entry.1.pop_front() {
            Some(j) => {
                // The stream stays busy, now with `j`.
                entry.0 = j;
                self.queued -= 1;
                self.send(bus, shards, j, on_send).await
            }
            None => {
                self.busy.remove(&key);
                Ok(())
            }
        }
    }

    /// The oldest event sent or queued and not yet acknowledged.
    fn oldest_unacked(&self) -> Option<usize> {
        self.busy.values().map(|(i, _)| *i).min()
    }
}

/// The headers of a chat event's message: its W3C trace context when the
/// event is traced (a sampled root span `ingest.publish`).
pub(crate) fn chat_headers(ev: &ChatEvent, shard: u32) -> HeaderMap {
    use spamscope_telemetry::KeyValue;
    let mut h = HeaderMap::new();
    if let Some(cx) = spamscope_telemetry::root_span("ingest.publish", || {
        vec![
            KeyValue::new("spamscope.stream", ev.stream_key()),
            KeyValue::new("spamscope.shard", i64::from(shard)),
        ]
    }) {
        spamscope_telemetry::inject(&cx, &mut h);
        spamscope_telemetry::end(&cx);
    }
    spamscope_telemetry::metrics()
        .events_in
        .add(1, &spamscope_telemetry::service(SERVICE));
    h
}

/// The `service` attribute of ingest's metrics.
pub(crate) const SERVICE: &str = "ingest";

async fn send(bus: &Bus, ev: &ChatEvent, shards: u32) -> Result<PublishAckFuture, IngestError> {
    let platform = ev.platform().key();
    let shard = shard_of(&ev.stream_key(), shards);
    let subject = subjects::chat(shard, platform, &ev.stream_id);
    let publish = PublishMessage::build()
        .payload(Bytes::from(ev.encode_to_vec()))
        .headers(chat_headers(ev, shard))
        .message_id(chat_msg_id(ev));
    bus.js
        .send_publish(subject.clone(), publish)
        .await
        .map_err(|e| IngestError::Publish {
            subject,
            reason: e.to_string(),
        })
}
