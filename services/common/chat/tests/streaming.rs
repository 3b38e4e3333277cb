//! The streaming replay against the whole-file reader: same events, same
//! order, on the bundled real logs and on every archive sample; disorder
//! past the look-ahead counted; streams ended once; a file that breaks
//! while it is read is an error after the events before it.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use spamscope_chat::format::EventSink;
use spamscope_chat::replay;
use spamscope_chat::streaming::{Replay, ReplayOptions};
use spamscope_proto::v1::{ChatEvent, chat_event::Kind};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../testdata")
        .join(rel)
}

/// A directory of its own under the system's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("spamscope-streaming-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn streamed(paths: &[PathBuf], opts: ReplayOptions) -> (Vec<ChatEvent>, Replay) {
    let mut r = Replay::open(paths, opts).unwrap();
    let mut out = Vec::new();
    for ev in r.by_ref() {
        out.push(ev.unwrap());
    }
    (out, r)
}

fn ids(events: &[ChatEvent]) -> Vec<(String, i64)> {
    events
        .iter()
        .map(|e| (e.event_id.clone(), e.ts_ms))
        .collect()
}

/// The bundled Twitch log has 791 lines whose `tmi-sent-ts` is up to
/// 403 ms earlier than a line before them (counted with Python): the
/// look-ahead puts them in the order the whole-file merge sorts them into,
/// and merging it with the YouTube log gives the same sequence too.
#[test]
fn same_order_as_the_whole_file_merge_on_real_logs() {
    let files = [
        testdata("twitch/xqcow-2019-09-15.irc"),
        testdata("youtube/chilledcow-2020-11.chat-downloader.json"),
    ];
    let whole = replay::merge(replay::read_files(&files).unwrap());
    let (streamed_events, r) = streamed(&files, ReplayOptions::default());
    assert_eq!(streamed_events.len(), whole.len());
    assert_eq!(ids(&streamed_events), ids(&whole));
    assert_eq!(streamed_events, whole);
    assert_eq!(r.out_of_order(), 0);
    assert_eq!(r.files().len(), 2);
    assert_eq!(
        r.files().iter().map(|f| f.parsed.event_count).sum::<u64>() + 2,
        whole.len() as u64
    );
    assert!(r.files().iter().all(|f| f.parsed.events.is_empty()));

    // Without a look-ahead the same disorder stays, and is counted.
    let (raw, r) = streamed(
        &files[..1],
        ReplayOptions {
            look_ahead_ms: -1,
            max_held: 100_000,
        },
    );
    assert_eq!(raw.len(), 5001);
    let late = raw.windows(2).filter(|w| w[1].ts_ms < w[0].ts_ms).count();
    assert!(late > 0);
    assert!(
        r.out_of_order() >= late as u64,
        "{} < {late}",
        r.out_of_order()
    );
}

/// Every archive sample gives the same events through a sink as held.
#[test]
fn a_sink_gets_what_the_file_holds_in_every_format() {
    let mut paths: Vec<PathBuf> = Vec::new();
    for dir in ["formats", "youtube/innertube-responses"] {
        for e in std::fs::read_dir(testdata(dir)).unwrap() {
            paths.push(e.unwrap().path());
        }
    }
    paths.push(testdata("youtube/innertube-actions.json"));
    paths.push(testdata("youtube/chilledcow-2020-11.chat-downloader.json"));
    paths.push(testdata("twitch/xqcow-2019-09-15.irc"));
    // TwitchDownloader files in both member orders (streamer before and
    // after the comments: the second is held until the stream is known).
    let comment = std::fs::read_to_string(testdata("formats/twitch-vod-comment.json")).unwrap();
    let dir = scratch("formats");
    for (name, text) in [
        (
            "td.json",
            format!(r#"{{"streamer": {{"name": "LIRIK", "id": 1}}, "comments": [{comment}]}}"#),
        ),
        (
            "sorted.json",
            format!(r#"{{"comments": [{comment}], "streamer": {{"name": "LIRIK", "id": 1}}}}"#),
        ),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
        paths.push(dir.join(name));
    }
    paths.sort();
    let mut checked = 0;
    for p in &paths {
        // (Not every innertube sample is a chat file by itself.)
        let Ok(whole) = replay::read_file(p) else {
            continue;
        };
        let whole = whole.parsed;
        let got = Arc::new(Mutex::new(Vec::new()));
        let mine = Arc::clone(&got);
        let sink: EventSink = Box::new(move |ev| mine.lock().unwrap().push(ev));
        let counts = replay::read_into(p, Some(sink)).unwrap();
        assert!(counts.events.is_empty(), "{}", p.display());
        assert_eq!(counts.event_count, whole.events.len() as u64);
        assert_eq!(*got.lock().unwrap(), whole.events, "{}", p.display());
        assert_eq!(counts.malformed.len(), whole.malformed.len());
        assert_eq!(counts.skipped_by_kind, whole.skipped_by_kind);
        checked += 1;
    }
    assert!(checked >= 12, "{checked}");
    let sorted = replay::read_file(&dir.join("sorted.json")).unwrap().parsed;
    assert_eq!(sorted.events[0].stream_key(), "twitch.lirik");
}

fn irc(channel: &str, ts: i64, id: &str) -> String {
    format!(
        "@id={id};tmi-sent-ts={ts};user-id=1 :u!u@u.tmi.twitch.tv PRIVMSG #{channel} :hello there\n"
    )
}

/// One channel over two days in two files: one stream, ended once, after
/// its last event; an event later than the look-ahead (here behind more
/// than a reader's batch of later lines) is counted and given where it
/// comes.
#[test]
fn a_stream_over_files_ends_once_and_late_events_are_counted() {
    let dir = scratch("days");
    let day1: String = [irc("a", 1_000, "a1"), irc("a", 2_000, "a2")].concat();
    let mut day2 = irc("b", 89_000, "b1");
    for i in 0..1_000 {
        day2.push_str(&irc("a", 90_000 + i * 1_000, &format!("d{i}")));
    }
    // 1,000 s earlier than the line before.
    day2.push_str(&irc("a", 89_500, "late"));
    std::fs::write(dir.join("day1.irc"), day1).unwrap();
    std::fs::write(dir.join("day2.irc"), day2).unwrap();
    let paths = [dir.join("day1.irc"), dir.join("day2.irc")];
    let (events, r) = streamed(&paths, ReplayOptions::default());
    let names: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(names[..4], ["a1", "a2", "b1", "d0"]);
    assert_eq!(names.len(), 2 + 1 + 1_000 + 1 + 2);
    let late_at = names.iter().position(|n| *n == "late").unwrap();
    assert!(late_at > 4 && late_at < names.len() - 3, "{late_at}");
    assert_eq!(names[names.len() - 2..], ["end:twitch.b", "end:twitch.a"]);
    assert_eq!(r.out_of_order(), 1);
    let ends = events
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::StreamEnded(_))))
        .count();
    assert_eq!(ends, 2);
    // The whole-file merge sorts it in: the only difference.
    let whole = replay::merge(replay::read_files(&paths).unwrap());
    let at = |evs: &[ChatEvent], id: &str| evs.iter().position(|e| e.event_id == id);
    assert_eq!(at(&whole, "late"), Some(4));
    assert_eq!(at(&whole, "end:twitch.b"), Some(3));
    let mut a = ids(&events);
    let mut b = ids(&whole);
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

/// A gzip file cut short: the events before the break are given, then the
/// error (no stream end: the stream did not end); a file with no chat at
/// all is refused before any event.
#[test]
fn a_file_that_breaks_is_an_error_after_its_events() {
    use std::io::Write as _;
    let dir = scratch("broken");
    let mut log = String::new();
    for i in 0..20_000 {
        log.push_str(&irc("a", 1_000 + i * 100, &format!("m{i}")));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(log.as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    let cut = dir.join("cut.irc.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut r = Replay::open(std::slice::from_ref(&cut), ReplayOptions::default()).unwrap();
    let mut given = 0;
    let err = loop {
        match r.next() {
            Some(Ok(ev)) => {
                assert!(!matches!(ev.kind, Some(Kind::StreamEnded(_))));
                given += 1;
            }
            Some(Err(e)) => break e,
            None => panic!("no error after {given} events"),
        }
    };
    assert!(given > 1_000 && given < 20_000, "{given}");
    assert!(err.to_string().contains("cut.irc.gz"), "{err}");
    assert!(r.next().is_none());

    let empty = dir.join("empty.json");
    std::fs::write(&empty, "[]").unwrap();
    let good = testdata("twitch/xqcow-2019-09-15.irc");
    let e = Replay::open(&[good, empty], ReplayOptions::default()).unwrap_err();
    assert!(e.to_string().contains("empty.json"), "{e}");
}

/// Holding at most `max_held` events per file still gives every event.
#[test]
fn the_held_cap_bounds_the_look_ahead() {
    let files = [testdata("twitch/xqcow-2019-09-15.irc")];
    let (events, _) = streamed(
        &files,
        ReplayOptions {
            look_ahead_ms: i64::MAX,
            max_held: 10,
        },
    );
    let whole = replay::merge(replay::read_files(&files).unwrap());
    assert_eq!(events.len(), whole.len());
    let mut a = ids(&events);
    let mut b = ids(&whole);
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(Path::new(&files[0]).extension().unwrap(), "irc");
}

/// A file in no time order at all (the bundled log's lines shuffled): with
/// a look-ahead as long as the file, it comes out in the order of the
/// whole-file merge.
#[test]
fn a_shuffled_file_is_put_back_in_order() {
    let log = std::fs::read_to_string(testdata("twitch/xqcow-2019-09-15.irc")).unwrap();
    let mut lines: Vec<&str> = log.lines().collect();
    // A fixed shuffle (xorshift), so the test is the same every run.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..lines.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        lines.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let dir = scratch("shuffled");
    let path = dir.join("shuffled.irc");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let (events, r) = streamed(
        std::slice::from_ref(&path),
        ReplayOptions {
            look_ahead_ms: i64::MAX,
            max_held: 100_000,
        },
    );
    let whole = replay::merge(replay::read_files(&[path]).unwrap());
    assert_eq!(ids(&events), ids(&whole));
    assert_eq!(r.out_of_order(), 0);
}
