//! Embeds the eBPF object built by `cargo xtask build-ebpf` into the binary.
//!
//! The object is taken from `STRAIT_EBPF_OBJECT` when set (xtask sets it),
//! else from `proxy-ebpf/target/bpfel-unknown-none/{release,debug}/strait-ebpf`,
//! whichever is newer. Without one the build still succeeds (so `cargo check`
//! and clippy work on a fresh clone) and loading fails at run time with a
//! message that says to run `cargo xtask build-ebpf`.
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("strait-ebpf.o");
    println!("cargo:rerun-if-env-changed=STRAIT_EBPF_OBJECT");
    let base = manifest.join("../proxy-ebpf/target/bpfel-unknown-none");
    let candidates: Vec<PathBuf> = match std::env::var_os("STRAIT_EBPF_OBJECT") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            base.join("release/strait-ebpf"),
            base.join("debug/strait-ebpf"),
        ],
    };
    for c in &candidates {
        println!("cargo:rerun-if-changed={}", c.display());
    }
    let newest = candidates
        .iter()
        .filter_map(|c| Some((std::fs::metadata(c).ok()?.modified().ok()?, c)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, c)| c);
    match newest {
        Some(obj) => {
            std::fs::copy(obj, &out).expect("copy eBPF object");
        }
        None => {
            println!(
                "cargo:warning=no eBPF object found; run `cargo xtask build-ebpf` (the binary will not load its kernel programs)"
            );
            std::fs::write(&out, b"").expect("write empty eBPF object");
        }
    }
}
