//! A node's own bpffs instance (each `mount -t bpf` is a separate
//! filesystem), so a node's pinned maps and links live and die with it.
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Context;

/// Creates `dir` and mounts a fresh bpffs on it.
pub fn mount(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir(dir).with_context(|| format!("create {}", dir.display()))?;
    let target = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            c"bpffs".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mount bpffs on {}", dir.display()));
    }
    Ok(())
}

/// Lazily unmounts whatever is mounted on `dir` (MNT_DETACH: a daemon still
/// holding it open does not block the teardown); nothing mounted is fine.
pub fn unmount(dir: &Path) {
    let Ok(target) = CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: target is a valid NUL-terminated path.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
}
