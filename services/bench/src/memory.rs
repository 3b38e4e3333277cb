//! `spamscope-bench memory`: resident memory of the roles that outside
//! input can grow, each its own `spamscope` process on its own
//! nats-server and redis-server, read from `/proc/<pid>/status`:
//!
//! 1. a detector replica sent one message on each of N streams (recorded
//!    chat: no clock moves them), once keeping every stream in memory and
//!    once with the default eviction (`--stream-idle-s`): RSS per 100,000
//!    idle streams, and the bytes each stream's saved state takes in Redis;
//! 2. a gateway with W WatchChannel streams, half of which never read,
//!    while each channel gets its chat: RSS at rest and at its peak.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use spamscope_bus::Bus;
use spamscope_chat::replay::Speed;
use spamscope_proto::v1::{ChatEvent, WatchChannelRequest, watch_channel_event};
use spamscope_testkit::{Cluster, Proc, TempDir, free_port, twitch_message};
use tokio_util::sync::CancellationToken;

const SHARDS: u32 = 16;

#[derive(Debug, clap::Args)]
pub struct MemoryArgs {
    /// The `spamscope` binary the roles run.
    #[arg(long, default_value = "target/release/spamscope")]
    pub bin: PathBuf,
    /// Streams sent to the detector, one message each.
    #[arg(long, default_value_t = 100_000)]
    pub streams: usize,
    /// The detector's `--stream-idle-s` in the evicting run (its minimum).
    #[arg(long, default_value_t = 10)]
    pub stream_idle_s: u64,
    /// Concurrent WatchChannel streams on the gateway.
    #[arg(long, default_value_t = 1_000)]
    pub watchers: usize,
    /// Chat events published to each watched channel.
    #[arg(long, default_value_t = 100)]
    pub per_watcher: usize,
}

/// The sum over every series of metric `name` on a role's `/metrics`
/// (Prometheus text over plain HTTP/1.0 on loopback).
fn metric(addr: &str, name: &str) -> Result<f64> {
    use std::io::{Read, Write};
    let mut conn =
        std::net::TcpStream::connect(addr).with_context(|| format!("metrics at {addr}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(conn, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b))
}

/// Resident and peak resident memory of a process, in MiB.
fn rss(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid}"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0))
}

pub fn run(a: MemoryArgs) -> Result<()> {
    if !a.bin.exists() {
        bail!("{}: no such binary (make build)", a.bin.display());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let keep = detector(&a, false).await?;
        let evict = detector(&a, true).await?;
        println!();
        println!(
            "| detector, {} idle streams | RSS before | peak RSS | RSS after | held / left memory | saved state in Redis |",
            a.streams
        );
        println!("|---|---|---|---|---|---|");
        for (name, r) in [
            ("every stream held (idle 1 day, no cap)", &keep),
            ("default eviction (idle 10 s, 1,000 held per shard)", &evict),
        ] {
            println!(
                "| {name} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} / {:.0} | {} streams, {:.0} bytes each |",
                r.before,
                r.peak,
                r.after,
                r.held,
                r.evicted,
                r.saved,
                r.saved_bytes as f64 / r.saved.max(1) as f64
            );
        }
        let g = gateway(&a).await?;
        println!();
        println!(
            "| gateway, {} WatchChannel streams ({} never read) | RSS |",
            a.watchers,
            a.watchers / 2
        );
        println!("|---|---|");
        println!("| before any watcher | {:.0} MiB |", g.before);
        println!("| watchers open, no chat | {:.0} MiB |", g.open);
        println!(
            "| after {} chat events ({} delivered to the readers) | {:.0} MiB (peak {:.0} MiB) |",
            g.published, g.delivered, g.after, g.peak
        );
        Ok(())
    })
}

struct DetectorRun {
    before: f64,
    after: f64,
    peak: f64,
    held: f64,
    evicted: f64,
    saved: u64,
    saved_bytes: u64,
}

async fn detector(a: &MemoryArgs, evict: bool) -> Result<DetectorRun> {
    let c = Cluster::start(&a.bin, SHARDS);
    let idle = if evict {
        a.stream_idle_s.to_string()
    } else {
        "86400".to_owned()
    };
    let cap = if evict { "1000" } else { "1000000" };
    let _router = c.router("r0");
    let health = format!("127.0.0.1:{}", free_port());
    let d = c.role(
        "d0",
        "detector",
        &[
            "--replica-id",
            "d0",
            "--stream-idle-s",
            &idle,
            "--max-streams-per-shard",
            cap,
            "--health-listen",
            &health,
        ],
    );
    c.await_placement(&["d0"], Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (before, _) = rss(d.pid())?;
    let events: Vec<ChatEvent> = (0..a.streams)
        .map(|i| twitch_message(&format!("idle{i}"), u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    eprintln!(
        "bench: {} streams to a detector ({})",
        a.streams,
        if evict { "evicting" } else { "holding all" }
    );
    let bus = Bus::connect(&c.nats_url(), "spamscope-bench-memory").await?;
    spamscope_ingest::publish_events(
        &bus,
        &events,
        SHARDS,
        Speed::Max,
        spamscope_ingest::PublishOptions::default(),
        &CancellationToken::new(),
    )
    .await?;
    await_read(&c, &d).await?;
    if evict {
        // Idle, then a checkpoint period (5 s) or two.
        tokio::time::sleep(Duration::from_secs(a.stream_idle_s + 12)).await;
    } else {
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    let (after, peak) = rss(d.pid())?;
    let held = metric(&health, "spamscope_detector_streams_held")?;
    let evicted = metric(&health, "spamscope_detector_streams_evicted_total")?;
    let store = spamscope_store::Store::open(Some(&c.redis.url()), "spamscope:").await?;
    let (mut saved, mut saved_bytes) = (0, 0);
    for s in 0..SHARDS {
        let (n, b) = store.saved_streams(s).await?;
        saved += n;
        saved_bytes += b;
    }
    Ok(DetectorRun {
        before,
        after,
        peak,
        held,
        evicted,
        saved,
        saved_bytes,
    })
}

/// Waits until every shard's progress (written with its checkpoints)
/// reaches the end of its chat stream.
async fn await_read(c: &Cluster, d: &Proc) -> Result<()> {
    let store = spamscope_store::Store::open(Some(&c.redis.url()), "spamscope:").await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let progress = store.progress().await?;
        let mut done = true;
        for s in 0..SHARDS {
            let len = spamscope_testkit::jetstream::stream_len(
                &c.nats_url(),
                &spamscope_bus::subjects::chat_stream(s),
            )
            .await;
            done &= progress.get(&s).is_some_and(|p| p.last_sequence >= len);
        }
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the detector did not read its chat:\n{}", d.log_text());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct GatewayRun {
    before: f64,
    open: f64,
    after: f64,
    peak: f64,
    published: usize,
    delivered: u64,
}

async fn gateway(a: &MemoryArgs) -> Result<GatewayRun> {
    let c = Cluster::start(&a.bin, SHARDS);
    // The router makes the streams.
    let _router = c.router("r0");
    let dir = TempDir::new("bench-gateway");
    let addr = format!("127.0.0.1:{}", free_port());
    let history = dir.0.join("history.redb");
    let watchers = a.watchers.to_string();
    let g = c.role(
        "gw",
        "gateway",
        &[
            "--listen",
            &addr,
            "--no-writer",
            "--history-path",
            history_arg(&history),
            "--max-watchers",
            &watchers,
            "--max-watchers-per-client",
            &watchers,
        ],
    );
    let bus = Bus::connect(&c.nats_url(), "spamscope-bench-memory").await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while bus.chat_shards().await.ok().flatten() != Some(SHARDS) {
        if Instant::now() > deadline {
            bail!("the router made no chat streams");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let chat: Vec<ChatEvent> = (0..a.watchers * a.per_watcher)
        .map(|i| {
            let mut e = twitch_message(
                &format!("watch{}", i % a.watchers),
                u32::try_from(i).unwrap_or(u32::MAX),
            );
            e.ts_ms = 1_700_000_000_000 + i as i64;
            e
        })
        .collect();
    // One message per channel first: the gateway watches only streams it
    // has seen.
    let seeds: Vec<ChatEvent> = chat[..a.watchers]
        .iter()
        .map(|e| {
            let mut s = e.clone();
            s.event_id = format!("seed-{}", e.event_id);
            s
        })
        .collect();
    spamscope_ingest::publish_events(
        &bus,
        &seeds,
        SHARDS,
        Speed::Max,
        spamscope_ingest::PublishOptions::default(),
        &CancellationToken::new(),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (before, _) = rss(g.pid())?;
    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let mut idle = Vec::new();
    // A connection per 100 streams: HTTP/2 servers take a bounded number
    // of concurrent streams per connection (hyper: 200).
    let mut client = crate::common::gateway_client(&addr).await?;
    for w in 0..a.watchers {
        if w > 0 && w % 100 == 0 {
            client = crate::common::gateway_client(&addr).await?;
        }
        let mut s = client
            .watch_channel(WatchChannelRequest {
                stream: format!("twitch.watch{w}"),
            })
            .await
            .with_context(|| format!("watcher {w}"))?
            .into_inner();
        if w % 2 == 1 {
            // Opened, never read.
            idle.push(s);
            continue;
        }
        let delivered = Arc::clone(&delivered);
        let per = a.per_watcher as u64;
        readers.push(tokio::spawn(async move {
            let mut got = 0;
            while got < per {
                let Ok(Ok(Some(m))) =
                    tokio::time::timeout(Duration::from_secs(30), s.message()).await
                else {
                    break;
                };
                if let Some(watch_channel_event::Kind::Chat(_)) = m.kind {
                    got += 1;
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (open, _) = rss(g.pid())?;
    eprintln!(
        "bench: {} chat events to {} watched channels",
        chat.len(),
        a.watchers
    );
    spamscope_ingest::publish_events(
        &bus,
        &chat,
        SHARDS,
        Speed::Max,
        spamscope_ingest::PublishOptions::default(),
        &CancellationToken::new(),
    )
    .await?;
    for r in readers {
        let _ = r.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, peak) = rss(g.pid())?;
    drop(idle);
    Ok(GatewayRun {
        before,
        open,
        after,
        peak,
        published: chat.len(),
        delivered: delivered.load(Ordering::Relaxed),
    })
}

fn history_arg(p: &Path) -> &str {
    p.to_str().unwrap_or("history.redb")
}
