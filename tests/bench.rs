//! `spamscope-bench` as `make bench` runs it, on small workloads: the same
//! code paths, a local nats-server.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spamscope-bench"))
        .args(args)
        .output()
        .expect("run spamscope-bench")
}

#[test]
fn bench_pipeline_prints_its_table_and_the_ratio_last() {
    // A small run: the same code path as `make bench`, on a local nats-server.
    let csv = std::env::temp_dir().join(format!("spamscope-latency-{}.csv", std::process::id()));
    let out = bench(&[
        "pipeline",
        "--latency-csv",
        csv.to_str().unwrap(),
        "--events",
        "4000",
        "--streams",
        "20",
        "--replicas",
        "2",
        "--shards",
        "8",
        "--rate",
        "2000",
        "--rate-seconds",
        "1",
        "--irc-channels",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    // The header names the nats-server the numbers were measured on.
    let header = stdout.lines().next().unwrap_or_default();
    assert!(
        header.contains(", nats-server v2.") && header.ends_with(')'),
        "{header}"
    );
    assert!(stdout.contains("| pipeline at saturation |"), "{stdout}");
    assert!(
        stdout.contains("latency at 2000 events/s offered"),
        "{stdout}"
    );
    // Ingest batched under load: fewer messages than the 4,000 events.
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| chat messages for those events"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let messages: u64 = row
        .split('|')
        .nth(2)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(messages > 0 && messages <= 4000, "{row}");
    // Live Twitch ingest: the 5,000 recorded lines once per channel, each
    // stored; both channels awaited their acks together.
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| live Twitch ingest"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.contains("(2 channels, 10000 lines"), "{row}");
    assert!(row.contains("(2 channels awaiting acks at most)"), "{row}");
    // The fixed-rate samples, one CSV row each, with the shard of the stream.
    let text = std::fs::read_to_string(&csv).unwrap();
    let _ = std::fs::remove_file(&csv);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("t_s,latency_ms,stream,shard"));
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f.len(), 4, "{l}");
        assert!(f[3].parse::<u32>().unwrap() < 8, "{l}");
    }
    let last = stdout.lines().last().unwrap();
    let ratio: f64 = last
        .strip_prefix("ratio pipeline/ceiling = ")
        .unwrap_or_else(|| panic!("last line: {last}"))
        .parse()
        .unwrap();
    assert!(ratio > 0.0 && ratio.is_finite(), "ratio {ratio}");
}

#[test]
fn bench_history_writes_searches_and_serves_every_watcher() {
    // A small run of the same code as `make bench`: a real gateway on
    // loopback with its own nats-server.
    let out = bench(&[
        "history",
        "--events",
        "20000",
        "--streams",
        "20",
        "--searches",
        "20",
        "--watchers",
        "5",
        "--per-watcher",
        "40",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("| history write, batches of 500 |"),
        "{stdout}"
    );
    // Every watcher got all of its channel's chat, and every search found
    // the copypasta it was made from.
    assert!(
        stdout.contains("chat delivered | 200 of 200 at"),
        "{stdout}"
    );
    let found = stdout
        .lines()
        .find(|l| l.contains("searches that found their own copypasta"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let n: Vec<&str> = found
        .split('|')
        .nth(2)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(n.first(), n.get(2), "{found}");
}
