//! The router's placement rounds, in process: real detector replicas on a
//! real nats-server, the owners table in a real redis-server, rounds run
//! one at a time by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use spamscope_bus::Bus;
use spamscope_detector::{Counters, ReplicaConfig};
use spamscope_proto::v1::Platform;
use spamscope_router::{RouterConfig, round};
use spamscope_store::{Owner, Store};
use spamscope_testkit::{InProcessCluster, Nats, Redis, stream_on_shard, twitch_message};

const SHARDS: u32 = 16;
const ROUTER: &str = "router-test";

struct Fixture {
    _nats: Nats,
    _redis: Redis,
    cluster: InProcessCluster,
    bus: Bus,
    store: Store,
    cfg: RouterConfig,
}

async fn fixture() -> Fixture {
    let nats = Nats::start();
    let redis = Redis::start();
    let store = Store::open(Some(&redis.url()), "spamscope:").await.unwrap();
    let cluster =
        InProcessCluster::new(&nats.url(), store.clone(), SHARDS, Duration::from_secs(60))
            .await
            .unwrap();
    let bus = Bus::connect(&nats.url(), ROUTER).await.unwrap();
    assert!(store.lead(ROUTER, Duration::from_secs(600)).await.unwrap());
    let cfg = RouterConfig {
        id: ROUTER.into(),
        shards: SHARDS,
        command_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    Fixture {
        _nats: nats,
        _redis: redis,
        cluster,
        bus,
        store,
        cfg,
    }
}

impl Fixture {
    async fn add(&mut self, id: &str) -> Arc<Counters> {
        let cfg = ReplicaConfig {
            // Rounds are the test's: no reconciliation in between.
            reconcile_interval: Duration::from_secs(3600),
            handover_timeout: Duration::from_secs(20),
            ..self.cluster.replica_config(id)
        };
        let counters = Arc::clone(&self.cluster.add_replica(cfg).await.unwrap().counters);
        self.await_live(id, true).await;
        counters
    }

    async fn await_live(&self, id: &str, live: bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self
            .store
            .live_replicas()
            .await
            .unwrap()
            .iter()
            .any(|r| r == id)
            != live
        {
            assert!(Instant::now() < deadline, "{id} never became live={live}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn round(&self) -> usize {
        round(&self.cfg, &self.bus, &self.store).await.unwrap()
    }

    async fn owners(&self) -> BTreeMap<u32, Owner> {
        self.store.owners().await.unwrap()
    }
}

async fn await_owned(c: &Counters, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.owned.load(Ordering::Relaxed) != n {
        assert!(
            Instant::now() < deadline,
            "replica runs {} shards, not {n}",
            c.owned.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(owners: &BTreeMap<u32, Owner>, replica: &str) -> u64 {
    owners.values().filter(|o| o.replica == replica).count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_place_every_shard_and_move_only_what_the_ring_changes() {
    let mut f = fixture().await;
    let d0 = f.add("d0").await;
    let d1 = f.add("d1").await;

    // First round: every shard placed, at epoch 1, on both replicas, and
    // each replica runs what the table gives it (Open acknowledged).
    assert_eq!(f.round().await, SHARDS as usize);
    let first = f.owners().await;
    assert_eq!(first.len(), SHARDS as usize);
    assert!(first.values().all(|o| o.epoch == 1));
    let (n0, n1) = (count(&first, "d0"), count(&first, "d1"));
    assert!(n0 > 0 && n1 > 0, "one replica got nothing: {first:?}");
    assert_eq!(n0 + n1, u64::from(SHARDS));
    await_owned(&d0, n0).await;
    await_owned(&d1, n1).await;

    // Nothing changed: a round moves nothing.
    assert_eq!(f.round().await, 0);
    assert_eq!(f.owners().await, first);

    // A third replica: only shards that go to it move (consistent
    // hashing), each one epoch up; the others keep owner and epoch.
    let d2 = f.add("d2").await;
    let moved = f.round().await;
    let second = f.owners().await;
    let changed: Vec<u32> = (0..SHARDS)
        .filter(|s| first[s].replica != second[s].replica)
        .collect();
    assert!(moved > 0, "the new replica got no shard");
    assert_eq!(moved, changed.len());
    for s in 0..SHARDS {
        if changed.contains(&s) {
            assert_eq!(
                second[&s].replica, "d2",
                "shard {s} moved between old replicas"
            );
            assert_eq!(second[&s].epoch, 2);
        } else {
            assert_eq!(second[&s], first[&s]);
        }
    }
    await_owned(&d2, moved as u64).await;
    await_owned(&d0, count(&second, "d0")).await;
    await_owned(&d1, count(&second, "d1")).await;

    // d1 leaves in order: it deregisters and waits; the next rounds Close
    // its shards (each closed with a checkpoint) and open them elsewhere.
    let d1_shards: Vec<u32> = (0..SHARDS).filter(|s| second[s].replica == "d1").collect();
    assert!(!d1_shards.is_empty());
    // State to hand over: one event on every shard of d1, read by d1, not
    // yet checkpointed (one checkpoint per 20,000 events).
    let before = d1.events.load(Ordering::Relaxed);
    for (n, s) in d1_shards.iter().enumerate() {
        let stream = stream_on_shard(Platform::Twitch, "handover", *s, SHARDS);
        assert!(
            f.cluster
                .publish(&twitch_message(&stream, n as u32))
                .await
                .unwrap()
        );
        assert!(f.store.load_checkpoint(*s).await.unwrap().is_none());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while d1.events.load(Ordering::Relaxed) < before + d1_shards.len() as u64 {
        assert!(Instant::now() < deadline, "d1 did not read its events");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let store = f.store.clone();
    let (cfg, bus) = (f.cfg.clone(), f.bus.clone());
    let rounds = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            round(&cfg, &bus, &store).await.unwrap();
            let o = store.owners().await.unwrap();
            if count(&o, "d1") == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "d1's shards never moved: {o:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (left, ()) = tokio::join!(f.cluster.stop_replica("d1"), rounds);
    left.unwrap().expect("d1 left cleanly");
    assert!(d1.checkpoints.load(Ordering::Relaxed) >= d1_shards.len() as u64);
    let third = f.owners().await;
    for s in &d1_shards {
        assert_ne!(third[s].replica, "d1");
        assert_eq!(third[s].epoch, second[s].epoch + 1);
        assert!(
            f.store.load_checkpoint(*s).await.unwrap().is_some(),
            "shard {s} was closed without a checkpoint"
        );
    }
    await_owned(&d0, count(&third, "d0")).await;
    await_owned(&d2, count(&third, "d2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_owner_blocks_its_moves_until_its_heartbeat_expires() {
    let mut f = fixture().await;
    let d0 = f.add("d0").await;
    // "ghost" heartbeats but nothing answers its commands, as a replica
    // that hangs would: its Opens fail (the move still counts: the table
    // is the truth and a live replica would reconcile).
    f.store
        .heartbeat("ghost", "ghost-process", Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(f.round().await, SHARDS as usize);
    let first = f.owners().await;
    let ghost: Vec<u32> = (0..SHARDS)
        .filter(|s| first[s].replica == "ghost")
        .collect();
    assert!(!ghost.is_empty(), "ghost got no shard: {first:?}");
    await_owned(&d0, count(&first, "d0")).await;

    // Moving a shard away from a live owner needs its Close: while the
    // ghost does not answer, none of its shards moves (never two owners).
    let d1 = f.add("d1").await;
    let ring = ["d0", "d1", "ghost"].map(String::from);
    let want = spamscope_routing::placement(&ring, SHARDS, f.cfg.vnodes).unwrap();
    let blocked: Vec<u32> = ghost
        .iter()
        .copied()
        .filter(|s| want[*s as usize] != "ghost")
        .collect();
    assert!(
        !blocked.is_empty(),
        "no ghost shard is due to move: the drill would prove nothing"
    );
    let moved = f.round().await;
    let second = f.owners().await;
    for s in &ghost {
        assert_eq!(
            second[s], first[s],
            "shard {s} left a live owner without Close"
        );
    }
    // The other moves (d0 → d1) went through.
    assert_eq!(moved as u64, count(&second, "d1"));

    // The ghost's heartbeat ends: its shards reopen elsewhere without a
    // Close, and the live replicas run them.
    f.store.deregister("ghost").await.unwrap();
    let moved = f.round().await;
    assert!(moved >= ghost.len());
    let third = f.owners().await;
    assert_eq!(count(&third, "ghost"), 0);
    for s in &ghost {
        assert_eq!(third[s].epoch, first[s].epoch + 1);
    }
    await_owned(&d0, count(&third, "d0")).await;
    await_owned(&d1, count(&third, "d1")).await;
}
