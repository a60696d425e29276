//! Startup checks for `strait run`: each failure is one line saying what is
//! wrong and what to do.
use std::path::{Path, PathBuf};

/// Checks that the host can run the daemon: root, BPF, cgroup v2, and the
/// config directory (`None`: the config comes from an API server).
/// Returns the cgroup v2 mount.
///
/// Errors: one sentence naming the problem and the fix.
pub fn check(config_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(config_dir) = config_dir.filter(|d| !d.is_dir()) {
        anyhow::bail!(
            "config directory {} does not exist or is not a directory: pass --config DIR with your Istio and Kubernetes YAML",
            config_dir.display()
        );
    }
    if !crate::sys::is_root() {
        anyhow::bail!("strait run needs root to load BPF programs and manage cgroups: run it as root (e.g. with sudo)");
    }
    if !Path::new("/sys/fs/bpf").exists() || !bpf_syscall_available() {
        anyhow::bail!("this kernel has no usable BPF (bpf() failed): Strait needs Linux >= 5.10 with CONFIG_BPF_SYSCALL and cgroup BPF");
    }
    crate::sys::cgroup2_mount().ok_or_else(|| {
        anyhow::anyhow!(
            "no cgroup v2 filesystem is mounted: mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) or boot with systemd.unified_cgroup_hierarchy"
        )
    })
}

/// Whether the `bpf()` system call exists (ENOSYS means it was compiled out).
fn bpf_syscall_available() -> bool {
    // BPF_PROG_LOAD (5) with a null attr fails with EFAULT/EINVAL when the
    // syscall exists, ENOSYS when it does not.
    // SAFETY: a null attr pointer with size 0 is rejected by the kernel
    // without being dereferenced.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 5, std::ptr::null::<u8>(), 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}
