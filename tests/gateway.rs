//! The gateway over the pipeline fed by the real logs: a tonic client
//! against `spamscope standalone` on loopback (real nats-server and
//! redis-server).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::*;
use spamscope_proto::v1::{
    ChannelChatRequest, ChannelChatResponse, ChannelHistoryRequest, ClusterStatusRequest,
    GetParamsRequest, ListChannelsRequest, SearchSpamRequest, SetParamsRequest,
    SpamEventDetailRequest, UserActivityRequest, UserHistoryRequest, WatchChannelRequest,
    chat_event, watch_channel_event,
};
use tonic::Code;

const TOKEN: &str = "test-admin-token-0123456789";

struct Running {
    nats: Nats,
    redis: Redis,
    _dir: TempDir,
    proc: Proc,
    addr: String,
}

fn start_standalone() -> Running {
    let nats = Nats::start();
    let redis = Redis::start();
    let dir = TempDir::new("gw");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let history = dir.0.join("history.redb").display().to_string();
    let xq = repo("testdata/twitch/xqcow-2019-09-15.irc")
        .display()
        .to_string();
    let cc = repo("testdata/youtube/chilledcow-2020-11.chat-downloader.json")
        .display()
        .to_string();
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let tf = token_file.display().to_string();
    let args = [
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
        "--admin-token-file",
        &tf,
        "--speed",
        "0",
        "--replay",
        &xq,
        "--replay",
        &cc,
    ];
    let proc = Proc::spawn(SPAMSCOPE, "standalone", &args, &dir.0);
    Running {
        nats,
        redis,
        _dir: dir,
        proc,
        addr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_history_params_and_status_over_the_real_logs() {
    let r = start_standalone();
    let mut c = gateway_client(&r.addr, &r.proc).await;

    // A pasted variant of the copypasta (other emotes, zero-width, case)
    // finds the YouTube stream where it was seen, with times.
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let res = c
            .search_spam(SearchSpamRequest {
                text: "\u{200b}spam🥰this🥰cheese🥰for🥰good🥰luck".into(),
                page_size: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if let Some(m) = res
            .matches
            .iter()
            .find(|m| m.sightings.iter().any(|s| s.count > 100))
        {
            break m.clone();
        }
        assert!(
            Instant::now() < deadline,
            "copypasta not found: {res:?}\n{}",
            tail(&r.proc.log_text(), 20)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let s = &found.sightings[0];
    assert_eq!(s.stream_id, "chilledcow-2020-11");
    assert!(s.first_seen_ms > 1_607_000_000_000 && s.last_seen_ms >= s.first_seen_ms);

    // The history writer may still be writing xqcow's outputs (its only
    // spam-class event, the flood, is what the spam rate counts): wait for
    // all three, up to the same deadline.
    let h = loop {
        let h = c
            .channel_history(ChannelHistoryRequest {
                stream: "twitch.xqcow".into(),
                page_size: 5,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if !h.spam_events.is_empty() && !h.decisions.is_empty() && !h.spam_rate.is_empty() {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "xqcow history incomplete: {} events, {} decisions, {} rate points",
            h.spam_events.len(),
            h.decisions.len(),
            h.spam_rate.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        h.spam_events
            .windows(2)
            .all(|w| w[0].last_seen_ms >= w[1].last_seen_ms),
        "newest first"
    );
    let page2 = c
        .channel_history(ChannelHistoryRequest {
            stream: "twitch.xqcow".into(),
            page_size: 5,
            page_token: h.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!h.next_page_token.is_empty() && !page2.spam_events.is_empty());
    assert!(page2.spam_events[0].last_seen_ms <= h.spam_events.last().unwrap().last_seen_ms);
    // Twitch logins are case-insensitive: the same history under any case.
    let upper = c
        .channel_history(ChannelHistoryRequest {
            stream: "twitch.XQCow".into(),
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // (The writer may still be adding events: compare the stream, not the
    // page.)
    assert!(!upper.spam_events.is_empty());
    assert!(upper.spam_events.iter().all(|e| e.stream_id == "xqcow"));

    let u = c
        .user_history(UserHistoryRequest {
            user: "Onche".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.decisions.len(), 1);
    assert!(
        u.decisions[0]
            .triggers
            .iter()
            .any(|t| t.name == "wall" && t.observed >= 300.0)
    );

    let ch = c
        .list_channels(ListChannelsRequest { limit: 10 })
        .await
        .unwrap()
        .into_inner();
    assert!(
        ch.channels.iter().any(|x| x.stream == "twitch.xqcow"),
        "{ch:?}"
    );

    let st = c
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.shard_count, 8);
    assert_eq!(st.replicas, vec!["standalone-0".to_owned()]);
    assert!(
        st.shards
            .iter()
            .all(|s| s.owner == "standalone-0" && s.epoch >= 1)
    );

    // The admin token read from --admin-token-file guards SetParams.
    // (Request validation and the params stack are tested in process, in
    // services/gateway/tests/api.rs.)
    let set = |json: &str| SetParamsRequest {
        scope: "twitch.xqcow".into(),
        params_json: json.into(),
    };
    let refused = c
        .set_params(set(r#"{"long_message_graphemes": 100}"#))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut ok = tonic::Request::new(set(r#"{"long_message_graphemes": 100}"#));
    ok.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let p = c.set_params(ok).await.unwrap().into_inner();
    assert!(
        p.effective_json.contains("\"long_message_graphemes\":100"),
        "{p:?}"
    );
    let p = c
        .get_params(GetParamsRequest {
            scope: "twitch.xqcow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(p.params_json.contains("long_message_graphemes"), "{p:?}");
    let _ = (&r.nats, &r.redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_channel_streams_chat_and_spam_events_live() {
    let r = start_standalone();
    let mut c = gateway_client(&r.addr, &r.proc).await;
    // Before any chat of it the channel is unknown, said at once.
    let e = c
        .watch_channel(WatchChannelRequest {
            stream: "twitch.watchme".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // The xqcow log again, as another channel, at 60x.
    let dir = TempDir::new("watch");
    let text = std::fs::read_to_string(repo("testdata/twitch/xqcow-2019-09-15.irc"))
        .unwrap()
        .replace("#xqcow", "#watchme");
    let file = dir.0.join("watchme.irc");
    std::fs::write(&file, text).unwrap();
    let f = file.display().to_string();
    let mut ing = Proc::spawn(
        SPAMSCOPE,
        "ingest",
        &[
            "ingest",
            "--nats-url",
            &r.nats.url(),
            "--redis-url",
            &r.redis.url(),
            "--shards",
            "8",
            "--speed",
            "60",
            &f,
        ],
        &dir.0,
    );
    // The page opens once its first chat is in.
    let mut watch = spamscope_testkit::jetstream::watch_once_known(&mut c, "twitch.watchme").await;
    let (mut chat, mut spam) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while chat < 100 || spam < 1 {
        let next = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("watch stalled");
        match next.unwrap().unwrap().kind.unwrap() {
            watch_channel_event::Kind::Chat(ev) => {
                assert_eq!(ev.stream_id, "watchme");
                chat += 1;
            }
            watch_channel_event::Kind::SpamEvent(e) => {
                assert_eq!(e.stream_id, "watchme");
                spam += 1;
            }
            _ => {}
        }
        assert!(Instant::now() < deadline);
    }
    assert!(ing.wait(Duration::from_secs(60)).unwrap().success());

    // gRPC-web on the same port (what the browser uses).
    let reply = grpc_web_call(&r.addr, "/spamscope.v1.Gateway/ListChannels", &[]);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("grpc-status:0") || reply.contains("grpc-status: 0"),
        "{reply}"
    );
}

/// Every page of the kept chat of `stream`, newest page first.
async fn chat_pages(
    c: &mut spamscope_proto::v1::gateway_client::GatewayClient<tonic::transport::Channel>,
    stream: &str,
    limit: u32,
) -> Vec<ChannelChatResponse> {
    let mut pages: Vec<ChannelChatResponse> = Vec::new();
    loop {
        let page_token = pages
            .last()
            .map(|p| p.next_page_token.clone())
            .unwrap_or_default();
        let p = c
            .channel_chat(ChannelChatRequest {
                stream: stream.into(),
                limit,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        let more = !p.next_page_token.is_empty();
        pages.push(p);
        if !more {
            return pages;
        }
        assert!(pages.len() < 100, "paging does not end");
    }
}

fn is_message(ev: &spamscope_proto::v1::ChatEvent) -> bool {
    matches!(ev.kind, Some(chat_event::Kind::Message(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_chat_pages_back_to_the_start_and_a_spam_event_opens_with_its_messages() {
    let r = start_standalone();
    let mut c = gateway_client(&r.addr, &r.proc).await;
    // Counted from the log itself: its chat lines and moderator actions.
    let log = std::fs::read_to_string(repo("testdata/twitch/xqcow-2019-09-15.irc")).unwrap();
    let privmsgs = log
        .lines()
        .filter(|l| l.contains(" PRIVMSG #xqcow "))
        .count();
    let clearchats = log
        .lines()
        .filter(|l| l.contains(" CLEARCHAT #xqcow"))
        .count();
    assert!(privmsgs > 4000 && clearchats > 10);

    // Page back until the whole log is in and the newest page is scored.
    let deadline = Instant::now() + Duration::from_secs(90);
    let pages = loop {
        let pages = chat_pages(&mut c, "twitch.xqcow", 1000).await;
        let messages: usize = pages
            .iter()
            .map(|p| p.events.iter().filter(|e| is_message(e)).count())
            .sum();
        let newest = &pages[0];
        let scored = newest.scores.len();
        if messages == privmsgs && scored == newest.events.iter().filter(|e| is_message(e)).count()
        {
            break pages;
        }
        assert!(
            messages <= privmsgs,
            "{messages} messages read back, the log has {privmsgs}"
        );
        assert!(
            Instant::now() < deadline,
            "{messages} of {privmsgs} messages, {scored} scores on the newest page\n{}",
            tail(&r.proc.log_text(), 20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Oldest first within a page, pages newest first, no event twice.
    let all: Vec<_> = pages.iter().rev().flat_map(|p| p.events.iter()).collect();
    assert!(
        all.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms),
        "out of order"
    );
    let ids: std::collections::HashSet<_> = all.iter().map(|e| &e.event_id).collect();
    assert_eq!(ids.len(), all.len(), "an event on two pages");
    assert!(pages.len() >= 5, "{} pages", pages.len());
    assert!(
        pages[..pages.len() - 1]
            .iter()
            .all(|p| p.events.len() >= 1000)
    );
    assert!(pages.iter().all(|p| p.undecodable == 0));
    let removals = all
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                Some(
                    chat_event::Kind::UserTimedOut(_)
                        | chat_event::Kind::UserBanned(_)
                        | chat_event::Kind::ChatCleared(_)
                )
            )
        })
        .count();
    assert_eq!(removals, clearchats);
    // One user's messages and the moderators' actions against them, by
    // login in another case and by user id, as the log counts them: the
    // user timed out most often.
    let mut said: std::collections::BTreeMap<&str, (usize, usize, &str)> = Default::default();
    for l in log.lines() {
        if let Some((tags, rest)) = l.split_once(" :")
            && let Some((who, _)) = rest.split_once('!')
            && rest.contains(" PRIVMSG #xqcow ")
        {
            let id = tags
                .split(';')
                .find_map(|t| t.strip_prefix("user-id="))
                .unwrap_or("");
            let e = said.entry(who).or_default();
            e.0 += 1;
            e.2 = id;
        } else if let Some((_, target)) = l.split_once(" CLEARCHAT #xqcow :") {
            said.entry(target).or_default().1 += 1;
        }
    }
    let (who, &(n_msgs, n_actions, id)) = said
        .iter()
        .filter(|(_, v)| v.0 > 0)
        .max_by_key(|(k, v)| (v.1, std::cmp::Reverse(*k)))
        .unwrap();
    assert!(n_actions >= 2, "{who}: {n_actions} timeouts");
    for user in [who.to_uppercase(), id.to_owned()] {
        let a = c
            .user_activity(UserActivityRequest {
                user: user.clone(),
                stream: "twitch.xqcow".into(),
                limit: 1000,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(a.complete);
        assert_eq!(a.messages.len(), n_msgs, "{user}: messages");
        assert_eq!(a.moderation.len(), n_actions, "{user}: moderator actions");
        assert!(a.messages.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
    }
    // Bad requests are refused with the reason; unknown streams are not found.
    for (req, code) in [
        (
            ChannelChatRequest {
                stream: "twitch.xqcow".into(),
                limit: 1001,
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            ChannelChatRequest {
                stream: "twitch.xqcow".into(),
                page_token: "x".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            ChannelChatRequest {
                stream: "twitch.nobodyhere".into(),
                ..Default::default()
            },
            Code::NotFound,
        ),
    ] {
        assert_eq!(c.channel_chat(req).await.unwrap_err().code(), code);
    }

    // The biggest spam event opens with its messages, users and timeline
    // (once the history writer has settled: two reads alike).
    let mut h = Default::default();
    loop {
        let next = c
            .channel_history(ChannelHistoryRequest {
                stream: "twitch.xqcow".into(),
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if next == h {
            break;
        }
        assert!(Instant::now() < deadline, "the history does not settle");
        h = next;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let h: spamscope_proto::v1::ChannelHistoryResponse = h;
    let event = h
        .spam_events
        .iter()
        .max_by_key(|e| e.count)
        .expect("xqcow has spam events")
        .clone();
    let d = c
        .spam_event_detail(SpamEventDetailRequest {
            stream: "twitch.xqcow".into(),
            event_id: event.event_id,
            limit: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    let got = d.event.clone().unwrap();
    assert_eq!(got.event_id, event.event_id);
    eprintln!(
        "event {} {:?}: count {}, scored {}, found {}, users {}, shown {}",
        event.event_id,
        event.text,
        event.count,
        d.scored_messages,
        d.messages_found,
        d.users.len(),
        d.messages.len()
    );
    assert!(d.scored_messages > 0 && d.scored_messages <= got.count);
    assert_eq!(
        d.messages_found, d.scored_messages,
        "every scored message is kept"
    );
    assert_eq!(d.messages.len() as u64, d.messages_found.min(1000));
    assert_eq!(
        d.timeline.iter().map(|t| t.messages).sum::<u64>(),
        d.scored_messages
    );
    // Who sent it: the top 100 senders, counted from the same scores; the
    // distinct authors of its messages match the event's own count.
    assert!(d.users.len() <= 100 && d.users.windows(2).all(|w| w[0].messages >= w[1].messages));
    assert!(d.users.iter().map(|u| u.messages).sum::<u64>() <= d.scored_messages);
    let authors: std::collections::HashSet<_> = d
        .messages
        .iter()
        .filter_map(|m| match &m.kind {
            Some(chat_event::Kind::Message(x)) => x.author.as_ref().map(|a| a.login.clone()),
            _ => None,
        })
        .collect();
    let unscored = got.count - d.scored_messages;
    assert!(
        authors.len() as u64 <= got.unique_users
            && authors.len() as u64 + unscored >= got.unique_users,
        "{} authors, the event says {} users",
        authors.len(),
        got.unique_users
    );
    // Its messages are the chat's own, in the event's time.
    for m in &d.messages {
        assert!(ids.contains(&m.event_id));
        assert!(m.ts_ms >= got.first_seen_ms - 60_000 && m.ts_ms <= got.last_seen_ms);
    }
    // Decisions page on their own token, to the same set as one big page.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let p = c
            .channel_history(ChannelHistoryRequest {
                stream: "twitch.xqcow".into(),
                page_size: 7,
                decisions_page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(token.is_empty() || p.spam_events.is_empty());
        paged.extend(p.decisions.into_iter().map(|d| (d.user_id, d.at_ms)));
        token = p.next_decisions_page_token;
        if token.is_empty() {
            break;
        }
    }
    let whole: Vec<_> = h
        .decisions
        .iter()
        .map(|d| (d.user_id.clone(), d.at_ms))
        .collect();
    assert!(
        whole.len() > 7 && whole.len() < 100,
        "{} decisions",
        whole.len()
    );
    assert_eq!(paged, whole);
    let e = c
        .spam_event_detail(SpamEventDetailRequest {
            stream: "twitch.xqcow".into(),
            event_id: 999_999_999,
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

/// One unary gRPC-web call over HTTP/1.1 with an empty message.
fn grpc_web_call(addr: &str, path: &str, msg: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(msg);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// `make run` as a person runs it: standalone with its own nats-server
/// child and the in-memory store, replaying in real time, a channel page
/// open (a WatchChannel stream). Ctrl-C must end it promptly with status 0,
/// the watch stream must end, the nats-server child must be gone, and the
/// next start on the same history file must not find it locked.
/// The port standalone's own nats-server listens on, from its log.
async fn standalone_nats_port(sa: &Proc) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(p) = sa.log_text().lines().find_map(|l| {
            l.strip_prefix("standalone: started nats-server on 127.0.0.1:")
                .and_then(|p| p.trim().parse().ok())
        }) {
            return p;
        }
        assert!(Instant::now() < deadline, "{}", sa.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A SIGKILL gives standalone no chance to stop its nats-server: the next
/// standalone started on the machine stops it and removes its store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_standalone_stops_a_nats_server_a_killed_one_left() {
    let dir = TempDir::new("orphan");
    // A temp dir of their own: other tests' standalones reap only theirs.
    let tmp = dir.0.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let env = [("TMPDIR".to_owned(), tmp.display().to_string())];
    let start = |name: &str| {
        let history = dir.0.join(format!("{name}.redb")).display().to_string();
        let addr = format!("127.0.0.1:{}", free_port());
        Proc::spawn_env(
            SPAMSCOPE,
            name,
            &["standalone", "--listen", &addr, "--history-path", &history],
            &dir.0,
            &env,
        )
    };
    let mut first = start("killed");
    let port = standalone_nats_port(&first).await;
    let store = tmp.join(format!("spamscope-standalone-{}", first.pid()));
    assert!(store.is_dir(), "{} missing", store.display());
    first.signal("-KILL");
    first.wait(Duration::from_secs(10)).expect("killed");
    // The fault left something behind: the server still answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the nats-server did not outlive the SIGKILL: nothing to reap"
    );

    let mut second = start("next");
    standalone_nats_port(&second).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || store.exists() {
        assert!(
            Instant::now() < deadline,
            "the orphaned nats-server on {port} or its store {} is still there:\n{}",
            store.display(),
            second.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.signal("-INT");
    let status = second
        .wait(Duration::from_secs(15))
        .expect("stops on SIGINT");
    assert!(status.success(), "{}", second.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_standalone_with_a_channel_page_open_and_it_starts_again() {
    let dir = TempDir::new("stop");
    let history = dir.0.join("history.redb").display().to_string();
    let xq = repo("testdata/twitch/xqcow-2019-09-15.irc")
        .display()
        .to_string();
    let start = |name: &str, addr: &str| {
        Proc::spawn(
            SPAMSCOPE,
            name,
            &[
                "standalone",
                "--shards",
                "8",
                "--listen",
                addr,
                "--history-path",
                &history,
                "--speed",
                "1",
                "--replay",
                &xq,
            ],
            &dir.0,
        )
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let mut sa = start("first", &addr);
    let mut c = gateway_client(&addr, &sa).await;
    let nats_port = standalone_nats_port(&sa).await;
    let mut watch = c
        .watch_channel(WatchChannelRequest {
            stream: "twitch.xqcow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // The page is live: chat arrives on it.
    let first = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("chat on the open page");
    assert!(matches!(first, Some(Ok(_))), "{first:?}");

    sa.signal("-INT");
    let status = sa
        .wait(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("still running 15 s after SIGINT:\n{}", sa.log_text()));
    assert!(status.success(), "{status:?}\n{}", sa.log_text());
    let log = sa.log_text();
    assert!(!log.contains("abandoned"), "{log}");
    // The open stream ended (instead of hanging until a deadline).
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = watch.next().await {}
    })
    .await;
    assert!(rest.is_ok(), "the watch stream did not end");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", nats_port)).is_err(),
        "the nats-server child outlived standalone"
    );

    // Started again on the same history file: it opens and serves.
    let addr2 = format!("127.0.0.1:{}", free_port());
    let mut again = start("second", &addr2);
    let mut c2 = gateway_client(&addr2, &again).await;
    c2.list_channels(ListChannelsRequest::default())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", again.log_text()));
    assert!(
        !again.log_text().contains("Cannot acquire lock"),
        "{}",
        again.log_text()
    );
    again.signal("-TERM");
    let status = again
        .wait(Duration::from_secs(15))
        .expect("stops on SIGTERM");
    assert!(status.success(), "{}", again.log_text());
}
