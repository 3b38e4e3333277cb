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
