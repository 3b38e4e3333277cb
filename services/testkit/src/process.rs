//! `spamscope` role processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Nats, Redis, TempDir, tail};

/// A child process; its stderr goes to a log file kept for failures.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Runs `program args` with `RUST_LOG=info`, stderr to `<logs>/<name>.log`.
    pub fn spawn(program: impl AsRef<Path>, name: &str, args: &[&str], logs: &Path) -> Self {
        Self::spawn_env(program, name, args, logs, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_env(
        program: impl AsRef<Path>,
        name: &str,
        args: &[&str],
        logs: &Path,
        env: &[(String, String)],
    ) -> Self {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(program.as_ref())
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.as_ref().display()));
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`-INT`, `-TERM`, `-KILL`, `-STOP`, `-CONT`).
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

/// Waits (2 min at most) for `p` to exit and asserts it succeeded.
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

/// Cluster flags for a role (`nats_url`: one server or a list).
pub fn cluster_args(nats_url: &str, redis: &Redis, shards: u32) -> Vec<String> {
    vec![
        "--nats-url".into(),
        nats_url.to_owned(),
        "--redis-url".into(),
        redis.url(),
        "--shards".into(),
        shards.to_string(),
    ]
}

/// A small cluster of role processes: its own nats-server and
/// redis-server, the `spamscope` binary to run and the logs of the roles
/// started on them.
#[derive(Debug)]
pub struct Cluster {
    pub bin: PathBuf,
    pub nats: Nats,
    pub redis: Redis,
    pub logs: TempDir,
    pub shards: u32,
    /// Environment of every role process started through [`Cluster::role`].
    pub env: Vec<(String, String)>,
    /// A replicated NATS the roles use instead of `nats` (see
    /// [`Cluster::replicated`]).
    pub nats_cluster: Option<crate::NatsCluster>,
}

impl Cluster {
    pub fn start(bin: impl Into<PathBuf>, shards: u32) -> Self {
        Cluster {
            bin: bin.into(),
            nats: Nats::start(),
            redis: Redis::start(),
            logs: TempDir::new("logs"),
            shards,
            env: Vec::new(),
            nats_cluster: None,
        }
    }

    /// Roles on a JetStream cluster of `nodes` nats-servers, every stream
    /// with `nodes` replicas.
    pub fn replicated(bin: impl Into<PathBuf>, shards: u32, nodes: usize) -> Self {
        let mut c = Self::start(bin, shards);
        c.nats_cluster = Some(crate::NatsCluster::start(nodes));
        c.env
            .push(("SPAMSCOPE_STREAM_REPLICAS".into(), nodes.to_string()));
        c
    }

    /// What the roles' `--nats-url` is: every node of the replicated NATS,
    /// or the one server.
    pub fn nats_url(&self) -> String {
        self.nats_cluster
            .as_ref()
            .map_or_else(|| self.nats.url(), crate::NatsCluster::url)
    }

    pub fn role(&self, name: &str, role: &str, extra: &[&str]) -> Proc {
        let mut args: Vec<String> = vec![role.into()];
        args.extend(cluster_args(&self.nats_url(), &self.redis, self.shards));
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::spawn_env(&self.bin, name, &refs, &self.logs.0, &self.env)
    }

    pub fn detector(&self, id: &str) -> Proc {
        self.detector_with(id, &[])
    }

    /// [`Cluster::detector`] with more flags.
    pub fn detector_with(&self, id: &str, extra: &[&str]) -> Proc {
        let mut args = vec![
            "--replica-id",
            id,
            "--heartbeat-ttl-ms",
            "2000",
            "--checkpoint-events",
            "300",
            "--handover-timeout-s",
            "20",
        ];
        args.extend_from_slice(extra);
        self.role(id, "detector", &args)
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
