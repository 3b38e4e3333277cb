//! Real `nats-server` and `redis-server` children.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{TempDir, free_port, wait_port};

/// A `nats-server -js` with its own store directory. The first start lets
/// the server pick its port (`-p -1`) and reads it from the ports file the
/// server writes, so two tests never race for one; restarts reuse it.
///
/// Its JetStream store is declared, not taken from the disk: by default
/// nats-server reserves stream limits against 3/4 of the disk free when it
/// starts, and the roles' default limits (17 GiB together) would make every
/// test depend on how full the disk is. Tests write megabytes.
#[derive(Debug)]
pub struct Nats {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    store_bytes: u64,
    /// More config lines (the membership of a [`NatsCluster`], an
    /// `authorization` block).
    extra: Option<String>,
}

/// The store a test server declares: room for the default stream limits of
/// several clusters.
pub const TEST_STORE_BYTES: u64 = 256 << 30;

impl Nats {
    /// `nats-server` from the PATH, or the one `SPAMSCOPE_NATS_SERVER` names.
    pub fn start() -> Self {
        Self::with_store(TEST_STORE_BYTES)
    }

    /// A server whose JetStream store holds at most `store_bytes`.
    pub fn with_store(store_bytes: u64) -> Self {
        let mut n = Nats {
            port: 0,
            dir: TempDir::new("nats"),
            child: None,
            store_bytes,
            extra: None,
        };
        n.spawn();
        n
    }

    /// A server with more configuration (e.g. an `authorization` block).
    pub fn with_config(extra: &str) -> Self {
        let mut n = Nats {
            port: 0,
            dir: TempDir::new("nats"),
            child: None,
            store_bytes: TEST_STORE_BYTES,
            extra: Some(extra.to_owned()),
        };
        n.spawn();
        n
    }

    /// The server's process id while it runs (for SIGSTOP drills).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn program() -> std::ffi::OsString {
        std::env::var_os("SPAMSCOPE_NATS_SERVER").unwrap_or_else(|| "nats-server".into())
    }

    fn spawn(&mut self) {
        let ports = self.dir.0.join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).unwrap();
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let conf = self.dir.0.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "jetstream {{\n  store_dir: {:?}\n  max_file_store: {}\n}}\n{}",
                self.store_dir().to_string_lossy(),
                self.store_bytes,
                self.extra.as_deref().unwrap_or("")
            ),
        )
        .unwrap();
        let mut child = Command::new(Self::program())
            .args(["-a", "127.0.0.1", "-p", &port, "-c"])
            .arg(&conf)
            .arg("--ports_file_dir")
            .arg(&ports)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (Debian package nats-server)");
        if self.port == 0 {
            self.port = Self::reported_port(&mut child, &ports);
        }
        self.child = Some(child);
        wait_port(self.port, "nats-server");
    }

    /// The client port from `<dir>/nats-server_<pid>.ports`
    /// (`{"nats":["nats://127.0.0.1:PORT"]}`).
    fn reported_port(child: &mut Child, dir: &std::path::Path) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ports"))
                .find_map(|e| {
                    let v: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                    let url = v["nats"][0].as_str()?;
                    url.rsplit(':').next()?.parse::<u16>().ok()
                });
            if let Some(port) = found {
                return port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nats-server exited before it listened: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server wrote no ports file in {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The JetStream store directory (for drills that damage it).
    pub fn store_dir(&self) -> std::path::PathBuf {
        self.dir.0.join("store")
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

/// A JetStream cluster of nats-servers on loopback, routed to each other,
/// each with its own store; streams on it can keep replicas.
#[derive(Debug)]
pub struct NatsCluster {
    pub nodes: Vec<Nats>,
    monitor: Vec<u16>,
}

impl NatsCluster {
    /// `n` servers (3 for R3 streams), once JetStream has a meta leader.
    pub fn start(n: usize) -> Self {
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let monitor: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_list = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let nodes = (0..n)
            .map(|i| {
                let mut node = Nats {
                    port: 0,
                    dir: TempDir::new("nats-node"),
                    child: None,
                    store_bytes: TEST_STORE_BYTES,
                    extra: Some(format!(
                        "server_name: n{i}\nhttp_port: {}\ncluster {{\n  name: spamscope-test\n  \
                         listen: 127.0.0.1:{}\n  routes: [{route_list}]\n}}\n",
                        monitor[i], routes[i]
                    )),
                };
                node.spawn();
                node
            })
            .collect();
        let c = NatsCluster { nodes, monitor };
        c.await_meta_leader();
        c
    }

    /// Every node's client URL, comma-separated (what `--nats-url` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(Nats::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `GET path` on node `i`'s monitoring port; None if it does not answer.
    pub fn monitor(&self, i: usize, path: &str) -> Option<serde_json::Value> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.monitor[i])).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        serde_json::from_str(body.split_once("\r\n\r\n")?.1).ok()
    }

    /// Waits until every live node agrees on a JetStream meta leader.
    pub fn await_meta_leader(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let leaders: Vec<Option<String>> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].child.is_some())
                .map(|i| {
                    self.monitor(i, "/jsz")
                        .and_then(|v| v["meta_cluster"]["leader"].as_str().map(str::to_owned))
                })
                .collect();
            if leaders.iter().all(Option::is_some) && leaders.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no JetStream meta leader: {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `kill -<sig>` of node `i` (`-STOP` pauses it, `-CONT` resumes it).
    pub fn signal(&self, i: usize, sig: &str) {
        let pid = self.nodes[i].pid().expect("the node runs").to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// The node (`n<i>`) leading stream `name`, by its own monitoring.
    pub fn stream_leader(&self, name: &str) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .find_map(|i| {
                let v = self.monitor(i, "/jsz?streams=true")?;
                let streams = v["account_details"][0]["stream_detail"].as_array()?.clone();
                streams
                    .iter()
                    .find(|s| s["name"] == name)
                    .and_then(|s| s["cluster"]["leader"].as_str())
                    .and_then(|l| l.strip_prefix('n'))
                    .and_then(|n| n.parse().ok())
            })
    }
}

/// A `redis-server` that keeps nothing on disk. Redis cannot pick its own
/// port and report it, so a free one is tried and another taken if the
/// server exits at once (the port was taken in between).
#[derive(Debug)]
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// Where an append-only file keeps every write (fsync'd each time),
    /// for a server whose restart keeps its data.
    aof_dir: Option<std::path::PathBuf>,
    /// Certificates of a server that speaks only TLS (see [`Redis::tls`]).
    tls_dir: Option<std::path::PathBuf>,
    verify_clients: bool,
}

impl Redis {
    /// A server that keeps nothing on disk.
    pub fn start() -> Self {
        Self::start_in(None)
    }

    /// A server that keeps every write in an append-only file under `dir`
    /// (`appendfsync always`): a restart, even after SIGKILL, keeps it.
    pub fn persistent(dir: &std::path::Path) -> Self {
        Self::start_in(Some(dir.to_owned()))
    }

    /// A server that speaks only TLS, with a certificate for 127.0.0.1
    /// signed by a certificate authority of its own ([`test_pki`]):
    /// `ca.pem` in `dir` is what a client must trust.
    pub fn tls(dir: &std::path::Path) -> Self {
        Self::tls_with(dir, false)
    }

    /// [`Redis::tls`] that also requires every client to present a
    /// certificate of that authority (`tls-auth-clients yes`):
    /// `client.pem` and `client.key` in `dir` are one.
    pub fn tls_verifying_clients(dir: &std::path::Path) -> Self {
        Self::tls_with(dir, true)
    }

    fn tls_with(dir: &std::path::Path, verify_clients: bool) -> Self {
        test_pki(dir);
        for _ in 0..5 {
            let mut r = Redis {
                port: free_port(),
                child: None,
                aof_dir: None,
                tls_dir: Some(dir.to_owned()),
                verify_clients,
            };
            if r.try_spawn() {
                return r;
            }
        }
        panic!("redis-server did not start with TLS on any of 5 free ports");
    }

    fn start_in(aof_dir: Option<std::path::PathBuf>) -> Self {
        for _ in 0..5 {
            let mut r = Redis {
                port: free_port(),
                child: None,
                aof_dir: aof_dir.clone(),
                tls_dir: None,
                verify_clients: false,
            };
            if r.try_spawn() {
                return r;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts on `self.port`; false if the server exited before listening.
    fn try_spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut args = vec!["--bind", "127.0.0.1", "--save", ""];
        let tls = self.tls_dir.as_ref().map(|d| {
            ["server.pem", "server.key", "ca.pem"].map(|f| d.join(f).display().to_string())
        });
        match &tls {
            Some([cert, key, ca]) => args.extend([
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                cert,
                "--tls-key-file",
                key,
                "--tls-ca-cert-file",
                ca,
                "--tls-auth-clients",
                if self.verify_clients { "yes" } else { "no" },
            ]),
            None => args.extend(["--port", &port]),
        }
        let dir = self.aof_dir.as_ref().map(|d| d.display().to_string());
        match &dir {
            Some(d) => args.extend(["--appendonly", "yes", "--appendfsync", "always", "--dir", d]),
            None => args.extend(["--appendonly", "no"]),
        }
        let mut child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (Debian package redis-server)");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return true;
            }
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls_dir.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// Kills (SIGKILL) and starts again on the same port: its data is gone
    /// unless it is [`Redis::persistent`].
    pub fn restart(&mut self) {
        self.stop();
        std::thread::sleep(Duration::from_millis(300));
        self.resume();
    }

    /// Kills the server; `resume` starts it again on the same port.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn resume(&mut self) {
        assert!(
            self.try_spawn(),
            "redis-server did not start again on {}",
            self.port
        );
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A certificate authority and what it signed, made with the openssl
/// command line in `dir` (once; later calls reuse them): `ca.pem`;
/// `server.pem` and `server.key` for 127.0.0.1 and localhost; `client.pem`
/// and `client.key`, a client certificate (CN `spamscope`).
pub fn test_pki(dir: &std::path::Path) {
    if dir.join("client.pem").exists() {
        return;
    }
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl on PATH (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=spamscope test CA",
    ]);
    for (name, cn, ext) in [
        (
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "spamscope", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ]);
        std::fs::write(dir.join(&extfile), ext).unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &extfile,
        ]);
    }
}
