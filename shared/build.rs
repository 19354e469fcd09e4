//! Compiles the protobuf contract with protox, a pure-Rust compiler, so that a
//! fresh machine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = [
        root.join("pgrollout/v1/agent.proto"),
        root.join("pgrollout/v1/control.proto"),
        root.join("pgrollout/v1/watch.proto"),
    ];
    let descriptors = protox::compile(&files, [&root])?;
    // The agent's stream RPC is named `Connect` (DESIGN §4); the generated
    // client's `connect` constructor would collide with it, so clients are
    // built with `new(channel)` instead.
    tonic_prost_build::configure()
        .build_transport(false)
        // Boxed, so a JobResult of any other job stays as small as before.
        .boxed(".pgrollout.v1.JobResult.watch_sample")
        .compile_fds(descriptors)?;
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    Ok(())
}
