//! The detector replica role.
//!
//! Parts:
//! - [`run`]: membership heartbeats, the control endpoint
//!   (`ctl.detector.<replica>`: Close / Open), reconciliation with the
//!   owners table, and the ordered shutdown (deregister, hand every shard
//!   over, exit).
//! - `shard`: one task per owned shard: an ordered JetStream consumer on
//!   `chat.<shard>.>` starting after the shard's checkpoint, the detection
//!   core, outputs to `spam.<shard>...` with their idempotency key as
//!   `Nats-Msg-Id`, periodic checkpoints fenced by owner epoch.

mod policies;
mod shard;

pub mod cli;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use spamscope_bus::{Bus, subjects};
use spamscope_detect::ScoreModel;
use spamscope_proto::v1::{ShardCommand, ShardCommandReply, ShardOp};
use spamscope_runtime::Health;
use spamscope_store::{Owner, Store};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use shard::ShardCmd;

#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub replica_id: String,
    pub shards: u32,
    pub heartbeat_interval: Duration,
    pub heartbeat_ttl: Duration,
    /// Checkpoint a shard after this many events...
    pub checkpoint_every_events: u64,
    /// ...or this long after its last checkpoint if it changed.
    pub checkpoint_interval: Duration,
    pub reconcile_interval: Duration,
    /// On shutdown, wait this long for the router to move every shard away
    /// before closing the rest locally.
    pub handover_timeout: Duration,
    /// Detector params layer over the defaults.
    pub params: serde_json::Value,
    /// Publish a score for every message too.
    pub emit_scores: bool,
    /// Events dated further than this ahead of the replica's clock go to
    /// the dead-letter subject instead of the detector.
    pub max_ahead: Duration,
    /// Events dated further than this behind their stream's clock go to
    /// the dead-letter subject instead of the detector.
    pub max_behind: Duration,
    /// A stream that needs no clock and got no chat for this long leaves
    /// memory at the next checkpoint; its state is loaded back when its
    /// chat comes.
    pub stream_idle: Duration,
    /// Saved state of a stream not written for this long is deleted (the
    /// stream starts afresh with its next chat).
    pub stream_forget: Duration,
    /// A shard holds at most this many streams in memory (beyond it, the
    /// least recently active that need no clock leave, however recent).
    pub max_streams: usize,
    /// Channel policies run beside the detector: their suggestions and
    /// actions are published with the detector's outputs (`pending` ones
    /// for the actor to send, where a channel is not in dry-run).
    pub policy: Option<spamscope_act::Policies>,
    /// Whether channels may act (`--policy-live`): without it every
    /// channel is in dry-run, whatever its policy (from the file or set at
    /// run time) says.
    pub policy_live: bool,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            replica_id: "detector-0".into(),
            shards: spamscope_routing::DEFAULT_SHARDS,
            heartbeat_interval: Duration::from_millis(1000),
            heartbeat_ttl: Duration::from_millis(5000),
            checkpoint_every_events: 5_000,
            checkpoint_interval: Duration::from_secs(5),
            reconcile_interval: Duration::from_millis(1000),
            handover_timeout: Duration::from_secs(30),
            params: serde_json::Value::Null,
            emit_scores: false,
            max_ahead: Duration::from_millis(
                spamscope_chat::admit::DEFAULT_MAX_AHEAD_MS.unsigned_abs(),
            ),
            max_behind: Duration::from_millis(
                spamscope_chat::admit::DEFAULT_MAX_BEHIND_MS.unsigned_abs(),
            ),
            stream_idle: Duration::from_secs(600),
            stream_forget: Duration::from_secs(7 * 86_400),
            max_streams: 1_000,
            policy: None,
            policy_live: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("store: {0}")]
    Store(#[from] spamscope_store::StoreError),
    #[error("nats: {0}")]
    Nats(String),
    #[error("params: {0}")]
    Params(#[from] spamscope_detect::ParamsError),
    #[error(
        "replica id {0} is held by another live process (its heartbeat did not expire); \
         two replicas with one id would both open every shard of it"
    )]
    IdTaken(String),
}

/// Counters of a replica.
#[derive(Debug, Default)]
pub struct Counters {
    pub events: AtomicU64,
    pub outputs: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Times a shard's checkpoint did not match its chat stream, and the
    /// chat sequences known to be lost then (see `shard::resume`).
    pub chat_gaps: AtomicU64,
    pub chat_skipped: AtomicU64,
    /// Times a shard opened again because its consumer stopped delivering.
    pub consumer_restarts: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Streams moved out of memory, and loaded back (see
    /// [`ReplicaConfig::stream_idle`]).
    pub streams_evicted: AtomicU64,
    pub streams_loaded: AtomicU64,
    /// Saved stream states deleted after [`ReplicaConfig::stream_forget`].
    pub streams_forgotten: AtomicU64,
    /// Shards this replica runs now.
    pub owned: AtomicU64,
}

struct Running {
    epoch: u64,
    cmds: mpsc::Sender<ShardCmd>,
    done: CancellationToken,
}

pub(crate) struct Ctx {
    pub cfg: ReplicaConfig,
    pub bus: Bus,
    pub store: Store,
    pub model: Arc<ScoreModel>,
    pub counters: Arc<Counters>,
    running: Mutex<HashMap<u32, Running>>,
}

/// Runs the replica until `shutdown`, then hands its shards over and
/// returns.
pub async fn run(
    cfg: ReplicaConfig,
    bus: Bus,
    store: Store,
    health: Health,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> Result<(), ReplicaError> {
    // Validate params before joining the cluster.
    spamscope_detect::DetectorParams::layered(&[&cfg.params])?;
    store.ensure_shards(cfg.shards).await?;
    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        bus: bus.clone(),
        store: store.clone(),
        model: Arc::new(ScoreModel::bundled()),
        counters,
        running: Mutex::new(HashMap::new()),
    });
    let control = bus
        .client
        .subscribe(subjects::ctl_detector(&cfg.replica_id))
        .await
        .map_err(|e| ReplicaError::Nats(e.to_string()))?;
    let mut params_changes = bus
        .client
        .subscribe(subjects::CTL_PARAMS)
        .await
        .map_err(|e| ReplicaError::Nats(e.to_string()))?;
    let mut policy_changes = bus
        .client
        .subscribe(subjects::CTL_POLICIES)
        .await
        .map_err(|e| ReplicaError::Nats(e.to_string()))?;
    // The heartbeat is a lease on the replica id: a process restarted in
    // place waits out its predecessor's last heartbeat; a second live
    // process with the same id is refused.
    let holder = format!(
        "{}:{}:{}",
        std::process::id(),
        spamscope_runtime::now_ms(),
        Arc::as_ptr(&ctx) as usize
    );
    let joined_by = tokio::time::Instant::now() + cfg.heartbeat_ttl + Duration::from_secs(1);
    while !store
        .heartbeat(&cfg.replica_id, &holder, cfg.heartbeat_ttl)
        .await?
    {
        if tokio::time::Instant::now() >= joined_by {
            return Err(ReplicaError::IdTaken(cfg.replica_id.clone()));
        }
        warn!(replica = %cfg.replica_id, "replica id held by another process; waiting for its heartbeat to expire");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(cfg.heartbeat_interval) => {}
        }
    }
    health.set_ready(true);
    info!(replica = %cfg.replica_id, "detector replica joined");

    // Control requests are served until the very end (the router sends
    // Close during the hand-over after deregistration).
    let control_stop = CancellationToken::new();
    let control_task = tokio::spawn(serve_control(
        Arc::clone(&ctx),
        control,
        control_stop.clone(),
    ));

    let leaving = CancellationToken::new();
    let mut lost_id = false;
    let mut heartbeat = tokio::time::interval(cfg.heartbeat_interval);
    let mut reconcile = tokio::time::interval(cfg.reconcile_interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = heartbeat.tick() => {
                match store.heartbeat(&cfg.replica_id, &holder, cfg.heartbeat_ttl).await {
                    Ok(true) => health.set_ready(true),
                    Ok(false) => { lost_id = true; break; }
                    Err(e) => { health.set_ready(false); warn!(error = %e, "heartbeat failed"); }
                }
            }
            _ = reconcile.tick() => {
                if let Err(e) = reconcile_once(&ctx, &leaving).await {
                    warn!(error = %e, "reconcile failed");
                }
            }
            Some(_) = params_changes.next() => {
                match store.all_params().await {
                    Ok(all) => {
                        for r in ctx.running.lock().await.values() {
                            let _ = r.cmds.send(ShardCmd::Params(all.clone())).await;
                        }
                        info!(scopes = all.len(), "detector params applied");
                    }
                    Err(e) => warn!(error = %e, "cannot read params"),
                }
            }
            Some(m) = policy_changes.next() => {
                if let Some(p) = policies::effective(&ctx).await {
                    for r in ctx.running.lock().await.values() {
                        let _ = r.cmds.send(ShardCmd::Policies(p.clone())).await;
                    }
                    info!(stream = %String::from_utf8_lossy(&m.payload), "channel policies applied");
                }
            }
        }
    }

    if lost_id {
        // Another process took the id while this one's heartbeat lapsed:
        // its shards are that process's now. Stop without checkpoints and
        // leave its membership alone.
        leaving.cancel();
        error!(replica = %cfg.replica_id, "replica id taken by another process; stopping every shard");
        let all: Vec<u32> = ctx.running.lock().await.keys().copied().collect();
        for shard in all {
            stop_shard(&ctx, shard).await;
        }
        control_stop.cancel();
        let _ = control_task.await;
        health.set_ready(false);
        return Err(ReplicaError::IdTaken(cfg.replica_id.clone()));
    }

    // Ordered shutdown: leave the membership, let the router move every
    // shard away (it sends Close), then close what is left locally.
    leaving.cancel();
    info!(replica = %cfg.replica_id, "leaving: handing shards over");
    // Marked as leaving for the hand-over (and a little more): the router
    // places nothing here any more and sends Close for every shard.
    let marker = cfg.handover_timeout + Duration::from_secs(5);
    if let Err(e) = store.leave(&cfg.replica_id, marker).await {
        warn!(error = %e, "cannot leave the membership");
    }
    let deadline = tokio::time::Instant::now() + cfg.handover_timeout;
    while tokio::time::Instant::now() < deadline && !ctx.running.lock().await.is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rest: Vec<u32> = ctx.running.lock().await.keys().copied().collect();
    if cfg.handover_timeout.is_zero() {
        // No hand-over asked for (standalone, the only replica): the
        // shards close here with their checkpoints, as planned.
        info!(shards = rest.len(), "closing the shards (no hand-over)");
    } else if !rest.is_empty() {
        warn!(
            shards = rest.len(),
            "hand-over timed out: closing the shards the router did not move"
        );
    }
    for shard in rest {
        let _ = close_shard(&ctx, shard).await;
    }
    if let Err(e) = store.deregister(&cfg.replica_id).await {
        warn!(error = %e, "deregister failed");
    }
    control_stop.cancel();
    let _ = control_task.await;
    health.set_ready(false);
    info!(replica = %cfg.replica_id, "detector replica left");
    Ok(())
}

/// Opens the shards the owners table gives this replica and stops the ones
/// it no longer has.
async fn reconcile_once(ctx: &Arc<Ctx>, leaving: &CancellationToken) -> Result<(), ReplicaError> {
    let owners = ctx.store.owners().await?;
    let me = &ctx.cfg.replica_id;
    let running: Vec<(u32, u64)> = ctx
        .running
        .lock()
        .await
        .iter()
        .map(|(s, r)| (*s, r.epoch))
        .collect();
    for (shard, epoch) in running {
        let still_mine = owners
            .get(&shard)
            .is_some_and(|o| &o.replica == me && o.epoch == epoch);
        if !still_mine {
            warn!(
                shard,
                epoch, "shard lost to another owner; stopping without checkpoint"
            );
            stop_shard(ctx, shard).await;
        }
    }
    if leaving.is_cancelled() {
        return Ok(());
    }
    for (shard, owner) in owners {
        if &owner.replica == me && shard < ctx.cfg.shards {
            open_shard(ctx, shard, owner.epoch).await;
        }
    }
    Ok(())
}

async fn open_shard(ctx: &Arc<Ctx>, shard: u32, epoch: u64) {
    let mut running = ctx.running.lock().await;
    if let Some(r) = running.get(&shard) {
        if r.epoch == epoch && !r.done.is_cancelled() {
            return;
        }
        let _ = r.cmds.try_send(ShardCmd::Stop);
    }
    let (tx, rx) = mpsc::channel(4);
    let done = CancellationToken::new();
    let owner = Owner {
        replica: ctx.cfg.replica_id.clone(),
        epoch,
    };
    tokio::spawn(shard::run(Arc::clone(ctx), shard, owner, rx, done.clone()));
    running.insert(
        shard,
        Running {
            epoch,
            cmds: tx,
            done,
        },
    );
    ctx.record_owned(running.len());
    info!(shard, epoch, "shard opened");
}

/// Stops a shard without a checkpoint (it belongs to someone else now).
async fn stop_shard(ctx: &Arc<Ctx>, shard: u32) {
    let mut running = ctx.running.lock().await;
    if let Some(r) = running.remove(&shard) {
        ctx.record_owned(running.len());
        drop(running);
        let _ = r.cmds.send(ShardCmd::Stop).await;
    }
}

/// Stops a shard after a final checkpoint; returns its last sequence.
async fn close_shard(ctx: &Arc<Ctx>, shard: u32) -> Result<u64, String> {
    let r = {
        let mut running = ctx.running.lock().await;
        let Some(r) = running.remove(&shard) else {
            return Ok(0);
        };
        ctx.record_owned(running.len());
        r
    };
    let (tx, rx) = oneshot::channel();
    if r.cmds.send(ShardCmd::Close(tx)).await.is_err() {
        return Err("shard task already ended".into());
    }
    let res = rx
        .await
        .map_err(|_| "shard task ended before replying".to_owned())?;
    if res.is_ok() {
        info!(shard, "shard closed");
    }
    res
}

async fn serve_control(ctx: Arc<Ctx>, mut sub: async_nats::Subscriber, stop: CancellationToken) {
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let reply = match ShardCommand::decode(msg.payload.clone()) {
            Err(e) => ShardCommandReply {
                ok: false,
                error: format!("undecodable command: {e}"),
                last_sequence: 0,
            },
            Ok(cmd) => handle_command(&ctx, cmd).await,
        };
        let _ = ctx
            .bus
            .client
            .publish(reply_to, Bytes::from(reply.encode_to_vec()))
            .await;
    }
}

async fn handle_command(ctx: &Arc<Ctx>, cmd: ShardCommand) -> ShardCommandReply {
    let fail = |e: String| ShardCommandReply {
        ok: false,
        error: e,
        last_sequence: 0,
    };
    match cmd.op() {
        ShardOp::Close => match close_shard(ctx, cmd.shard).await {
            Ok(seq) => ShardCommandReply {
                ok: true,
                error: String::new(),
                last_sequence: seq,
            },
            Err(e) => fail(e),
        },
        ShardOp::Open => {
            // Only what the owners table says: a stale Open is refused.
            match ctx.store.owners().await {
                Ok(owners) => match owners.get(&cmd.shard) {
                    Some(o) if o.replica == ctx.cfg.replica_id && o.epoch == cmd.epoch => {
                        open_shard(ctx, cmd.shard, cmd.epoch).await;
                        ShardCommandReply {
                            ok: true,
                            ..Default::default()
                        }
                    }
                    other => fail(format!("owners table disagrees: {other:?}")),
                },
                Err(e) => fail(e.to_string()),
            }
        }
        ShardOp::Unspecified => fail("unknown operation".into()),
    }
}

impl Ctx {
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn inc(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn record_owned(&self, n: usize) {
        self.counters.owned.store(n as u64, Ordering::Relaxed);
        spamscope_telemetry::metrics().shards_owned.record(
            n as u64,
            &[
                spamscope_telemetry::KeyValue::new("service", "detector"),
                spamscope_telemetry::KeyValue::new("replica", self.cfg.replica_id.clone()),
            ],
        );
    }
}
