//! Who owns the streams' limits: the router applies its retention flags to
//! streams that exist; every other role only creates missing streams and
//! reports where the existing ones differ from its flags (on a real
//! nats-server).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use spamscope_bus::{Bus, BusConfig, StreamLimits, subjects};
use spamscope_testkit::Nats;

async fn spam_max_age(bus: &Bus) -> Duration {
    let mut s = bus.js.get_stream(subjects::SPAM_STREAM).await.unwrap();
    s.info().await.unwrap().config.max_age
}

#[tokio::test]
async fn only_the_owner_changes_limits_of_existing_streams() {
    let nats = Nats::start();
    let bus = Bus::connect(&nats.url(), "streams-test").await.unwrap();
    let routers = BusConfig {
        url: nats.url(),
        shards: 4,
        chat_max_bytes: 256 << 20,
        spam_max_bytes: 64 << 20,
        spam_max_age: Duration::from_secs(3 * 24 * 3600),
        ..BusConfig::default()
    };
    // Created by whoever comes first, with its limits.
    let differences = bus
        .ensure_streams(&routers, StreamLimits::Keep)
        .await
        .unwrap();
    assert!(differences.is_empty(), "{differences:?}");
    assert_eq!(spam_max_age(&bus).await, routers.spam_max_age);

    // Another role started with other flags: the streams keep theirs, and
    // each difference is named.
    let others = BusConfig {
        spam_max_age: Duration::from_secs(600),
        duplicate_window: Duration::from_secs(300),
        ..routers.clone()
    };
    let differences = bus
        .ensure_streams(&others, StreamLimits::Keep)
        .await
        .unwrap();
    assert_eq!(spam_max_age(&bus).await, routers.spam_max_age);
    assert!(
        differences
            .iter()
            .any(|d| d.starts_with(subjects::SPAM_STREAM) && d.contains("max age 259200 s")),
        "{differences:?}"
    );
    // Every chat stream's window differs (4 shards), and SPAM's and DLQ's.
    let windows = differences
        .iter()
        .filter(|d| d.contains("duplicate window"))
        .count();
    assert_eq!(windows, 4 + 2, "{differences:?}");

    // The owner applies its flags.
    bus.ensure_streams(&others, StreamLimits::Apply)
        .await
        .unwrap();
    assert_eq!(spam_max_age(&bus).await, Duration::from_secs(600));
    let differences = bus
        .ensure_streams(&others, StreamLimits::Keep)
        .await
        .unwrap();
    assert!(differences.is_empty(), "{differences:?}");
}

#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    cluster: spamscope_runtime::ClusterArgs,
}

fn cluster_args(nats: &str, redis: &str, shards: u32) -> spamscope_runtime::ClusterArgs {
    use clap::Parser;
    let shards = shards.to_string();
    Args::parse_from([
        "role",
        "--nats-url",
        nats,
        "--redis-url",
        redis,
        "--shards",
        &shards,
    ])
    .cluster
}

/// After a Redis restart without persistence the recorded shard count was
/// gone: a process with the wrong --shards was accepted, recorded its
/// count, and every correct process was refused from then on. NATS's chat
/// streams are the second record, checked first.
#[tokio::test]
async fn the_shard_count_is_checked_against_nats_before_redis_records_it() {
    let nats = Nats::start();
    let redis = spamscope_testkit::Redis::start();
    let url = nats.url();
    let (_bus, store) = spamscope_runtime::connect(
        &cluster_args(&url, &redis.url(), 16),
        &url,
        "first",
        StreamLimits::Apply,
    )
    .await
    .unwrap();
    assert_eq!(store.recorded_shards().await.unwrap(), Some(16));

    // Redis comes back empty.
    let empty = spamscope_testkit::Redis::start();
    let err = spamscope_runtime::connect(
        &cluster_args(&url, &empty.url(), 8),
        &url,
        "wrong",
        StreamLimits::Keep,
    )
    .await
    .map(|_| ())
    .unwrap_err();
    assert_eq!(spamscope_runtime::exit::code_for(&err), 64, "{err:#}");
    assert!(
        format!("{err:#}").contains("chat streams of 16 shards")
            && format!("{err:#}").contains("--shards 8"),
        "{err:#}"
    );
    let store = spamscope_store::Store::open(Some(&empty.url()), "spamscope:")
        .await
        .unwrap();
    assert_eq!(
        store.recorded_shards().await.unwrap(),
        None,
        "the refused process recorded its count"
    );
    // The right count is accepted and recorded again.
    spamscope_runtime::connect(
        &cluster_args(&url, &empty.url(), 16),
        &url,
        "right",
        StreamLimits::Keep,
    )
    .await
    .unwrap();
    assert_eq!(store.recorded_shards().await.unwrap(), Some(16));
}

/// A NATS that lost its store has no streams until someone creates them:
/// ingest's publishes and the detectors' consumers failed until the roles
/// were restarted. The leading router keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_creates_streams_again_that_nats_lost() {
    let nats = Nats::start();
    let bus = Bus::connect(&nats.url(), "router-streams").await.unwrap();
    let streams = BusConfig {
        url: nats.url(),
        shards: 4,
        chat_max_bytes: 256 << 20,
        spam_max_bytes: 64 << 20,
        ..BusConfig::default()
    };
    bus.ensure_streams(&streams, StreamLimits::Apply)
        .await
        .unwrap();
    let store = spamscope_store::Store::open(None, "").await.unwrap();
    store.ensure_shards(4).await.unwrap();
    let cfg = spamscope_router::RouterConfig {
        id: "keeper".into(),
        shards: 4,
        interval: Duration::from_millis(100),
        streams: Some(streams),
        streams_every: Duration::from_millis(200),
        ..Default::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let router = tokio::spawn(spamscope_router::run(
        cfg,
        bus.clone(),
        store,
        spamscope_runtime::Health::default(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for lost in [subjects::chat_stream(2), subjects::SPAM_STREAM.to_owned()] {
        bus.js.delete_stream(&lost).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let chat = bus.js.get_stream(subjects::chat_stream(2)).await.is_ok();
        let spam = bus.js.get_stream(subjects::SPAM_STREAM).await.is_ok();
        if chat && spam {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the router did not create the lost streams again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    router.await.unwrap().unwrap();
}

/// JetStream reserves every stream's size limit in its store. Limits that
/// do not fit are refused with a message naming the flags to change, never
/// retried as if the server were still starting; limits that fit pass.
#[tokio::test]
async fn limits_bigger_than_the_store_are_refused_naming_the_flags() {
    let nats = Nats::with_store(1 << 30);
    let bus = Bus::connect(&nats.url(), "streams-no-room").await.unwrap();
    // The defaults reserve 17 GiB.
    let err = bus
        .ensure_streams(&BusConfig::default(), StreamLimits::Apply)
        .await
        .unwrap_err();
    assert!(
        matches!(err, spamscope_bus::BusError::NoRoom { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("--chat-max-bytes") && msg.contains("--spam-max-bytes"),
        "{msg}"
    );

    // 512 MiB of chat, 128 MiB of spam and 128 MiB of dead letters fit.
    let fits = BusConfig {
        chat_max_bytes: 512 << 20,
        spam_max_bytes: 128 << 20,
        ..BusConfig::default()
    };
    assert!(spamscope_bus::reserved_bytes(&fits) <= 1 << 30);
    bus.ensure_streams(&fits, StreamLimits::Apply)
        .await
        .unwrap();
    // Growing SPAM past the store later is refused the same way.
    let grown = BusConfig {
        spam_max_bytes: 1 << 30,
        ..fits
    };
    let err = bus
        .ensure_streams(&grown, StreamLimits::Apply)
        .await
        .unwrap_err();
    assert!(
        matches!(err, spamscope_bus::BusError::NoRoom { ref stream, .. } if stream == subjects::SPAM_STREAM),
        "{err:?}"
    );
}

/// A stream's chat is capped per stream: a busy channel loses its own
/// oldest messages past the cap, and a quiet channel of the same shard
/// keeps all of its own.
#[tokio::test]
async fn chat_is_capped_per_stream_not_per_shard() {
    use futures::TryStreamExt;
    let nats = Nats::start();
    let bus = Bus::connect(&nats.url(), "per-stream-test").await.unwrap();
    let cfg = BusConfig {
        url: nats.url(),
        shards: 1,
        chat_max_bytes: 256 << 20,
        spam_max_bytes: 64 << 20,
        chat_max_per_stream: spamscope_bus::MIN_CHAT_MAX_PER_STREAM,
        ..BusConfig::default()
    };
    bus.ensure_streams(&cfg, StreamLimits::Apply).await.unwrap();
    let (busy, quiet) = (
        subjects::chat(0, "twitch", "busy"),
        subjects::chat(0, "twitch", "quiet"),
    );
    let mut acks = Vec::new();
    for i in 0..1500 {
        acks.push(
            bus.js
                .publish(busy.clone(), format!("b{i}").into())
                .await
                .unwrap(),
        );
        if i % 150 == 0 {
            acks.push(
                bus.js
                    .publish(quiet.clone(), format!("q{i}").into())
                    .await
                    .unwrap(),
            );
        }
    }
    for a in acks {
        a.await.unwrap();
    }
    let s = bus.js.get_stream(subjects::chat_stream(0)).await.unwrap();
    let counts: std::collections::BTreeMap<String, usize> = s
        .info_with_subjects("chat.0.>")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(counts[&busy], 1000, "{counts:?}");
    assert_eq!(counts[&quiet], 10, "{counts:?}");
    // The busy channel's newest are the ones kept.
    let last = s.get_last_raw_message_by_subject(&busy).await.unwrap();
    assert_eq!(&last.payload[..], b"b1499");
    // Another role with another cap only reports the difference.
    let differences = bus
        .ensure_streams(
            &BusConfig {
                chat_max_per_stream: 5000,
                ..cfg.clone()
            },
            StreamLimits::Keep,
        )
        .await
        .unwrap();
    assert!(
        differences
            .iter()
            .any(|d| d.contains("max messages per stream 1000 in JetStream, 5000 here")),
        "{differences:?}"
    );
}
