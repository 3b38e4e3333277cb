//! One module per subcommand.

pub mod bench;
pub mod bench_history;
pub mod ctl;
pub mod eval;
pub mod local_nats;
pub mod print;
pub mod replay;
pub mod standalone;
pub mod train;

/// A bundled data file, found from the current directory or the repository
/// root the binary was built in.
pub fn data_path(rel: &str) -> std::path::PathBuf {
    let here = std::path::PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}
