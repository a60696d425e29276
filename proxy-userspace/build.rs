//! Embeds the eBPF object built by `cargo xtask build-ebpf` into the binary.
//!
//! The object is taken from `STRAIT_EBPF_OBJECT` when set (xtask sets it),
//! else from `proxy-ebpf/target/bpfel-unknown-none/{release,debug}/strait-ebpf`,
//! whichever is newer. Without one the build still succeeds (so `cargo check`
//! and clippy work on a fresh clone) and loading fails at run time with a
//! message that says to run `cargo xtask build-ebpf`.
//!
//! It also lays out the `strait` binary's code (issue 20: RSS per node): in
//! optimised builds for x86_64 Linux, where rustc links with `rust-lld`,
//! the functions listed in `link/strait.order` (the ones a node's daemon
//! runs, in the order it first runs them; `cargo xtask symbol-order`
//! regenerates the list) are placed first and together, so the pages of
//! `.text` the daemon touches — and the kernel's fault-around maps with
//! them — are few and contiguous instead of spread over the whole
//! executable. Names the build does not define are ignored.
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    symbol_order(&manifest);
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

/// Passes `link/strait.order` to the linker of the `strait` binary
/// (`--symbol-ordering-file`, lld's) in `release`-based profiles (`release`,
/// `dist`) on x86_64-unknown-linux-gnu, whose default linker since Rust
/// 1.90 is `rust-lld`. Other targets and debug builds link as before, and
/// so does a build with `STRAIT_SYMBOL_ORDER=0` (for a linker other than
/// lld).
fn symbol_order(manifest: &std::path::Path) {
    let order = manifest.join("link/strait.order");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=STRAIT_SYMBOL_ORDER");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || var("STRAIT_SYMBOL_ORDER") == "0"
        || !order.exists()
    {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=strait=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    // Functions renamed or gone since the list was made are skipped
    // without one warning each.
    println!("cargo:rustc-link-arg-bin=strait=-Wl,--no-warn-symbol-ordering");
}
