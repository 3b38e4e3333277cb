//! `spamscope ctl`: look at and resize a running cluster.
//!
//! - `ctl status`: live detector replicas, shard owners and consumer lag (from
//!   Redis, where replicas report them), and with `--kube` the detector
//!   StatefulSet's wanted and running replicas.
//! - `ctl scale --detectors N`: sets the StatefulSet's scale; the router moves
//!   shards as the pods come and go (scale-in hands shards over on SIGTERM).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use spamscope_store::Store;

use crate::exit::Exit;
use spamscope_router::cli::KubeArgs;

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Detector replicas, shard owners and lag.
    Status(StatusArgs),
    /// Set the number of detector replicas (Kubernetes StatefulSet scale).
    Scale(ScaleArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Redis of the cluster.
    #[arg(long, env = "SPAMSCOPE_REDIS_URL")]
    pub redis_url: String,
    #[arg(long, env = "SPAMSCOPE_REDIS_PREFIX", default_value = spamscope_store::DEFAULT_PREFIX)]
    pub redis_prefix: String,
    /// Also list every shard (owner, epoch, last sequence, lag).
    #[arg(long)]
    pub shards: bool,
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also read the detector StatefulSet from the Kubernetes API.
    #[arg(long)]
    pub kube: bool,
    #[command(flatten)]
    pub k8s: KubeArgs,
}

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// Detector replicas wanted.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=4096))]
    pub detectors: u32,
    #[command(flatten)]
    pub k8s: KubeArgs,
}

pub fn run(args: CtlArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(async move {
        match args.command {
            CtlCommand::Status(a) => status(a).await,
            CtlCommand::Scale(a) => scale(a).await,
        }
    })
}

async fn scale(a: ScaleArgs) -> Result<()> {
    let detectors = a.k8s.detectors(a.k8s.client().await?);
    let (before, _) = detectors.replicas().await.with_context(|| {
        format!(
            "read the scale of statefulset {}",
            a.k8s.detector_statefulset
        )
    })?;
    detectors
        .scale(a.detectors)
        .await
        .with_context(|| format!("scale statefulset {}", a.k8s.detector_statefulset))?;
    println!(
        "statefulset {}: {before} -> {} detector replicas",
        a.k8s.detector_statefulset, a.detectors
    );
    Ok(())
}

#[derive(Debug, Default, serde::Serialize)]
struct ReplicaRow {
    shards: u32,
    lag: u64,
    live: bool,
}

#[derive(Debug, serde::Serialize)]
struct ShardRow {
    shard: u32,
    owner: Option<String>,
    epoch: u64,
    last_sequence: u64,
    lag: u64,
}

#[derive(Debug, serde::Serialize)]
struct Status {
    shards: u32,
    live_replicas: Vec<String>,
    replicas: BTreeMap<String, ReplicaRow>,
    unowned_shards: u32,
    total_lag: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    statefulset: Option<(u32, u32)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shard_list: Vec<ShardRow>,
}

async fn status(a: StatusArgs) -> Result<()> {
    let store = Store::open(Some(&a.redis_url), &a.redis_prefix)
        .await
        .map_err(|e| {
            Exit::usage(format!(
                "--redis-url {}: {e}",
                spamscope_runtime::redact_url(&a.redis_url)
            ))
        })?;
    let Some(shards) = store
        .recorded_shards()
        .await
        .context("read the shard count")?
    else {
        return Err(Exit::usage(format!(
            "--redis-url {}: no spamscope cluster there (no shard count under prefix {:?})",
            spamscope_runtime::redact_url(&a.redis_url),
            a.redis_prefix
        )));
    };
    let live = store.live_replicas().await?;
    let owners = store.owners().await?;
    let progress = store.progress().await?;
    let mut replicas: BTreeMap<String, ReplicaRow> = live
        .iter()
        .map(|r| {
            (
                r.clone(),
                ReplicaRow {
                    live: true,
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut shard_list = Vec::new();
    let mut unowned = 0;
    for s in 0..shards {
        let owner = owners.get(&s);
        let p = progress.get(&s);
        let lag = p.map_or(0, |p| p.pending);
        match owner {
            Some(o) => {
                let row = replicas.entry(o.replica.clone()).or_default();
                row.shards += 1;
                row.lag += lag;
            }
            None => unowned += 1,
        }
        if a.shards {
            shard_list.push(ShardRow {
                shard: s,
                owner: owner.map(|o| o.replica.clone()),
                epoch: owner.map_or(0, |o| o.epoch),
                last_sequence: p.map_or(0, |p| p.last_sequence),
                lag,
            });
        }
    }
    let statefulset = if a.kube {
        let d = a.k8s.detectors(a.k8s.client().await?);
        Some(
            d.replicas()
                .await
                .with_context(|| format!("read statefulset {}", a.k8s.detector_statefulset))?,
        )
    } else {
        None
    };
    let st = Status {
        shards,
        total_lag: replicas.values().map(|r| r.lag).sum(),
        live_replicas: live,
        replicas,
        unowned_shards: unowned,
        statefulset,
        shard_list,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    println!(
        "shards: {} ({} unowned)   live detector replicas: {}   total lag: {}",
        st.shards,
        st.unowned_shards,
        st.live_replicas.len(),
        st.total_lag
    );
    if let Some((want, have)) = st.statefulset {
        println!(
            "statefulset {}: {want} wanted, {have} running",
            a.k8s.detector_statefulset
        );
    }
    println!("{:<28} {:>6} {:>10}  state", "replica", "shards", "lag");
    for (id, r) in &st.replicas {
        let state = if r.live { "live" } else { "gone (shards move)" };
        println!("{id:<28} {:>6} {:>10}  {state}", r.shards, r.lag);
    }
    if !st.shard_list.is_empty() {
        println!();
        println!(
            "{:>5} {:<28} {:>6} {:>12} {:>10}",
            "shard", "owner", "epoch", "last seq", "lag"
        );
        for s in &st.shard_list {
            println!(
                "{:>5} {:<28} {:>6} {:>12} {:>10}",
                s.shard,
                s.owner.as_deref().unwrap_or("-"),
                s.epoch,
                s.last_sequence,
                s.lag
            );
        }
    }
    Ok(())
}
