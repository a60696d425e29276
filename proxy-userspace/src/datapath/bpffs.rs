//! The BPF filesystem where Strait pins its maps and links:
//! `<bpffs>/strait/<node>/` (`/sys/fs/bpf` by default, like libbpf and
//! Cilium), so the kernel data path outlives the daemon.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Where bpffs is mounted on a standard host.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

/// `BPF_FS_MAGIC`, the `f_type` statfs reports for bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The pin directory of `node` under the bpffs mount `bpffs`.
pub fn pin_dir(bpffs: &Path, node: &str) -> PathBuf {
    bpffs.join("strait").join(node)
}

/// Whether `dir` is on a bpffs (statfs magic).
pub fn is_bpffs(dir: &Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|st| st.f_type == BPF_FS_MAGIC)
}

/// Mounts bpffs at `dir` unless one is mounted there already (it is not on
/// some hosts' default boot, e.g. this project's CI machines).
///
/// Errors: `dir` cannot be created or `mount(2)` fails (needs root).
pub fn ensure_mounted(dir: &Path) -> anyhow::Result<()> {
    if is_bpffs(dir) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Err(e) =
        rustix::mount::mount("bpf", dir, "bpf", rustix::mount::MountFlags::empty(), None)
    {
        bail!(
            "mounting bpffs at {}: {}",
            dir.display(),
            std::io::Error::from(e)
        );
    }
    Ok(())
}
