//! The `ingest` role's flags and run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use spamscope_chat::replay::{self, Speed};
use spamscope_runtime::exit::{Exit, secret};
use spamscope_runtime::{ClusterArgs, connect, run_role};

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
    #[arg(long, default_value_t = crate::DEFAULT_MAX_BATCH,
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
    /// JOINs per 10 seconds (1 to 2000; Twitch allows 20 to most accounts).
    #[arg(long, default_value_t = 20,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=2000))]
    pub joins_per_10s: usize,
    /// Also read the top N live channels (Helix API; needs
    /// SPAMSCOPE_TWITCH_CLIENT_ID and SPAMSCOPE_TWITCH_CLIENT_SECRET or
    /// --twitch-client-secret-file).
    #[arg(long, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub helix_top: Option<usize>,
    /// How often the top channels are refetched, in seconds (at least 60).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..))]
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
    fn twitch_config(&self) -> Result<crate::twitch::TwitchConfig> {
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
                let client_secret = secret(
                    "--twitch-client-secret-file",
                    self.twitch_client_secret_file.as_deref(),
                    "SPAMSCOPE_TWITCH_CLIENT_SECRET",
                )?
                .ok_or_else(|| {
                    Exit::usage(
                        "--helix-top needs SPAMSCOPE_TWITCH_CLIENT_SECRET or --twitch-client-secret-file",
                    )
                })?;
                Some(crate::twitch::HelixConfig {
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
                let token = secret(
                    "--twitch-token-file",
                    self.twitch_token_file.as_deref(),
                    "SPAMSCOPE_TWITCH_TOKEN",
                )?
                .ok_or_else(|| {
                    Exit::usage(
                        "--twitch-login needs SPAMSCOPE_TWITCH_TOKEN or --twitch-token-file",
                    )
                })?;
                Some((login.clone(), token))
            }
        };
        Ok(crate::twitch::TwitchConfig {
            channels,
            credentials,
            joins_per_window: self.joins_per_10s,
            join_window: Duration::from_secs(10),
            server: self.twitch_server.clone(),
            helix,
        })
    }
}

/// `spamscope ingest`.
pub fn run(args: IngestArgs) -> Result<()> {
    let events = match args.source {
        Source::Replay => {
            if args.files.is_empty() {
                return Err(Exit::usage("--source replay needs FILE arguments"));
            }
            let files = crate::files::read(&args.files)?;
            crate::files::report_malformed(&files);
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
    let youtube = (args.source == Source::Youtube).then(|| crate::youtube::YoutubeConfig {
        video_ids: args.videos.clone(),
        base_url: args.youtube_base_url.trim_end_matches('/').to_owned(),
        ..Default::default()
    });
    let url = args.cluster.nats_url()?;
    args.cluster.require_shared_store()?;
    run_role("ingest", args.cluster.lifecycle(), |role| async move {
        let (bus, _store) = connect(
            &args.cluster,
            &url,
            "spamscope-ingest",
            spamscope_bus::StreamLimits::Keep,
        )
        .await?;
        role.require_nats(&bus);
        role.health.set_ready(true);
        let mut sup = role.supervisor();
        let shutdown = sup.shutdown().clone();
        let (shards, speed, max_batch) = (args.cluster.shards, args.speed, args.max_batch);
        sup.main("ingest", async move {
            let report = match (twitch, youtube) {
                (Some(cfg), _) => {
                    crate::twitch::run(&bus, cfg, shards, &shutdown).await?
                }
                (None, Some(cfg)) => {
                    crate::youtube::run(&bus, cfg, shards, &shutdown).await?
                }
                (None, None) => {
                    let opts = crate::PublishOptions { max_batch };
                    crate::publish_events(&bus, &events, shards, speed, opts, &shutdown)
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
