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
//!
//! It also lays out the `strait` binary's code (issue 20: RSS per node): in
//! optimised builds for x86_64 Linux, where rustc links with `rust-lld`,
//! the functions listed in `link/strait.order` (the ones a node's daemon
//! runs: serving's first — both sides', then the source side's, then the
//! destination side's — then start-up's, each in the order it first runs
//! them; `cargo xtask symbol-order` regenerates the list, measured on a
//! build with one function per page) are placed first and together, so the pages of
//! `.text` the daemon touches — and the kernel's fault-around maps with
//! them — are few and contiguous instead of spread over the whole
//! executable. Names the build does not define are ignored. The same
//! builds pack the executable's relative relocations (`DT_RELR`), whose
//! table the loader reads at start (see [`symbol_order`]).
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    symbol_order(&manifest);
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
    // Relative relocations packed (DT_RELR): the position-independent
    // executable's ~25,000 of them took 600 KB of `.rela.dyn`, all read by
    // the dynamic loader at start and so resident for the process's life;
    // packed they take a few KB. Needs glibc >= 2.36 at run time (the
    // binary then requires the `GLIBC_ABI_DT_RELR` version, so an older
    // glibc refuses to start it with that message instead of misbehaving).
    // `STRAIT_RELR=0` links without it.
    println!("cargo:rerun-if-env-changed=STRAIT_RELR");
    if var("STRAIT_RELR") != "0" {
        println!("cargo:rustc-link-arg-bin=strait=-Wl,-z,pack-relative-relocs");
    }
}
