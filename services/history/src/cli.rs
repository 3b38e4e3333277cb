//! The `history-writer` role's flags and run, and the history store flags
//! the gateway shares.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use spamscope_bus::Bus;
use spamscope_history::any::History;
use spamscope_runtime::exit::Exit;
use spamscope_runtime::{ClusterArgs, Health, connect, run_role};
use tokio_util::sync::CancellationToken;

/// Where the history is kept: the embedded file, or Scylla.
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
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
    /// User to log in to Scylla with (PasswordAuthenticator), with
    /// --scylla-password-file or SPAMSCOPE_SCYLLA_PASSWORD.
    #[arg(long, env = "SPAMSCOPE_SCYLLA_USER")]
    pub scylla_user: Option<String>,
    /// File holding the password of --scylla-user (or the environment's
    /// SPAMSCOPE_SCYLLA_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub scylla_password_file: Option<PathBuf>,
    /// PEM certificate authority: connect to Scylla over TLS, trusting it.
    #[arg(long, env = "SPAMSCOPE_SCYLLA_CA_FILE", value_name = "FILE")]
    pub scylla_ca_file: Option<PathBuf>,
}

/// A Scylla login (user, password) and the PEM authority to trust over TLS.
type ScyllaAccess = (Option<(String, String)>, Option<Vec<u8>>);

impl ScyllaArgs {
    /// The login and TLS these flags ask for; exit 64 naming the flag for
    /// half a login or an unreadable file.
    fn login_and_tls(&self) -> Result<ScyllaAccess> {
        let password = spamscope_runtime::exit::secret(
            "--scylla-password-file",
            self.scylla_password_file.as_deref(),
            "SPAMSCOPE_SCYLLA_PASSWORD",
        )?;
        let login = match (
            self.scylla_user.as_deref().filter(|u| !u.is_empty()),
            password,
        ) {
            (Some(user), Some(password)) => Some((user.to_owned(), password)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Exit::usage(
                    "--scylla-user needs a password: --scylla-password-file or SPAMSCOPE_SCYLLA_PASSWORD",
                ));
            }
            (None, Some(_)) => {
                return Err(Exit::usage(
                    "--scylla-password-file (or SPAMSCOPE_SCYLLA_PASSWORD) needs --scylla-user",
                ));
            }
        };
        let ca = match &self.scylla_ca_file {
            Some(f) => {
                let pem = format!(
                    "{}\n",
                    spamscope_runtime::exit::secret_file("--scylla-ca-file", f)?
                )
                .into_bytes();
                spamscope_history::scylla_store::tls_config(&pem)
                    .map_err(|e| Exit::usage(format!("--scylla-ca-file {}: {e}", f.display())))?;
                Some(pem)
            }
            None => None,
        };
        Ok((login, ca))
    }
}

impl HistoryArgs {
    /// Checks the flags that need no server (exit 64 naming the flag), so
    /// a bad one is said before any connection is tried.
    pub fn check(&self) -> Result<()> {
        self.scylla.login_and_tls().map(|_| ())
    }

    /// Opens the store these flags name.
    pub async fn open(&self) -> Result<History> {
        if self.scylla.scylla_nodes.is_empty() {
            let h = spamscope_history::HistoryStore::open(&self.history_path).map_err(|e| {
                Exit::usage(format!(
                    "--history-path {}: {e}",
                    self.history_path.display()
                ))
            })?;
            return Ok(History::Embedded(Arc::new(h)));
        }
        let (login, ca_pem) = self.scylla.login_and_tls()?;
        use scylla::statement::Consistency;
        let consistency = match self.scylla.scylla_consistency.to_ascii_lowercase().as_str() {
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
            nodes: self.scylla.scylla_nodes.clone(),
            keyspace: self.scylla.scylla_keyspace.clone(),
            replication: self.scylla.scylla_replication.clone(),
            ttl_s: u32::try_from(self.history_ttl_days * 86_400).unwrap_or(u32::MAX),
            consistency,
            cluster_metadata: true,
            login,
            ca_pem,
        };
        let h = spamscope_history::scylla_store::ScyllaHistory::connect(&cfg).await?;
        Ok(History::Scylla(Arc::new(h)))
    }

    /// The history writer into `history`, to run under a supervisor.
    pub async fn write(
        &self,
        bus: &Bus,
        history: &History,
        health: Health,
        stop: CancellationToken,
    ) -> Result<()> {
        let cfg = crate::WriterConfig {
            ttl: (self.history_ttl_days > 0)
                .then(|| Duration::from_secs(self.history_ttl_days * 86_400)),
            ..Default::default()
        };
        crate::run(
            cfg,
            bus.clone(),
            history.clone(),
            health,
            Arc::default(),
            stop,
        )
        .await?;
        Ok(())
    }
}

#[derive(Debug, clap::Args)]
pub struct HistoryWriterArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub history: HistoryArgs,
}

/// `spamscope history-writer`.
pub fn run(args: HistoryWriterArgs) -> Result<()> {
    let url = args.cluster.nats_url()?;
    args.history.check()?;
    args.cluster.require_shared_store()?;
    run_role(
        "history-writer",
        args.cluster.lifecycle(),
        |role| async move {
            let (bus, _store) = connect(
                &args.cluster,
                &url,
                "spamscope-history-writer",
                spamscope_bus::StreamLimits::Keep,
            )
            .await?;
            role.require_nats(&bus);
            let history = args.history.open().await?;
            let mut sup = role.supervisor();
            let stop = sup.shutdown().clone();
            let health = role.health.clone();
            sup.critical("history writer", async move {
                args.history.write(&bus, &history, health, stop).await
            });
            Ok(sup)
        },
    )
}
