//! Skip-or-fail for tests that need root, BPF and cgroup v2.
use std::path::PathBuf;

/// Environment variable that turns a skip into a failure (`.ci/run` and
/// `cargo xtask test` under `CI=true` set it): in CI a skipped kernel test
/// means the machine's setup is broken, not that the test passed.
pub const NO_SKIP: &str = "STRAIT_NO_SKIP";

/// What a privileged test gets when it may run: the cgroup v2 mount.
pub struct Privileged {
    /// Where the cgroup v2 hierarchy is mounted (e.g. `/sys/fs/cgroup/unified`).
    pub cgroup2: PathBuf,
}

/// Returns `Some` when the test can run (Linux, root, cgroup v2, the eBPF
/// object embedded). Otherwise prints `SKIP <test>: <reason>` and returns
/// `None`, or panics with that reason when [`NO_SKIP`] is set.
pub fn require(test: &str) -> Option<Privileged> {
    match check() {
        Ok(p) => Some(p),
        Err(reason) => {
            if std::env::var_os(NO_SKIP).is_some() {
                panic!("{test} cannot run and {NO_SKIP} is set: {reason}");
            }
            eprintln!("SKIP {test}: {reason}");
            None
        }
    }
}

fn check() -> Result<Privileged, String> {
    if !cfg!(target_os = "linux") {
        return Err("needs Linux".into());
    }
    if !strait::sys::is_root() {
        return Err("needs root (BPF programs, cgroups and namespaces)".into());
    }
    if strait::datapath::EBPF_OBJECT.is_empty() {
        return Err("built without the eBPF object: run `cargo xtask test`".into());
    }
    let cgroup2 = strait::sys::cgroup2_mount().ok_or("no cgroup v2 filesystem mounted")?;
    Ok(Privileged { cgroup2 })
}

/// The ztunnel binary `ZTUNNEL_BIN` names, for the interoperability tests
/// (ztunnel is not packaged). Unset: prints `SKIP <test>: ...` with how to
/// build one (`build`: the cargo features it needs) and returns `None`,
/// also under [`NO_SKIP`] (a test of an unpackaged program runs only when
/// it is named). Panics when it names no file.
pub fn ztunnel_bin(test: &str, build: &str) -> Option<std::path::PathBuf> {
    let Some(bin) = std::env::var_os("ZTUNNEL_BIN").map(std::path::PathBuf::from) else {
        println!(
            "SKIP {test}: ZTUNNEL_BIN is not set (build istio/ztunnel{build} outside this repository and set ZTUNNEL_BIN to the binary)"
        );
        return None;
    };
    assert!(bin.is_file(), "ZTUNNEL_BIN={} is not a file", bin.display());
    Some(bin)
}
