//! Exit codes (sysexits.h) and the mapping from errors to them; shared
//! with the role crates through `spamscope_runtime::exit`.

pub use spamscope_runtime::exit::*;
