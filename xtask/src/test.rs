//! `cargo xtask test`: the import rule (`cargo xtask layers`), setup, the
//! eBPF object, then every test tier.
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::cmd::step;
use crate::{build_ebpf, layers, setup};

/// Environment variable that turns a skipped kernel or namespace test into a
/// failure. `.ci/run` sets it; so does `CI=true`.
pub const NO_SKIP: &str = "STRAIT_NO_SKIP";

pub fn run(extra: &[String]) -> anyhow::Result<()> {
    // The import rule first: it needs no build (about 0.5 s of CPU).
    step("cargo xtask layers (proxy-userspace import rule)");
    layers::check_or_fail()?;
    setup::run()?;
    // The release object, which proxy-userspace/build.rs embeds by default:
    // no STRAIT_EBPF_OBJECT, whose change alone would re-run that build
    // script and recompile `strait` against a plain `cargo test`.
    build_ebpf::run(true)?;
    step("cargo test --workspace (unit, kernel and namespace tiers)");
    let mut cmd = Command::new("cargo");
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .stdout(Stdio::piped());
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        cmd.env(NO_SKIP, "1");
    }
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    let mut child = cmd.spawn().context("cannot start cargo test")?;
    let mut totals = Totals::default();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child.wait()?;
    // One closing line over every test binary, in the plain form CI reads.
    println!(
        "summary: {} passed, {} failed",
        totals.passed, totals.failed
    );
    if !status.success() {
        bail!("cargo test failed with {status}");
    }
    Ok(())
}

/// Sums cargo's `test result: ok. N passed; M failed; ...` lines.
#[derive(Default, Debug, PartialEq)]
struct Totals {
    passed: u64,
    failed: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        let count = |word: &str| {
            rest.split(';')
                .find_map(|part| {
                    part.trim()
                        .strip_suffix(word)?
                        .trim()
                        .rsplit(' ')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
        };
        self.passed += count("passed");
        self.failed += count("failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cargo_test_result_lines() {
        let mut t = Totals::default();
        t.add("test result: ok. 34 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.91s");
        t.add("running 3 tests");
        t.add("test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.02s");
        assert_eq!(
            t,
            Totals {
                passed: 36,
                failed: 1
            }
        );
    }
}
