//! A detector replica in process on a real nats-server and redis-server,
//! driven by the owners table alone (no router): it opens what the table
//! gives it, stops what the table takes away, refuses stale commands, and
//! checkpoints what it closes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use spamscope_detector::{Counters, ReplicaConfig};
use spamscope_proto::v1::ShardOp;
use spamscope_store::{Owner, Store};
use spamscope_testkit::{InProcessCluster, Nats, Redis, jetstream, twitch_message};

const SHARDS: u32 = 4;
const LEADER: &str = "test-leader";

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn owned(c: &Counters) -> u64 {
    c.owned.load(Ordering::Relaxed)
}

fn events(c: &Counters) -> u64 {
    c.events.load(Ordering::Relaxed)
}

async fn own(store: &Store, shard: u32, replica: &str, epoch: u64) {
    let o = Owner {
        replica: replica.into(),
        epoch,
    };
    assert!(store.set_owner(shard, &o, LEADER).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_follows_the_owners_table_and_checkpoints_what_it_closes() {
    let nats = Nats::start();
    let redis = Redis::start();
    let store = Store::open(Some(&redis.url()), "spamscope:").await.unwrap();
    let mut c = InProcessCluster::new(&nats.url(), store.clone(), SHARDS, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(store.lead(LEADER, Duration::from_secs(600)).await.unwrap());
    for s in 0..SHARDS {
        own(&store, s, "d0", 1).await;
    }
    let cfg = ReplicaConfig {
        reconcile_interval: Duration::from_millis(100),
        checkpoint_every_events: 1,
        handover_timeout: Duration::ZERO,
        ..c.replica_config("d0")
    };
    let d0 = std::sync::Arc::clone(&c.add_replica(cfg).await.unwrap().counters);

    // Every shard of the table opens with no Open command sent.
    until("d0 to run its 4 shards", || owned(&d0) == 4).await;
    let stream = "reconcile";
    let shard = spamscope_routing::shard_of(&format!("twitch.{stream}"), SHARDS);
    for n in 0..3 {
        assert!(c.publish(&twitch_message(stream, n)).await.unwrap());
    }
    until("3 events processed", || events(&d0) == 3).await;

    // The table gives the shard to another replica: d0 stops it and reads
    // nothing more from it.
    own(&store, shard, "d9", 2).await;
    until("d0 to let the shard go", || owned(&d0) == 3).await;
    assert!(c.publish(&twitch_message(stream, 3)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(events(&d0), 3, "d0 read a shard it no longer owns");

    // A stale Open (the old epoch) is refused.
    let stale = spamscope_router::command(
        &c.bus,
        "d0",
        ShardOp::Open,
        shard,
        1,
        Duration::from_secs(5),
    )
    .await;
    let err = stale.expect_err("a stale Open was accepted");
    assert!(err.contains("owners table disagrees"), "{err}");

    // Back to d0 one epoch later: it resumes after its checkpoint and
    // reads only the event it had not seen.
    own(&store, shard, "d0", 3).await;
    until("d0 to run the shard again", || owned(&d0) == 4).await;
    until("the pending event processed", || events(&d0) == 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(events(&d0), 4, "events were read twice after the reopen");

    // A Close answers with the last sequence read, the stream's length
    // counted by JetStream itself, and leaves that checkpoint.
    let closed = spamscope_router::command(
        &c.bus,
        "d0",
        ShardOp::Close,
        shard,
        3,
        Duration::from_secs(5),
    )
    .await
    .expect("close");
    let len = jetstream::stream_len(&c.url, &spamscope_bus::subjects::chat_stream(shard)).await;
    assert_eq!(closed.last_sequence, len);
    assert!(store.load_checkpoint(shard).await.unwrap().is_some());

    // A stop leaves the membership.
    c.stop_replica("d0")
        .await
        .unwrap()
        .expect("d0 stopped cleanly");
    assert!(
        !store
            .live_replicas()
            .await
            .unwrap()
            .contains(&"d0".to_owned())
    );
    assert_eq!(owned(&d0), 0);
}
