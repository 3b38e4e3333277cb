//! A `nats-server` child process for `standalone` when no NATS URL is given.
//! The binary is `nats-server` on the PATH, or the one
//! `SPAMSCOPE_NATS_SERVER` names. (Tests and benches use the test kit's
//! fixture, which can also stop and restart the server.)

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

/// The `nats-server` binary to run.
fn program() -> std::ffi::OsString {
    std::env::var_os("SPAMSCOPE_NATS_SERVER").unwrap_or_else(|| "nats-server".into())
}

impl LocalNats {
    /// What `nats-server --version` says, for instance `v2.15.1`.
    pub async fn version() -> String {
        match Command::new(program()).arg("--version").output().await {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .trim()
                .trim_start_matches("nats-server:")
                .trim()
                .to_owned(),
            Err(e) => format!("unknown ({e})"),
        }
    }

    /// Starts `nats-server -js` on a free loopback port with a store
    /// directory under the temp dir; killed when dropped.
    pub async fn start() -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("spamscope-standalone-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(program())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            // Its own process group: Ctrl-C in the terminal reaches only
            // spamscope, which stops its roles first and this server last.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                Exit::usage(format!(
                    "no --nats-url given and nats-server ({}) cannot be started ({e}); \
                     install it (Debian: apt-get install nats-server), set SPAMSCOPE_NATS_SERVER \
                     or pass --nats-url",
                    program().to_string_lossy()
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
