//! Acting on spam through the gateway: its gRPC server on loopback, a
//! router and a detector replica with a policy in process, on a real
//! nats-server. Who may (admin, a moderator of the channel, nobody else),
//! bad requests refused with the reason, and a nuke and its undo answered
//! by the replica that owns the stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use spamscope_gateway::Gateway;
use spamscope_gateway::moderate::parse_moderator_tokens;
use spamscope_history::HistoryStore;
use spamscope_history::any::History;
use spamscope_proto::v1::gateway_client::GatewayClient;
use spamscope_proto::v1::{
    AcceptSuggestionRequest, ChannelActionsRequest, ChatEvent, GetChannelPolicyRequest,
    NukeRequest, SetChannelPolicyRequest, UndoActionRequest, UndoNukeRequest,
};
use spamscope_store::Store;
use spamscope_testkit::{InProcessCluster, Nats, TempDir, twitch_text};
use tokio_util::sync::CancellationToken;
use tonic::Code;

const ADMIN: &str = "admin-token-for-the-moderation-test";
const ALICE: &str = "alice-moderates-the-wave-channel";
const BOB: &str = "bob-moderates-another-channel-only";
const PASTA: &str = "buy cheap viewers now at totally legit viewers dot example, instant delivery";

fn message(n: u32, login: &str, ts: i64) -> ChatEvent {
    twitch_text("wave", "777", &format!("m{n}"), login, PASTA, ts)
}

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderators_nuke_and_undo_their_own_channels_only() {
    let nats = Nats::start();
    let store = Store::open(None, "").await.unwrap();
    let shards = 4;
    let mut c = InProcessCluster::new(&nats.url(), store.clone(), shards, Duration::from_secs(60))
        .await
        .unwrap();
    let file_policies = spamscope_act::Policies::from_toml(
        "[defaults]\nflagged_users = \"off\"\nladder = [\"ban\"]\n",
    )
    .unwrap();
    let cfg = spamscope_detector::ReplicaConfig {
        policy: Some(file_policies.clone()),
        ..c.replica_config("d0")
    };
    c.add_replica(cfg).await.unwrap();
    c.start_router(Duration::from_millis(200)).await.unwrap();
    c.await_placed(Duration::from_secs(30)).await.unwrap();

    let dir = TempDir::new("gateway-moderate");
    let history = History::Embedded(Arc::new(
        HistoryStore::open(&dir.0.join("history.redb")).unwrap(),
    ));
    let moderators = parse_moderator_tokens(&format!(
        "[alice]\ntoken = \"{ALICE}\"\nchannels = [\"twitch.wave\"]\n[bob]\ntoken = \"{BOB}\"\nchannels = [\"twitch.other\"]\n"
    ))
    .unwrap();
    // The history writer keeps the audit trail the gateway reads back.
    let stop = CancellationToken::new();
    tokio::spawn(spamscope_history_writer::run(
        spamscope_history_writer::WriterConfig::default(),
        c.bus.clone(),
        history.clone(),
        spamscope_runtime::Health::default(),
        Arc::default(),
        stop.clone(),
    ));
    let gw = Gateway::new(c.bus.clone(), store, history, shards, Some(ADMIN.into()))
        .with_moderators(moderators)
        .with_policies(file_policies.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
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

    let now = spamscope_runtime::now_ms();
    for (i, u) in ["s1", "s2", "s3", "s4", "s5"].iter().enumerate() {
        c.publish(&message(i as u32, u, now + i as i64 * 100))
            .await
            .unwrap();
    }
    c.wait_processed(5, Duration::from_secs(30)).await.unwrap();

    let nuke = |stream: &str| NukeRequest {
        stream: stream.into(),
        text: PASTA.into(),
        ..NukeRequest::default()
    };
    // Who may.
    let e = client.nuke(nuke("twitch.wave")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = client
        .nuke(authed(nuke("twitch.wave"), BOB))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message()
            .contains("bob is not a moderator of twitch.wave"),
        "{e:?}"
    );
    let e = client
        .nuke(authed(nuke("twitch.wave"), "not-a-token-anyone-has"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // Bad requests, with the reason.
    for (req, says) in [
        (nuke("wave"), "stream"),
        (
            NukeRequest {
                spam_event_id: 3,
                ..nuke("twitch.wave")
            },
            "not both",
        ),
        (
            NukeRequest {
                text: String::new(),
                ..nuke("twitch.wave")
            },
            "name the spam event",
        ),
        (
            NukeRequest {
                grace_s: 7200,
                ..nuke("twitch.wave")
            },
            "grace_s",
        ),
    ] {
        let e = client.nuke(authed(req, ALICE)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(says), "{e:?}");
    }

    // Alice nukes her channel: the replica answers with what it reached.
    let r = client
        .nuke(authed(nuke("twitch.wave"), ALICE))
        .await
        .unwrap()
        .into_inner();
    assert!(r.ok, "{r:?}");
    assert_eq!((r.users, r.messages), (5, 5), "{r:?}");
    assert!(r.nuke_id > 0);
    // The admin undoes it; a second undo is refused by the replica.
    let undo = UndoNukeRequest {
        stream: "twitch.wave".into(),
        nuke_id: r.nuke_id,
    };
    let u = client
        .undo_nuke(authed(undo.clone(), ADMIN))
        .await
        .unwrap()
        .into_inner();
    assert!(u.ok, "{u:?}");
    let again = client
        .undo_nuke(authed(undo, ALICE))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !again.ok && again.error.contains("already undone"),
        "{again:?}"
    );
    // A suggestion that does not exist.
    let a = client
        .accept_suggestion(authed(
            AcceptSuggestionRequest {
                stream: "twitch.wave".into(),
                record_id: 12345,
            },
            ALICE,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!a.ok && a.error.contains("no open suggestion"), "{a:?}");

    // The audit trail, from the history store: the five bans the nuke
    // reported (a dry-run channel) and the five unbans of its undo, newest
    // first; one user's, in this channel and everywhere.
    let trail = |user: &str| ChannelActionsRequest {
        stream: "twitch.wave".into(),
        user: user.into(),
        ..ChannelActionsRequest::default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let all = loop {
        let all = client
            .channel_actions(trail(""))
            .await
            .unwrap()
            .into_inner();
        if all.actions.len() >= 10 || std::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kinds: Vec<(&str, &str)> = all
        .actions
        .iter()
        .map(|a| (a.action.as_str(), a.status.as_str()))
        .collect();
    assert_eq!(kinds.len(), 10, "{kinds:?}");
    assert!(
        kinds[..5].iter().all(|k| *k == ("unban", "dry_run")),
        "{kinds:?}"
    );
    assert!(
        kinds[5..].iter().all(|k| *k == ("ban", "dry_run")),
        "{kinds:?}"
    );
    assert!(
        all.actions
            .iter()
            .all(|a| a.by.contains("alice") || a.by.contains("admin"))
    );
    assert!(all.complete);
    let s1 = client
        .channel_actions(trail("S1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s1.actions.len(), 2, "{:?}", s1.actions);
    assert!(s1.actions.iter().all(|a| a.user_login == "s1"));
    let everywhere = client
        .user_history(spamscope_proto::v1::UserHistoryRequest {
            user: "s1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(everywhere.actions, s1.actions);
    // Pages of two, following the tokens, give the whole trail in order.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let p = client
            .channel_actions(ChannelActionsRequest {
                limit: 2,
                page_token: token.clone(),
                ..trail("")
            })
            .await
            .unwrap()
            .into_inner();
        paged.extend(p.actions);
        if p.complete {
            break;
        }
        token = p.next_page_token;
    }
    assert_eq!(paged, all.actions);
    let e = client
        .channel_actions(ChannelActionsRequest {
            limit: 5000,
            ..trail("")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // A channel policy set at run time: Alice gives her channel a ladder
    // of 5-minute timeouts over the file's bans; the replica's next nuke
    // takes it. Bob may not; a bad layer is refused naming the key.
    let layer = |stream: &str, toml: &str| SetChannelPolicyRequest {
        stream: stream.into(),
        policy_toml: toml.into(),
    };
    let e = client
        .set_channel_policy(authed(
            layer("twitch.wave", "ladder = [\"timeout 5m\"]"),
            BOB,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = client
        .set_channel_policy(authed(layer("twitch.wave", "flood = \"sometimes\""), ALICE))
        .await
        .unwrap_err();
    assert!(
        e.code() == Code::InvalidArgument && e.message().contains("flood"),
        "{e:?}"
    );
    let before = client
        .get_channel_policy(GetChannelPolicyRequest {
            stream: "twitch.wave".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(before.stored_toml.is_empty());
    assert!(
        before.effective_toml.contains("ladder = [\"ban\"]"),
        "{before:?}"
    );
    let set = client
        .set_channel_policy(authed(
            layer("twitch.wave", "ladder = [\"timeout 5m\"]"),
            ALICE,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        set.effective_toml.contains("ladder = [\"timeout 300s\"]"),
        "{set:?}"
    );
    // The replica applies it from its next event: nuke until it shows.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let last_nuke = loop {
        let r = client
            .nuke(authed(nuke("twitch.wave"), ALICE))
            .await
            .unwrap()
            .into_inner();
        assert!(r.ok, "{r:?}");
        let steps: Vec<(String, u32)> = {
            let mut got = Vec::new();
            while std::time::Instant::now() < deadline {
                got = client
                    .channel_actions(trail(""))
                    .await
                    .unwrap()
                    .into_inner()
                    .actions
                    .into_iter()
                    .filter(|a| a.nuke_id == r.nuke_id)
                    .map(|a| (a.action, a.timeout_s))
                    .collect();
                if got.len() == 5 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            got
        };
        if steps.iter().all(|s| *s == ("timeout".to_owned(), 300)) && steps.len() == 5 {
            break r.nuke_id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the channel policy was not applied: {steps:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Alice lifts one of those timeouts on its own: an unban naming it,
    // by her. Bob may not; a record id is needed.
    let one = client
        .channel_actions(trail(""))
        .await
        .unwrap()
        .into_inner()
        .actions
        .into_iter()
        .find(|a| a.nuke_id == last_nuke && a.action == "timeout")
        .unwrap();
    let undo_one = |id: u64| UndoActionRequest {
        stream: "twitch.wave".into(),
        record_id: id,
    };
    let e = client
        .undo_action(authed(undo_one(one.record_id), BOB))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = client
        .undo_action(authed(undo_one(0), ALICE))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let u = client
        .undo_action(authed(undo_one(one.record_id), ALICE))
        .await
        .unwrap()
        .into_inner();
    assert!(u.ok, "{u:?}");
    let again = client
        .undo_action(authed(undo_one(one.record_id), ALICE))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.ok && again.error.contains("to undo"), "{again:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let lifted = loop {
        let t = client
            .channel_actions(trail(&one.user_login))
            .await
            .unwrap()
            .into_inner();
        if let Some(a) = t.actions.into_iter().find(|a| a.undoes == one.record_id) {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no unban of record {}",
            one.record_id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(lifted.action, "unban");
    assert!(lifted.by.contains("alice"), "{lifted:?}");
    // Removed, the file's policy is back.
    let unset = client
        .set_channel_policy(authed(layer("twitch.wave", ""), ADMIN))
        .await
        .unwrap()
        .into_inner();
    assert!(unset.stored_toml.is_empty() && unset.effective_toml.contains("\"ban\""));
    stop.cancel();
}
