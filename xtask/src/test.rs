//! `cargo xtask test`: setup, the eBPF object, then every test tier.
use std::process::Command;

use crate::cmd::{sh, step};
use crate::{build_ebpf, setup};

/// Environment variable that turns a skipped kernel or namespace test into a
/// failure. `.ci/run` sets it; so does `CI=true`.
pub const NO_SKIP: &str = "STRAIT_NO_SKIP";

pub fn run(extra: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    let obj = build_ebpf::run(true)?;
    step("cargo test --workspace (unit, kernel and namespace tiers)");
    let mut cmd = Command::new("cargo");
    cmd.args(["test", "--workspace"])
        .env("STRAIT_EBPF_OBJECT", &obj);
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        cmd.env(NO_SKIP, "1");
    }
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    sh(&mut cmd)
}
