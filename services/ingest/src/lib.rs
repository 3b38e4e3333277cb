//! The ingest role: chat events from a source, published to
//! `chat.<shard>.<platform>.<id>` with `Nats-Msg-Id` = the platform event id,
//! so two ingest replicas of the same chat do not double it.
//!
//! Parts: [`publish_events`] (any event sequence, paced), used by the replay
//! source (files through `spamscope_chat::replay`).

use std::collections::VecDeque;
use std::time::Instant;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use prost::Message;
use spamscope_bus::{Bus, subjects};
use spamscope_chat::replay::{Pacer, Speed};
use spamscope_proto::v1::ChatEvent;
use spamscope_routing::shard_of;
use tokio_util::sync::CancellationToken;

/// Publishes awaiting their JetStream ack at once.
const IN_FLIGHT: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
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
pub async fn publish_events(
    bus: &Bus,
    events: &[ChatEvent],
    shards: u32,
    speed: Speed,
    shutdown: &CancellationToken,
) -> Result<IngestReport, IngestError> {
    let mut report = IngestReport::default();
    let mut pacer = Pacer::new(speed);
    let mut in_flight = VecDeque::with_capacity(IN_FLIGHT);
    for ev in events {
        if shutdown.is_cancelled() {
            report.interrupted = true;
            break;
        }
        let wait = pacer.delay(ev.ts_ms, Instant::now());
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => { report.interrupted = true; break; }
            }
        }
        let platform = ev.platform().key();
        let shard = shard_of(&ev.stream_key(), shards);
        let subject = subjects::chat(shard, platform, &ev.stream_id);
        let publish = PublishMessage::build()
            .payload(Bytes::from(ev.encode_to_vec()))
            .headers(HeaderMap::new())
            .message_id(chat_msg_id(ev));
        let ack = bus
            .js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| IngestError::Publish {
                subject: subject.clone(),
                reason: e.to_string(),
            })?;
        in_flight.push_back((subject, ack));
        if in_flight.len() >= IN_FLIGHT {
            settle(in_flight.pop_front(), &mut report).await?;
        }
    }
    while let Some(next) = in_flight.pop_front() {
        settle(Some(next), &mut report).await?;
    }
    Ok(report)
}

async fn settle(
    next: Option<(String, async_nats::jetstream::context::PublishAckFuture)>,
    report: &mut IngestReport,
) -> Result<(), IngestError> {
    let Some((subject, ack)) = next else {
        return Ok(());
    };
    let ack = ack.await.map_err(|e| IngestError::Publish {
        subject,
        reason: e.to_string(),
    })?;
    report.published += 1;
    if ack.duplicate {
        report.duplicates += 1;
    }
    Ok(())
}
