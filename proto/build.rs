//! Compiles `proto/uniwizard/v1/*.proto` without a system `protoc`.
//!
//! protox parses the files in pure Rust into a `FileDescriptorSet`; tonic-prost-build turns
//! that into prost messages plus tonic clients and servers (`OUT_DIR/uniwizard.v1.rs`).
//! The encoded set is also written to `OUT_DIR/uniwizard_v1_descriptor.bin`, which the
//! crate exposes as `FILE_DESCRIPTOR_SET` for gRPC server reflection.

use std::{error::Error, fs, path::PathBuf};

use prost::Message;

/// Include root for imports: files import each other as `uniwizard/v1/<name>.proto`.
const INCLUDE_ROOT: &str = "proto";
/// The package directory; every `.proto` file in it is compiled.
const PACKAGE_DIR: &str = "proto/uniwizard/v1";
/// File name (without `.bin`) of the descriptor set, as `tonic::include_file_descriptor_set!` expects.
const DESCRIPTOR_NAME: &str = "uniwizard_v1_descriptor";

fn main() -> Result<(), Box<dyn Error>> {
    // A directory path makes cargo rerun this script when any file under it changes.
    println!("cargo:rerun-if-changed={INCLUDE_ROOT}");

    // Sorted so the generated code and descriptor bytes do not depend on directory order.
    let mut files = Vec::new();
    for entry in fs::read_dir(PACKAGE_DIR)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("no .proto files in {PACKAGE_DIR}").into());
    }

    let fds = protox::compile(&files, [INCLUDE_ROOT])?;

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    fs::write(out_dir.join(format!("{DESCRIPTOR_NAME}.bin")), fds.encode_to_vec())?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
