//! The web UI in headless Chromium (Debian's, driven by playwright-core)
//! against `spamscope standalone` replaying the real logs, with a second
//! ingest replaying a log in near real time as a live channel. Needs the UI
//! built (`make ui`, which `make test` runs first) and /usr/bin/chromium.
//! Screenshots go to artifacts/screenshots/.
//!
//! The browser script asks this test to kill and restart the server (one
//! line on its stdout each) to see the page fail visibly and recover.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::*;
use spamscope_proto::v1::ChannelHistoryRequest;

const TOKEN: &str = "browser-admin-token-0123456789";
/// The Twitch moderator the actor acts as, on the Helix stand-in.
const HELIX_TOKEN: &str = "browser-helix-user-token";
/// The room-id of #xqcow in the bundled log (and of #livechan, its copy).
const XQCOW_ROOM: &str = "71092938";

fn standalone(
    nats: &Nats,
    redis: &Redis,
    dir: &TempDir,
    addr: &str,
    name: &str,
    helix: &str,
) -> Proc {
    let history = dir.0.join("history.redb").display().to_string();
    let token = dir.0.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    // The live channel acts (through the Helix stand-in); every other
    // channel only reports.
    let policy = dir.0.join("policy.toml");
    std::fs::write(
        &policy,
        "[channels.\"twitch.livechan\"]\ndry_run = false\nladder = [\"timeout 5m\"]\n",
    )
    .unwrap();
    let helix_token = dir.0.join("helix-token");
    std::fs::write(&helix_token, HELIX_TOKEN).unwrap();
    let (policy, helix_token) = (
        policy.display().to_string(),
        helix_token.display().to_string(),
    );
    let (xq, cc, ui, tf) = (
        repo("testdata/twitch/xqcow-2019-09-15.irc")
            .display()
            .to_string(),
        repo("testdata/youtube/chilledcow-2020-11.chat-downloader.json")
            .display()
            .to_string(),
        repo("web/dist").display().to_string(),
        token.display().to_string(),
    );
    let p = Proc::spawn(
        SPAMSCOPE,
        name,
        &[
            "standalone",
            "--nats-url",
            &nats.url(),
            "--redis-url",
            &redis.url(),
            "--shards",
            "8",
            "--listen",
            addr,
            "--history-path",
            &history,
            "--ui-dir",
            &ui,
            "--admin-token-file",
            &tf,
            "--policy",
            &policy,
            "--policy-live",
            "--helix-client-id",
            "browser-app",
            "--helix-moderator-id",
            "mod1",
            "--helix-token-file",
            &helix_token,
            "--helix-url",
            helix,
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
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{}", p.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    p
}

/// Every spam event and decision of a stream, counted through the API
/// (what the pages must reach by paging).
async fn totals(addr: &str, p: &Proc, stream: &str) -> (usize, usize) {
    let mut c = gateway_client(addr, p).await;
    let page = |events: String, decisions: String| ChannelHistoryRequest {
        stream: stream.into(),
        page_size: 100,
        page_token: events,
        decisions_page_token: decisions,
        ..Default::default()
    };
    // Wait for the history writer to settle: two equal first pages.
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let first = c
            .channel_history(page(String::new(), String::new()))
            .await
            .unwrap()
            .into_inner();
        if last.as_ref() == Some(&first) && !first.spam_events.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "history of {stream} does not settle"
        );
        last = Some(first);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (mut events, mut decisions) = (0, 0);
    let (mut et, mut dt) = (String::new(), String::new());
    loop {
        let r = c
            .channel_history(page(et, String::new()))
            .await
            .unwrap()
            .into_inner();
        events += r.spam_events.len();
        et = r.next_page_token;
        if et.is_empty() {
            break;
        }
    }
    loop {
        let r = c
            .channel_history(page(String::new(), dt.clone()))
            .await
            .unwrap()
            .into_inner();
        decisions += r.decisions.len();
        dt = r.next_decisions_page_token;
        if dt.is_empty() {
            break;
        }
    }
    (events, decisions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_in_a_real_browser() {
    assert!(
        repo("web/dist/index.html").exists(),
        "the web UI is not built: run `make ui`"
    );
    let nats = Nats::start();
    let redis = Redis::start();
    let dir = TempDir::new("browser");
    let addr = format!("127.0.0.1:{}", free_port());
    let helix = spamscope_testkit::platforms::FakeHelix::start(
        "browser-app",
        HELIX_TOKEN,
        "mod1",
        XQCOW_ROOM,
        100,
    )
    .await;
    let mut sa = standalone(&nats, &redis, &dir, &addr, "standalone", &helix.url);
    let (events, decisions) = totals(&addr, &sa, "twitch.xqcow").await;
    assert!(
        events > 100 && decisions > 20,
        "{events} events, {decisions} decisions"
    );

    // A live channel: the xqcow log again as #livechan, at 5x (8 minutes
    // of chat in about 90 s).
    let text = std::fs::read_to_string(repo("testdata/twitch/xqcow-2019-09-15.irc"))
        .unwrap()
        .replace("#xqcow", "#livechan");
    let live = dir.0.join("livechan.irc");
    std::fs::write(&live, text).unwrap();
    let live = live.display().to_string();
    let _ingest = Proc::spawn(
        SPAMSCOPE,
        "ingest",
        &[
            "ingest",
            "--nats-url",
            &nats.url(),
            "--redis-url",
            &redis.url(),
            "--shards",
            "8",
            "--speed",
            "5",
            &live,
        ],
        &dir.0,
    );

    let shots = repo("artifacts/screenshots");
    // The Node.js `make ui` installed (target/node), else the PATH's.
    let pinned = repo("target/node/bin/node");
    let node = if pinned.exists() {
        pinned.into_os_string()
    } else {
        "node".into()
    };
    let mut browser = std::process::Command::new(node)
        .arg(repo("web/tests/browser.mjs"))
        .arg(format!("http://{addr}"))
        .arg(&shots)
        .env("XQCOW_EVENTS", events.to_string())
        .env("XQCOW_DECISIONS", decisions.to_string())
        .env("LIVE_STREAM", "twitch.livechan")
        .env("ADMIN_TOKEN", TOKEN)
        .current_dir(repo("web"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (make ui installs it into target/node)");
    let mut to_browser = browser.stdin.take().unwrap();
    let mut log = String::new();
    for line in BufReader::new(browser.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        match line.as_str() {
            "KILL SERVER" => {
                sa.signal("-KILL");
                sa.wait(Duration::from_secs(10)).expect("standalone killed");
                writeln!(to_browser, "killed").unwrap();
            }
            "START SERVER" => {
                sa = standalone(&nats, &redis, &dir, &addr, "standalone-again", &helix.url);
                writeln!(to_browser, "started").unwrap();
            }
            _ => {}
        }
    }
    let out = browser.wait_with_output().unwrap();
    log.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "browser test failed:\n{log}\n--- standalone ---\n{}",
        tail(&sa.log_text(), 20)
    );
    for name in [
        "channels",
        "channel-page",
        "event-detail",
        "user-page",
        "paging",
        "live-scroll-back",
        "mute",
        "search",
        "cluster",
        "params",
        "dark",
        "narrow",
        "unknown-channel",
        "server-down",
        "server-back",
        "nuke",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "no screenshot {name}\n{log}"
        );
    }
    // The page's nuke reached the Helix stand-in as timeouts, and its undo
    // lifted every one of them; the dry run before it sent nothing more.
    let calls = helix.calls();
    let bans = calls
        .iter()
        .filter(|c| c.method == "POST" && c.status == 200)
        .count();
    let unbans = calls
        .iter()
        .filter(|c| c.method == "DELETE" && c.status == 204)
        .count();
    assert!(bans >= 1, "no timeout reached Helix: {calls:?}\n{log}");
    assert_eq!(unbans, bans, "the undo lifted every timeout: {calls:?}");
    assert!(helix.state.lock().unwrap().bans.is_empty());
}
