//! The ingest role: chat events from a source, published to
//! `chat.<shard>.<platform>.<id>` with `Nats-Msg-Id` = the platform event id,
//! so two ingest replicas of the same chat do not double it.
//!
//! Parts: [`publish_events`] (any event sequence, paced), used by the replay
//! source (files through `spamscope_chat::replay`); [`twitch`]: live Twitch chat; [`youtube`]: live YouTube chat.

pub mod twitch;
pub mod youtube;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
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
    let mut report = IngestReport::default();
    let mut pacer = Pacer::new(speed);
    let mut next = 0usize;
    let mut backoff = Duration::from_millis(100);
    let mut in_flight: VecDeque<(usize, PublishAckFuture)> = VecDeque::with_capacity(IN_FLIGHT);
    loop {
        if shutdown.is_cancelled() {
            report.interrupted = true;
            break;
        }
        // Err carries the index of the first event to send again.
        let step: Result<bool, (usize, IngestError)> = async {
            if next < events.len() {
                let ev = &events[next];
                let wait = pacer.delay(ev.ts_ms, Instant::now());
                if !wait.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => return Ok(true),
                    }
                }
                // One unacknowledged publish per stream: a publish that
                // fails is resent before anything after it in its stream,
                // so every stream keeps its order through NATS failures.
                // Different streams still go out together.
                while in_flight.iter().any(|(i, _)| {
                    events[*i].stream_id == ev.stream_id && events[*i].platform == ev.platform
                }) {
                    settle(&mut in_flight, &mut report).await?;
                }
                let ack = send(bus, ev, shards).await.map_err(|e| (next, e))?;
                in_flight.push_back((next, ack));
                next += 1;
                if in_flight.len() >= IN_FLIGHT {
                    settle(&mut in_flight, &mut report).await?;
                }
                Ok(false)
            } else {
                while !in_flight.is_empty() {
                    settle(&mut in_flight, &mut report).await?;
                }
                Ok(true)
            }
        }
        .await;
        match step {
            Ok(true) => break,
            Ok(false) => backoff = Duration::from_millis(100),
            Err((failed, e)) => {
                // Resend from the oldest unacknowledged event.
                let resume = in_flight.front().map_or(failed, |(i, _)| *i).min(failed);
                in_flight.clear();
                warn!(error = %e, resume, "publish failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => { report.interrupted = true; break; }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                next = resume;
            }
        }
    }
    Ok(report)
}

async fn send(bus: &Bus, ev: &ChatEvent, shards: u32) -> Result<PublishAckFuture, IngestError> {
    let platform = ev.platform().key();
    let shard = shard_of(&ev.stream_key(), shards);
    let subject = subjects::chat(shard, platform, &ev.stream_id);
    let publish = PublishMessage::build()
        .payload(Bytes::from(ev.encode_to_vec()))
        .headers(HeaderMap::new())
        .message_id(chat_msg_id(ev));
    bus.js
        .send_publish(subject.clone(), publish)
        .await
        .map_err(|e| IngestError::Publish {
            subject,
            reason: e.to_string(),
        })
}

async fn settle(
    in_flight: &mut VecDeque<(usize, PublishAckFuture)>,
    report: &mut IngestReport,
) -> Result<(), (usize, IngestError)> {
    let Some((i, ack)) = in_flight.pop_front() else {
        return Ok(());
    };
    let ack = ack.await.map_err(|e| {
        (
            i,
            IngestError::Publish {
                subject: format!("event #{i}"),
                reason: e.to_string(),
            },
        )
    })?;
    report.published += 1;
    if ack.duplicate {
        report.duplicates += 1;
    }
    Ok(())
}
