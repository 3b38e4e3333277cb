//! The `detector` role's flags and run, and the detector params flags
//! (`--params`, `--param`) that `replay`, `eval` and `standalone` take too.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Map, Value};
use spamscope_runtime::exit::Exit;
use spamscope_runtime::{ClusterArgs, connect, run_role};

#[derive(Debug, clap::Args)]
pub struct DetectorArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Stable id of this replica (a StatefulSet pod name): 1 to 63 letters,
    /// digits, '-', '_' or '.' (it names the replica's NATS subject).
    #[arg(long, env = "SPAMSCOPE_REPLICA_ID", value_parser = replica_id)]
    pub replica_id: String,
    /// Publish a spam score for every message too.
    #[arg(long)]
    pub scores: bool,
    /// Checkpoint each shard after this many events (1 to 10,000,000).
    #[arg(long, default_value_t = crate::ReplicaConfig::default().checkpoint_every_events,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub checkpoint_events: u64,
    /// Heartbeat TTL in milliseconds: a replica silent this long is dropped
    /// (1,000 to 600,000).
    #[arg(long, default_value_t = crate::ReplicaConfig::default().heartbeat_ttl.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1000..=600_000))]
    pub heartbeat_ttl_ms: u64,
    /// On SIGTERM, how long to wait for the hand-over, in seconds (1 to 3600).
    #[arg(long, default_value_t = crate::ReplicaConfig::default().handover_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub handover_timeout_s: u64,
    /// Chat events dated more than this many seconds ahead of this
    /// replica's clock go to the dead-letter subject, with the reason,
    /// instead of the detector (60 to 86400).
    #[arg(long, env = "SPAMSCOPE_MAX_AHEAD_S",
          default_value_t = crate::ReplicaConfig::default().max_ahead.as_secs(),
          value_parser = clap::value_parser!(u64).range(60..=86_400))]
    pub max_ahead_s: u64,
    /// Chat events dated more than this many seconds behind their
    /// stream's clock (its newest event, or the wall clock for a live
    /// stream) go to the dead-letter subject, with the reason, instead of
    /// the detector (60 to 86400).
    #[arg(long, env = "SPAMSCOPE_MAX_BEHIND_S",
          default_value_t = crate::ReplicaConfig::default().max_behind.as_secs(),
          value_parser = clap::value_parser!(u64).range(60..=86_400))]
    pub max_behind_s: u64,
    /// A stream that got no chat for this many seconds, and that no clock
    /// moves (recorded chat, or a live stream with no user or group left
    /// to age), leaves memory at the shard's next checkpoint; its state is
    /// loaded back from Redis when its chat comes (10 to 86400).
    #[arg(long, env = "SPAMSCOPE_STREAM_IDLE_S",
          default_value_t = crate::ReplicaConfig::default().stream_idle.as_secs(),
          value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub stream_idle_s: u64,
    /// Streams a shard holds in memory at most: beyond it the least
    /// recently active that no clock moves leave memory, however recent
    /// (100 to 1,000,000).
    #[arg(long, env = "SPAMSCOPE_MAX_STREAMS_PER_SHARD",
          default_value_t = crate::ReplicaConfig::default().max_streams as u64,
          value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
    pub max_streams_per_shard: u64,
    /// The saved state of a stream nobody wrote for this many seconds (no
    /// chat came, or none that changed it) is deleted from Redis: its
    /// next chat starts it afresh, as a new stream. Bounds what streams
    /// that never end (Twitch channels, YouTube streams whose end was not
    /// seen) keep in Redis (86400 to 31536000).
    #[arg(long, env = "SPAMSCOPE_STREAM_FORGET_S",
          default_value_t = crate::ReplicaConfig::default().stream_forget.as_secs(),
          value_parser = clap::value_parser!(u64).range(86_400..=31_536_000))]
    pub stream_forget_s: u64,
    /// Run a channel policy file (TOML; the README's "Acting on spam")
    /// beside the detector: what it suggests and would do is published with
    /// the spam events (kinds action, nuke_suggestion, command_result).
    /// Every channel is in dry-run unless --policy-live.
    #[arg(long, env = "SPAMSCOPE_POLICY_FILE", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Let channels whose policy says `dry_run = false` act: their actions
    /// are published as pending, for `spamscope actor` to send. Without
    /// it every channel is in dry-run.
    #[arg(long, requires = "policy")]
    pub policy_live: bool,
    #[command(flatten)]
    pub params: ParamsArgs,
}

/// Reads a policy file for a detector: every channel in dry-run unless
/// `live`. Errors exit 64 naming the file and the key.
pub fn policy_file(path: &std::path::Path, live: bool) -> Result<spamscope_act::Policies> {
    let p =
        spamscope_act::Policies::read(path).map_err(|e| Exit::usage(format!("--policy {e}")))?;
    Ok(if live { p } else { p.all_dry_run() })
}

/// `spamscope detector`.
pub fn run(args: DetectorArgs) -> Result<()> {
    let url = args.cluster.nats_url()?;
    args.cluster.require_shared_store()?;
    let params = args.params.layer()?;
    let policy = args
        .policy
        .as_deref()
        .map(|p| policy_file(p, args.policy_live))
        .transpose()?;
    // The hand-over comes first, then the usual grace.
    let mut cluster = args.cluster.clone();
    cluster.shutdown_grace_s += args.handover_timeout_s;
    run_role("detector", cluster.lifecycle(), |role| async move {
        let (bus, store) = connect(
            &args.cluster,
            &url,
            "spamscope-detector",
            spamscope_bus::StreamLimits::Keep,
        )
        .await?;
        role.require_nats(&bus);
        role.require_store(&store);
        let cfg = crate::ReplicaConfig {
            replica_id: args.replica_id,
            shards: args.cluster.shards,
            checkpoint_every_events: args.checkpoint_events,
            heartbeat_ttl: Duration::from_millis(args.heartbeat_ttl_ms),
            heartbeat_interval: Duration::from_millis((args.heartbeat_ttl_ms / 4).max(100)),
            handover_timeout: Duration::from_secs(args.handover_timeout_s),
            params,
            emit_scores: args.scores,
            max_ahead: Duration::from_secs(args.max_ahead_s),
            max_behind: Duration::from_secs(args.max_behind_s),
            stream_idle: Duration::from_secs(args.stream_idle_s),
            stream_forget: Duration::from_secs(args.stream_forget_s),
            max_streams: usize::try_from(args.max_streams_per_shard).unwrap_or(usize::MAX),
            policy,
            policy_live: args.policy_live,
            ..Default::default()
        };
        let mut sup = role.supervisor();
        let (health, stop) = (role.health.clone(), sup.shutdown().clone());
        sup.critical("detector", async move {
            Ok(crate::run(cfg, bus, store, health, Arc::default(), stop).await?)
        });
        Ok(sup)
    })
}

#[derive(Debug, Clone, clap::Args)]
pub struct ParamsArgs {
    /// JSON object of detector params overriding the defaults (see README).
    #[arg(long, value_name = "FILE", env = "SPAMSCOPE_PARAMS_FILE")]
    pub params: Option<PathBuf>,
    /// One param, KEY=VALUE with VALUE in JSON (`--param sensitivity=2`).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub param: Vec<String>,
}

impl ParamsArgs {
    /// The layer these flags describe; bad input exits 64 naming the key.
    pub fn layer(&self) -> Result<Value> {
        let mut obj = match &self.params {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Exit::usage(format!("--params {}: cannot read: {e}", path.display()))
                })?;
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(o)) => o,
                    Ok(_) => {
                        return Err(Exit::usage(format!(
                            "--params {}: not a JSON object",
                            path.display()
                        )));
                    }
                    Err(e) => {
                        return Err(Exit::usage(format!("--params {}: {e}", path.display())));
                    }
                }
            }
            None => Map::new(),
        };
        for kv in &self.param {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| Exit::usage(format!("--param {kv:?}: expected KEY=VALUE")))?;
            let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
            obj.insert(k.trim().to_owned(), value);
        }
        let layer = Value::Object(obj);
        spamscope_detect::DetectorParams::layered(&[&layer])
            .map_err(|e| Exit::usage(e.to_string()))?;
        Ok(layer)
    }
}

/// A replica id as `--replica-id` accepts it.
fn replica_id(s: &str) -> Result<String, String> {
    let ok = (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("must be 1 to 63 letters, digits, '-', '_' or '.'".into())
    }
}
