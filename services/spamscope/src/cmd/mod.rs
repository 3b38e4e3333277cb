//! One module per subcommand.

pub mod cluster;
pub mod eval;
pub mod local_nats;
pub mod params;
pub mod print;
pub mod replay;
pub mod train;
