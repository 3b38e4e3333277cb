//! The tests' side of the test kit (`spamscope-testkit`): its fixtures,
//! and what needs the `spamscope` binary built for these tests.

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

pub use spamscope_testkit::jetstream::*;
pub use spamscope_testkit::*;

/// The `spamscope` binary under test.
pub const SPAMSCOPE: &str = env!("CARGO_BIN_EXE_spamscope");

/// The outputs of `spamscope replay --json FILE...` in one process, by key
/// (message scores excluded).
pub fn replay_outputs(files: &[PathBuf]) -> BTreeMap<String, Value> {
    let mut args = vec!["replay".to_owned(), "--json".to_owned()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let out = Command::new(SPAMSCOPE).args(&args).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["key"].as_str().unwrap().to_owned(), v))
        .collect()
}

/// A plain HTTP/1.1 GET on loopback: the whole response, head and body.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The address a role started with `--health-listen 127.0.0.1:0` serves
/// its health and metrics on (it logs it; 20 s at most).
pub async fn health_addr(p: &Proc) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(a) = p.log_text().lines().find_map(|l| {
            l.strip_prefix("health: http://")
                .map(|x| x.trim_end_matches("/healthz").to_owned())
        }) {
            return a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} logged no health address:\n{}",
            p.name,
            tail(&p.log_text(), 20)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The values of Prometheus counter `name` by its `shard` label, summed
/// over its other labels, from a `/metrics` response.
pub fn counter_by_shard(metrics: &str, name: &str) -> BTreeMap<u32, u64> {
    let mut by = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(labels) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = labels.split_once('}') else {
            continue;
        };
        let shard = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("shard=\""))
            .and_then(|v| v.trim_end_matches('"').parse::<u32>().ok());
        let value = value.trim().parse::<f64>().ok();
        if let (Some(shard), Some(value)) = (shard, value) {
            *by.entry(shard).or_default() += value as u64;
        }
    }
    by
}
