//! Embeds the eBPF object built by `cargo xtask build-ebpf` into the binary.
//!
//! The object is taken from `STRAIT_EBPF_OBJECT` when set, else from
//! `proxy-ebpf/target/bpfel-unknown-none/release/strait-ebpf` (what every
//! xtask command builds), else from `.../debug/strait-ebpf` (a plain
//! `cargo xtask build-ebpf`). Without one the build still succeeds (so
//! `cargo check` and clippy work on a fresh clone) and loading fails at run
//! time with a message that says to run `cargo xtask build-ebpf`.
//!
//! Cargo counts a `rerun-if-changed` path that does not exist as changed on
//! every build: watching an absent object re-ran this script, rewrote the
//! embedded copy and so recompiled `strait` (a fat-LTO relink in `dist`,
//! 10-15 min) on every `cargo build`. Only the object in use is watched,
//! plus the absent release object while none is built (the debug object
//! serves until it is).
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("strait-ebpf.o");
    println!("cargo:rerun-if-env-changed=STRAIT_EBPF_OBJECT");
    let base = manifest.join("../proxy-ebpf/target/bpfel-unknown-none");
    let release = base.join("release/strait-ebpf");
    let debug = base.join("debug/strait-ebpf");
    let (chosen, watch): (Option<PathBuf>, Vec<PathBuf>) =
        match std::env::var_os("STRAIT_EBPF_OBJECT") {
            Some(p) => {
                let p = PathBuf::from(p);
                (p.exists().then(|| p.clone()), vec![p])
            }
            None if release.exists() => (Some(release.clone()), vec![release]),
            None if debug.exists() => (Some(debug.clone()), vec![debug, release]),
            None => (None, vec![release]),
        };
    for w in &watch {
        println!("cargo:rerun-if-changed={}", w.display());
    }
    match chosen {
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
