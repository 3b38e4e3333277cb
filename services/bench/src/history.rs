//! `spamscope-bench history`: the history writer's store and the gateway,
//! measured on outputs of the real detector over the bundled logs.
//!
//! 1. write rate: the detector's spam events and decisions written to the
//!    embedded history store in the writer's batches;
//! 2. search latency: copypasta texts from those events searched in the
//!    store the bench filled;
//! 3. WatchChannel: N concurrent gRPC streams on a real gateway (loopback,
//!    its own nats-server), each fed its own channel's chat through ingest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use spamscope_bus::{Bus, BusConfig};
use spamscope_chat::replay::Speed;
use spamscope_detect::{Detector, ScoreModel};
use spamscope_history::any::History;
use spamscope_proto::v1::{
    ChatEvent, Decision, SpamEvent, WatchChannelRequest, detector_output, watch_channel_event,
};
use spamscope_store::Store;
use tokio_util::sync::CancellationToken;

use crate::common::{Sent, pct, record_latency, stamp, workload};

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Chat events the detector runs over to make the outputs written.
    #[arg(long, default_value_t = 300_000)]
    pub events: usize,
    /// Streams they are spread over.
    #[arg(long, default_value_t = 300)]
    pub streams: usize,
    /// Outputs per write (the history writer's default batch).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Searches timed.
    #[arg(long, default_value_t = 300)]
    pub searches: usize,
    /// Concurrent WatchChannel streams.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Chat events published to each watched channel.
    #[arg(long, default_value_t = 200)]
    pub per_watcher: usize,
}

pub fn run(a: HistoryArgs) -> Result<()> {
    eprintln!("bench: detector over {} events", a.events);
    let events = workload(a.events, a.streams)?;
    let mut detector = Detector::new(Arc::new(ScoreModel::bundled()));
    let mut out = Vec::new();
    let (mut spam, mut decisions): (Vec<SpamEvent>, Vec<Decision>) = (Vec::new(), Vec::new());
    for ev in &events {
        out.clear();
        detector.handle(ev, &mut out);
        for o in out.drain(..) {
            match o.kind {
                Some(detector_output::Kind::SpamEvent(e)) => spam.push(e),
                Some(detector_output::Kind::Decision(d)) => decisions.push(d),
                _ => {}
            }
        }
    }
    anyhow::ensure!(!spam.is_empty(), "the detector found no spam to write");
    let dir = std::env::temp_dir().join(format!("spamscope-bench-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(&a, &dir, spam, decisions));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(
    a: &HistoryArgs,
    dir: &std::path::Path,
    spam: Vec<SpamEvent>,
    decisions: Vec<Decision>,
) -> Result<()> {
    let store = spamscope_history::HistoryStore::open(&dir.join("history.redb"))?;
    let history = History::Embedded(Arc::new(store));

    eprintln!(
        "bench: writing {} spam event versions and {} decisions",
        spam.len(),
        decisions.len()
    );
    let outputs = spam.len() + decisions.len();
    let batch = a.batch.max(1);
    let started = Instant::now();
    // Batches as the writer makes them: up to `batch` of each kind.
    let (mut s, mut d) = (spam.chunks(batch), decisions.chunks(batch));
    loop {
        let (e, dec) = (s.next(), d.next());
        if e.is_none() && dec.is_none() {
            break;
        }
        history
            .write(
                e.map(<[SpamEvent]>::to_vec).unwrap_or_default(),
                dec.map(<[Decision]>::to_vec).unwrap_or_default(),
                Vec::new(),
            )
            .await?;
    }
    let write_rate = outputs as f64 / started.elapsed().as_secs_f64();

    eprintln!("bench: {} searches", a.searches);
    // Each event with the text of its first update, whose key is its
    // fingerprint. (Its label follows its most frequent variant later; a
    // search by a later label that differs much from the first can miss:
    // the store keeps one signature per fingerprint.)
    let mut first: std::collections::BTreeMap<(&str, u64), &SpamEvent> = Default::default();
    for e in &spam {
        let slot = first.entry((e.stream_id.as_str(), e.event_id)).or_insert(e);
        if e.version < slot.version {
            *slot = e;
        }
    }
    let events: Vec<&SpamEvent> = first.into_values().collect();
    let step = (events.len() / a.searches.max(1)).max(1);
    let mut lat = Vec::new();
    let mut found = 0;
    for e in events.iter().step_by(step).take(a.searches) {
        let t = Instant::now();
        let page = history.search(e.text.clone(), 0.5, 20, None, 5).await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        if page.items.iter().any(|m| m.fingerprint == e.fingerprint) {
            found += 1;
        }
    }
    lat.sort_by(f64::total_cmp);

    eprintln!("bench: {} concurrent WatchChannel streams", a.watchers);
    let (delivered, expected, watch_rate, watch_lat) = watch(a, history.clone()).await?;

    println!(
        "history and gateway benchmark ({} outputs from the detector over the bundled logs)",
        outputs
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| history write, batches of {batch} | {write_rate:.0} outputs/s |");
    println!(
        "| search latency p50 / p99 ({} searches, store of {} outputs) | {:.2} / {:.2} ms |",
        lat.len(),
        outputs,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    println!(
        "| searches that found their own copypasta | {found} of {} |",
        lat.len()
    );
    println!(
        "| WatchChannel: {} streams, chat delivered | {delivered} of {expected} at {watch_rate:.0} events/s |",
        a.watchers
    );
    println!(
        "| WatchChannel publish → client latency p50 / p99 | {:.1} / {:.1} ms |",
        pct(&watch_lat, 0.5),
        pct(&watch_lat, 0.99)
    );
    Ok(())
}

/// N WatchChannel clients on a real gateway, each on its own channel;
/// returns (delivered, expected, delivered per second, latencies in ms).
async fn watch(a: &HistoryArgs, history: History) -> Result<(u64, u64, f64, Vec<f64>)> {
    const SHARDS: u32 = 8;
    let nats = spamscope_testkit::Nats::start();
    let url = nats.url();
    let bus = Bus::connect(&url, "spamscope-bench-gateway").await?;
    bus.ensure_streams(
        &BusConfig {
            url: url.clone(),
            shards: SHARDS,
            ..BusConfig::default()
        },
        spamscope_bus::StreamLimits::Apply,
    )
    .await?;
    let store = Store::open(None, "").await?;
    store.ensure_shards(SHARDS).await?;
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // Every bench watcher connects from this process's one address.
    let gateway = spamscope_gateway::Gateway::new(bus.clone(), store, history, SHARDS, None)
        .with_watch_limits(spamscope_gateway::watch::WatchLimits {
            total: a.watchers.max(1),
            per_client: a.watchers.max(1),
            buffer: a.per_watcher.max(16),
            ..Default::default()
        });
    let server = tokio::spawn(spamscope_gateway::serve(
        listener,
        gateway,
        None,
        spamscope_runtime::Health::default(),
        stop.clone(),
    ));

    // The chat: real messages, each watcher's channel its own stream.
    let base = workload(a.watchers * a.per_watcher, a.watchers)?;
    let chat: Vec<ChatEvent> = base
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            // One channel per watcher, whichever log the message came from.
            e.set_platform(spamscope_proto::v1::Platform::Twitch);
            e.stream_id = format!("watch{}", i % a.watchers);
            e.ts_ms = 1_700_000_000_000 + i as i64;
            e
        })
        .collect();
    let expected = chat.len() as u64;

    // One message per channel first, before any watcher: the gateway
    // refuses to watch a stream it has never seen.
    let seeds: Vec<ChatEvent> = chat
        .iter()
        .take(a.watchers)
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
    let sent: Sent = Arc::default();
    let delivered = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(chat.len())));
    let mut clients = Vec::new();
    for w in 0..a.watchers {
        let mut c = crate::common::gateway_client(&addr.to_string()).await?;
        let mut s = c
            .watch_channel(WatchChannelRequest {
                stream: format!("twitch.watch{w}"),
            })
            .await?
            .into_inner();
        let (sent, delivered, lat) = (Arc::clone(&sent), Arc::clone(&delivered), Arc::clone(&lat));
        let per = a.per_watcher as u64;
        clients.push(tokio::spawn(async move {
            let mut got = 0;
            while got < per {
                let Ok(Ok(Some(m))) =
                    tokio::time::timeout(Duration::from_secs(30), s.message()).await
                else {
                    break;
                };
                if let Some(watch_channel_event::Kind::Chat(ev)) = m.kind {
                    let now = Instant::now();
                    got += 1;
                    delivered.fetch_add(1, Ordering::Relaxed);
                    record_latency(&sent, &lat, &(ev.stream_key(), ev.ts_ms), now);
                }
            }
        }));
    }
    // Let the subscriptions settle before the chat starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let no_stop = CancellationToken::new();
    let report = spamscope_ingest::publish_events_observed(
        &bus,
        &chat,
        SHARDS,
        Speed::Max,
        spamscope_ingest::PublishOptions::default(),
        &no_stop,
        |i| {
            stamp(&sent, &chat[i]);
        },
    )
    .await?;
    eprintln!(
        "bench: published {} ({} duplicates)",
        report.published, report.duplicates
    );
    for c in clients {
        c.await.context("watcher")?;
    }
    let rate = delivered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = server.await;
    let mut lat = std::mem::take(
        &mut *lat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    lat.sort_by(f64::total_cmp);
    drop(nats);
    Ok((delivered.load(Ordering::Relaxed), expected, rate, lat))
}
