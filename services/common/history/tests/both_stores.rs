//! One test suite over both history stores, through the same interface:
//! the embedded store for semantics (ordering, paging, TTL), Scylla's CQL
//! against the in-process CQL server of `kassandra-tester` for syntax and
//! encoding (statements accepted, values round-trip).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use spamscope_history::HistoryStore;
use spamscope_history::any::History;
use spamscope_history::scylla_store::{ScyllaConfig, ScyllaHistory};
use spamscope_proto::v1::{ActionRecord, Decision, Platform, SpamEvent, Trigger};

fn event(
    stream: &str,
    id: u64,
    version: u64,
    fp: &str,
    text: &str,
    count: u64,
    last: i64,
) -> SpamEvent {
    SpamEvent {
        platform: Platform::Youtube as i32,
        stream_id: stream.into(),
        event_id: id,
        fingerprint: fp.into(),
        text: text.into(),
        count,
        unique_users: count / 2,
        first_seen_ms: last - 5_000,
        last_seen_ms: last,
        state: 1,
        version,
        sample_users: vec!["Ünïcode user".into(), "名前".into()],
        class: spamscope_proto::v1::SpamEventClass::Flood as i32,
        spam: true,
        class_evidence: vec![Trigger {
            name: "messages_per_user".into(),
            observed: 5.8,
            threshold: 3.0,
            ..Trigger::default()
        }],
    }
}

fn decision(stream: &str, user: &str, at: i64) -> Decision {
    Decision {
        platform: Platform::Youtube as i32,
        stream_id: stream.into(),
        user_id: format!("UC-{user}"),
        user_login: user.into(),
        at_ms: at,
        triggers: vec![Trigger {
            name: "repeated_message".into(),
            observed: 9.0,
            threshold: 2.0,
            detail: String::new(),
            norm: 0.02,
            contribution: 1.4,
            count: 8,
        }],
        messages_seen: 9,
        slow_mode_s: 30,
        slow_mode_inferred: true,
        suspicion: 1.1,
        flag_threshold: 1.0,
    }
}

fn action(stream: &str, id: u64, at: i64, what: &str, login: &str, status: &str) -> ActionRecord {
    ActionRecord {
        platform: Platform::Twitch as i32,
        stream_id: stream.into(),
        channel_id: "9001".into(),
        record_id: id,
        at_ms: at,
        action: what.into(),
        timeout_s: if what == "timeout" { 600 } else { 0 },
        user_id: format!("{}", login.len() * 111),
        user_login: login.into(),
        message_id: String::new(),
        status: status.into(),
        detail: String::new(),
        by: "policy:flagged_users".into(),
        evidence: "Ünïcode evidence: 9 copies in 30 s".into(),
        spam_event_id: 4,
        nuke_id: 0,
        undoes: 0,
    }
}

/// The audit trail: every record at its latest status, per stream, per
/// user in a stream (by login or id, any case) and per user everywhere;
/// `semantics` also checks the order, paging and TTL.
async fn actions_suite(h: &History, semantics: bool) {
    let pending = action("chan1", 1, 1_000, "timeout", "alice", "pending");
    let mut done = pending.clone();
    done.status = "done".into();
    done.detail = "timed out until 12:10".into();
    let bob = action("chan1", 2, 2_000, "timeout", "bob", "suggested");
    let elsewhere = action("chan2", 1, 3_000, "ban", "alice", "dry_run");
    let delete = action("chan1", 3, 4_000, "delete", "Alice", "protected");
    let mut undo = action("chan1", 1, 5_000, "unban", "alice", "done");
    undo.undoes = 1;
    let all = vec![
        pending.clone(),
        bob.clone(),
        elsewhere.clone(),
        done.clone(),
        delete.clone(),
        undo.clone(),
    ];
    h.write(vec![], vec![], all.clone()).await.unwrap();
    // Delivered again, and the `pending` update once more after `done`:
    // nothing doubles, and the platform's answer stays.
    h.write(vec![], vec![], all).await.unwrap();
    h.write(vec![], vec![], vec![pending.clone()])
        .await
        .unwrap();

    // Newest first where the store orders; as a set otherwise.
    let order = |mut v: Vec<ActionRecord>| {
        if !semantics {
            v.sort_by_key(|a| std::cmp::Reverse(a.at_ms));
        }
        v
    };
    let chan1 = |user: Option<&str>| {
        h.channel_actions("twitch.chan1".into(), user.map(Into::into), 10, None)
    };
    assert_eq!(
        order(chan1(None).await.unwrap().items),
        vec![undo.clone(), delete.clone(), bob.clone(), done.clone()]
    );
    let alice_here = vec![undo.clone(), delete.clone(), done.clone()];
    assert_eq!(order(chan1(Some("ALICE")).await.unwrap().items), alice_here);
    assert_eq!(
        order(chan1(Some("555")).await.unwrap().items),
        alice_here,
        "by the user id too"
    );
    assert!(chan1(Some("nobody")).await.unwrap().items.is_empty());
    let everywhere = h.user_actions("Alice".into(), 10, None).await.unwrap();
    assert_eq!(
        order(everywhere.items),
        vec![
            undo.clone(),
            delete.clone(),
            elsewhere.clone(),
            done.clone()
        ]
    );
    assert!(everywhere.next.is_none());

    if semantics {
        let p1 = h
            .channel_actions("twitch.chan1".into(), None, 3, None)
            .await
            .unwrap();
        let p2 = h
            .channel_actions("twitch.chan1".into(), None, 3, p1.next.clone())
            .await
            .unwrap();
        assert_eq!(p1.items.len(), 3);
        assert_eq!(p2.items, vec![done.clone()]);
        assert!(p2.next.is_none());
        h.expire(2_500).await.unwrap();
        assert_eq!(
            chan1(None).await.unwrap().items,
            vec![undo.clone(), delete.clone()],
            "records older than the TTL are dropped"
        );
        assert_eq!(
            h.user_actions("alice".into(), 10, None)
                .await
                .unwrap()
                .items,
            vec![undo, delete, elsewhere]
        );
    }
}

const CHEESE: &str = "\u{200b}\u{200b}SPAM🧀THIS🧀CHEESE🧀FOR🧀GOOD🧀LUCK";

/// The suite: everything is written, read back and compared; `semantics`
/// also checks ordering, paging and TTL (the embedded store).
async fn suite(h: &History, semantics: bool) {
    let events = vec![
        event("vid-a", 1, 1, "fpcheese", CHEESE, 10, 1_607_054_600_000),
        event("vid-b", 7, 1, "fpcheese", CHEESE, 4, 1_607_054_700_000),
        event(
            "vid-a",
            2,
            1,
            "fpother",
            "join my discord for free skins",
            6,
            1_607_054_650_000,
        ),
    ];
    let decisions = vec![
        decision("vid-a", "Azena", 1_607_054_610_000),
        decision("vid-b", "azena", 1_607_054_710_000),
    ];
    h.write(events.clone(), decisions.clone(), vec![])
        .await
        .unwrap();
    // Idempotent; a newer version replaces, an older one is ignored.
    h.write(events.clone(), decisions.clone(), vec![])
        .await
        .unwrap();
    let newer = event("vid-a", 1, 3, "fpcheese", CHEESE, 25, 1_607_054_800_000);
    h.write(vec![newer.clone()], vec![], vec![]).await.unwrap();
    h.write(
        vec![event(
            "vid-a",
            1,
            2,
            "fpcheese",
            CHEESE,
            15,
            1_607_054_750_000,
        )],
        vec![],
        vec![],
    )
    .await
    .unwrap();

    let s = h
        .sightings("fpcheese".into(), 10, None)
        .await
        .unwrap()
        .items;
    assert_eq!(s.len(), 2);
    let a = s.iter().find(|e| e.stream_id == "vid-a").unwrap();
    assert_eq!(
        a, &newer,
        "the stored event round-trips exactly, at its highest version"
    );

    let ce = h
        .channel_events("youtube.vid-a".into(), 0, i64::MAX, 10, None)
        .await
        .unwrap()
        .items;
    assert_eq!(ce.len(), 2);
    let cd = h
        .channel_decisions("youtube.vid-a".into(), 0, i64::MAX, 10, None)
        .await
        .unwrap()
        .items;
    assert_eq!(cd, vec![decisions[0].clone()]);
    let ud = h
        .user_decisions("AZENA".into(), 10, None)
        .await
        .unwrap()
        .items;
    assert_eq!(ud.len(), 2);
    // By the user's id too (YouTube channel id, Twitch user id), in any
    // case; an id nobody has finds nothing.
    let by_id = h
        .user_decisions("uc-azena".into(), 10, None)
        .await
        .unwrap()
        .items;
    assert_eq!(by_id, ud);
    let nobody = h
        .user_decisions("UC-nobody".into(), 10, None)
        .await
        .unwrap()
        .items;
    assert!(nobody.is_empty());
    // Two YouTube authors may share a display name: both are kept, each
    // found by its channel id; the name finds the one that had it last.
    let mut other = decision("vid-a", "AZENA", 1_607_054_620_000);
    other.user_id = "UC-someone-else".into();
    h.write(vec![], vec![other.clone()], vec![]).await.unwrap();
    let both = h
        .channel_decisions("youtube.vid-a".into(), 0, i64::MAX, 10, None)
        .await
        .unwrap()
        .items;
    assert_eq!(both.len(), 2, "{both:?}");
    let by = |u: &'static str| h.user_decisions(u.into(), 10, None);
    assert_eq!(
        by("UC-someone-else").await.unwrap().items,
        vec![other.clone()]
    );
    assert_eq!(by("uc-azena").await.unwrap().items, ud);
    assert_eq!(by("Azena").await.unwrap().items, vec![other.clone()]);
    // Flagged again later in the same stream (the detector forgot the
    // user, then saw new evidence): both decisions are kept, each once
    // however often it is delivered.
    let again = decision("vid-a", "Azena", 1_607_054_900_000);
    h.write(vec![], vec![again.clone()], vec![]).await.unwrap();
    h.write(vec![], vec![again.clone(), decisions[0].clone()], vec![])
        .await
        .unwrap();
    let mut twice = by("uc-azena").await.unwrap().items;
    twice.sort_by_key(|d| d.at_ms);
    assert_eq!(
        twice,
        vec![decisions[0].clone(), decisions[1].clone(), again.clone()]
    );
    let mut in_a = h
        .channel_decisions("youtube.vid-a".into(), 0, i64::MAX, 10, None)
        .await
        .unwrap()
        .items;
    in_a.sort_by_key(|d| d.at_ms);
    assert_eq!(in_a, vec![decisions[0].clone(), other, again]);
    let rate: u64 = h
        .spam_rate("youtube.vid-a".into(), 0, i64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(rate, 25 + 6, "each message counted once");

    let found = h
        .search("spam this cheese for good luck".into(), 0.4, 5, None, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(found[0].fingerprint, "fpcheese");
    assert_eq!(found[0].text, CHEESE);
    assert_eq!(found[0].sightings.len(), 2);

    if semantics {
        assert!(s[0].last_seen_ms >= s[1].last_seen_ms, "newest first");
        assert!(ce[0].last_seen_ms >= ce[1].last_seen_ms);
        assert!(ud[0].at_ms >= ud[1].at_ms);
        let p1 = h.sightings("fpcheese".into(), 1, None).await.unwrap();
        let p2 = h
            .sightings("fpcheese".into(), 1, p1.next.clone())
            .await
            .unwrap();
        assert_eq!(
            (
                p1.items[0].stream_id.as_str(),
                p2.items[0].stream_id.as_str()
            ),
            ("vid-a", "vid-b")
        );
        assert!(p2.next.is_none());
        let removed = h.expire(1_607_054_705_000).await.unwrap();
        assert!(removed >= 2, "{removed}");
        assert_eq!(
            h.sightings("fpcheese".into(), 10, None)
                .await
                .unwrap()
                .items
                .len(),
            1
        );
    }
}

#[tokio::test]
async fn embedded_store() {
    let path = std::env::temp_dir().join(format!("spamscope-both-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let h = History::Embedded(Arc::new(HistoryStore::open(&path).unwrap()));
    suite(&h, true).await;
    actions_suite(&h, true).await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn scylla_store_against_an_in_process_cql_server() {
    let server = kassandra_tester::KassandraTester::new(kassandra::KassandraSession::new());
    let result = std::sync::Arc::new(std::sync::Mutex::new(None));
    let r2 = result.clone();
    let _ = server
        .in_scope(|addr| {
            let r2 = r2.clone();
            async move {
                let cfg = ScyllaConfig {
                    nodes: vec![addr.to_string()],
                    keyspace: "spamscope_test".into(),
                    ttl_s: 3600,
                    consistency: scylla::statement::Consistency::One,
                    cluster_metadata: false,
                    ..ScyllaConfig::default()
                };
                let outcome = match ScyllaHistory::connect(&cfg).await {
                    Ok(s) => {
                        let h = History::Scylla(Arc::new(s));
                        // A panic inside the server's scope would hang it: run
                        // the suite and report.
                        let f = tokio::task::spawn(async move {
                            suite(&h, false).await;
                            actions_suite(&h, false).await;
                        });
                        f.await.map_err(|e| format!("suite failed: {e}"))
                    }
                    Err(e) => Err(e.to_string()),
                };
                *r2.lock().unwrap() = Some(outcome);
                Ok::<(), ()>(())
            }
        })
        .await;
    let outcome = result.lock().unwrap().take().expect("the suite ran");
    outcome.unwrap();
}
