//! The actor role: the one part of spamscope that holds the platforms'
//! credentials and sends actions.
//!
//! A durable pull consumer (`actor`) of the SPAM stream takes every
//! `ActionRecord` whose status is `pending` (a policy beside a detector
//! replica decided it, in a channel that is not in dry-run, with the
//! detector run with `--policy-live`), sends it through Twitch Helix or the
//! YouTube Data API, and publishes the record again with the answer
//! (`done` with what the platform said, or `failed` with why) on the same
//! subject, where the console and the history see it. Every other output
//! is acknowledged and left alone; an undecodable payload goes to
//! `dlq.spam` with the reason.
//!
//! Sending is at least once: a crash between sending and acknowledging
//! sends that record again after the consumer's ack wait (Twitch answers a
//! second ban with "already banned", reported as failed). YouTube lifts a
//! ban by the id its insert answered, which the actor keeps per (stream,
//! user) in the state store (Redis; [`UNDO_HANDLE_TTL`]), so a restarted
//! or another actor lifts it too.

pub mod cli;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use spamscope_act::platform::{Moderator, execute};
use spamscope_act::{ActionKind, Output, Record, Status};
use spamscope_bus::Bus;
use spamscope_proto::v1::{DetectorOutput, detector_output};
use spamscope_runtime::Health;
use spamscope_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub const CONSUMER: &str = "actor";

/// How long a YouTube ban's id is kept for an undo.
pub const UNDO_HANDLE_TTL: Duration = Duration::from_secs(30 * 86_400);

#[derive(Debug, Clone)]
pub struct ActorConfig {
    /// Records taken but not acknowledged, at most.
    pub max_ack_pending: i64,
    /// Idle heartbeat asked of the server: two missed and the consumer is
    /// opened again.
    pub idle_heartbeat: Duration,
    /// A pending action decided (published) longer ago than this is not
    /// sent but answered as failed: a timeout an hour late (the actor was
    /// down) is not what a moderator wants.
    pub max_age: Duration,
}

impl Default for ActorConfig {
    fn default() -> Self {
        Self {
            max_ack_pending: 1_000,
            idle_heartbeat: Duration::from_secs(5),
            max_age: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Default)]
pub struct ActorCounters {
    /// Actions the platform did, and refused or could not be sent.
    pub done: AtomicU64,
    pub failed: AtomicU64,
    pub dead_letters: AtomicU64,
    pub reopened: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error("jetstream: {0}")]
    JetStream(String),
}

async fn open(bus: &Bus, cfg: &ActorConfig) -> Result<pull::Stream, ActorError> {
    // Only what is decided from now on: a new actor must not send a
    // week of old actions.
    bus.spam_consumer(
        CONSUMER,
        DeliverPolicy::New,
        cfg.max_ack_pending,
        cfg.idle_heartbeat,
    )
    .await
    .map_err(|e| ActorError::JetStream(e.to_string()))
}

/// Runs until `shutdown`, sending through `moderators` (one per platform
/// with credentials).
pub async fn run(
    cfg: ActorConfig,
    bus: Bus,
    store: Store,
    moderators: Vec<Arc<dyn Moderator>>,
    health: Health,
    counters: Arc<ActorCounters>,
    shutdown: CancellationToken,
) -> Result<(), ActorError> {
    let mut messages = open(&bus, &cfg).await?;
    let mut reopen =
        spamscope_runtime::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let platforms: Vec<&str> = moderators.iter().map(|m| m.platform().key()).collect();
    info!(platforms = ?platforms, "actor sending pending actions");
    health.set_ready(true);
    loop {
        let m = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = messages.next() => m,
        };
        let m = match m {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                warn!(error = %e, "consumer error; opening the consumer again");
                tokio::time::sleep(reopen.next_delay()).await;
                match open(&bus, &cfg).await {
                    Ok(s) => {
                        messages = s;
                        reopen.reset();
                        counters.reopened.fetch_add(1, Ordering::Relaxed);
                        health.set_ready(true);
                    }
                    Err(e) => {
                        health.set_ready(false);
                        warn!(error = %e, "cannot open the consumer; retrying");
                    }
                }
                continue;
            }
            None => return Err(ActorError::JetStream("consumer ended".into())),
        };
        let record = match DetectorOutput::decode(m.payload.clone()) {
            Ok(DetectorOutput {
                kind: Some(detector_output::Kind::Action(a)),
            }) if a.status == "pending" => Record::from_proto(&a),
            Ok(_) => None,
            Err(e) => {
                counters.dead_letters.fetch_add(1, Ordering::Relaxed);
                let reason = format!("not a spamscope.v1.DetectorOutput: {e}");
                if let Err(e) = bus
                    .dead_letter("spam", m.subject.as_str(), &reason, m.payload.clone())
                    .await
                {
                    warn!(error = %e, "dead letter failed");
                }
                None
            }
        };
        let Some(mut record) = record else {
            if let Err(e) = m.ack().await {
                warn!(error = %e, "ack failed");
            }
            continue;
        };
        // (stream, user id) → the YouTube ban an undo lifts.
        let who = format!("{}/{}", record.stream, record.action.target.user_id);
        if record.action.kind == ActionKind::Unban {
            match store.undo_handle(&who).await {
                Ok(Some(h)) => record.action.undo_handle = h,
                Ok(None) => {}
                Err(e) => warn!(error = %e, "cannot read the undo handle; the unban may fail"),
            }
        }
        let age_ms = m.info().ok().map_or(0, |i| {
            let published = i.published.unix_timestamp_nanos() / 1_000_000;
            i128::from(spamscope_runtime::now_ms()) - published
        });
        let record = if age_ms >= cfg.max_age.as_millis() as i128 {
            record.status = Status::Failed {
                reason: format!(
                    "not sent: decided {} s ago, longer than the actor's limit of {} s (was it down?)",
                    age_ms / 1000,
                    cfg.max_age.as_secs()
                ),
            };
            record
        } else {
            let refs: Vec<&dyn Moderator> = moderators.iter().map(|m| m.as_ref()).collect();
            let mut one = [record];
            execute(&refs, &mut one).await;
            let [record] = one;
            record
        };
        match &record.status {
            Status::Done { .. } => {
                counters.done.fetch_add(1, Ordering::Relaxed);
                let kept = match record.action.kind {
                    ActionKind::Unban => store.forget_undo_handle(&who).await,
                    _ if !record.action.undo_handle.is_empty() => {
                        store
                            .save_undo_handle(&who, &record.action.undo_handle, UNDO_HANDLE_TTL)
                            .await
                    }
                    _ => Ok(()),
                };
                if let Err(e) = kept {
                    warn!(error = %e, "cannot keep the undo handle; an undo of this action may fail");
                }
            }
            _ => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let Some(answer) =
            spamscope_act::engine::to_detector_output(&Output::Record(Box::new(record)))
        else {
            let _ = m.ack().await;
            continue;
        };
        let key = spamscope_detect::output_key(&answer);
        match bus
            .publish(
                m.subject.to_string(),
                &key,
                async_nats::HeaderMap::new(),
                Bytes::from(answer.encode_to_vec()),
            )
            .await
        {
            Ok(_) => {
                if let Err(e) = m.ack().await {
                    warn!(error = %e, "ack failed; the action may be sent again");
                }
            }
            Err(e) => {
                // Sent, but the answer is not out: taken again later (and
                // sent again, which the platform answers as a duplicate).
                warn!(error = %e, "cannot publish the answer; the record will be taken again");
                let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
        }
    }
}
