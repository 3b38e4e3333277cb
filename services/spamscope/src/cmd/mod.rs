//! One module per subcommand.

pub mod eval;
pub mod params;
pub mod replay;
pub mod train;
