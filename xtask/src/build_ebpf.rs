//! `cargo xtask build-ebpf`: builds `proxy-ebpf` for `bpfel-unknown-none`
//! with nightly's `-Z build-std=core`, linked by bpf-linker.
use std::path::PathBuf;
use std::process::Command;

use crate::cmd::{root, sh, step};

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
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&dir)
        // Cargo and rustup export these for the stable xtask build; the eBPF
        // build must pick its own toolchain and target directory.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args([
            "+nightly",
            "build",
            "--target",
            TARGET,
            "-Z",
            "build-std=core",
        ])
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
