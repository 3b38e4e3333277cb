//! The sharded pipeline end to end: real nats-server and redis-server on
//! random ports, `spamscope` role processes, the real chat logs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::*;

const SHARDS: u32 = 16;

fn xqcow() -> PathBuf {
    repo("testdata/twitch/xqcow-2019-09-15.irc")
}

fn chilledcow() -> PathBuf {
    repo("testdata/youtube/chilledcow-2020-11.chat-downloader.json")
}

struct Cluster {
    nats: Nats,
    redis: Redis,
    logs: TempDir,
    shards: u32,
}

impl Cluster {
    fn start(shards: u32) -> Self {
        Cluster {
            nats: Nats::start(),
            redis: Redis::start(),
            logs: TempDir::new("logs"),
            shards,
        }
    }

    fn role(&self, name: &str, role: &str, extra: &[&str]) -> Proc {
        let mut args: Vec<String> = vec![role.into()];
        args.extend(cluster_args(&self.nats, &self.redis, self.shards));
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::spawn(name, &refs, &self.logs.0)
    }

    fn detector(&self, id: &str) -> Proc {
        self.role(
            id,
            "detector",
            &[
                "--replica-id",
                id,
                "--heartbeat-ttl-ms",
                "2000",
                "--checkpoint-events",
                "300",
                "--handover-timeout-s",
                "20",
            ],
        )
    }

    fn router(&self, id: &str) -> Proc {
        self.role(id, "router", &["--router-id", id])
    }

    fn ingest(&self, name: &str, speed: &str, files: &[PathBuf]) -> Proc {
        let mut extra = vec!["--speed".to_owned(), speed.to_owned()];
        extra.extend(files.iter().map(|f| f.display().to_string()));
        let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.role(name, "ingest", &refs)
    }

    async fn owners(&self) -> BTreeMap<u32, spamscope_store::Owner> {
        let s = spamscope_store::Store::open(Some(&self.redis.url()), "spamscope:")
            .await
            .unwrap();
        s.owners().await.unwrap()
    }

    /// Waits until the owners table is the ring placement of `replicas`.
    async fn await_placement(
        &self,
        replicas: &[&str],
        timeout: Duration,
    ) -> BTreeMap<u32, spamscope_store::Owner> {
        let ids: Vec<String> = replicas.iter().map(|r| r.to_string()).collect();
        let want =
            spamscope_routing::placement(&ids, self.shards, spamscope_routing::DEFAULT_VNODES)
                .unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            let o = self.owners().await;
            let got: Vec<&str> = (0..self.shards)
                .map(|s| o.get(&s).map_or("", |x| x.replica.as_str()))
                .collect();
            if got.iter().zip(&want).all(|(g, w)| g == w) {
                return o;
            }
            assert!(
                Instant::now() < deadline,
                "placement on {replicas:?} not reached: {o:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn finish(p: &mut Proc) {
    let status = p
        .wait(Duration::from_secs(120))
        .expect("process did not finish");
    assert!(
        status.success(),
        "{} failed:\n{}",
        p.name,
        tail(&p.log_text(), 30)
    );
}

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
    let c = Cluster::start(SHARDS);
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
    let c = Cluster::start(64);
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
async fn a_killed_replica_is_replaced_and_nothing_is_lost() {
    let c = Cluster::start(SHARDS);
    let files = [xqcow()];
    let expected = replay_outputs(&files);
    let d0 = c.detector("d0");
    let d1 = c.detector("d1");
    let r = c.router("r0");
    c.await_placement(&["d0", "d1"], Duration::from_secs(30))
        .await;
    let mut ing = c.ingest("ingest", "25", &files);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let killed_at = Instant::now();
    d1.signal("-KILL");
    // Its shards resume on d0 after the heartbeat TTL (2 s) and a round.
    c.await_placement(&["d0"], Duration::from_secs(15)).await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    finish(&mut ing);
    let dups = await_outputs(
        &c.nats.url(),
        &expected,
        Duration::from_secs(90),
        &[&d0, &d1, &r],
    )
    .await;
    eprintln!("recovered in {took:?}; {dups} duplicate outputs collapsed by key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_and_redis_restarts_lose_nothing() {
    let mut c = Cluster::start(SHARDS);
    let files = [xqcow()];
    let expected = replay_outputs(&files);
    let d0 = c.detector("d0");
    let d1 = c.detector("d1");
    let r = c.router("r0");
    c.await_placement(&["d0", "d1"], Duration::from_secs(30))
        .await;
    let mut ing = c.ingest("ingest", "25", &files);
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.nats.restart();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Redis keeps nothing on disk here: owners and checkpoints are gone and
    // the cluster rebuilds them (replaying CHAT where needed).
    c.redis.restart();
    finish(&mut ing);
    await_outputs(
        &c.nats.url(),
        &expected,
        Duration::from_secs(120),
        &[&d0, &d1, &r, &ing],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_goes_to_the_dead_letter_queue_and_the_pipeline_goes_on() {
    let c = Cluster::start(SHARDS);
    let files = [chilledcow()];
    let expected = replay_outputs(&files);
    let d0 = c.detector("d0");
    let r = c.router("r0");
    c.await_placement(&["d0"], Duration::from_secs(30)).await;
    let client = async_nats::connect(c.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    for shard in 0..SHARDS {
        js.publish(
            format!("chat.{shard}.twitch.garbage"),
            bytes::Bytes::from_static(b"\xff\x00not protobuf"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let mut ing = c.ingest("ingest", "max", &files);
    finish(&mut ing);
    await_outputs(
        &c.nats.url(),
        &expected,
        Duration::from_secs(90),
        &[&d0, &r],
    )
    .await;
    let dead = read_stream(&c.nats.url(), "DLQ").await;
    assert_eq!(dead.len(), SHARDS as usize);
    for (subject, headers, payload) in dead {
        assert_eq!(subject, "dlq.chat");
        let h = headers.unwrap();
        assert!(
            h.get("Spamscope-Reason")
                .unwrap()
                .to_string()
                .contains("ChatEvent")
        );
        assert!(
            h.get("Spamscope-Original-Subject")
                .unwrap()
                .to_string()
                .ends_with(".twitch.garbage")
        );
        assert_eq!(
            &payload[..],
            b"\xff\x00not protobuf",
            "the payload is kept as it was"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingest_replicas_do_not_double_the_chat() {
    let c = Cluster::start(SHARDS);
    let files = [xqcow()];
    let mut a = c.ingest("ingest-a", "max", &files);
    let mut b = c.ingest("ingest-b", "max", &files);
    finish(&mut a);
    finish(&mut b);
    let chat = read_stream(&c.nats.url(), "CHAT").await;
    // 5,000 events and one stream end, once.
    assert_eq!(chat.len(), 5001);
    let subjects: BTreeSet<String> = chat.iter().map(|(s, _, _)| s.clone()).collect();
    assert_eq!(subjects.len(), 1);
    let shard = spamscope_routing::shard_of("twitch.xqcow", SHARDS);
    assert!(subjects.contains(&format!("chat.{shard}.twitch.xqcow")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_configured_with_another_shard_count_refuses_to_start() {
    let c = Cluster::start(SHARDS);
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

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_serves_healthz_and_readyz() {
    let c = Cluster::start(SHARDS);
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
    let deadline = Instant::now() + Duration::from_secs(20);
    let daddr = loop {
        if let Some(a) = d.log_text().lines().find_map(|l| {
            l.strip_prefix("health: http://")
                .map(|x| x.trim_end_matches("/healthz").to_owned())
        }) {
            break a;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(&daddr, "/readyz").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
