//! The gateway role: `spamscope.v1.Gateway` over gRPC and gRPC-web, gRPC
//! health checking and server reflection, and the web UI, on one port.
//!
//! Parts:
//! - [`Gateway`]: the service. Live views subscribe to NATS, history queries
//!   read the history store, params and cluster status read the state store.
//! - `live`: rolling per-stream rates for ListChannels.
//! - [`serve`]: one axum router for all of it on an already-bound listener,
//!   its connections bounded by `conn`.
//!
//! Every error is a `tonic::Status` with a message, made in one place
//! ([`GatewayError`]); requests, pages and queries are bounded.

pub mod backtest;
pub mod cli;
pub mod conn;
pub mod kept;
pub mod live;
pub mod moderate;
pub mod policies;
mod readback;
pub mod watch;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use prost::Message;
use spamscope_bus::{Bus, subjects};
use spamscope_detect::DetectorParams;
use spamscope_history::any::History;
use spamscope_proto::StreamKey;
use spamscope_proto::v1::gateway_server::{Gateway as GatewayApi, GatewayServer};
use spamscope_proto::v1::moderator_command::Op;
use spamscope_proto::v1::{
    AcceptSuggestionRequest, BacktestRequest, BacktestResponse, ChannelActionsRequest,
    ChannelActionsResponse, ChannelChatRequest, ChannelChatResponse, ChannelHistoryRequest,
    ChannelHistoryResponse, ChannelPolicy, ClusterStatusRequest, ClusterStatusResponse,
    CommandResult, DetectorOutput, GetChannelPolicyRequest, GetParamsRequest, ListChannelsRequest,
    ListChannelsResponse, NukeRequest, Params, RatePoint, SearchSpamRequest, SearchSpamResponse,
    SetChannelPolicyRequest, SetParamsRequest, ShardStatus, SpamEventDetailRequest,
    SpamEventDetailResponse, SpamMatch, UndoActionRequest, UndoNukeRequest, UserActivityRequest,
    UserActivityResponse, UserHistoryRequest, UserHistoryResponse, WatchChannelEvent,
    WatchChannelRequest, detector_output, watch_channel_event,
};
use spamscope_runtime::now_ms;
use spamscope_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::info;

pub use live::Live;

/// Largest request the gateway decodes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest page of any paged call.
pub const MAX_PAGE: u32 = 100;
/// Most chat events or event messages one ChannelChat or
/// SpamEventDetail returns.
pub const MAX_READBACK: u32 = 1000;
/// The params' JSON Schema (keys, types, ranges, meanings), sent with
/// every Params.
static SCHEMA: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| DetectorParams::schema().to_string());
/// Longest search text, in characters.
pub const MAX_QUERY_CHARS: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Exhausted(String),
}

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Invalid(m) => Status::invalid_argument(m),
            GatewayError::Unauthenticated(m) => Status::unauthenticated(m),
            GatewayError::PermissionDenied(m) => Status::permission_denied(m),
            GatewayError::Unavailable(m) => Status::unavailable(m),
            GatewayError::FailedPrecondition(m) => Status::failed_precondition(m),
            GatewayError::NotFound(m) => Status::not_found(m),
            GatewayError::Internal(m) => Status::internal(m),
            GatewayError::Exhausted(m) => Status::resource_exhausted(m),
        }
    }
}

impl From<spamscope_history::HistoryError> for GatewayError {
    fn from(e: spamscope_history::HistoryError) -> Self {
        match e {
            spamscope_history::HistoryError::BadCursor => {
                GatewayError::Invalid("page_token is not valid".into())
            }
            other => GatewayError::Internal(other.to_string()),
        }
    }
}

impl From<spamscope_store::StoreError> for GatewayError {
    fn from(e: spamscope_store::StoreError) -> Self {
        GatewayError::Unavailable(format!("state store: {e}"))
    }
}

#[derive(Clone)]
pub struct Gateway {
    pub bus: Bus,
    pub store: Store,
    pub history: History,
    pub live: Live,
    pub shards: u32,
    /// Token that SetParams requires; None refuses every SetParams. It
    /// acts on every channel too.
    pub admin_token: Option<String>,
    /// Moderators' tokens, each acting on its channels.
    pub moderators: Arc<Vec<moderate::ModeratorToken>>,
    /// Cancelled when the server stops: open WatchChannel streams end then,
    /// so a browser tab left open does not hold the shutdown.
    stopping: CancellationToken,
    /// Open WatchChannel streams and their limits.
    pub watchers: Arc<watch::Watchers>,
    pub watch_limits: watch::WatchLimits,
    /// Limits on connections, and what they turned away.
    pub conn_limits: conn::ConnLimits,
    pub conn_counters: Arc<conn::ConnCounters>,
    /// The policies `Backtest` runs when the request brings none.
    pub policies: Arc<spamscope_act::Policies>,
    /// One backtest at a time: each is a detector run over hours of chat.
    backtests: Arc<tokio::sync::Semaphore>,
}

impl Gateway {
    pub fn new(
        bus: Bus,
        store: Store,
        history: History,
        shards: u32,
        admin_token: Option<String>,
    ) -> Self {
        Self {
            bus,
            store,
            history,
            live: Live::default(),
            shards,
            admin_token,
            moderators: Arc::default(),
            stopping: CancellationToken::new(),
            watchers: Arc::default(),
            watch_limits: watch::WatchLimits::default(),
            conn_limits: conn::ConnLimits::default(),
            conn_counters: Arc::default(),
            policies: Arc::default(),
            backtests: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// With the policies a `Backtest` without its own runs (the
    /// detectors' file).
    #[must_use]
    pub fn with_policies(self, policies: spamscope_act::Policies) -> Self {
        Self {
            policies: Arc::new(policies),
            ..self
        }
    }

    /// With moderators' tokens.
    #[must_use]
    pub fn with_moderators(self, moderators: Vec<moderate::ModeratorToken>) -> Self {
        Self {
            moderators: Arc::new(moderators),
            ..self
        }
    }

    /// With other connection limits than the defaults.
    #[must_use]
    pub fn with_conn_limits(self, conn_limits: conn::ConnLimits) -> Self {
        Self {
            conn_limits,
            ..self
        }
    }

    /// With other WatchChannel limits than the defaults.
    #[must_use]
    pub fn with_watch_limits(self, watch_limits: watch::WatchLimits) -> Self {
        Self {
            watch_limits,
            ..self
        }
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

/// A stream key from a request (`<platform>.<id>`, Twitch logins in
/// lower case).
fn parse_stream(s: &str) -> Result<StreamKey, GatewayError> {
    StreamKey::parse(s).map_err(|e| GatewayError::Invalid(e.to_string()))
}

impl Gateway {
    /// Refuses a stream spamscope has never seen with NOT_FOUND: one is
    /// known when this gateway saw its chat or outputs, when JetStream
    /// still holds chat of it (within the CHAT retention), or when the
    /// history holds a spam event of it.
    async fn require_known(&self, key: &StreamKey) -> Result<(), GatewayError> {
        let name = key.to_string();
        if self.live.contains(&name) {
            return Ok(());
        }
        let shard = spamscope_routing::shard_of(&name, self.shards);
        let subject = subjects::chat(shard, key.platform.key(), &key.id);
        match self.bus.js.get_stream(subjects::chat_stream(shard)).await {
            Ok(stream) => match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(_) => return Ok(()),
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(GatewayError::Unavailable(format!("JetStream: {e}"))),
            },
            Err(e) => return Err(GatewayError::Unavailable(format!("JetStream: {e}"))),
        }
        let events = self
            .history
            .channel_events(name.clone(), 0, i64::MAX, 1, None)
            .await
            .map_err(GatewayError::from)?;
        if events.items.is_empty() {
            return Err(GatewayError::NotFound(format!(
                "no stream {name}: no chat or spam of it is known (stream keys are \
                 <platform>.<channel or video id>, e.g. twitch.xqcow)"
            )));
        }
        Ok(())
    }
}

fn page_size(n: u32, default: u32) -> Result<usize, GatewayError> {
    bounded("page_size", n, default, MAX_PAGE)
}

/// A count from a request: `default` for 0, refused above `max`.
fn bounded(name: &str, n: u32, default: u32, max: u32) -> Result<usize, GatewayError> {
    match n {
        0 => Ok(default as usize),
        n if n <= max => Ok(n as usize),
        n => Err(GatewayError::Invalid(format!("{name} {n} is above {max}"))),
    }
}

fn token(t: &str) -> Option<&str> {
    (!t.is_empty()).then_some(t)
}

/// One stored layer, or null where there is none (or it no longer parses).
fn stored_layer(
    all: &std::collections::BTreeMap<String, String>,
    scope: &str,
) -> serde_json::Value {
    all.get(scope)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The built-in defaults under the stored cluster layer, under the stored
/// layer of `channel` (the channel of a stream scope, where it is known and
/// another key), under `layer` (for `scope`; the cluster layer itself when
/// `scope` is ""). A detector's own `--params` layer sits between the
/// defaults and the cluster layer and is not known here.
fn stacked(
    all: &std::collections::BTreeMap<String, String>,
    scope: &str,
    channel: Option<&str>,
    layer: &serde_json::Value,
) -> Result<DetectorParams, spamscope_detect::ParamsError> {
    if scope.is_empty() {
        return DetectorParams::layered(&[layer]);
    }
    let cluster = stored_layer(all, "");
    let chan = channel
        .filter(|c| *c != scope)
        .map_or(serde_json::Value::Null, |c| stored_layer(all, c));
    DetectorParams::layered(&[&cluster, &chan, layer])
}

fn scope_name(scope: &str) -> &str {
    if scope.is_empty() {
        "the cluster"
    } else {
        scope
    }
}

/// A params scope from a request, normalised: "" (the cluster) or a
/// stream or channel key.
fn scope_of(scope: &str) -> Result<String, GatewayError> {
    if scope.is_empty() {
        Ok(String::new())
    } else {
        parse_stream(scope).map(|k| k.to_string())
    }
}

/// Compares without leaking where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Gateway {
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), GatewayError> {
        let Some(expected) = &self.admin_token else {
            return Err(GatewayError::PermissionDenied(
                "no admin token is configured on this gateway: params are read-only".into(),
            ));
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                GatewayError::Unauthenticated(
                    "SetParams needs `authorization: Bearer <admin token>`".into(),
                )
            })?;
        if same_secret(given.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(GatewayError::PermissionDenied(
                "admin token does not match".into(),
            ))
        }
    }

    async fn params_of(&self, scope: &str) -> Result<Params, GatewayError> {
        let all = self.store.all_params().await?;
        let own = all.get(scope).cloned().unwrap_or_else(|| "{}".into());
        let layer: serde_json::Value =
            serde_json::from_str(&own).unwrap_or(serde_json::Value::Null);
        let channel = self.live.channel_of(scope);
        let effective = stacked(&all, scope, channel.as_deref(), &layer).map_err(|e| {
            // Only layers stored before writes were checked against each
            // other, or a channel layer set before this gateway saw which
            // channel the video belongs to, can get here.
            let under = channel
                .as_deref()
                .map_or("the cluster layer".to_owned(), |c| {
                    format!("the cluster layer and the layer of its channel {c}")
                });
            GatewayError::FailedPrecondition(format!(
                "the stored params of {} do not combine with {under} ({e}); set them again",
                scope_name(scope)
            ))
        })?;
        let scopes = all
            .iter()
            .filter(|(_, json)| {
                serde_json::from_str::<serde_json::Value>(json)
                    .is_ok_and(|v| v.as_object().is_some_and(|o| !o.is_empty()))
            })
            .map(|(scope, _)| scope.clone())
            .collect();
        Ok(Params {
            scope: scope.to_owned(),
            params_json: own,
            effective_json: serde_json::to_string(&effective).unwrap_or_default(),
            schema_json: SCHEMA.clone(),
            scopes,
        })
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchChannelEvent, Status>> + Send>>;

#[tonic::async_trait]
impl GatewayApi for Gateway {
    async fn list_channels(
        &self,
        req: Request<ListChannelsRequest>,
    ) -> Result<Response<ListChannelsResponse>, Status> {
        let limit = match req.get_ref().limit {
            0 => 100,
            n if n <= 1000 => n as usize,
            n => return Err(GatewayError::Invalid(format!("limit {n} is above 1000")).into()),
        };
        Ok(Response::new(ListChannelsResponse {
            channels: self.live.summaries(limit),
        }))
    }

    type WatchChannelStream = WatchStream;

    async fn watch_channel(
        &self,
        req: Request<WatchChannelRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let key = parse_stream(&req.get_ref().stream)?;
        self.require_known(&key).await?;
        let client = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let slot = self.watchers.admit(client, &self.watch_limits)?;
        let (platform, id) = (key.platform.key(), key.id.as_str());
        let chat = self
            .bus
            .client
            .subscribe(subjects::chat_any_shard(platform, id))
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        let spam = self
            .bus
            .client
            .subscribe(subjects::spam_stream(platform, id))
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        // A chat message holds one event or a batch of one stream's.
        let chat = chat
            .map(|m| {
                let events =
                    spamscope_proto::decode_chat(subjects::is_batch(m.headers.as_ref()), m.payload)
                        .unwrap_or_default();
                futures::stream::iter(events.into_iter().map(|ev| {
                    Ok(WatchChannelEvent {
                        kind: Some(watch_channel_event::Kind::Chat(ev)),
                    })
                }))
            })
            .flatten();
        let spam = spam.filter_map(|m| async move {
            let svc = spamscope_telemetry::service("gateway");
            spamscope_telemetry::metrics().events_in.add(1, &svc);
            if let Some(parent) = spamscope_telemetry::extract(m.headers.as_ref()) {
                let cx = spamscope_telemetry::child_span(
                    "gateway.watch",
                    &parent,
                    vec![spamscope_telemetry::KeyValue::new(
                        "messaging.destination",
                        m.subject.to_string(),
                    )],
                );
                spamscope_telemetry::end(&cx);
            }
            let o = DetectorOutput::decode(m.payload).ok()?;
            spamscope_telemetry::metrics().events_out.add(1, &svc);
            let kind = match o.kind? {
                detector_output::Kind::SpamEvent(e) => watch_channel_event::Kind::SpamEvent(e),
                detector_output::Kind::Decision(d) => watch_channel_event::Kind::Decision(d),
                detector_output::Kind::MessageScore(s) => watch_channel_event::Kind::Score(s),
                detector_output::Kind::Action(a) => watch_channel_event::Kind::Action(a),
                detector_output::Kind::NukeSuggestion(n) => {
                    watch_channel_event::Kind::NukeSuggestion(n)
                }
                detector_output::Kind::CommandResult(c) => {
                    watch_channel_event::Kind::CommandResult(c)
                }
            };
            Some(Ok(WatchChannelEvent { kind: Some(kind) }))
        });
        let merged = futures::stream::select(chat, spam);
        Ok(Response::new(watch::bounded(
            merged,
            &self.watch_limits,
            slot,
            self.stopping.clone(),
        )))
    }

    async fn search_spam(
        &self,
        req: Request<SearchSpamRequest>,
    ) -> Result<Response<SearchSpamResponse>, Status> {
        let r = req.get_ref();
        let text = r.text.trim();
        if text.is_empty() {
            return Err(GatewayError::Invalid("text is empty".into()).into());
        }
        if text.chars().count() > MAX_QUERY_CHARS {
            return Err(GatewayError::Invalid(format!(
                "text is longer than {MAX_QUERY_CHARS} characters"
            ))
            .into());
        }
        let min = if r.min_similarity == 0.0 {
            0.4
        } else {
            r.min_similarity
        };
        if !(0.0..=1.0).contains(&min) {
            return Err(GatewayError::Invalid("min_similarity must be in [0, 1]".into()).into());
        }
        let size = page_size(r.page_size, 20)?;
        let page = self
            .history
            .search(
                text.to_owned(),
                min,
                size,
                token(&r.page_token).map(str::to_owned),
                20,
            )
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(SearchSpamResponse {
            matches: page
                .items
                .into_iter()
                .map(|m| SpamMatch {
                    fingerprint: m.fingerprint,
                    text: m.text,
                    similarity: m.similarity,
                    sightings: m.sightings,
                })
                .collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn channel_history(
        &self,
        req: Request<ChannelHistoryRequest>,
    ) -> Result<Response<ChannelHistoryResponse>, Status> {
        let r = req.into_inner();
        let key = parse_stream(&r.stream)?;
        self.require_known(&key).await?;
        let stream = key.to_string();
        let to = if r.to_ms == 0 { i64::MAX } else { r.to_ms };
        if r.from_ms > to {
            return Err(GatewayError::Invalid("from_ms is after to_ms".into()).into());
        }
        let size = page_size(r.page_size, 50)?;
        let h = &self.history;
        // A decisions page alone; else a page of events, with the first
        // page of decisions and the rate when it is the first.
        if !r.decisions_page_token.is_empty() {
            let d = h
                .channel_decisions(
                    stream,
                    r.from_ms,
                    to,
                    size,
                    Some(r.decisions_page_token.clone()),
                )
                .await
                .map_err(GatewayError::from)?;
            return Ok(Response::new(ChannelHistoryResponse {
                decisions: d.items,
                next_decisions_page_token: d.next.unwrap_or_default(),
                ..Default::default()
            }));
        }
        let events = h
            .channel_events(
                stream.clone(),
                r.from_ms,
                to,
                size,
                token(&r.page_token).map(str::to_owned),
            )
            .await
            .map_err(GatewayError::from)?;
        let (decisions, rate) = if r.page_token.is_empty() {
            let d = h
                .channel_decisions(stream.clone(), r.from_ms, to, size, None)
                .await
                .map_err(GatewayError::from)?;
            let rate = h
                .spam_rate(
                    stream.clone(),
                    r.from_ms,
                    to.min(now_ms().max(r.from_ms)).max(r.from_ms),
                )
                .await
                .map_err(GatewayError::from)?;
            (d, rate)
        } else {
            (
                spamscope_history::Page {
                    items: Vec::new(),
                    next: None,
                },
                Vec::new(),
            )
        };
        Ok(Response::new(ChannelHistoryResponse {
            spam_events: events.items,
            decisions: decisions.items,
            next_decisions_page_token: decisions.next.unwrap_or_default(),
            spam_rate: rate
                .into_iter()
                .map(|(minute_ms, spam_messages)| RatePoint {
                    minute_ms,
                    spam_messages,
                })
                .collect(),
            next_page_token: events.next.unwrap_or_default(),
        }))
    }

    async fn user_history(
        &self,
        req: Request<UserHistoryRequest>,
    ) -> Result<Response<UserHistoryResponse>, Status> {
        let r = req.into_inner();
        let user = r.user.trim().to_owned();
        if user.is_empty() || user.chars().count() > 200 {
            return Err(GatewayError::Invalid("user must be 1 to 200 characters".into()).into());
        }
        let size = page_size(r.page_size, 50)?;
        let h = &self.history;
        // An actions page alone; else a page of decisions, with the first
        // page of actions when it is the first.
        let actions_token = token(&r.actions_page_token).map(str::to_owned);
        if actions_token.is_some() || r.page_token.is_empty() {
            let actions = h
                .user_actions(user.clone(), size, actions_token.clone())
                .await
                .map_err(GatewayError::from)?;
            if actions_token.is_some() {
                return Ok(Response::new(UserHistoryResponse {
                    actions: actions.items,
                    next_actions_page_token: actions.next.unwrap_or_default(),
                    ..Default::default()
                }));
            }
            let page = h
                .user_decisions(user, size, None)
                .await
                .map_err(GatewayError::from)?;
            return Ok(Response::new(UserHistoryResponse {
                decisions: page.items,
                next_page_token: page.next.unwrap_or_default(),
                actions: actions.items,
                next_actions_page_token: actions.next.unwrap_or_default(),
            }));
        }
        let page = h
            .user_decisions(user, size, token(&r.page_token).map(str::to_owned))
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(UserHistoryResponse {
            decisions: page.items,
            next_page_token: page.next.unwrap_or_default(),
            ..Default::default()
        }))
    }

    async fn nuke(&self, req: Request<NukeRequest>) -> Result<Response<CommandResult>, Status> {
        let (key, op) = moderate::check_nuke(req.get_ref())?;
        let by = self.authorize_channel(&req, &key.to_string())?;
        Ok(Response::new(self.command(&key, by, op).await?))
    }

    async fn undo_nuke(
        &self,
        req: Request<UndoNukeRequest>,
    ) -> Result<Response<CommandResult>, Status> {
        let (stream, id) = (req.get_ref().stream.clone(), req.get_ref().nuke_id);
        let op = |nuke_id| Op::Undo(spamscope_proto::v1::UndoNuke { nuke_id });
        let named = ("nuke_id", "the nuke to undo");
        Ok(Response::new(
            self.command_on(&req, &stream, id, named, op).await?,
        ))
    }

    async fn accept_suggestion(
        &self,
        req: Request<AcceptSuggestionRequest>,
    ) -> Result<Response<CommandResult>, Status> {
        let (stream, id) = (req.get_ref().stream.clone(), req.get_ref().record_id);
        let op = |record_id| Op::Accept(spamscope_proto::v1::AcceptSuggestion { record_id });
        let named = ("record_id", "the suggestion to accept");
        Ok(Response::new(
            self.command_on(&req, &stream, id, named, op).await?,
        ))
    }

    async fn undo_action(
        &self,
        req: Request<UndoActionRequest>,
    ) -> Result<Response<CommandResult>, Status> {
        let (stream, id) = (req.get_ref().stream.clone(), req.get_ref().record_id);
        let op = |record_id| Op::UndoAction(spamscope_proto::v1::UndoAction { record_id });
        let named = ("record_id", "the timeout or ban to undo");
        Ok(Response::new(
            self.command_on(&req, &stream, id, named, op).await?,
        ))
    }

    async fn channel_actions(
        &self,
        req: Request<ChannelActionsRequest>,
    ) -> Result<Response<ChannelActionsResponse>, Status> {
        let r = req.into_inner();
        let key = parse_stream(&r.stream)?;
        let limit = bounded("limit", r.limit, 100, 1000)?;
        if r.user.chars().count() > 100 {
            return Err(GatewayError::Invalid("user: at most 100 characters".into()).into());
        }
        self.require_known(&key).await?;
        Ok(Response::new(
            self.actions_of(
                &key,
                r.user.trim(),
                limit,
                token(&r.page_token).map(str::to_owned),
            )
            .await?,
        ))
    }

    async fn backtest(
        &self,
        req: Request<BacktestRequest>,
    ) -> Result<Response<BacktestResponse>, Status> {
        let key = parse_stream(&req.get_ref().stream)?;
        self.authorize_channel(&req, &key.to_string())?;
        self.require_known(&key).await?;
        Ok(Response::new(
            Gateway::backtest(self, &key, req.get_ref()).await?,
        ))
    }

    async fn get_channel_policy(
        &self,
        req: Request<GetChannelPolicyRequest>,
    ) -> Result<Response<ChannelPolicy>, Status> {
        let key = parse_stream(&req.get_ref().stream)?;
        Ok(Response::new(self.channel_policy(&key).await?))
    }

    async fn set_channel_policy(
        &self,
        req: Request<SetChannelPolicyRequest>,
    ) -> Result<Response<ChannelPolicy>, Status> {
        let key = parse_stream(&req.get_ref().stream)?;
        let by = self.authorize_channel(&req, &key.to_string())?;
        let set = Gateway::set_channel_policy(self, &key, &req.get_ref().policy_toml).await?;
        tracing::info!(stream = %key, by = %by, "channel policy set");
        Ok(Response::new(set))
    }

    async fn get_params(&self, req: Request<GetParamsRequest>) -> Result<Response<Params>, Status> {
        let scope = scope_of(&req.into_inner().scope)?;
        Ok(Response::new(self.params_of(&scope).await?))
    }

    async fn set_params(&self, req: Request<SetParamsRequest>) -> Result<Response<Params>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        let scope = scope_of(&r.scope)?;
        let layer: serde_json::Value = serde_json::from_str(&r.params_json)
            .map_err(|e| GatewayError::Invalid(format!("params_json is not JSON: {e}")))?;
        if !layer.is_object() {
            return Err(GatewayError::Invalid("params_json must be a JSON object".into()).into());
        }
        // Checked against the stack it will sit in: the cluster layer (and,
        // for a video, its channel's layer) under a channel or stream
        // layer; every stored layer over a new cluster layer; the stored
        // layers of a channel's known videos over a new channel layer.
        let all = self.store.all_params().await.map_err(GatewayError::from)?;
        let channel = self.live.channel_of(&scope);
        stacked(&all, &scope, channel.as_deref(), &layer)
            .and_then(spamscope_detect::params::CompiledParams::new)
            .map_err(|e| GatewayError::Invalid(e.to_string()))?;
        let above = |other: &str| {
            (!other.is_empty() && other != scope && all.contains_key(other))
                .then(|| stored_layer(&all, other))
        };
        if scope.is_empty() {
            for other in all.keys() {
                let Some(over) = above(other) else { continue };
                let chan = self
                    .live
                    .channel_of(other)
                    .map_or(serde_json::Value::Null, |c| stored_layer(&all, &c));
                DetectorParams::layered(&[&layer, &chan, &over]).map_err(|e| {
                    GatewayError::Invalid(format!("with the stored params of {other}: {e}"))
                })?;
            }
        } else {
            let cluster = stored_layer(&all, "");
            for video in self.live.streams_of(&scope) {
                let Some(over) = above(&video) else { continue };
                DetectorParams::layered(&[&cluster, &layer, &over]).map_err(|e| {
                    GatewayError::Invalid(format!(
                        "with the stored params of {video}, a video of this channel: {e}"
                    ))
                })?;
            }
        }
        self.store
            .set_params(&scope, &layer.to_string())
            .await
            .map_err(GatewayError::from)?;
        self.bus
            .client
            .publish(subjects::CTL_PARAMS, scope.clone().into())
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        info!(scope = %scope, "detector params changed");
        Ok(Response::new(self.params_of(&scope).await?))
    }

    async fn channel_chat(
        &self,
        req: Request<ChannelChatRequest>,
    ) -> Result<Response<ChannelChatResponse>, Status> {
        let r = req.into_inner();
        let key = parse_stream(&r.stream)?;
        let limit = bounded("limit", r.limit, 200, MAX_READBACK)?;
        let before = match r.page_token.as_str() {
            "" => None,
            t => Some(
                t.parse::<u64>()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| GatewayError::Invalid("page_token is not valid".into()))?,
            ),
        };
        self.require_known(&key).await?;
        Ok(Response::new(self.chat_page(&key, limit, before).await?))
    }

    async fn spam_event_detail(
        &self,
        req: Request<SpamEventDetailRequest>,
    ) -> Result<Response<SpamEventDetailResponse>, Status> {
        let r = req.into_inner();
        let key = parse_stream(&r.stream)?;
        let limit = bounded("limit", r.limit, 200, MAX_READBACK)?;
        if r.event_id == 0 {
            return Err(GatewayError::Invalid("event_id is required".into()).into());
        }
        self.require_known(&key).await?;
        Ok(Response::new(
            self.event_detail(&key, r.event_id, limit).await?,
        ))
    }

    async fn user_activity(
        &self,
        req: Request<UserActivityRequest>,
    ) -> Result<Response<UserActivityResponse>, Status> {
        let r = req.into_inner();
        let key = parse_stream(&r.stream)?;
        let user = r.user.trim();
        if user.is_empty() || user.chars().count() > 200 {
            return Err(GatewayError::Invalid("user must be 1 to 200 characters".into()).into());
        }
        let limit = bounded("limit", r.limit, 100, MAX_READBACK)?;
        self.require_known(&key).await?;
        Ok(Response::new(self.activity_of(&key, user, limit).await?))
    }

    async fn cluster_status(
        &self,
        _req: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let replicas = self
            .store
            .live_replicas()
            .await
            .map_err(GatewayError::from)?;
        let owners = self.store.owners().await.map_err(GatewayError::from)?;
        let progress = self.store.progress().await.map_err(GatewayError::from)?;
        let shards = (0..self.shards)
            .map(|s| {
                let o = owners.get(&s);
                let p = progress.get(&s).copied().unwrap_or_default();
                ShardStatus {
                    shard: s,
                    owner: o.map(|o| o.replica.clone()).unwrap_or_default(),
                    epoch: o.map_or(0, |o| o.epoch),
                    lag: p.pending,
                    last_sequence: p.last_sequence,
                }
            })
            .collect();
        Ok(Response::new(ClusterStatusResponse {
            shard_count: self.shards,
            replicas,
            shards,
        }))
    }
}

/// The content type of a gRPC or gRPC-web request, `None` for others.
fn grpc_content_type(req: &axum::extract::Request) -> Option<axum::http::HeaderValue> {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .filter(|v| v.as_bytes().starts_with(b"application/grpc"))
        .cloned()
}

/// The trailers-only answer to a call of a service or method that does not
/// exist: UNIMPLEMENTED, as a gRPC client expects (not an HTTP error, which
/// clients report as UNKNOWN).
fn grpc_unimplemented(
    content_type: axum::http::HeaderValue,
    path: &str,
) -> axum::response::Response {
    let message = format!("no such service or method: {path}");
    let mut r = axum::response::Response::new(axum::body::Body::empty());
    let h = r.headers_mut();
    h.insert(axum::http::header::CONTENT_TYPE, content_type);
    h.insert("grpc-status", axum::http::HeaderValue::from_static("12"));
    if let Ok(v) = axum::http::HeaderValue::from_str(&message.replace(['\r', '\n'], " ")) {
        h.insert("grpc-message", v);
    }
    r
}

/// Serves the gateway (gRPC, gRPC-web, health, reflection v1 and v1alpha),
/// `/healthz`, `/readyz` and `/metrics` (from `health`), and the web UI from
/// `ui_dir`, on `listener` until `shutdown`. A gRPC call to a service or
/// method that does not exist answers UNIMPLEMENTED, never the UI.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    ui_dir: Option<PathBuf>,
    health: spamscope_runtime::Health,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (conn_limits, conn_counters) = (gateway.conn_limits, Arc::clone(&gateway.conn_counters));
    let gateway = Gateway {
        stopping: shutdown.clone(),
        ..gateway
    };
    let mut follow = tokio::spawn(live::follow(
        gateway.bus.clone(),
        gateway.live.clone(),
        shutdown.clone(),
    ));
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<GatewayServer<Gateway>>()
        .await;
    // Reflection lists the API and health; v1alpha too, which grpcurl and
    // older clients ask first.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(spamscope_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(std::io::Error::other)?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(std::io::Error::other)?;
    let api = GatewayServer::new(gateway).max_decoding_message_size(MAX_REQUEST_BYTES);
    let grpc = tonic::service::Routes::new(api)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .into_axum_router()
        .layer(tonic_web::GrpcWebLayer::new())
        // After the gRPC-web layer, which refuses plain HTTP/1.1 requests.
        .merge(spamscope_runtime::health_router(health));
    let ui = ui_dir.map(|dir| {
        let index = dir.join("index.html");
        tower_http::services::ServeDir::new(dir)
            .fallback(tower_http::services::ServeFile::new(index))
    });
    let app = grpc.fallback(move |req: axum::extract::Request| {
        let ui = ui.clone();
        async move {
            use axum::response::IntoResponse as _;
            use tower::ServiceExt as _;
            if let Some(content_type) = grpc_content_type(&req) {
                return grpc_unimplemented(content_type, req.uri().path());
            }
            match ui {
                Some(ui) => match ui.oneshot(req).await {
                    Ok(r) => r.into_response(),
                    Err(never) => match never {},
                },
                None => (
                    axum::http::StatusCode::NOT_FOUND,
                    "the web UI is not built: run `make ui`\n",
                )
                    .into_response(),
            }
        }
    });
    let server = conn::serve(listener, app, conn_limits, conn_counters, shutdown.clone());
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => {
            follow.abort();
            r
        }
        // The channel list and spam rates come from this follower: without
        // it the API would answer with numbers that no longer move.
        joined = &mut follow => {
            let why = match joined {
                // Stopped with the server: let the server finish.
                Ok(Ok(())) if shutdown.is_cancelled() => return server.await,
                Ok(Ok(())) => "ended".to_owned(),
                Ok(Err(e)) => e,
                Err(e) => e.to_string(),
            };
            shutdown.cancel();
            Err(std::io::Error::other(format!("live channel follower stopped: {why}")))
        }
    }
}
