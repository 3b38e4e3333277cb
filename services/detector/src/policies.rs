//! The channel policies beside a shard's detector: their state comes from
//! the shard's checkpoint, and the chat before it is read again so that a
//! nuke after a hand-over reaches as far back as before it.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures::StreamExt;
use spamscope_act::Engine;
use spamscope_bus::subjects;
use spamscope_proto::v1::PolicySnapshot;
use tracing::{info, warn};

use crate::Ctx;

/// Chat events read again before a checkpoint, at most.
const MAX_WARM_EVENTS: usize = 500_000;
/// How long reading them again may take before the shard goes on without
/// the rest.
const MAX_WARM_TIME: Duration = Duration::from_secs(15);
/// A read that gets nothing for this long has reached what is kept.
const IDLE: Duration = Duration::from_secs(2);

/// The engine of a shard opening after `last_seq`: the policies from the
/// configuration, their state from `saved` (the checkpoint's; another
/// version starts afresh), then the chat of the longest look-back before
/// the checkpoint fed to [`Engine::remember`]. None without policies.
pub(crate) async fn open(
    ctx: &Ctx,
    shard: u32,
    saved: Option<&PolicySnapshot>,
    last_seq: u64,
) -> Option<Engine> {
    let policies = effective(ctx).await?;
    let mut engine = Engine::new(policies.clone());
    if let Some(s) = saved
        && let Err(e) = engine.restore(s)
    {
        warn!(shard, error = %e, "the checkpoint's policy state is not read: the policies start afresh");
        engine = Engine::new(policies);
    }
    if last_seq > 0 {
        let t0 = Instant::now();
        match remember(ctx, shard, last_seq, &mut engine).await {
            Ok((events, whole)) => info!(
                shard,
                events,
                ms = t0.elapsed().as_millis() as u64,
                whole,
                "policies: the chat before the checkpoint read again"
            ),
            Err(e) => warn!(
                shard,
                error = %e,
                "policies: the chat before the checkpoint cannot be read again; nukes reach only the chat from here"
            ),
        }
    }
    Some(engine)
}

/// The policies the shards run: the file's, with the channel layers set
/// at run time (the gateway's `SetChannelPolicy`) over them; every channel
/// in dry-run unless `--policy-live`. None without a policy file. A stored
/// layer that does not apply (it was checked when set) leaves the file's.
pub(crate) async fn effective(ctx: &Ctx) -> Option<spamscope_act::Policies> {
    let file = ctx.cfg.policy.as_ref()?;
    let stored = match ctx.store.all_policies().await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot read the channel policies set at run time; using the file's");
            Default::default()
        }
    };
    let p = match file.with_stored(&stored) {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "a channel policy set at run time does not apply; using the file's");
            file.clone()
        }
    };
    Some(if ctx.cfg.policy_live {
        p
    } else {
        p.all_dry_run()
    })
}

/// Feeds the chat stored up to `last_seq`, from the longest look-back
/// before it (by the time it was stored), to `engine`. Returns the events
/// fed and whether it reached `last_seq` within the limits.
async fn remember(
    ctx: &Ctx,
    shard: u32,
    last_seq: u64,
    engine: &mut Engine,
) -> Result<(usize, bool), String> {
    let stream = ctx
        .bus
        .js
        .get_stream(subjects::chat_stream(shard))
        .await
        .map_err(|e| e.to_string())?;
    let last = stream
        .get_raw_message(last_seq)
        .await
        .map_err(|e| format!("message {last_seq}: {e}"))?;
    let back = engine.policies().longest_lookback();
    let start_time = last.time - back;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut events = 0usize;
    while events < MAX_WARM_EVENTS && t0.elapsed() < MAX_WARM_TIME {
        let m = match tokio::time::timeout(IDLE, messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(None) | Err(_) => break,
        };
        let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
        if seq > last_seq {
            return Ok((events, true));
        }
        let batch = subjects::is_batch(m.headers.as_ref());
        // What does not decode went to the dead letters the first time.
        if let Ok(evs) = spamscope_proto::decode_chat(batch, m.payload.clone()) {
            for ev in &evs {
                engine.remember(ev);
            }
            events += evs.len();
        }
        if seq == last_seq {
            return Ok((events, true));
        }
    }
    Ok((events, false))
}
