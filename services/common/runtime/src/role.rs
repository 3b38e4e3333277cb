//! What every role's process shares: the cluster flags, connecting to NATS
//! and Redis, and running the role's tasks under a supervisor with health
//! endpoints, telemetry and signals ([`run_role`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use spamscope_bus::{Bus, BusConfig, StreamLimits};
use spamscope_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::exit::Exit;
use crate::{Health, Supervisor, serve_health, shutdown_on_signals};

/// The longest retention accepted for a stream: one year, in seconds.
const MAX_RETENTION_S: u64 = 365 * 24 * 3600;

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
    /// PEM certificate authority to trust for Redis over TLS (a
    /// `rediss://` URL; without this file the system's roots are trusted).
    #[arg(long, env = "SPAMSCOPE_REDIS_CA_FILE", value_name = "FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) to present to Redis over TLS, for a
    /// server that requires one (`tls-auth-clients yes`); with
    /// --redis-key-file.
    #[arg(
        long,
        env = "SPAMSCOPE_REDIS_CERT_FILE",
        value_name = "FILE",
        requires = "redis_key_file"
    )]
    pub redis_cert_file: Option<PathBuf>,
    /// PEM private key of --redis-cert-file.
    #[arg(
        long,
        env = "SPAMSCOPE_REDIS_KEY_FILE",
        value_name = "FILE",
        requires = "redis_cert_file"
    )]
    pub redis_key_file: Option<PathBuf>,
    /// Prefix of every Redis key.
    #[arg(long, env = "SPAMSCOPE_REDIS_PREFIX", default_value = spamscope_store::DEFAULT_PREFIX)]
    pub redis_prefix: String,
    /// Shards of the cluster; fixed at first start (recorded in Redis).
    #[arg(long, env = "SPAMSCOPE_SHARDS", default_value_t = spamscope_routing::DEFAULT_SHARDS,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub shards: u32,
    /// Where /healthz and /readyz are served (port 0: any free port).
    #[arg(long, env = "SPAMSCOPE_HEALTH_LISTEN", default_value = "127.0.0.1:0")]
    pub health_listen: SocketAddr,
    /// Retention of the CHAT stream, in seconds (1 minute to 1 year). The
    /// router applies the retention flags to the streams; other roles only
    /// create missing streams and warn where theirs differ.
    #[arg(long, default_value_t = BusConfig::default().chat_max_age.as_secs(),
          value_parser = clap::value_parser!(u64).range(60..=MAX_RETENTION_S))]
    pub chat_max_age_s: u64,
    /// Retention of the SPAM stream, in seconds (1 minute to 1 year).
    #[arg(long, default_value_t = BusConfig::default().spam_max_age.as_secs(),
          value_parser = clap::value_parser!(u64).range(60..=MAX_RETENTION_S))]
    pub spam_max_age_s: u64,
    /// Size limit of the CHAT stream, in bytes, over all shards (oldest
    /// dropped first; at least 64 MiB).
    #[arg(long, default_value_t = BusConfig::default().chat_max_bytes,
          value_parser = clap::value_parser!(i64).range(spamscope_bus::MIN_CHAT_MAX_BYTES..))]
    pub chat_max_bytes: i64,
    /// Size limit of the SPAM stream, in bytes (at least 16 MiB).
    #[arg(long, default_value_t = BusConfig::default().spam_max_bytes,
          value_parser = clap::value_parser!(i64).range(spamscope_bus::MIN_SPAM_MAX_BYTES..))]
    pub spam_max_bytes: i64,
    /// NATS `.creds` file (user JWT and NKEY seed) to log in with. A user
    /// and password, or a token, can also be given in --nats-url
    /// (`nats://user:password@host:4222`, percent-encoded).
    #[arg(long, env = "SPAMSCOPE_NATS_CREDS_FILE", value_name = "FILE")]
    pub nats_creds_file: Option<PathBuf>,
    /// File holding an NKEY seed to log in to NATS with.
    #[arg(long, env = "SPAMSCOPE_NATS_NKEY_FILE", value_name = "FILE")]
    pub nats_nkey_file: Option<PathBuf>,
    /// PEM certificate authority to trust for NATS over TLS (TLS is then
    /// required; `tls://` URLs require it with the system's roots).
    #[arg(long, env = "SPAMSCOPE_NATS_CA_FILE", value_name = "FILE")]
    pub nats_ca_file: Option<PathBuf>,
    /// PEM client certificate to present to NATS (TLS is then required),
    /// for servers that verify clients (`tls { verify: true }`); with
    /// --nats-key-file.
    #[arg(
        long,
        env = "SPAMSCOPE_NATS_CERT_FILE",
        value_name = "FILE",
        requires = "nats_key_file"
    )]
    pub nats_cert_file: Option<PathBuf>,
    /// PEM private key of --nats-cert-file.
    #[arg(
        long,
        env = "SPAMSCOPE_NATS_KEY_FILE",
        value_name = "FILE",
        requires = "nats_cert_file"
    )]
    pub nats_key_file: Option<PathBuf>,
    /// Chat messages kept per stream (channel or video) in the CHAT
    /// streams, at least 1,000: a stream's oldest go first past it, so one
    /// busy channel cannot push the others' chat out (the console reads
    /// chat back from here). A detector lagging this far behind on one
    /// stream would miss that stream's oldest messages.
    #[arg(long, default_value_t = BusConfig::default().chat_max_per_stream,
          value_parser = clap::value_parser!(i64).range(spamscope_bus::MIN_CHAT_MAX_PER_STREAM..))]
    pub chat_max_per_stream: i64,
    /// Copies JetStream keeps of every stream, 1 to 5: 3 on a NATS cluster
    /// of three or more nodes survives the loss of one (the servers must
    /// be clustered with JetStream; a single server accepts only 1).
    #[arg(long, env = "SPAMSCOPE_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,
    /// JetStream duplicate window, in seconds: at least 120 (ingest's
    /// resends must fall inside it) and at most the shorter retention.
    #[arg(long, default_value_t = BusConfig::default().duplicate_window.as_secs(),
          value_parser = clap::value_parser!(u64).range(spamscope_bus::MIN_DUPLICATE_WINDOW.as_secs()..=MAX_RETENTION_S))]
    pub duplicate_window_s: u64,
    /// After SIGINT or SIGTERM, how long the role's tasks get to stop, in
    /// seconds (a detector gets its --handover-timeout-s on top); a second
    /// signal stops at once.
    #[arg(long, env = "SPAMSCOPE_SHUTDOWN_GRACE_S",
          default_value_t = crate::DEFAULT_SHUTDOWN_GRACE.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_grace_s: u64,
    /// Run this role on a private in-memory store instead of Redis: nothing
    /// is shared with other processes (shard owners, checkpoints, params).
    /// For trying one role alone; `standalone` needs no flag for this.
    #[arg(long)]
    pub private_memory_store: bool,
}

impl ClusterArgs {
    /// The streams' limits from the flags; a duplicate window longer than
    /// a retention is refused (exit 64 naming the flag).
    pub fn bus_config(&self, url: &str) -> Result<BusConfig> {
        let shortest = self.chat_max_age_s.min(self.spam_max_age_s);
        if self.duplicate_window_s > shortest {
            return Err(Exit::usage(format!(
                "--duplicate-window-s {} is longer than the shortest retention \
                 (--chat-max-age-s / --spam-max-age-s, {shortest} s)",
                self.duplicate_window_s
            )));
        }
        Ok(BusConfig {
            url: url.to_owned(),
            shards: self.shards,
            chat_max_age: Duration::from_secs(self.chat_max_age_s),
            spam_max_age: Duration::from_secs(self.spam_max_age_s),
            chat_max_bytes: self.chat_max_bytes,
            spam_max_bytes: self.spam_max_bytes,
            chat_max_per_stream: self.chat_max_per_stream,
            replicas: usize::from(self.stream_replicas),
            duplicate_window: Duration::from_secs(self.duplicate_window_s),
        })
    }

    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle {
            grace: Duration::from_secs(self.shutdown_grace_s),
            health_listen: self.health_listen,
        }
    }

    /// Roles in separate processes share shard owners, checkpoints and
    /// params through Redis: without it each would silently work alone.
    pub fn require_shared_store(&self) -> Result<()> {
        if self.redis_url.is_none() && !self.private_memory_store {
            return Err(Exit::usage(
                "--redis-url (or SPAMSCOPE_REDIS_URL) is required: roles in separate processes \
                 share shard owners, checkpoints and params through Redis \
                 (--private-memory-store runs this process alone on an in-memory store)",
            ));
        }
        Ok(())
    }

    /// The NATS URL (one server or a comma-separated list), checked with
    /// the client's own parser: a bad one exits 64 naming the flag.
    pub fn nats_url(&self) -> Result<String> {
        let url = self.nats_url.clone().ok_or_else(|| {
            Exit::usage("--nats-url (or SPAMSCOPE_NATS_URL) is required for this role")
        })?;
        for one in url.split(',') {
            one.trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| Exit::usage(format!("--nats-url {}: {e}", redact_url(one))))?;
        }
        Ok(url)
    }
}

/// `url` as it may be printed: the user and password (or token) of each
/// server of a comma-separated list replaced by `***`, and a query string
/// hidden (`redis://user:pw@host:6379/0` → `redis://***@host:6379/0`).
pub fn redact_url(url: &str) -> String {
    let one = |s: &str| {
        let s = s.trim();
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => (format!("{scheme}://"), rest),
            None => (String::new(), s),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let host = authority.rfind('@').map_or(authority.to_owned(), |at| {
            format!("***@{}", &authority[at + 1..])
        });
        let tail = tail
            .find('?')
            .map_or(tail.to_owned(), |q| format!("{}?***", &tail[..q]));
        format!("{scheme}{host}{tail}")
    };
    url.split(',').map(one).collect::<Vec<_>>().join(",")
}

/// Logs, metrics and traces of a role (inside the runtime: the OTLP
/// exporter needs it). Roles log at `info`; `standalone`, which a person
/// runs in a terminal to look at the web UI, at `warn` (its own few lines
/// are printed whatever the filter); `RUST_LOG` overrides both.
pub fn telemetry(role: &str) -> Result<spamscope_telemetry::Telemetry> {
    let log_default = if role == "standalone" { "warn" } else { "info" };
    spamscope_telemetry::init_with(role, log_default)
        .map_err(|e| Exit::usage(format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}")))
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// Where a role serves its health and how long it has to stop.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    pub grace: Duration,
    pub health_listen: SocketAddr,
}

/// What a role's setup is given: its health and its shutdown.
#[derive(Debug)]
pub struct Role {
    pub health: Health,
    pub shutdown: CancellationToken,
}

impl Role {
    pub fn supervisor(&self) -> Supervisor {
        Supervisor::new(self.shutdown.clone())
    }

    /// `/readyz` fails while Redis does not answer a PING (checked every
    /// two seconds; nothing to check for the in-memory store).
    pub fn require_store(&self, store: &Store) {
        if !store.is_shared() {
            return;
        }
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (flag, store, stop) = (up.clone(), store.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = every.tick() => {
                        let ok = matches!(
                            tokio::time::timeout(Duration::from_secs(2), store.ping()).await,
                            Ok(Ok(()))
                        );
                        flag.store(ok, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        });
        self.health.require("redis", move || {
            up.load(std::sync::atomic::Ordering::Relaxed)
        });
    }

    /// `/readyz` fails while the NATS connection is down.
    pub fn require_nats(&self, bus: &Bus) {
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
pub fn run_role<F, Fut>(name: &'static str, life: Lifecycle, setup: F) -> Result<()>
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

pub async fn start_health(
    addr: SocketAddr,
    health: Health,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Exit::usage(format!("--health-listen {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    info!(%bound, "health endpoints on /healthz and /readyz");
    eprintln!("health: http://{bound}/healthz");
    tokio::spawn(serve_health(listener, health, shutdown));
    Ok(())
}

/// Runs `f` until JetStream answers it: JetStream can answer a moment after
/// nats-server accepts connections (it recovers its streams first), so a
/// role started beside it retries for up to 30 s instead of exiting.
async fn until_jetstream<T, F, Fut>(url: &str, bus: &Bus, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, spamscope_bus::BusError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut backoff = crate::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            // The streams do not fit the server's store: retrying does not
            // help, and the message names the flags to change.
            Err(e @ spamscope_bus::BusError::NoRoom { .. }) => {
                return Err(Exit::usage(e.to_string()));
            }
            // Refused credentials do not get better either.
            Err(_)
                if bus
                    .server_error()
                    .is_some_and(|s| s.to_lowercase().contains("authorization")) =>
            {
                return Err(Exit::usage(format!(
                    "NATS at --nats-url {} refused this login ({}): check the user and \
                     password or token in the URL, --nats-creds-file or --nats-nkey-file",
                    redact_url(url),
                    bus.server_error().unwrap_or_default()
                )));
            }
            Err(e) if tokio::time::Instant::now() + backoff.peek() < deadline => {
                tracing::warn!(error = %e, "JetStream not ready; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => {
                let said = bus
                    .server_error()
                    .map(|s| format!(" (the server said: {s})"))
                    .unwrap_or_default();
                return Err(anyhow::anyhow!(
                    "NATS JetStream at --nats-url {} did not answer within 30 s: {e}{said}",
                    redact_url(url)
                ));
            }
        }
    }
}

/// Opens the store, connects to NATS, checks the shard count against both
/// (NATS first) and makes sure the streams exist. Only the role given [`StreamLimits::Apply`] (the
/// router) changes the limits of existing streams; the others warn where
/// their retention flags differ from the streams'.
pub async fn connect(
    cluster: &ClusterArgs,
    url: &str,
    name: &str,
    limits: StreamLimits,
) -> Result<(Bus, Store)> {
    let bus_config = cluster.bus_config(url)?;
    let redis = cluster.redis_url.as_deref();
    if let Some(r) = redis {
        Store::check_url(r)
            .map_err(|e| Exit::usage(format!("--redis-url {}: {e}", redact_url(r))))?;
    }
    let pem = |flag: &str, f: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
        f.as_ref()
            .map(|f| crate::exit::secret_file(flag, f).map(|s| format!("{s}\n").into_bytes()))
            .transpose()
    };
    let tls = spamscope_store::RedisTls {
        ca_pem: pem("--redis-ca-file", &cluster.redis_ca_file)?,
        client: match (
            pem("--redis-cert-file", &cluster.redis_cert_file)?,
            pem("--redis-key-file", &cluster.redis_key_file)?,
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        },
    };
    let store = match Store::open_tls(redis, &cluster.redis_prefix, tls).await {
        Err(e @ spamscope_store::StoreError::CaWithoutTls) => {
            let flag = if cluster.redis_ca_file.is_some() {
                "--redis-ca-file"
            } else {
                "--redis-cert-file"
            };
            return Err(Exit::usage(format!("{flag}: {e}")));
        }
        other => other
            .with_context(|| format!("--redis-url {}", redact_url(redis.unwrap_or_default())))?,
    };
    let auth = spamscope_bus::NatsAuth {
        creds_file: cluster.nats_creds_file.clone(),
        nkey_file: cluster.nats_nkey_file.clone(),
        ca_file: cluster.nats_ca_file.clone(),
        client_cert: cluster
            .nats_cert_file
            .clone()
            .zip(cluster.nats_key_file.clone()),
    };
    let bus = match Bus::connect_with(url, name, &auth).await {
        Err(e @ spamscope_bus::BusError::Auth { .. }) => return Err(Exit::usage(e.to_string())),
        other => other.with_context(|| format!("--nats-url {}", redact_url(url)))?,
    };
    // The shard count is fixed per cluster, and recorded twice: by the
    // chat streams in NATS and in Redis. It is checked against NATS first,
    // then recorded or checked in Redis (a Redis restarted empty must not
    // record a wrong count), all before any per-shard stream is made.
    let in_nats = until_jetstream(url, &bus, || bus.chat_shards()).await?;
    if let Some(n) = in_nats.filter(|n| *n != cluster.shards) {
        return Err(Exit::usage(format!(
            "NATS holds the chat streams of {n} shards, this process is configured \
             with --shards {}; refusing to start (the shard count is fixed per cluster)",
            cluster.shards
        )));
    }
    store
        .ensure_shards(cluster.shards)
        .await
        .map_err(|e| Exit::usage(e.to_string()))?;
    let differences =
        until_jetstream(url, &bus, || bus.ensure_streams(&bus_config, limits)).await?;
    if let Some(first) = differences.first() {
        tracing::warn!(
            streams = differences.len(),
            first = %first,
            "the streams' limits differ from this role's retention flags; they stay as they are \
             (the router applies its flags to the streams)"
        );
    }
    Ok((bus, store))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_lose_their_credentials() {
        for (url, shown) in [
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            ("nats://user:pw@nats:4222", "nats://***@nats:4222"),
            ("nats://s3cr3t-token@nats:4222", "nats://***@nats:4222"),
            ("user:pw@nats:4222", "***@nats:4222"),
            (
                "tls://a:b@n1:4222, nats://n2:4222",
                "tls://***@n1:4222,nats://n2:4222",
            ),
            ("redis://:pw@redis:6379/0", "redis://***@redis:6379/0"),
            ("rediss://r:6379/0?password=x", "rediss://r:6379/0?***"),
            // An '@' in the password itself.
            ("redis://u:p@ss@redis", "redis://***@redis"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
