//! `cargo xtask setup`: installs what is missing, and nothing else.
//!
//! Idempotent: every step first checks whether its tool is present, so on a
//! machine that has everything it finishes in seconds.
use std::process::Command;

use anyhow::{bail, Context};

use crate::cmd::{output, sh, step};

/// Debian packages the build, the tests and the demo use.
pub const DEBIAN_PACKAGES: &[&str] = &[
    // bpf-linker links against LLVM 22.
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // A C compiler: the mimalloc allocator the `strait` binary links is C.
    "gcc",
    // glibc's static archives and start files (`libc.a`, `rcrt1.o`):
    // `cargo xtask dist` links the shipped binary as a static PIE
    // (xtask/src/dist.rs). Only a recommendation of gcc, which
    // `--no-install-recommends` skips.
    "libc6-dev",
    // Namespace tests, the demo and benchmarks.
    "iproute2",
    "iptables",
    "procps",
    "curl",
    "nghttp2-client",
    "openssl",
    // `cargo xtask bench`: the proxies Strait is measured against, and
    // taskset to pin the load generator and the proxy to different CPUs.
    "nginx",
    "haproxy",
    "util-linux",
    // The end-to-end test against a real API server (when KUBE_APISERVER
    // names a kube-apiserver binary) runs etcd.
    "etcd-server",
];

/// bpf-linker's version requirement and the LLVM it is built against.
const BPF_LINKER_VERSION: &str = "0.13";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn run() -> anyhow::Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("Strait builds and runs on Linux only");
    }
    nightly_rust_src()?;
    debian_packages(DEBIAN_PACKAGES)?;
    bpf_linker()?;
    kubectl()?;
    cargo_fuzz()?;
    step("setup complete");
    Ok(())
}

fn nightly_rust_src() -> anyhow::Result<()> {
    step("nightly toolchain with rust-src (for -Z build-std=core)");
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]));
    match installed {
        None => sh(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ])),
        Some(list) if list.lines().any(|l| l.starts_with("rust-src")) => {
            eprintln!("    present");
            Ok(())
        }
        Some(_) => sh(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ])),
    }
}

/// Whether dpkg reports `pkg` as installed.
pub fn dpkg_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

/// Installs the Debian packages of `pkgs` that are missing.
pub fn debian_packages(pkgs: &[&str]) -> anyhow::Result<()> {
    step(&format!("Debian packages: {}", pkgs.join(" ")));
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("    present");
        return Ok(());
    }
    eprintln!("    missing: {}", missing.join(" "));
    sh(Command::new("apt-get").args(["update", "-q"]))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get install needs root")
}

/// kubectl with `kubectl kustomize` (the deploy/ manifests test, the API
/// server end-to-end test): Debian's `kubectl` package where the apt
/// sources have it, else `kubernetes-client`.
fn kubectl() -> anyhow::Result<()> {
    step("kubectl (kubectl kustomize renders deploy/)");
    if output(Command::new("kubectl").args(["kustomize", "--help"])).is_some() {
        eprintln!("    present");
        return Ok(());
    }
    let has_candidate = |pkg: &str| {
        output(Command::new("apt-cache").args(["policy", pkg]))
            .is_some_and(|p| p.contains("Candidate:") && !p.contains("Candidate: (none)"))
    };
    sh(Command::new("apt-get").args(["update", "-q"]))?;
    let pkg = if has_candidate("kubectl") {
        "kubectl"
    } else {
        "kubernetes-client"
    };
    sh(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends", pkg])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get install needs root")
}

fn bpf_linker() -> anyhow::Result<()> {
    step(&format!(
        "bpf-linker {BPF_LINKER_VERSION} built against LLVM 22"
    ));
    let version = output(Command::new("bpf-linker").arg("--version"));
    if let Some(v) = version {
        if v.contains(&format!(" {BPF_LINKER_VERSION}.")) {
            eprintln!("    present: {}", v.trim());
            return Ok(());
        }
        eprintln!("    found {}, want {BPF_LINKER_VERSION}", v.trim());
    }
    sh(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            &format!("~{BPF_LINKER_VERSION}"),
            "--no-default-features",
            "--features",
            "llvm-22",
            "--force",
        ])
        .env("LLVM_PREFIX", LLVM_PREFIX))
}

/// `cargo fuzz` (cargo-fuzz) for `cargo xtask fuzz`; it builds the targets
/// with the nightly toolchain installed above.
pub fn cargo_fuzz() -> anyhow::Result<()> {
    step("cargo-fuzz");
    if let Some(v) = output(Command::new("cargo").args(["fuzz", "--version"])) {
        eprintln!("    present: {}", v.trim());
        return Ok(());
    }
    sh(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}
