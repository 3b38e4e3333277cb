//! The `actor` role's flags and run, and the platform flags `standalone`
//! shares.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use spamscope_act::helix::{HELIX_URL, Helix, HelixConfig};
use spamscope_act::platform::Moderator;
use spamscope_act::youtube::{YOUTUBE_URL, Youtube, YoutubeConfig};
use spamscope_runtime::exit::{Exit, secret};
use spamscope_runtime::{ClusterArgs, connect, run_role};

/// The platforms' moderation credentials.
#[derive(Debug, Clone, clap::Args)]
pub struct PlatformArgs {
    /// Twitch app client id, sent with every Helix request.
    #[arg(long, env = "SPAMSCOPE_HELIX_CLIENT_ID")]
    pub helix_client_id: Option<String>,
    /// Twitch user id of the moderator whose token acts (Helix's
    /// moderator_id).
    #[arg(long, env = "SPAMSCOPE_HELIX_MODERATOR_ID")]
    pub helix_moderator_id: Option<String>,
    /// File holding the moderator's user access token, with the scopes
    /// moderator:manage:banned_users and moderator:manage:chat_messages (or
    /// set SPAMSCOPE_HELIX_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub helix_token_file: Option<PathBuf>,
    /// Helix's address (another: a proxy, or a test server).
    #[arg(long, env = "SPAMSCOPE_HELIX_URL", default_value = HELIX_URL)]
    pub helix_url: String,
    /// File holding an OAuth access token of the YouTube channel or one of
    /// its moderators, scope youtube.force-ssl (or set
    /// SPAMSCOPE_YOUTUBE_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub youtube_token_file: Option<PathBuf>,
    /// The YouTube Data API's address.
    #[arg(long, env = "SPAMSCOPE_YOUTUBE_URL", default_value = YOUTUBE_URL)]
    pub youtube_url: String,
}

impl PlatformArgs {
    /// A moderator client per platform with credentials. Errors exit 64
    /// naming the flag, never a token.
    pub fn moderators(&self) -> Result<Vec<Arc<dyn Moderator>>> {
        let mut out: Vec<Arc<dyn Moderator>> = Vec::new();
        let helix_token = secret(
            "--helix-token-file",
            self.helix_token_file.as_deref(),
            "SPAMSCOPE_HELIX_TOKEN",
        )?;
        match (
            helix_token,
            self.helix_client_id.as_deref().filter(|s| !s.is_empty()),
            self.helix_moderator_id.as_deref().filter(|s| !s.is_empty()),
        ) {
            (None, None, None) => {}
            (Some(token), Some(client_id), Some(moderator_id)) => {
                let h = Helix::new(HelixConfig {
                    base_url: self.helix_url.clone(),
                    client_id: client_id.to_owned(),
                    token: token.strip_prefix("oauth:").unwrap_or(&token).to_owned(),
                    moderator_id: moderator_id.to_owned(),
                })
                .map_err(|e| Exit::usage(format!("--helix-url: {e}")))?;
                out.push(Arc::new(h));
            }
            _ => {
                return Err(Exit::usage(
                    "Twitch needs all three: --helix-client-id, --helix-moderator-id and a token (--helix-token-file or SPAMSCOPE_HELIX_TOKEN)",
                ));
            }
        }
        if let Some(token) = secret(
            "--youtube-token-file",
            self.youtube_token_file.as_deref(),
            "SPAMSCOPE_YOUTUBE_TOKEN",
        )? {
            let y = Youtube::new(YoutubeConfig {
                base_url: self.youtube_url.clone(),
                token,
            })
            .map_err(|e| Exit::usage(format!("--youtube-url: {e}")))?;
            out.push(Arc::new(y));
        }
        Ok(out)
    }
}

#[derive(Debug, clap::Args)]
pub struct ActorArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub platforms: PlatformArgs,
    /// A pending action decided longer ago than this many seconds is not
    /// sent but answered as failed (the actor was down, or far behind)
    /// (10 to 86400).
    #[arg(long, env = "SPAMSCOPE_MAX_ACTION_AGE_S",
          default_value_t = crate::ActorConfig::default().max_age.as_secs(),
          value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub max_action_age_s: u64,
}

/// `spamscope actor`.
pub fn run(args: ActorArgs) -> Result<()> {
    let url = args.cluster.nats_url()?;
    let moderators = args.platforms.moderators()?;
    if moderators.is_empty() {
        return Err(Exit::usage(
            "the actor needs credentials of at least one platform: --helix-client-id, --helix-moderator-id and --helix-token-file, or --youtube-token-file",
        ));
    }
    run_role("actor", args.cluster.lifecycle(), |role| async move {
        let (bus, store) = connect(
            &args.cluster,
            &url,
            "spamscope-actor",
            spamscope_bus::StreamLimits::Keep,
        )
        .await?;
        role.require_nats(&bus);
        let mut sup = role.supervisor();
        let (stop, health) = (sup.shutdown().clone(), role.health.clone());
        sup.critical("actor", async move {
            Ok(crate::run(
                crate::ActorConfig {
                    max_age: std::time::Duration::from_secs(args.max_action_age_s),
                    ..Default::default()
                },
                bus,
                store,
                moderators,
                health,
                Arc::default(),
                stop,
            )
            .await?)
        });
        Ok(sup)
    })
}
