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
        };
        n.spawn();
        n
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
                "jetstream {{\n  store_dir: {:?}\n  max_file_store: {}\n}}\n",
                self.store_dir().to_string_lossy(),
                self.store_bytes
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

/// A `redis-server` that keeps nothing on disk. Redis cannot pick its own
/// port and report it, so a free one is tried and another taken if the
/// server exits at once (the port was taken in between).
#[derive(Debug)]
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Self {
        for _ in 0..5 {
            let mut r = Redis {
                port: free_port(),
                child: None,
            };
            if r.try_spawn() {
                return r;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts on `self.port`; false if the server exited before listening.
    fn try_spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
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
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills and starts again on the same port (its data is gone: Redis
    /// keeps nothing on disk here).
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
