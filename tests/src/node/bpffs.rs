//! A node's own bpffs instance (each `mount -t bpf` is a separate
//! filesystem), so a node's pinned maps and links live and die with it.
use std::path::Path;

use anyhow::Context;

/// Creates `dir` and mounts a fresh bpffs on it.
pub fn mount(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir(dir).with_context(|| format!("create {}", dir.display()))?;
    rustix::mount::mount(
        "bpffs",
        dir,
        "bpf",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("mount bpffs on {}", dir.display()))
}

/// Lazily unmounts whatever is mounted on `dir` (MNT_DETACH: a daemon still
/// holding it open does not block the teardown); nothing mounted is fine.
pub fn unmount(dir: &Path) {
    let _ = rustix::mount::unmount(dir, rustix::mount::UnmountFlags::DETACH);
}
