//! A `nats-server` child process for `standalone` when no NATS URL is given.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::exit::Exit;

#[derive(Debug)]
pub struct LocalNats {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl LocalNats {
    /// Starts `nats-server -js` on a free loopback port with a store
    /// directory under the temp dir; killed when dropped.
    pub async fn start() -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("spamscope-standalone-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Exit::usage(format!(
                    "no --nats-url given and nats-server cannot be started ({e}); \
                     install it (Debian: apt-get install nats-server) or pass --nats-url"
                ))
            })?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                eprintln!("standalone: started nats-server on 127.0.0.1:{port}");
                return Ok(Self { child, port, dir });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("nats-server did not start listening on port {port}");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir).context("remove nats store");
    }
}
