//! A private bpffs mount for one test: the data path pins its maps and links
//! there instead of `/sys/fs/bpf`, and unmounting it on drop releases every
//! pin (each bpffs mount is its own instance).
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A bpffs mounted at `/tmp/strait-bpffs-<pid>-<n>`; unmounted (lazily, so
/// open handles do not block it) and removed on drop.
pub struct TestBpffs {
    path: PathBuf,
}

impl TestBpffs {
    /// Mounts a fresh bpffs. Errors: not root, or no bpffs support.
    pub fn new() -> anyhow::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("strait-bpffs-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        let guard = Self { path };
        strait::datapath::ensure_bpffs(&guard.path)?;
        Ok(guard)
    }

    /// The mount point (pass it as `DatapathConfig::bpffs`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestBpffs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
        if std::fs::remove_dir(&self.path).is_err() {
            eprintln!("warning: could not remove {}", self.path.display());
        }
    }
}
