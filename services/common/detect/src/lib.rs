//! The spamscope detection core. Pure: chat events (and, for quiet live
//! streams, a clock) in, outputs out; no tokio, no IO.
//!
//! Parts:
//! - [`params`]: [`DetectorParams`] with every default in one place,
//!   layered defaults → channel → stream, validated.
//! - [`clusters`]: groups of similar messages (exact hash, then MinHash LSH,
//!   then a word more or less) and their promotion to spam events.
//! - [`classes`]: what a spam event is (crowd reaction, copypasta, bot
//!   wave, link spam, flood) and why.
//! - [`norms`]: what is normal in a channel right now (shares of walls and
//!   repeats), which weighs the evidence.
//! - [`user`]: per-user state, evidence, role weights and suspicion.
//! - [`stream`]: [`StreamDetector`], the detector of one stream.
//! - [`snapshot`]: a stream detector to versioned protobuf bytes and back.
//! - [`score`]: the message spam score model (train, load, score).
//! - [`eval`]: moderation and labelled-comment evaluation.
//! - [`json`]: outputs as JSON objects (the CLI's `--json` lines).
//! - [`text`]: what a text says by itself (normal form, key, hashes,
//!   links), worked out once per distinct text.
//! - [`stable`]: the text hash and evidence rounding every output relies
//!   on being the same in every process.
//! - [`Detector`]: one detector instance per stream, created on first event
//!   and dropped when the stream ends.

pub mod classes;
pub mod clusters;
pub mod eval;
mod idle;
pub mod json;
pub mod norms;
pub mod params;
pub mod score;
pub mod snapshot;
pub mod stable;
pub mod stream;
pub mod text;
pub mod user;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use params::{CompiledParams, DetectorParams, ParamsError};
pub use score::ScoreModel;
use serde_json::Value;
use spamscope_proto::StreamKey;
use spamscope_proto::v1::{ChatEvent, DetectorOutput, Platform, chat_event::Kind};
pub use stream::StreamDetector;

/// A stream whose event time is at most this far behind the wall clock is
/// live: [`Detector::advance_live`] moves its clock when it is quiet.
pub const LIVE_WINDOW_MS: i64 = 10 * 60_000;
/// How far behind the wall clock [`Detector::advance_live`] leaves a live
/// stream's clock: chat delayed by ingest and the bus up to this long still
/// counts before the ticks pass it.
pub const LIVE_LATENESS_MS: i64 = 5_000;

/// Validates a stack of layers as a stream would compile it (values and
/// patterns).
fn check(layers: &[&Value]) -> Result<(), ParamsError> {
    CompiledParams::new(DetectorParams::layered(layers)?).map(|_| ())
}

/// Every stream's detector, keyed by stream key (`<platform>.<id>`), with
/// params layered: built-in defaults → the process's own layer (`--params`)
/// → the cluster layer (set at runtime) → channel → stream. Every layer is
/// validated on write against the layers under it.
#[derive(Debug)]
pub struct Detector {
    streams: rustc_hash::FxHashMap<String, Slot>,
    /// The process's layer (`--params`).
    defaults: Value,
    /// The cluster-wide layer set at runtime (the stored "" scope).
    cluster: Value,
    channel_params: HashMap<String, Value>,
    stream_params: HashMap<String, Value>,
    compiled: HashMap<String, Arc<CompiledParams>>,
    model: Arc<ScoreModel>,
    emit_scores: bool,
    /// Counters of streams that ended, kept for summaries.
    ended: BTreeMap<String, stream::StreamCounters>,
    /// Streams that ended since [`Detector::take_changes`].
    removed: Vec<String>,
    /// The wall clock of the caller ([`Detector::set_wall_clock`]): when
    /// each stream was last handled, for [`Detector::evictable`].
    wall_ms: i64,
    key_buf: String,
}

/// A held stream and what the owner's checkpoints need to know of it.
#[derive(Debug)]
struct Slot {
    d: StreamDetector,
    /// Changed since the last [`Detector::take_changes`].
    dirty: bool,
    /// [`Detector::wall_ms`] when it last handled an event.
    touched_ms: i64,
}

/// What changed since the last [`Detector::take_changes`]: the snapshots
/// of the streams that changed, the streams that ended, and the held
/// streams that need the clock (live, with users or groups to age).
#[derive(Debug, Default)]
pub struct Changes {
    pub changed: Vec<(String, spamscope_proto::v1::DetectorSnapshot)>,
    pub removed: Vec<String>,
    pub ticking: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }
}

impl Detector {
    pub fn new(model: Arc<ScoreModel>) -> Self {
        Self {
            streams: rustc_hash::FxHashMap::default(),
            defaults: Value::Null,
            cluster: Value::Null,
            channel_params: HashMap::new(),
            stream_params: HashMap::new(),
            compiled: HashMap::new(),
            model,
            emit_scores: false,
            ended: BTreeMap::new(),
            removed: Vec::new(),
            wall_ms: 0,
            key_buf: String::new(),
        }
    }

    pub fn with_scores(mut self, on: bool) -> Self {
        self.emit_scores = on;
        self
    }

    /// The process's overrides of the built-in defaults for every stream
    /// (a JSON object of [`DetectorParams`] keys; `--params`).
    pub fn set_default_params(
        &mut self,
        layer: Value,
        out: &mut Vec<DetectorOutput>,
    ) -> Result<(), ParamsError> {
        check(&[&layer, &self.cluster])?;
        self.defaults = layer;
        self.refresh(|_| true, out)
    }

    /// The cluster-wide layer set at runtime, over the process's own.
    pub fn set_cluster_params(
        &mut self,
        layer: Value,
        out: &mut Vec<DetectorOutput>,
    ) -> Result<(), ParamsError> {
        check(&[&self.defaults, &layer])?;
        self.cluster = layer;
        self.refresh(|_| true, out)
    }

    /// Overrides for one channel (`<platform>.<channel id or login>`).
    pub fn set_channel_params(
        &mut self,
        channel: &str,
        layer: Value,
        out: &mut Vec<DetectorOutput>,
    ) -> Result<(), ParamsError> {
        check(&[&self.defaults, &self.cluster, &layer])?;
        self.channel_params.insert(channel.to_owned(), layer);
        let channel = channel.to_owned();
        self.refresh(|d| channel_key(d) == channel, out)
    }

    /// Overrides for one stream (`<platform>.<stream id>`).
    pub fn set_stream_params(
        &mut self,
        stream: &str,
        layer: Value,
        out: &mut Vec<DetectorOutput>,
    ) -> Result<(), ParamsError> {
        check(&[&self.defaults, &self.cluster, &layer])?;
        self.stream_params.insert(stream.to_owned(), layer);
        let stream = stream.to_owned();
        self.refresh(|d| stream_key(d) == stream, out)
    }

    /// The compiled params of a stream. Streams without an override of
    /// their own or of their channel share one compiled copy of the
    /// defaults: compiling (a JSON round trip and two regex sets) costs
    /// about 0.1 ms, too much to pay for each new stream when a thousand
    /// start at once (it stalled a replica's runtime for 0.1–0.2 s), and a
    /// copy per stream ever seen would only grow.
    ///
    /// Each layer was validated with the layers under it when it was set; a
    /// channel layer and a stream layer that are valid alone but not
    /// together (a YouTube video and its channel) give the stream the
    /// process and cluster layers only, never the built-in defaults.
    fn params_for(
        &mut self,
        platform: Platform,
        stream_id: &str,
        channel: &str,
    ) -> Arc<CompiledParams> {
        match self.layered_params(platform, stream_id, channel) {
            Ok(p) => p,
            Err(_) => match DetectorParams::layered(&[&self.defaults, &self.cluster])
                .and_then(CompiledParams::new)
            {
                Ok(p) => p,
                Err(_) => CompiledParams::defaults(),
            },
        }
    }

    fn layered_params(
        &mut self,
        platform: Platform,
        stream_id: &str,
        channel: &str,
    ) -> Result<Arc<CompiledParams>, ParamsError> {
        let skey = StreamKey::format(platform, stream_id);
        let ckey = StreamKey::format(platform, channel);
        let stream = self.stream_params.get(&skey);
        let chan = self.channel_params.get(&ckey);
        // Keyed by the overrides that apply: "" for none.
        let cache_key = match (chan.is_some(), stream.is_some()) {
            (false, false) => String::new(),
            (true, false) => format!("c:{ckey}"),
            (false, true) => format!("s:{skey}"),
            (true, true) => format!("cs:{ckey}|{skey}"),
        };
        if let Some(p) = self.compiled.get(&cache_key) {
            return Ok(Arc::clone(p));
        }
        if cache_key.is_empty() && self.defaults.is_null() && self.cluster.is_null() {
            // No layer at all: the process's one compilation of the
            // built-in params (a new detector need not compile them again).
            let p = CompiledParams::defaults();
            self.compiled.insert(cache_key, Arc::clone(&p));
            return Ok(p);
        }
        let null = Value::Null;
        let layers = [
            &self.defaults,
            &self.cluster,
            chan.unwrap_or(&null),
            stream.unwrap_or(&null),
        ];
        let p = CompiledParams::new(DetectorParams::layered(&layers)?)?;
        self.compiled.insert(cache_key, Arc::clone(&p));
        Ok(p)
    }

    fn refresh(
        &mut self,
        affected: impl Fn(&StreamDetector) -> bool,
        out: &mut Vec<DetectorOutput>,
    ) -> Result<(), ParamsError> {
        self.compiled.clear();
        let mut keys: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, s)| affected(&s.d))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        for k in keys {
            let Some(s) = self.streams.get(&k) else {
                continue;
            };
            let d = &s.d;
            let (platform, sid, chan) = (d.platform(), d.stream_id().to_owned(), channel_of(d));
            let p = self.params_for(platform, &sid, &chan);
            if let Some(s) = self.streams.get_mut(&k) {
                s.d.set_params(p, out);
                s.dirty = true;
            }
        }
        Ok(())
    }

    /// `key_buf` := `ev`'s stream key. One reused buffer: no key
    /// allocation (and no formatting) per event.
    fn fill_key(&mut self, ev: &ChatEvent) {
        self.key_buf.clear();
        self.key_buf.push_str(ev.platform().key());
        self.key_buf.push('.');
        self.key_buf.push_str(&ev.stream_id);
    }

    /// Handles one event; a stream's detector is created on its first
    /// event and dropped after its `StreamEnded`.
    pub fn handle(&mut self, ev: &ChatEvent, out: &mut Vec<DetectorOutput>) {
        let admitted = self.handle_admitted(ev, out, |_| Ok::<(), std::convert::Infallible>(()));
        match admitted {
            Ok(()) => {}
            Err(never) => match never {},
        }
    }

    /// [`Detector::handle`] if `admit`, given the clock of `ev`'s stream
    /// (the latest time it reached; `None` for a stream this detector does
    /// not hold), accepts it; otherwise its refusal, and nothing changes.
    /// The stream is looked up once for both.
    pub fn handle_admitted<E>(
        &mut self,
        ev: &ChatEvent,
        out: &mut Vec<DetectorOutput>,
        admit: impl FnOnce(Option<i64>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.fill_key(ev);
        if matches!(ev.kind, Some(Kind::Command(_))) {
            // A moderator's command is for the policy engine beside the
            // detector: stamped by the gateway's clock, it must not move a
            // stream's event time (a replayed archive's is years back).
            let clock = self
                .streams
                .get(self.key_buf.as_str())
                .and_then(|s| s.d.watermark_ms());
            return admit(clock);
        }
        let ended = matches!(ev.kind, Some(Kind::StreamEnded(_)));
        match self.streams.get_mut(self.key_buf.as_str()) {
            Some(s) => {
                admit(s.d.watermark_ms())?;
                s.d.handle(ev, out);
                s.dirty = true;
                s.touched_ms = self.wall_ms;
            }
            None if ended => return admit(None),
            None => {
                admit(None)?;
                let chan = channel_name(ev.platform(), &ev.stream_id, &ev.channel_id);
                let params = self.params_for(ev.platform(), &ev.stream_id, &chan);
                let mut d = StreamDetector::new(
                    ev.platform(),
                    &ev.stream_id,
                    params,
                    Arc::clone(&self.model),
                )
                .with_scores(self.emit_scores);
                d.handle(ev, out);
                let slot = Slot {
                    d,
                    dirty: true,
                    touched_ms: self.wall_ms,
                };
                self.streams.insert(self.key_buf.clone(), slot);
            }
        }
        if ended && let Some(s) = self.streams.remove(self.key_buf.as_str()) {
            self.ended
                .insert(self.key_buf.clone(), s.d.counters().clone());
            self.removed.push(self.key_buf.clone());
        }
        Ok(())
    }

    /// Moves the clock of every live stream to `wall_ms` less
    /// [`LIVE_LATENESS_MS`], so a live chat that goes quiet still ends its
    /// spam events and forgets idle users. A stream is live when its event
    /// time is behind the wall clock by at most [`LIVE_WINDOW_MS`]; recorded
    /// chat replayed today (event times months or years back) stays on its
    /// own event time, so replays remain deterministic. Call it every
    /// second or so with the wall clock.
    pub fn advance_live(&mut self, wall_ms: i64, out: &mut Vec<DetectorOutput>) {
        let to = wall_ms.saturating_sub(LIVE_LATENESS_MS);
        let mut live: Vec<&String> = self
            .streams
            .iter()
            .filter(|(_, s)| {
                s.d.watermark_ms()
                    .is_some_and(|w| w < to && to.saturating_sub(w) <= LIVE_WINDOW_MS)
            })
            .map(|(k, _)| k)
            .collect();
        if live.is_empty() {
            return;
        }
        live.sort();
        let live: Vec<String> = live.into_iter().cloned().collect();
        for k in live {
            if let Some(s) = self.streams.get_mut(&k) {
                s.advance_to(to, out);
            }
        }
    }

    /// Advances every stream's clock to `now_ms`.
    pub fn advance_to(&mut self, now_ms: i64, out: &mut Vec<DetectorOutput>) {
        let mut keys: Vec<&String> = self.streams.keys().collect();
        keys.sort();
        let keys: Vec<String> = keys.into_iter().cloned().collect();
        for k in keys {
            if let Some(s) = self.streams.get_mut(&k) {
                s.advance_to(now_ms, out);
            }
        }
    }

    pub fn stream(&self, key: &str) -> Option<&StreamDetector> {
        self.streams.get(key).map(|s| &s.d)
    }

    pub fn streams(&self) -> impl Iterator<Item = &StreamDetector> {
        self.streams.values().map(|s| &s.d)
    }

    /// Whether the stream of `ev` is held in memory (no allocation).
    pub fn holds(&mut self, ev: &ChatEvent) -> bool {
        self.fill_key(ev);
        self.streams.contains_key(self.key_buf.as_str())
    }

    /// Streams held in memory.
    pub fn held(&self) -> usize {
        self.streams.len()
    }

    /// The caller's wall clock, recorded on the streams it handles next
    /// ([`Detector::evictable`] measures idleness with it).
    pub fn set_wall_clock(&mut self, wall_ms: i64) {
        self.wall_ms = wall_ms;
    }

    /// Forgets the counters of ended streams (a long-running owner that
    /// needs no summary).
    pub fn clear_ended(&mut self) {
        self.ended.clear();
    }

    /// Snapshots of the streams that changed since the last call, the
    /// streams that ended, and the held streams that need the clock; each
    /// stream counts as unchanged afterwards. If saving them fails, give
    /// them back with [`Detector::unsaved`].
    pub fn take_changes(&mut self) -> Changes {
        let live_from = self
            .wall_ms
            .saturating_sub(LIVE_WINDOW_MS + LIVE_LATENESS_MS);
        let mut c = Changes {
            removed: std::mem::take(&mut self.removed),
            ..Changes::default()
        };
        for (k, s) in &mut self.streams {
            if s.dirty {
                s.dirty = false;
                c.changed.push((k.clone(), s.d.snapshot()));
            }
            if s.needs_clock(live_from) {
                c.ticking.push(k.clone());
            }
        }
        c.changed.sort_by(|a, b| a.0.cmp(&b.0));
        c.ticking.sort();
        c.removed.sort();
        c.removed.dedup();
        // A stream that ended and started again is changed, not removed.
        c.removed
            .retain(|k| c.changed.binary_search_by(|(x, _)| x.cmp(k)).is_err());
        c
    }

    /// Changes [`Detector::take_changes`] gave that were not saved: they
    /// count as changed again.
    pub fn unsaved(&mut self, c: Changes) {
        for (k, _) in c.changed {
            if let Some(s) = self.streams.get_mut(&k) {
                s.dirty = true;
            }
        }
        self.removed.extend(c.removed);
    }

    /// Streams that can leave memory without changing any output: not
    /// handled for `idle_ms` (of the wall clock) and needing no clock
    /// (recorded chat, whose time moves only with its events, or a live
    /// stream with no user or group left to age). Beyond `max_held`
    /// streams, the least recently handled of those that need no clock go
    /// too, however recent. Their state must be saved (unchanged since the
    /// last [`Detector::take_changes`]) before [`Detector::evict`].
    pub fn evictable(&self, idle_ms: i64, max_held: usize) -> Vec<String> {
        let live_from = self
            .wall_ms
            .saturating_sub(LIVE_WINDOW_MS + LIVE_LATENESS_MS);
        let idle_before = self.wall_ms.saturating_sub(idle_ms);
        let mut quiet: Vec<(i64, &String)> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.needs_clock(live_from))
            .map(|(k, s)| (s.touched_ms, k))
            .collect();
        quiet.sort_unstable();
        let over = self.streams.len().saturating_sub(max_held);
        quiet
            .iter()
            .enumerate()
            .take_while(|(i, (touched, _))| *i < over || *touched <= idle_before)
            .map(|(_, (_, k))| (*k).clone())
            .collect()
    }

    /// Drops streams from memory (their state saved, see
    /// [`Detector::evictable`]); [`Detector::restore_stream`] brings one
    /// back when its chat arrives.
    pub fn evict(&mut self, keys: &[String]) {
        for k in keys {
            self.streams.remove(k);
        }
    }

    /// Puts back one stream saved by an owner (a snapshot of
    /// [`Detector::take_changes`]), unchanged.
    pub fn restore_stream(
        &mut self,
        snapshot: spamscope_proto::v1::DetectorSnapshot,
    ) -> Result<(), snapshot::SnapshotError> {
        self.restore(snapshot, false)
    }

    fn restore(
        &mut self,
        s: spamscope_proto::v1::DetectorSnapshot,
        dirty: bool,
    ) -> Result<(), snapshot::SnapshotError> {
        let platform = Platform::of(s.platform);
        let chan = channel_name(platform, &s.stream_id, &s.channel_id);
        let params = self.params_for(platform, &s.stream_id, &chan);
        let key = StreamKey::format(platform, &s.stream_id);
        let d = StreamDetector::restore(s, params, Arc::clone(&self.model))?
            .with_scores(self.emit_scores);
        let slot = Slot {
            d,
            dirty,
            touched_ms: self.wall_ms,
        };
        self.streams.insert(key, slot);
        Ok(())
    }

    /// Counters of the streams that ended.
    pub fn ended_streams(&self) -> &BTreeMap<String, stream::StreamCounters> {
        &self.ended
    }

    /// Snapshots of every live stream, in stream-key order.
    pub fn snapshot_streams(&self) -> Vec<spamscope_proto::v1::DetectorSnapshot> {
        let mut keys: Vec<&String> = self.streams.keys().collect();
        keys.sort();
        keys.into_iter()
            .filter_map(|k| self.streams.get(k))
            .map(|s| s.d.snapshot())
            .collect()
    }

    /// Puts back streams from [`Detector::snapshot_streams`], with the
    /// params this detector would give them.
    pub fn restore_streams(
        &mut self,
        snapshots: Vec<spamscope_proto::v1::DetectorSnapshot>,
    ) -> Result<(), snapshot::SnapshotError> {
        for s in snapshots {
            self.restore(s, true)?;
        }
        Ok(())
    }
}

/// Idempotency key of an output, derived from its content so that every
/// replica (and an in-process replay) computes the same key for the same
/// output: `<stream>/event/<id>/<version>`, `<stream>/decision/<user>/<at
/// ms>`, `<stream>/score/<message id>`, `<stream>/action/<at ms>/<action>/<message
/// or user>/<status>`, `<stream>/nuke-suggestion/<event id>`,
/// `<stream>/command/<command id>`.
pub fn output_key(o: &DetectorOutput) -> String {
    use spamscope_proto::v1::detector_output::Kind as O;
    let stream = |p: i32, id: &str| StreamKey::format(Platform::of(p), id);
    match &o.kind {
        Some(O::SpamEvent(e)) => format!(
            "{}/event/{}/{}",
            stream(e.platform, &e.stream_id),
            e.event_id,
            e.version
        ),
        Some(O::Decision(d)) => {
            let user = if d.user_id.is_empty() {
                &d.user_login
            } else {
                &d.user_id
            };
            // The flag's time too: a user forgotten (idle) and flagged
            // again is a new decision, not a duplicate of the first.
            format!(
                "{}/decision/{user}/{}",
                stream(d.platform, &d.stream_id),
                d.at_ms
            )
        }
        Some(O::MessageScore(s)) => format!(
            "{}/score/{}",
            stream(s.platform, &s.stream_id),
            s.message_id
        ),
        // Record ids restart with a replica: the key is the action itself.
        Some(O::Action(a)) => format!(
            "{}/action/{}/{}/{}/{}",
            stream(a.platform, &a.stream_id),
            a.at_ms,
            a.action,
            if a.message_id.is_empty() {
                &a.user_id
            } else {
                &a.message_id
            },
            a.status
        ),
        Some(O::NukeSuggestion(n)) => format!(
            "{}/nuke-suggestion/{}",
            stream(n.platform, &n.stream_id),
            n.spam_event_id
        ),
        Some(O::CommandResult(c)) => format!(
            "{}/command/{}",
            stream(c.platform, &c.stream_id),
            c.command_id
        ),
        None => String::new(),
    }
}

impl Slot {
    /// Whether the clock must keep moving this stream while it is quiet:
    /// live (its time at or after `live_from`) with users or groups that
    /// age.
    fn needs_clock(&self, live_from: i64) -> bool {
        self.d.watermark_ms().is_some_and(|w| w >= live_from)
            && (self.d.tracked_users() > 0 || self.d.tracked_groups() > 0)
    }

    /// Moves its clock; a tick that can change something makes it
    /// changed.
    fn advance_to(&mut self, now_ms: i64, out: &mut Vec<DetectorOutput>) {
        let before = self.d.watermark_ms();
        let ages = self.d.tracked_users() > 0 || self.d.tracked_groups() > 0;
        self.d.advance_to(now_ms, out);
        if ages || before.is_none() {
            self.dirty |= self.d.watermark_ms() != before;
        }
    }
}

fn stream_key(d: &StreamDetector) -> String {
    StreamKey::format(d.platform(), d.stream_id())
}

fn channel_of(d: &StreamDetector) -> String {
    channel_name(d.platform(), d.stream_id(), &d.channel_id)
}

/// The channel a stream belongs to, as channel params are keyed: the login
/// on Twitch (a channel is its one stream), the channel id on YouTube.
pub fn channel_name(platform: Platform, stream_id: &str, channel_id: &str) -> String {
    if platform == Platform::Twitch || channel_id.is_empty() {
        stream_id.to_owned()
    } else {
        channel_id.to_owned()
    }
}

fn channel_key(d: &StreamDetector) -> String {
    StreamKey::format(d.platform(), &channel_of(d))
}
