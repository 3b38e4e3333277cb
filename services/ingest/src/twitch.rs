//! Live Twitch chat through the twitch-irc crate.
//!
//! Anonymous read-only login by default (`justinfan`), an OAuth token when
//! given. Channels are joined at a limited rate (default 20 per 10 s, Twitch's
//! limit for normal accounts); the crate reconnects with backoff and rejoins
//! by itself. Every raw line the client receives (PRIVMSG, CLEARCHAT,
//! CLEARMSG, ROOMSTATE, USERNOTICE, ...) goes through the same parser as
//! recorded logs, so live and replayed chat produce the same events.
//!
//! Production uses the crate's TLS transport to irc.chat.twitch.tv:6697.
//! [`PlainTransport`] connects to another address over plain TCP: for tests
//! (a local server replaying recorded chat) and for IRC proxies.

use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use either::Either;
use futures::{SinkExt, Stream, StreamExt};
use prost::Message;
use spamscope_bus::{Bus, subjects};
use spamscope_chat::twitch::parse_line;
use spamscope_proto::v1::ChatEvent;
use spamscope_routing::shard_of;
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use twitch_irc::login::StaticLoginCredentials;
use twitch_irc::message::{AsRawIRC, IRCMessage, IRCParseError};
use twitch_irc::transport::Transport;
use twitch_irc::{ClientConfig, SecureTCPTransport, TwitchIRCClient};

use crate::{IngestError, IngestReport, PublishOptions, chat_msg_id};
use spamscope_chat::replay::Speed;

#[derive(Debug, Clone)]
pub struct TwitchConfig {
    /// Channel logins to join.
    pub channels: Vec<String>,
    /// Login and OAuth token; anonymous when `None`.
    pub credentials: Option<(String, String)>,
    /// JOINs allowed per `join_window`.
    pub joins_per_window: usize,
    pub join_window: Duration,
    /// Plain-TCP server instead of irc.chat.twitch.tv over TLS.
    pub server: Option<String>,
    /// Also read the top live channels from the Helix API.
    pub helix: Option<HelixConfig>,
}

/// The top N live channels by viewers, from Helix (app access token from a
/// client id and secret), refreshed every `refresh`.
#[derive(Clone)]
pub struct HelixConfig {
    pub client_id: String,
    pub client_secret: String,
    pub top: usize,
    pub refresh: Duration,
}

impl std::fmt::Debug for HelixConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("HelixConfig")
            .field("client_id", &self.client_id)
            .field("top", &self.top)
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

/// Logins of the top `cfg.top` live channels.
pub async fn top_channels(cfg: &HelixConfig) -> Result<Vec<String>, IngestError> {
    use twitch_api::helix::streams::GetStreamsRequest;
    use twitch_oauth2::{AppAccessToken, ClientId, ClientSecret};
    let http = reqwest::Client::new();
    let err = |e: &dyn std::fmt::Display| IngestError::Source(format!("helix: {e}"));
    let token = AppAccessToken::get_app_access_token(
        &http,
        ClientId::new(cfg.client_id.clone()),
        ClientSecret::new(cfg.client_secret.clone()),
        vec![],
    )
    .await
    .map_err(|e| err(&e))?;
    let helix: twitch_api::HelixClient<reqwest::Client> =
        twitch_api::HelixClient::with_client(http);
    let mut out = Vec::new();
    let mut cursor = None;
    while out.len() < cfg.top {
        let mut req = GetStreamsRequest::default().first(100);
        req.after = cursor.take().map(std::borrow::Cow::Owned);
        let resp = helix.req_get(req, &token).await.map_err(|e| err(&e))?;
        out.extend(resp.data.iter().map(|s| s.user_login.to_string()));
        match resp.pagination_data.cursor {
            Some(c) if !resp.data.is_empty() => cursor = Some(c),
            _ => break,
        }
    }
    out.truncate(cfg.top);
    Ok(out)
}

impl Default for TwitchConfig {
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            credentials: None,
            joins_per_window: 20,
            join_window: Duration::from_secs(10),
            server: None,
            helix: None,
        }
    }
}

/// Reads the chat of `cfg.channels` until `shutdown`, publishing every event.
pub async fn run(
    bus: &Bus,
    cfg: TwitchConfig,
    shards: u32,
    shutdown: &CancellationToken,
) -> Result<IngestReport, IngestError> {
    match &cfg.server {
        None => run_with::<SecureTCPTransport>(bus, cfg, shards, shutdown).await,
        Some(addr) => {
            // The transport trait takes no arguments: the address is set
            // once per process.
            let _ = PLAIN_SERVER.set(addr.clone());
            run_with::<PlainTransport>(bus, cfg, shards, shutdown).await
        }
    }
}

async fn run_with<T: Transport>(
    bus: &Bus,
    cfg: TwitchConfig,
    shards: u32,
    shutdown: &CancellationToken,
) -> Result<IngestReport, IngestError> {
    let login = match &cfg.credentials {
        Some((login, token)) => {
            let token = token.strip_prefix("oauth:").unwrap_or(token).to_owned();
            StaticLoginCredentials::new(login.clone(), Some(token))
        }
        None => StaticLoginCredentials::anonymous(),
    };
    let (mut incoming, client) =
        TwitchIRCClient::<T, StaticLoginCredentials>::new(ClientConfig::new_simple(login));
    // The wanted channels, grown at most `joins_per_window` at a time; with
    // Helix, the top channels are refetched every `refresh` and channels that
    // left the top are parted.
    let joiner = {
        let client = client.clone();
        let cfg = cfg.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let fixed: Vec<String> = cfg.channels.iter().map(|c| normalize_login(c)).collect();
            let mut wanted: std::collections::HashSet<String> = std::collections::HashSet::new();
            loop {
                let mut target = fixed.clone();
                if let Some(h) = &cfg.helix {
                    match top_channels(h).await {
                        Ok(top) => {
                            info!(channels = top.len(), "top live channels from Helix");
                            target.extend(top.iter().map(|c| normalize_login(c)));
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot list top channels; keeping the current ones")
                        }
                    }
                }
                target.sort();
                target.dedup();
                // Part the channels that left the list, then join the new ones.
                wanted.retain(|c| target.contains(c));
                let fresh: Vec<String> =
                    target.into_iter().filter(|c| !wanted.contains(c)).collect();
                for batch in fresh.chunks(cfg.joins_per_window.max(1)) {
                    wanted.extend(batch.iter().cloned());
                    if let Err(e) = client.set_wanted_channels(wanted.clone()) {
                        warn!(error = %e, "invalid channel login in the list");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(cfg.join_window) => {}
                        _ = stop.cancelled() => return,
                    }
                }
                if let Err(e) = client.set_wanted_channels(wanted.clone()) {
                    warn!(error = %e, "invalid channel login in the list");
                }
                let Some(h) = &cfg.helix else { return };
                tokio::select! {
                    _ = tokio::time::sleep(h.refresh) => {}
                    _ = stop.cancelled() => return,
                }
            }
        })
    };
    info!(channels = cfg.channels.len(), "reading Twitch chat");
    let mut report = IngestReport::default();
    let mut chunk: Vec<ChatEvent> = Vec::new();
    let mut untimed = spamscope_chat::twitch::UntimedIds::default();
    loop {
        // Wait for a line, then take every line already received (up to
        // LIVE_CHUNK) without waiting: one quiet channel's line goes out at
        // once, and under load the chunk grows while the previous one is
        // being acknowledged.
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = incoming.recv() => match m { Some(m) => m, None => break },
        };
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            let raw = msg.source().as_raw_irc();
            match parse_line(&raw) {
                Ok(Some(mut ev)) => {
                    untimed.apply(&mut ev);
                    chunk.push(ev);
                }
                Ok(None) => {}
                Err(e) => {
                    let reason = format!("unparsable IRC line: {e}");
                    if let Err(e) = bus
                        .dead_letter("ingest", "twitch", &reason, Bytes::from(raw))
                        .await
                    {
                        warn!(error = %e, "dead letter failed");
                    }
                }
            }
            if chunk.len() < LIVE_CHUNK {
                next = incoming.try_recv().ok();
            }
        }
        if chunk.is_empty() {
            continue;
        }
        // Events of different channels are in flight together, each
        // channel's in order; one event per message, so two ingest replicas
        // of the same channels do not double an event.
        let part = crate::publish_events(
            bus,
            &chunk,
            shards,
            Speed::Max,
            PublishOptions { max_batch: 1 },
            shutdown,
        )
        .await?;
        report.merge(&part);
        chunk.clear();
        if part.interrupted {
            break;
        }
    }
    joiner.abort();
    Ok(report)
}

/// Live events published together at most, while the previous chunk's
/// acks are awaited.
const LIVE_CHUNK: usize = 4096;

fn normalize_login(c: &str) -> String {
    c.trim().trim_start_matches('#').to_lowercase()
}

/// Publishes one event and waits for its ack, retrying (same message id)
/// until it lands or `shutdown`.
pub async fn publish_one(
    bus: &Bus,
    ev: &ChatEvent,
    shards: u32,
    shutdown: &CancellationToken,
    report: &mut IngestReport,
) -> Result<(), IngestError> {
    let shard = shard_of(&ev.stream_key(), shards);
    let subject = subjects::chat(shard, ev.platform().key(), &ev.stream_id);
    let headers = crate::chat_headers(ev, shard, 1);
    let payload = Bytes::from(ev.encode_to_vec());
    let id = chat_msg_id(ev);
    let mut backoff =
        spamscope_runtime::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match bus
            .publish(subject.clone(), &id, headers.clone(), payload.clone())
            .await
        {
            Ok(fresh) => {
                report.published += 1;
                spamscope_telemetry::metrics()
                    .events_out
                    .add(1, &spamscope_telemetry::service(crate::SERVICE));
                report.duplicates += u64::from(!fresh);
                return Ok(());
            }
            Err(e) => {
                warn!(error = %e, "publish failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shutdown.cancelled() => { report.interrupted = true; return Ok(()); }
                }
            }
        }
    }
}

static PLAIN_SERVER: OnceLock<String> = OnceLock::new();

type Incoming = futures::stream::Fuse<
    Pin<
        Box<
            dyn Stream<Item = Result<IRCMessage, Either<std::io::Error, IRCParseError>>>
                + Send
                + Sync,
        >,
    >,
>;
type Outgoing = Pin<Box<dyn futures::Sink<IRCMessage, Error = std::io::Error> + Send + Sync>>;

/// IRC over plain TCP to the address given with `--twitch-server`.
pub struct PlainTransport {
    incoming: Incoming,
    outgoing: Outgoing,
}

impl std::fmt::Debug for PlainTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlainTransport")
    }
}

#[async_trait::async_trait]
impl Transport for PlainTransport {
    type ConnectError = std::io::Error;
    type IncomingError = std::io::Error;
    type OutgoingError = std::io::Error;
    type Incoming = Incoming;
    type Outgoing = Outgoing;

    async fn new() -> Result<Self, Self::ConnectError> {
        let addr = PLAIN_SERVER
            .get()
            .ok_or_else(|| std::io::Error::other("no plain IRC server address set"))?;
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (r, w) = stream.into_split();
        let lines = FramedRead::new(r, LinesCodec::new_with_max_length(64 * 1024));
        let incoming: Pin<Box<dyn Stream<Item = _> + Send + Sync>> =
            Box::pin(lines.map(|l| match l {
                Ok(line) => IRCMessage::parse(line.trim_end_matches('\r')).map_err(Either::Right),
                Err(e) => Err(Either::Left(std::io::Error::other(e))),
            }));
        let sink = SinkExt::<String>::sink_map_err(
            FramedWrite::new(w, LinesCodec::new()),
            std::io::Error::other,
        )
        .with(|m: IRCMessage| async move { Ok::<String, std::io::Error>(m.as_raw_irc() + "\r") });
        Ok(PlainTransport {
            incoming: incoming.fuse(),
            outgoing: Box::pin(sink),
        })
    }

    fn split(self) -> (Self::Incoming, Self::Outgoing) {
        (self.incoming, self.outgoing)
    }
}
