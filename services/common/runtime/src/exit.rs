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

pub fn code_for(e: &anyhow::Error) -> i32 {
    e.downcast_ref::<Exit>().map_or(1, |x| x.code)
}
