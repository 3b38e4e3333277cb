//! `--config FILE` (or `SPAMSCOPE_CONFIG`): role flags from a TOML file.
//!
//! One order for every role: built-in defaults → the config file →
//! `SPAMSCOPE_*` environment → command-line flags. The file's keys are the
//! long flag names without dashes (`nats-url = "nats://nats:4222"`, `shards
//! = 64`, `channel = ["xqcow", "pajlada"]`, `scores = true`). Keys at the
//! top apply to every role that has that flag; a table named after a role
//! (`[detector]`) applies to that role only and wins over the top. A key
//! that is no flag of any role, or a key in a role's table that is not one
//! of its flags, exits 64 naming it. The values go through the same flag
//! parsers, so a bad value exits 64 naming the flag, as on the command line.
//! Secrets stay in files or the environment (`--admin-token-file`).

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgAction, Command};

use crate::exit::Exit;

/// The commands that read a config file.
pub const ROLES: [&str; 7] = [
    "ingest",
    "router",
    "detector",
    "gateway",
    "history-writer",
    "actor",
    "standalone",
];

/// `argv` with the config file's values added as flags, for the ones that
/// are given neither on the command line nor in the environment.
pub fn apply(cli: &Command, argv: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(role) = argv.get(1).and_then(|a| a.to_str()).map(str::to_owned) else {
        return Ok(argv);
    };
    if !ROLES.contains(&role.as_str()) {
        return Ok(argv);
    }
    let Some(path) = config_path(&argv) else {
        return Ok(argv);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Exit::usage(format!("--config {}: {e}", path.display())))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| Exit::usage(format!("--config {}: {e}", path.display())))?;
    let Some(cmd) = cli.find_subcommand(&role) else {
        return Ok(argv);
    };
    let longs_of = |c: &Command| -> Vec<String> {
        c.get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect()
    };
    let any_role: Vec<String> = ROLES
        .iter()
        .filter_map(|r| cli.find_subcommand(r))
        .flat_map(longs_of)
        .collect();
    // Top-level keys, then this role's table over them.
    let mut values: Vec<(String, toml::Value)> = Vec::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(_) if ROLES.contains(&key.as_str()) => {}
            toml::Value::Table(_) => {
                return Err(Exit::usage(format!(
                    "--config {}: unknown table [{key}] (tables are role names: {})",
                    path.display(),
                    ROLES.join(", ")
                )));
            }
            _ if !any_role.contains(key) => {
                return Err(Exit::usage(format!(
                    "--config {}: unknown key `{key}` (keys are the roles' long flags without dashes)",
                    path.display()
                )));
            }
            _ => values.push((key.clone(), value.clone())),
        }
    }
    if let Some(toml::Value::Table(own)) = table.get(&role) {
        let longs = longs_of(cmd);
        for (key, value) in own {
            if !longs.contains(key) {
                return Err(Exit::usage(format!(
                    "--config {}: [{role}] {key}: not a flag of `spamscope {role}`",
                    path.display()
                )));
            }
            values.retain(|(k, _)| k != key);
            values.push((key.clone(), value.clone()));
        }
    }
    let mut added: Vec<OsString> = Vec::new();
    for (key, value) in values {
        let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(&key)) else {
            // A flag of another role, at the top of the file.
            continue;
        };
        let on_command_line = argv.iter().skip(2).any(|a| {
            a.to_str()
                .is_some_and(|a| a == format!("--{key}") || a.starts_with(&format!("--{key}=")))
        });
        let in_environment = arg
            .get_env()
            .is_some_and(|env| std::env::var_os(env).is_some());
        if on_command_line || in_environment {
            continue;
        }
        let bad = |what: &str| Exit::usage(format!("--config {}: {key}: {what}", path.display()));
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(true)) => {
                added.push(format!("--{key}").into())
            }
            (ArgAction::SetTrue, toml::Value::Boolean(false)) => {}
            (ArgAction::SetTrue, _) => return Err(bad("must be true or false")),
            (ArgAction::Append, toml::Value::Array(items)) => {
                for item in items {
                    added.push(
                        format!(
                            "--{key}={}",
                            scalar(&item)
                                .ok_or_else(|| bad("must be a list of strings or numbers"))?
                        )
                        .into(),
                    );
                }
            }
            (_, toml::Value::Array(items)) if arg.get_value_delimiter().is_some() => {
                let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
                let parts = parts.ok_or_else(|| bad("must be a list of strings or numbers"))?;
                added.push(format!("--{key}={}", parts.join(",")).into());
            }
            (_, v) => {
                let v =
                    scalar(&v).ok_or_else(|| bad("must be a string, a number or true/false"))?;
                added.push(format!("--{key}={v}").into());
            }
        }
    }
    let mut out = Vec::with_capacity(argv.len() + added.len());
    out.extend(argv.iter().take(2).cloned());
    out.extend(added);
    out.extend(argv.into_iter().skip(2));
    Ok(out)
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `--config FILE`, `--config=FILE` or `SPAMSCOPE_CONFIG`.
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut it = argv.iter().skip(2);
    while let Some(a) = it.next() {
        let Some(a) = a.to_str() else { continue };
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("SPAMSCOPE_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}
