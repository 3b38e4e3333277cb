//! `Backtest` through the gateway: its gRPC server on loopback over the
//! real #xqcow log kept in a real nats-server. The report must be the one
//! the same policy gives on the file itself (a different path: the file
//! parsed here, not read back from JetStream), the hours must cut the chat
//! by its own time, and bad requests are refused with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use spamscope_gateway::Gateway;
use spamscope_history::HistoryStore;
use spamscope_history::any::History;
use spamscope_proto::v1::gateway_client::GatewayClient;
use spamscope_proto::v1::{BacktestRequest, ChatEvent};
use spamscope_store::Store;
use spamscope_testkit::{InProcessCluster, Nats, TempDir, xqcow};
use tokio_util::sync::CancellationToken;
use tonic::Code;

const ADMIN: &str = "admin-token-for-the-backtest-test";
const POLICY: &str = "[defaults]\ncopypasta = \"suggest\"\nflood = \"auto\"\n";

fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    r
}

/// The users the moderators timed out or banned in the raw log, counted
/// from its CLEARCHAT lines (not by the code under test).
fn cleared_users(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(" CLEARCHAT #") && l.contains("target-user-id="))
        .filter_map(|l| {
            l.rsplit_once(" :")
                .map(|(_, who)| who.trim().to_lowercase())
        })
        .collect::<BTreeSet<String>>()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_over_the_last_hours_of_kept_chat() {
    let nats = Nats::start();
    let store = Store::open(None, "").await.unwrap();
    let shards = 4;
    let c = InProcessCluster::new(&nats.url(), store.clone(), shards, Duration::from_secs(60))
        .await
        .unwrap();

    // The log, and before it, two hours earlier, a few of its messages
    // again (other ids): chat the one-hour backtest must leave out.
    let log = std::fs::read_to_string(xqcow()).unwrap();
    let read = spamscope_chat::replay::read_files(&[xqcow()]).unwrap();
    let events: Vec<ChatEvent> = spamscope_chat::replay::merge(read);
    let earlier: Vec<ChatEvent> = events
        .iter()
        .filter(|e| e.ts_ms > 0)
        .take(40)
        .map(|e| ChatEvent {
            event_id: format!("earlier-{}", e.event_id),
            ts_ms: e.ts_ms - 2 * 3_600_000,
            ..e.clone()
        })
        .collect();
    for ev in earlier.iter().chain(&events) {
        c.publish(ev).await.unwrap();
    }

    let dir = TempDir::new("gateway-backtest");
    let history = History::Embedded(Arc::new(
        HistoryStore::open(&dir.0.join("history.redb")).unwrap(),
    ));
    let gw = Gateway::new(c.bus.clone(), store, history, shards, Some(ADMIN.into()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let health = spamscope_runtime::Health::default();
    health.set_ready(true);
    tokio::spawn(spamscope_gateway::serve(
        listener,
        gw,
        None,
        health,
        stop.clone(),
    ));
    let mut client = GatewayClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let ask = |hours: u32| BacktestRequest {
        stream: "twitch.xqcow".into(),
        policy_toml: POLICY.into(),
        hours,
        sensitivities: vec![1.0, 4.0],
    };
    let r = client.backtest(authed(ask(1))).await.unwrap().into_inner();
    assert_eq!(
        r.events,
        events.len() as u64,
        "the log's events, not the earlier ones"
    );
    assert!(r.complete, "an hour back reaches chat before the span");
    assert_eq!(r.from_ms, events.first().unwrap().ts_ms);
    assert_eq!(r.to_ms, events.last().unwrap().ts_ms);
    let got: serde_json::Value = serde_json::from_str(&r.report_json).unwrap();

    // The same policy on the file itself.
    let policies = spamscope_act::Policies::from_toml(POLICY).unwrap();
    let truth = spamscope_act::backtest::truth_of(&events);
    let recordings = vec![("twitch.xqcow".to_owned(), events.clone(), truth)];
    let model = Arc::new(spamscope_detect::ScoreModel::bundled());
    let params = serde_json::json!({});
    let want = spamscope_act::backtest::run(&recordings, &policies, params.clone(), model.clone())
        .unwrap();
    let curve =
        spamscope_act::backtest::curve(&recordings, &policies, &params, &model, &[1.0, 4.0])
            .unwrap();
    assert_eq!(got, spamscope_act::backtest::report_json(&want, &curve));
    assert_eq!(got["moderated_users"], cleared_users(&log));
    assert!(got["if_accepted"]["users"].as_u64().unwrap() > 0, "{got}");
    assert_eq!(got["curve"].as_array().unwrap().len(), 2);
    assert!(got["best_sensitivity"].is_number());

    // Three hours back reaches the earlier messages too; nothing older is
    // kept, so it is not the whole span.
    let r3 = client.backtest(authed(ask(3))).await.unwrap().into_inner();
    assert_eq!(r3.events, (events.len() + earlier.len()) as u64);
    assert!(!r3.complete);

    // Refused, each with its reason.
    let e = client.backtest(ask(1)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    for (req, says) in [
        (
            BacktestRequest {
                hours: 25,
                ..ask(1)
            },
            "hours",
        ),
        (
            BacktestRequest {
                policy_toml: "[defaults]\nflood = \"sometimes\"\n".into(),
                ..ask(1)
            },
            "flood",
        ),
        (
            BacktestRequest {
                sensitivities: vec![0.0],
                ..ask(1)
            },
            "sensitivities",
        ),
        (
            BacktestRequest {
                sensitivities: vec![1.0; 9],
                ..ask(1)
            },
            "sensitivities",
        ),
    ] {
        let e = client.backtest(authed(req)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(says), "{e:?}");
    }
    let e = client
        .backtest(authed(BacktestRequest {
            stream: "twitch.nobody_here".into(),
            ..ask(1)
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    stop.cancel();
}
