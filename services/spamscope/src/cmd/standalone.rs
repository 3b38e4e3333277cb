//! `spamscope standalone`: every role in one process under one supervisor,
//! composed from the roles' own pieces, with a `nats-server` child when no
//! NATS URL is given and the in-memory state store when no Redis is.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use spamscope_chat::replay::{self, Speed};
use spamscope_detector::cli::ParamsArgs;
use spamscope_gateway::cli::GatewayArgs;
use spamscope_runtime::exit::Exit;
use spamscope_runtime::local_nats::{self, LocalNats};
use spamscope_runtime::{ClusterArgs, Health, connect, run_role};

#[derive(Debug, clap::Args)]
pub struct StandaloneArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Do not serve the gateway and UI; print outputs only.
    #[arg(long)]
    pub no_gateway: bool,
    /// Also print every output (spam events, decisions) on stdout while the
    /// UI is served (always so with --no-gateway).
    #[arg(long)]
    pub print_outputs: bool,
    /// Chat files to replay into the pipeline.
    #[arg(long = "replay", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[arg(long, default_value = "1")]
    pub speed: Speed,
    /// Stop once the replay is done and its outputs are out.
    #[arg(long)]
    pub exit_when_done: bool,
    /// Do not publish a spam score for every message (the console then
    /// marks no spam in the chat and a spam event opens without its
    /// messages and users; the output stream holds about half as much).
    #[arg(long)]
    pub no_scores: bool,
    /// Run a channel policy file beside the detector (as `detector
    /// --policy`): its suggestions and dry-run actions are published with
    /// the spam events.
    #[arg(long, env = "SPAMSCOPE_POLICY_FILE", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Let channels whose policy says `dry_run = false` act: an actor in
    /// this process sends their actions with the platform credentials
    /// given (--helix-*, --youtube-*).
    #[arg(long, requires = "policy")]
    pub policy_live: bool,
    #[command(flatten)]
    pub platforms: spamscope_actor::cli::PlatformArgs,
    #[command(flatten)]
    pub params: ParamsArgs,
}

pub fn run(mut args: StandaloneArgs) -> Result<()> {
    let files = spamscope_ingest::files::read(&args.files)?;
    spamscope_ingest::files::report_malformed(&files);
    // Each file replays on its own clock, so logs recorded years apart play
    // side by side.
    let per_file: Vec<Vec<spamscope_proto::v1::ChatEvent>> =
        files.into_iter().map(|f| replay::merge(vec![f])).collect();
    let params = args.params.layer()?;
    let policy = args
        .policy
        .as_deref()
        .map(|p| spamscope_detector::cli::policy_file(p, args.policy_live))
        .transpose()?;
    // The console shows it, sets channel layers over it and backtests it.
    let gateway_policy = policy.clone().unwrap_or_default();
    let moderators = args.platforms.moderators()?;
    if args.policy_live && moderators.is_empty() {
        return Err(Exit::usage(
            "--policy-live needs the credentials of at least one platform (--helix-client-id, --helix-moderator-id and --helix-token-file, or --youtube-token-file)",
        ));
    }
    // Its own nats-server's store and streams fit the disk it has.
    let local_store = match args.cluster.nats_url {
        Some(_) => None,
        None => {
            let free = local_nats::free_disk(&std::env::temp_dir())?;
            Some(local_nats::size_streams(&mut args.cluster, free)?)
        }
    };
    run_role("standalone", args.cluster.lifecycle(), |role| async move {
        let mut sup = role.supervisor();
        // A local nats-server when none is given; stopped after every task.
        let url = match local_store {
            Some(store_bytes) => {
                let n = LocalNats::start(store_bytes).await?;
                let url = n.url();
                sup.hold(n);
                url
            }
            None => args.cluster.nats_url.clone().unwrap_or_default(),
        };
        let (bus, store) = connect(
            &args.cluster,
            &url,
            "spamscope-standalone",
            spamscope_bus::StreamLimits::Apply,
        )
        .await?;
        role.require_nats(&bus);
        let stop = sup.shutdown().clone();
        let detector_cfg = spamscope_detector::ReplicaConfig {
            replica_id: "standalone-0".to_owned(),
            shards: args.cluster.shards,
            handover_timeout: Duration::ZERO,
            emit_scores: !args.no_scores,
            params,
            policy,
            policy_live: args.policy_live,
            ..Default::default()
        };
        let router_cfg = spamscope_router::RouterConfig {
            id: "standalone-router".into(),
            shards: args.cluster.shards,
            streams: Some(args.cluster.bus_config(&url)?),
            ..Default::default()
        };
        let counters: Arc<spamscope_detector::Counters> = Arc::default();
        let (b, s, h, c, st) = (
            bus.clone(),
            store.clone(),
            role.health.clone(),
            Arc::clone(&counters),
            stop.clone(),
        );
        sup.critical("detector", async move {
            Ok(spamscope_detector::run(detector_cfg, b, s, h, c, st).await?)
        });
        if !moderators.is_empty() {
            let (b, s, st, h) = (bus.clone(), store.clone(), stop.clone(), Health::default());
            sup.critical("actor", async move {
                Ok(spamscope_actor::run(
                    spamscope_actor::ActorConfig::default(),
                    b,
                    s,
                    moderators,
                    h,
                    Arc::default(),
                    st,
                )
                .await?)
            });
        }
        let (b, s, st) = (bus.clone(), store.clone(), stop.clone());
        sup.critical("router", async move {
            Ok(spamscope_router::run(router_cfg, b, s, Health::default(), st).await?)
        });
        if args.no_gateway || args.print_outputs {
            let (b, st) = (bus.clone(), stop.clone());
            sup.critical("output printer", async move {
                crate::cmd::print::print_outputs(b, st).await;
                Ok(())
            });
        }
        if !args.no_gateway {
            let addr = spamscope_gateway::cli::start(
                &args.gateway,
                args.cluster.shards,
                &bus,
                &store,
                &role.health,
                &mut sup,
                gateway_policy,
            )
            .await?;
            eprintln!(
                "standalone: replaying {} file(s); RUST_LOG=info shows the roles' logs, \
                 --print-outputs every output",
                args.files.len()
            );
            eprintln!("standalone: web UI and API on http://{addr}/");
        }
        let (shards, speed) = (args.cluster.shards, args.speed);
        let replay = async move {
            let mut replays = tokio::task::JoinSet::new();
            for events in per_file {
                let (bus, stop) = (bus.clone(), stop.clone());
                replays.spawn(async move {
                    let opts = spamscope_ingest::PublishOptions::default();
                    spamscope_ingest::publish_events(&bus, &events, shards, speed, opts, &stop)
                        .await
                });
            }
            let mut ingest = spamscope_ingest::IngestReport::default();
            while let Some(r) = replays.join_next().await {
                let r = r.context("replay task")??;
                ingest.published += r.published;
                ingest.duplicates += r.duplicates;
            }
            eprintln!("standalone: replay published {} events", ingest.published);
            anyhow::Ok((ingest, stop))
        };
        if args.exit_when_done {
            sup.main("replay", async move {
                let (ingest, stop) = replay.await?;
                // Done when the detector has seen every event and is quiet.
                let expected = ingest.published - ingest.duplicates;
                while counters.events.load(std::sync::atomic::Ordering::Relaxed) < expected
                    && !stop.is_cancelled()
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(())
            });
        } else {
            sup.task("replay", async move { replay.await.map(|_| ()) });
        }
        role.health.set_ready(true);
        Ok(sup)
    })
}
