//! The history writer in process on a real nats-server, with an embedded
//! history file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prost::Message;
use spamscope_bus::{Bus, BusConfig, StreamLimits, subjects};
use spamscope_history::HistoryStore;
use spamscope_history::any::History;
use spamscope_history_writer::{WriterConfig, WriterCounters, run};
use spamscope_proto::v1::{Decision, DetectorOutput, Platform, detector_output};
use spamscope_runtime::Health;
use spamscope_testkit::{Nats, TempDir};
use tokio_util::sync::CancellationToken;

async fn until(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish_decision(bus: &Bus, user: &str) {
    let o = DetectorOutput {
        kind: Some(detector_output::Kind::Decision(Decision {
            platform: Platform::Twitch as i32,
            stream_id: "xqcow".into(),
            user_id: user.into(),
            user_login: user.into(),
            at_ms: 1_700_000_000_000,
            ..Default::default()
        })),
    };
    let fresh = bus
        .publish(
            subjects::spam(0, "twitch", "xqcow"),
            &format!("twitch.xqcow/decision/{user}"),
            async_nats::HeaderMap::new(),
            o.encode_to_vec().into(),
        )
        .await
        .unwrap();
    assert!(fresh);
}

/// NATS lost its store while the writer ran: the SPAM stream was created
/// again without the writer's durable consumer, and the writer logged
/// "missed idle heartbeat" forever. It now opens the consumer again,
/// creating it, and writes what the new stream holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_recovers_a_consumer_lost_with_its_stream() {
    let nats = Nats::start();
    let bus = Bus::connect(&nats.url(), "writer-test").await.unwrap();
    let streams = BusConfig {
        url: nats.url(),
        shards: 4,
        ..BusConfig::default()
    };
    bus.ensure_streams(&streams, StreamLimits::Apply)
        .await
        .unwrap();
    let dir = TempDir::new("history-writer");
    let history = History::Embedded(Arc::new(
        HistoryStore::open(&dir.0.join("history.redb")).unwrap(),
    ));
    let counters = Arc::new(WriterCounters::default());
    let stop = CancellationToken::new();
    let cfg = WriterConfig {
        idle_heartbeat: Duration::from_millis(500),
        ..WriterConfig::default()
    };
    let writer = tokio::spawn(run(
        cfg,
        bus.clone(),
        history,
        Health::default(),
        Arc::clone(&counters),
        stop.clone(),
    ));
    publish_decision(&bus, "first").await;
    until("the first decision written", || {
        counters.written.load(Ordering::Relaxed) == 1
    })
    .await;

    bus.js.delete_stream(subjects::SPAM_STREAM).await.unwrap();
    bus.ensure_streams(&streams, StreamLimits::Apply)
        .await
        .unwrap();
    publish_decision(&bus, "second").await;
    until("the decision of the new stream written", || {
        counters.written.load(Ordering::Relaxed) == 2
    })
    .await;
    assert!(counters.reopened.load(Ordering::Relaxed) >= 1);
    stop.cancel();
    writer.await.unwrap().unwrap();
}
