//! The sharded pipeline end to end: real nats-server and redis-server on
//! random ports, `spamscope` role processes, the real chat logs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use harness::*;

const SHARDS: u32 = 16;

/// (shard, epoch) → replicas that published outputs under it.
async fn publishers(url: &str) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut m: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (subject, headers, _) in read_stream(url, "SPAM").await {
        let h = headers.expect("outputs carry headers");
        let shard = subject.split('.').nth(1).unwrap().to_owned();
        let epoch = h.get("Spamscope-Epoch").unwrap().to_string();
        let replica = h.get("Spamscope-Replica").unwrap().to_string();
        m.entry((shard, epoch)).or_default().insert(replica);
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_give_the_same_outputs_as_one_process() {
    let c = Cluster::start(SPAMSCOPE, SHARDS);
    let files = [xqcow(), chilledcow()];
    let expected = replay_outputs(&files);
    assert!(expected.len() > 500);
    let d0 = c.detector("d0");
    let d1 = c.detector("d1");
    let r = c.router("r0");
    c.await_placement(&["d0", "d1"], Duration::from_secs(30))
        .await;
    let mut ing = c.ingest("ingest", "max", &files);
    finish(&mut ing);
    await_outputs(
        &c.nats.url(),
        &expected,
        Duration::from_secs(90),
        &[&d0, &d1, &r],
    )
    .await;
    // At full speed ingest batched each stream's events that queued up
    // behind its publish; every event is in JetStream once, in order.
    let messages = read_chat_messages(&c.nats.url()).await;
    let chat = read_chat(&c.nats.url()).await;
    let want: Vec<spamscope_proto::v1::ChatEvent> = files
        .iter()
        .flat_map(|f| {
            let read = spamscope_chat::replay::read_files(std::slice::from_ref(f)).unwrap();
            spamscope_chat::replay::merge(read)
        })
        .collect();
    assert_eq!(chat.len(), want.len(), "chat events in JetStream");
    assert!(
        messages.len() < chat.len(),
        "no batches: {} messages for {} events",
        messages.len(),
        chat.len()
    );
    let ids = |evs: &mut dyn Iterator<Item = spamscope_proto::v1::ChatEvent>| {
        let mut by_stream: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in evs {
            by_stream
                .entry(e.stream_key())
                .or_default()
                .push(e.event_id);
        }
        by_stream
    };
    use prost::Message;
    let got = ids(&mut chat
        .iter()
        .map(|(_, _, p)| spamscope_proto::v1::ChatEvent::decode(p.clone()).unwrap()));
    assert_eq!(
        got,
        ids(&mut want.into_iter()),
        "each stream's events, in order"
    );
    for (k, reps) in publishers(&c.nats.url()).await {
        assert_eq!(
            reps.len(),
            1,
            "two owners of shard {} at epoch {}: {reps:?}",
            k.0,
            k.1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_and_in_mid_replay_moves_about_one_nth_and_loses_nothing() {
    let c = Cluster::start(SPAMSCOPE, 64);
    let files = [xqcow()];
    let expected = replay_outputs(&files);
    let d0 = c.detector("d0");
    let r = c.router("r0");
    let one = c.await_placement(&["d0"], Duration::from_secs(30)).await;
    // 463 s of chat at 25×: about 19 s.
    let mut ing = c.ingest("ingest", "25", &files);
    tokio::time::sleep(Duration::from_secs(5)).await;

    let d1 = c.detector("d1");
    let d2 = c.detector("d2");
    let three = c
        .await_placement(&["d0", "d1", "d2"], Duration::from_secs(30))
        .await;
    let moved_out = one
        .iter()
        .filter(|(s, o)| three[s].replica != o.replica)
        .count();
    // 1 → 3: about 2/3 of 64 shards move; the rest stay at their epoch.
    assert!(
        (28..=58).contains(&moved_out),
        "{moved_out} of 64 moved going 1 → 3"
    );
    assert!(
        one.iter()
            .all(|(s, o)| three[s].replica != "d0" || three[s].epoch == o.epoch)
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut d2 = d2;
    d2.signal("-TERM");
    let status = d2
        .wait(Duration::from_secs(40))
        .expect("d2 exits after its hand-over");
    assert!(status.success(), "{}", tail(&d2.log_text(), 30));
    let two = c
        .await_placement(&["d0", "d1"], Duration::from_secs(30))
        .await;
    let moved_in = three
        .iter()
        .filter(|(s, o)| two[s].replica != o.replica)
        .count();
    let had_d2 = three.values().filter(|o| o.replica == "d2").count();
    // 3 → 2: exactly d2's shards move (about 1/3).
    assert_eq!(moved_in, had_d2, "only the leaving replica's shards move");
    assert!(
        (8..=38).contains(&moved_in),
        "{moved_in} of 64 moved going 3 → 2"
    );

    finish(&mut ing);
    await_outputs(
        &c.nats.url(),
        &expected,
        Duration::from_secs(90),
        &[&d0, &d1, &d2, &r],
    )
    .await;
    for (k, reps) in publishers(&c.nats.url()).await {
        assert_eq!(
            reps.len(),
            1,
            "two owners of shard {} at epoch {}: {reps:?}",
            k.0,
            k.1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingest_replicas_do_not_double_the_chat() {
    let c = Cluster::start(SPAMSCOPE, SHARDS);
    let files = [xqcow()];
    // One event per message, so JetStream can drop the second copy.
    let mut a = c.ingest_with("ingest-a", "max", &files, &["--max-batch", "1"]);
    let mut b = c.ingest_with("ingest-b", "max", &files, &["--max-batch", "1"]);
    finish(&mut a);
    finish(&mut b);
    let chat = read_chat(&c.nats.url()).await;
    // 5,000 events and one stream end, once.
    assert_eq!(chat.len(), 5001);
    let subjects: BTreeSet<String> = chat.iter().map(|(s, _, _)| s.clone()).collect();
    assert_eq!(subjects.len(), 1);
    let shard = spamscope_routing::shard_of("twitch.xqcow", SHARDS);
    assert!(subjects.contains(&format!("chat.{shard}.twitch.xqcow")));
}

/// A chat line too large for any NATS message is a dead letter with the
/// reason, not a publish retried forever: the events around it, of its own
/// stream too, all land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_for_a_message_is_a_dead_letter_and_the_rest_lands() {
    let c = Cluster::start(SPAMSCOPE, SHARDS);
    let lines: Vec<String> = std::fs::read_to_string(xqcow())
        .unwrap()
        .lines()
        .take(200)
        .map(str::to_owned)
        .collect();
    // Line 100 again, with a new id and 2 MiB of text (nats-server takes
    // 1 MiB per message by default).
    let huge = lines[100]
        .replacen(";id=", ";id=huge-", 1)
        .split(" :")
        .take(2)
        .collect::<Vec<_>>()
        .join(" :")
        + " :"
        + &"KEKW ".repeat(2 * 1024 * 1024 / 5);
    let mut all = lines.clone();
    all.insert(101, huge);
    let dir = TempDir::new("huge");
    let file = dir.0.join("huge.irc");
    std::fs::write(&file, all.join("\n")).unwrap();
    let mut ing = c.ingest("ingest", "max", std::slice::from_ref(&file));
    finish(&mut ing);
    let log = ing.log_text();
    assert!(
        log.contains("1 events too large for one message sent to dlq.ingest"),
        "{}",
        tail(&log, 10)
    );
    // 200 events and the stream end.
    assert_eq!(read_chat(&c.nats.url()).await.len(), 201);
    let dead = read_stream(&c.nats.url(), "DLQ").await;
    assert_eq!(dead.len(), 1);
    let (subject, headers, payload) = &dead[0];
    assert_eq!(subject, "dlq.ingest");
    let h = headers.as_ref().unwrap();
    let reason = h.get("Spamscope-Reason").unwrap().to_string();
    assert!(
        reason.contains("twitch.xqcow/huge-") && reason.contains("over the"),
        "{reason}"
    );
    assert!(
        h.get("Spamscope-Original-Subject")
            .unwrap()
            .to_string()
            .ends_with(".twitch.xqcow")
    );
    assert_eq!(payload.len(), 64 * 1024, "the first 64 KiB kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_configured_with_another_shard_count_refuses_to_start() {
    let c = Cluster::start(SPAMSCOPE, SHARDS);
    let mut ing = c.ingest("ingest", "max", &[chilledcow()]);
    finish(&mut ing);
    let c32 = Cluster { shards: 32, ..c };
    let mut other = c32.role("d-32", "detector", &["--replica-id", "d-32"]);
    let status = other.wait(Duration::from_secs(30)).expect("exits");
    assert_eq!(status.code(), Some(64), "{}", other.log_text());
    assert!(
        other.log_text().contains("16 shards"),
        "{}",
        other.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_serves_healthz_and_readyz() {
    let c = Cluster::start(SPAMSCOPE, SHARDS);
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let r = c.role(
        "r0",
        "router",
        &["--router-id", "r0", "--health-listen", &addr],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect(&addr).is_ok()
            && http_get(&addr, "/readyz").starts_with("HTTP/1.1 200")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{}", r.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(http_get(&addr, "/healthz").starts_with("HTTP/1.1 200"));
    let d = c.role(
        "d0",
        "detector",
        &["--replica-id", "d0", "--health-listen", "127.0.0.1:0"],
    );
    let daddr = health_addr(&d).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(&daddr, "/readyz").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_readyz(addr: &str, ready: bool, p: &Proc) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Not listening yet counts as not ready.
        let r = if std::net::TcpStream::connect(addr).is_ok() {
            http_get(addr, "/readyz")
        } else {
            String::new()
        };
        if r.starts_with("HTTP/1.1 200") == ready && !r.is_empty() {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never {ready}: {r}\n{}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Readiness follows the live NATS connection and Redis for the roles that
/// used to report ready once and forever (gateway, ingest, history writer), and a
/// role without a shared store refuses to start instead of silently using
/// a private one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_nats_and_roles_need_a_shared_store() {
    let mut c = Cluster::start(SPAMSCOPE, SHARDS);
    let gw_health = format!("127.0.0.1:{}", free_port());
    let gw_listen = format!("127.0.0.1:{}", free_port());
    let history = c.logs.0.join("history.redb").display().to_string();
    let gw = c.role(
        "gw",
        "gateway",
        &[
            "--health-listen",
            &gw_health,
            "--listen",
            &gw_listen,
            "--history-path",
            &history,
        ],
    );
    wait_readyz(&gw_health, true, &gw).await;
    c.nats.stop();
    let r = wait_readyz(&gw_health, false, &gw).await;
    assert!(r.contains("not ready: nats"), "{r}");
    c.nats.resume();
    wait_readyz(&gw_health, true, &gw).await;
    // And Redis (params, cluster status): a PING every 2 s.
    c.redis.stop();
    let r = wait_readyz(&gw_health, false, &gw).await;
    assert!(r.contains("redis"), "{r}");
    c.redis.resume();
    wait_readyz(&gw_health, true, &gw).await;

    // A router configured by a file only (no flags) joins the cluster.
    let rh = format!("127.0.0.1:{}", free_port());
    let config = c.logs.0.join("router.toml");
    std::fs::write(
        &config,
        format!(
            "nats-url = \"{}\"\nredis-url = \"{}\"\nshards = {SHARDS}\n\
             [router]\nrouter-id = \"from-file\"\nhealth-listen = \"{rh}\"\n",
            c.nats.url(),
            c.redis.url()
        ),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let from_file = Proc::spawn(
        SPAMSCOPE,
        "from-file",
        &["router", "--config", &cfg],
        &c.logs.0,
    );
    wait_readyz(&rh, true, &from_file).await;
    assert!(
        from_file.log_text().contains("from-file"),
        "{}",
        from_file.log_text()
    );

    // No --redis-url: exit 64 naming the flag.
    let mut alone = Proc::spawn(
        SPAMSCOPE,
        "alone",
        &["router", "--nats-url", &c.nats.url()],
        &c.logs.0,
    );
    let status = alone.wait(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(64), "{}", alone.log_text());
    assert!(
        alone.log_text().contains("--redis-url"),
        "{}",
        alone.log_text()
    );
}

/// A live stream that goes quiet: its spam event ends on the wall clock,
/// with no chat after it and no stream end (before, spam events of a quiet
/// live stream never ended: only event time moved the detector's ticks).
/// Live Twitch ingest from a local IRC server, router and detector
/// processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_live_stream_ends_its_spam_event_on_the_wall_clock() {
    use futures::StreamExt;
    use prost::Message;
    use spamscope_proto::v1::{DetectorOutput, SpamEventState, detector_output};

    let c = Cluster::start(SPAMSCOPE, 4);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Eight chatters post one line within two seconds, stamped now, and
    // then the chat is silent.
    let lines: Vec<String> = (0..8)
        .map(|u| {
            format!(
                "@badge-info=;badges=;display-name=u{u};emotes=;id=live-{u};mod=0;room-id=1;\
                 subscriber=0;tmi-sent-ts={};user-id={};user-type= \
                 :u{u}!u{u}@u{u}.tmi.twitch.tv PRIVMSG #livechan :join my discord server now",
                now + u * 250,
                1000 + u
            )
        })
        .collect();
    let irc = FakeIrc::start(lines);
    let client = async_nats::connect(c.nats.url()).await.unwrap();
    let mut outputs = client.subscribe("spam.>").await.unwrap();
    let _r = c.router("r0");
    let d = c.role(
        "d0",
        "detector",
        &[
            "--replica-id",
            "d0",
            "--param",
            "tick_ms=1000",
            "--param",
            "spam_quiet_ms=3000",
        ],
    );
    let server = format!("127.0.0.1:{}", irc.port);
    let _ing = c.role(
        "ingest",
        "ingest",
        &[
            "--source",
            "twitch",
            "--channel",
            "livechan",
            "--twitch-server",
            &server,
        ],
    );
    let (mut active, mut ended) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ended {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(m)) = tokio::time::timeout(left, outputs.next()).await else {
            panic!(
                "no ended spam event (active seen: {active}):\n{}",
                c.log_tails(30)
            );
        };
        if let Ok(DetectorOutput {
            kind: Some(detector_output::Kind::SpamEvent(e)),
            ..
        }) = DetectorOutput::decode(m.payload)
        {
            assert_eq!(e.stream_id, "livechan");
            if e.state == SpamEventState::Active as i32 {
                active = true;
            }
            if e.state == SpamEventState::Ended as i32 {
                assert_eq!(e.count, 8);
                ended = true;
            }
        }
    }
    // It ended on the wall clock, some seconds after the last line.
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - (now + 7 * 250);
    assert!(after >= 3_000, "ended {after} ms after the last line");
    assert!(d.log_text().contains("consuming shard"), "{}", d.log_text());
}
