//! spamscope's test kit (dev only, never in a production binary): the real
//! processes the tests run against and the stand-ins for what cannot run
//! here.
//!
//! - [`Nats`] and [`Redis`]: real `nats-server -js` and `redis-server`
//!   children on loopback ports, killed on drop, which can be stopped,
//!   resumed and restarted on the same port for fault drills.
//! - [`Proc`] and [`Cluster`]: `spamscope` role processes with their logs,
//!   on one NATS and one Redis.
//! - [`InProcessCluster`]: a router and detector replicas as tasks of the
//!   calling process on a real NATS (for the role crates' own tests and the
//!   benches).
//! - [`FakeIrc`]: enough of Twitch's IRC server for a client, replaying
//!   recorded lines; [`fake_kube::FakeKube`]: the few Kubernetes API
//!   endpoints spamscope calls; [`platforms`]: Twitch Helix's and the
//!   YouTube Data API's moderation endpoints.
//! - [`jetstream`]: readers of what the pipeline published.
//!
//! Fixtures panic with the reason (and the logs) when something is wrong:
//! they are for tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fake_kube;
mod in_process;
mod irc;
pub mod jetstream;
pub mod platforms;
mod process;
mod servers;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use in_process::InProcessCluster;
pub use irc::{FakeIrc, IrcScript};
pub use process::{Cluster, Proc, cluster_args, finish};
pub use servers::{Nats, NatsCluster, Redis, test_pki};

/// A path in the repository (the bundled data, the web UI, the chart).
pub fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// The bundled real Twitch log (#xqcow, 2019-09-15).
pub fn xqcow() -> PathBuf {
    repo("testdata/twitch/xqcow-2019-09-15.irc")
}

/// The bundled real YouTube chat (ChilledCow, 2020-11, chat-downloader).
pub fn chilledcow() -> PathBuf {
    repo("testdata/youtube/chilledcow-2020-11.chat-downloader.json")
}

/// A Twitch chat message `n` on stream `stream` from user `user<n>`, one
/// second after the previous `n`.
pub fn twitch_message(stream: &str, n: u32) -> spamscope_proto::v1::ChatEvent {
    use spamscope_proto::v1::{Author, ChatEvent, ChatMessage, Platform, chat_event};
    ChatEvent {
        platform: Platform::Twitch as i32,
        stream_id: stream.into(),
        channel_id: "1".into(),
        event_id: format!("m{n}"),
        ts_ms: 1_700_000_000_000 + i64::from(n) * 1000,
        kind: Some(chat_event::Kind::Message(ChatMessage {
            author: Some(Author {
                user_id: format!("{n}"),
                login: format!("user{n}"),
                display_name: format!("user{n}"),
                roles: None,
            }),
            text: format!("hello number {n}"),
            ..Default::default()
        })),
    }
}

/// A Twitch chat message: `text` from `login` (user id `id-<login>`) in
/// channel `stream` (room id `channel_id`), with event id `id`, at `ts_ms`.
pub fn twitch_text(
    stream: &str,
    channel_id: &str,
    id: &str,
    login: &str,
    text: &str,
    ts_ms: i64,
) -> spamscope_proto::v1::ChatEvent {
    use spamscope_proto::v1::{Author, ChatEvent, ChatMessage, Platform, chat_event};
    ChatEvent {
        platform: Platform::Twitch as i32,
        stream_id: stream.into(),
        channel_id: channel_id.into(),
        event_id: id.into(),
        ts_ms,
        kind: Some(chat_event::Kind::Message(ChatMessage {
            author: Some(Author {
                user_id: format!("id-{login}"),
                login: login.into(),
                display_name: login.into(),
                roles: None,
            }),
            text: text.into(),
            ..Default::default()
        })),
    }
}

/// A moderator's command to spamscope in Twitch channel `stream`, as the
/// gateway sends it: event id `id`, from `by`, at `ts_ms`.
pub fn twitch_command(
    stream: &str,
    id: &str,
    by: &str,
    op: spamscope_proto::v1::moderator_command::Op,
    ts_ms: i64,
) -> spamscope_proto::v1::ChatEvent {
    use spamscope_proto::v1::{ChatEvent, ModeratorCommand, Platform, chat_event};
    ChatEvent {
        platform: Platform::Twitch as i32,
        stream_id: stream.into(),
        event_id: id.into(),
        ts_ms,
        kind: Some(chat_event::Kind::Command(ModeratorCommand {
            by: by.into(),
            op: Some(op),
        })),
        ..ChatEvent::default()
    }
}

/// A stream id (`<prefix>-<k>`) of `platform` whose key hashes to
/// `shard` of `shards`.
pub fn stream_on_shard(
    platform: spamscope_proto::v1::Platform,
    prefix: &str,
    shard: u32,
    shards: u32,
) -> String {
    (0..)
        .map(|k| format!("{prefix}-{k}"))
        .find(|id| {
            let key = spamscope_proto::StreamKey::format(platform, id);
            spamscope_routing::shard_of(&key, shards) == shard
        })
        .expect("some id hashes to every shard")
}

/// A loopback port that was free a moment ago (for servers that cannot
/// pick their own and report it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "spamscope-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until something listens on `port` (20 s at most).
fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    panic!("{what} did not listen on {port}");
}
