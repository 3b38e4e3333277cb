//! A detector replica in process on a real nats-server and redis-server,
//! driven by the owners table alone (no router): it opens what the table
//! gives it, stops what the table takes away, refuses stale commands, and
//! checkpoints what it closes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use spamscope_detector::{Counters, ReplicaConfig};
use spamscope_proto::v1::ShardOp;
use spamscope_store::{Owner, Store};
use spamscope_testkit::{InProcessCluster, Nats, Redis, jetstream, twitch_message};

const SHARDS: u32 = 4;
const LEADER: &str = "test-leader";

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn owned(c: &Counters) -> u64 {
    c.owned.load(Ordering::Relaxed)
}

fn events(c: &Counters) -> u64 {
    c.events.load(Ordering::Relaxed)
}

async fn own(store: &Store, shard: u32, replica: &str, epoch: u64) {
    let o = Owner {
        replica: replica.into(),
        epoch,
    };
    assert!(store.set_owner(shard, &o, LEADER).await.unwrap());
}

/// The outputs of one in-process detector over `events`, by key, as
/// `jetstream::await_outputs` compares them.
fn in_process_outputs(
    events: &[spamscope_proto::v1::ChatEvent],
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut d = spamscope_detect::Detector::new(std::sync::Arc::new(
        spamscope_detect::ScoreModel::bundled(),
    ));
    let mut out = Vec::new();
    for ev in events {
        d.handle(ev, &mut out);
    }
    out.iter()
        .map(|o| {
            let v = spamscope_detect::json::to_json(o);
            (v["key"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

/// A nats-server, a redis-server, the in-process cluster on them, and the
/// owners table giving every shard to "d0" at epoch 1 (this test leads).
async fn all_shards_to_d0() -> (Nats, Redis, Store, InProcessCluster) {
    let nats = Nats::start();
    let redis = Redis::start();
    let store = Store::open(Some(&redis.url()), "spamscope:").await.unwrap();
    let c = InProcessCluster::new(&nats.url(), store.clone(), SHARDS, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(store.lead(LEADER, Duration::from_secs(600)).await.unwrap());
    for s in 0..SHARDS {
        own(&store, s, "d0", 1).await;
    }
    (nats, redis, store, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_follows_the_owners_table_and_checkpoints_what_it_closes() {
    let (_nats, _redis, store, mut c) = all_shards_to_d0().await;
    let cfg = ReplicaConfig {
        reconcile_interval: Duration::from_millis(100),
        checkpoint_every_events: 1,
        handover_timeout: Duration::ZERO,
        ..c.replica_config("d0")
    };
    let d0 = std::sync::Arc::clone(&c.add_replica(cfg).await.unwrap().counters);

    // Every shard of the table opens with no Open command sent.
    until("d0 to run its 4 shards", || owned(&d0) == 4).await;
    let stream = "reconcile";
    let shard = spamscope_routing::shard_of(&format!("twitch.{stream}"), SHARDS);
    for n in 0..3 {
        assert!(c.publish(&twitch_message(stream, n)).await.unwrap());
    }
    until("3 events processed", || events(&d0) == 3).await;

    // The table gives the shard to another replica: d0 stops it and reads
    // nothing more from it.
    own(&store, shard, "d9", 2).await;
    until("d0 to let the shard go", || owned(&d0) == 3).await;
    assert!(c.publish(&twitch_message(stream, 3)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(events(&d0), 3, "d0 read a shard it no longer owns");

    // A stale Open (the old epoch) is refused.
    let stale = spamscope_router::command(
        &c.bus,
        "d0",
        ShardOp::Open,
        shard,
        1,
        Duration::from_secs(5),
    )
    .await;
    let err = stale.expect_err("a stale Open was accepted");
    assert!(err.contains("owners table disagrees"), "{err}");

    // Back to d0 one epoch later: it resumes after its checkpoint and
    // reads only the event it had not seen.
    own(&store, shard, "d0", 3).await;
    until("d0 to run the shard again", || owned(&d0) == 4).await;
    until("the pending event processed", || events(&d0) == 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(events(&d0), 4, "events were read twice after the reopen");

    // A Close answers with the last sequence read, the stream's length
    // counted by JetStream itself, and leaves that checkpoint.
    let closed = spamscope_router::command(
        &c.bus,
        "d0",
        ShardOp::Close,
        shard,
        3,
        Duration::from_secs(5),
    )
    .await
    .expect("close");
    let len = jetstream::stream_len(&c.url, &spamscope_bus::subjects::chat_stream(shard)).await;
    assert_eq!(closed.last_sequence, len);
    assert!(store.load_checkpoint(shard).await.unwrap().is_some());

    // A stop leaves the membership.
    c.stop_replica("d0")
        .await
        .unwrap()
        .expect("d0 stopped cleanly");
    assert!(
        !store
            .live_replicas()
            .await
            .unwrap()
            .contains(&"d0".to_owned())
    );
    assert_eq!(owned(&d0), 0);
}

/// One chat event dated 2100 in a live stream went to the detector and
/// moved the stream's clock past every real event (its spam events stopped
/// ticking). Now it goes to the dead-letter subject with the reason, and
/// so does one dated 1970, far behind its stream's clock; the replica's
/// outputs are those of the same chat without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_timestamps_go_to_the_dead_letter_subject_and_ticks_go_on() {
    use prost::Message;
    use spamscope_proto::v1::{ChatEvent, chat_event::Kind};
    let (_nats, _redis, _store, mut c) = all_shards_to_d0().await;
    let cfg = ReplicaConfig {
        reconcile_interval: Duration::from_millis(100),
        handover_timeout: Duration::ZERO,
        ..c.replica_config("d0")
    };
    let d0 = std::sync::Arc::clone(&c.add_replica(cfg).await.unwrap().counters);
    until("d0 to run its 4 shards", || owned(&d0) == 4).await;

    // A copypasta wave of 40 chatters over 4 minutes of event time (spam
    // event updates on every tick), with the poison after the 10th.
    let copypasta = |n: u32| {
        let mut ev = twitch_message("poisoned", n);
        ev.ts_ms = 1_700_000_000_000 + i64::from(n) * 6_000;
        if let Some(Kind::Message(m)) = &mut ev.kind {
            m.text = "THIS IS A COPYPASTA EVERYONE PASTE IT NOW".into();
        }
        ev
    };
    let clean: Vec<ChatEvent> = (0..40).map(copypasta).collect();
    let mut poison = copypasta(1_000);
    poison.ts_ms = 4_102_444_800_000;
    // And one dated 1970, 20 events in: it would open a spam event first
    // seen decades before the rest.
    let mut old = copypasta(1_001);
    old.ts_ms = 1_000;
    let mut sent = clean.clone();
    sent.insert(10, poison.clone());
    sent.insert(21, old.clone());
    for ev in &sent {
        assert!(c.publish(ev).await.unwrap());
    }
    until("the 40 good events processed", || events(&d0) == 40).await;
    until("the poison dead-lettered", || {
        d0.dead_letters.load(Ordering::Relaxed) == 2
    })
    .await;

    let dlq = jetstream::read_stream(&c.url, spamscope_bus::subjects::DLQ_STREAM).await;
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    for ((_, headers, payload), (ev, why)) in dlq.iter().zip([
        (&poison, "ahead of this detector's clock"),
        (&old, "behind its stream's clock"),
    ]) {
        let reason = headers
            .as_ref()
            .and_then(|h| h.get(spamscope_bus::subjects::REASON_HEADER))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        assert!(
            reason.contains(why) && reason.contains(&ev.event_id),
            "{reason}"
        );
        assert_eq!(&ChatEvent::decode(payload.clone()).unwrap(), ev);
    }

    // The outputs equal an in-process detector's over the clean chat.
    let expected = in_process_outputs(&clean);
    assert!(
        expected.len() > 5,
        "the clean chat makes spam event updates: {expected:?}"
    );
    jetstream::await_outputs(&c.url, &expected, Duration::from_secs(20), &[]).await;
}

/// Two processes with one `--replica-id` both opened every shard of it.
/// The heartbeat is a lease now: the second is refused (and opened
/// nothing) while the first lives, and takes the id over once the first
/// is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_with_the_same_id_is_refused() {
    let (_nats, _redis, store, mut c) = all_shards_to_d0().await;
    let cfg = ReplicaConfig {
        reconcile_interval: Duration::from_millis(100),
        heartbeat_ttl: Duration::from_millis(1000),
        heartbeat_interval: Duration::from_millis(250),
        handover_timeout: Duration::ZERO,
        ..c.replica_config("d0")
    };
    let first = std::sync::Arc::clone(&c.add_replica(cfg.clone()).await.unwrap().counters);
    until("the first d0 to run its 4 shards", || owned(&first) == 4).await;

    let second = std::sync::Arc::new(Counters::default());
    let nats_url = c.url.clone();
    let run_second = |counters: std::sync::Arc<Counters>| {
        let (cfg, store, url) = (cfg.clone(), store.clone(), nats_url.clone());
        async move {
            let bus = spamscope_bus::Bus::connect(&url, "second-d0")
                .await
                .unwrap();
            spamscope_detector::run(
                cfg,
                bus,
                store,
                spamscope_runtime::Health::default(),
                counters,
                tokio_util::sync::CancellationToken::new(),
            )
            .await
        }
    };
    let refused = tokio::time::timeout(Duration::from_secs(10), run_second(second.clone()))
        .await
        .expect("the second d0 gives up within its heartbeat TTL and a second");
    let err = refused.expect_err("a second d0 was accepted");
    assert!(
        matches!(err, spamscope_detector::ReplicaError::IdTaken(ref id) if id == "d0"),
        "{err}"
    );
    assert_eq!(owned(&second), 0, "the refused d0 opened shards");
    assert_eq!(owned(&first), 4, "the first d0 lost shards");

    // The first stops; a new process with the id joins and runs them.
    c.stop_replica("d0").await.unwrap().unwrap();
    let third = std::sync::Arc::new(Counters::default());
    let task = tokio::spawn(run_second(third.clone()));
    until("the new d0 to run the 4 shards", || owned(&third) == 4).await;
    task.abort();
}

/// A checkpoint is a sequence of one stream: when retention removed chat
/// after it, or the stream was created again (its store lost), the replica
/// used to skip silently (everything, on a fresh stream). Now it resumes at
/// the first sequence the stream holds and counts the gap and what it
/// knows was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_that_do_not_match_the_stream_are_a_counted_gap() {
    let (_nats, _redis, _store, mut c) = all_shards_to_d0().await;
    let cfg = ReplicaConfig {
        reconcile_interval: Duration::from_millis(100),
        checkpoint_every_events: 1,
        handover_timeout: Duration::ZERO,
        ..c.replica_config("d0")
    };
    let stream = "gappy";
    let shard = spamscope_routing::shard_of(&format!("twitch.{stream}"), SHARDS);
    let chat = spamscope_bus::subjects::chat_stream(shard);

    let d0 = std::sync::Arc::clone(&c.add_replica(cfg.clone()).await.unwrap().counters);
    until("d0 to run its 4 shards", || owned(&d0) == 4).await;
    for n in 0..10 {
        assert!(c.publish(&twitch_message(stream, n)).await.unwrap());
    }
    until("10 events processed", || events(&d0) == 10).await;
    c.stop_replica("d0").await.unwrap().unwrap();

    // Ten more arrive while no replica runs, and retention (a purge that
    // keeps the last five) removes sequences 11..=15 before anyone read
    // them.
    for n in 10..20 {
        assert!(c.publish(&twitch_message(stream, n)).await.unwrap());
    }
    let mut s = c.bus.js.get_stream(&chat).await.unwrap();
    s.purge().keep(5).await.unwrap();
    assert_eq!(s.info().await.unwrap().state.first_sequence, 16);
    let d0 = std::sync::Arc::clone(&c.add_replica(cfg.clone()).await.unwrap().counters);
    until("the 5 events still held processed", || events(&d0) == 5).await;
    assert_eq!(d0.chat_gaps.load(Ordering::Relaxed), 1);
    assert_eq!(d0.chat_skipped.load(Ordering::Relaxed), 5);
    c.stop_replica("d0").await.unwrap().unwrap();

    // The stream's store is lost: it is created again, and its sequences
    // start over below the checkpoint's 20.
    c.bus.js.delete_stream(&chat).await.unwrap();
    c.bus
        .ensure_streams(
            &spamscope_bus::BusConfig {
                url: c.url.clone(),
                shards: SHARDS,
                ..Default::default()
            },
            spamscope_bus::StreamLimits::Apply,
        )
        .await
        .unwrap();
    for n in 20..23 {
        assert!(c.publish(&twitch_message(stream, n)).await.unwrap());
    }
    let d0 = std::sync::Arc::clone(&c.add_replica(cfg).await.unwrap().counters);
    until("the 3 events of the new stream processed", || {
        events(&d0) == 3
    })
    .await;
    assert_eq!(d0.chat_gaps.load(Ordering::Relaxed), 1);
    assert_eq!(
        d0.chat_skipped.load(Ordering::Relaxed),
        0,
        "unknown, not counted"
    );
}

/// The same while the replica runs: its consumer fails, the shard opens
/// again through the checkpoint check and reads the new stream from its
/// first message (an ordered consumer left alone would wait after the old
/// stream's last sequence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_created_again_under_a_running_shard_is_read_from_its_start() {
    let (_nats, _redis, _store, mut c) = all_shards_to_d0().await;
    let cfg = ReplicaConfig {
        reconcile_interval: Duration::from_millis(100),
        checkpoint_every_events: 1,
        handover_timeout: Duration::ZERO,
        ..c.replica_config("d0")
    };
    let stream = "recreated";
    let shard = spamscope_routing::shard_of(&format!("twitch.{stream}"), SHARDS);
    let chat = spamscope_bus::subjects::chat_stream(shard);
    let d0 = std::sync::Arc::clone(&c.add_replica(cfg).await.unwrap().counters);
    until("d0 to run its 4 shards", || owned(&d0) == 4).await;
    for n in 0..10 {
        assert!(c.publish(&twitch_message(stream, n)).await.unwrap());
    }
    until("10 events processed", || events(&d0) == 10).await;

    c.bus.js.delete_stream(&chat).await.unwrap();
    c.bus
        .ensure_streams(
            &spamscope_bus::BusConfig {
                url: c.url.clone(),
                shards: SHARDS,
                ..Default::default()
            },
            spamscope_bus::StreamLimits::Apply,
        )
        .await
        .unwrap();
    for n in 10..13 {
        assert!(c.publish(&twitch_message(stream, n)).await.unwrap());
    }
    until("the 3 events of the new stream processed", || {
        events(&d0) == 13
    })
    .await;
    assert_eq!(d0.chat_gaps.load(Ordering::Relaxed), 1);
}

/// A shard reads on after the NATS node leading its chat stream (where its
/// consumer lives) is paused for 10 s mid-stream on a 3-node cluster, with
/// chat published meanwhile. A drill once saw three shards of one
/// detector read nothing more, and say nothing, after such a pause; the
/// detector now opens a shard again when it reads nothing for two
/// checkpoint periods while its stream holds more chat. In every run here
/// the consumer recovered by itself (restarts 0, printed), so this test
/// guards the fault, not that backstop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_reads_on_after_the_node_of_its_consumer_is_paused() {
    let nodes = spamscope_testkit::NatsCluster::start(3);
    let url = nodes.url();
    let redis = Redis::start();
    let store = Store::open(Some(&redis.url()), "spamscope:").await.unwrap();
    let mut c = spamscope_testkit::InProcessCluster::replicated(
        &url,
        store.clone(),
        SHARDS,
        Duration::from_secs(60),
        3,
    )
    .await
    .unwrap();
    assert!(store.lead(LEADER, Duration::from_secs(600)).await.unwrap());
    for s in 0..SHARDS {
        own(&store, s, "d0", 1).await;
    }
    let cfg = ReplicaConfig {
        reconcile_interval: Duration::from_millis(100),
        checkpoint_interval: Duration::from_millis(1000),
        handover_timeout: Duration::ZERO,
        ..c.replica_config("d0")
    };
    let d0 = std::sync::Arc::clone(&c.add_replica(cfg).await.unwrap().counters);
    until("d0 to run its 4 shards", || owned(&d0) == 4).await;
    let shard = 2;
    let stream = spamscope_testkit::stream_on_shard(
        spamscope_proto::v1::Platform::Twitch,
        "paused",
        shard,
        SHARDS,
    );
    for n in 0..20 {
        assert!(c.publish(&twitch_message(&stream, n)).await.unwrap());
    }
    until("the first 20 events", || events(&d0) == 20).await;
    // The node leading the shard's chat stream (where its consumer is).
    let name = spamscope_bus::subjects::chat_stream(shard);
    let leader = nodes
        .stream_leader(&name)
        .expect("the chat stream has a leader");
    nodes.signal(leader, "-STOP");
    let paused = Instant::now();
    let mut sent = 20;
    // Chat goes on (through the other two, once they elect a leader).
    while paused.elapsed() < Duration::from_secs(10) {
        if c.publish(&twitch_message(&stream, sent))
            .await
            .unwrap_or(false)
        {
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nodes.signal(leader, "-CONT");
    for _ in 0..20 {
        while !c
            .publish(&twitch_message(&stream, sent))
            .await
            .unwrap_or(false)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        sent += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while events(&d0) < u64::from(sent) {
        assert!(
            Instant::now() < deadline,
            "the shard read {} of {sent} events after its node was paused (consumer restarts: {})",
            events(&d0),
            d0.consumer_restarts.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "read {} of {sent}; consumer restarts: {}",
        events(&d0),
        d0.consumer_restarts.load(Ordering::Relaxed)
    );
}

/// Real chat (the xqcow log) dealt by chatter into 40 streams over the 4
/// shards. With at most 3 streams held per shard and a short idle time,
/// streams leave memory at every checkpoint and come back when their chat
/// does; half-way every shard moves to a second replica, which loads each
/// stream's saved state only when its chat comes. The outputs equal an
/// in-process detector's that holds every stream, and Redis ends holding
/// the state of every stream, written only as streams changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_leave_memory_and_a_new_owner_loads_them_when_their_chat_comes() {
    let (_nats, _redis, store, mut c) = all_shards_to_d0().await;
    let file = spamscope_chat::replay::read_file(&spamscope_testkit::xqcow()).unwrap();
    let mut chat = spamscope_chat::replay::merge(vec![file]);
    let mut streams = std::collections::BTreeSet::new();
    for ev in &mut chat {
        use spamscope_proto::v1::chat_event::Kind;
        let who = match &ev.kind {
            Some(Kind::Message(m)) => m.author.as_ref().map_or("", |a| a.login.as_str()),
            Some(Kind::UserTimedOut(t)) => t.user_login.as_str(),
            Some(Kind::UserBanned(b)) => b.user_login.as_str(),
            Some(Kind::MessageDeleted(d)) => d.user_login.as_str(),
            _ => "",
        };
        let k = who.bytes().map(u64::from).sum::<u64>() % 40;
        ev.stream_id = format!("xqcow-{k}");
        streams.insert(ev.stream_key());
    }
    assert_eq!(streams.len(), 40);
    let base = c.replica_config("d0");
    let quick = |id: &str| ReplicaConfig {
        replica_id: id.to_owned(),
        reconcile_interval: Duration::from_millis(100),
        checkpoint_every_events: 30,
        checkpoint_interval: Duration::from_millis(200),
        stream_idle: Duration::from_millis(300),
        max_streams: 3,
        handover_timeout: Duration::ZERO,
        ..base.clone()
    };
    let d0 = std::sync::Arc::clone(&c.add_replica(quick("d0")).await.unwrap().counters);
    until("d0 to run its 4 shards", || owned(&d0) == 4).await;
    let half = chat.len() / 2;
    for ev in &chat[..half] {
        assert!(c.publish(ev).await.unwrap());
    }
    until("the first half processed", || events(&d0) == half as u64).await;
    let d1 = std::sync::Arc::clone(&c.add_replica(quick("d1")).await.unwrap().counters);
    for s in 0..SHARDS {
        own(&store, s, "d1", 2).await;
    }
    until("d1 to run every shard", || {
        owned(&d1) == 4 && owned(&d0) == 0
    })
    .await;
    for ev in &chat[half..] {
        assert!(c.publish(ev).await.unwrap());
    }
    // d1 reads the second half, and again what d0 read after its last
    // checkpoint (the table took the shards from d0: no closing one).
    let second_half = (chat.len() - half) as u64;
    until("the second half processed", || events(&d1) >= second_half).await;
    assert_eq!(d1.dead_letters.load(Ordering::Relaxed), 0);

    let expected = in_process_outputs(&chat);
    assert!(expected.len() > 20, "{} outputs", expected.len());
    jetstream::await_outputs(&c.url, &expected, Duration::from_secs(30), &[]).await;

    let evicted0 = d0.streams_evicted.load(Ordering::Relaxed);
    let loaded0 = d0.streams_loaded.load(Ordering::Relaxed);
    let loaded1 = d1.streams_loaded.load(Ordering::Relaxed);
    // At most 3 of a shard's streams stay held: the rest left at least once.
    let key_set = |evs: &[spamscope_proto::v1::ChatEvent]| {
        evs.iter()
            .map(|e| e.stream_key())
            .collect::<std::collections::BTreeSet<String>>()
    };
    let first = key_set(&chat[..half]);
    assert!(
        evicted0 >= first.len() as u64 - 3 * u64::from(SHARDS),
        "d0 evicted {evicted0} of {} streams",
        first.len()
    );
    assert!(loaded0 > 0, "d0 loaded no stream back");
    // d1 held nothing at first: every stream of the first half with chat
    // in the second was loaded from what d0 saved.
    let both = key_set(&chat[half..]).intersection(&first).count() as u64;
    assert!(both > 20, "{both} streams chat in both halves");
    assert!(
        loaded1 >= both,
        "d1 loaded {loaded1} streams, {both} had saved state and chat"
    );
    c.stop_replica("d1").await.unwrap().expect("d1 stopped");
    let mut saved = 0;
    for s in 0..SHARDS {
        saved += store.saved_streams(s).await.unwrap().0;
    }
    // Every stream's state is saved but that of a stream that ended (the
    // replay ends the log's stream: its last event went to one of them).
    let mut last = std::collections::BTreeMap::new();
    for ev in &chat {
        last.insert(ev.stream_key(), ev);
    }
    let ended: Vec<&String> = last
        .iter()
        .filter(|(_, ev)| {
            matches!(
                ev.kind,
                Some(spamscope_proto::v1::chat_event::Kind::StreamEnded(_))
            )
        })
        .map(|(k, _)| k)
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    let mut unsaved = Vec::new();
    for k in &streams {
        let shard = spamscope_routing::shard_of(k, SHARDS);
        if store
            .load_streams(shard, std::slice::from_ref(k))
            .await
            .unwrap()[0]
            .is_none()
        {
            unsaved.push(k);
        }
    }
    assert_eq!(unsaved, ended, "streams without saved state");
    assert_eq!(saved, streams.len() as u64 - 1, "streams with saved state");
}

/// A checkpoint names the live streams a new owner loads at once. If the
/// state of one is gone from Redis (deleted by hand), the shard still
/// opens, with that stream afresh, instead of staying closed for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_whose_saved_state_is_gone_starts_afresh() {
    use prost::Message;
    let (_nats, _redis, store, mut c) = all_shards_to_d0().await;
    let base = ReplicaConfig {
        reconcile_interval: Duration::from_millis(100),
        checkpoint_interval: Duration::from_millis(200),
        handover_timeout: Duration::ZERO,
        ..c.replica_config("d0")
    };
    let d0 = std::sync::Arc::clone(&c.add_replica(base.clone()).await.unwrap().counters);
    until("d0 to run its 4 shards", || owned(&d0) == 4).await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let stream = "livechan";
    let key = format!("twitch.{stream}");
    let shard = spamscope_routing::shard_of(&key, SHARDS);
    let mut ev = twitch_message(stream, 1);
    ev.ts_ms = now();
    assert!(c.publish(&ev).await.unwrap());
    // The checkpoint names the live stream (a user to age).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let snap = store
            .load_checkpoint(shard)
            .await
            .unwrap()
            .map(|b| spamscope_proto::v1::ShardSnapshot::decode(b.as_slice()).unwrap());
        if snap.is_some_and(|s| s.ticking.contains(&key)) {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint names {key}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nobody runs the shard while its saved state is deleted.
    own(&store, shard, "d9", 2).await;
    until("d0 to let the shard go", || owned(&d0) == 3).await;
    let position = store.load_checkpoint(shard).await.unwrap().unwrap();
    let d9 = Owner {
        replica: "d9".into(),
        epoch: 2,
    };
    let removed = [key.clone()];
    let w = spamscope_store::CheckpointWrite {
        position: &position,
        changed: &[],
        removed: &removed,
        now_ms: now(),
        forget_before_ms: i64::MIN,
    };
    assert!(
        store
            .save_checkpoint(shard, &d9, w)
            .await
            .unwrap()
            .written()
    );
    assert_eq!(
        store.load_streams(shard, &removed).await.unwrap(),
        vec![None]
    );

    own(&store, shard, "d0", 3).await;
    until("d0 to open the shard again", || owned(&d0) == 4).await;
    let mut next = twitch_message(stream, 2);
    next.ts_ms = now();
    assert!(c.publish(&next).await.unwrap());
    until("the next event read", || events(&d0) == 2).await;
}
