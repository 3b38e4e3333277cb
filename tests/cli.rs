//! The `spamscope` binary as a user runs it, on the bundled real logs.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn spamscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spamscope"))
        .args(args)
        .output()
        .expect("run spamscope")
}

fn stats_json(files: &[PathBuf]) -> Value {
    let mut args = vec!["replay", "--stats", "--json"];
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let out = spamscope(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "exactly one JSON object: {stdout}"
    );
    serde_json::from_str(&stdout).unwrap()
}

fn tmp_file(name: &str, content: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spamscope-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn replay_stats_on_the_twitch_log() {
    let s = stats_json(&[repo("testdata/twitch/xqcow-2019-09-15.irc")]);
    assert_eq!(s["messages"], 4933);
    assert_eq!(s["timeouts"], 57);
    assert_eq!(s["bans"], 1);
    assert_eq!(s["malformed"], 0);
    assert_eq!(s["users"], 1208);
    assert_eq!(s["events"], 5000);
    for key in [
        "deletions",
        "room_states",
        "supports",
        "first_ts_ms",
        "last_ts_ms",
    ] {
        assert!(s.get(key).is_some(), "missing {key}");
    }
    assert!(s["first_ts_ms"].as_i64().unwrap() < s["last_ts_ms"].as_i64().unwrap());
}

#[test]
fn replay_stats_on_the_youtube_log() {
    let s = stats_json(&[repo(
        "testdata/youtube/chilledcow-2020-11.chat-downloader.json",
    )]);
    assert_eq!(s["deletions"], 36);
    assert_eq!(s["bans"], 36);
    assert_eq!(s["messages"], 1699);
    assert_eq!(s["malformed"], 0);
    let span_ms = s["last_ts_ms"].as_i64().unwrap() - s["first_ts_ms"].as_i64().unwrap();
    assert!(
        (10 * 60_000..15 * 60_000).contains(&span_ms),
        "about 13 minutes, got {span_ms} ms"
    );
}

#[test]
fn several_files_merge() {
    let s = stats_json(&[
        repo("testdata/twitch/xqcow-2019-09-15.irc"),
        repo("testdata/youtube/chilledcow-2020-11.chat-downloader.json"),
    ]);
    assert_eq!(s["messages"], 4933 + 1699);
    assert_eq!(s["streams"], 2);
}

#[test]
fn malformed_lines_are_counted_and_reported_with_file_and_line() {
    let good = std::fs::read_to_string(repo("testdata/twitch/xqcow-2019-09-15.irc")).unwrap();
    let mut lines: Vec<&str> = good.lines().take(100).collect();
    lines.insert(10, "@badges=broken");
    lines.insert(20, "this is not irc at all");
    let mut content = lines.join("\n").into_bytes();
    content.extend_from_slice(b"\n\xff\xfe invalid utf8\n");
    let p = tmp_file("mixed.irc", &content);
    let out = spamscope(&["replay", "--stats", "--json", p.to_str().unwrap()]);
    assert!(out.status.success());
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["malformed"], 3);
    assert_eq!(s["events"], 100);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mixed.irc:11:"), "{stderr}");
    assert!(stderr.contains("mixed.irc:21:"), "{stderr}");
}

#[test]
fn unreadable_or_unrecognised_file_exits_65_naming_it() {
    let out = spamscope(&["replay", "--stats", "/nonexistent/chat.irc"]);
    assert_eq!(out.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/chat.irc"));

    let p = tmp_file("notes.txt", b"dear diary\ntoday I wrote prose\n");
    let out = spamscope(&["replay", "--stats", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("notes.txt"));
}

#[test]
fn recent_messages_json_wrapper() {
    let good = std::fs::read_to_string(repo("testdata/twitch/xqcow-2019-09-15.irc")).unwrap();
    let lines: Vec<&str> = good.lines().take(50).collect();
    let p = tmp_file(
        "recent.json",
        serde_json::json!({ "messages": lines })
            .to_string()
            .as_bytes(),
    );
    let s = stats_json(&[p]);
    assert_eq!(s["events"], 50);
    assert_eq!(s["malformed"], 0);
}

#[test]
fn bad_flags_exit_64() {
    let out = spamscope(&["replay", "--no-such-flag", "x"]);
    assert_eq!(out.status.code(), Some(64));
}
