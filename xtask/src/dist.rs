//! `cargo xtask dist [--pie]`: the `strait` binary as it ships — the `dist`
//! profile (fat LTO, `Cargo.toml`), linked statically against glibc and,
//! by default, as a non-position-independent executable (issue 20: RSS per
//! node).
//!
//! Why: a dynamically linked PIE maps the dynamic loader, `libc.so.6`,
//! `libm.so.6` and `libgcc_s.so.1`, and every 64 KiB block of them the
//! daemon runs code in is resident (1.8 MiB in `bench-mesh`); and the
//! loader relocates the executable's RELRO segment (`.data.rel.ro`, the
//! GOT) at start, which makes each of its pages a private anonymous copy
//! for the process's life (0.77 MiB). Linked statically, only the glibc
//! functions the daemon calls are in the binary, laid out with it and
//! released with its start-up code (`proxy-userspace/src/sys/code.rs`);
//! linked at a fixed address, RELRO needs no relocation and its pages stay
//! clean file pages (resident only while read, released like `.rodata`).
//! `--pie` keeps address-space layout randomisation for the executable
//! (a static PIE: the libraries' saving without the RELRO one).
//!
//! How: the flags are code-generation and link flags of the daemon only,
//! so they go in `RUSTFLAGS` with an explicit `--target` (the host's
//! triple): cargo then applies them to the target's crates and not to
//! build scripts and proc-macros (a proc-macro cannot be built with
//! `+crt-static`). The binary is `target/<triple>/dist/strait`; the same
//! command by hand is [`command_line`].
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::cmd::{output, root, sh, step};

/// `RUSTFLAGS` of the shipped build: glibc linked in (`crt-static`) and,
/// unless `pie`, code generated for a fixed load address (a static
/// non-PIE executable; rustc links it with `-static -no-pie`).
pub fn rustflags(pie: bool) -> &'static str {
    if pie {
        "-C target-feature=+crt-static"
    } else {
        "-C target-feature=+crt-static -C relocation-model=static"
    }
}

/// The host's target triple (`rustc -vV`), which the build names
/// explicitly so `RUSTFLAGS` skips host artifacts.
pub fn host_triple() -> anyhow::Result<String> {
    let v = output(Command::new("rustc").arg("-vV")).context("rustc -vV failed")?;
    v.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|s| s.trim().to_string())
        .context("rustc -vV printed no host triple")
}

/// The cargo invocation of [`build`], for the README and error messages.
pub fn command_line(pie: bool, triple: &str) -> String {
    format!(
        "RUSTFLAGS=\"{}\" cargo build --profile dist -p strait --bin strait --target {triple}",
        rustflags(pie)
    )
}

/// Builds the shipped `strait` (see the module docs; the eBPF object must
/// be built already) and returns its path. `why` goes into the step line.
pub fn build(pie: bool, why: &str) -> anyhow::Result<PathBuf> {
    let triple = host_triple()?;
    step(&format!(
        "dist build of strait ({why}; static glibc, {})",
        if pie { "PIE" } else { "fixed address" }
    ));
    sh(Command::new("cargo")
        .current_dir(root())
        // CARGO_ENCODED_RUSTFLAGS would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", rustflags(pie))
        .args([
            "build",
            "--profile",
            "dist",
            "-p",
            "strait",
            "--bin",
            "strait",
            "--target",
            &triple,
        ]))?;
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    Ok(target_dir.join(triple).join("dist").join("strait"))
}

/// `cargo xtask dist`: the eBPF object (release), then [`build`]; prints
/// the binary's path and the equivalent cargo command.
pub fn run(pie: bool) -> anyhow::Result<()> {
    crate::build_ebpf::run(true)?;
    let bin = build(pie, "as shipped")?;
    eprintln!("    (by hand: {})", command_line(pie, &host_triple()?));
    println!("{}", bin.display());
    Ok(())
}
