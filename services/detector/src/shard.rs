//! One owned shard: consume, detect, publish, checkpoint.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use spamscope_bus::subjects;
use spamscope_detect::{Detector, output_key};
use spamscope_proto::v1::{
    ChatEvent, DetectorOutput, DetectorSnapshot, Platform, ShardSnapshot, detector_output,
};
use spamscope_store::{Owner, Saved};
use spamscope_telemetry::{KeyValue, TraceContext, metrics};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::Ctx;

/// The `service` attribute of the detector's metrics.
const SERVICE: &str = "detector";
/// How often quiet live streams' clocks are moved (see
/// `Detector::advance_live`).
const LIVE_CLOCK_EVERY: Duration = Duration::from_secs(1);

/// Version of the shard checkpoint layout: 2 saves each stream apart
/// (`ShardSnapshot::ticking`); 1 (read, never written) held every stream.
const CHECKPOINT_VERSION: u32 = 2;

#[derive(Debug)]
pub enum ShardCmd {
    /// Flush, checkpoint, reply with the last sequence, stop.
    Close(oneshot::Sender<Result<u64, String>>),
    /// Stop now, no checkpoint (the shard has another owner).
    Stop,
    /// Apply these params overrides (scope → JSON object).
    Params(std::collections::BTreeMap<String, String>),
    /// Run these channel policies from the next event on.
    Policies(spamscope_act::Policies),
}

struct State {
    detector: Detector,
    /// The channel policies beside the detector, when configured. Their
    /// state (nukes, strikes, suggestions) is in the checkpoint; the recent
    /// messages are read again from the chat when the shard opens.
    engine: Option<spamscope_act::Engine>,
    last_seq: u64,
    /// Of the checkpoint loaded, then of the stream consumed.
    stream_created_ms: i64,
    pending: u64,
    since_checkpoint: u64,
    checkpointed_at: std::time::Instant,
    /// Streams held right after the last checkpoint (those that could not
    /// leave memory stay): a flood of new streams past it by a tenth
    /// checkpoints early, so the cap holds between checkpoints too.
    held_after_checkpoint: usize,
    acks: Vec<(String, PublishAckFuture)>,
}

pub(crate) async fn run(
    ctx: Arc<Ctx>,
    shard: u32,
    owner: Owner,
    mut cmds: mpsc::Receiver<ShardCmd>,
    done: CancellationToken,
) {
    let _done = done.drop_guard();
    let mut st = match load(&ctx, shard).await {
        Ok(st) => st,
        Err(e) => {
            error!(shard, error = %e, "cannot load checkpoint; shard not opened");
            return;
        }
    };
    let messages = async {
        let mut stream = ctx
            .bus
            .js
            .get_stream(subjects::chat_stream(shard))
            .await
            .map_err(|e| e.to_string())?;
        let info = stream.info().await.map_err(|e| e.to_string())?;
        let held = Held {
            created_ms: created_ms(info),
            first: info.state.first_sequence,
            last: info.state.last_sequence,
        };
        if let Resume::Gap { from, skipped, why } =
            resume(st.last_seq, st.stream_created_ms, &held)
        {
            let name = subjects::chat_stream(shard);
            error!(
                shard,
                stream = %name,
                checkpoint = st.last_seq,
                resume_at = from,
                skipped = skipped.map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
                "{why}: chat was lost before this shard read it; resuming at the first sequence the stream holds"
            );
            ctx.inc(&ctx.counters().chat_gaps, 1);
            ctx.inc(&ctx.counters().chat_skipped, skipped.unwrap_or(0));
            let attrs = shard_attrs(shard);
            metrics().chat_gaps.add(1, &attrs);
            metrics().chat_skipped.add(skipped.unwrap_or(0), &attrs);
            st.last_seq = from.saturating_sub(1);
        }
        st.stream_created_ms = held.created_ms;
        let deliver_policy = if st.last_seq == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: st.last_seq + 1,
            }
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        consumer.messages().await.map_err(|e| e.to_string())
    }
    .await;
    let mut messages = match messages {
        Ok(m) => m,
        Err(e) => {
            error!(shard, error = %e, "cannot consume shard");
            return;
        }
    };
    info!(
        shard,
        epoch = owner.epoch,
        after = st.last_seq,
        "consuming shard"
    );
    // Each shard's timer has its own phase, so the shards of a replica
    // (opened together) do not all snapshot at the same moment: encoding
    // every shard's state at once stalls every stream of the replica.
    let period = ctx.cfg.checkpoint_interval.max(Duration::from_millis(1));
    let phase = period.mul_f64(f64::from(shard % 64) / 64.0);
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period + phase, period);
    // Live streams' clocks follow the wall clock when they are quiet.
    let mut live = tokio::time::interval(LIVE_CLOCK_EVERY);
    live.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut out: Vec<DetectorOutput> = Vec::new();
    let mut seq_at_tick = st.last_seq;
    // The stream held chat past what was read at the last tick, and the
    // shard read nothing since.
    let mut behind_at_tick = false;
    loop {
        tokio::select! {
            biased;
            cmd = cmds.recv() => match cmd {
                Some(ShardCmd::Close(reply)) => {
                    let t0 = std::time::Instant::now();
                    let r = checkpoint(&ctx, shard, &owner, &mut st).await;
                    metrics().handover.record(
                        t0.elapsed().as_secs_f64(),
                        &[KeyValue::new("service", SERVICE), KeyValue::new("phase", "close")],
                    );
                    let _ = reply.send(r.map(|()| st.last_seq));
                    return;
                }
                Some(ShardCmd::Params(all)) => {
                    let mut caused = apply_params(&mut st.detector, &all, shard);
                    if let Some(engine) = st.engine.as_mut() {
                        policy_outputs(engine, &mut caused, 0, Vec::new());
                    }
                    if let Err(e) = publish(&ctx, shard, &owner, &caused, None, &mut st).await {
                        warn!(shard, error = %e, "publish failed; will retry from the checkpoint");
                        return;
                    }
                }
                Some(ShardCmd::Policies(p)) => {
                    if let Some(engine) = st.engine.as_mut() {
                        engine.set_policies(p);
                    }
                }
                Some(ShardCmd::Stop) | None => return,
            },
            msg = messages.next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        warn!(shard, error = %e, "consumer error; continuing");
                        // An ordered consumer recreates itself after the
                        // last sequence it delivered: on a stream created
                        // again that skips its first messages. The shard
                        // opens again instead, through the checkpoint check.
                        if matches!(consumer_check(&ctx, shard, st.stream_created_ms, st.last_seq).await, Check::Replaced) {
                            warn!(shard, "the chat stream is gone or was created again: opening the shard again");
                            return;
                        }
                        continue;
                    }
                    None => { warn!(shard, "consumer ended"); return; }
                };
                let seq = match msg.info() {
                    Ok(i) => { st.pending = i.pending; i.stream_sequence }
                    Err(e) => { warn!(shard, error = %e, "message without sequence"); continue; }
                };
                if seq <= st.last_seq {
                    continue;
                }
                let batch = subjects::is_batch(msg.headers.as_ref());
                match spamscope_proto::decode_chat(batch, msg.payload.clone()) {
                    Ok(events) => {
                        let trace = spamscope_telemetry::extract(msg.headers.as_ref()).map(|parent| {
                            spamscope_telemetry::child_span(
                                "detector.detect",
                                &parent,
                                vec![
                                    KeyValue::new("spamscope.stream", events.first().map(ChatEvent::stream_key).unwrap_or_default()),
                                    KeyValue::new("spamscope.events", events.len() as i64),
                                    KeyValue::new("spamscope.shard", i64::from(shard)),
                                    KeyValue::new("spamscope.replica", owner.replica.clone()),
                                ],
                            )
                        });
                        out.clear();
                        let wall = spamscope_runtime::now_ms();
                        st.detector.set_wall_clock(wall);
                        if let Err(e) = load_missing(&ctx, shard, &mut st.detector, &events).await {
                            // Handling its chat without its state would
                            // start the stream afresh: read it again later.
                            warn!(shard, error = %e, "cannot load saved stream state; the shard opens again from its checkpoint");
                            return;
                        }
                        let max_ahead = i64::try_from(ctx.cfg.max_ahead.as_millis()).unwrap_or(i64::MAX);
                        let max_behind = i64::try_from(ctx.cfg.max_behind.as_millis()).unwrap_or(i64::MAX);
                        let mut refused = Vec::new();
                        for ev in &events {
                            let before = out.len();
                            let admitted = spamscope_chat::admit::admit(ev, wall, max_ahead).and_then(|()| {
                                st.detector.handle_admitted(ev, &mut out, |clock| {
                                    spamscope_chat::admit::admit_behind(ev, clock, max_behind)
                                })
                            });
                            match admitted {
                                Err(why) => refused.push((ev, why)),
                                Ok(()) => {
                                    if let Some(engine) = st.engine.as_mut() {
                                        let mut acts = Vec::new();
                                        engine.on_chat(ev, &mut acts);
                                        policy_outputs(engine, &mut out, before, acts);
                                    }
                                }
                            }
                        }
                        let handled = (events.len() - refused.len()) as u64;
                        for (ev, why) in refused {
                            ctx.inc(&ctx.counters().dead_letters, 1);
                            metrics().dead_letters.add(1, &spamscope_telemetry::service(SERVICE));
                            let reason = format!("event {} of {} refused: {why}", ev.event_id, ev.stream_key());
                            debug!(shard, %reason, "chat event to the dead-letter subject");
                            let payload = bytes::Bytes::from(prost::Message::encode_to_vec(ev));
                            if let Err(e) = ctx.bus.dead_letter("chat", msg.subject.as_str(), &reason, payload).await {
                                warn!(shard, error = %e, "dead letter failed");
                            }
                        }
                        ctx.inc(&ctx.counters().events, handled);
                        st.since_checkpoint += events.len() as u64;
                        metrics().events_in.add(handled, &spamscope_telemetry::service(SERVICE));
                        let published = publish(&ctx, shard, &owner, &out, trace.as_ref(), &mut st).await;
                        if let Some(cx) = &trace {
                            spamscope_telemetry::end(cx);
                        }
                        if let Err(e) = published {
                            warn!(shard, error = %e, "publish failed; will retry from the checkpoint");
                            return;
                        }
                    }
                    Err(e) => {
                        ctx.inc(&ctx.counters().dead_letters, 1);
                        st.since_checkpoint += 1;
                        metrics().dead_letters.add(1, &spamscope_telemetry::service(SERVICE));
                        let what = if batch { "spamscope.v1.ChatBatch" } else { "spamscope.v1.ChatEvent" };
                        let reason = format!("not a {what}: {e}");
                        if let Err(e) = ctx.bus.dead_letter("chat", msg.subject.as_str(), &reason, msg.payload.clone()).await {
                            warn!(shard, error = %e, "dead letter failed");
                        }
                    }
                }
                st.last_seq = seq;
                let held_limit = st.held_after_checkpoint.max(ctx.cfg.max_streams);
                let flooded = st.detector.held() > held_limit + held_limit / 10;
                if (st.since_checkpoint >= ctx.cfg.checkpoint_every_events || flooded)
                    && checkpoint(&ctx, shard, &owner, &mut st).await.is_err()
                {
                    return;
                }
            }
            _ = live.tick() => {
                out.clear();
                st.detector.advance_live(spamscope_runtime::now_ms(), &mut out);
                if let Some(engine) = st.engine.as_mut() {
                    policy_outputs(engine, &mut out, 0, Vec::new());
                }
                if !out.is_empty() {
                    // The state moved: the next timer checkpoints it.
                    st.since_checkpoint += 1;
                    if let Err(e) = publish(&ctx, shard, &owner, &out, None, &mut st).await {
                        warn!(shard, error = %e, "publish failed; will retry from the checkpoint");
                        return;
                    }
                }
            }
            _ = timer.tick() => {
                // A shard that read nothing for a period checks that its
                // consumer still delivers: an ordered consumer on a stream
                // created again waits after the old stream's last sequence
                // and never says so, and one whose server paused (a NATS
                // node stopped for 10 s) can wait for good. Either way the
                // shard opens again from its checkpoint.
                let idle = st.last_seq == seq_at_tick;
                seq_at_tick = st.last_seq;
                if !idle {
                    behind_at_tick = false;
                } else {
                    match consumer_check(&ctx, shard, st.stream_created_ms, st.last_seq).await {
                        Check::Replaced => {
                            warn!(shard, "the chat stream is gone or was created again: opening the shard again");
                            return;
                        }
                        // Chat that was there a whole period ago is still
                        // not delivered.
                        Check::Behind(last) if behind_at_tick => {
                            warn!(
                                shard,
                                read = st.last_seq,
                                stream_last = last,
                                "the consumer delivered nothing for a period while the stream holds more chat: opening the shard again"
                            );
                            ctx.inc(&ctx.counters().consumer_restarts, 1);
                            metrics().consumer_restarts.add(
                                1,
                                &shard_attrs(shard),
                            );
                            return;
                        }
                        Check::Behind(_) => behind_at_tick = true,
                        Check::Fine => behind_at_tick = false,
                    }
                }
                let attrs = shard_attrs(shard);
                metrics().consumer_lag.record(st.pending, &attrs);
                metrics().checkpoint_age.record(st.checkpointed_at.elapsed().as_secs_f64(), &attrs);
                metrics().streams_held.record(st.detector.held() as u64, &attrs);
                st.detector.set_wall_clock(spamscope_runtime::now_ms());
                let evict = !st.detector.evictable(idle_ms(&ctx), ctx.cfg.max_streams).is_empty();
                if (st.since_checkpoint > 0 || evict) && checkpoint(&ctx, shard, &owner, &mut st).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Applies params overrides: "" is the cluster default layer; any other
/// scope (`<platform>.<channel>` or `<platform>.<stream>`) is applied at the
/// channel and the stream level.
fn apply_params(
    d: &mut Detector,
    all: &std::collections::BTreeMap<String, String>,
    shard: u32,
) -> Vec<DetectorOutput> {
    let mut out = Vec::new();
    for (scope, json) in all {
        let layer: serde_json::Value = match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => {
                warn!(shard, scope = %scope, error = %e, "stored params are not JSON; ignored");
                continue;
            }
        };
        // The cluster layer sits over this replica's own (`--params`).
        let r = if scope.is_empty() {
            d.set_cluster_params(layer, &mut out)
        } else {
            d.set_channel_params(scope, layer.clone(), &mut out)
                .and_then(|()| d.set_stream_params(scope, layer, &mut out))
        };
        if let Err(e) = r {
            warn!(shard, scope = %scope, error = %e, "params refused");
        }
    }
    // Users the new params catch are flagged now; their decisions are
    // keyed by content, so a replica replaying the shard later publishes
    // the same keys.
    out
}

async fn load(ctx: &Ctx, shard: u32) -> Result<State, String> {
    let mut detector = Detector::new(Arc::clone(&ctx.model)).with_scores(ctx.cfg.emit_scores);
    let mut ignore = Vec::new();
    detector
        .set_default_params(ctx.cfg.params.clone(), &mut ignore)
        .map_err(|e| e.to_string())?;
    let mut last_seq = 0;
    let mut stream_created_ms = 0;
    let mut saved_policies = None;
    if let Some(bytes) = ctx
        .store
        .load_checkpoint(shard)
        .await
        .map_err(|e| e.to_string())?
    {
        let snap = ShardSnapshot::decode(bytes.as_slice())
            .map_err(|e| format!("checkpoint does not decode: {e}"))?;
        if !(1..=CHECKPOINT_VERSION).contains(&snap.version) {
            return Err(format!(
                "checkpoint version {} (this build reads 1 to {CHECKPOINT_VERSION})",
                snap.version
            ));
        }
        // The streams the clock moves come now; the others when their chat
        // does (`load_missing`).
        let mut held = snap.streams;
        let saved = ctx
            .store
            .load_streams(shard, &snap.ticking)
            .await
            .map_err(|e| format!("cannot load the state of its live streams: {e}"))?;
        for (key, bytes) in snap.ticking.iter().zip(saved) {
            // State gone or damaged (the hash deleted by hand) must not
            // keep the shard closed for good: that stream starts afresh.
            match bytes.map(|b| DetectorSnapshot::decode(b.as_slice())) {
                Some(Ok(s)) => held.push(s),
                Some(Err(e)) => {
                    warn!(shard, stream = %key, error = %e, "saved stream state does not decode: the stream starts afresh");
                }
                None => {
                    warn!(shard, stream = %key, "the checkpoint names a stream whose state is missing: it starts afresh");
                }
            }
        }
        let streams = held.len();
        match detector.restore_streams(held) {
            Ok(()) => {}
            // A checkpoint from a release whose detector state differs
            // (an upgrade): its streams start afresh after the checkpoint's
            // sequence; nothing of the chat is replayed twice or skipped.
            Err(spamscope_detect::snapshot::SnapshotError::Version(v)) => {
                warn!(
                    shard,
                    streams,
                    snapshot_version = v,
                    "checkpoint holds detector state of another release: its streams start afresh"
                );
                detector = Detector::new(Arc::clone(&ctx.model)).with_scores(ctx.cfg.emit_scores);
                detector
                    .set_default_params(ctx.cfg.params.clone(), &mut ignore)
                    .map_err(|e| e.to_string())?;
            }
            Err(e) => return Err(e.to_string()),
        }
        if snap.version == 1 {
            // Restored streams count as changed: the first checkpoint of
            // this build saves each of them apart.
            info!(
                shard,
                streams,
                "checkpoint of the version 1 layout: its streams are saved apart from now on"
            );
        }
        last_seq = snap.last_sequence;
        stream_created_ms = snap.stream_created_ms;
        saved_policies = snap.policies;
        // State saved by a release that kept no write times is forgotten
        // counting from now.
        match ctx
            .store
            .stamp_saved_streams(shard, spamscope_runtime::now_ms())
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(
                shard,
                streams = n,
                "saved streams without a write time stamped now (--stream-forget-s counts from here)"
            ),
            Err(e) => {
                warn!(shard, error = %e, "cannot stamp saved streams; they are kept until stamped")
            }
        }
    }
    match ctx.store.all_params().await {
        Ok(all) => {
            // Restored users were evaluated under these params already.
            let _ = apply_params(&mut detector, &all, shard);
        }
        Err(e) => warn!(shard, error = %e, "cannot read params; using the defaults"),
    }
    let engine = crate::policies::open(ctx, shard, saved_policies.as_ref(), last_seq).await;
    Ok(State {
        detector,
        engine,
        last_seq,
        stream_created_ms,
        pending: 0,
        since_checkpoint: 0,
        checkpointed_at: std::time::Instant::now(),
        held_after_checkpoint: 0,
        acks: Vec::new(),
    })
}

/// Feeds the detector's outputs from `from` on to the policy engine (after
/// what it said of the chat event, `acts`), and appends what it suggests
/// and does to `out`.
fn policy_outputs(
    engine: &mut spamscope_act::Engine,
    out: &mut Vec<DetectorOutput>,
    from: usize,
    mut acts: Vec<spamscope_act::Output>,
) {
    for o in &out[from..] {
        engine.on_detector(o, &mut acts);
    }
    out.extend(
        acts.iter()
            .filter_map(spamscope_act::engine::to_detector_output),
    );
}

/// The attributes of every per-shard metric.
fn shard_attrs(shard: u32) -> [KeyValue; 2] {
    [
        KeyValue::new("service", SERVICE),
        KeyValue::new("shard", i64::from(shard)),
    ]
}

fn idle_ms(ctx: &Ctx) -> i64 {
    i64::try_from(ctx.cfg.stream_idle.as_millis()).unwrap_or(i64::MAX)
}

/// Loads the saved state of the streams of `events` this shard does not
/// hold (they left memory idle, or another owner saved them), one round
/// trip for the batch. A stream without saved state is new.
async fn load_missing(
    ctx: &Ctx,
    shard: u32,
    detector: &mut Detector,
    events: &[ChatEvent],
) -> Result<(), String> {
    let mut missing: Vec<String> = Vec::new();
    for ev in events {
        if !detector.holds(ev) {
            let key = ev.stream_key();
            if !missing.contains(&key) {
                missing.push(key);
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let saved = ctx
        .store
        .load_streams(shard, &missing)
        .await
        .map_err(|e| e.to_string())?;
    let mut loaded = 0;
    for (key, bytes) in missing.iter().zip(saved) {
        let Some(bytes) = bytes else { continue };
        // State this build cannot read (another release's, or damaged)
        // would stop the shard for good: the stream starts afresh instead,
        // and says so.
        let restored = DetectorSnapshot::decode(bytes.as_slice())
            .map_err(|e| format!("does not decode: {e}"))
            .and_then(|snap| detector.restore_stream(snap).map_err(|e| e.to_string()));
        match restored {
            Ok(()) => loaded += 1,
            Err(e) => {
                warn!(shard, stream = %key, error = %e, "saved stream state unreadable: the stream starts afresh")
            }
        }
    }
    if loaded > 0 {
        ctx.inc(&ctx.counters().streams_loaded, loaded);
        metrics().streams_loaded.add(loaded, &shard_attrs(shard));
    }
    Ok(())
}

async fn publish(
    ctx: &Ctx,
    shard: u32,
    owner: &Owner,
    out: &[DetectorOutput],
    trace: Option<&TraceContext>,
    st: &mut State,
) -> Result<(), String> {
    for o in out {
        let (platform, stream_id, kind) = match &o.kind {
            Some(detector_output::Kind::SpamEvent(e)) => {
                (e.platform, e.stream_id.as_str(), "spam_event")
            }
            Some(detector_output::Kind::Decision(d)) => {
                (d.platform, d.stream_id.as_str(), "decision")
            }
            Some(detector_output::Kind::MessageScore(s)) => {
                (s.platform, s.stream_id.as_str(), "score")
            }
            Some(detector_output::Kind::Action(a)) => (a.platform, a.stream_id.as_str(), "action"),
            Some(detector_output::Kind::NukeSuggestion(n)) => {
                (n.platform, n.stream_id.as_str(), "nuke_suggestion")
            }
            Some(detector_output::Kind::CommandResult(c)) => {
                (c.platform, c.stream_id.as_str(), "command_result")
            }
            None => continue,
        };
        let platform = Platform::of(platform).key();
        let subject = subjects::spam(shard, platform, stream_id);
        let mut headers = HeaderMap::new();
        headers.insert(subjects::EPOCH_HEADER, owner.epoch.to_string().as_str());
        headers.insert(subjects::REPLICA_HEADER, owner.replica.as_str());
        if let Some(cx) = trace {
            spamscope_telemetry::inject(cx, &mut headers);
        }
        let publish = PublishMessage::build()
            .payload(Bytes::from(o.encode_to_vec()))
            .headers(headers)
            .message_id(output_key(o));
        let ack = ctx
            .bus
            .js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| e.to_string())?;
        st.acks.push((subject, ack));
        ctx.inc(&ctx.counters().outputs, 1);
        metrics().outputs.add(
            1,
            &[
                KeyValue::new("service", SERVICE),
                KeyValue::new("kind", kind),
            ],
        );
        metrics()
            .events_out
            .add(1, &spamscope_telemetry::service(SERVICE));
    }
    // Bounded per shard so that all shards of a replica stay under the
    // connection's ack budget (`spamscope_bus::MAX_ACKS_IN_FLIGHT`).
    if st.acks.len() >= 128 {
        settle(st).await?;
    }
    Ok(())
}

/// Waits for every pending output ack.
async fn settle(st: &mut State) -> Result<(), String> {
    for (subject, ack) in st.acks.drain(..) {
        ack.await.map_err(|e| format!("{subject}: {e}"))?;
    }
    Ok(())
}

/// Writes the shard checkpoint after every output is acknowledged. An error
/// means the shard must stop (fenced: someone else owns it, or the outputs
/// could not be delivered).
async fn checkpoint(ctx: &Ctx, shard: u32, owner: &Owner, st: &mut State) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    if let Err(e) = settle(st).await {
        warn!(shard, error = %e, "outputs not acknowledged: no checkpoint; the shard opens again from its last one");
        return Err(e);
    }
    let settled = t0.elapsed();
    let wall = spamscope_runtime::now_ms();
    st.detector.set_wall_clock(wall);
    // Only the streams that changed are written; after this every held
    // stream's state is saved, so the idle ones can leave memory.
    let changes = st.detector.take_changes();
    let evict = st.detector.evictable(idle_ms(ctx), ctx.cfg.max_streams);
    let snap = ShardSnapshot {
        version: CHECKPOINT_VERSION,
        shard,
        epoch: owner.epoch,
        owner: owner.replica.clone(),
        last_sequence: st.last_seq,
        streams: Vec::new(),
        written_at_ms: wall,
        stream_created_ms: st.stream_created_ms,
        ticking: changes.ticking.clone(),
        policies: st.engine.as_ref().map(spamscope_act::Engine::snapshot),
    };
    let position = snap.encode_to_vec();
    let changed: Vec<(String, Vec<u8>)> = changes
        .changed
        .iter()
        .map(|(k, s)| (k.clone(), s.encode_to_vec()))
        .collect();
    let bytes = position.len() + changed.iter().map(|(_, b)| b.len()).sum::<usize>();
    let encoded = t0.elapsed();
    let write = spamscope_store::CheckpointWrite {
        position: &position,
        changed: &changed,
        removed: &changes.removed,
        now_ms: wall,
        forget_before_ms: wall
            .saturating_sub(i64::try_from(ctx.cfg.stream_forget.as_millis()).unwrap_or(i64::MAX)),
    };
    let saved = ctx.store.save_checkpoint(shard, owner, write).await;
    if t0.elapsed() > Duration::from_millis(100) {
        // The shard reads nothing meanwhile: its streams' outputs are late.
        warn!(
            shard,
            bytes,
            streams = changed.len(),
            settle_ms = settled.as_millis() as u64,
            encode_ms = (encoded - settled).as_millis() as u64,
            total_ms = t0.elapsed().as_millis() as u64,
            "slow checkpoint"
        );
    } else {
        debug!(
            shard,
            bytes,
            streams = changed.len(),
            total_ms = t0.elapsed().as_millis() as u64,
            "checkpoint"
        );
    }
    if !matches!(saved, Ok(Saved::Written { .. })) {
        st.detector.unsaved(changes);
    }
    match saved {
        Ok(Saved::Written { forgotten }) => {
            if forgotten > 0 {
                ctx.inc(&ctx.counters().streams_forgotten, forgotten);
                metrics()
                    .streams_forgotten
                    .add(forgotten, &shard_attrs(shard));
                info!(
                    shard,
                    streams = forgotten,
                    "saved state of streams silent for --stream-forget-s deleted"
                );
            }
            st.detector.evict(&evict);
            st.detector.clear_ended();
            st.held_after_checkpoint = st.detector.held();
            if !evict.is_empty() {
                ctx.inc(&ctx.counters().streams_evicted, evict.len() as u64);
                metrics()
                    .streams_evicted
                    .add(evict.len() as u64, &shard_attrs(shard));
                debug!(
                    shard,
                    streams = evict.len(),
                    held = st.detector.held(),
                    "idle streams left memory"
                );
            }
            st.since_checkpoint = 0;
            st.checkpointed_at = std::time::Instant::now();
            ctx.inc(&ctx.counters().checkpoints, 1);
            let progress = spamscope_store::Progress {
                last_sequence: st.last_seq,
                pending: st.pending,
            };
            if let Err(e) = ctx.store.set_progress(shard, progress).await {
                warn!(shard, error = %e, "cannot record progress");
            }
            Ok(())
        }
        Ok(Saved::Fenced) => {
            warn!(
                shard,
                epoch = owner.epoch,
                "checkpoint fenced: shard has a newer owner"
            );
            Err("fenced".into())
        }
        Err(e) => {
            warn!(shard, error = %e, "checkpoint failed");
            // Keep going: the next checkpoint retries; a crash replays more.
            Ok(())
        }
    }
}

/// What an idle shard finds when it looks at its chat stream.
enum Check {
    /// The stream is gone, or is another stream than the one created at
    /// the checkpoint's time.
    Replaced,
    /// The stream holds chat up to this sequence, past what was read.
    Behind(u64),
    /// Nothing to read (or the server cannot say now: NATS restarting).
    Fine,
}

async fn consumer_check(ctx: &Ctx, shard: u32, created_ms: i64, read: u64) -> Check {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::GetStreamErrorKind;
    let mut stream = match ctx.bus.js.get_stream(subjects::chat_stream(shard)).await {
        Ok(s) => s,
        // Gone; any other error (NATS restarting) is not a new stream.
        Err(e) => {
            let gone = matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND);
            return if gone { Check::Replaced } else { Check::Fine };
        }
    };
    match stream.info().await {
        Ok(info) if self::created_ms(info) != created_ms => Check::Replaced,
        Ok(info) if info.state.last_sequence > read => Check::Behind(info.state.last_sequence),
        _ => Check::Fine,
    }
}

/// A stream's creation time, in ms since the epoch (what checkpoints
/// record of it).
fn created_ms(info: &async_nats::jetstream::stream::Info) -> i64 {
    i64::try_from(info.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// What a shard's chat stream holds when the shard opens.
#[derive(Debug, Clone, Copy)]
struct Held {
    created_ms: i64,
    /// First and last sequence held (an empty stream holds none: its
    /// first is past its last).
    first: u64,
    last: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Resume {
    /// Resume after the checkpoint's sequence, as usual.
    After,
    /// The checkpoint does not match the stream: resume at `from`, the
    /// first sequence it holds; `skipped` sequences are known to be lost
    /// (`None`: unknown, the stream was created again).
    Gap {
        from: u64,
        skipped: Option<u64>,
        why: String,
    },
}

/// Where a shard resumes, from its checkpoint (`seq` read last, of the
/// stream created at `created_ms`; 0 for an older checkpoint) and what the
/// stream holds. Policy: chat the stream no longer holds is gone; the shard
/// resumes at the first sequence it holds, says how much was skipped
/// (error log, `spamscope_detector_chat_gaps_total` and `..._skipped_total`)
/// and keeps its detector state.
fn resume(seq: u64, created_ms: i64, held: &Held) -> Resume {
    let first = held.first.max(1);
    if seq == 0 {
        return Resume::After;
    }
    if created_ms != 0 && created_ms != held.created_ms {
        return Resume::Gap {
            from: first,
            skipped: None,
            why: format!(
                "the chat stream was created again (at {} ms; the checkpoint is of the stream created at {created_ms} ms)",
                held.created_ms
            ),
        };
    }
    if seq > held.last {
        return Resume::Gap {
            from: first,
            skipped: None,
            why: format!(
                "the checkpoint is at sequence {seq} but the chat stream ends at {}",
                held.last
            ),
        };
    }
    if seq + 1 < first {
        return Resume::Gap {
            from: first,
            skipped: Some(first - seq - 1),
            why: format!(
                "retention removed sequences {}..={} before they were read",
                seq + 1,
                first - 1
            ),
        };
    }
    Resume::After
}

#[cfg(test)]
mod tests {
    use super::{Held, Resume, resume};

    const T: i64 = 1_700_000_000_000;

    fn gap(r: Resume) -> (u64, Option<u64>) {
        match r {
            Resume::Gap { from, skipped, .. } => (from, skipped),
            Resume::After => panic!("no gap"),
        }
    }

    #[test]
    fn a_checkpoint_resumes_only_on_the_stream_it_describes() {
        let held = |first, last| Held {
            created_ms: T,
            first,
            last,
        };
        // Nothing read yet, or the next sequence still held.
        assert_eq!(resume(0, 0, &held(50, 80)), Resume::After);
        assert_eq!(resume(40, T, &held(1, 80)), Resume::After);
        assert_eq!(resume(49, T, &held(50, 80)), Resume::After);
        // Caught up on a stream that then emptied by age.
        assert_eq!(resume(80, T, &held(81, 80)), Resume::After);
        // Retention passed the checkpoint: 50..=59 lost.
        assert_eq!(gap(resume(49, T, &held(60, 80))), (60, Some(10)));
        // The store lost: the stream created again, sequences anew.
        assert_eq!(gap(resume(40, T - 1, &held(1, 3))), (1, None));
        // A checkpoint of an older release (no creation time) past the end.
        assert_eq!(gap(resume(61_260, 0, &held(0, 0))), (1, None));
        assert_eq!(resume(40, 0, &held(1, 80)), Resume::After);
    }
}
