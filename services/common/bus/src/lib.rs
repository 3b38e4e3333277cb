//! spamscope on NATS JetStream.
//!
//! Parts:
//! - [`subjects`]: every subject and stream name, in one place.
//! - [`BusConfig`] / [`Bus`]: connect, create or update the CHAT-<shard>,
//!   SPAM and DLQ streams (retention by age and size, duplicate window), publish with
//!   `Nats-Msg-Id` so JetStream drops duplicates, and dead-letter payloads
//!   that do not decode.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage as Publish, stream};
use bytes::Bytes;

pub mod subjects {
    //! Subject and stream names. Nothing else in the code base spells them.

    /// Chat is one stream per shard, `CHAT-<shard>` over `chat.<shard>.>`:
    /// a shard's consumer reads its own stream unfiltered, which JetStream
    /// serves far cheaper than many filtered consumers on one stream.
    pub const CHAT_STREAM_PREFIX: &str = "CHAT-";
    pub const SPAM_STREAM: &str = "SPAM";
    pub const DLQ_STREAM: &str = "DLQ";

    /// Header holding why a message was dead-lettered.
    pub const REASON_HEADER: &str = "Spamscope-Reason";
    /// Header holding the subject a dead letter was first published on.
    pub const ORIGINAL_SUBJECT_HEADER: &str = "Spamscope-Original-Subject";
    /// Header holding the owner epoch of a detector output.
    pub const EPOCH_HEADER: &str = "Spamscope-Epoch";
    /// Header holding the replica that produced a detector output.
    pub const REPLICA_HEADER: &str = "Spamscope-Replica";
    /// Header of a chat message that holds a `ChatBatch` of this many
    /// events (one stream's, in order) instead of one `ChatEvent`.
    pub const BATCH_HEADER: &str = "Spamscope-Batch";

    /// Whether a chat message with these headers holds a batch.
    pub fn is_batch(headers: Option<&async_nats::HeaderMap>) -> bool {
        headers.is_some_and(|h| h.get(BATCH_HEADER).is_some())
    }

    /// A subject token: NATS forbids '.', '*', '>' and whitespace in one.
    pub fn token(s: &str) -> String {
        let t: String = s
            .chars()
            .map(|c| {
                if c == '.' || c == '*' || c == '>' || c.is_whitespace() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        if t.is_empty() { "_".to_owned() } else { t }
    }

    /// `chat.<shard>.<platform>.<id>`
    pub fn chat(shard: u32, platform: &str, id: &str) -> String {
        format!("chat.{shard}.{}.{}", token(platform), token(id))
    }

    /// Every chat subject (all shards).
    pub const CHAT_ALL: &str = "chat.>";

    /// Chat of one stream, any shard.
    pub fn chat_any_shard(platform: &str, id: &str) -> String {
        format!("chat.*.{}.{}", token(platform), token(id))
    }

    /// Every chat subject of one shard.
    pub fn chat_shard(shard: u32) -> String {
        format!("chat.{shard}.>")
    }

    /// The chat stream of one shard.
    pub fn chat_stream(shard: u32) -> String {
        format!("{CHAT_STREAM_PREFIX}{shard}")
    }

    /// `spam.<shard>.<platform>.<id>`
    pub fn spam(shard: u32, platform: &str, id: &str) -> String {
        format!("spam.{shard}.{}.{}", token(platform), token(id))
    }

    /// Every output subject (all shards).
    pub const SPAM_ALL: &str = "spam.>";
    /// Outputs of one stream, any shard.
    pub fn spam_stream(platform: &str, id: &str) -> String {
        format!("spam.*.{}.{}", token(platform), token(id))
    }

    /// Close/Open requests to one detector replica.
    pub fn ctl_detector(replica: &str) -> String {
        format!("ctl.detector.{}", token(replica))
    }

    /// Announces that detector params changed (the payload is the scope).
    pub const CTL_PARAMS: &str = "ctl.params";

    /// Announces that a channel's policy layer changed (the payload is the
    /// stream key).
    pub const CTL_POLICIES: &str = "ctl.policies";

    /// Dead letters from one origin (`chat`, `spam`, ...).
    pub fn dlq(origin: &str) -> String {
        format!("dlq.{}", token(origin))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The URL is not in the message: it can hold a password (callers
    /// name the flag and a redacted URL).
    #[error("cannot connect to NATS: {source}")]
    Connect { source: async_nats::ConnectError },
    #[error("JetStream stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    /// The server cannot reserve a stream's size limit: its store
    /// (`jetstream { max_file_store }`, by default three quarters of the
    /// disk free when it started) is smaller than the streams' limits
    /// together. Retrying does not help; smaller limits or a bigger store do.
    #[error(
        "JetStream cannot reserve {max_bytes} bytes for stream {stream}: the server's store \
         (jetstream max_file_store, by default 3/4 of the disk free when nats-server started) \
         is smaller than the streams' size limits together; lower --chat-max-bytes and \
         --spam-max-bytes (the dead-letter stream takes up to 1 GiB more) or give nats-server \
         a bigger store"
    )]
    NoRoom { stream: String, max_bytes: i64 },
    #[error("publish to {subject}: {reason}")]
    Publish { subject: String, reason: String },
    /// A credentials file that cannot be read (named, never its content).
    #[error("NATS {what}")]
    Auth { what: String },
}

/// Retention of the streams.
#[derive(Debug, Clone)]
pub struct BusConfig {
    pub url: String,
    /// Shards, one chat stream each.
    pub shards: u32,
    pub chat_max_age: Duration,
    /// For all chat streams together; each shard's gets its share.
    pub chat_max_bytes: i64,
    pub spam_max_age: Duration,
    pub spam_max_bytes: i64,
    /// Chat messages kept per stream (channel or video): past it a stream's
    /// oldest go first, so one busy channel cannot push every other
    /// channel's chat out of its shard.
    pub chat_max_per_stream: i64,
    /// Copies JetStream keeps of every stream (1 on a single server; 3 on
    /// a NATS cluster of three or more survives the loss of one node).
    pub replicas: usize,
    /// JetStream drops a message whose `Nats-Msg-Id` it saw within this.
    pub duplicate_window: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            shards: spamscope_routing::DEFAULT_SHARDS,
            chat_max_age: Duration::from_secs(24 * 3600),
            chat_max_bytes: 8 << 30,
            spam_max_age: Duration::from_secs(7 * 24 * 3600),
            spam_max_bytes: 8 << 30,
            chat_max_per_stream: 1_000_000,
            replicas: 1,
            duplicate_window: Duration::from_secs(10 * 60),
        }
    }
}

/// Who may change the limits of streams that already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamLimits {
    /// Set them to this role's config: the router's (one role owns them).
    Apply,
    /// Leave them as they are; report where they differ.
    Keep,
}

/// The fewest chat messages a stream may be held to.
pub const MIN_CHAT_MAX_PER_STREAM: i64 = 1000;

/// The shortest duplicate window accepted. Ingest resends a message whose
/// ack did not come (backoff up to 5 s, with the same message id), and a
/// resend after the window would be stored twice: two minutes cover the
/// retries of a publish through a NATS restart.
pub const MIN_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Where the retention limits of `have` differ from `want`, one line each.
fn limit_differences(name: &str, have: &stream::Config, want: &stream::Config) -> Vec<String> {
    let mut out = Vec::new();
    if have.max_age != want.max_age {
        out.push(format!(
            "{name}: max age {} s in JetStream, {} s here",
            have.max_age.as_secs(),
            want.max_age.as_secs()
        ));
    }
    if have.max_bytes != want.max_bytes {
        out.push(format!(
            "{name}: max bytes {} in JetStream, {} here",
            have.max_bytes, want.max_bytes
        ));
    }
    if have.num_replicas.max(1) != want.num_replicas.max(1) {
        out.push(format!(
            "{name}: {} replicas in JetStream, {} here",
            have.num_replicas, want.num_replicas
        ));
    }
    // (JetStream stores "no limit" as -1.)
    if have.max_messages_per_subject.max(0) != want.max_messages_per_subject.max(0) {
        out.push(format!(
            "{name}: max messages per stream {} in JetStream, {} here",
            have.max_messages_per_subject, want.max_messages_per_subject
        ));
    }
    if have.duplicate_window != want.duplicate_window {
        out.push(format!(
            "{name}: duplicate window {} s in JetStream, {} s here",
            have.duplicate_window.as_secs(),
            want.duplicate_window.as_secs()
        ));
    }
    out
}

/// The dead-letter stream's size limit: 1 GiB, or the SPAM stream's when
/// that is smaller (a small install gets a small dead-letter stream).
pub fn dlq_max_bytes(cfg: &BusConfig) -> i64 {
    cfg.spam_max_bytes.min(1 << 30)
}

/// What the streams of `cfg` reserve in the JetStream store together.
pub fn reserved_bytes(cfg: &BusConfig) -> i64 {
    let shards = i64::from(cfg.shards.max(1));
    (cfg.chat_max_bytes / shards).max(1 << 20) * shards + cfg.spam_max_bytes + dlq_max_bytes(cfg)
}

/// The smallest CHAT limit (over all shards) and SPAM limit accepted.
pub const MIN_CHAT_MAX_BYTES: i64 = 64 << 20;
pub const MIN_SPAM_MAX_BYTES: i64 = 16 << 20;

impl BusConfig {
    /// Scales the CHAT and SPAM size limits down together so that the
    /// streams reserve at most `budget` bytes ([`reserved_bytes`]), never
    /// below their minimums. `Ok(false)`: they fit as they were;
    /// `Ok(true)`: scaled; `Err(needed)`: even the minimums need `needed`.
    pub fn fit_into(&mut self, budget: i64) -> Result<bool, i64> {
        if reserved_bytes(self) <= budget {
            return Ok(false);
        }
        let mut smallest = self.clone();
        smallest.chat_max_bytes = MIN_CHAT_MAX_BYTES.min(self.chat_max_bytes);
        smallest.spam_max_bytes = MIN_SPAM_MAX_BYTES.min(self.spam_max_bytes);
        let needed = reserved_bytes(&smallest);
        if needed > budget {
            return Err(needed);
        }
        // Halve the gap to the answer: reserved_bytes is not linear (per-
        // shard floors, the dead-letter stream's cap), so search the scale.
        let (chat, spam) = (self.chat_max_bytes, self.spam_max_bytes);
        let scaled = |f: f64| -> BusConfig {
            let mut c = self.clone();
            c.chat_max_bytes = ((chat as f64 * f) as i64).max(smallest.chat_max_bytes);
            c.spam_max_bytes = ((spam as f64 * f) as i64).max(smallest.spam_max_bytes);
            c
        };
        let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
        for _ in 0..48 {
            let mid = (lo + hi) / 2.0;
            if reserved_bytes(&scaled(mid)) <= budget {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        *self = scaled(lo);
        Ok(true)
    }
}

/// JetStream publishes awaiting their ack at once, per process.
pub const MAX_ACKS_IN_FLIGHT: usize = 65_536;

/// A NATS connection with its JetStream context.
#[derive(Debug, Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    server_error: ServerError,
}

/// The last error a server reported to the client.
#[derive(Clone, Default)]
struct ServerError(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl ServerError {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerError")
    }
}

/// How to authenticate to NATS and which TLS certificate authority to
/// trust, beyond what the URL says (a user and password, or a token, in
/// the URL are used as well: `nats://user:password@host:4222`,
/// `nats://token@host:4222`, percent-encoded).
#[derive(Debug, Clone, Default)]
pub struct NatsAuth {
    /// A `.creds` file (user JWT and NKEY seed), as `nsc` writes them.
    pub creds_file: Option<std::path::PathBuf>,
    /// A file holding an NKEY seed (`SU...`).
    pub nkey_file: Option<std::path::PathBuf>,
    /// PEM certificate authority to trust; TLS is then required.
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate and its key, for servers that verify
    /// clients; TLS is then required.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// The credentials a server URL carries: (user, password) or a token.
fn url_credentials(server: &str) -> Option<(String, Option<String>)> {
    let addr: async_nats::ServerAddr = server.parse().ok()?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = addr.username().filter(|u| !u.is_empty())?;
    Some((decode(user), addr.password().map(decode)))
}

impl Bus {
    /// [`Bus::connect_with`] without other credentials than the URL's.
    pub async fn connect(url: &str, name: &str) -> Result<Self, BusError> {
        Self::connect_with(url, name, &NatsAuth::default()).await
    }

    /// Connects (retrying until a server answers) and reconnects forever
    /// after a disconnect. `url` is one server or a comma-separated list
    /// (the servers of a NATS cluster; the client also learns the others
    /// from the one it reaches). What the server says went wrong (a refused
    /// login) is kept: [`Bus::server_error`].
    pub async fn connect_with(url: &str, name: &str, auth: &NatsAuth) -> Result<Self, BusError> {
        let servers: Vec<&str> = url.split(',').map(str::trim).collect();
        let mut options = async_nats::ConnectOptions::new();
        if let Some(path) = &auth.creds_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| BusError::Auth {
                    what: format!("credentials file {}: {e}", path.display()),
                })?;
        }
        if let Some(path) = &auth.nkey_file {
            let seed = std::fs::read_to_string(path).map_err(|e| BusError::Auth {
                what: format!("NKEY seed file {}: {e}", path.display()),
            })?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(path) = &auth.ca_file {
            options = options
                .add_root_certificates(path.clone())
                .require_tls(true);
        }
        if let Some((cert, key)) = &auth.client_cert {
            for (what, f) in [("client certificate", cert), ("client key", key)] {
                std::fs::metadata(f).map_err(|e| BusError::Auth {
                    what: format!("{what} {}: {e}", f.display()),
                })?;
            }
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        match servers.iter().find_map(|s| url_credentials(s)) {
            Some((user, Some(password))) => options = options.user_and_password(user, password),
            Some((token, None)) => options = options.token(token),
            None => {}
        }
        let server_error = ServerError::default();
        let seen = server_error.clone();
        let client = options
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    let said = match event {
                        async_nats::Event::ServerError(e) => e.to_string(),
                        async_nats::Event::ClientError(e) => e.to_string(),
                        _ => return,
                    };
                    *seen.slot() = Some(said);
                }
            })
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            // A server that stops answering (frozen, partitioned) is left
            // after two missed pings, about 10 s, not the default 2 min.
            .ping_interval(Duration::from_secs(5))
            .connect(servers)
            .await
            .map_err(|source| BusError::Connect { source })?;
        // Every publish holds one of these until its ack arrives; a process
        // that runs out waits in `publish`. The default (5,000) is less than
        // a replica's shards may hold between settles (128 each).
        let js = jetstream::ContextBuilder::new()
            .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
            .build(client.clone());
        Ok(Self {
            client,
            js,
            server_error,
        })
    }

    /// The last error the server reported to this client, or the client
    /// met talking to it (for example "authorization violation"), if any.
    pub fn server_error(&self) -> Option<String> {
        self.server_error.slot().clone()
    }

    /// Creates the streams that are missing. Streams that exist get the
    /// limits of `cfg` with [`StreamLimits::Apply`]; with
    /// [`StreamLimits::Keep`] they keep theirs, and where those differ from
    /// `cfg` the differences are returned, one line each.
    pub async fn ensure_streams(
        &self,
        cfg: &BusConfig,
        limits: StreamLimits,
    ) -> Result<Vec<String>, BusError> {
        let shards = cfg.shards.max(1);
        let per_shard = (cfg.chat_max_bytes / i64::from(shards)).max(1 << 20);
        // (name, subject, max age, max bytes, max messages per subject; 0
        // is no limit)
        let mut streams: Vec<(String, String, Duration, i64, i64)> = (0..shards)
            .map(|s| {
                (
                    subjects::chat_stream(s),
                    subjects::chat_shard(s),
                    cfg.chat_max_age,
                    per_shard,
                    cfg.chat_max_per_stream,
                )
            })
            .collect();
        streams.push((
            subjects::SPAM_STREAM.into(),
            subjects::SPAM_ALL.into(),
            cfg.spam_max_age,
            cfg.spam_max_bytes,
            0,
        ));
        streams.push((
            subjects::DLQ_STREAM.into(),
            "dlq.>".into(),
            cfg.spam_max_age,
            dlq_max_bytes(cfg),
            0,
        ));
        let mut differences = Vec::new();
        for (name, subject, max_age, max_bytes, per_subject) in streams {
            // Each chat stream says how many shards the cluster has: a
            // second record of the count beside Redis's, written with the
            // stream itself (so read safely while another process is still
            // creating the others).
            let description = name
                .strip_prefix(subjects::CHAT_STREAM_PREFIX)
                .map(|k| format!("spamscope chat, shard {k} of {shards}"));
            let config = stream::Config {
                max_messages_per_subject: per_subject,
                num_replicas: cfg.replicas.max(1),
                name: name.clone(),
                description,
                subjects: vec![subject],
                max_age,
                max_bytes,
                duplicate_window: cfg.duplicate_window.min(max_age),
                storage: stream::StorageType::File,
                ..Default::default()
            };
            let err = |e: &dyn std::fmt::Display| BusError::Stream {
                stream: name.clone(),
                reason: e.to_string(),
            };
            let create_err = |e: jetstream::context::CreateStreamError| match e.kind() {
                jetstream::context::CreateStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STORAGE_RESOURCES_EXCEEDED =>
                {
                    BusError::NoRoom {
                        stream: name.clone(),
                        max_bytes,
                    }
                }
                _ => err(&e),
            };
            let mut existing = self
                .js
                .get_or_create_stream(config.clone())
                .await
                .map_err(create_err)?;
            let have = existing.info().await.map_err(|e| err(&e))?.config.clone();
            let differs = limit_differences(&name, &have, &config);
            match limits {
                // Streams of older releases get their description too.
                StreamLimits::Apply
                    if !differs.is_empty() || have.description != config.description =>
                {
                    self.js.update_stream(config).await.map_err(create_err)?;
                }
                StreamLimits::Apply => {}
                StreamLimits::Keep => differences.extend(differs),
            }
        }
        Ok(differences)
    }

    /// How many shards the chat streams in JetStream say the cluster has
    /// (the description [`Bus::ensure_streams`] gives each), or `None`
    /// before any exists or when they predate the description.
    pub async fn chat_shards(&self) -> Result<Option<u32>, BusError> {
        use futures::TryStreamExt;
        let err = |e: &dyn std::fmt::Display| BusError::Stream {
            stream: format!("{}*", subjects::CHAT_STREAM_PREFIX),
            reason: e.to_string(),
        };
        let names: Vec<String> = self
            .js
            .stream_names()
            .try_collect()
            .await
            .map_err(|e| err(&e))?;
        for name in names
            .iter()
            .filter(|n| n.starts_with(subjects::CHAT_STREAM_PREFIX))
        {
            let mut s = self.js.get_stream(name).await.map_err(|e| err(&e))?;
            let info = s.info().await.map_err(|e| err(&e))?;
            let shards = info
                .config
                .description
                .as_deref()
                .and_then(|d| d.rsplit_once(" of "))
                .and_then(|(_, n)| n.parse::<u32>().ok());
            if shards.is_some() {
                return Ok(shards);
            }
        }
        Ok(None)
    }

    /// Publishes to JetStream with a message id and waits for the ack.
    /// Returns false when JetStream reported the message as a duplicate.
    /// The messages of the durable pull consumer `name` of the SPAM stream
    /// (explicit acks, created where it is gone, delivering from `deliver`
    /// when new), pulled with an idle `heartbeat`: two missed ones end the
    /// stream with an error, and the caller opens it again.
    pub async fn spam_consumer(
        &self,
        name: &str,
        deliver: jetstream::consumer::DeliverPolicy,
        max_ack_pending: i64,
        heartbeat: Duration,
    ) -> Result<jetstream::consumer::pull::Stream, BusError> {
        let err = |e: &dyn std::fmt::Display| BusError::Stream {
            stream: subjects::SPAM_STREAM.to_owned(),
            reason: e.to_string(),
        };
        let stream = self
            .js
            .get_stream(subjects::SPAM_STREAM)
            .await
            .map_err(|e| err(&e))?;
        let consumer = stream
            .get_or_create_consumer(
                name,
                jetstream::consumer::pull::Config {
                    durable_name: Some(name.into()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    deliver_policy: deliver,
                    max_ack_pending,
                    ack_wait: Duration::from_secs(60),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| err(&e))?;
        consumer
            .stream()
            .heartbeat(heartbeat)
            .expires(heartbeat * 4)
            .messages()
            .await
            .map_err(|e| err(&e))
    }

    pub async fn publish(
        &self,
        subject: String,
        msg_id: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<bool, BusError> {
        let ack = self
            .js
            .send_publish(
                subject.clone(),
                Publish::build()
                    .payload(payload)
                    .headers(headers)
                    .message_id(msg_id),
            )
            .await
            .map_err(|e| BusError::Publish {
                subject: subject.clone(),
                reason: e.to_string(),
            })?
            .await
            .map_err(|e| BusError::Publish {
                subject,
                reason: e.to_string(),
            })?;
        Ok(!ack.duplicate)
    }

    /// Sends a payload that could not be used to `dlq.<origin>`, with the
    /// reason and the original subject in headers.
    pub async fn dead_letter(
        &self,
        origin: &str,
        original_subject: &str,
        reason: &str,
        payload: Bytes,
    ) -> Result<(), BusError> {
        let mut headers = HeaderMap::new();
        headers.insert(subjects::REASON_HEADER, one_line(reason).as_str());
        headers.insert(subjects::ORIGINAL_SUBJECT_HEADER, original_subject);
        let subject = subjects::dlq(origin);
        let ack = self
            .js
            .send_publish(
                subject.clone(),
                Publish::build().payload(payload).headers(headers),
            )
            .await
            .map_err(|e| BusError::Publish {
                subject: subject.clone(),
                reason: e.to_string(),
            })?;
        ack.await.map_err(|e| BusError::Publish {
            subject,
            reason: e.to_string(),
        })?;
        Ok(())
    }
}

/// Header values are one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::subjects::*;

    #[test]
    fn subjects_escape_dots_and_wildcards() {
        assert_eq!(chat(3, "twitch", "xqcow"), "chat.3.twitch.xqcow");
        assert_eq!(chat(3, "youtube", "a.b*c>d e"), "chat.3.youtube.a_b_c_d_e");
        assert_eq!(spam(0, "twitch", ""), "spam.0.twitch._");
        assert_eq!(chat_shard(12), "chat.12.>");
        assert_eq!(dlq("chat"), "dlq.chat");
        assert_eq!(ctl_detector("detector-0"), "ctl.detector.detector-0");
    }

    use super::{BusConfig, MIN_CHAT_MAX_BYTES, MIN_SPAM_MAX_BYTES, reserved_bytes};

    const GIB: i64 = 1 << 30;
    const MIB: i64 = 1 << 20;

    #[test]
    fn reserved_bytes_counts_every_stream() {
        // 64 chat streams of 128 MiB, SPAM 8 GiB, dead letters 1 GiB.
        let cfg = BusConfig::default();
        assert_eq!(cfg.shards, 64);
        assert_eq!(reserved_bytes(&cfg), 8 * GIB + 8 * GIB + GIB);
        // The dead-letter stream is never bigger than SPAM; each chat
        // stream holds at least 1 MiB.
        let small = BusConfig {
            shards: 256,
            chat_max_bytes: 64 * MIB,
            spam_max_bytes: 16 * MIB,
            ..BusConfig::default()
        };
        assert_eq!(reserved_bytes(&small), 256 * MIB + 16 * MIB + 16 * MIB);
    }

    #[test]
    fn streams_fit_a_budget_or_say_what_they_need() {
        let mut cfg = BusConfig::default();
        assert_eq!(cfg.fit_into(20 * GIB), Ok(false));
        assert_eq!(cfg.chat_max_bytes, 8 * GIB);

        // 10 GiB: both scaled by the same factor, as close under as can be.
        assert_eq!(cfg.fit_into(10 * GIB), Ok(true));
        let used = reserved_bytes(&cfg);
        assert!(used <= 10 * GIB && used > 10 * GIB - 16 * MIB, "{used}");
        assert!(
            (cfg.chat_max_bytes - cfg.spam_max_bytes).abs() <= 1,
            "{cfg:?}"
        );

        // Tiny: the floors hold, and what they need is said.
        let mut tiny = BusConfig::default();
        let needed = MIN_CHAT_MAX_BYTES + 2 * MIN_SPAM_MAX_BYTES;
        assert_eq!(tiny.fit_into(needed - 1), Err(needed));
        assert_eq!(tiny.fit_into(needed), Ok(true));
        assert_eq!(
            (tiny.chat_max_bytes, tiny.spam_max_bytes),
            (MIN_CHAT_MAX_BYTES, MIN_SPAM_MAX_BYTES)
        );
    }
}
