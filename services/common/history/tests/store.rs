//! The embedded history store: ordering, paging, TTL, idempotency, and fuzzy
//! search on the spam events of the real logs.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use spamscope_detect::{Detector, ScoreModel};
use spamscope_history::HistoryStore;
use spamscope_proto::v1::{Decision, Platform, SpamEvent, detector_output};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("spamscope-history-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&d);
    d
}

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
        platform: Platform::Twitch as i32,
        stream_id: stream.into(),
        event_id: id,
        fingerprint: fp.into(),
        text: text.into(),
        count,
        unique_users: count,
        first_seen_ms: last - 1000,
        last_seen_ms: last,
        state: 1,
        version,
        sample_users: vec![],
        spam: true,
        ..SpamEvent::default()
    }
}

fn decision(stream: &str, user: &str, at: i64) -> Decision {
    Decision {
        platform: Platform::Twitch as i32,
        stream_id: stream.into(),
        user_id: format!("id-{user}"),
        user_login: user.into(),
        at_ms: at,
        ..Decision::default()
    }
}

#[test]
fn sightings_newest_first_paged_and_idempotent() {
    let path = tmp("paging");
    let h = HistoryStore::open(&path).unwrap();
    let mut evs = Vec::new();
    for (i, stream) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        evs.push(event(
            stream,
            1,
            1,
            "fp1",
            "buy followers",
            5,
            1_000_000 + i as i64 * 60_000,
        ));
    }
    h.write(&evs, &[], &[]).unwrap();
    h.write(&evs, &[], &[]).unwrap(); // the same batch again changes nothing
    let p1 = h.sightings("fp1", 2, None).unwrap();
    assert_eq!(
        p1.items
            .iter()
            .map(|e| e.stream_id.as_str())
            .collect::<Vec<_>>(),
        ["e", "d"]
    );
    let p2 = h.sightings("fp1", 2, p1.next.as_deref()).unwrap();
    assert_eq!(
        p2.items
            .iter()
            .map(|e| e.stream_id.as_str())
            .collect::<Vec<_>>(),
        ["c", "b"]
    );
    let p3 = h.sightings("fp1", 2, p2.next.as_deref()).unwrap();
    assert_eq!(
        p3.items
            .iter()
            .map(|e| e.stream_id.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    assert!(p3.next.is_none());
    assert!(h.sightings("fp1", 2, Some("not-a-cursor!")).is_err());

    // A newer version replaces the old one and moves in the time order; an
    // older version arriving late is ignored.
    h.write(
        &[event("a", 1, 3, "fp1", "buy followers", 9, 9_000_000)],
        &[],
        &[],
    )
    .unwrap();
    h.write(
        &[event("a", 1, 2, "fp1", "buy followers", 7, 8_000_000)],
        &[],
        &[],
    )
    .unwrap();
    let all = h.sightings("fp1", 10, None).unwrap().items;
    assert_eq!(all.len(), 5);
    assert_eq!((all[0].stream_id.as_str(), all[0].count), ("a", 9));
    // The rate counts each message once: 5, then 4 more.
    let rate: u64 = h
        .spam_rate("twitch.a", 0, i64::MAX)
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(rate, 9);
    drop(h);
    // Crash-safe file: reopening finds everything.
    let h = HistoryStore::open(&path).unwrap();
    assert_eq!(h.sightings("fp1", 10, None).unwrap().items.len(), 5);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn channel_and_user_history_in_time_ranges() {
    let path = tmp("ranges");
    let h = HistoryStore::open(&path).unwrap();
    h.write(
        &[
            event("x", 1, 1, "f1", "t1", 5, 100_000),
            event("x", 2, 1, "f2", "t2", 5, 200_000),
            event("x", 3, 1, "f3", "t3", 5, 300_000),
        ],
        &[
            decision("x", "Bob", 150_000),
            decision("y", "bob", 250_000),
            decision("x", "eve", 260_000),
        ],
        &[],
    )
    .unwrap();
    let ev = h
        .channel_events("twitch.x", 150_000, 300_000, 10, None)
        .unwrap()
        .items;
    assert_eq!(ev.iter().map(|e| e.event_id).collect::<Vec<_>>(), [3, 2]);
    let d = h
        .channel_decisions("twitch.x", 0, i64::MAX, 10, None)
        .unwrap()
        .items;
    assert_eq!(
        d.iter().map(|d| d.user_login.as_str()).collect::<Vec<_>>(),
        ["eve", "Bob"]
    );
    let bob = h.user_decisions("BOB", 10, None).unwrap().items;
    assert_eq!(
        bob.iter().map(|d| d.stream_id.as_str()).collect::<Vec<_>>(),
        ["y", "x"]
    );
    // TTL: everything before 250 s goes.
    let removed = h.expire(250_000).unwrap();
    assert_eq!(removed, 3);
    assert_eq!(
        h.channel_events("twitch.x", 0, i64::MAX, 10, None)
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(h.user_decisions("bob", 10, None).unwrap().items.len(), 1);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_pasted_variant_finds_the_copypasta_of_the_real_log() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../testdata/youtube/chilledcow-2020-11.chat-downloader.json");
    let events =
        spamscope_chat::replay::merge(vec![spamscope_chat::replay::read_file(&file).unwrap()]);
    let mut d = Detector::new(Arc::new(ScoreModel::bundled()));
    let mut out = Vec::new();
    for ev in &events {
        d.handle(ev, &mut out);
    }
    let spam: Vec<SpamEvent> = out
        .iter()
        .filter_map(|o| match &o.kind {
            Some(detector_output::Kind::SpamEvent(e)) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let path = tmp("search");
    let h = HistoryStore::open(&path).unwrap();
    h.write(&spam, &[], &[]).unwrap();
    // Other emotes, zero-width characters, other case, a typo.
    for query in [
        "\u{200b}spam 🧀 this 🧀 cheese 🧀 for 🧀 good 🧀 luck",
        "SPAM🥰THIS🥰CHEESE🥰FOR🥰GOOD🥰LUCK",
        "spam this chesse for good luck",
    ] {
        let r = h.search(query, 0.3, 5, None, 10).unwrap();
        let top = r
            .items
            .first()
            .unwrap_or_else(|| panic!("nothing found for {query:?}"));
        assert!(
            top.text.contains("CHEESE") || top.text.contains("CHESSE"),
            "{query:?} → {:?}",
            top.text
        );
        assert_eq!(top.sightings[0].stream_id, "chilledcow-2020-11");
        // The big wave (hundreds of messages) is among the matches.
        assert!(
            r.items
                .iter()
                .any(|m| m.sightings.iter().any(|s| s.count > 100)),
            "{query:?}: {:?}",
            r.items
                .iter()
                .map(|m| (&m.text, m.similarity))
                .collect::<Vec<_>>()
        );
    }
    assert!(
        h.search(
            "completely unrelated words about the weather",
            0.5,
            5,
            None,
            10
        )
        .unwrap()
        .items
        .is_empty()
    );
    let _ = std::fs::remove_file(&path);
}

/// A history file written by a release that kept one decision per user
/// and stream (key `stream \0 user`) still answers with it; the same
/// decision delivered again is not stored twice, and a later one for the
/// same user is kept beside it.
#[test]
fn decisions_of_a_file_that_kept_one_per_user_are_still_read() {
    use prost::Message;
    use redb::TableDefinition;
    let path = tmp("old-decisions");
    let old = decision("old", "someone", 1_000_000);
    {
        // The old layout, written by hand: the body under `stream \0 user`,
        // the two time indexes as they still are.
        let db = redb::Database::create(&path).unwrap();
        let inv = |ts: i64| format!("{:020}", u64::MAX - ts as u64);
        let txn = db.begin_write().unwrap();
        {
            let mut d: redb::Table<&str, &[u8]> =
                txn.open_table(TableDefinition::new("decisions")).unwrap();
            d.insert("twitch.old\0someone", old.encode_to_vec().as_slice())
                .unwrap();
            let mut by_user: redb::Table<&str, ()> = txn
                .open_table(TableDefinition::new("decisions_by_user"))
                .unwrap();
            by_user
                .insert(
                    format!("someone\0{}\0twitch.old", inv(old.at_ms)).as_str(),
                    (),
                )
                .unwrap();
            let mut by_stream: redb::Table<&str, ()> = txn
                .open_table(TableDefinition::new("decisions_by_stream"))
                .unwrap();
            by_stream
                .insert(
                    format!("twitch.old\0{}\0someone", inv(old.at_ms)).as_str(),
                    (),
                )
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let h = HistoryStore::open(&path).unwrap();
    let all = || {
        h.channel_decisions("twitch.old", 0, i64::MAX, 10, None)
            .unwrap()
            .items
    };
    assert_eq!(all(), vec![old.clone()]);
    h.write(&[], std::slice::from_ref(&old), &[]).unwrap();
    assert_eq!(all(), vec![old.clone()], "delivered again: not doubled");
    let later = decision("old", "someone", 2_000_000);
    h.write(&[], std::slice::from_ref(&later), &[]).unwrap();
    assert_eq!(all(), vec![later.clone(), old.clone()]);
    assert_eq!(
        h.user_decisions("someone", 10, None).unwrap().items,
        vec![later, old]
    );
    // The TTL removes both layouts.
    assert_eq!(h.expire(i64::MAX).unwrap(), 2);
    assert!(all().is_empty());
    drop(h);
    let _ = std::fs::remove_file(&path);
}
