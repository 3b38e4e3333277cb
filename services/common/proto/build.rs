//! Generates the Rust types and tonic services of `proto/` with protox (pure
//! Rust, no system protoc), and writes the descriptor set for gRPC server
//! reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is compiled: cargo
    // reuses one compiled script for checkouts at other paths.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../../proto");
    let files = [
        "spamscope/v1/chat.proto",
        "spamscope/v1/detect.proto",
        "spamscope/v1/cluster.proto",
        "spamscope/v1/gateway.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
