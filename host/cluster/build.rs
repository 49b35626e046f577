//! Compiles the node-to-node protocol (`host/proto/stead/cluster/v1/peer.proto`)
//! with protox (pure Rust, no `protoc`) into tonic's client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/stead/cluster/v1/peer.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
