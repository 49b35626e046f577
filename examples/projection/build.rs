//! Generates the client from stead's proto, with a pure-Rust protobuf
//! compiler (no `protoc` needed) — the way a user's own service would.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../host/proto/stead/v1/stead.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../../host/proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
