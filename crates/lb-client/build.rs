//! Generates the tonic client and server for `proto/echo.proto`, used by the
//! gRPC tests, examples and benchmarks. Needs `protoc` (Debian `protobuf-compiler`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/echo.proto");
    tonic_prost_build::configure().compile_protos(&["proto/echo.proto"], &["proto"])?;
    Ok(())
}
