//! Build script for `berth-proto`: parses the `.proto` files under `proto/`
//! with `protox` (pure Rust, no system `protoc` needed) and generates prost
//! messages plus tonic clients and servers from the resulting descriptor set.

use std::path::Path;

const PROTO_ROOT: &str = "proto";

const PROTO_FILES: &[&str] = &["etcd/kv.proto", "etcd/auth.proto", "etcd/rpc.proto", "berth/raft.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={}", Path::new(PROTO_ROOT).join(file).display());
    }

    let fds = protox::compile(PROTO_FILES, [PROTO_ROOT])?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;

    Ok(())
}
