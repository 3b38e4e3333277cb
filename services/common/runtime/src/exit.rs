//! Exit codes (sysexits.h) and the mapping from errors to them.

/// Bad command line or configuration.
pub const USAGE: i32 = 64;
/// Input data that cannot be used (unreadable file, unknown format).
pub const DATA: i32 = 65;

/// An error that carries its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl Exit {
    pub fn data(message: impl Into<String>) -> anyhow::Error {
        Exit {
            code: DATA,
            message: message.into(),
        }
        .into()
    }

    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Exit {
            code: USAGE,
            message: message.into(),
        }
        .into()
    }
}

/// A secret (token, client secret) read from the file a flag names,
/// trimmed. An unreadable file exits 64 naming the flag and the path, never
/// the content.
pub fn secret_file(flag: &str, path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| Exit::usage(format!("{flag} {}: {e}", path.display())))
}

/// A secret from the file `flag` names, or else from the environment
/// variable `env`; trimmed either way (a trailing newline is not part of
/// it). `None` when neither is given or the variable is empty. Errors name
/// the flag or the variable, never the content.
pub fn secret(
    flag: &str,
    file: Option<&std::path::Path>,
    env: &str,
) -> anyhow::Result<Option<String>> {
    if let Some(p) = file {
        return secret_file(flag, p).map(Some);
    }
    Ok(std::env::var(env)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty()))
}

pub fn code_for(e: &anyhow::Error) -> i32 {
    e.downcast_ref::<Exit>().map_or(1, |x| x.code)
}
