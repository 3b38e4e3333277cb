//! A channel policy beside the detector replicas, on a real nats-server: a
//! moderator's nuke sent into the stream's chat is carried out in order with
//! the chat, and its dry-run actions and result are published on SPAM with
//! the spam events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use prost::Message;
use spamscope_proto::v1::{
    ChatEvent, DetectorOutput, NukeCommand, UndoNuke, detector_output, moderator_command,
};
use spamscope_store::Store;
use spamscope_testkit::{InProcessCluster, Nats, jetstream, twitch_command, twitch_text};

const PASTA: &str =
    "FREE VIEWERS AND FOLLOWERS at streamboost dot example, best prices on the whole internet";

fn message(n: u32, login: &str, text: &str, ts: i64) -> ChatEvent {
    twitch_text("wave", "4242", &format!("m{n}"), login, text, ts)
}

fn command(id: &str, op: moderator_command::Op, ts: i64) -> ChatEvent {
    twitch_command("wave", id, "alice", op, ts)
}

async fn outputs(url: &str) -> Vec<DetectorOutput> {
    jetstream::read_stream(url, "SPAM")
        .await
        .into_iter()
        .map(|(_, _, p)| DetectorOutput::decode(p).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nuke_sent_into_the_chat_is_carried_out_in_order_and_published() {
    let nats = Nats::start();
    let store = Store::open(None, "").await.unwrap();
    let mut c = InProcessCluster::new(&nats.url(), store, 4, Duration::from_secs(60))
        .await
        .unwrap();
    let policies = spamscope_act::Policies::from_toml(
        // dry_run = false here is overridden: a detector never sends.
        "[defaults]\ndry_run = false\nflagged_users = \"off\"\nladder = [\"timeout 10m\"]\n",
    )
    .unwrap();
    let forced = {
        let mut p = policies.clone();
        p.defaults.dry_run = true;
        p
    };
    let cfg = spamscope_detector::ReplicaConfig {
        policy: Some(forced),
        ..c.replica_config("d0")
    };
    c.add_replica(cfg).await.unwrap();
    c.start_router(Duration::from_millis(200)).await.unwrap();
    c.await_placed(Duration::from_secs(30)).await.unwrap();

    let now = spamscope_runtime::now_ms();
    let senders = ["bot_a", "bot_b", "bot_c", "bot_d", "bot_e", "bot_f"];
    let mut n = 0;
    for (i, u) in senders.iter().enumerate() {
        n += 1;
        c.publish(&message(n, u, PASTA, now + i as i64 * 200))
            .await
            .unwrap();
        n += 1;
        c.publish(&message(
            n,
            &format!("viewer{i}"),
            "gg that was close",
            now + i as i64 * 200 + 100,
        ))
        .await
        .unwrap();
    }
    let nuke = moderator_command::Op::Nuke(NukeCommand {
        text: PASTA.into(),
        ..NukeCommand::default()
    });
    c.publish(&command("cmd-1", nuke, now + 2_000))
        .await
        .unwrap();
    // Undo of a nuke that does not exist: refused, with the reason.
    let undo = moderator_command::Op::Undo(UndoNuke { nuke_id: 99 });
    c.publish(&command("cmd-2", undo, now + 2_100))
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let (results, actions) = loop {
        let outs = outputs(&c.url).await;
        let results: Vec<_> = outs
            .iter()
            .filter_map(|o| match &o.kind {
                Some(detector_output::Kind::CommandResult(r)) => Some(r.clone()),
                _ => None,
            })
            .collect();
        let actions: Vec<_> = outs
            .iter()
            .filter_map(|o| match &o.kind {
                Some(detector_output::Kind::Action(a)) => Some(a.clone()),
                _ => None,
            })
            .collect();
        if results.len() == 2 {
            break (results, actions);
        }
        assert!(Instant::now() < deadline, "command results: {results:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let nuked = results.iter().find(|r| r.command_id == "cmd-1").unwrap();
    assert!(nuked.ok, "{nuked:?}");
    assert_eq!((nuked.users, nuked.messages), (6, 6), "{nuked:?}");
    let undone = results.iter().find(|r| r.command_id == "cmd-2").unwrap();
    assert!(
        !undone.ok && undone.error.contains("no nuke 99"),
        "{undone:?}"
    );

    let mut users: Vec<&str> = actions.iter().map(|a| a.user_login.as_str()).collect();
    users.sort();
    assert_eq!(users, senders, "only the senders of the copy");
    for a in &actions {
        assert_eq!(a.status, "dry_run", "a detector never sends: {a:?}");
        assert_eq!((a.action.as_str(), a.timeout_s), ("timeout", 600));
        assert_eq!(a.channel_id, "4242");
        assert!(a.by.contains("alice"), "{a:?}");
        assert_eq!(a.nuke_id, nuked.nuke_id);
    }
}

/// The policies' state moves with the shard: after the replica that made
/// a nuke hands its shards over, the new owner still undoes it, keeps its
/// grace window acting on new copies, and a new nuke reaches the chat from
/// before the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nuke_made_before_a_hand_over_is_undone_after_it() {
    let nats = Nats::start();
    let store = Store::open(None, "").await.unwrap();
    let mut c = InProcessCluster::new(&nats.url(), store.clone(), 4, Duration::from_secs(60))
        .await
        .unwrap();
    let policies = spamscope_act::Policies::from_toml(
        "[defaults]\nflagged_users = \"off\"\nladder = [\"timeout 10m\"]\ngrace = \"10m\"\n",
    )
    .unwrap()
    .all_dry_run();
    let config = |c: &InProcessCluster, id: &str| spamscope_detector::ReplicaConfig {
        policy: Some(policies.clone()),
        ..c.replica_config(id)
    };
    let d0 = config(&c, "d0");
    c.add_replica(d0).await.unwrap();
    c.start_router(Duration::from_millis(200)).await.unwrap();
    c.await_placed(Duration::from_secs(30)).await.unwrap();

    let now = spamscope_runtime::now_ms();
    let senders = ["bot_a", "bot_b", "bot_c", "bot_d", "bot_e", "bot_f"];
    for (i, u) in senders.iter().enumerate() {
        c.publish(&message(i as u32, u, PASTA, now + i as i64 * 200))
            .await
            .unwrap();
    }
    let nuke = moderator_command::Op::Nuke(NukeCommand {
        text: PASTA.into(),
        ..NukeCommand::default()
    });
    c.publish(&command("cmd-1", nuke, now + 2_000))
        .await
        .unwrap();
    let result = |outs: &[DetectorOutput], id: &str| {
        outs.iter().find_map(|o| match &o.kind {
            Some(detector_output::Kind::CommandResult(r)) if r.command_id == id => Some(r.clone()),
            _ => None,
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let nuked = loop {
        if let Some(r) = result(&outputs(&c.url).await, "cmd-1") {
            break r;
        }
        assert!(Instant::now() < deadline, "the nuke was not answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(nuked.ok && nuked.users == 6, "{nuked:?}");

    // The hand-over: d1 joins, d0 leaves (as on SIGTERM); every shard,
    // the wave's included, is d1's.
    let d1 = config(&c, "d1");
    c.add_replica(d1).await.unwrap();
    c.stop_replica("d0").await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owners = store.owners().await.unwrap();
        if owners.len() == 4 && owners.values().all(|o| o.replica == "d1") {
            break;
        }
        assert!(Instant::now() < deadline, "owners: {owners:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // On d1: a new copy inside the nuke's grace window, the undo, and a
    // new nuke of the same text reaching back before the move.
    c.publish(&message(100, "bot_g", PASTA, now + 3_000))
        .await
        .unwrap();
    let undo = moderator_command::Op::Undo(UndoNuke {
        nuke_id: nuked.nuke_id,
    });
    c.publish(&command("cmd-2", undo, now + 3_500))
        .await
        .unwrap();
    let again = moderator_command::Op::Nuke(NukeCommand {
        text: PASTA.into(),
        since_ms: now - 1_000,
        ..NukeCommand::default()
    });
    c.publish(&command("cmd-3", again, now + 4_000))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (outs, undone, renuked) = loop {
        let outs = outputs(&c.url).await;
        if let (Some(u), Some(n)) = (result(&outs, "cmd-2"), result(&outs, "cmd-3")) {
            break (outs, u, n);
        }
        assert!(
            Instant::now() < deadline,
            "the commands after the move were not answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(undone.ok, "the undo after the move: {undone:?}");
    let actions: Vec<_> = outs
        .iter()
        .filter_map(|o| match &o.kind {
            Some(detector_output::Kind::Action(a)) if a.nuke_id == nuked.nuke_id => Some(a),
            _ => None,
        })
        .collect();
    let mut grace: Vec<&str> = actions
        .iter()
        .filter(|a| a.action == "timeout" && a.user_login == "bot_g")
        .map(|a| a.user_login.as_str())
        .collect();
    grace.dedup();
    assert_eq!(grace, ["bot_g"], "the grace window went on after the move");
    let mut lifted: Vec<&str> = actions
        .iter()
        .filter(|a| a.action == "unban" && a.undoes != 0)
        .map(|a| a.user_login.as_str())
        .collect();
    lifted.sort();
    lifted.dedup();
    assert_eq!(
        lifted,
        [
            "bot_a", "bot_b", "bot_c", "bot_d", "bot_e", "bot_f", "bot_g"
        ],
        "every timeout of the nuke lifted, made before the move or after"
    );
    assert!(renuked.ok, "{renuked:?}");
    assert_eq!(
        renuked.users, 7,
        "the new nuke reaches the copies from before the move: {renuked:?}"
    );
    assert!(
        renuked.nuke_id > nuked.nuke_id,
        "record and nuke ids go on from the checkpoint: {renuked:?}"
    );
}
