//! `cargo xtask demo`: builds what the demo needs, then runs `strait-demo`
//! (tests/src/bin/strait-demo.rs): bookinfo on a simulated node under
//! `strait run`, walked through Istio's traffic-management tasks.
use std::process::Command;

use crate::cmd::{root, sh, step};
use crate::{build_ebpf, setup};

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    // The release object, which proxy-userspace/build.rs embeds by default
    // (no STRAIT_EBPF_OBJECT: see xtask/src/test.rs).
    build_ebpf::run(true)?;
    step("build strait, bookinfo-app, mesh-client and strait-demo");
    sh(Command::new("cargo").args(["build", "-p", "strait", "-p", "strait-tests", "--bins"]))?;
    step("run the demo");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    sh(&mut Command::new(target.join("debug/strait-demo")))
}
