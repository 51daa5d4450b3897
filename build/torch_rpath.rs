//! Shared build script of every crate that links libtorch: binaries find libtorch by RPATH, so nobody
//! sets LD_LIBRARY_PATH. The `cuda` feature keeps libtorch_cuda.so linked (Rust links with
//! --as-needed, which drops it because no symbol of it is used directly).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let lib_dir = std::env::var_os("DEP_TCH_LIBTORCH_LIB")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("LIBTORCH").map(|p| PathBuf::from(p).join("lib")));
    if let Some(dir) = lib_dir {
        // The real path, so that libtorch's own $ORIGIN-relative RPATH finds the CUDA runtime wheels.
        let dir = dir.canonicalize().unwrap_or(dir);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
