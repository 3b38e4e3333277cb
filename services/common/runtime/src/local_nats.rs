//! A `nats-server` child process for `standalone` when no NATS URL is given.
//! The binary is `nats-server` on the PATH, or the one
//! `SPAMSCOPE_NATS_SERVER` names. (Tests and benches use the test kit's
//! fixture, which can also stop and restart the server.)
//!
//! JetStream reserves each stream's size limit in its store when the stream
//! is created, and by default the store is three quarters of the disk free
//! when the server starts: the default limits (8 GiB of chat, 8 GiB of spam,
//! 1 GiB of dead letters) do not fit a machine with less than about 23 GiB
//! free. So the store here is half the disk free under the temp dir, and
//! limits that do not fit are scaled down to fit, and said
//! ([`size_streams`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::ClusterArgs;
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

    /// Starts `nats-server` with JetStream on a free loopback port, its
    /// store (at most `store_bytes`) in a directory under the temp dir;
    /// killed when dropped.
    pub async fn start(store_bytes: i64) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        reap_orphans(&std::env::temp_dir());
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("nats.conf");
        // `{:?}` quotes and escapes the path as the config syntax reads it.
        std::fs::write(
            &conf,
            format!(
                "pid_file: {:?}\njetstream {{\n  store_dir: {:?}\n  max_file_store: {store_bytes}\n}}\n",
                dir.join(PID_FILE).to_string_lossy(),
                dir.join("store").to_string_lossy()
            ),
        )
        .context("write nats-server config")?;
        let child = Command::new(program())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-c"])
            .arg(&conf)
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

/// Each standalone's server lives in `<temp dir>/spamscope-standalone-<pid
/// of spamscope>`, and writes its own pid to [`PID_FILE`] there.
const DIR_PREFIX: &str = "spamscope-standalone-";
const PID_FILE: &str = "nats.pid";

/// Stops the nats-servers, and deletes the stores, that standalones killed
/// without a chance to clean up (SIGKILL, an OOM kill) left under
/// `temp`: a server keeps running with its port and its store (up to half
/// the free disk) otherwise. Only a directory whose spamscope process is
/// gone counts, and only a server whose command line names that
/// directory's config is signalled, so a live standalone or an unrelated
/// process that reused a pid is never touched. Said on stderr.
fn reap_orphans(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if alive(owner) {
            continue;
        }
        let dir = entry.path();
        if let Some(server) = orphan_server(&dir) {
            match rustix::process::kill_process(server, rustix::process::Signal::TERM) {
                Ok(()) => {
                    // It flushes and exits within a second or two.
                    for _ in 0..50 {
                        if !alive(server.as_raw_nonzero().get()) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    eprintln!(
                        "standalone: stopped nats-server {} that spamscope {owner} left running",
                        server.as_raw_nonzero()
                    );
                }
                Err(e) => eprintln!(
                    "standalone: cannot stop nats-server {} that spamscope {owner} left running: {e}",
                    server.as_raw_nonzero()
                ),
            }
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => eprintln!(
                "standalone: removed {} that spamscope {owner} left behind",
                dir.display()
            ),
            Err(e) => eprintln!("standalone: cannot remove {}: {e}", dir.display()),
        }
    }
}

/// Whether a process with this pid exists (one of another user's counts).
fn alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid).is_some_and(|p| {
        !matches!(
            rustix::process::test_kill_process(p),
            Err(rustix::io::Errno::SRCH)
        )
    })
}

/// The server a standalone directory's pid file names, if that process
/// still runs that directory's config.
fn orphan_server(dir: &Path) -> Option<rustix::process::Pid> {
    // A pid is a few digits: read no more (anyone can write under /tmp).
    let mut head = [0u8; 32];
    let n = std::io::Read::read(
        &mut std::fs::File::open(dir.join(PID_FILE)).ok()?,
        &mut head,
    )
    .ok()?;
    let pid: i32 = std::str::from_utf8(&head[..n]).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let conf = dir.join("nats.conf");
    let conf = conf.to_string_lossy();
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == conf.as_bytes())
        .then(|| rustix::process::Pid::from_raw(pid))
        .flatten()
}

/// Bytes free for an unprivileged user on the file system holding `dir`.
pub fn free_disk(dir: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(dir)
        .with_context(|| format!("free disk space under {}", dir.display()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Sizes standalone's own JetStream store and its streams from `free`
/// bytes of disk: the store gets half of them, and CHAT and SPAM limits
/// that do not fit are scaled down together (said on stderr). Returns the
/// store size; a disk too small even for the smallest streams is an error
/// saying how much they need.
pub fn size_streams(cluster: &mut ClusterArgs, free: u64) -> Result<i64> {
    let budget = i64::try_from(free / 2).unwrap_or(i64::MAX);
    let mut cfg = cluster.bus_config("")?;
    match cfg.fit_into(budget) {
        Ok(false) => {}
        Ok(true) => {
            eprintln!(
                "standalone: {} MiB free under {}; the streams are sized to fit half of it: \
                 chat {} MiB, spam {} MiB (--chat-max-bytes and --spam-max-bytes asked for {} \
                 and {} MiB; pass --nats-url to use a NATS server of your own)",
                free >> 20,
                std::env::temp_dir().display(),
                cfg.chat_max_bytes >> 20,
                cfg.spam_max_bytes >> 20,
                cluster.chat_max_bytes >> 20,
                cluster.spam_max_bytes >> 20,
            );
            cluster.chat_max_bytes = cfg.chat_max_bytes;
            cluster.spam_max_bytes = cfg.spam_max_bytes;
        }
        Err(needed) => {
            return Err(anyhow::anyhow!(
                "standalone: {} MiB free under {}; its nats-server needs at least {} MiB \
                 for the smallest streams (free disk there, set TMPDIR, or pass --nats-url)",
                free >> 20,
                std::env::temp_dir().display(),
                (needed * 2) >> 20,
            ));
        }
    }
    Ok(budget)
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir).context("remove nats store");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::size_streams;
    use crate::ClusterArgs;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        cluster: ClusterArgs,
    }

    const GIB: u64 = 1 << 30;

    fn cluster() -> ClusterArgs {
        Args::parse_from(["standalone"]).cluster
    }

    #[test]
    fn standalone_streams_fit_half_the_free_disk() {
        // 100 GiB free: the default 17 GiB fit in 50.
        let mut c = cluster();
        assert_eq!(size_streams(&mut c, 100 * GIB).unwrap(), 50 << 30);
        assert_eq!((c.chat_max_bytes, c.spam_max_bytes), (8 << 30, 8 << 30));

        // 20 GiB free (where the fixed defaults failed): scaled to 10.
        let mut c = cluster();
        assert_eq!(size_streams(&mut c, 20 * GIB).unwrap(), 10 << 30);
        let cfg = c.bus_config("").unwrap();
        assert!(spamscope_bus::reserved_bytes(&cfg) <= 10 << 30);
        assert!(c.chat_max_bytes > 4 << 30 && c.chat_max_bytes < 8 << 30);

        // 100 MiB free: not even the smallest streams; the error says
        // what they need and the ways out.
        let err = size_streams(&mut cluster(), 100 << 20)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs at least 192 MiB") && err.contains("--nats-url"),
            "{err}"
        );
    }
}
