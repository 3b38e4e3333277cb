//! A router and detector replicas as tasks of this process, on a real NATS
//! server: the sharded pipeline without role processes, for the role
//! crates' tests and the benches.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use prost::Message;
use spamscope_bus::{Bus, BusConfig, subjects};
use spamscope_detector::{Counters, ReplicaConfig, ReplicaError};
use spamscope_proto::v1::ChatEvent;
use spamscope_runtime::Health;
use spamscope_store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One detector replica running as a task.
#[derive(Debug)]
pub struct Replica {
    pub id: String,
    pub counters: Arc<Counters>,
    pub health: Health,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ReplicaError>>,
}

/// Detector replicas (and a router, if started) on one NATS server and one
/// state store. Every replica and the router have a connection of their
/// own, as role processes do. Everything stops when this is dropped.
#[derive(Debug)]
pub struct InProcessCluster {
    pub url: String,
    /// The publisher's (ingest's) connection.
    pub bus: Bus,
    pub store: Store,
    pub shards: u32,
    replicas: Vec<Replica>,
    stop: CancellationToken,
}

impl InProcessCluster {
    /// The streams (with `duplicate_window`) and `shards` shards on `store`;
    /// no replica and no router yet.
    pub async fn new(
        url: &str,
        store: Store,
        shards: u32,
        duplicate_window: Duration,
    ) -> Result<Self> {
        Self::replicated(url, store, shards, duplicate_window, 1).await
    }

    /// [`InProcessCluster::new`] with every stream kept `replicas` times
    /// (a JetStream cluster of as many servers at `url`).
    pub async fn replicated(
        url: &str,
        store: Store,
        shards: u32,
        duplicate_window: Duration,
        replicas: usize,
    ) -> Result<Self> {
        let bus = Bus::connect(url, "spamscope-testkit").await?;
        bus.ensure_streams(
            &BusConfig {
                url: url.into(),
                shards,
                duplicate_window,
                replicas,
                ..BusConfig::default()
            },
            spamscope_bus::StreamLimits::Apply,
        )
        .await?;
        store.ensure_shards(shards).await?;
        Ok(Self {
            url: url.to_owned(),
            bus,
            store,
            shards,
            replicas: Vec::new(),
            stop: CancellationToken::new(),
        })
    }

    /// `replicas` detectors and a router on the in-memory store, once
    /// every shard has an owner (the benches' cluster).
    pub async fn start(
        url: &str,
        shards: u32,
        replicas: usize,
        duplicate_window: Duration,
    ) -> Result<Self> {
        let store = Store::open(None, "").await?;
        let mut c = Self::new(url, store, shards, duplicate_window).await?;
        for r in 0..replicas {
            c.add_replica(c.replica_config(&format!("bench-{r}")))
                .await?;
        }
        c.start_router(Duration::from_millis(200)).await?;
        c.await_placed(Duration::from_secs(30)).await?;
        Ok(c)
    }

    /// A replica's config in this cluster: the defaults, except a
    /// checkpoint every 20,000 events (not 5,000: the benches' streams are
    /// many and short).
    pub fn replica_config(&self, id: &str) -> ReplicaConfig {
        ReplicaConfig {
            replica_id: id.to_owned(),
            shards: self.shards,
            checkpoint_every_events: 20_000,
            ..Default::default()
        }
    }

    /// Starts a detector replica on a connection of its own.
    pub async fn add_replica(&mut self, cfg: ReplicaConfig) -> Result<&Replica> {
        let id = cfg.replica_id.clone();
        let bus = Bus::connect(&self.url, &format!("spamscope-testkit-{id}")).await?;
        let counters: Arc<Counters> = Arc::default();
        let health = Health::default();
        let stop = self.stop.child_token();
        let task = tokio::spawn(spamscope_detector::run(
            cfg,
            bus,
            self.store.clone(),
            health.clone(),
            Arc::clone(&counters),
            stop.clone(),
        ));
        self.replicas.push(Replica {
            id,
            counters,
            health,
            stop,
            task,
        });
        Ok(self.replicas.last().expect("just pushed"))
    }

    /// The replica `id`.
    pub fn replica(&self, id: &str) -> &Replica {
        self.replicas
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no replica {id}"))
    }

    /// Stops replica `id` as a SIGTERM would (it hands its shards over)
    /// and returns how its `run` ended.
    pub async fn stop_replica(&mut self, id: &str) -> Result<Result<(), ReplicaError>> {
        let i = self
            .replicas
            .iter()
            .position(|r| r.id == id)
            .with_context(|| format!("no replica {id}"))?;
        let r = self.replicas.remove(i);
        r.stop.cancel();
        Ok(r.task.await?)
    }

    /// Stops every replica and the router (without waiting for them).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Starts the router (placement rounds every `interval`).
    pub async fn start_router(&self, interval: Duration) -> Result<()> {
        let router = spamscope_router::RouterConfig {
            id: "testkit-router".into(),
            shards: self.shards,
            interval,
            ..Default::default()
        };
        tokio::spawn(spamscope_router::run(
            router,
            Bus::connect(&self.url, "spamscope-testkit-router").await?,
            self.store.clone(),
            Health::default(),
            self.stop.child_token(),
        ));
        Ok(())
    }

    /// Waits until every shard has an owner.
    pub async fn await_placed(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.store.owners().await?.len() < self.shards as usize {
            anyhow::ensure!(Instant::now() < deadline, "shards were not placed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Publishes one chat event on its shard's subject, as ingest does
    /// (message id `<stream key>/<event id>`); false if JetStream had it.
    pub async fn publish(&self, ev: &ChatEvent) -> Result<bool> {
        let key = ev.stream_key();
        let shard = spamscope_routing::shard_of(&key, self.shards);
        let subject = subjects::chat(shard, ev.platform().key(), &ev.stream_id);
        Ok(self
            .bus
            .publish(
                subject,
                &format!("{key}/{}", ev.event_id),
                async_nats::HeaderMap::new(),
                Bytes::from(ev.encode_to_vec()),
            )
            .await?)
    }

    /// Outputs published by every running replica.
    pub fn outputs(&self) -> u64 {
        self.sum(|c| c.outputs.load(Ordering::Relaxed))
    }

    /// Events processed by every running replica.
    pub fn processed(&self) -> u64 {
        self.sum(|c| c.events.load(Ordering::Relaxed))
    }

    fn sum(&self, f: impl Fn(&Counters) -> u64) -> u64 {
        self.replicas.iter().map(|r| f(&r.counters)).sum()
    }

    /// Waits until the replicas processed `n` events.
    pub async fn wait_processed(&self, n: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.processed() < n {
            anyhow::ensure!(
                Instant::now() < deadline,
                "detectors processed {} of {n} events",
                self.processed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

impl Drop for InProcessCluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
