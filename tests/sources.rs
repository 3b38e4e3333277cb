//! Live chat sources against local servers replaying the recorded chat:
//! only the address differs from production.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use harness::*;
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twitch_source_publishes_the_recorded_channel() {
    let recorded: Vec<String> =
        std::fs::read_to_string(repo("testdata/twitch/xqcow-2019-09-15.irc"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
    let irc = FakeIrc::start(recorded);
    let nats = Nats::start();
    let redis = Redis::start();
    let logs = TempDir::new("logs");
    let mut args: Vec<String> = vec!["ingest".into(), "--source".into(), "twitch".into()];
    args.extend(cluster_args(&nats, &redis, 16));
    args.extend(
        [
            "--channel",
            "xqcow",
            "--channel",
            "#Pajlada",
            "--twitch-server",
        ]
        .map(String::from),
    );
    args.push(format!("127.0.0.1:{}", irc.port));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut ingest = Proc::spawn("ingest-twitch", &refs, &logs.0);

    // 5,000 recorded lines of #xqcow, plus the ROOMSTATE of each JOIN.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream_len(&nats.url(), "CHAT").await < 5002 {
        assert!(
            Instant::now() < deadline,
            "{}",
            tail(&ingest.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ingest.signal("-TERM");
    let status = ingest
        .wait(Duration::from_secs(20))
        .expect("ingest stops on SIGTERM");
    assert!(status.success(), "{}", ingest.log_text());
    let joined: BTreeSet<String> = irc.joins.lock().unwrap().iter().cloned().collect();
    assert_eq!(
        joined,
        BTreeSet::from(["#xqcow".to_owned(), "#pajlada".to_owned()])
    );

    let chat = read_stream(&nats.url(), "CHAT").await;
    assert_eq!(chat.len(), 5002, "no event doubled");
    let events: Vec<spamscope_proto::v1::ChatEvent> = chat
        .iter()
        .map(|(_, _, p)| spamscope_proto::v1::ChatEvent::decode(p.clone()).unwrap())
        .collect();
    let messages = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                Some(spamscope_proto::v1::chat_event::Kind::Message(_))
            )
        })
        .count();
    assert_eq!(messages, 4933);
    let timeouts = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                Some(spamscope_proto::v1::chat_event::Kind::UserTimedOut(_))
            )
        })
        .count();
    assert_eq!(timeouts, 57);
}
