//! The router role (placement controller).
//!
//! One active instance, behind a lock with a TTL in the store; standbys wait
//! for it. Every round the leader reads the live detector replicas
//! (heartbeats with a TTL), places the shards on a consistent-hash ring with
//! virtual nodes, and moves only the shards whose owner changes: `Close` to
//! the old owner if it is alive or leaving (it stops, checkpoints and
//! replies), then the owner is recorded at epoch + 1 (a write fenced by the
//! lock), then `Open` to the new owner. A replica that stopped heartbeating
//! gets no `Close`: its shards reopen elsewhere from their last checkpoint.
//! The router is not in the data path.
//!
//! In Kubernetes ([`KubeRouter`]) a router must also hold a
//! `coordination.k8s.io` Lease before it competes for the store lock (the
//! lock stays: it fences every owner write), may take membership from the
//! Ready detector pods (a replica must both heartbeat and be Ready), and may
//! size the detector StatefulSet from the consumer lag.

pub mod cli;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use prost::Message;
use spamscope_bus::{Bus, subjects};
use spamscope_proto::v1::{ShardCommand, ShardCommandReply, ShardOp};
use spamscope_routing::placement;
use spamscope_runtime::Health;
use spamscope_store::{Owner, Store};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub id: String,
    pub shards: u32,
    pub vnodes: usize,
    pub interval: Duration,
    pub lock_ttl: Duration,
    /// How long a Close or Open may take.
    pub command_timeout: Duration,
    /// Moves in flight at once.
    pub parallel_moves: usize,
    /// Leadership, membership and autoscaling through the Kubernetes API.
    pub kube: Option<KubeRouter>,
    /// The streams the leader keeps: every `streams_every` it creates those
    /// that are missing (a NATS that lost its store) and applies these
    /// limits. `None`: the streams are left to the roles' start.
    pub streams: Option<spamscope_bus::BusConfig>,
    pub streams_every: Duration,
}

/// The router's Kubernetes parts.
#[derive(Debug, Clone)]
pub struct KubeRouter {
    pub lease: spamscope_kube::LeaseLock,
    /// The detector StatefulSet (membership and autoscaling).
    pub detectors: spamscope_kube::Detectors,
    /// Only Ready detector pods get shards.
    pub membership_from_pods: bool,
    pub autoscale: Option<Autoscaler>,
}

/// The lag autoscaler's settings.
#[derive(Debug, Clone, Copy)]
pub struct Autoscaler {
    pub bounds: spamscope_kube::Autoscale,
    /// How often the lag is looked at.
    pub interval: Duration,
    /// Quiet time after a change (shards move, lag settles).
    pub cooldown: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            id: "router-0".into(),
            shards: spamscope_routing::DEFAULT_SHARDS,
            vnodes: spamscope_routing::DEFAULT_VNODES,
            interval: Duration::from_millis(500),
            lock_ttl: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            parallel_moves: 16,
            kube: None,
            streams: None,
            streams_every: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("store: {0}")]
    Store(#[from] spamscope_store::StoreError),
}

/// Runs until `shutdown`; resigns the lock on the way out.
pub async fn run(
    cfg: RouterConfig,
    bus: Bus,
    store: Store,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), RouterError> {
    store.ensure_shards(cfg.shards).await?;
    health.set_ready(true);
    let mut tick = tokio::time::interval(cfg.interval);
    let mut leading = false;
    let mut scaler = ScalerState::default();
    let mut streams_kept: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Some(k) = &cfg.kube {
            match k.lease.acquire_or_renew().await {
                Ok(true) => {}
                Ok(false) => {
                    if leading {
                        warn!(router = %cfg.id, "router lost the Lease");
                        let _ = store.resign(&cfg.id).await;
                    }
                    leading = false;
                    health.set_ready(true);
                    continue;
                }
                Err(e) => {
                    // Without the Lease this router must not lead; the
                    // store lock's TTL ends its term if it was leading.
                    warn!(error = %e, "cannot reach the Kubernetes API");
                    leading = false;
                    health.set_ready(false);
                    continue;
                }
            }
        }
        match store.lead(&cfg.id, cfg.lock_ttl).await {
            Ok(true) => {
                if !leading {
                    info!(router = %cfg.id, "router is leader");
                    leading = true;
                }
                if let Some(streams) = &cfg.streams
                    && streams_kept.is_none_or(|t| t.elapsed() >= cfg.streams_every)
                {
                    streams_kept = Some(Instant::now());
                    if let Err(e) = bus
                        .ensure_streams(streams, spamscope_bus::StreamLimits::Apply)
                        .await
                    {
                        warn!(error = %e, "cannot keep the JetStream streams");
                    }
                }
                if let Err(e) = round(&cfg, &bus, &store).await {
                    warn!(error = %e, "placement round failed");
                }
                if let Some(k) = &cfg.kube
                    && let Some(a) = &k.autoscale
                {
                    scaler.maybe_scale(a, &k.detectors, &store).await;
                }
            }
            Ok(false) => {
                if leading {
                    warn!(router = %cfg.id, "router lost the lock");
                }
                leading = false;
            }
            Err(e) => {
                health.set_ready(false);
                warn!(error = %e, "cannot reach the store");
                continue;
            }
        }
        health.set_ready(true);
    }
    if leading {
        let _ = store.resign(&cfg.id).await;
    }
    if let Some(k) = &cfg.kube
        && let Err(e) = k.lease.release().await
    {
        warn!(error = %e, "cannot release the Lease");
    }
    Ok(())
}

#[derive(Debug, Default)]
struct ScalerState {
    last_look: Option<Instant>,
    last_change: Option<Instant>,
}

impl ScalerState {
    /// Sizes the detector StatefulSet from the total consumer lag the
    /// replicas report (`spamscope_kube::desired_replicas`).
    async fn maybe_scale(
        &mut self,
        a: &Autoscaler,
        detectors: &spamscope_kube::Detectors,
        store: &Store,
    ) {
        if self.last_look.is_some_and(|t| t.elapsed() < a.interval)
            || self.last_change.is_some_and(|t| t.elapsed() < a.cooldown)
        {
            return;
        }
        self.last_look = Some(Instant::now());
        let lag: u64 = match store.progress().await {
            Ok(p) => p.values().map(|p| p.pending).sum(),
            Err(e) => {
                warn!(error = %e, "autoscaler cannot read the lag");
                return;
            }
        };
        let current = match detectors.replicas().await {
            Ok((want, _)) => want,
            Err(e) => {
                warn!(error = %e, "autoscaler cannot read the StatefulSet scale");
                return;
            }
        };
        let want = spamscope_kube::desired_replicas(current, lag, &a.bounds);
        if want == current {
            return;
        }
        match detectors.scale(want).await {
            Ok(()) => {
                info!(
                    from = current,
                    to = want,
                    lag,
                    "autoscaler resized the detectors"
                );
                self.last_change = Some(Instant::now());
            }
            Err(e) => warn!(error = %e, "autoscaler cannot scale the detectors"),
        }
    }
}

/// One placement round: moves the shards whose owner should change.
pub async fn round(cfg: &RouterConfig, bus: &Bus, store: &Store) -> Result<usize, RouterError> {
    let mut live = store.live_replicas().await?;
    if let Some(k) = &cfg.kube
        && k.membership_from_pods
    {
        match k.detectors.ready_pods().await {
            Ok(ready) => live.retain(|r| ready.contains(r)),
            Err(e) => {
                // Placement on stale membership could move shards for
                // nothing: skip the round.
                warn!(error = %e, "cannot list the detector pods; round skipped");
                return Ok(0);
            }
        }
    }
    let Some(desired) = placement(&live, cfg.shards, cfg.vnodes) else {
        // Nobody to place on: keep the owners; shards resume when a replica
        // comes back.
        return Ok(0);
    };
    let owners = store.owners().await?;
    // Replicas on their way out still answer Close: their shards move with
    // a checkpoint instead of being replayed from the last one.
    let mut reachable = live.clone();
    reachable.extend(store.leaving_replicas().await?);
    let moves: Vec<(u32, Option<Owner>, String)> = desired
        .into_iter()
        .enumerate()
        .filter_map(|(s, want)| {
            let s = s as u32;
            let cur = owners.get(&s).cloned();
            (cur.as_ref().map(|c| &c.replica) != Some(&want)).then_some((s, cur, want))
        })
        .collect();
    if moves.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    let n = moves.len();
    let results: Vec<bool> = stream::iter(moves)
        .map(|(s, cur, want)| {
            let reachable = &reachable;
            async move {
                let t0 = Instant::now();
                let moved = move_shard(cfg, bus, store, reachable, s, cur, want).await;
                if moved {
                    spamscope_telemetry::metrics().handover.record(
                        t0.elapsed().as_secs_f64(),
                        &[
                            spamscope_telemetry::KeyValue::new("service", "router"),
                            spamscope_telemetry::KeyValue::new("phase", "move"),
                        ],
                    );
                }
                moved
            }
        })
        .buffer_unordered(cfg.parallel_moves.max(1))
        .collect()
        .await;
    let moved = results.iter().filter(|ok| **ok).count();
    spamscope_telemetry::metrics()
        .shards_moved
        .add(moved as u64, &spamscope_telemetry::service("router"));
    info!(
        moved,
        planned = n,
        ms = started.elapsed().as_millis() as u64,
        "shards moved"
    );
    Ok(moved)
}

async fn move_shard(
    cfg: &RouterConfig,
    bus: &Bus,
    store: &Store,
    reachable: &[String],
    shard: u32,
    cur: Option<Owner>,
    want: String,
) -> bool {
    let epoch = cur.as_ref().map_or(0, |c| c.epoch);
    if let Some(c) = &cur
        && reachable.contains(&c.replica)
    {
        match command(
            bus,
            &c.replica,
            ShardOp::Close,
            shard,
            c.epoch,
            cfg.command_timeout,
        )
        .await
        {
            Ok(_) => {}
            Err(e) => {
                // The old owner may still be consuming: do not create a
                // second owner; try again next round.
                warn!(shard, from = %c.replica, error = %e, "close failed; move postponed");
                return false;
            }
        }
    }
    let next = Owner {
        replica: want.clone(),
        epoch: epoch + 1,
    };
    match store.set_owner(shard, &next, &cfg.id).await {
        Ok(true) => {}
        Ok(false) => {
            warn!(shard, "lost the router lock; move abandoned");
            return false;
        }
        Err(e) => {
            warn!(shard, error = %e, "cannot record the owner");
            return false;
        }
    }
    if let Err(e) = command(
        bus,
        &want,
        ShardOp::Open,
        shard,
        next.epoch,
        cfg.command_timeout,
    )
    .await
    {
        // The replica's reconciliation opens it anyway.
        warn!(shard, to = %want, error = %e, "open not acknowledged");
    }
    true
}

/// Close / Open over NATS request/reply.
pub async fn command(
    bus: &Bus,
    replica: &str,
    op: ShardOp,
    shard: u32,
    epoch: u64,
    timeout: Duration,
) -> Result<ShardCommandReply, String> {
    let cmd = ShardCommand {
        op: op as i32,
        shard,
        epoch,
        leader_token: 0,
    };
    let req = bus.client.request(
        subjects::ctl_detector(replica),
        Bytes::from(cmd.encode_to_vec()),
    );
    let msg = tokio::time::timeout(timeout, req)
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let reply = ShardCommandReply::decode(msg.payload).map_err(|e| e.to_string())?;
    if reply.ok {
        Ok(reply)
    } else {
        Err(reply.error)
    }
}
