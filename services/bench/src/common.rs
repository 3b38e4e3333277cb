//! What both benches share: the workload of repeated real logs, latency
//! bookkeeping and percentiles, and where the bundled data is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use spamscope_chat::replay;
use spamscope_ingest::files::read;
use spamscope_proto::v1::ChatEvent;

/// A bundled data file, found from the current directory or the repository
/// root the binary was built in.
pub fn data_path(rel: &str) -> std::path::PathBuf {
    let here = std::path::PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// The bundled logs repeated until `n` events over `streams` streams.
pub(crate) fn workload(n: usize, streams: usize) -> Result<Vec<ChatEvent>> {
    let files = read(&[
        data_path("testdata/twitch/xqcow-2019-09-15.irc"),
        data_path("testdata/youtube/chilledcow-2020-11.chat-downloader.json"),
    ])?;
    let logs: Vec<Vec<ChatEvent>> = files
        .into_iter()
        .map(|f| {
            replay::merge(vec![f])
                .into_iter()
                .filter(|e| {
                    !matches!(
                        e.kind,
                        Some(spamscope_proto::v1::chat_event::Kind::StreamEnded(_))
                    )
                })
                .collect()
        })
        .collect();
    let per_stream = n.div_ceil(streams.max(1));
    let copies = streams.div_ceil(logs.len()).max(1);
    let mut out = Vec::with_capacity(per_stream * streams);
    for s in 0..streams {
        let log = &logs[s % logs.len()];
        if log.is_empty() {
            continue;
        }
        let base = log[0].ts_ms;
        let span = log[log.len() - 1].ts_ms - base + 1000;
        // Copies of one log start at different points of it, as different
        // chats would be, all at the same instant: time relative to the
        // copy's starting event, laps of the log one after another.
        let start = (s / logs.len()) * log.len() / copies;
        let t0 = 1_700_000_000_000 - (log[start].ts_ms - base);
        for j in start..start + per_stream {
            let ev = &log[j % log.len()];
            let lap = (j / log.len()) as i64;
            let mut e = ev.clone();
            e.ts_ms = t0 + (ev.ts_ms - base) + lap * span;
            e.stream_id = format!("{}-{s}", ev.stream_id);
            e.event_id = format!("{}-{s}-{lap}", ev.event_id);
            out.push(e);
        }
    }
    out.sort_by_key(|e| e.ts_ms);
    out.truncate(n);
    Ok(out)
}

pub(crate) fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Send times by (stream key, event time): what arrives downstream is
/// matched to the event that caused it by those two.
pub(crate) type Sent = Arc<Mutex<HashMap<(String, i64), Instant>>>;

/// Records now as the send time of `e` (first send wins).
pub(crate) fn stamp(sent: &Sent, e: &ChatEvent) {
    stamp_at(sent, e, Instant::now());
}

/// Records `at` as the send time of `e` (first send wins).
pub(crate) fn stamp_at(sent: &Sent, e: &ChatEvent, at: Instant) {
    sent.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry((e.stream_key(), e.ts_ms))
        .or_insert(at);
}

/// Adds the milliseconds from the send of `key` to `now` to `lat`, if
/// `key` was sent.
pub(crate) fn record_latency(
    sent: &Sent,
    lat: &Mutex<Vec<f64>>,
    key: &(String, i64),
    now: Instant,
) {
    let t = sent
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(key)
        .copied();
    if let Some(t) = t {
        lat.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(now.duration_since(t).as_secs_f64() * 1000.0);
    }
}

/// One latency sample with where and when it arrived (for `--latency-csv`).
pub(crate) type Sample = (Instant, f64, String);

/// A gRPC client of the gateway at `addr`, retrying for 30 s while it
/// starts. Each call is a connection of its own.
pub(crate) async fn gateway_client(
    addr: &str,
) -> Result<spamscope_proto::v1::gateway_client::GatewayClient<tonic::transport::Channel>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match spamscope_proto::v1::gateway_client::GatewayClient::connect(format!("http://{addr}"))
            .await
        {
            Ok(c) => return Ok(c),
            Err(e) if std::time::Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}
