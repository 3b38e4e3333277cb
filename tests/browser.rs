//! The web UI in headless Chromium (Debian's, driven by playwright-core)
//! against `spamscope standalone` replaying the real logs. Needs the UI built
//! (`make ui`, which `make test` runs first) and /usr/bin/chromium.
//! Screenshots go to artifacts/screenshots/.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::{Duration, Instant};

use harness::*;

#[test]
fn channel_page_and_search_in_a_real_browser() {
    let dist = repo("web/dist");
    assert!(
        dist.join("index.html").exists(),
        "the web UI is not built: run `make ui`"
    );
    let nats = Nats::start();
    let redis = Redis::start();
    let dir = TempDir::new("browser");
    let addr = format!("127.0.0.1:{}", free_port());
    let history = dir.0.join("history.redb").display().to_string();
    let (xq, cc) = (
        repo("testdata/twitch/xqcow-2019-09-15.irc")
            .display()
            .to_string(),
        repo("testdata/youtube/chilledcow-2020-11.chat-downloader.json")
            .display()
            .to_string(),
    );
    let ui = dist.display().to_string();
    let sa = Proc::spawn(
        SPAMSCOPE,
        "standalone",
        &[
            "standalone",
            "--nats-url",
            &nats.url(),
            "--redis-url",
            &redis.url(),
            "--shards",
            "8",
            "--listen",
            &addr,
            "--history-path",
            &history,
            "--ui-dir",
            &ui,
            "--speed",
            "0",
            "--replay",
            &xq,
            "--replay",
            &cc,
        ],
        &dir.0,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "{}", sa.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let shots = repo("artifacts/screenshots");
    // The Node.js `make ui` installed (target/node), else the PATH's.
    let pinned = repo("target/node/bin/node");
    let node = if pinned.exists() {
        pinned.into_os_string()
    } else {
        "node".into()
    };
    let out = std::process::Command::new(node)
        .arg(repo("web/tests/browser.mjs"))
        .arg(format!("http://{addr}"))
        .arg(&shots)
        .current_dir(repo("web"))
        .output()
        .expect("node (make ui installs it into target/node)");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "browser test failed:\n{log}\n--- standalone ---\n{}",
        tail(&sa.log_text(), 20)
    );
    for name in ["channels", "channel-page", "search", "cluster"] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "no screenshot {name}"
        );
    }
}
