//! Live chat sources against local servers replaying the recorded chat:
//! only the address differs from production.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use harness::*;
use prost::Message;

/// Runs `spamscope ingest --source twitch` on `channels` against `irc`
/// until JetStream holds `want` chat events (within `within`), then stops
/// it with SIGTERM, which it must obey with status 0. The process is
/// returned for its log.
async fn twitch_ingest_until(
    name: &str,
    (nats, redis, logs): (&Nats, &Redis, &TempDir),
    irc: &FakeIrc,
    channels: &[String],
    want: u64,
    within: Duration,
) -> Proc {
    let mut args: Vec<String> = vec!["ingest".into(), "--source".into(), "twitch".into()];
    args.extend(cluster_args(&nats.url(), redis, 16));
    for c in channels {
        args.push("--channel".into());
        args.push(c.clone());
    }
    args.push("--twitch-server".into());
    args.push(format!("127.0.0.1:{}", irc.port));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut ingest = Proc::spawn(SPAMSCOPE, name, &refs, &logs.0);
    let deadline = Instant::now() + within;
    while chat_len(&nats.url()).await < want {
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
    ingest
}

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
    // 5,000 recorded lines of #xqcow, plus the ROOMSTATE of each JOIN.
    twitch_ingest_until(
        "ingest-twitch",
        (&nats, &redis, &logs),
        &irc,
        &["xqcow".to_owned(), "#Pajlada".to_owned()],
        5002,
        Duration::from_secs(60),
    )
    .await;
    let joined: BTreeSet<String> = irc.joins.lock().unwrap().iter().cloned().collect();
    assert_eq!(
        joined,
        BTreeSet::from(["#xqcow".to_owned(), "#pajlada".to_owned()])
    );

    let chat = read_chat(&nats.url()).await;
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

/// Eight busy channels on one connection, their lines interleaved: every
/// event lands once and in its channel's order, and the channels are
/// published in parallel (a channel's event does not wait for another
/// channel's ack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twitch_channels_are_published_in_parallel_each_in_order() {
    const CHANNELS: usize = 8;
    let lines: Vec<String> = std::fs::read_to_string(repo("testdata/twitch/xqcow-2019-09-15.irc"))
        .unwrap()
        .lines()
        .take(1000)
        .map(str::to_owned)
        .collect();
    let channel = |k: usize| format!("ch{k}");
    let mut recorded = Vec::new();
    for line in &lines {
        for k in 0..CHANNELS {
            recorded.push(line.replace(" #xqcow", &format!(" #{}", channel(k))));
        }
    }
    // What each channel should hold, in order: the recorded events.
    let expected = |k: usize| -> Vec<String> {
        recorded
            .iter()
            .filter(|l| {
                l.contains(&format!(" #{} ", channel(k)))
                    || l.ends_with(&format!(" #{}", channel(k)))
            })
            .map(|l| {
                spamscope_chat::twitch::parse_line(l)
                    .unwrap()
                    .unwrap()
                    .event_id
            })
            .collect()
    };
    let irc = FakeIrc::start_after_joins(recorded.clone(), CHANNELS);
    let nats = Nats::start();
    let redis = Redis::start();
    let logs = TempDir::new("logs");
    let want = recorded.len() + CHANNELS; // and a ROOMSTATE per JOIN
    let channels: Vec<String> = (0..CHANNELS).map(channel).collect();
    let ingest = twitch_ingest_until(
        "ingest-twitch-many",
        (&nats, &redis, &logs),
        &irc,
        &channels,
        want as u64,
        Duration::from_secs(90),
    )
    .await;

    let events: Vec<spamscope_proto::v1::ChatEvent> = read_chat(&nats.url())
        .await
        .iter()
        .map(|(_, _, p)| spamscope_proto::v1::ChatEvent::decode(p.clone()).unwrap())
        .collect();
    assert_eq!(events.len(), want, "no event lost or doubled");
    for k in 0..CHANNELS {
        let got: Vec<String> = events
            .iter()
            .filter(|e| e.stream_id == channel(k))
            .filter(|e| {
                !matches!(
                    e.kind,
                    Some(spamscope_proto::v1::chat_event::Kind::RoomState(_))
                )
            })
            .map(|e| e.event_id.clone())
            .collect();
        assert_eq!(got, expected(k), "channel {} in its order", channel(k));
    }
    // The summary line: how many channels awaited their ack at once.
    let log = ingest.log_text();
    let in_flight: usize = log
        .lines()
        .find_map(|l| {
            l.split(", ")
                .find_map(|p| p.strip_suffix(" streams in flight at most"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no summary line: {}", tail(&log, 10)));
    assert!(
        (2..=CHANNELS).contains(&in_flight),
        "{in_flight} channels in flight at once: {}",
        tail(&log, 10)
    );
}

/// A local YouTube: the live-chat page and `get_live_chat` serving the
/// recorded innertube actions in pages, each with its next continuation.
async fn fake_youtube(
    pages: Vec<Vec<serde_json::Value>>,
    timeout_ms: u64,
) -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<(String, Instant)>>>,
) {
    use axum::routing::{get, post};
    let polls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let pages = std::sync::Arc::new(pages);
    let p2 = polls.clone();
    let app = axum::Router::new()
        .route(
            "/watch",
            get(|| async {
                axum::response::Html(
                    r#"<html><script>var ytInitialPlayerResponse = {"videoDetails":{"videoId":"jfKfPfyJRdk","channelId":"UCSJ4gkVC6NrvII8umztf0Ow","isLive":true}};</script></html>"#,
                )
            }),
        )
        .route(
            "/live_chat",
            get(|| async {
                axum::response::Html(
                    r#"<html><script>ytcfg.set({"INNERTUBE_API_KEY":"test-key","INNERTUBE_CONTEXT_CLIENT_VERSION":"2.20201209"});</script>
                    <script>window["ytInitialData"] = {"contents":{"liveChatRenderer":{"continuations":[{"invalidationContinuationData":{"continuation":"page-0","timeoutMs":100}}]}}};</script></html>"#,
                )
            }),
        )
        .route(
            "/youtubei/v1/live_chat/get_live_chat",
            post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let pages = pages.clone();
                let polls = p2.clone();
                async move {
                    let token = body["continuation"].as_str().unwrap_or("").to_owned();
                    assert_eq!(body["context"]["client"]["clientName"], "WEB");
                    polls.lock().unwrap().push((token.clone(), Instant::now()));
                    let i: usize = token.trim_start_matches("page-").parse().unwrap_or(usize::MAX);
                    let actions = pages.get(i).cloned().unwrap_or_default();
                    let mut cont = serde_json::json!({"actions": actions});
                    if i + 1 < pages.len() {
                        cont["continuations"] = serde_json::json!([{"timedContinuationData": {"continuation": format!("page-{}", i + 1), "timeoutMs": timeout_ms}}]);
                    }
                    axum::Json(serde_json::json!({"continuationContents": {"liveChatContinuation": cont}}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, polls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn youtube_source_follows_continuations_at_the_servers_pace() {
    let recorded: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(repo(
            "testdata/youtube/innertube-responses/comment-all-response.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let pages: Vec<Vec<serde_json::Value>> = recorded.chunks(20).map(<[_]>::to_vec).collect();
    let n_pages = pages.len();
    let (port, polls) = fake_youtube(pages, 700).await;
    let nats = Nats::start();
    let redis = Redis::start();
    let logs = TempDir::new("logs");
    let mut args: Vec<String> = vec![
        "ingest".into(),
        "--source".into(),
        "youtube".into(),
        "--video".into(),
        "jfKfPfyJRdk".into(),
    ];
    args.extend(cluster_args(&nats.url(), &redis, 16));
    args.push("--youtube-base-url".into());
    args.push(format!("http://127.0.0.1:{port}"));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut ingest = Proc::spawn(SPAMSCOPE, "ingest-youtube", &refs, &logs.0);
    // The chat closes after the last page: ingest ends by itself.
    let status = ingest
        .wait(Duration::from_secs(60))
        .expect("ingest ends when the chat closes");
    assert!(status.success(), "{}", ingest.log_text());

    let polls = polls.lock().unwrap().clone();
    let tokens: Vec<&str> = polls.iter().map(|(t, _)| t.as_str()).collect();
    let expected: Vec<String> = (0..n_pages).map(|i| format!("page-{i}")).collect();
    assert_eq!(
        tokens, expected,
        "continuations followed in order, each once"
    );
    for w in polls.windows(2) {
        let gap = w[1].1 - w[0].1;
        assert!(
            gap >= Duration::from_millis(650),
            "polled again after {gap:?}, the server asked for 700 ms"
        );
    }
    let chat = read_chat(&nats.url()).await;
    let events: Vec<spamscope_proto::v1::ChatEvent> = chat
        .iter()
        .map(|(_, _, p)| spamscope_proto::v1::ChatEvent::decode(p.clone()).unwrap())
        .collect();
    use spamscope_proto::v1::chat_event::Kind;
    let messages = events
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::Message(_))))
        .count();
    assert_eq!(messages, 65, "the 65 messages of the recorded response");
    assert!(events.iter().all(|e| e.stream_id == "jfKfPfyJRdk"));
    // The channel id from the watch page, so the channel's params apply.
    assert!(
        events
            .iter()
            .all(|e| e.channel_id == "UCSJ4gkVC6NrvII8umztf0Ow"),
        "every event names the video's channel"
    );
    assert!(matches!(
        events.last().unwrap().kind,
        Some(Kind::StreamEnded(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twitch_top_channels_come_from_helix() {
    use axum::routing::{get, post};
    // Twitch's token and streams endpoints, answered as Twitch documents them.
    let app = axum::Router::new()
        .route(
            "/auth/token",
            post(|| async {
                axum::Json(serde_json::json!({"access_token": "jostpf5q0uzmxmkba9iyug38kjtgh", "expires_in": 5011271, "token_type": "bearer"}))
            }),
        )
        .route(
            "/helix/streams",
            get(|headers: axum::http::HeaderMap| async move {
                assert_eq!(headers["client-id"], "test-client");
                assert_eq!(headers["authorization"], "Bearer jostpf5q0uzmxmkba9iyug38kjtgh");
                let stream = |id: &str, login: &str, viewers: u64| serde_json::json!({
                    "id": id, "user_id": format!("1{id}"), "user_login": login, "user_name": login,
                    "game_id": "32982", "game_name": "Grand Theft Auto V", "type": "live", "title": "title",
                    "tags": ["English"], "viewer_count": viewers, "started_at": "2021-03-10T03:18:11Z",
                    "language": "en", "thumbnail_url": "https://static-cdn.jtvnw.net/previews-ttv/live_user_x-{width}x{height}.jpg",
                    "tag_ids": [], "is_mature": false
                });
                axum::Json(serde_json::json!({
                    "data": [stream("40952121085", "xqcow", 70000), stream("40952121086", "pajlada", 900), stream("40952121087", "forsen", 800)],
                    "pagination": {}
                }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let helix_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let recorded: Vec<String> =
        std::fs::read_to_string(repo("testdata/twitch/xqcow-2019-09-15.irc"))
            .unwrap()
            .lines()
            .take(200)
            .map(str::to_owned)
            .collect();
    let irc = FakeIrc::start(recorded);
    let nats = Nats::start();
    let redis = Redis::start();
    let logs = TempDir::new("logs");
    let mut args: Vec<String> = vec![
        "ingest".into(),
        "--source".into(),
        "twitch".into(),
        "--helix-top".into(),
        "2".into(),
    ];
    args.extend(cluster_args(&nats.url(), &redis, 16));
    args.push("--twitch-server".into());
    args.push(format!("127.0.0.1:{}", irc.port));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = logs.0.join("ingest-helix.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_spamscope"))
        .args(&refs)
        .env("SPAMSCOPE_TWITCH_CLIENT_ID", "test-client")
        .env("SPAMSCOPE_TWITCH_CLIENT_SECRET", "test-secret")
        .env(
            "TWITCH_OAUTH2_URL",
            format!("http://127.0.0.1:{helix_port}/auth/"),
        )
        .env(
            "TWITCH_HELIX_URL",
            format!("http://127.0.0.1:{helix_port}/helix/"),
        )
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let joined: BTreeSet<String> = irc.joins.lock().unwrap().iter().cloned().collect();
        if joined.len() >= 2 {
            assert_eq!(
                joined,
                BTreeSet::from(["#xqcow".to_owned(), "#pajlada".to_owned()]),
                "the top 2, not the third"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no joins: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while chat_len(&nats.url()).await < 200 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !log_text.contains("test-secret"),
        "the secret never reaches the logs"
    );
}

/// Slow mode on, off, on and off again within seconds: ROOMSTATE carries
/// no id and no time, so the third line had the first's id and JetStream
/// dropped it (and the fourth the second's) as a duplicate. Every change
/// reaches the chat stream now, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slow_mode_change_reaches_the_chat_stream() {
    let mut recorded: Vec<String> =
        std::fs::read_to_string(repo("testdata/twitch/xqcow-2019-09-15.irc"))
            .unwrap()
            .lines()
            .take(40)
            .map(str::to_owned)
            .collect();
    for (at, slow) in [(5, 30), (15, 0), (25, 30), (35, 0)] {
        recorded.insert(
            at,
            format!("@room-id=71092938;slow={slow} :tmi.twitch.tv ROOMSTATE #xqcow"),
        );
    }
    let irc = FakeIrc::start(recorded.clone());
    let nats = Nats::start();
    let redis = Redis::start();
    let logs = TempDir::new("logs");
    // The 44 lines and the ROOMSTATE of the JOIN.
    twitch_ingest_until(
        "ingest-slow-mode",
        (&nats, &redis, &logs),
        &irc,
        &["xqcow".to_owned()],
        recorded.len() as u64 + 1,
        Duration::from_secs(60),
    )
    .await;
    let slow: Vec<Option<u32>> = read_chat(&nats.url())
        .await
        .iter()
        .filter_map(|(_, _, p)| {
            match spamscope_proto::v1::ChatEvent::decode(p.clone())
                .unwrap()
                .kind
            {
                Some(spamscope_proto::v1::chat_event::Kind::RoomState(r)) => Some(r.slow_mode_s),
                _ => None,
            }
        })
        .collect();
    assert_eq!(slow, [Some(0), Some(30), Some(0), Some(30), Some(0)]);
}
