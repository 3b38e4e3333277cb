//! The whole path of an action, on a real nats-server: chat and a
//! moderator's nuke into a detector replica with a live policy, the actor
//! sending what it decided to a local server that answers as Twitch Helix
//! does, the answers published back; then the undo lifting the bans. A
//! channel in dry-run sends nothing. Nothing talks to a real platform.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use spamscope_act::helix::{Helix, HelixConfig};
use spamscope_act::platform::Moderator;
use spamscope_proto::v1::{
    ActionRecord, ChatEvent, DetectorOutput, NukeCommand, Platform, UndoNuke, detector_output,
    moderator_command,
};
use spamscope_store::Store;
use spamscope_testkit::platforms::FakeHelix;
use spamscope_testkit::{InProcessCluster, Nats, jetstream, twitch_command, twitch_text};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "helix-user-token-of-mod1";
const PASTA: &str = "get 1000 followers for free at growfast dot example, limited offer today";

fn message(stream: &str, n: u32, login: &str, ts: i64) -> ChatEvent {
    twitch_text(stream, "4242", &format!("{stream}-m{n}"), login, PASTA, ts)
}

fn command(stream: &str, id: &str, op: moderator_command::Op, ts: i64) -> ChatEvent {
    twitch_command(stream, id, "alice", op, ts)
}

async fn actions(url: &str) -> Vec<ActionRecord> {
    jetstream::read_stream(url, "SPAM")
        .await
        .into_iter()
        .filter_map(|(_, _, p)| match DetectorOutput::decode(p).unwrap().kind {
            Some(detector_output::Kind::Action(a)) => Some(a),
            _ => None,
        })
        .collect()
}

async fn until(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn count(a: &[ActionRecord], action: &str, status: &str) -> usize {
    a.iter()
        .filter(|r| r.action == action && r.status == status)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_nuke_is_sent_answered_and_undone_and_a_dry_run_channel_sends_nothing() {
    let nats = Nats::start();
    let store = Store::open(None, "").await.unwrap();
    let mut c = InProcessCluster::new(&nats.url(), store, 4, Duration::from_secs(60))
        .await
        .unwrap();
    let policies = spamscope_act::Policies::from_toml(
        "[defaults]\nflagged_users = \"off\"\nladder = [\"timeout 5m\"]\n\
         [channels.\"twitch.wave\"]\ndry_run = false\n",
    )
    .unwrap();
    let cfg = spamscope_detector::ReplicaConfig {
        policy: Some(policies),
        policy_live: true,
        ..c.replica_config("d0")
    };
    c.add_replica(cfg).await.unwrap();
    c.start_router(Duration::from_millis(200)).await.unwrap();
    c.await_placed(Duration::from_secs(30)).await.unwrap();

    let helix = FakeHelix::start("app", TOKEN, "mod1", "4242", 100).await;
    helix
        .state
        .lock()
        .unwrap()
        .unbannable
        .insert("id-bot_c".into());
    let client: Arc<dyn Moderator> = Arc::new(
        Helix::new(HelixConfig {
            base_url: helix.url.clone(),
            client_id: "app".into(),
            token: TOKEN.into(),
            moderator_id: "mod1".into(),
        })
        .unwrap(),
    );
    let stop = CancellationToken::new();
    let counters: Arc<spamscope_actor::ActorCounters> = Arc::default();
    let health = spamscope_runtime::Health::default();
    let actor = tokio::spawn(spamscope_actor::run(
        spamscope_actor::ActorConfig::default(),
        c.bus.clone(),
        Store::open(None, "").await.unwrap(),
        vec![client],
        health.clone(),
        Arc::clone(&counters),
        stop.clone(),
    ));
    until("the actor's consumer", async || health.is_ready()).await;

    let now = spamscope_runtime::now_ms();
    let bots = ["bot_a", "bot_b", "bot_c", "bot_d"];
    for stream in ["wave", "calm"] {
        for (i, u) in bots.iter().enumerate() {
            c.publish(&message(stream, i as u32, u, now + i as i64 * 100))
                .await
                .unwrap();
        }
        let nuke = moderator_command::Op::Nuke(NukeCommand {
            text: PASTA.into(),
            ..NukeCommand::default()
        });
        c.publish(&command(
            stream,
            &format!("{stream}-nuke"),
            nuke,
            now + 1_000,
        ))
        .await
        .unwrap();
    }

    // Four timeouts decided in the live channel: three done by Twitch,
    // one refused, each answer published.
    until(
        "the answers of the four timeouts, and the dry run",
        async || {
            let a = actions(&c.url).await;
            count(&a, "timeout", "done") + count(&a, "timeout", "failed") == 4
                && count(&a, "timeout", "dry_run") == 4
        },
    )
    .await;
    let a = actions(&c.url).await;
    assert_eq!(count(&a, "timeout", "pending"), 4, "{a:#?}");
    assert_eq!(count(&a, "timeout", "done"), 3);
    let refused = a.iter().find(|r| r.status == "failed").expect("a refusal");
    assert_eq!(refused.user_login, "bot_c");
    assert!(refused.detail.contains("may not be banned"), "{refused:?}");
    // The dry-run channel: reported, never sent.
    let calm: Vec<&ActionRecord> = a.iter().filter(|r| r.stream_id == "calm").collect();
    assert_eq!(calm.len(), 4);
    assert!(calm.iter().all(|r| r.status == "dry_run"), "{calm:?}");
    {
        let st = helix.state.lock().unwrap();
        let banned: Vec<&str> = st.bans.keys().map(|(_, u)| u.as_str()).collect();
        assert_eq!(banned, ["id-bot_a", "id-bot_b", "id-bot_d"]);
        let posts = st.calls.iter().filter(|c| c.method == "POST").count();
        assert_eq!(posts, 4, "only the live channel's four timeouts were sent");
    }

    // The undo lifts the three timeouts at Twitch.
    let nuke_id = a.iter().find(|r| r.stream_id == "wave").unwrap().nuke_id;
    let undo = moderator_command::Op::Undo(UndoNuke { nuke_id });
    c.publish(&command("wave", "wave-undo", undo, now + 5_000))
        .await
        .unwrap();
    until("the unbans' answers", async || {
        let a = actions(&c.url).await;
        count(&a, "unban", "done") + count(&a, "unban", "failed") == 4
    })
    .await;
    assert!(helix.state.lock().unwrap().bans.is_empty());
    let a = actions(&c.url).await;
    assert_eq!(count(&a, "unban", "done"), 3, "{a:#?}");
    // bot_c was never timed out: Twitch says so.
    assert!(a.iter().any(|r| r.action == "unban"
        && r.status == "failed"
        && r.user_login == "bot_c"
        && r.detail.contains("not banned")));
    assert_eq!(counters.done.load(std::sync::atomic::Ordering::Relaxed), 6);
    stop.cancel();
    actor.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_older_than_the_limit_is_answered_not_sent() {
    let nats = Nats::start();
    let store = Store::open(None, "").await.unwrap();
    let c = InProcessCluster::new(&nats.url(), store, 4, Duration::from_secs(60))
        .await
        .unwrap();
    let helix = FakeHelix::start("app", TOKEN, "mod1", "4242", 100).await;
    let client: Arc<dyn Moderator> = Arc::new(
        Helix::new(HelixConfig {
            base_url: helix.url.clone(),
            client_id: "app".into(),
            token: TOKEN.into(),
            moderator_id: "mod1".into(),
        })
        .unwrap(),
    );
    let stop = CancellationToken::new();
    let health = spamscope_runtime::Health::default();
    let cfg = spamscope_actor::ActorConfig {
        // Everything is too old.
        max_age: Duration::ZERO,
        ..Default::default()
    };
    let actor = tokio::spawn(spamscope_actor::run(
        cfg,
        c.bus.clone(),
        Store::open(None, "").await.unwrap(),
        vec![client],
        health.clone(),
        Arc::default(),
        stop.clone(),
    ));
    until("the actor's consumer", async || health.is_ready()).await;
    let pending = DetectorOutput {
        kind: Some(detector_output::Kind::Action(ActionRecord {
            platform: Platform::Twitch as i32,
            stream_id: "wave".into(),
            channel_id: "4242".into(),
            record_id: 1,
            at_ms: spamscope_runtime::now_ms(),
            action: "ban".into(),
            user_id: "id-x".into(),
            user_login: "x".into(),
            status: "pending".into(),
            by: "test".into(),
            evidence: "test".into(),
            ..ActionRecord::default()
        })),
    };
    let shard = spamscope_routing::shard_of("twitch.wave", 4);
    c.bus
        .publish(
            spamscope_bus::subjects::spam(shard, "twitch", "wave"),
            "old-one",
            async_nats::HeaderMap::new(),
            pending.encode_to_vec().into(),
        )
        .await
        .unwrap();
    until("the answer", async || {
        actions(&c.url).await.iter().any(|a| a.status == "failed")
    })
    .await;
    let a = actions(&c.url).await;
    let failed = a.iter().find(|r| r.status == "failed").unwrap();
    assert!(failed.detail.contains("not sent: decided"), "{failed:?}");
    assert!(helix.calls().is_empty(), "nothing reached Helix");
    stop.cancel();
    actor.await.unwrap().unwrap();
}

/// A pending action on a YouTube stream, published as a detector would.
async fn publish_pending(c: &InProcessCluster, id: u64, action: &str, undoes: u64) {
    let pending = DetectorOutput {
        kind: Some(detector_output::Kind::Action(ActionRecord {
            platform: Platform::Youtube as i32,
            stream_id: "video1".into(),
            channel_id: "UC-channel".into(),
            record_id: id,
            at_ms: spamscope_runtime::now_ms(),
            action: action.into(),
            timeout_s: 0,
            user_id: "UC-spammer".into(),
            user_login: "Spammer".into(),
            status: "pending".into(),
            by: "nuke:1 by alice".into(),
            evidence: "test".into(),
            nuke_id: 1,
            undoes,
            ..ActionRecord::default()
        })),
    };
    let shard = spamscope_routing::shard_of("youtube.video1", 4);
    c.bus
        .publish(
            spamscope_bus::subjects::spam(shard, "youtube", "video1"),
            &format!("yt-{id}-{action}"),
            async_nats::HeaderMap::new(),
            pending.encode_to_vec().into(),
        )
        .await
        .unwrap();
}

/// A YouTube ban is lifted by the id its insert answered: the actor keeps
/// it in the state store (a real redis-server), so an actor started again
/// lifts a ban the one before it made. One with a store that forgot it
/// says why it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_youtube_ban_is_lifted_by_an_actor_started_again() {
    const YT: &str = "youtube-oauth-token-of-the-channel";
    let nats = Nats::start();
    let redis = spamscope_testkit::Redis::start();
    let c = InProcessCluster::new(
        &nats.url(),
        Store::open(None, "").await.unwrap(),
        4,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let fake = spamscope_testkit::platforms::FakeYoutube::start(YT, "video1", "chat-1").await;
    let client = || -> Arc<dyn Moderator> {
        Arc::new(
            spamscope_act::youtube::Youtube::new(spamscope_act::youtube::YoutubeConfig {
                base_url: fake.url.clone(),
                token: YT.into(),
            })
            .unwrap(),
        )
    };
    let start = async |store: Store| {
        let stop = CancellationToken::new();
        let health = spamscope_runtime::Health::default();
        let task = tokio::spawn(spamscope_actor::run(
            spamscope_actor::ActorConfig::default(),
            c.bus.clone(),
            store,
            vec![client()],
            health.clone(),
            Arc::default(),
            stop.clone(),
        ));
        until("the actor's consumer", async || health.is_ready()).await;
        (stop, task)
    };
    let answered = async |id: u64, action: &str| {
        until("the answer", async || {
            actions(&c.url)
                .await
                .iter()
                .any(|a| a.record_id == id && a.action == action && a.status != "pending")
        })
        .await;
        actions(&c.url)
            .await
            .into_iter()
            .find(|a| a.record_id == id && a.action == action && a.status != "pending")
            .unwrap()
    };

    let (stop, task) = start(Store::open(Some(&redis.url()), "spamscope:").await.unwrap()).await;
    publish_pending(&c, 1, "ban", 0).await;
    let banned = answered(1, "ban").await;
    assert_eq!(banned.status, "done", "{banned:?}");
    let ban_ids: Vec<String> = fake.state.lock().unwrap().bans.keys().cloned().collect();
    assert_eq!(ban_ids.len(), 1, "one ban at YouTube");
    stop.cancel();
    task.await.unwrap().unwrap();

    // Started again (a new connection to the same redis-server): the undo
    // lifts that ban by its id.
    let (stop, task) = start(Store::open(Some(&redis.url()), "spamscope:").await.unwrap()).await;
    publish_pending(&c, 2, "unban", 1).await;
    let lifted = answered(2, "unban").await;
    assert_eq!(lifted.status, "done", "{lifted:?}");
    assert!(
        fake.state.lock().unwrap().bans.is_empty(),
        "the ban is lifted"
    );
    stop.cancel();
    task.await.unwrap().unwrap();

    // A store that does not hold the id: the unban fails, saying why.
    let (stop, task) = start(Store::open(Some(&redis.url()), "spamscope:").await.unwrap()).await;
    publish_pending(&c, 3, "ban", 0).await;
    assert_eq!(answered(3, "ban").await.status, "done");
    stop.cancel();
    task.await.unwrap().unwrap();
    let (stop, task) = start(Store::open(None, "").await.unwrap()).await;
    publish_pending(&c, 4, "unban", 3).await;
    let failed = answered(4, "unban").await;
    assert_eq!(failed.status, "failed", "{failed:?}");
    stop.cancel();
    task.await.unwrap().unwrap();
}
