//! Test harness: real `nats-server` and `redis-server` processes on random
//! loopback ports (killed on drop), `spamscope` role processes, and readers
//! of what the pipeline published.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

pub mod fake_kube;

pub fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "spamscope-test-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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

pub fn xqcow() -> PathBuf {
    repo("testdata/twitch/xqcow-2019-09-15.irc")
}

pub fn chilledcow() -> PathBuf {
    repo("testdata/youtube/chilledcow-2020-11.chat-downloader.json")
}

/// A small cluster: its own nats-server and redis-server, and the logs of
/// the role processes started on them.
pub struct Cluster {
    pub nats: Nats,
    pub redis: Redis,
    pub logs: TempDir,
    pub shards: u32,
    /// Environment of every role process started through [`Cluster::role`].
    pub env: Vec<(String, String)>,
}

impl Cluster {
    pub fn start(shards: u32) -> Self {
        Cluster {
            nats: Nats::start(),
            redis: Redis::start(),
            logs: TempDir::new("logs"),
            shards,
            env: Vec::new(),
        }
    }

    pub fn role(&self, name: &str, role: &str, extra: &[&str]) -> Proc {
        let mut args: Vec<String> = vec![role.into()];
        args.extend(cluster_args(&self.nats, &self.redis, self.shards));
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::spawn_env(name, &refs, &self.logs.0, &self.env)
    }

    pub fn detector(&self, id: &str) -> Proc {
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

    pub fn router(&self, id: &str) -> Proc {
        self.role(id, "router", &["--router-id", id])
    }

    pub fn ingest(&self, name: &str, speed: &str, files: &[PathBuf]) -> Proc {
        self.ingest_with(name, speed, files, &[])
    }

    /// [`Cluster::ingest`] with more flags.
    pub fn ingest_with(&self, name: &str, speed: &str, files: &[PathBuf], flags: &[&str]) -> Proc {
        let mut extra = vec!["--speed".to_owned(), speed.to_owned()];
        extra.extend(flags.iter().map(|f| (*f).to_owned()));
        extra.extend(files.iter().map(|f| f.display().to_string()));
        let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.role(name, "ingest", &refs)
    }

    pub async fn owners(&self) -> BTreeMap<u32, spamscope_store::Owner> {
        let s = spamscope_store::Store::open(Some(&self.redis.url()), "spamscope:")
            .await
            .unwrap();
        s.owners().await.unwrap()
    }

    /// The last `n` lines of every role process's log, for failure messages.
    pub fn log_tails(&self, n: usize) -> String {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.logs.0)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                format!("--- {} ---\n{}", f.display(), tail(&text, n))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the owners table is the ring placement of `replicas`.
    pub async fn await_placement(
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
                "placement on {replicas:?} not reached: {o:?}\n{}",
                self.log_tails(20)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub fn finish(p: &mut Proc) {
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

/// A `nats-server -js` with its own store directory.
pub struct Nats {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Nats {
    pub fn start() -> Self {
        let mut n = Nats {
            port: free_port(),
            dir: TempDir::new("nats"),
            child: None,
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (Debian package nats-server)");
        self.child = Some(child);
        wait_port(self.port, "nats-server");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills and starts again on the same port and store directory.
    pub fn restart(&mut self) {
        self.kill();
        std::thread::sleep(Duration::from_millis(300));
        self.spawn();
    }

    /// Kills the server (its store directory stays); `resume` starts it
    /// again on the same port.
    pub fn stop(&mut self) {
        self.kill();
    }

    pub fn resume(&mut self) {
        self.spawn();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redis-server` that keeps nothing on disk.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Self {
        let mut r = Redis {
            port: free_port(),
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (Debian package redis-server)");
        self.child = Some(child);
        wait_port(self.port, "redis-server");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills and starts again on the same port (its data is gone: Redis
    /// keeps nothing on disk here).
    pub fn restart(&mut self) {
        self.stop();
        std::thread::sleep(Duration::from_millis(300));
        self.spawn();
    }

    /// Kills the server; `resume` starts it again on the same port.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn resume(&mut self) {
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `spamscope` process; its stderr goes to a log file kept for failures.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], logs: &Path) -> Self {
        Self::spawn_env(name, args, logs, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_env(name: &str, args: &[&str], logs: &Path, env: &[(String, String)]) -> Self {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_spamscope"))
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Cluster flags for a role.
pub fn cluster_args(nats: &Nats, redis: &Redis, shards: u32) -> Vec<String> {
    vec![
        "--nats-url".into(),
        nats.url(),
        "--redis-url".into(),
        redis.url(),
        "--shards".into(),
        shards.to_string(),
    ]
}

/// The outputs of `spamscope replay --json FILE...` in one process, by key
/// (message scores excluded).
pub fn replay_outputs(files: &[PathBuf]) -> BTreeMap<String, Value> {
    let mut args = vec!["replay".to_owned(), "--json".to_owned()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let out = Command::new(env!("CARGO_BIN_EXE_spamscope"))
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["key"].as_str().unwrap().to_owned(), v))
        .collect()
}

/// Every message on a JetStream stream, from the start: (subject, headers,
/// payload).
pub async fn read_stream(
    url: &str,
    stream: &str,
) -> Vec<(String, Option<async_nats::HeaderMap>, bytes::Bytes)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.unwrap();
    let last = s.info().await.unwrap().state.last_sequence;
    if last == 0 {
        return Vec::new();
    }
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while let Some(Ok(m)) = msgs.next().await {
        let seq = m.info().unwrap().stream_sequence;
        out.push((m.subject.to_string(), m.headers.clone(), m.payload.clone()));
        if seq >= last {
            break;
        }
    }
    out
}

/// Detector outputs published on SPAM, as replay-style JSON by key (scores
/// excluded); also returns how many messages carried a key seen before.
pub async fn pipeline_outputs(url: &str) -> (BTreeMap<String, Value>, usize) {
    use prost::Message;
    let mut out = BTreeMap::new();
    let mut dups = 0;
    for (_, _, payload) in read_stream(url, "SPAM").await {
        let o = spamscope_proto::v1::DetectorOutput::decode(payload).unwrap();
        if matches!(
            o.kind,
            Some(spamscope_proto::v1::detector_output::Kind::MessageScore(_))
        ) {
            continue;
        }
        let v = spamscope_detect::json::to_json(&o);
        let key = v["key"].as_str().unwrap().to_owned();
        if let Some(prev) = out.insert(key, v.clone()) {
            assert_eq!(prev, v, "two outputs with one key and different content");
            dups += 1;
        }
    }
    (out, dups)
}

/// Waits until the pipeline's outputs equal `expected`, or panics with the
/// difference (and the logs) after `timeout`.
pub async fn await_outputs(
    url: &str,
    expected: &BTreeMap<String, Value>,
    timeout: Duration,
    procs: &[&Proc],
) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let (got, dups) = pipeline_outputs(url).await;
        if &got == expected {
            return dups;
        }
        if Instant::now() > deadline {
            let missing: Vec<&String> = expected
                .keys()
                .filter(|k| !got.contains_key(*k))
                .take(10)
                .collect();
            let extra: Vec<&String> = got
                .keys()
                .filter(|k| !expected.contains_key(*k))
                .take(10)
                .collect();
            let differ: Vec<&String> = expected
                .iter()
                .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
                .map(|(k, _)| k)
                .take(5)
                .collect();
            for p in procs {
                eprintln!("==== {} ====\n{}", p.name, tail(&p.log_text(), 40));
            }
            if let Some(k) = differ.first() {
                eprintln!("expected {k}: {}\n     got {k}: {}", expected[*k], got[*k]);
            }
            panic!(
                "pipeline outputs differ from the in-process replay: {} expected, {} got; missing {missing:?}; extra {extra:?}; different {differ:?}",
                expected.len(),
                got.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A local IRC server speaking enough of Twitch's protocol for a client:
/// acknowledges CAP, welcomes after NICK, answers PING, and on
/// `JOIN #<channel>` replays the recorded lines of that channel.
pub struct FakeIrc {
    pub port: u16,
    pub joins: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeIrc {
    /// Serves each channel's recorded lines when it is joined.
    pub fn start(recorded: Vec<String>) -> Self {
        Self::serve(recorded, None)
    }

    /// Serves all recorded lines, in their order (channels interleaved),
    /// once `channels` channels are joined.
    pub fn start_after_joins(recorded: Vec<String>, channels: usize) -> Self {
        Self::serve(recorded, Some(channels))
    }

    fn serve(recorded: Vec<String>, all_after: Option<usize>) -> Self {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let joins = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let joins2 = joins.clone();
        let recorded = std::sync::Arc::new(recorded);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let recorded = recorded.clone();
                let joins = joins2.clone();
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().unwrap();
                    let r = BufReader::new(conn);
                    let mut nick = "justinfan".to_owned();
                    for line in r.lines() {
                        let Ok(line) = line else { return };
                        let line = line.trim_end().to_owned();
                        let mut send = |s: &str| w.write_all(format!("{s}\r\n").as_bytes()).is_ok();
                        if line.starts_with("CAP REQ") {
                            let caps = line.split_once(':').map_or("", |x| x.1);
                            send(&format!(":tmi.twitch.tv CAP * ACK :{caps}"));
                        } else if let Some(n) = line.strip_prefix("NICK ") {
                            nick = n.to_owned();
                            send(&format!(":tmi.twitch.tv 001 {nick} :Welcome, GLHF!"));
                        } else if let Some(rest) = line.strip_prefix("PING") {
                            send(&format!(":tmi.twitch.tv PONG tmi.twitch.tv{rest}"));
                        } else if let Some(chans) = line.strip_prefix("JOIN ") {
                            for ch in chans.split(',') {
                                let joined = {
                                    let mut j = joins.lock().unwrap();
                                    j.push(ch.to_owned());
                                    j.len()
                                };
                                send(&format!(":{nick}!{nick}@{nick}.tmi.twitch.tv JOIN {ch}"));
                                send(&format!(
                                    "@emote-only=0;followers-only=-1;r9k=0;room-id=1;slow=0;subs-only=0 :tmi.twitch.tv ROOMSTATE {ch}"
                                ));
                                if let Some(n) = all_after {
                                    if joined == n {
                                        for l in recorded.iter() {
                                            if !send(l) {
                                                return;
                                            }
                                        }
                                    }
                                    continue;
                                }
                                for l in recorded.iter().filter(|l| {
                                    l.contains(&format!(" {ch} ")) || l.ends_with(&format!(" {ch}"))
                                }) {
                                    if !send(l) {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                });
            }
        });
        FakeIrc { port, joins }
    }
}

/// Messages in a JetStream stream now.
pub async fn stream_len(url: &str, stream: &str) -> u64 {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.unwrap().state.messages,
        Err(_) => 0, // not created yet
    }
}

/// Every chat message in JetStream: the messages of all `CHAT-<shard>`
/// streams, shard by shard, each in its stream's order (a batch is one).
pub async fn read_chat_messages(
    url: &str,
) -> Vec<(String, Option<async_nats::HeaderMap>, bytes::Bytes)> {
    let mut out = Vec::new();
    for name in chat_streams(url).await {
        out.extend(read_stream(url, &name).await);
    }
    out
}

/// Every chat event in JetStream, batches taken apart: (subject, headers
/// of its message, the event encoded on its own), shard by shard, each in
/// its stream's order. A payload that does not decode (the drills publish
/// garbage) is one entry, as it is.
pub async fn read_chat(url: &str) -> Vec<(String, Option<async_nats::HeaderMap>, bytes::Bytes)> {
    use prost::Message;
    let mut out = Vec::new();
    for (subject, headers, payload) in read_chat_messages(url).await {
        let batch = spamscope_bus::subjects::is_batch(headers.as_ref());
        match spamscope_proto::decode_chat(batch, payload.clone()) {
            Ok(events) => {
                for ev in events {
                    out.push((
                        subject.clone(),
                        headers.clone(),
                        bytes::Bytes::from(ev.encode_to_vec()),
                    ));
                }
            }
            Err(_) => out.push((subject, headers, payload)),
        }
    }
    out
}

/// Chat events in JetStream now, over all shards (batches counted by
/// their events).
pub async fn chat_events(url: &str) -> u64 {
    read_chat(url).await.len() as u64
}

/// Chat messages in JetStream now, over all shards (a batch is one).
pub async fn chat_len(url: &str) -> u64 {
    let mut n = 0;
    for name in chat_streams(url).await {
        n += stream_len(url, &name).await;
    }
    n
}

async fn chat_streams(url: &str) -> Vec<String> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut names: Vec<String> = js
        .stream_names()
        .filter_map(|n| async move { n.ok() })
        .filter(|n| std::future::ready(n.starts_with(spamscope_bus::subjects::CHAT_STREAM_PREFIX)))
        .collect()
        .await;
    names.sort();
    names
}

/// A gRPC client of the gateway at `addr`, once it answers (30 s at most;
/// the failure shows the process's log).
pub async fn gateway_client(
    addr: &str,
    proc: &Proc,
) -> spamscope_proto::v1::gateway_client::GatewayClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) =
            spamscope_proto::v1::gateway_client::GatewayClient::connect(format!("http://{addr}"))
                .await
        {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "gateway not up:\n{}",
            tail(&proc.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
