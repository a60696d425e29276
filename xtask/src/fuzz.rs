//! `cargo xtask fuzz [--seconds N]`: runs every `cargo fuzz` target of
//! `fuzz/` (the HTTP/1.1 request codec, the config loader, the route
//! matcher) for a bounded time, starting from the seed corpora committed
//! in `fuzz/corpus/<target>/`. New inputs libFuzzer finds go to
//! `target/fuzz-corpus/<target>/` (not the repository); a crash fails the
//! command and leaves its input in `fuzz/artifacts/<target>/`, to be turned
//! into a regression test.
//!
//! The targets link only the small crates (`strait-codec`,
//! `strait-config`), not the daemon, and are built with nightly (the
//! sanitizer flags; `cargo xtask setup` installs nightly and cargo-fuzz)
//! at `opt-level = 1` (fuzz/Cargo.toml) with [`CODEGEN_UNITS`] codegen
//! units, so that a cold build and 20 s of fuzzing fit CI.
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::cmd::{cargo_nightly, root, sh, step};

/// The fuzz targets (`fuzz/fuzz_targets/<name>.rs`).
pub const TARGETS: &[&str] = &["h1_request", "config_load", "route_match"];

/// Codegen units per crate for the fuzz build (cargo-fuzz's default is 1,
/// which leaves one of two cores idle while the config crate compiles).
pub const CODEGEN_UNITS: &str = "8";

/// Runs each target for an equal share of `seconds` (at least 5 s each).
pub fn run(seconds: u64) -> anyhow::Result<()> {
    crate::setup::cargo_fuzz()?;
    let root = root();
    let fuzz_dir = root.join("fuzz");
    let per_target = (seconds / TARGETS.len() as u64).max(5);
    step(&format!(
        "build the fuzz targets (nightly, sanitizers; {per_target} s of fuzzing each after)"
    ));
    sh(nightly(&fuzz_dir).args(["fuzz", "build", "--codegen-units", CODEGEN_UNITS]))?;
    for t in TARGETS {
        step(&format!("fuzz {t} for {per_target} s"));
        let work = root.join("target").join("fuzz-corpus").join(t);
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let seeds = fuzz_dir.join("corpus").join(t);
        sh(nightly(&fuzz_dir)
            .args(["fuzz", "run", "--codegen-units", CODEGEN_UNITS, t])
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={per_target}"))
            // One input slower than this is a hang (a bug: hostile input
            // must not stall the daemon).
            .arg(format!("-timeout={}", Duration::from_secs(20).as_secs()))
            .arg("-rss_limit_mb=4096")
            .arg("-max_len=65536")
            .arg("-print_final_stats=1"))
        .with_context(|| {
            format!("fuzz target {t} failed: the crashing input is in fuzz/artifacts/{t}/")
        })?;
    }
    step("fuzzing found nothing");
    Ok(())
}

/// `cargo +nightly` in the parent of `dir` (see [`cargo_nightly`]).
fn nightly(dir: &std::path::Path) -> Command {
    cargo_nightly(dir.parent().expect("fuzz/ has a parent"))
}
