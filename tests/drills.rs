//! Fault drills: the sharded pipeline on real processes (nats-server,
//! redis-server, `spamscope` roles) replaying the real chat logs while
//! something fails. Each drill checks that nothing was lost against the
//! same logs replayed in one process, and reports one row: events in,
//! outputs out, lost, duplicates removed, time to recover.
//!
//! `make drills` runs them one at a time and prints the table (rows are
//! appended to the file named by `DRILLS_REPORT`); `make test` runs them
//! as tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::*;
use serde_json::Value;

const SHARDS: u32 = 16;

/// Drills run one at a time: each is a cluster of its own, and two at once
/// on two cores would measure each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A drill that has not finished in this long has hung: it fails, naming
/// itself, instead of holding the whole run to CI's limit (one did, in a
/// read of a paused NATS node that waited for good). A drill takes about
/// a minute; every wait inside it has its own, shorter limit.
const DRILL_LIMIT: Duration = Duration::from_secs(600);

/// Runs one drill: alone (see [`ONE_AT_A_TIME`]), within [`DRILL_LIMIT`].
/// Its processes are killed when it fails (they are dropped).
async fn drill(body: impl std::future::Future<Output = ()>) {
    let _one = ONE_AT_A_TIME.lock().await;
    if tokio::time::timeout(DRILL_LIMIT, body).await.is_err() {
        panic!("the drill did not finish in {DRILL_LIMIT:?}");
    }
}

/// One row of the drill table.
struct Row {
    drill: &'static str,
    events_in: u64,
    outputs: usize,
    lost: u64,
    dups: usize,
    recover: Duration,
    what: String,
}

fn report(r: &Row) {
    let line = format!(
        "| {} | {} | {} | {} | {} | {:.1} s ({}) |",
        r.drill,
        r.events_in,
        r.outputs,
        r.lost,
        r.dups,
        r.recover.as_secs_f64(),
        r.what
    );
    eprintln!("drill: {line}");
    if let Ok(path) = std::env::var("DRILLS_REPORT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

/// Chat events the ingest of `files` publishes (stream ends included).
fn events_of(files: &[PathBuf]) -> u64 {
    let mut n = 0;
    for f in files {
        let read = spamscope_chat::replay::read_files(std::slice::from_ref(f)).unwrap();
        n += spamscope_chat::replay::merge(read).len() as u64;
    }
    n
}

/// Waits for the outputs to equal the one-process replay (panics with the
/// difference otherwise) and checks that every chat event is in JetStream
/// exactly once; `extra` events were published beside the logs.
async fn verify(
    c: &Cluster,
    files: &[PathBuf],
    expected: &BTreeMap<String, Value>,
    extra: u64,
    procs: &[&Proc],
) -> (u64, usize, u64, usize) {
    let url = c.nats_url();
    let dups = await_outputs(&url, expected, Duration::from_secs(120), procs).await;
    let want = events_of(files) + extra;
    // Right after a paused NATS node resumes, reads of the chat streams
    // can answer for some seconds with fewer messages than are stored
    // (4,716 of 5,016, all 5,016 ten seconds later): count until the
    // number reaches what was sent, or 30 s pass.
    let t0 = Instant::now();
    let first = chat_by_shard(&url).await;
    let mut events_in = chat_events(&url).await;
    while events_in < want && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        events_in = chat_events(&url).await;
    }
    if events_in != want {
        eprintln!(
            "drill: chat messages by shard at first {first:?}, after {:?} {:?}",
            t0.elapsed(),
            chat_by_shard(&url).await
        );
    } else if t0.elapsed() > Duration::from_secs(1) {
        eprintln!(
            "drill: JetStream reads held every chat event only after {:?}",
            t0.elapsed()
        );
    }
    let lost = want.saturating_sub(events_in);
    assert_eq!(lost, 0, "{lost} chat events lost");
    assert_eq!(events_in, want, "chat events doubled");
    (events_in, expected.len(), lost, dups)
}

/// Polls `ready` every 100 ms until it holds; the time it took.
async fn time_until<F, Fut>(timeout: Duration, what: &str, mut ready: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !ready().await {
        assert!(t0.elapsed() < timeout, "{what} not reached in {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t0.elapsed()
}

/// Replay speed of the drills' ingest: the 7.7 minutes of #xqcow in about
/// 12 s, so every fault (6 s in at most) lands mid-stream.
const SPEED: &str = "40";

/// The drills' chat: the real #xqcow log (7.7 minutes, 1,208 chatters)
/// dealt by chatter into one channel per shard, so that every shard
/// carries real chat for the whole replay and whatever a fault hits holds
/// some of it. A chatter's messages, timeouts and ban stay together in
/// one channel. `expected` is the outputs of the same file replayed in one
/// process.
struct Chat {
    _dir: TempDir,
    files: Vec<PathBuf>,
    expected: BTreeMap<String, Value>,
}

/// The value of IRCv3 tag `key` on a raw line.
fn irc_tag<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.strip_prefix('@')?
        .split(' ')
        .next()?
        .split(';')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// A channel name per shard: `channels[k]` is on shard `k`.
fn channel_per_shard(prefix: &str) -> Vec<String> {
    (0..SHARDS)
        .map(|shard| {
            (0..)
                .map(|i| format!("{prefix}_{i}"))
                .find(|ch| spamscope_routing::shard_of(&format!("twitch.{ch}"), SHARDS) == shard)
                .unwrap()
        })
        .collect()
}

fn spread_chat() -> Chat {
    spread_chat_as("xqcow", 900_000)
}

/// [`spread_chat`] on channels named `<prefix>_<i>` with room ids from
/// `room_base`: the same chat again as streams the cluster never saw.
fn spread_chat_as(prefix: &str, room_base: usize) -> Chat {
    let text = std::fs::read_to_string(xqcow()).unwrap();
    let channels = channel_per_shard(prefix);
    let mut per_channel = vec![0usize; channels.len()];
    let mut out = String::new();
    for l in text.lines() {
        // The chatter: the sender, or the target of a timeout or ban.
        let who = irc_tag(l, "user-id")
            .or_else(|| irc_tag(l, "target-user-id"))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let k = (who % u64::from(SHARDS)) as usize;
        per_channel[k] += 1;
        out.push_str(
            &l.replacen("#xqcow", &format!("#{}", channels[k]), 1)
                .replacen("room-id=71092938", &format!("room-id={}", room_base + k), 1),
        );
        out.push('\n');
    }
    assert!(
        per_channel.iter().all(|n| *n > 100),
        "every shard gets its share of the chat: {per_channel:?}"
    );
    let dir = TempDir::new("drill-chat");
    let path = dir.0.join(format!("{prefix}-by-chatter.irc"));
    std::fs::write(&path, out).unwrap();
    let files = vec![path];
    let expected = replay_outputs(&files);
    Chat {
        _dir: dir,
        files,
        expected,
    }
}

/// Two replicas and a router, placed; ingest of `files` at [`SPEED`]
/// started. The start-up placement gets a generous timeout (a loaded CI
/// machine); the recovery each drill measures has its own.
async fn two_replicas_and_ingest(c: &Cluster, files: &[PathBuf]) -> (Proc, Proc, Proc, Proc) {
    let d0 = c.detector("d0");
    let d1 = c.detector("d1");
    let r = c.router("r0");
    c.await_placement(&["d0", "d1"], Duration::from_secs(90))
        .await;
    let ing = c.ingest("ingest", SPEED, files);
    (d0, d1, r, ing)
}

/// Chat messages in each shard's stream now.
async fn chat_by_shard(url: &str) -> BTreeMap<u32, u64> {
    let mut by = BTreeMap::new();
    for k in 0..SHARDS {
        by.insert(k, stream_len(url, &format!("CHAT-{k}")).await);
    }
    by
}

/// The shards `replica` owns now.
async fn shards_of(c: &Cluster, replica: &str) -> Vec<u32> {
    c.owners()
        .await
        .into_iter()
        .filter(|(_, o)| o.replica == replica)
        .map(|(k, _)| k)
        .collect()
}

/// The proof that losing `replica` hit data: it owns shards whose streams
/// hold chat now, mid-replay. Returns them with their chat so far, for
/// [`chat_came_after`].
async fn owned_with_chat(c: &Cluster, replica: &str) -> BTreeMap<u32, u64> {
    let held = shards_of(c, replica).await;
    let chat = chat_by_shard(&c.nats_url()).await;
    let held: BTreeMap<u32, u64> = held.into_iter().map(|k| (k, chat[&k])).collect();
    assert!(
        !held.is_empty() && held.values().all(|n| *n > 0),
        "{replica} must own shards carrying chat when the fault comes: {held:?} of {chat:?}"
    );
    held
}

/// And chat kept landing on those shards after the fault: someone else
/// carried them on. A summary for the drill's row.
async fn chat_came_after(c: &Cluster, replica: &str, held: &BTreeMap<u32, u64>) -> String {
    let now = chat_by_shard(&c.nats_url()).await;
    let after: u64 = held.iter().map(|(k, n)| now[k] - n).sum();
    assert!(
        after > 0,
        "no chat landed on {replica}'s shards after the fault"
    );
    format!(
        "{replica} owned {} shards holding {} chat messages; {after} more landed on them after",
        held.len(),
        held.values().sum::<u64>()
    )
}

async fn replica_lost(signal: &'static str, drill: &'static str) {
    let c = Cluster::start(SPAMSCOPE, SHARDS);
    let Chat {
        files, expected, ..
    } = &spread_chat();
    let (d0, mut d1, r, mut ing) = two_replicas_and_ingest(&c, files).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let held = owned_with_chat(&c, "d1").await;
    let t0 = Instant::now();
    d1.signal(signal);
    c.await_placement(&["d0"], Duration::from_secs(30)).await;
    let recover = t0.elapsed();
    if signal == "-TERM" {
        let status = d1
            .wait(Duration::from_secs(30))
            .expect("d1 exits on SIGTERM");
        assert!(status.success(), "{}", tail(&d1.log_text(), 30));
        assert!(
            d1.log_text().contains("leaving: handing shards over"),
            "SIGTERM hands the shards over: {}",
            tail(&d1.log_text(), 30)
        );
        // The router closed them on d1 (a checkpoint each, no replay)
        // rather than waiting out the hand-over and reopening them from
        // the last periodic checkpoint.
        let log = d1.log_text();
        assert!(
            log.contains("shard closed") && !log.contains("hand-over timed out"),
            "the router did not Close d1's shards: {}",
            tail(&log, 30)
        );
    }
    finish(&mut ing);
    let hit = chat_came_after(&c, "d1", &held).await;
    let (events_in, outputs, lost, dups) = verify(&c, files, expected, 0, &[&d0, &d1, &r]).await;
    report(&Row {
        drill,
        events_in,
        outputs,
        lost,
        dups,
        recover,
        what: format!("until its shards are owned by the survivor; {hit}"),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_sigkill_a_detector() {
    drill(async {
        replica_lost("-KILL", "SIGKILL a detector").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_sigterm_a_detector() {
    drill(async {
        replica_lost("-TERM", "SIGTERM a detector (hand-over)").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_restart_nats_server() {
    drill(async {
        let mut c = Cluster::start(SPAMSCOPE, SHARDS);
        let Chat {
            files, expected, ..
        } = &spread_chat();
        let (d0, d1, r, mut ing) = two_replicas_and_ingest(&c, files).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        let before = chat_len(&c.nats.url()).await;
        let t0 = Instant::now();
        c.nats.restart();
        let url = c.nats.url();
        time_until(Duration::from_secs(60), "chat flowing again", || {
            let url = url.clone();
            async move { chat_len(&url).await > before }
        })
        .await;
        let recover = t0.elapsed();
        finish(&mut ing);
        let (events_in, outputs, lost, dups) =
            verify(&c, files, expected, 0, &[&d0, &d1, &r]).await;
        report(&Row {
            drill: "restart nats-server",
            events_in,
            outputs,
            lost,
            dups,
            recover,
            what: "until new chat lands in JetStream".into(),
        });
    })
    .await;
}

/// A fault on a three-node JetStream cluster with every stream kept three
/// times, mid-replay. `fault` gets the cluster and the node leading the
/// SPAM stream (where every output is being written) right after the
/// clock starts; the time to recover runs until new chat lands; `heal`
/// then undoes what is left of the fault (given when the fault began).
/// Nothing may be lost or doubled.
async fn replicated_fault(
    drill: &'static str,
    fault: impl FnOnce(&mut NatsCluster, usize),
    heal: impl FnOnce(&mut NatsCluster, usize, Instant),
    what: &str,
) {
    let mut c = Cluster::replicated(SPAMSCOPE, SHARDS, 3);
    let Chat {
        files, expected, ..
    } = &spread_chat();
    let (d0, d1, r, mut ing) = two_replicas_and_ingest(&c, files).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let url = c.nats_url();
    let before = chat_len(&url).await;
    let nc = c.nats_cluster.as_mut().unwrap();
    let leader = nc.stream_leader("SPAM").expect("SPAM has a leader");
    // Which node led what when the fault came.
    let mut chat_led = vec![0; nc.nodes.len()];
    for k in 0..SHARDS {
        if let Some(n) = nc.stream_leader(&format!("CHAT-{k}")) {
            chat_led[n] += 1;
        }
    }
    let chat_led = chat_led
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("/");
    // The fault must hit something: chat is half in, the node leads SPAM.
    assert!(
        before > 0 && before < events_of(files),
        "{before} chat messages in"
    );
    let t0 = Instant::now();
    fault(nc, leader);
    time_until(Duration::from_secs(90), "chat flowing again", || {
        let url = url.clone();
        async move { chat_len(&url).await > before }
    })
    .await;
    let recover = t0.elapsed();
    heal(nc, leader, t0);
    nc.await_meta_leader();
    finish(&mut ing);
    let (events_in, outputs, lost, dups) = verify(&c, files, expected, 0, &[&d0, &d1, &r]).await;
    report(&Row {
        drill,
        events_in,
        outputs,
        lost,
        dups,
        recover,
        what: format!(
            "{what}; SPAM led by n{leader}, the {SHARDS} chat streams by n0/n1/n2: {chat_led}"
        ),
    });
}

/// The SPAM leader SIGKILLed; chat goes on through the other two; the node
/// is started again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_sigkill_the_leader_of_a_replicated_nats() {
    drill(async {
        replicated_fault(
            "SIGKILL the SPAM leader of a 3-node NATS (R3)",
            |nc, leader| nc.nodes[leader].stop(),
            |nc, leader, _| {
                std::thread::sleep(Duration::from_secs(3));
                nc.nodes[leader].resume();
            },
            "until new chat lands with the node down",
        )
        .await;
    })
    .await;
}

/// A node that does not lead SPAM SIGKILLed (a follower of the outputs,
/// likely leading some chat streams); started again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_sigkill_a_follower_of_a_replicated_nats() {
    drill(async {
        replicated_fault(
            "SIGKILL a node that does not lead SPAM, 3-node NATS (R3)",
            |nc, leader| nc.nodes[(leader + 1) % 3].stop(),
            |nc, leader, _| {
                std::thread::sleep(Duration::from_secs(3));
                nc.nodes[(leader + 1) % 3].resume();
            },
            "until new chat lands with the node down",
        )
        .await;
    })
    .await;
}

/// The SPAM leader paused (SIGSTOP) for 10 s, then resumed: the other two
/// elect a leader and go on, and the paused node catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_pause_the_leader_of_a_replicated_nats() {
    drill(async {
        replicated_fault(
            "SIGSTOP the SPAM leader of a 3-node NATS for 10 s (R3)",
            |nc, leader| nc.signal(leader, "-STOP"),
            |nc, leader, t0| {
                std::thread::sleep(Duration::from_secs(10).saturating_sub(t0.elapsed()));
                nc.signal(leader, "-CONT");
            },
            "until new chat lands with the leader paused",
        )
        .await;
    })
    .await;
}

/// Every node SIGKILLed at once and started again: the roles reconnect,
/// and what JetStream had acknowledged is all there (a process kill leaves
/// the page cache; a power loss could take the last `sync_interval` of
/// writes, see OPERATIONS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_sigkill_every_node_of_a_replicated_nats() {
    drill(async {
        replicated_fault(
            "SIGKILL all 3 nodes of a NATS cluster (R3)",
            |nc, _| {
                for n in &mut nc.nodes {
                    n.stop();
                }
                std::thread::sleep(Duration::from_secs(2));
                for n in &mut nc.nodes {
                    n.resume();
                }
                nc.await_meta_leader();
            },
            |_, _, _| {},
            "until new chat lands after the restart",
        )
        .await;
    })
    .await;
}

/// redis-server SIGKILLed and started again mid-replay, keeping its data
/// (`persist`: an append-only file fsync'd on every write) or not (owners,
/// checkpoints, the shard count and the router's lease all gone, built
/// again by the cluster).
async fn redis_restart(persist: bool, drill: &'static str) {
    let mut c = Cluster::start(SPAMSCOPE, SHARDS);
    if persist {
        let dir = c.logs.0.join("redis");
        std::fs::create_dir_all(&dir).unwrap();
        c.redis = Redis::persistent(&dir);
    }
    let Chat {
        files, expected, ..
    } = &spread_chat();
    let (d0, d1, r, mut ing) = two_replicas_and_ingest(&c, files).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    // What the restart hits: every shard owned, with a checkpoint of chat.
    let store = spamscope_store::Store::open(Some(&c.redis.url()), "spamscope:")
        .await
        .unwrap();
    let owners = c.owners().await;
    let mut checkpoints = 0;
    for k in 0..SHARDS {
        checkpoints += usize::from(store.load_checkpoint(k).await.unwrap().is_some());
    }
    assert_eq!(owners.len(), SHARDS as usize, "{owners:?}");
    assert!(checkpoints > 0, "no shard checkpointed before the restart");
    let t0 = Instant::now();
    c.redis.restart();
    if persist {
        // The state came back from the file (a new connection: the old
        // one died with the server).
        let again = spamscope_store::Store::open(Some(&c.redis.url()), "spamscope:")
            .await
            .unwrap();
        assert_eq!(again.recorded_shards().await.unwrap(), Some(SHARDS));
        let mut kept = 0;
        for k in 0..SHARDS {
            kept += usize::from(again.load_checkpoint(k).await.unwrap().is_some());
        }
        assert!(
            kept >= checkpoints,
            "{kept} of {checkpoints} checkpoints kept"
        );
    }
    c.await_placement(&["d0", "d1"], Duration::from_secs(60))
        .await;
    let recover = t0.elapsed();
    finish(&mut ing);
    let (events_in, outputs, lost, dups) = verify(&c, files, expected, 0, &[&d0, &d1, &r]).await;
    report(&Row {
        drill,
        events_in,
        outputs,
        lost,
        dups,
        recover,
        what: format!(
            "until every shard is owned again; it held {} owners and {checkpoints} shard checkpoints",
            owners.len()
        ),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_restart_redis_server() {
    drill(async {
        redis_restart(false, "restart redis-server (state lost)").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_restart_redis_server_with_its_append_only_file() {
    drill(async {
        redis_restart(
            true,
            "SIGKILL redis-server, restart on its append-only file",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_kill_the_router() {
    drill(async {
        let c = Cluster::start(SPAMSCOPE, SHARDS);
        let Chat {
            files, expected, ..
        } = &spread_chat();
        let (d0, d1, r0, mut ing) = two_replicas_and_ingest(&c, files).await;
        let r1 = c.router("r1");
        tokio::time::sleep(Duration::from_secs(5)).await;
        // What the kill hits: the leading router.
        assert!(
            r0.log_text().contains("router is leader")
                && !r1.log_text().contains("router is leader"),
            "r0 leads: {}",
            tail(&r0.log_text(), 20)
        );
        let t0 = Instant::now();
        r0.signal("-KILL");
        // Only a leading router places a new replica.
        let d2 = c.detector("d2");
        c.await_placement(&["d0", "d1", "d2"], Duration::from_secs(60))
            .await;
        let recover = t0.elapsed();
        assert!(
            r1.log_text().contains("router is leader"),
            "the standby took over: {}",
            tail(&r1.log_text(), 20)
        );
        finish(&mut ing);
        let (events_in, outputs, lost, dups) =
            verify(&c, files, expected, 0, &[&d0, &d1, &d2, &r0, &r1]).await;
        report(&Row {
            drill: "SIGKILL the router (standby takes over)",
            events_in,
            outputs,
            lost,
            dups,
            recover,
            what: "until the standby placed a new replica".into(),
        });
    })
    .await;
}

/// Spam events ((stream, id)) and the number of decisions in the history
/// file.
fn history_contents(
    path: &std::path::Path,
    streams: &BTreeSet<String>,
) -> (BTreeSet<(String, u64)>, usize) {
    let h = spamscope_history::HistoryStore::open(path).unwrap();
    let (mut events, mut decisions) = (BTreeSet::new(), 0);
    for s in streams {
        let mut cursor: Option<String> = None;
        loop {
            let p = h
                .channel_events(s, 0, i64::MAX, 500, cursor.as_deref())
                .unwrap();
            events.extend(p.items.iter().map(|e| (s.clone(), e.event_id)));
            cursor = p.next;
            if cursor.is_none() {
                break;
            }
        }
        let mut cursor: Option<String> = None;
        loop {
            let p = h
                .channel_decisions(s, 0, i64::MAX, 500, cursor.as_deref())
                .unwrap();
            decisions += p.items.len();
            cursor = p.next;
            if cursor.is_none() {
                break;
            }
        }
    }
    (events, decisions)
}

/// Asserts that the history file at `path` holds the spam events and
/// decisions of `expected` (the outputs of one process), each once;
/// `writer`'s log explains a failure.
fn history_holds(path: &std::path::Path, expected: &BTreeMap<String, Value>, writer: &Proc) {
    let want_events: BTreeSet<(String, u64)> = expected
        .values()
        .filter(|v| v["kind"] == "spam_event")
        .map(|v| {
            (
                v["stream"].as_str().unwrap().to_owned(),
                v["event_id"].as_u64().unwrap(),
            )
        })
        .collect();
    let want_decisions = expected
        .values()
        .filter(|v| v["kind"] == "decision")
        .count();
    assert!(!want_events.is_empty() && want_decisions > 0);
    let streams: BTreeSet<String> = want_events.iter().map(|(s, _)| s.clone()).collect();
    let (events, decisions) = history_contents(path, &streams);
    let missing: Vec<&Value> = want_events
        .difference(&events)
        .filter_map(|(s, id)| {
            expected
                .values()
                .filter(|v| {
                    v["kind"] == "spam_event"
                        && v["stream"] == s.as_str()
                        && v["event_id"].as_u64() == Some(*id)
                })
                .max_by_key(|v| v["version"].as_u64())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "spam events missing from history: {missing:?}\n{}",
        tail(&writer.log_text(), 30)
    );
    assert_eq!(events, want_events, "spam events in history");
    assert_eq!(decisions, want_decisions, "decisions in history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_history_writer_down_then_back() {
    drill(async {
        let c = Cluster::start(SPAMSCOPE, SHARDS);
        let Chat {
            files, expected, ..
        } = &spread_chat();
        let dir = TempDir::new("history");
        let path = dir.0.join("history.redb");
        let writer = |name: &str| {
            c.role(
                name,
                "history-writer",
                &["--history-path", path.to_str().unwrap()],
            )
        };
        let w = writer("writer-1");
        let (d0, d1, r, mut ing) = two_replicas_and_ingest(&c, files).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        w.signal("-KILL");
        drop(w);
        // Down for most of the replay.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let mut w = writer("writer-2");
        // Catch-up: the outputs published while it was down.
        let url = c.nats.url();
        let recover = time_until(Duration::from_secs(90), "history writer caught up", || {
            let url = url.clone();
            async move { writer_pending(&url).await == 0 }
        })
        .await;
        finish(&mut ing);
        let (events_in, outputs, lost, dups) =
            verify(&c, files, expected, 0, &[&d0, &d1, &r]).await;
        time_until(Duration::from_secs(90), "history writer done", || {
            let url = url.clone();
            async move { writer_pending(&url).await == 0 }
        })
        .await;
        w.signal("-TERM");
        w.wait(Duration::from_secs(20)).expect("writer stops");
        history_holds(&path, expected, &w);
        report(&Row {
            drill: "history writer down 8 s, then back",
            events_in,
            outputs,
            lost,
            dups,
            recover,
            what: "from its restart until it has caught up with what it missed".into(),
        });
    })
    .await;
}

/// A detector that serves its metrics; with the address of `/metrics`.
async fn detector_with_metrics(c: &Cluster, id: &str) -> (Proc, String) {
    let d = c.detector_with(id, &["--health-listen", "127.0.0.1:0"]);
    let addr = health_addr(&d).await;
    (d, addr)
}

/// Gaps and skipped sequences the detectors serving `metrics` counted, by
/// shard (`spamscope_detector_chat_gaps_total`, `..._chat_skipped_total`,
/// as an alert reads them).
fn gaps_counted(metrics: &[&str]) -> (BTreeMap<u32, u64>, BTreeMap<u32, u64>) {
    let (mut gaps, mut skipped) = (BTreeMap::new(), BTreeMap::new());
    for addr in metrics {
        let text = http_get(addr, "/metrics");
        for (k, n) in counter_by_shard(&text, "spamscope_detector_chat_gaps_total") {
            *gaps.entry(k).or_default() += n;
        }
        for (k, n) in counter_by_shard(&text, "spamscope_detector_chat_skipped_total") {
            *skipped.entry(k).or_default() += n;
        }
    }
    (gaps, skipped)
}

/// Waits until every shard counted a gap at the detectors serving
/// `metrics`, asserts it counted exactly one, and gives what each skipped.
async fn one_gap_per_shard(metrics: &[&str], timeout: Duration) -> BTreeMap<u32, u64> {
    let metrics: Vec<String> = metrics.iter().map(|m| (*m).to_owned()).collect();
    time_until(timeout, "a gap counted on every shard", || {
        let metrics = metrics.clone();
        async move {
            let m: Vec<&str> = metrics.iter().map(String::as_str).collect();
            gaps_counted(&m).0.len() == SHARDS as usize
        }
    })
    .await;
    let m: Vec<&str> = metrics.iter().map(String::as_str).collect();
    let (gaps, skipped) = gaps_counted(&m);
    assert!(
        gaps.values().all(|n| *n == 1),
        "one gap per shard: {gaps:?}"
    );
    skipped
}

/// Waits until every shard's checkpoint in Redis covers all the chat its
/// stream holds (60 s at most).
async fn checkpoints_cover_the_chat(c: &Cluster) {
    use prost::Message;
    let store = spamscope_store::Store::open(Some(&c.redis.url()), "spamscope:")
        .await
        .unwrap();
    let client = async_nats::connect(c.nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let t0 = Instant::now();
    loop {
        let mut behind = Vec::new();
        for k in 0..SHARDS {
            let mut stream = js.get_stream(format!("CHAT-{k}")).await.unwrap();
            let last = stream.info().await.unwrap().state.last_sequence;
            let at = match store.load_checkpoint(k).await.unwrap() {
                Some(b) => {
                    spamscope_proto::v1::ShardSnapshot::decode(b.as_slice())
                        .unwrap()
                        .last_sequence
                }
                None => 0,
            };
            if at < last {
                behind.push((k, at, last));
            }
        }
        if behind.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "checkpoints behind the chat (shard, checkpoint, last): {behind:?}\n{}",
            c.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The JetStream store is lost (nats-server stopped, its store directory
/// deleted, started again) after the detectors checkpointed all the chat:
/// every stream comes back empty with sequences starting over. Each shard
/// must notice, count one gap and read the new stream from its start, the
/// history writer must find its consumer gone and make a new one, and
/// chat after the loss must come out exactly as one process gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_jetstream_store_lost() {
    drill(async {
        let mut c = Cluster::start(SPAMSCOPE, SHARDS);
        let before = spread_chat();
        let after = spread_chat_as("after", 910_000);
        let dir = TempDir::new("history");
        let path = dir.0.join("history.redb");
        let mut w = c.role(
            "writer",
            "history-writer",
            &["--history-path", path.to_str().unwrap()],
        );
        let (d0, m0) = detector_with_metrics(&c, "d0").await;
        let (d1, m1) = detector_with_metrics(&c, "d1").await;
        let r = c.router("r0");
        c.await_placement(&["d0", "d1"], Duration::from_secs(90))
            .await;
        let mut ing = c.ingest("ingest-before", SPEED, &before.files);
        finish(&mut ing);
        verify(&c, &before.files, &before.expected, 0, &[&d0, &d1, &r]).await;
        // What the loss hits: chat on every shard, read and checkpointed.
        let url = c.nats_url();
        let held = chat_by_shard(&url).await;
        assert!(held.values().all(|n| *n > 0), "{held:?}");
        checkpoints_cover_the_chat(&c).await;
        assert!(gaps_counted(&[&m0, &m1]).0.is_empty());

        let t0 = Instant::now();
        c.nats.stop();
        std::fs::remove_dir_all(c.nats.store_dir()).unwrap();
        c.nats.resume();
        let skipped = one_gap_per_shard(&[&m0, &m1], Duration::from_secs(90)).await;
        let recover = t0.elapsed();
        assert_eq!(
            skipped.values().sum::<u64>(),
            0,
            "what a lost store held is unknown, not counted: {skipped:?}"
        );
        let log = format!("{}{}", d0.log_text(), d1.log_text());
        assert_eq!(
            log.matches("the chat stream was created again").count(),
            SHARDS as usize,
            "an error per shard naming the cause"
        );

        let mut ing = c.ingest("ingest-after", SPEED, &after.files);
        finish(&mut ing);
        let (events_in, outputs, lost, dups) =
            verify(&c, &after.files, &after.expected, 0, &[&d0, &d1, &r, &w]).await;
        time_until(Duration::from_secs(90), "history writer caught up", || {
            let url = url.clone();
            async move { writer_pending(&url).await == 0 }
        })
        .await;
        w.signal("-TERM");
        w.wait(Duration::from_secs(20)).expect("writer stops");
        history_holds(&path, &after.expected, &w);
        report(&Row {
            drill: "JetStream store lost (wiped, restarted)",
            events_in,
            outputs,
            lost,
            dups,
            recover,
            what: format!(
                "until every shard counted its gap; the store held {} chat messages, all read and checkpointed; the chat after it exact, in SPAM and in the history",
                held.values().sum::<u64>()
            ),
        });
    })
    .await;
}

/// Retention removes chat nobody read yet: the detectors are down
/// (SIGKILL, after checkpointing all they read) while a second log is
/// published and then purged from every chat stream. Their successors
/// must count exactly the purged messages as skipped, per shard, and go
/// on with the chat after it exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_retention_passes_a_checkpoint() {
    drill(async {
        let c = Cluster::start(SPAMSCOPE, SHARDS);
        let read = spread_chat();
        let unread = spread_chat_as("unread", 920_000);
        let later = spread_chat_as("later", 930_000);
        let r = c.router("r0");
        let (mut d0, mut d1) = (c.detector("d0"), c.detector("d1"));
        c.await_placement(&["d0", "d1"], Duration::from_secs(90))
            .await;
        let mut ing = c.ingest("ingest-read", SPEED, &read.files);
        finish(&mut ing);
        verify(&c, &read.files, &read.expected, 0, &[&d0, &d1, &r]).await;
        checkpoints_cover_the_chat(&c).await;
        d0.signal("-KILL");
        d1.signal("-KILL");
        d0.wait(Duration::from_secs(10)).expect("d0 killed");
        d1.wait(Duration::from_secs(10)).expect("d1 killed");

        let url = c.nats_url();
        let at_kill = chat_by_shard(&url).await;
        let mut ing = c.ingest("ingest-unread", SPEED, &unread.files);
        finish(&mut ing);
        let published = chat_by_shard(&url).await;
        // The lost range exists on every shard: chat published after the
        // checkpoints, counted from the streams before the purge.
        let removed: BTreeMap<u32, u64> = published
            .iter()
            .map(|(k, n)| (*k, n - at_kill[k]))
            .collect();
        assert!(removed.values().all(|n| *n > 0), "{removed:?}");
        let client = async_nats::connect(url.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        for k in 0..SHARDS {
            js.get_stream(format!("CHAT-{k}"))
                .await
                .unwrap()
                .purge()
                .await
                .unwrap();
        }

        let t0 = Instant::now();
        let (d2, m2) = detector_with_metrics(&c, "d2").await;
        let (d3, m3) = detector_with_metrics(&c, "d3").await;
        c.await_placement(&["d2", "d3"], Duration::from_secs(60))
            .await;
        let skipped = one_gap_per_shard(&[&m2, &m3], Duration::from_secs(60)).await;
        let recover = t0.elapsed();
        assert_eq!(
            skipped, removed,
            "skipped per shard = what the purge removed"
        );
        let log = format!("{}{}", d2.log_text(), d3.log_text());
        assert_eq!(
            log.matches("retention removed sequences").count(),
            SHARDS as usize,
            "an error per shard naming the range"
        );

        let mut ing = c.ingest("ingest-later", SPEED, &later.files);
        finish(&mut ing);
        // SPAM keeps the outputs of the chat read before; the chat streams
        // hold only the later log.
        let mut expected = read.expected.clone();
        expected.extend(later.expected.clone());
        let (events_in, outputs, lost, dups) =
            verify(&c, &later.files, &expected, 0, &[&d2, &d3, &r]).await;
        report(&Row {
            drill: "retention removes chat before it was read",
            events_in,
            outputs,
            lost,
            dups,
            recover,
            what: format!(
                "from the new detectors' start until every shard counted its gap; {} unread messages removed, counted as skipped exactly per shard; the chat after it exact",
                removed.values().sum::<u64>()
            ),
        });
    })
    .await;
}

/// Outputs the history writer has not acknowledged yet.
async fn writer_pending(url: &str) -> u64 {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let Ok(stream) = js.get_stream("SPAM").await else {
        return u64::MAX;
    };
    let Ok(mut consumer) = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("history-writer")
        .await
    else {
        return u64::MAX;
    };
    match consumer.info().await {
        Ok(i) => i.num_pending + i.num_ack_pending as u64,
        Err(_) => u64::MAX,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_burst_of_malformed_payloads() {
    drill(async {
        const BURST: u64 = 1000;
        let c = Cluster::start(SPAMSCOPE, SHARDS);
        let Chat {
            files, expected, ..
        } = &spread_chat();
        let (d0, d1, r, mut ing) = two_replicas_and_ingest(&c, files).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let client = async_nats::connect(c.nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let t0 = Instant::now();
        let mut acks = Vec::new();
        for i in 0..BURST {
            let shard = i % u64::from(SHARDS);
            acks.push(
                js.publish(
                    format!("chat.{shard}.twitch.garbage{i}"),
                    bytes::Bytes::from(format!("\u{ff}not protobuf {i}")),
                )
                .await
                .unwrap(),
            );
        }
        for a in acks {
            a.await.unwrap();
        }
        let url = c.nats.url();
        time_until(
            Duration::from_secs(60),
            "every bad payload dead-lettered",
            || {
                let url = url.clone();
                async move { stream_len(&url, "DLQ").await >= BURST }
            },
        )
        .await;
        let recover = t0.elapsed();
        finish(&mut ing);
        let (events_in, outputs, lost, dups) =
            verify(&c, files, expected, BURST, &[&d0, &d1, &r]).await;
        let dead = read_stream(&c.nats.url(), "DLQ").await;
        assert_eq!(
            dead.len() as u64,
            BURST,
            "each bad payload dead-lettered once"
        );
        for (subject, headers, _) in &dead {
            assert_eq!(subject, "dlq.chat");
            let h = headers.as_ref().unwrap();
            assert!(h.get("Spamscope-Reason").is_some());
            assert!(
                h.get("Spamscope-Original-Subject")
                    .unwrap()
                    .to_string()
                    .contains(".twitch.garbage")
            );
        }
        report(&Row {
            drill: "burst of 1,000 malformed payloads",
            events_in,
            outputs,
            lost,
            dups,
            recover,
            what: "until all are in the dead-letter stream".into(),
        });
    })
    .await;
}

/// The first minute of the xqcow log as a flood on `channel`: ten copies of
/// every line squeezed into that minute, ten times the rate.
fn flood_file(channel: &str, dir: &TempDir) -> PathBuf {
    let text = std::fs::read_to_string(xqcow()).unwrap();
    let ts = |l: &str| -> Option<i64> {
        let i = l.find("tmi-sent-ts=")? + "tmi-sent-ts=".len();
        l[i..].split(';').next()?.split(' ').next()?.parse().ok()
    };
    let first = text.lines().filter_map(ts).min().unwrap();
    let last = first + 60_000;
    let slice = (last - first) / 10 + 1;
    let mut out = String::new();
    for k in 0..10i64 {
        for l in text.lines() {
            let Some(t) = ts(l).filter(|t| *t < last) else {
                continue;
            };
            let squeezed = first + k * slice + (t - first) / 10;
            let l = l
                .replace(
                    &format!("tmi-sent-ts={t}"),
                    &format!("tmi-sent-ts={squeezed}"),
                )
                .replace("#xqcow", &format!("#{channel}"))
                .replace(";id=", &format!(";id={k}-"));
            out.push_str(&l);
            out.push('\n');
        }
    }
    let path = dir.0.join(format!("{channel}.irc"));
    std::fs::write(&path, out).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_flood_on_one_stream() {
    drill(async {
        let c = Cluster::start(SPAMSCOPE, SHARDS);
        // The flood shares its shard with one of the normal channels; every
        // other shard carries normal chat.
        let channel = "flood0";
        let flood_shard = spamscope_routing::shard_of(&format!("twitch.{channel}"), SHARDS);
        let dir = TempDir::new("flood");
        let flood = flood_file(channel, &dir);
        let chat = spread_chat();
        let (d0, d1, r, mut ing) = two_replicas_and_ingest(&c, &chat.files).await;
        let mut flooder = c.ingest("flood", SPEED, std::slice::from_ref(&flood));
        let files = &[chat.files.clone(), vec![flood]].concat();
        let expected = &replay_outputs(files);
        // Lag per shard (JetStream messages not yet consumed, as the detectors
        // report it with each checkpoint), sampled until both ingests end.
        let store = spamscope_store::Store::open(Some(&c.redis.url()), "spamscope:")
            .await
            .unwrap();
        let mut max_lag: BTreeMap<u32, u64> = BTreeMap::new();
        let t0 = Instant::now();
        let mut flood_done = None;
        loop {
            if let Ok(p) = store.progress().await {
                for (shard, pr) in p {
                    let m = max_lag.entry(shard).or_default();
                    *m = (*m).max(pr.pending);
                }
            }
            if flood_done.is_none() && flooder.wait(Duration::ZERO).is_some() {
                flood_done = Some(Instant::now());
            }
            if flood_done.is_some() && ing.wait(Duration::ZERO).is_some() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "ingest did not end"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        finish(&mut flooder);
        finish(&mut ing);
        let (events_in, outputs, lost, dups) = verify(&c, files, expected, 0, &[&d0, &d1, &r]).await;
        let recover = flood_done.unwrap().elapsed();
        let others = max_lag
            .iter()
            .filter(|(s, _)| **s != flood_shard)
            .map(|(_, l)| *l)
            .max()
            .unwrap_or(0);
        let flooded = max_lag.get(&flood_shard).copied().unwrap_or(0);
        eprintln!("drill: flood shard {flood_shard} max lag {flooded}; other shards max lag {others}");
        assert!(
            others <= 500,
            "a flood on shard {flood_shard} held other shards back: {max_lag:?}"
        );
        report(&Row {
            drill: "10x chat flood on one stream",
            events_in,
            outputs,
            lost,
            dups,
            recover,
            what: format!(
                "from the flood ingest's end until every output is out, the normal chat still replaying; max lag: flooded shard {flooded}, others {others}"
            ),
        });
    })
    .await;
}
