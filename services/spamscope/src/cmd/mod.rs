//! One module per subcommand.

pub mod ctl;
pub mod eval;
pub mod print;
pub mod replay;
pub mod standalone;
pub mod train;
