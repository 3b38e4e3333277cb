//! What JetStream keeps of one stream, read back for people: the raw chat
//! of a CHAT-<shard> stream (for backfill and ended streams) and the
//! detector outputs of SPAM (for a spam event's messages and users).
//!
//! JetStream reads forward only, so a read backwards goes chunk by chunk:
//! an ordered consumer filtered to the stream's subject reads a span of
//! sequences, the span before it comes next, and spans grow (up to
//! [`MAX_SPAN`]) while they hold nothing. Every read is bounded: a chunk
//! holds at most [`MAX_SPAN`] messages and a caller says how many it
//! visits in all.

use std::ops::ControlFlow;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use futures::StreamExt;

/// Sequences the first chunk spans.
const FIRST_SPAN: u64 = 512;
/// Largest chunk, in sequences (so in messages, at most).
pub const MAX_SPAN: u64 = 16 * 1024;
/// How long a read waits for the next message before it takes the
/// subject to hold nothing more (only when the messages it expected were
/// removed by retention meanwhile: a span with none at all is known at
/// once from the consumer's pending count).
const IDLE: Duration = Duration::from_secs(2);

/// One message JetStream keeps.
#[derive(Debug)]
pub struct Kept {
    pub seq: u64,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
    /// When JetStream stored it (not the chat's event time).
    pub published: async_nats::datetime::DateTime,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("JetStream: {e}")
}

/// Visits `subject` of `stream` from `deliver` on, oldest first, until
/// `visit` breaks, a sequence at or after `before`, the last message there
/// is, or `max` messages. Returns how many it visited.
pub async fn read(
    stream: &Stream,
    subject: &str,
    deliver: DeliverPolicy,
    before: u64,
    max: usize,
    mut visit: impl FnMut(Kept) -> ControlFlow<()>,
) -> Result<usize, String> {
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.to_owned(),
            deliver_policy: deliver,
            ..Default::default()
        })
        .await
        .map_err(err)?;
    // Nothing of the subject from there on: done at once, rather than
    // after the idle wait (a backwards scan of a stream with few outputs
    // among many meets many such spans).
    if consumer.cached_info().num_pending == 0 {
        return Ok(0);
    }
    let mut messages = consumer.messages().await.map_err(err)?;
    let mut visited = 0;
    while visited < max {
        let m = match tokio::time::timeout(IDLE, messages.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(m)) => m.map_err(err)?,
        };
        let info = m.info().map_err(err)?;
        let (seq, pending, published) = (info.stream_sequence, info.pending, info.published);
        if seq >= before {
            break;
        }
        visited += 1;
        let flow = visit(Kept {
            seq,
            headers: m.message.headers.clone(),
            payload: m.message.payload.clone(),
            published,
        });
        if flow.is_break() || pending == 0 {
            break;
        }
    }
    Ok(visited)
}

/// How a backwards scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// The visitor had enough.
    Stopped,
    /// Nothing older is kept.
    Start,
    /// `max` messages were visited.
    Budget,
}

/// Visits the messages of `subject` before sequence `before`, newest
/// first, until `visit` breaks, the stream's first message, or `max`
/// messages.
pub async fn scan_back(
    stream: &Stream,
    first_seq: u64,
    subject: &str,
    before: u64,
    max: usize,
    mut visit: impl FnMut(Kept) -> ControlFlow<()>,
) -> Result<ScanEnd, String> {
    let first_seq = first_seq.max(1);
    let (mut end, mut span, mut visited) = (before, FIRST_SPAN, 0usize);
    while end > first_seq {
        let start = end.saturating_sub(span).max(first_seq);
        let mut chunk = Vec::new();
        read(
            stream,
            subject,
            DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            end,
            usize::try_from(span).unwrap_or(usize::MAX),
            |m| {
                chunk.push(m);
                ControlFlow::Continue(())
            },
        )
        .await?;
        let empty = chunk.is_empty();
        for m in chunk.into_iter().rev() {
            visited += 1;
            if visit(m).is_break() {
                return Ok(ScanEnd::Stopped);
            }
            if visited >= max {
                return Ok(ScanEnd::Budget);
            }
        }
        if empty {
            span = (span * 2).min(MAX_SPAN);
        }
        end = start;
    }
    Ok(ScanEnd::Start)
}

/// The stream's first and last sequence.
pub async fn bounds(stream: &mut Stream) -> Result<(u64, u64), String> {
    let info = stream.info().await.map_err(err)?;
    Ok((info.state.first_sequence, info.state.last_sequence))
}
