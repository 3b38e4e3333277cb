//! The `gateway` role's flags and run, and [`start`], which `standalone`
//! uses too.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use spamscope_bus::Bus;
use spamscope_history_writer::cli::HistoryArgs;
use spamscope_runtime::exit::{Exit, secret};
use spamscope_runtime::{ClusterArgs, Health, Supervisor, connect, run_role};
use spamscope_store::Store;
use tokio::net::TcpListener;

/// Flags of the gateway and its history store.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Where the gRPC / gRPC-web API and the web UI are served.
    #[arg(long, env = "SPAMSCOPE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The built web UI (`make ui` builds web/dist).
    #[arg(long, env = "SPAMSCOPE_UI_DIR", default_value = "web/dist")]
    pub ui_dir: PathBuf,
    /// File holding the admin token that SetParams requires (or set
    /// SPAMSCOPE_ADMIN_TOKEN); without one, params are read-only.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File of moderators' tokens, each acting on the channels it names
    /// (TOML: `[name] token = "..." channels = ["twitch.x"]`; the README's
    /// "Acting on spam"). The admin token acts on every channel.
    #[arg(long, env = "SPAMSCOPE_MODERATOR_TOKENS_FILE", value_name = "FILE")]
    pub moderator_tokens_file: Option<PathBuf>,
    /// Do not run the history writer in this process (with Scylla, run
    /// `spamscope history-writer` instead).
    #[arg(long)]
    pub no_writer: bool,
    /// WatchChannel streams open at once on this gateway (more are refused
    /// with RESOURCE_EXHAUSTED).
    #[arg(long, env = "SPAMSCOPE_MAX_WATCHERS",
          default_value_t = crate::watch::WatchLimits::default().total,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_watchers: usize,
    /// WatchChannel streams open at once from one client address.
    #[arg(long, env = "SPAMSCOPE_MAX_WATCHERS_PER_CLIENT",
          default_value_t = crate::watch::WatchLimits::default().per_client,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub max_watchers_per_client: usize,
    /// Events a WatchChannel stream holds for a client that does not read;
    /// when it stays full for --watch-stall-s, the stream ends with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "SPAMSCOPE_WATCH_BUFFER",
          default_value_t = crate::watch::WatchLimits::default().buffer,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(16..=65_536))]
    pub watch_buffer: usize,
    /// Seconds a full WatchChannel buffer waits for its client (1 to 300).
    #[arg(long, env = "SPAMSCOPE_WATCH_STALL_S",
          default_value_t = crate::watch::WatchLimits::default().stall.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub watch_stall_s: u64,
    /// Connections open at once (gRPC, gRPC-web, the UI); more are closed
    /// as they come, counted and logged.
    #[arg(long, env = "SPAMSCOPE_MAX_CONNECTIONS",
          default_value_t = crate::conn::ConnLimits::default().max_connections,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections: usize,
    /// Seconds a connection has to send its first bytes, and an HTTP/1.1
    /// request its whole head (also between kept-alive requests); HTTP/2
    /// connections are pinged this often and closed when a ping goes
    /// unanswered as long (1 to 300).
    #[arg(long, env = "SPAMSCOPE_HEADER_TIMEOUT_S",
          default_value_t = crate::conn::ConnLimits::default().header_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_timeout_s: u64,
    #[command(flatten)]
    pub history: HistoryArgs,
}

impl GatewayArgs {
    /// The moderators' tokens from `--moderator-tokens-file` (never
    /// printed); errors exit 64 naming the key.
    pub fn moderators(&self) -> Result<Vec<crate::moderate::ModeratorToken>> {
        let Some(path) = &self.moderator_tokens_file else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Exit::usage(format!("--moderator-tokens-file {}: {e}", path.display())))?;
        crate::moderate::parse_moderator_tokens(&text)
            .map_err(|e| Exit::usage(format!("--moderator-tokens-file {}: {e}", path.display())))
    }

    /// The admin token from `--admin-token-file` or `SPAMSCOPE_ADMIN_TOKEN`
    /// (never printed).
    /// One rule for both: trimmed, at least 16 characters.
    pub fn admin_token(&self) -> Result<Option<String>> {
        let token = secret(
            "--admin-token-file",
            self.admin_token_file.as_deref(),
            "SPAMSCOPE_ADMIN_TOKEN",
        )?;
        if token.as_ref().is_some_and(|t| t.chars().count() < 16) {
            let source = if self.admin_token_file.is_some() {
                "--admin-token-file"
            } else {
                "SPAMSCOPE_ADMIN_TOKEN"
            };
            return Err(Exit::usage(format!(
                "{source}: the admin token must have at least 16 characters"
            )));
        }
        Ok(token)
    }
}

#[derive(Debug, clap::Args)]
pub struct GatewayRoleArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// The detectors' channel policy file: the channel policies the
    /// console shows and sets layers over, and what its Backtest runs
    /// when it brings no policy of its own (without it, the defaults).
    #[arg(long, env = "SPAMSCOPE_POLICY_FILE", value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

impl GatewayRoleArgs {
    /// The `--policy` file; the defaults without one. Errors exit 64
    /// naming the key.
    pub fn policies(&self) -> Result<spamscope_act::Policies> {
        Ok(match &self.policy {
            Some(p) => spamscope_act::Policies::read(p)
                .map_err(|e| Exit::usage(format!("--policy {e}")))?,
            None => spamscope_act::Policies::default(),
        })
    }
}

/// Starts the history writer (unless `--no-writer`) and the gateway on
/// `bus`/`store` under `sup`; returns the address served. The gateway's
/// port also answers `/healthz`, `/readyz` (from `health`) and `/metrics`.
pub async fn start(
    args: &GatewayArgs,
    shards: u32,
    bus: &Bus,
    store: &Store,
    health: &Health,
    sup: &mut Supervisor,
    policies: spamscope_act::Policies,
) -> Result<SocketAddr> {
    let history = args.history.open().await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| Exit::usage(format!("--listen {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;
    let stop = sup.shutdown().clone();
    if !args.no_writer {
        let (a, b, h, st) = (
            args.history.clone(),
            bus.clone(),
            history.clone(),
            stop.clone(),
        );
        sup.critical("history writer", async move {
            a.write(&b, &h, Health::default(), st).await
        });
    }
    let gateway = crate::Gateway::new(
        bus.clone(),
        store.clone(),
        history,
        shards,
        args.admin_token()?,
    )
    .with_moderators(args.moderators()?)
    .with_policies(policies)
    .with_watch_limits(crate::watch::WatchLimits {
        total: args.max_watchers,
        per_client: args.max_watchers_per_client,
        buffer: args.watch_buffer,
        stall: std::time::Duration::from_secs(args.watch_stall_s),
    })
    .with_conn_limits(crate::conn::ConnLimits {
        max_connections: args.max_connections,
        header_timeout: std::time::Duration::from_secs(args.header_timeout_s),
        keepalive: std::time::Duration::from_secs(args.header_timeout_s),
        ..crate::conn::ConnLimits::default()
    });
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
    let health = health.clone();
    sup.critical("gateway server", async move {
        crate::serve(listener, gateway, ui, health, stop)
            .await
            .context("gateway server")
    });
    Ok(addr)
}

/// `spamscope gateway`.
pub fn run(args: GatewayRoleArgs) -> Result<()> {
    let url = args.cluster.nats_url()?;
    args.gateway.history.check()?;
    args.cluster.require_shared_store()?;
    args.gateway.admin_token()?;
    args.gateway.moderators()?;
    let policies = args.policies()?;
    run_role("gateway", args.cluster.lifecycle(), |role| async move {
        let (bus, store) = connect(
            &args.cluster,
            &url,
            "spamscope-gateway",
            spamscope_bus::StreamLimits::Keep,
        )
        .await?;
        role.require_nats(&bus);
        role.require_store(&store);
        let mut sup = role.supervisor();
        let addr = start(
            &args.gateway,
            args.cluster.shards,
            &bus,
            &store,
            &role.health,
            &mut sup,
            policies,
        )
        .await?;
        role.health.set_ready(true);
        eprintln!("gateway: http://{addr}/ (gRPC and gRPC-web on the same port)");
        Ok(sup)
    })
}
