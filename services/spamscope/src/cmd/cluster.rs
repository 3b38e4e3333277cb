//! The service roles: `ingest`, `router`, `detector` and `standalone`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use spamscope_bus::{Bus, BusConfig};
use spamscope_chat::replay::{self, Speed};
use spamscope_runtime::{Health, Supervisor, serve_health, shutdown_on_signals};
use spamscope_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cmd::params::ParamsArgs;
use crate::cmd::replay::{read, report_malformed};
use crate::exit::Exit;

/// Flags every role shares.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// TOML file of flag values (keys are the long flags without dashes;
    /// a `[role]` table for one role): defaults, then this file, then the
    /// environment, then the command line.
    #[arg(long, env = "SPAMSCOPE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// NATS server (JetStream enabled).
    #[arg(long, env = "SPAMSCOPE_NATS_URL")]
    pub nats_url: Option<String>,
    /// Redis for membership, shard owners and checkpoints.
    #[arg(long, env = "SPAMSCOPE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key.
    #[arg(long, env = "SPAMSCOPE_REDIS_PREFIX", default_value = "spamscope:")]
    pub redis_prefix: String,
    /// Shards of the cluster; fixed at first start (recorded in Redis).
    #[arg(long, env = "SPAMSCOPE_SHARDS", default_value_t = spamscope_routing::DEFAULT_SHARDS,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub shards: u32,
    /// Where /healthz and /readyz are served (port 0: any free port).
    #[arg(long, env = "SPAMSCOPE_HEALTH_LISTEN", default_value = "127.0.0.1:0")]
    pub health_listen: SocketAddr,
    /// Retention of the CHAT stream, in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    pub chat_max_age_s: u64,
    /// Retention of the SPAM stream, in seconds.
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    pub spam_max_age_s: u64,
    /// Size limit of the CHAT stream, in bytes (oldest dropped first).
    #[arg(long, default_value_t = 8 << 30)]
    pub chat_max_bytes: i64,
    /// Size limit of the SPAM stream, in bytes.
    #[arg(long, default_value_t = 8 << 30)]
    pub spam_max_bytes: i64,
    /// JetStream duplicate window, in seconds.
    #[arg(long, default_value_t = 600)]
    pub duplicate_window_s: u64,
    /// After SIGINT or SIGTERM, how long the role's tasks get to stop, in
    /// seconds (a detector gets its --handover-timeout-s on top); a second
    /// signal stops at once.
    #[arg(long, env = "SPAMSCOPE_SHUTDOWN_GRACE_S",
          default_value_t = spamscope_runtime::DEFAULT_SHUTDOWN_GRACE.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_grace_s: u64,
    /// Run this role on a private in-memory store instead of Redis: nothing
    /// is shared with other processes (shard owners, checkpoints, params).
    /// For trying one role alone; `standalone` needs no flag for this.
    #[arg(long)]
    pub private_memory_store: bool,
}

impl ClusterArgs {
    fn bus_config(&self, url: &str) -> BusConfig {
        BusConfig {
            url: url.to_owned(),
            shards: self.shards,
            chat_max_age: Duration::from_secs(self.chat_max_age_s),
            spam_max_age: Duration::from_secs(self.spam_max_age_s),
            chat_max_bytes: self.chat_max_bytes,
            spam_max_bytes: self.spam_max_bytes,
            duplicate_window: Duration::from_secs(self.duplicate_window_s),
        }
    }

    fn lifecycle(&self) -> Lifecycle {
        Lifecycle {
            grace: Duration::from_secs(self.shutdown_grace_s),
            health_listen: self.health_listen,
        }
    }

    /// Roles in separate processes share shard owners, checkpoints and
    /// params through Redis: without it each would silently work alone.
    fn require_shared_store(&self) -> Result<()> {
        if self.redis_url.is_none() && !self.private_memory_store {
            return Err(Exit::usage(
                "--redis-url (or SPAMSCOPE_REDIS_URL) is required: roles in separate processes \
                 share shard owners, checkpoints and params through Redis \
                 (--private-memory-store runs this process alone on an in-memory store)",
            ));
        }
        Ok(())
    }

    fn nats_url(&self) -> Result<String> {
        self.nats_url.clone().ok_or_else(|| {
            Exit::usage("--nats-url (or SPAMSCOPE_NATS_URL) is required for this role")
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// Recorded chat files.
    Replay,
    /// Live Twitch chat (IRC over TLS).
    Twitch,
    /// Live YouTube chat (innertube polling).
    Youtube,
}

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, value_enum, default_value = "replay")]
    pub source: Source,
    /// Replay speed: 0 or max as fast as the bus takes them, 1 real time.
    #[arg(long, default_value = "max")]
    pub speed: Speed,
    /// Replay: events of one stream sent in one message at most, when they
    /// queue up behind the stream's publish in flight (under load only).
    /// 1 sends each event on its own: needed when two ingest processes
    /// replay the same chat and JetStream is to drop the second copy.
    /// Live sources (twitch, youtube) always send events one by one.
    #[arg(long, default_value_t = spamscope_ingest::DEFAULT_MAX_BATCH,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub max_batch: usize,
    /// Files to replay (--source replay).
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Twitch channel to read (repeatable; --source twitch).
    #[arg(long = "channel", value_name = "LOGIN")]
    pub channels: Vec<String>,
    /// File with one Twitch channel login per line (# comments allowed).
    #[arg(long, value_name = "FILE")]
    pub channels_file: Option<PathBuf>,
    /// Twitch login for an authenticated connection (anonymous without).
    #[arg(long, env = "SPAMSCOPE_TWITCH_LOGIN")]
    pub twitch_login: Option<String>,
    /// File holding the OAuth token for --twitch-login (or set
    /// SPAMSCOPE_TWITCH_TOKEN); never given on the command line.
    #[arg(long, value_name = "FILE")]
    pub twitch_token_file: Option<PathBuf>,
    /// JOINs per 10 seconds.
    #[arg(long, default_value_t = 20)]
    pub joins_per_10s: usize,
    /// Also read the top N live channels (Helix API; needs
    /// SPAMSCOPE_TWITCH_CLIENT_ID and SPAMSCOPE_TWITCH_CLIENT_SECRET or
    /// --twitch-client-secret-file).
    #[arg(long, value_name = "N")]
    pub helix_top: Option<usize>,
    /// How often the top channels are refetched, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub helix_refresh_s: u64,
    #[arg(long, env = "SPAMSCOPE_TWITCH_CLIENT_ID")]
    pub twitch_client_id: Option<String>,
    /// File holding the Helix client secret.
    #[arg(long, value_name = "FILE")]
    pub twitch_client_secret_file: Option<PathBuf>,
    /// Plain-TCP IRC server HOST:PORT instead of irc.chat.twitch.tv over TLS
    /// (tests and proxies).
    #[arg(long, hide = true)]
    pub twitch_server: Option<String>,
    /// YouTube video id of a live stream (repeatable; --source youtube).
    #[arg(long = "video", value_name = "ID")]
    pub videos: Vec<String>,
    /// Base URL of YouTube (tests point it at a local server).
    #[arg(long, hide = true, default_value = "https://www.youtube.com")]
    pub youtube_base_url: String,
}

impl IngestArgs {
    fn twitch_config(&self) -> Result<spamscope_ingest::twitch::TwitchConfig> {
        let mut channels = self.channels.clone();
        if let Some(path) = &self.channels_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Exit::usage(format!("--channels-file {}: {e}", path.display())))?;
            channels.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or("").trim())
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        let helix = match self.helix_top {
            None => None,
            Some(top) => {
                let client_id = self
                    .twitch_client_id
                    .clone()
                    .ok_or_else(|| Exit::usage("--helix-top needs SPAMSCOPE_TWITCH_CLIENT_ID"))?;
                let client_secret = match &self.twitch_client_secret_file {
                    Some(p) => std::fs::read_to_string(p)
                        .map_err(|e| {
                            Exit::usage(format!("--twitch-client-secret-file {}: {e}", p.display()))
                        })?
                        .trim()
                        .to_owned(),
                    None => std::env::var("SPAMSCOPE_TWITCH_CLIENT_SECRET").map_err(|_| {
                        Exit::usage(
                            "--helix-top needs SPAMSCOPE_TWITCH_CLIENT_SECRET or --twitch-client-secret-file",
                        )
                    })?,
                };
                Some(spamscope_ingest::twitch::HelixConfig {
                    client_id,
                    client_secret,
                    top,
                    refresh: Duration::from_secs(self.helix_refresh_s.max(60)),
                })
            }
        };
        if channels.is_empty() && helix.is_none() {
            return Err(Exit::usage(
                "--source twitch needs --channel, --channels-file or --helix-top",
            ));
        }
        let credentials = match &self.twitch_login {
            None => None,
            Some(login) => {
                let token = match &self.twitch_token_file {
                    Some(p) => std::fs::read_to_string(p)
                        .map_err(|e| {
                            Exit::usage(format!("--twitch-token-file {}: {e}", p.display()))
                        })?
                        .trim()
                        .to_owned(),
                    None => std::env::var("SPAMSCOPE_TWITCH_TOKEN").map_err(|_| {
                        Exit::usage(
                            "--twitch-login needs SPAMSCOPE_TWITCH_TOKEN or --twitch-token-file",
                        )
                    })?,
                };
                Some((login.clone(), token))
            }
        };
        Ok(spamscope_ingest::twitch::TwitchConfig {
            channels,
            credentials,
            joins_per_window: self.joins_per_10s,
            join_window: Duration::from_secs(10),
            server: self.twitch_server.clone(),
            helix,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct RouterArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Id of this router instance (standbys take over on its lock expiry).
    #[arg(long, env = "SPAMSCOPE_ROUTER_ID", default_value = "router-0")]
    pub router_id: String,
    /// Kubernetes mode: lead through a coordination.k8s.io Lease.
    #[arg(long, env = "SPAMSCOPE_KUBE")]
    pub kube: bool,
    #[command(flatten)]
    pub k8s: KubeArgs,
    /// Name of the router's Lease.
    #[arg(long, env = "SPAMSCOPE_LEASE_NAME", default_value = "spamscope-router")]
    pub lease_name: String,
    /// Place shards only on detector replicas whose pod is Ready.
    #[arg(long, env = "SPAMSCOPE_MEMBERSHIP_FROM_PODS", requires = "kube")]
    pub membership_from_pods: bool,
    /// Size the detector StatefulSet from the consumer lag, up to this many
    /// replicas (the autoscaler is off without it).
    #[arg(long, env = "SPAMSCOPE_AUTOSCALE_MAX", requires = "kube")]
    pub autoscale_max: Option<u32>,
    /// Fewest detector replicas the autoscaler leaves.
    #[arg(long, env = "SPAMSCOPE_AUTOSCALE_MIN", default_value_t = 1)]
    pub autoscale_min: u32,
    /// Pending chat events per replica before the autoscaler adds one.
    #[arg(
        long,
        env = "SPAMSCOPE_AUTOSCALE_LAG_PER_REPLICA",
        default_value_t = 50_000
    )]
    pub autoscale_lag_per_replica: u64,
    /// How often the autoscaler looks at the lag, in seconds.
    #[arg(long, default_value_t = 30)]
    pub autoscale_interval_s: u64,
    /// Quiet time after a resize, in seconds.
    #[arg(long, default_value_t = 180)]
    pub autoscale_cooldown_s: u64,
}

/// Where the Kubernetes API is and what the detectors are called there.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// API server URL (default: the pod's service account, else
    /// KUBECONFIG / ~/.kube/config).
    #[arg(long, env = "SPAMSCOPE_KUBE_API_SERVER")]
    pub kube_api_server: Option<String>,
    /// Namespace of the release (default: the config's namespace).
    #[arg(long, env = "SPAMSCOPE_KUBE_NAMESPACE")]
    pub kube_namespace: Option<String>,
    /// The detector StatefulSet.
    #[arg(
        long,
        env = "SPAMSCOPE_DETECTOR_STATEFULSET",
        default_value = "spamscope-detector"
    )]
    pub detector_statefulset: String,
    /// Label selector of the detector pods.
    #[arg(
        long,
        env = "SPAMSCOPE_DETECTOR_SELECTOR",
        default_value = "app.kubernetes.io/name=spamscope,app.kubernetes.io/component=detector"
    )]
    pub detector_selector: String,
}

impl KubeArgs {
    pub async fn client(&self) -> Result<kube::Client> {
        spamscope_kube::client(
            self.kube_api_server.as_deref(),
            self.kube_namespace.as_deref(),
        )
        .await
        .map_err(|e| Exit::usage(format!("--kube-api-server: {e}")))
    }

    pub fn detectors(&self, client: kube::Client) -> spamscope_kube::Detectors {
        spamscope_kube::Detectors::new(client, &self.detector_statefulset, &self.detector_selector)
    }
}

#[derive(Debug, clap::Args)]
pub struct DetectorArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Stable id of this replica (a StatefulSet pod name).
    #[arg(long, env = "SPAMSCOPE_REPLICA_ID")]
    pub replica_id: String,
    /// Publish a spam score for every message too.
    #[arg(long)]
    pub scores: bool,
    /// Checkpoint each shard after this many events.
    #[arg(long, default_value_t = 5000)]
    pub checkpoint_events: u64,
    /// Heartbeat TTL in milliseconds: a replica silent this long is dropped.
    #[arg(long, default_value_t = 5000)]
    pub heartbeat_ttl_ms: u64,
    /// On SIGTERM, how long to wait for the hand-over, in seconds.
    #[arg(long, default_value_t = 30)]
    pub handover_timeout_s: u64,
    #[command(flatten)]
    pub params: ParamsArgs,
}

/// Flags of the gateway and its history store.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Where the gRPC / gRPC-web API and the web UI are served.
    #[arg(long, env = "SPAMSCOPE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The history store file (embedded; created if missing).
    #[arg(
        long,
        env = "SPAMSCOPE_HISTORY_PATH",
        default_value = "spamscope-history.redb"
    )]
    pub history_path: PathBuf,
    /// Drop history older than this many days (0 = keep forever).
    #[arg(long, default_value_t = 30)]
    pub history_ttl_days: u64,
    /// The built web UI (`make ui` builds web/dist).
    #[arg(long, env = "SPAMSCOPE_UI_DIR", default_value = "web/dist")]
    pub ui_dir: PathBuf,
    /// File holding the admin token that SetParams requires (or set
    /// SPAMSCOPE_ADMIN_TOKEN); without one, params are read-only.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Do not run the history writer in this process (with Scylla, run
    /// `spamscope history-writer` instead).
    #[arg(long)]
    pub no_writer: bool,
    #[command(flatten)]
    pub scylla: ScyllaArgs,
}

/// The Scylla history store (instead of the embedded file).
#[derive(Debug, Clone, clap::Args)]
pub struct ScyllaArgs {
    /// Scylla nodes, HOST:PORT, comma-separated; the embedded store is used
    /// when none is given.
    #[arg(long, env = "SPAMSCOPE_SCYLLA_NODES", value_delimiter = ',')]
    pub scylla_nodes: Vec<String>,
    #[arg(long, env = "SPAMSCOPE_SCYLLA_KEYSPACE", default_value = "spamscope")]
    pub scylla_keyspace: String,
    /// CQL replication map of the keyspace when it is created.
    #[arg(
        long,
        default_value = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )]
    pub scylla_replication: String,
    /// Consistency of reads and writes: one, quorum, local_quorum, all.
    #[arg(long, default_value = "local_quorum")]
    pub scylla_consistency: String,
}

async fn open_history(args: &GatewayArgs) -> Result<spamscope_history::any::History> {
    use spamscope_history::any::History;
    if args.scylla.scylla_nodes.is_empty() {
        let h = spamscope_history::HistoryStore::open(&args.history_path).map_err(|e| {
            Exit::usage(format!(
                "--history-path {}: {e}",
                args.history_path.display()
            ))
        })?;
        return Ok(History::Embedded(Arc::new(h)));
    }
    use scylla::statement::Consistency;
    let consistency = match args.scylla.scylla_consistency.to_ascii_lowercase().as_str() {
        "one" => Consistency::One,
        "quorum" => Consistency::Quorum,
        "local_quorum" => Consistency::LocalQuorum,
        "all" => Consistency::All,
        other => {
            return Err(Exit::usage(format!(
                "--scylla-consistency: unknown level {other:?}"
            )));
        }
    };
    let cfg = spamscope_history::scylla_store::ScyllaConfig {
        nodes: args.scylla.scylla_nodes.clone(),
        keyspace: args.scylla.scylla_keyspace.clone(),
        replication: args.scylla.scylla_replication.clone(),
        ttl_s: u32::try_from(args.history_ttl_days * 86_400).unwrap_or(u32::MAX),
        consistency,
        cluster_metadata: true,
    };
    let h = spamscope_history::scylla_store::ScyllaHistory::connect(&cfg).await?;
    Ok(History::Scylla(Arc::new(h)))
}

/// The history writer, to run under a supervisor.
async fn writer(
    args: &GatewayArgs,
    bus: &Bus,
    history: &spamscope_history::any::History,
    health: Health,
    stop: CancellationToken,
) -> Result<()> {
    let writer_cfg = spamscope_history_writer::WriterConfig {
        ttl: (args.history_ttl_days > 0)
            .then(|| Duration::from_secs(args.history_ttl_days * 86_400)),
        ..Default::default()
    };
    spamscope_history_writer::run(
        writer_cfg,
        bus.clone(),
        history.clone(),
        health,
        Arc::default(),
        stop,
    )
    .await?;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct HistoryWriterArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

pub fn history_writer(args: HistoryWriterArgs) -> Result<()> {
    let url = args.cluster.nats_url()?;
    args.cluster.require_shared_store()?;
    run_role(
        "history-writer",
        args.cluster.lifecycle(),
        |role| async move {
            let (bus, _store) = connect(&args.cluster, &url, "spamscope-history-writer").await?;
            role.require_nats(&bus);
            let history = open_history(&args.gateway).await?;
            let mut sup = role.supervisor();
            let stop = sup.shutdown().clone();
            let health = role.health.clone();
            sup.critical("history writer", async move {
                writer(&args.gateway, &bus, &history, health, stop).await
            });
            Ok(sup)
        },
    )
}

impl GatewayArgs {
    fn admin_token(&self) -> Result<Option<String>> {
        if let Some(p) = &self.admin_token_file {
            let t = std::fs::read_to_string(p)
                .map_err(|e| Exit::usage(format!("--admin-token-file {}: {e}", p.display())))?
                .trim()
                .to_owned();
            if t.len() < 16 {
                return Err(Exit::usage(
                    "--admin-token-file: the token must have at least 16 characters",
                ));
            }
            return Ok(Some(t));
        }
        Ok(std::env::var("SPAMSCOPE_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty()))
    }
}

#[derive(Debug, clap::Args)]
pub struct GatewayRoleArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// Starts the history writer and the gateway on `bus`/`store` under `sup`;
/// returns the address served.
async fn start_gateway(
    args: &GatewayArgs,
    shards: u32,
    bus: &Bus,
    store: &Store,
    sup: &mut Supervisor,
) -> Result<SocketAddr> {
    let history = open_history(args).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| Exit::usage(format!("--listen {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;
    let stop = sup.shutdown().clone();
    if !args.no_writer {
        let (a, b, h, st) = (args.clone(), bus.clone(), history.clone(), stop.clone());
        sup.critical("history writer", async move {
            writer(&a, &b, &h, Health::default(), st).await
        });
    }
    let gateway = spamscope_gateway::Gateway::new(
        bus.clone(),
        store.clone(),
        history,
        shards,
        args.admin_token()?,
    );
    let ui = args
        .ui_dir
        .join("index.html")
        .exists()
        .then(|| args.ui_dir.clone());
    if ui.is_none() {
        eprintln!(
            "gateway: no web UI at {} (run `make ui`); serving the API only",
            args.ui_dir.display()
        );
    }
    sup.critical("gateway server", async move {
        spamscope_gateway::serve(listener, gateway, ui, stop)
            .await
            .context("gateway server")
    });
    Ok(addr)
}

pub fn gateway(args: GatewayRoleArgs) -> Result<()> {
    let url = args.cluster.nats_url()?;
    args.cluster.require_shared_store()?;
    args.gateway.admin_token()?;
    run_role("gateway", args.cluster.lifecycle(), |role| async move {
        let (bus, store) = connect(&args.cluster, &url, "spamscope-gateway").await?;
        role.require_nats(&bus);
        let mut sup = role.supervisor();
        let addr =
            start_gateway(&args.gateway, args.cluster.shards, &bus, &store, &mut sup).await?;
        role.health.set_ready(true);
        eprintln!("gateway: http://{addr}/ (gRPC and gRPC-web on the same port)");
        Ok(sup)
    })
}

#[derive(Debug, clap::Args)]
pub struct StandaloneArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Do not serve the gateway and UI; print outputs only.
    #[arg(long)]
    pub no_gateway: bool,
    /// Chat files to replay into the pipeline.
    #[arg(long = "replay", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[arg(long, default_value = "1")]
    pub speed: Speed,
    /// Stop once the replay is done and its outputs are out.
    #[arg(long)]
    pub exit_when_done: bool,
    #[command(flatten)]
    pub params: ParamsArgs,
}

/// Logs, metrics and traces of a role (inside the runtime: the OTLP
/// exporter needs it).
fn telemetry(role: &str) -> Result<spamscope_telemetry::Telemetry> {
    spamscope_telemetry::init(role)
        .map_err(|e| Exit::usage(format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}")))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// Where a role serves its health and how long it has to stop.
#[derive(Debug, Clone, Copy)]
struct Lifecycle {
    grace: Duration,
    health_listen: SocketAddr,
}

/// What a role's setup is given: its health and its shutdown.
struct Role {
    health: Health,
    shutdown: CancellationToken,
}

impl Role {
    fn supervisor(&self) -> Supervisor {
        Supervisor::new(self.shutdown.clone())
    }

    /// `/readyz` fails while the NATS connection is down.
    fn require_nats(&self, bus: &Bus) {
        let client = bus.client.clone();
        self.health.require("nats", move || {
            client.connection_state() == async_nats::connection::State::Connected
        });
    }
}

/// Runs a role: telemetry, signals, the health endpoint, then `setup`
/// (connect, open stores, register the tasks) and the supervised tasks
/// until a signal or a failure. A signal during setup (NATS not answering)
/// stops it too. A first SIGINT or SIGTERM stops the tasks within
/// `--shutdown-grace-s` (more for a detector handing over); a second one
/// exits at once.
fn run_role<F, Fut>(name: &'static str, life: Lifecycle, setup: F) -> Result<()>
where
    F: FnOnce(Role) -> Fut,
    Fut: std::future::Future<Output = Result<Supervisor>>,
{
    let Lifecycle {
        grace,
        health_listen,
    } = life;
    let rt = runtime()?;
    let result = rt.block_on(async move {
        let _telemetry = telemetry(name)?;
        let shutdown = CancellationToken::new();
        let force = shutdown_on_signals(shutdown.clone());
        let health = Health::default();
        start_health(health_listen, health.clone(), shutdown.clone()).await?;
        let role = Role {
            health,
            shutdown: shutdown.clone(),
        };
        let sup = tokio::select! {
            sup = setup(role) => sup?,
            () = shutdown.cancelled() => {
                eprintln!("{name}: stopped while starting");
                return Ok(());
            }
        };
        let ended = sup.wait(grace, &force).await;
        if !ended.abandoned.is_empty() {
            eprintln!(
                "{name}: did not stop within {} s, abandoned: {}",
                grace.as_secs(),
                ended.abandoned.join(", ")
            );
        }
        ended.into_result()
    });
    // Whatever is still running (an abandoned connection) is not waited for.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn start_health(addr: SocketAddr, health: Health, shutdown: CancellationToken) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Exit::usage(format!("--health-listen {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    info!(%bound, "health endpoints on /healthz and /readyz");
    eprintln!("health: http://{bound}/healthz");
    tokio::spawn(serve_health(listener, health, shutdown));
    Ok(())
}

async fn connect(cluster: &ClusterArgs, url: &str, name: &str) -> Result<(Bus, Store)> {
    // The shard count is checked before any per-shard stream is made.
    let store = Store::open(cluster.redis_url.as_deref(), &cluster.redis_prefix).await?;
    store
        .ensure_shards(cluster.shards)
        .await
        .map_err(|e| Exit::usage(e.to_string()))?;
    let bus = Bus::connect(url, name).await?;
    // JetStream can answer a moment after nats-server accepts connections
    // (it recovers its streams first): a role started beside it retries
    // for a while instead of exiting.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut backoff = Duration::from_millis(200);
    loop {
        match bus.ensure_streams(&cluster.bus_config(url)).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::warn!(error = %e, "JetStream streams not ready; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((bus, store))
}

pub fn ingest(args: IngestArgs) -> Result<()> {
    let events = match args.source {
        Source::Replay => {
            if args.files.is_empty() {
                return Err(Exit::usage("--source replay needs FILE arguments"));
            }
            let files = read(&args.files)?;
            report_malformed(&files);
            replay::merge(files)
        }
        Source::Twitch | Source::Youtube => Vec::new(),
    };
    if args.source == Source::Youtube && args.videos.is_empty() {
        return Err(Exit::usage("--source youtube needs --video"));
    }
    let twitch = match args.source {
        Source::Twitch => Some(args.twitch_config()?),
        Source::Replay | Source::Youtube => None,
    };
    let youtube =
        (args.source == Source::Youtube).then(|| spamscope_ingest::youtube::YoutubeConfig {
            video_ids: args.videos.clone(),
            base_url: args.youtube_base_url.trim_end_matches('/').to_owned(),
            ..Default::default()
        });
    let url = args.cluster.nats_url()?;
    args.cluster.require_shared_store()?;
    run_role("ingest", args.cluster.lifecycle(), |role| async move {
        let (bus, _store) = connect(&args.cluster, &url, "spamscope-ingest").await?;
        role.require_nats(&bus);
        role.health.set_ready(true);
        let mut sup = role.supervisor();
        let shutdown = sup.shutdown().clone();
        let (shards, speed, max_batch) = (args.cluster.shards, args.speed, args.max_batch);
        sup.main("ingest", async move {
            let report = match (twitch, youtube) {
                (Some(cfg), _) => {
                    spamscope_ingest::twitch::run(&bus, cfg, shards, &shutdown).await?
                }
                (None, Some(cfg)) => {
                    spamscope_ingest::youtube::run(&bus, cfg, shards, &shutdown).await?
                }
                (None, None) => {
                    let opts = spamscope_ingest::PublishOptions { max_batch };
                    spamscope_ingest::publish_events(&bus, &events, shards, speed, opts, &shutdown)
                        .await?
                }
            };
            bus.client.flush().await.ok();
            eprintln!(
                "ingest: published {} events ({} duplicates dropped by JetStream), {} streams in flight at most{}{}",
                report.published,
                report.duplicates,
                report.max_in_flight,
                if report.too_large > 0 {
                    format!(
                        ", {} events too large for one message sent to dlq.ingest",
                        report.too_large
                    )
                } else {
                    String::new()
                },
                if report.interrupted {
                    ", interrupted"
                } else {
                    ""
                }
            );
            Ok(())
        });
        Ok(sup)
    })
}

pub fn router(args: RouterArgs) -> Result<()> {
    let url = args.cluster.nats_url()?;
    args.cluster.require_shared_store()?;
    run_role("router", args.cluster.lifecycle(), |role| async move {
        let (bus, store) = connect(&args.cluster, &url, "spamscope-router").await?;
        role.require_nats(&bus);
        let defaults = spamscope_router::RouterConfig::default();
        let kube = if args.kube {
            let client = args.k8s.client().await?;
            let autoscale = match args.autoscale_max {
                None => None,
                Some(max) if max < args.autoscale_min.max(1) => {
                    return Err(Exit::usage(
                        "--autoscale-max: must be at least --autoscale-min (and 1)",
                    ));
                }
                Some(max) => Some(spamscope_router::Autoscaler {
                    bounds: spamscope_kube::Autoscale {
                        min: args.autoscale_min.max(1),
                        max,
                        lag_per_replica: args.autoscale_lag_per_replica,
                    },
                    interval: Duration::from_secs(args.autoscale_interval_s.max(1)),
                    cooldown: Duration::from_secs(args.autoscale_cooldown_s),
                }),
            };
            Some(spamscope_router::KubeRouter {
                lease: spamscope_kube::LeaseLock::new(
                    client.clone(),
                    &args.lease_name,
                    &args.router_id,
                    defaults.lock_ttl,
                ),
                detectors: args.k8s.detectors(client),
                membership_from_pods: args.membership_from_pods,
                autoscale,
            })
        } else {
            None
        };
        let cfg = spamscope_router::RouterConfig {
            id: args.router_id,
            shards: args.cluster.shards,
            kube,
            ..defaults
        };
        let mut sup = role.supervisor();
        let (health, stop) = (role.health.clone(), sup.shutdown().clone());
        sup.critical("router", async move {
            Ok(spamscope_router::run(cfg, bus, store, health, stop).await?)
        });
        Ok(sup)
    })
}

pub fn detector(args: DetectorArgs) -> Result<()> {
    let url = args.cluster.nats_url()?;
    args.cluster.require_shared_store()?;
    let params = args.params.layer()?;
    // The hand-over comes first, then the usual grace.
    let mut cluster = args.cluster.clone();
    cluster.shutdown_grace_s += args.handover_timeout_s;
    run_role("detector", cluster.lifecycle(), |role| async move {
        let (bus, store) = connect(&args.cluster, &url, "spamscope-detector").await?;
        role.require_nats(&bus);
        let cfg = spamscope_detector::ReplicaConfig {
            replica_id: args.replica_id,
            shards: args.cluster.shards,
            checkpoint_every_events: args.checkpoint_events,
            heartbeat_ttl: Duration::from_millis(args.heartbeat_ttl_ms),
            heartbeat_interval: Duration::from_millis((args.heartbeat_ttl_ms / 4).max(100)),
            handover_timeout: Duration::from_secs(args.handover_timeout_s),
            params,
            emit_scores: args.scores,
            ..Default::default()
        };
        let mut sup = role.supervisor();
        let (health, stop) = (role.health.clone(), sup.shutdown().clone());
        sup.critical("detector", async move {
            Ok(spamscope_detector::run(cfg, bus, store, health, Arc::default(), stop).await?)
        });
        Ok(sup)
    })
}

pub fn standalone(args: StandaloneArgs) -> Result<()> {
    let files = read(&args.files)?;
    report_malformed(&files);
    // Each file replays on its own clock, so logs recorded years apart play
    // side by side.
    let per_file: Vec<Vec<spamscope_proto::v1::ChatEvent>> =
        files.into_iter().map(|f| replay::merge(vec![f])).collect();
    let params = args.params.layer()?;
    run_role("standalone", args.cluster.lifecycle(), |role| async move {
        let mut sup = role.supervisor();
        // A local nats-server when none is given; stopped after every task.
        let url = match &args.cluster.nats_url {
            Some(u) => u.clone(),
            None => {
                let n = crate::cmd::local_nats::LocalNats::start().await?;
                let url = n.url();
                sup.hold(n);
                url
            }
        };
        let (bus, store) = connect(&args.cluster, &url, "spamscope-standalone").await?;
        role.require_nats(&bus);
        let stop = sup.shutdown().clone();
        let detector_cfg = spamscope_detector::ReplicaConfig {
            replica_id: "standalone-0".to_owned(),
            shards: args.cluster.shards,
            handover_timeout: Duration::ZERO,
            params,
            ..Default::default()
        };
        let router_cfg = spamscope_router::RouterConfig {
            id: "standalone-router".into(),
            shards: args.cluster.shards,
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
        let (b, s, st) = (bus.clone(), store.clone(), stop.clone());
        sup.critical("router", async move {
            Ok(spamscope_router::run(router_cfg, b, s, Health::default(), st).await?)
        });
        let (b, st) = (bus.clone(), stop.clone());
        sup.critical("output printer", async move {
            crate::cmd::print::print_outputs(b, st).await;
            Ok(())
        });
        if !args.no_gateway {
            let addr =
                start_gateway(&args.gateway, args.cluster.shards, &bus, &store, &mut sup).await?;
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
