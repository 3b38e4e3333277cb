//! `spamscope-bench pipeline`: the sharded pipeline on one machine, measured
//! against raw JetStream in the same run.
//!
//! Everything runs in this process except `nats-server` (a child on a free
//! port, as in `standalone`): the publisher (the ingest library), a router
//! and detector replicas, all on the embedded state store. Events are the
//! bundled logs repeated under shifted stream ids and timestamps.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use spamscope_bus::{Bus, BusConfig, subjects};
use spamscope_chat::replay::Speed;
use spamscope_proto::StreamKey;
use spamscope_proto::v1::{ChatEvent, DetectorOutput, Platform, detector_output};
use spamscope_testkit::{FakeIrc, InProcessCluster, IrcScript, Nats};
use tokio_util::sync::CancellationToken;

use crate::common::{Sample, Sent, pct, record_latency, stamp, stamp_at, workload};

#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    /// Throughput and latency of ingest → JetStream → detectors → SPAM.
    Pipeline(PipelineArgs),
    /// History store write rate and search latency; concurrent WatchChannel
    /// streams on a gateway.
    History(crate::history::HistoryArgs),
    /// Resident memory of a detector holding many idle streams and of a
    /// gateway with many watchers, each its own process.
    Memory(crate::memory::MemoryArgs),
    /// The detector loop alone over chat files parsed before timing (the
    /// race with the seed detector, `scripts/seed_race.py`).
    Core(crate::detector_loop::CoreArgs),
}

#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    /// Events to publish (at least 1,000,000 for the reference numbers).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Streams they are spread over.
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// Detector replicas (at least 1: the pipeline needs a detector).
    #[arg(long, default_value_t = 2,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub replicas: usize,
    #[arg(long, default_value_t = 64)]
    pub shards: u32,
    /// Offered load for the fixed-rate latency run, events per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Length of the fixed-rate run, in seconds.
    #[arg(long, default_value_t = 20)]
    pub rate_seconds: u64,
    /// Also write every latency sample of the fixed-rate run to this CSV
    /// file (seconds since the run's start, latency ms, stream, shard): where
    /// the tail is in time and in which shards.
    #[arg(long)]
    pub latency_csv: Option<std::path::PathBuf>,
    /// Events of one stream in one message at most (as `--max-batch` of
    /// `spamscope ingest`); 1 publishes every event on its own.
    #[arg(long, default_value_t = spamscope_ingest::DEFAULT_MAX_BATCH,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub max_batch: usize,
    /// JetStream duplicate window of the chat and spam streams, seconds (as
    /// `--duplicate-window-s` of the roles; default the roles' default).
    #[arg(long, default_value_t = BusConfig::default().duplicate_window.as_secs())]
    pub duplicate_window_s: u64,
    /// Channels of the live Twitch ingest run (the recorded #xqcow lines
    /// once per channel, interleaved, from an IRC server on loopback); 0
    /// skips it.
    #[arg(long, default_value_t = 20)]
    pub irc_channels: usize,
}

async fn collect_latencies(
    bus: Bus,
    sent: Sent,
    lat: Arc<Mutex<Vec<f64>>>,
    timeline: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
) {
    let Ok(mut sub) = bus.client.subscribe(subjects::SPAM_ALL).await else {
        return;
    };
    loop {
        let m = tokio::select! { _ = stop.cancelled() => return, m = sub.next() => match m { Some(m) => m, None => return } };
        let now = Instant::now();
        if let Ok(DetectorOutput {
            kind: Some(detector_output::Kind::Decision(d)),
        }) = DetectorOutput::decode(m.payload)
        {
            let key = (
                StreamKey::format(Platform::of(d.platform), &d.stream_id),
                d.at_ms,
            );
            let before = lat
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .len();
            record_latency(&sent, &lat, &key, now);
            let l = lat
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if l.len() > before {
                timeline
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((now, l[l.len() - 1], key.0));
            }
        }
    }
}

/// Writes the fixed-rate samples as CSV: seconds since `t0`, latency ms,
/// stream key, shard.
fn write_timeline(
    path: &std::path::Path,
    t0: Instant,
    samples: &[Sample],
    shards: u32,
) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("--latency-csv {}", path.display()))?,
    );
    writeln!(f, "t_s,latency_ms,stream,shard")?;
    for (at, ms, stream) in samples {
        let t = at.saturating_duration_since(t0).as_secs_f64();
        writeln!(
            f,
            "{t:.4},{ms:.2},{stream},{}",
            spamscope_routing::shard_of(stream, shards)
        )?;
    }
    f.flush()?;
    Ok(())
}

/// Messages in the CHAT streams now (a batch of events is one).
async fn chat_messages(bus: &Bus, shards: u32) -> Result<u64> {
    let mut n = 0;
    for s in 0..shards {
        let mut stream = bus.js.get_stream(subjects::chat_stream(s)).await?;
        n += stream.info().await?.state.messages;
    }
    Ok(n)
}

/// What the live Twitch ingest run measured.
struct LiveIngest {
    events: usize,
    per_s: f64,
    in_flight: usize,
}

/// Live Twitch ingest: an IRC server on loopback sends the recorded #xqcow
/// lines, once per channel and interleaved, as soon as every channel is
/// joined; the Twitch source (twitch-irc over plain TCP, as with
/// `--twitch-server`) parses and publishes them. Events per second from the
/// first line sent to the last event stored in JetStream.
async fn live_twitch(bus: &Bus, shards: u32, channels: usize) -> Result<LiveIngest> {
    let path = crate::common::data_path("testdata/twitch/xqcow-2019-09-15.irc");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        for k in 0..channels {
            lines.push(line.replace(" #xqcow", &format!(" #bench{k}")));
        }
    }
    let events = lines.len();
    // No ROOMSTATE on JOIN: the source receives exactly the recorded lines.
    let server = FakeIrc::serve(lines, IrcScript::AllAfterJoins(channels), false);
    // Every event is a message of its own (the live source does not batch).
    let base = chat_messages(bus, shards).await?;
    let stop = CancellationToken::new();
    let cfg = spamscope_ingest::twitch::TwitchConfig {
        channels: (0..channels).map(|k| format!("bench{k}")).collect(),
        joins_per_window: channels,
        server: Some(format!("127.0.0.1:{}", server.port)),
        ..Default::default()
    };
    let ingest = spamscope_ingest::twitch::run(bus, cfg, shards, &stop);
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(600);
        while chat_messages(bus, shards).await? < base + events as u64 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "live ingest did not publish every line"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let started = server.first_sent().context("the IRC server sent nothing")?;
        Ok::<_, anyhow::Error>(started.elapsed())
    };
    let (report, took) = tokio::join!(ingest, async {
        let r = watch.await;
        stop.cancel();
        r
    });
    let (report, took) = (report?, took?);
    Ok(LiveIngest {
        events,
        per_s: events as f64 / took.as_secs_f64(),
        in_flight: report.max_in_flight,
    })
}

/// A copy of `template` on a new stream of `shard`.
fn probe_on(template: &ChatEvent, shard: u32, shards: u32) -> ChatEvent {
    let mut e = template.clone();
    e.stream_id = spamscope_testkit::stream_on_shard(e.platform(), "probe", shard, shards);
    e
}

/// Raw JetStream: the same payloads published and consumed on `partitions`
/// streams of their own (one consumer each), on the same server. One
/// partition is the ceiling; the pipeline's shard count shows what its
/// layout alone costs.
async fn raw_jetstream(
    bus: &Bus,
    reader: &Bus,
    events: &[ChatEvent],
    partitions: u32,
) -> Result<f64> {
    let partitions = partitions.max(1);
    let tag = format!("BENCH{partitions}");
    let mut readers = Vec::new();
    let got = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = events.len();
    for p in 0..partitions {
        let s = reader
            .js
            .get_or_create_stream(stream::Config {
                name: format!("{tag}-{p}"),
                subjects: vec![format!("{}.{p}", tag.to_lowercase())],
                ..Default::default()
            })
            .await?;
        let consumer = s.create_consumer(OrderedConfig::default()).await?;
        let got = Arc::clone(&got);
        readers.push(tokio::spawn(async move {
            let mut msgs = consumer.messages().await?;
            while got.load(Ordering::Relaxed) < n {
                match tokio::time::timeout(Duration::from_millis(200), msgs.next()).await {
                    Ok(Some(Ok(_))) => {
                        got.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(Err(e))) => return Err(anyhow::anyhow!(e.to_string())),
                    Ok(None) => break,
                    Err(_) => {} // idle: look at the total again
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    let started = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    let subject = tag.to_lowercase();
    for (i, e) in events.iter().enumerate() {
        let p = i as u32 % partitions;
        let ack = bus
            .js
            .publish(format!("{subject}.{p}"), Bytes::from(e.encode_to_vec()))
            .await?;
        acks.push_back(ack);
        if acks.len() >= 512
            && let Some(a) = acks.pop_front()
        {
            a.await?;
        }
    }
    while let Some(a) = acks.pop_front() {
        a.await?;
    }
    for r in readers {
        r.await.context("reader")??;
    }
    let got = got.load(Ordering::Relaxed);
    anyhow::ensure!(got == n, "raw consumers got {got} of {n}");
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

pub fn run(what: BenchWhat) -> Result<()> {
    // Warnings of the roles inside (slow checkpoints, retries) on stderr.
    spamscope_telemetry::init_logging_or("warn");
    let a = match what {
        BenchWhat::Pipeline(a) => a,
        BenchWhat::History(h) => return crate::history::run(h),
        BenchWhat::Memory(m) => return crate::memory::run(m),
        BenchWhat::Core(c) => return crate::detector_loop::run(c),
    };
    eprintln!(
        "bench: building {} events over {} streams",
        a.events, a.streams
    );
    let events = workload(a.events, a.streams)?;
    let streams: std::collections::HashSet<&str> =
        events.iter().map(|e| e.stream_id.as_str()).collect();
    let n_streams = streams.len();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        let nats_version = spamscope_runtime::local_nats::LocalNats::version().await;
        let nats = Nats::start();
        let url = nats.url();
        let mut c = InProcessCluster::start(&url, a.shards, a.replicas, Duration::from_secs(a.duplicate_window_s)).await?;

        eprintln!("bench: raw JetStream ceiling");
        // The publisher and the consumers on connections of their own, as
        // ingest and the detectors are.
        let reader = Bus::connect(&url, "spamscope-bench-raw-reader").await?;
        let ceiling = raw_jetstream(&c.bus, &reader, &events, 1).await?;
        eprintln!("bench: raw JetStream over {} streams", a.shards);
        let raw_sharded = raw_jetstream(&c.bus, &reader, &events, a.shards).await?;

        eprintln!("bench: pipeline at saturation");
        let sent: Sent = Arc::default();
        let lat = Arc::new(Mutex::new(Vec::new()));
        let timeline: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let lat_stop = CancellationToken::new();
        let collector = Bus::connect(&url, "spamscope-bench-collector").await?;
        tokio::spawn(collect_latencies(collector, Arc::clone(&sent), Arc::clone(&lat), Arc::clone(&timeline), lat_stop.clone()));
        {
            let mut s = sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            s.reserve(events.len());
        }
        let started = Instant::now();
        // Send time: when ingest hands the event to NATS.
        let no_stop = CancellationToken::new();
        let opts = spamscope_ingest::PublishOptions { max_batch: a.max_batch };
        spamscope_ingest::publish_events_observed(&c.bus, &events, a.shards, Speed::Max, opts, &no_stop, |i| stamp(&sent, &events[i])).await?;
        eprintln!("bench: published in {:.1} s; detectors had processed {} by then, {} outputs", started.elapsed().as_secs_f64(), c.processed(), c.outputs());
        c.wait_processed(events.len() as u64, Duration::from_secs(900)).await?;
        let pipeline = events.len() as f64 / started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut sat: Vec<f64> = std::mem::take(&mut *lat.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        sat.sort_by(f64::total_cmp);
        let messages = chat_messages(&c.bus, a.shards).await?;

        eprintln!("bench: pipeline at {} events/s offered", a.rate);
        let fixed_n = (a.rate * a.rate_seconds) as usize;
        // The same mix on new streams, its timestamps spaced at exactly
        // the offered rate.
        let mut fixed_events: Vec<ChatEvent> = workload(fixed_n, a.streams)?;
        let base = fixed_events.first().map_or(0, |e| e.ts_ms);
        for (k, e) in fixed_events.iter_mut().enumerate() {
            e.stream_id = format!("fixed-{}", e.stream_id);
            e.ts_ms = base + (k as u64 * 1000 / a.rate.max(1)) as i64;
        }
        sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        let before = c.processed();
        let t0 = Instant::now();
        // The ingest library paces the events by their timestamps, set to
        // exactly the offered rate, in real time (its publish window and
        // per-stream order as in production). Latency counts from when an
        // event was due, not from when it went out: a publisher that falls
        // behind shows up in the latency instead of lowering the offered
        // load (no coordinated omission).
        let ts0 = fixed_events.first().map_or(0, |e| e.ts_ms);
        spamscope_ingest::publish_events_observed(&c.bus, &fixed_events, a.shards, Speed::Factor(1.0), opts, &no_stop, |i| {
            let due = t0 + Duration::from_millis(u64::try_from(fixed_events[i].ts_ms - ts0).unwrap_or(0));
            stamp_at(&sent, &fixed_events[i], due);
        })
        .await?;
        let offered = fixed_events.len() as f64 / t0.elapsed().as_secs_f64();
        c.wait_processed(before + fixed_events.len() as u64, Duration::from_secs(300)).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        lat_stop.cancel();
        let mut fixed: Vec<f64> = std::mem::take(&mut *lat.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        fixed.sort_by(f64::total_cmp);
        if let Some(path) = &a.latency_csv {
            let samples = std::mem::take(&mut *timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            write_timeline(path, t0, &samples, a.shards)?;
            eprintln!("bench: {} fixed-rate samples written to {}", samples.len(), path.display());
        }

        eprintln!("bench: rebalance with {} streams of state", n_streams);
        let owners_before = c.store.owners().await?;
        let changed = Instant::now();
        let extra_cfg = c.replica_config("bench-extra");
        let extra = Arc::clone(&c.add_replica(extra_cfg).await?.counters);
        let mut ids: Vec<String> = (0..a.replicas).map(|r| format!("bench-{r}")).collect();
        ids.push("bench-extra".into());
        let want = spamscope_routing::placement(&ids, a.shards, spamscope_routing::DEFAULT_VNODES).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let o = c.store.owners().await?;
            if (0..a.shards).all(|s| o.get(&s).is_some_and(|x| x.replica == want[s as usize])) {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "rebalance did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let placed = changed.elapsed();
        let moved_shards: Vec<u32> = (0..a.shards).filter(|s| owners_before.get(s).map(|o| &o.replica) != Some(&want[*s as usize])).collect();
        let moved = moved_shards.len();
        // Serving again: one probe event per moved shard, each processed by
        // the new owner (it resumes after the Close checkpoint, so the
        // probes are all it has to read).
        let template = events.first().context("empty workload")?;
        let probes: Vec<ChatEvent> = moved_shards.iter().map(|s| probe_on(template, *s, a.shards)).collect();
        spamscope_ingest::publish_events(&c.bus, &probes, a.shards, Speed::Max, opts, &no_stop).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while extra.events.load(Ordering::Relaxed) < probes.len() as u64 {
            anyhow::ensure!(Instant::now() < deadline, "moved shards did not serve their probes");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let serving = changed.elapsed();
        c.shutdown();

        // Ingest alone: the detectors are stopped.
        let live = if a.irc_channels > 0 {
            eprintln!("bench: live Twitch ingest, {} channels over IRC on loopback", a.irc_channels);
            Some(live_twitch(&c.bus, a.shards, a.irc_channels).await?)
        } else {
            None
        };

        let ratio = pipeline / ceiling;
        println!("pipeline benchmark ({} events over {} streams, {} detector replicas, {} shards, nats-server {nats_version})", events.len(), n_streams, a.replicas, a.shards);
        println!("| measure | value |");
        println!("|---|---|");
        println!("| raw JetStream publish → consume (ceiling) | {:.0} events/s |", ceiling);
        println!("| raw JetStream over {} streams, one consumer each (the pipeline's layout) | {:.0} events/s |", a.shards, raw_sharded);
        println!("| pipeline at saturation | {:.0} events/s |", pipeline);
        println!("| chat messages for those events (ingest batches, `--max-batch {}`) | {messages} ({:.1} events per message) |", a.max_batch, events.len() as f64 / messages.max(1) as f64);
        println!("| latency at saturation, p50 / p99 / p99.9 ({} samples) | {:.1} / {:.1} / {:.1} ms |", sat.len(), pct(&sat, 0.5), pct(&sat, 0.99), pct(&sat, 0.999));
        println!("| latency at {} events/s offered ({:.0} achieved), p50 / p99 / p99.9 ({} samples) | {:.1} / {:.1} / {:.1} ms |", a.rate, offered, fixed.len(), pct(&fixed, 0.5), pct(&fixed, 0.99), pct(&fixed, 0.999));
        println!("| rebalance {} → {} replicas: shards moved / time to placed / to all moved shards serving | {moved} of {} ({:.0} %) / {:.2} s / {:.2} s |", a.replicas, a.replicas + 1, a.shards, moved as f64 * 100.0 / f64::from(a.shards), placed.as_secs_f64(), serving.as_secs_f64());
        if let Some(l) = &live {
            println!("| live Twitch ingest, IRC on loopback → JetStream ({} channels, {} lines, one message per event) | {:.0} events/s ({} channels awaiting acks at most) |", a.irc_channels, l.events, l.per_s, l.in_flight);
        }
        println!("ratio pipeline/ceiling = {ratio:.2}");
        drop(nats);
        Ok(())
    })
}
