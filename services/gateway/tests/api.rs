//! The gateway in process: its gRPC server on loopback over a real
//! nats-server, the in-memory state store and an embedded history file.
//! Request validation, the admin token and the params stack, in seconds
//! (the subprocess tests in `tests/gateway.rs` run it over the real logs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use spamscope_bus::{Bus, BusConfig};
use spamscope_gateway::Gateway;
use spamscope_history::HistoryStore;
use spamscope_history::any::History;
use spamscope_proto::v1::gateway_client::GatewayClient;
use spamscope_proto::v1::{
    ChannelHistoryRequest, GetParamsRequest, SearchSpamRequest, SetParamsRequest,
    UserHistoryRequest, WatchChannelRequest,
};
use spamscope_store::Store;
use spamscope_testkit::{Nats, TempDir};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use spamscope_gateway::conn::ConnLimits;

const TOKEN: &str = "in-process-admin-token-42";
const UI_PAGE: &str = "<!doctype html><title>spamscope test UI</title>";
const SHARDS: u32 = 4;

struct Running {
    _nats: Nats,
    url: String,
    addr: std::net::SocketAddr,
    _dir: TempDir,
    client: GatewayClient<Channel>,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    conn_counters: Arc<spamscope_gateway::conn::ConnCounters>,
}

async fn gateway(admin_token: Option<&str>) -> Running {
    gateway_with(
        admin_token,
        spamscope_gateway::watch::WatchLimits::default(),
    )
    .await
}

async fn gateway_with(
    admin_token: Option<&str>,
    limits: spamscope_gateway::watch::WatchLimits,
) -> Running {
    gateway_conn(admin_token, limits, ConnLimits::default()).await
}

async fn gateway_conn(
    admin_token: Option<&str>,
    limits: spamscope_gateway::watch::WatchLimits,
    conn: ConnLimits,
) -> Running {
    let nats = Nats::start();
    let bus = Bus::connect(&nats.url(), "gateway-test").await.unwrap();
    bus.ensure_streams(
        &BusConfig {
            url: nats.url(),
            shards: SHARDS,
            ..BusConfig::default()
        },
        spamscope_bus::StreamLimits::Apply,
    )
    .await
    .unwrap();
    let store = Store::open(None, "").await.unwrap();
    store.ensure_shards(SHARDS).await.unwrap();
    let dir = TempDir::new("gateway-api");
    let history = History::Embedded(Arc::new(
        HistoryStore::open(&dir.0.join("history.redb")).unwrap(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gw = Gateway::new(bus, store, history, SHARDS, admin_token.map(str::to_owned))
        .with_watch_limits(limits)
        .with_conn_limits(conn);
    let conn_counters = Arc::clone(&gw.conn_counters);
    let stop = CancellationToken::new();
    // A stand-in for the built UI: its fallback must not answer gRPC.
    let ui = dir.0.join("ui");
    std::fs::create_dir_all(&ui).unwrap();
    std::fs::write(ui.join("index.html"), UI_PAGE).unwrap();
    let health = spamscope_runtime::Health::default();
    health.set_ready(true);
    let server = tokio::spawn(spamscope_gateway::serve(
        listener,
        gw,
        Some(ui),
        health,
        stop.clone(),
    ));
    let client = GatewayClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Running {
        addr,
        url: nats.url(),
        _nats: nats,
        _dir: dir,
        client,
        stop,
        server,
        conn_counters,
    }
}

/// One chat message of Twitch stream `id` in JetStream, as ingest would
/// publish it: the stream is then known to the gateway.
async fn seed(url: &str, id: &str) {
    use prost::Message as _;
    let bus = Bus::connect(url, "seeder").await.unwrap();
    let shard = spamscope_routing::shard_of(&format!("twitch.{id}"), SHARDS);
    let ev = spamscope_testkit::twitch_message(id, 0);
    bus.publish(
        spamscope_bus::subjects::chat(shard, "twitch", id),
        &format!("seed-{id}"),
        async_nats::HeaderMap::new(),
        ev.encode_to_vec().into(),
    )
    .await
    .unwrap();
}

fn admin(scope: &str, json: &str) -> tonic::Request<SetParamsRequest> {
    let mut req = tonic::Request::new(SetParamsRequest {
        scope: scope.into(),
        params_json: json.into(),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_invalid_argument_with_a_message() {
    let mut r = gateway(Some(TOKEN)).await;
    let c = &mut r.client;
    for (what, status) in [
        (
            "empty search",
            c.search_spam(SearchSpamRequest::default())
                .await
                .unwrap_err(),
        ),
        (
            "huge page",
            c.search_spam(SearchSpamRequest {
                text: "x".into(),
                page_size: 5000,
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "long text",
            c.search_spam(SearchSpamRequest {
                text: "x".repeat(3000),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "unknown platform",
            c.channel_history(ChannelHistoryRequest {
                stream: "irc.foo".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "no stream id",
            c.channel_history(ChannelHistoryRequest {
                stream: "twitch.".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "bad page token",
            c.user_history(UserHistoryRequest {
                user: "onche".into(),
                page_token: "%%%".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "params of a bad scope",
            c.get_params(GetParamsRequest {
                scope: "irc.foo".into(),
            })
            .await
            .unwrap_err(),
        ),
        (
            "params out of range",
            c.set_params(admin("twitch.xqcow", r#"{"similarity_threshold": 7}"#))
                .await
                .unwrap_err(),
        ),
        (
            "params not JSON",
            c.set_params(admin("", "{tick_ms: 1")).await.unwrap_err(),
        ),
        (
            "unclosed pattern",
            c.set_params(admin("twitch.xqcow", r#"{"blacklist": ["(unclosed"]}"#))
                .await
                .unwrap_err(),
        ),
    ] {
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(!status.message().is_empty(), "{what}");
    }
    let e = c
        .set_params(admin("twitch.xqcow", r#"{"similarity_threshold": 7}"#))
        .await
        .unwrap_err();
    assert!(e.message().contains("similarity_threshold"), "{e:?}");
    // Nothing of the refused writes was stored.
    let p = c
        .get_params(GetParamsRequest {
            scope: "twitch.xqcow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.params_json, "{}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_params_needs_the_admin_token_and_checks_the_whole_stack() {
    let mut r = gateway(Some(TOKEN)).await;
    let c = &mut r.client;
    let plain = SetParamsRequest {
        scope: "twitch.xqcow".into(),
        params_json: r#"{"long_message_graphemes": 100}"#.into(),
    };
    assert_eq!(
        c.set_params(plain.clone()).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut wrong = tonic::Request::new(plain);
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer not-the-token".parse().unwrap());
    let e = c.set_params(wrong).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(!e.message().contains(TOKEN));

    let p = c
        .set_params(admin("twitch.xqcow", r#"{"long_message_graphemes": 100}"#))
        .await
        .unwrap()
        .into_inner();
    assert!(
        p.effective_json.contains("\"long_message_graphemes\":100"),
        "{p:?}"
    );

    // A channel layer valid alone (quiet 15 s over the default 10 s tick)
    // makes a cluster layer valid alone (a 20 s tick) invalid, and the
    // other way round; scopes are case-normalised.
    c.set_params(admin("twitch.XQCOW", r#"{"spam_quiet_ms": 15000}"#))
        .await
        .unwrap();
    let e = c
        .set_params(admin("", r#"{"tick_ms": 20000}"#))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("twitch.xqcow"), "{e:?}");
    c.set_params(admin("", r#"{"tick_ms": 12000}"#))
        .await
        .unwrap();
    let e = c
        .set_params(admin("twitch.xqcow", r#"{"spam_quiet_ms": 11000}"#))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("spam_quiet_ms"), "{e:?}");
    for scope in ["", "twitch.xqcow", "youtube.never-seen"] {
        let p = c
            .get_params(GetParamsRequest {
                scope: scope.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            p.effective_json.contains("\"tick_ms\":12000"),
            "{scope}: {p:?}"
        );
    }
    let p = c
        .get_params(GetParamsRequest {
            scope: "twitch.xqcow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        p.effective_json.contains("\"spam_quiet_ms\":15000"),
        "{p:?}"
    );
    // The scopes with overrides are listed, and the schema describes every
    // key of the effective params with its range.
    assert_eq!(p.scopes, vec!["".to_owned(), "twitch.xqcow".to_owned()]);
    let schema: serde_json::Value = serde_json::from_str(&p.schema_json).unwrap();
    let effective: serde_json::Value = serde_json::from_str(&p.effective_json).unwrap();
    let props = schema["properties"].as_object().unwrap();
    for key in effective.as_object().unwrap().keys() {
        assert!(props[key]["description"].is_string(), "{key}");
    }
    assert_eq!(props["sensitivity"]["maximum"], 20.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_params_are_read_only() {
    let mut r = gateway(None).await;
    let e = r
        .client
        .set_params(admin("", r#"{"tick_ms": 12000}"#))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("read-only"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_watch_streams_and_the_server() {
    let mut r = gateway(None).await;
    seed(&r.url, "xqcow").await;
    let mut watch = r
        .client
        .watch_channel(WatchChannelRequest {
            stream: "twitch.xqcow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    r.stop.cancel();
    // The open stream ends (with or without a status) and the server
    // returns, both well within the roles' 10 s shutdown grace.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = watch.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the watch stream outlived the shutdown");
    let served = tokio::time::timeout(Duration::from_secs(5), r.server)
        .await
        .expect("the server outlived the shutdown");
    served.unwrap().expect("the server ended cleanly");
}

/// A YouTube video sits under its channel's layer once the gateway has
/// seen its chat name the channel: GetParams stacks it, and SetParams checks
/// a video layer over it and a channel layer under the videos' layers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_videos_params_sit_under_its_channels_layer() {
    use prost::Message;
    const VIDEO: &str = "youtube.jfKfPfyJRdk";
    const CHANNEL: &str = "youtube.UCSJ4gkVC6NrvII8umztf0Ow";
    let mut r = gateway(Some(TOKEN)).await;
    let c = &mut r.client;
    c.set_params(admin(CHANNEL, r#"{"spam_quiet_ms": 15000}"#))
        .await
        .unwrap();
    let effective = |p: spamscope_proto::v1::Params| -> serde_json::Value {
        serde_json::from_str(&p.effective_json).unwrap()
    };
    let get = |c: &mut GatewayClient<Channel>, scope: &'static str| {
        let mut c = c.clone();
        async move {
            c.get_params(GetParamsRequest {
                scope: scope.into(),
            })
            .await
        }
    };
    // Before its chat is seen the video is on its own.
    let before = effective(get(c, VIDEO).await.unwrap().into_inner());
    assert_ne!(before["spam_quiet_ms"], 15000, "{before}");

    let bus = Bus::connect(&r.url, "chat-writer").await.unwrap();
    let mut ev = spamscope_testkit::twitch_message("jfKfPfyJRdk", 1);
    ev.platform = spamscope_proto::v1::Platform::Youtube as i32;
    ev.channel_id = "UCSJ4gkVC6NrvII8umztf0Ow".into();
    let subject = spamscope_bus::subjects::chat(0, "youtube", "jfKfPfyJRdk");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        bus.client
            .publish(subject.clone(), ev.encode_to_vec().into())
            .await
            .unwrap();
        let p = effective(get(c, VIDEO).await.unwrap().into_inner());
        if p["spam_quiet_ms"] == 15000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the channel layer never applied to the video: {p}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A video layer valid alone (a 20 s tick) but not over its channel's
    // 15 s quiet period is refused, naming the key.
    let e = c
        .set_params(admin(VIDEO, r#"{"tick_ms": 20000}"#))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("spam_quiet_ms"), "{e:?}");
    let p = c
        .set_params(admin(VIDEO, r#"{"tick_ms": 12000}"#))
        .await
        .unwrap()
        .into_inner();
    let p = effective(p);
    assert_eq!(
        (p["tick_ms"].clone(), p["spam_quiet_ms"].clone()),
        (12000.into(), 15000.into()),
        "{p}"
    );
    // And a channel layer that would not hold under the video's layer.
    let e = c
        .set_params(admin(CHANNEL, r#"{"spam_quiet_ms": 11000}"#))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains(VIDEO), "{e:?}");
}

fn watch_request(stream: &str) -> WatchChannelRequest {
    WatchChannelRequest {
        stream: stream.into(),
    }
}

/// A client may hold so many watch streams at once; the slot comes back
/// when it closes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_capped_per_client() {
    let limits = spamscope_gateway::watch::WatchLimits {
        total: 100,
        per_client: 3,
        buffer: 64,
        ..Default::default()
    };
    let mut r = gateway_with(None, limits).await;
    for n in 0..4 {
        seed(&r.url, &format!("chan{n}")).await;
    }
    let mut open = Vec::new();
    for n in 0..3 {
        open.push(
            r.client
                .watch_channel(watch_request(&format!("twitch.chan{n}")))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let e = r
        .client
        .watch_channel(watch_request("twitch.chan3"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("limit per client"), "{e:?}");
    drop(open.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match r.client.watch_channel(watch_request("twitch.chan3")).await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "the closed stream's slot never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A watcher that does not read is ended once its buffer fills, instead of
/// buffering without limit; it is told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_does_not_read_is_ended_not_buffered() {
    use prost::Message;
    let limits = spamscope_gateway::watch::WatchLimits {
        total: 100,
        per_client: 10,
        buffer: 16,
        stall: Duration::from_millis(500),
    };
    let r = gateway_with(None, limits).await;
    // A client that takes no more than HTTP/2's default windows (a tonic
    // client takes 2 MB per stream before the application reads).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", r.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    seed(&r.url, "flood").await;
    let mut watch = GatewayClient::new(channel)
        .watch_channel(watch_request("twitch.flood"))
        .await
        .unwrap()
        .into_inner();
    let bus = Bus::connect(&r.url, "flooder").await.unwrap();
    let subject = spamscope_bus::subjects::chat(0, "twitch", "flood");
    const SENT: u32 = 5_000;
    for n in 0..SENT {
        let mut ev = spamscope_testkit::twitch_message("flood", n);
        if let Some(spamscope_proto::v1::chat_event::Kind::Message(m)) = &mut ev.kind {
            m.text = format!("{n} {}", "flood ".repeat(50));
        }
        bus.client
            .publish(subject.clone(), ev.encode_to_vec().into())
            .await
            .unwrap();
    }
    bus.client.flush().await.unwrap();
    // Past the stall time without reading: the stream is ended. Read only
    // now: what was in flight and buffered, then the reason.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut received = 0u32;
    let end = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match watch.next().await {
                Some(Ok(_)) => received += 1,
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream of a watcher that did not read never ended");
    let e = end.expect("the stream ended without saying why");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("held 16 events"), "{e:?}");
    assert!(received < SENT, "{received} of {SENT}: nothing was bounded");
}

/// A plain HTTP/1.1 GET on `addr`: status line and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.lines().next().unwrap_or("").to_owned();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// One port for everything a client or a probe asks: the health and
/// metrics paths are answered by the role (not by the UI's page), the UI
/// serves its page, a gRPC call to no service is UNIMPLEMENTED (it was an
/// HTTP 405, which clients report as UNKNOWN), and reflection v1 and
/// v1alpha both list the API and health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_port_answers_health_metrics_ui_and_unknown_grpc() {
    let r = gateway(None).await;
    let (status, body) = http_get(r.addr, "/healthz").await;
    assert!(
        status.contains("200") && body.contains("ok"),
        "{status} {body}"
    );
    let (status, body) = http_get(r.addr, "/readyz").await;
    assert!(
        status.contains("200") && body.contains("ready"),
        "{status} {body}"
    );
    let (status, body) = http_get(r.addr, "/metrics").await;
    assert!(
        status.contains("200") && !body.contains("<title>"),
        "{status} {body}"
    );
    let (_, body) = http_get(r.addr, "/channels/twitch.xqcow").await;
    assert!(body.contains(UI_PAGE), "{body}");

    let channel = Channel::from_shared(format!("http://{}", r.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let err = grpc
        .unary::<_, spamscope_proto::v1::ListChannelsResponse, _>(
            tonic::Request::new(spamscope_proto::v1::ListChannelsRequest::default()),
            tonic::codegen::http::uri::PathAndQuery::from_static("/nope.v1.Nope/Call"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert!(err.message().contains("/nope.v1.Nope/Call"), "{err:?}");

    // Reflection, both versions: the services listed.
    use tonic_reflection::pb::{v1, v1alpha};
    let mut c1 = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let req = v1::ServerReflectionRequest {
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
        ..Default::default()
    };
    let mut answers = c1
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list from reflection v1")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["spamscope.v1.Gateway", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "v1 lists {names:?}");
    }
    let mut ca = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let req = v1alpha::ServerReflectionRequest {
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
        ..Default::default()
    };
    let mut answers = ca
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list from reflection v1alpha")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["spamscope.v1.Gateway", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "v1alpha lists {names:?}");
    }
}

/// A stream nobody has seen is NOT_FOUND at once, for its page and its
/// live view (WatchChannel used to wait on it until the client's deadline);
/// once chat of it is in JetStream it is known, whatever the case of its
/// key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_streams_are_not_found_at_once() {
    let mut r = gateway(None).await;
    let started = std::time::Instant::now();
    let e = r
        .client
        .watch_channel(watch_request("twitch.nobody_here"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("twitch.nobody_here"), "{e:?}");
    let e = r
        .client
        .channel_history(ChannelHistoryRequest {
            stream: "twitch.nobody_here".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    seed(&r.url, "somebody").await;
    r.client
        .channel_history(ChannelHistoryRequest {
            stream: "twitch.SomeBody".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    r.client
        .watch_channel(watch_request("twitch.somebody"))
        .await
        .unwrap();
}

/// Whether the server closed `s` within `within` (EOF or reset), reading
/// and dropping whatever it sent first (an HTTP/1.1 408 or 400).
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// 1,000 idle or half-open connections were all still held 70 s later.
/// Now a connection that sends nothing, and one that never finishes its
/// request head, are closed after the header timeout; a kept-alive
/// HTTP/1.1 connection that goes quiet too. A WatchChannel stream quieter
/// than that timeout is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_open_connections_are_closed_but_a_quiet_watch_is_not() {
    use tokio::io::AsyncWriteExt as _;
    let conn = ConnLimits {
        header_timeout: Duration::from_secs(1),
        keepalive: Duration::from_secs(1),
        ..ConnLimits::default()
    };
    let r = gateway_conn(None, spamscope_gateway::watch::WatchLimits::default(), conn).await;
    seed(&r.url, "quiet").await;
    let mut watch = r
        .client
        .clone()
        .watch_channel(watch_request("twitch.quiet"))
        .await
        .unwrap()
        .into_inner();

    let mut silent = Vec::new();
    let mut half_open = Vec::new();
    for _ in 0..5 {
        silent.push(tokio::net::TcpStream::connect(r.addr).await.unwrap());
        let mut s = tokio::net::TcpStream::connect(r.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
            .await
            .unwrap();
        half_open.push(s);
    }
    // A kept-alive connection: one answered request, then quiet.
    let mut kept = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    for s in silent
        .iter_mut()
        .chain(half_open.iter_mut())
        .chain([&mut kept])
    {
        assert!(
            closed_within(s, Duration::from_secs(10)).await,
            "a connection was still open 10 s past a 1 s header timeout"
        );
    }
    assert!(
        r.conn_counters
            .silent
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 5,
        "the silent connections were counted"
    );

    // The watch stream, quiet all along, still delivers.
    let bus = Bus::connect(&r.url, "after").await.unwrap();
    let shard = spamscope_routing::shard_of("twitch.quiet", SHARDS);
    let ev = spamscope_testkit::twitch_message("quiet", 7);
    bus.client
        .publish(
            spamscope_bus::subjects::chat(shard, "twitch", "quiet"),
            prost::Message::encode_to_vec(&ev).into(),
        )
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the quiet watch stream delivered nothing")
        .expect("the quiet watch stream ended")
        .expect("the quiet watch stream failed");
    drop(got);
}

/// Past `max_connections` a connection is closed as it comes, counted; a
/// slot given back takes a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_maximum_are_closed_at_once() {
    let conn = ConnLimits {
        max_connections: 4,
        ..ConnLimits::default()
    };
    let r = gateway_conn(None, spamscope_gateway::watch::WatchLimits::default(), conn).await;
    // The test's gRPC client holds one; three more fill the gateway.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(r.addr).await.unwrap());
    }
    let mut over = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    // Well before the 30 s header timeout.
    assert!(
        closed_within(&mut over, Duration::from_secs(5)).await,
        "the fifth connection was held"
    );
    assert_eq!(
        r.conn_counters
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // Refused connections are closed under the writer: no unwraps.
        let mut answer = String::new();
        if let Ok(mut s) = tokio::net::TcpStream::connect(r.addr).await {
            let asked = s
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .await;
            if asked.is_ok() {
                let _ = s.read_to_string(&mut answer).await;
            }
        }
        if answer.starts_with("HTTP/1.1 200") {
            assert!(answer.ends_with("ok\n"), "{answer}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot given back never took a new connection: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
