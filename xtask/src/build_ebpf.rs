//! `cargo xtask build-ebpf`: builds `proxy-ebpf` for `bpfel-unknown-none`
//! with nightly's `-Z build-std=core`, linked by bpf-linker.
use std::path::PathBuf;

use crate::cmd::{cargo_nightly, root, sh, step};

/// Target triple of the eBPF programs (little-endian BPF).
pub const TARGET: &str = "bpfel-unknown-none";

/// Builds the eBPF object and returns its path.
pub fn run(release: bool) -> anyhow::Result<PathBuf> {
    let dir = root().join("proxy-ebpf");
    let target_dir = dir.join("target");
    step(&format!(
        "build eBPF programs ({})",
        if release { "release" } else { "dev" }
    ));
    let mut cmd = cargo_nightly(&dir);
    cmd.args(["build", "--target", TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir);
    if release {
        cmd.arg("--release");
    }
    sh(&mut cmd)?;
    let obj = target_dir
        .join(TARGET)
        .join(if release { "release" } else { "debug" })
        .join("strait-ebpf");
    eprintln!("    object: {}", obj.display());
    Ok(obj)
}
