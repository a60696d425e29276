//! What the bench needs before it starts: the setup packages (nginx,
//! HAProxy, iptables, util-linux's taskset; see `setup::DEBIAN_PACKAGES`),
//! the oha load generator, and release builds of Strait and the bench
//! binaries.
//!
//! Why oha: one tool for HTTP/1.1 and HTTP/2 (prior knowledge), an
//! open-loop fixed request rate (`-q`) with latency correction for
//! coordinated omission, p50/p99/p99.9 in its JSON output, and it installs
//! from crates.io with the toolchain the project already has. h2load has no
//! fixed request rate and no percentiles; wrk has neither h2 nor a fixed
//! rate.
use std::path::PathBuf;
use std::process::Command;

use crate::cmd::{output, root, sh, step};
use crate::{build_ebpf, setup};

/// The oha release the bench was written against (JSON field names).
pub const OHA_VERSION: &str = "1.16.0";

/// Runs `cargo xtask setup` and installs oha when `l7` needs it.
pub fn ensure(l7: bool) -> anyhow::Result<()> {
    setup::run()?;
    if l7 {
        step(&format!(
            "oha {OHA_VERSION} (HTTP load generator, from crates.io)"
        ));
        match output(Command::new("oha").arg("--version")) {
            Some(v) if v.contains(OHA_VERSION) => eprintln!("    present: {}", v.trim()),
            _ => sh(Command::new("cargo").args([
                "install",
                "oha",
                "--locked",
                "--version",
                OHA_VERSION,
            ]))?,
        }
    }
    Ok(())
}

/// Builds the eBPF object, then `strait` and the bench binaries in release
/// and Strait's L7 bench proxy in `dist`; returns the release directory.
pub fn build(l7: bool) -> anyhow::Result<PathBuf> {
    build_ebpf::run(true)?;
    step("release build of strait and the bench binaries");
    sh(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "strait",
        "-p",
        "strait-tests",
        "--bins",
    ]))?;
    // Strait's proxy is measured as it ships: the `dist` profile (fat LTO).
    // Only the L7 suite uses it.
    if l7 {
        step("dist build of Strait's L7 proxy (fat LTO; a few minutes the first time)");
        sh(Command::new("cargo").current_dir(root()).args([
            "build",
            "--profile",
            "dist",
            "-p",
            "strait-tests",
            "--bin",
            "bench-strait-l7",
        ]))?;
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    Ok(target.join("release"))
}

/// Builds the example `example` of package `pkg` in release (quietly) and
/// returns its path (under `CARGO_TARGET_DIR` when set). Errors when the
/// build fails.
pub fn release_example(pkg: &str, example: &str) -> anyhow::Result<PathBuf> {
    let status = Command::new("cargo")
        .current_dir(root())
        .args(["build", "--release", "-q", "-p", pkg, "--example", example])
        .status()?;
    if !status.success() {
        anyhow::bail!("building the {example} example of {pkg} failed");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    Ok(target.join("release/examples").join(example))
}
