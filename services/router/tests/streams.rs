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
