//! Small helpers to run commands and print each step.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Prints a step heading.
pub fn step(msg: &str) {
    eprintln!("==> {msg}");
}

/// Runs `cmd`, failing with its command line when it exits non-zero.
pub fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("    $ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed with {status}", show(cmd));
    }
    Ok(())
}

/// `cargo +nightly` in `dir`, without what cargo exports to xtask for the
/// stable toolchain (`RUSTUP_TOOLCHAIN`, `RUSTC`, wrappers, `RUSTFLAGS`)
/// and without `CARGO_TARGET_DIR`: the nightly builds (eBPF, fuzz) pick
/// their own toolchain and target directory.
pub fn cargo_nightly(dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .arg("+nightly");
    cmd
}

/// Runs `cmd` quietly and returns its stdout, or `None` if it cannot start or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
