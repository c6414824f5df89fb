//! Build script for `berth-control`: compiles Berth's own protobuf schema for Kubernetes
//! request bodies (`proto/berth/*.proto`, see `proto/README.md`) into one descriptor set with
//! `protox` (pure Rust, no system `protoc`). `src/protobuf.rs` reads it at run time to decode
//! request bodies that clients send as `application/vnd.kubernetes.protobuf`.

use std::path::{Path, PathBuf};

const PROTO_ROOT: &str = "proto";

/// The files with the kinds the decoder accepts; the rest come along as their imports.
const PROTO_FILES: &[&str] = &["berth/runtime.proto", "berth/core.proto", "berth/apps.proto", "berth/batch.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(PROTO_FILES.iter().map(Path::new))?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("kubernetes.fds");
    std::fs::write(out, compiler.encode_file_descriptor_set())?;
    Ok(())
}
