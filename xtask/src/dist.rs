//! `cargo xtask dist`: the `strait` binary as it ships — the `dist`
//! profile (fat LTO, `Cargo.toml`), linked statically against glibc as a
//! static position-independent executable (issue 20: RSS per node).
//!
//! Why: a dynamically linked PIE maps the dynamic loader, `libc.so.6`,
//! `libm.so.6` and `libgcc_s.so.1`, and every 64 KiB block of them the
//! daemon runs code in is resident (1.8–2.3 MiB in `bench-mesh`). Linked
//! statically, only the glibc functions the daemon calls are in the
//! binary, laid out with it and released with its start-up code
//! (`proxy-userspace/src/sys/code.rs`). It stays position-independent, so
//! the kernel still loads it at a random address (ASLR): a fixed-address
//! build (`-C relocation-model=static`) would also keep its RELRO segment
//! clean (0.5–0.8 MiB less anonymous memory per node, measured) but put
//! every gadget of the daemon and of glibc at the same address on every
//! start, for a root daemon that parses hostile input — not worth it.
//!
//! How: `crt-static` is a link-time choice (the standard library and the
//! `libc` crate pick static or dynamic glibc with `#[link(cfg(...))]` when
//! the final binary links), so it is passed to the final `rustc` only
//! (`cargo rustc … -- -C target-feature=+crt-static`): no `RUSTFLAGS`, no
//! `--target`, so build scripts and proc-macros are untouched (a
//! proc-macro cannot be built with `+crt-static`), the dependencies are
//! the plain `cargo build --profile dist` ones, and every symbol keeps the
//! name `proxy-userspace/link/strait.order` lists. The binary is
//! `target/dist/strait` (a plain `cargo build --profile dist -p strait`
//! writes the dynamically linked one to the same path); the same command
//! by hand is [`command_line`].
use std::path::PathBuf;
use std::process::Command;

use crate::cmd::{root, sh, step};

/// Extra `rustc` flags of the final binary: glibc linked in.
pub const RUSTC_FLAGS: [&str; 2] = ["-C", "target-feature=+crt-static"];

/// The cargo invocation of [`build`], for the README and error messages.
pub fn command_line() -> String {
    format!(
        "cargo rustc --profile dist -p strait --bin strait -- {}",
        RUSTC_FLAGS.join(" ")
    )
}

/// Where [`build`] leaves the binary: `target/dist/strait` (or under
/// `CARGO_TARGET_DIR`).
pub fn binary_path() -> anyhow::Result<PathBuf> {
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    Ok(target_dir.join("dist").join("strait"))
}

/// Builds `strait` with the `dist` profile, [`RUSTC_FLAGS`] and `extra`
/// flags for the final `rustc` (the eBPF object must be built already)
/// and returns its path. `why` goes into the step line.
pub fn build_with(why: &str, extra: &[&str]) -> anyhow::Result<PathBuf> {
    step(&format!("dist build of strait ({why}; static glibc, PIE)"));
    sh(Command::new("cargo")
        .current_dir(root())
        .args([
            "rustc",
            "--profile",
            "dist",
            "-p",
            "strait",
            "--bin",
            "strait",
            "--",
        ])
        .args(RUSTC_FLAGS)
        .args(extra))?;
    binary_path()
}

/// Builds the shipped `strait` (see the module docs).
pub fn build(why: &str) -> anyhow::Result<PathBuf> {
    build_with(why, &[])
}

/// `cargo xtask dist`: the eBPF object (release), then [`build`]; prints
/// the binary's path and the equivalent cargo command.
pub fn run() -> anyhow::Result<()> {
    crate::build_ebpf::run(true)?;
    let bin = build("as shipped")?;
    eprintln!("    (by hand: {})", command_line());
    println!("{}", bin.display());
    Ok(())
}
