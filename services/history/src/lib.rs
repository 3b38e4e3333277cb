//! The history writer role: a durable pull consumer (`history-writer`) of
//! the SPAM stream: spam events, decisions and action records (the audit
//! trail) go to the history store. Messages are taken in batches (up to `batch` or
//! `max_wait`), written to the history store in one transaction, and only
//! then acknowledged: a crash re-delivers the batch, and the idempotent
//! writes make that harmless. At most `max_ack_pending` messages are in
//! flight, so a slow store applies backpressure (JetStream keeps the rest)
//! instead of dropping. Undecodable payloads go to `dlq.spam`. When the
//! consumer fails (its idle heartbeats stop: NATS restarted, or lost its
//! store and the SPAM stream was created again without the consumer), the
//! writer opens it again by itself, creating it where it is gone.

pub mod cli;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use prost::Message;
use spamscope_bus::Bus;
use spamscope_history::any::History;
use spamscope_proto::v1::{DetectorOutput, detector_output};
use spamscope_runtime::{Health, now_ms};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub const CONSUMER: &str = "history-writer";

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub batch: usize,
    pub max_wait: Duration,
    pub max_ack_pending: i64,
    /// Records older than this are expired (checked every `expire_every`).
    pub ttl: Option<Duration>,
    pub expire_every: Duration,
    /// Idle heartbeat asked of the server on each pull: two missed mean
    /// the consumer is gone or unreachable, and it is opened again.
    pub idle_heartbeat: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            batch: 500,
            max_wait: Duration::from_millis(200),
            max_ack_pending: 20_000,
            ttl: None,
            expire_every: Duration::from_secs(600),
            idle_heartbeat: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Default)]
pub struct WriterCounters {
    pub written: AtomicU64,
    pub batches: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Times the consumer was opened again after an error.
    pub reopened: AtomicU64,
}

/// The durable consumer's messages, creating the consumer where it is
/// gone.
async fn open(bus: &Bus, cfg: &WriterConfig) -> Result<pull::Stream, WriterError> {
    bus.spam_consumer(
        CONSUMER,
        DeliverPolicy::All,
        cfg.max_ack_pending,
        cfg.idle_heartbeat,
    )
    .await
    .map_err(|e| WriterError::JetStream(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("jetstream: {0}")]
    JetStream(String),
}

pub async fn run(
    cfg: WriterConfig,
    bus: Bus,
    store: History,
    health: Health,
    counters: Arc<WriterCounters>,
    shutdown: CancellationToken,
) -> Result<(), WriterError> {
    let mut messages = open(&bus, &cfg).await?;
    let mut reopen =
        spamscope_runtime::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    health.set_ready(true);
    info!("history writer consuming SPAM");
    let mut expire = tokio::time::interval(cfg.expire_every);
    // Newest event time written: the TTL counts back from it (or from now,
    // if earlier), so a replay of old logs is not expired as it is written,
    // and nothing is expired before this writer has seen anything.
    let mut newest_ms: Option<i64> = None;
    loop {
        // Gather one batch.
        let mut batch = Vec::with_capacity(cfg.batch);
        let deadline = tokio::time::sleep(cfg.max_wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => { if batch.is_empty() { return Ok(()); } break; }
                _ = &mut deadline, if !batch.is_empty() => break,
                _ = expire.tick(), if batch.is_empty() => {
                    if let (Some(ttl), Some(newest)) = (cfg.ttl, newest_ms) {
                        let cutoff = now_ms().min(newest) - ttl.as_millis() as i64;
                        match store.expire(cutoff).await {
                            Ok(n) if n > 0 => info!(removed = n, "history expired"),
                            Err(e) => warn!(error = %e, "expiry failed"),
                            _ => {}
                        }
                    }
                }
                m = messages.next() => match m {
                    Some(Ok(m)) => { batch.push(m); if batch.len() >= cfg.batch { break; } }
                    Some(Err(e)) => {
                        warn!(error = %e, "consumer error; opening the consumer again");
                        tokio::time::sleep(reopen.next_delay()).await;
                        match open(&bus, &cfg).await {
                            Ok(m) => { messages = m; reopen.reset(); counters.reopened.fetch_add(1, Ordering::Relaxed); health.set_ready(true); }
                            Err(e) => { health.set_ready(false); warn!(error = %e, "cannot open the consumer; retrying"); }
                        }
                    }
                    None => return Err(WriterError::JetStream("consumer ended".into())),
                },
            }
        }
        let svc = spamscope_telemetry::service("history-writer");
        let m_ = spamscope_telemetry::metrics();
        m_.events_in.add(batch.len() as u64, &svc);
        if let Some(Ok(info)) = batch.last().map(|m| m.info()) {
            m_.consumer_lag.record(info.pending, &svc);
        }
        let spans: Vec<spamscope_telemetry::TraceContext> = batch
            .iter()
            .filter_map(|m| spamscope_telemetry::extract(m.headers.as_ref()))
            .map(|parent| {
                spamscope_telemetry::child_span(
                    "history.write",
                    &parent,
                    vec![spamscope_telemetry::KeyValue::new(
                        "spamscope.batch",
                        batch.len() as i64,
                    )],
                )
            })
            .collect();
        let mut events = Vec::new();
        let mut decisions = Vec::new();
        let mut actions = Vec::new();
        for m in &batch {
            match DetectorOutput::decode(m.payload.clone()) {
                Ok(o) => match o.kind {
                    Some(detector_output::Kind::SpamEvent(e)) => events.push(e),
                    Some(detector_output::Kind::Decision(d)) => decisions.push(d),
                    Some(detector_output::Kind::Action(a)) => actions.push(a),
                    _ => {}
                },
                Err(e) => {
                    counters.dead_letters.fetch_add(1, Ordering::Relaxed);
                    m_.dead_letters.add(1, &svc);
                    let reason = format!("not a spamscope.v1.DetectorOutput: {e}");
                    if let Err(e) = bus
                        .dead_letter("spam", m.subject.as_str(), &reason, m.payload.clone())
                        .await
                    {
                        warn!(error = %e, "dead letter failed");
                    }
                }
            }
        }
        let n = events.len() + decisions.len() + actions.len();
        let batch_newest = events
            .iter()
            .map(|e| e.last_seen_ms)
            .chain(decisions.iter().map(|d| d.at_ms))
            .chain(actions.iter().map(|a| a.at_ms))
            .max();
        let written = store.write(events, decisions, actions).await;
        spans.iter().for_each(spamscope_telemetry::end);
        match written {
            Ok(()) => {
                for m in &batch {
                    if let Err(e) = m.ack().await {
                        warn!(error = %e, "ack failed; the message will be redelivered");
                    }
                }
                newest_ms = newest_ms.max(batch_newest);
                counters.written.fetch_add(n as u64, Ordering::Relaxed);
                m_.events_out.add(n as u64, &svc);
                counters.batches.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                warn!(error = %e, "history write failed; retrying the batch");
                for m in &batch {
                    let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                }
            }
        }
    }
}
