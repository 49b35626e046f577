//! Compiles `host/proto/stead/v1/stead.proto` (shared with the example client) with protox (a pure-Rust protobuf
//! compiler, so no `protoc` is needed) and generates the tonic services, plus
//! the file descriptor set served by gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/stead/v1/stead.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("stead_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
