//! One daemon per node: an exclusive `flock(2)` on a lock file named after
//! the node's pin directory, taken before the daemon touches the node.
//!
//! bpffs holds only pins and directories, so the lock file lives in
//! [`LOCK_DIR`]; its name is the pin directory's path with `/` turned into
//! `_` (two `--bpffs` mounts with the same node name are different nodes).
//! The kernel releases the lock when the process exits, however it exits.
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Where lock files are created.
pub const LOCK_DIR: &str = "/run/strait";

/// An exclusive lock on one node; released on drop or exit.
#[derive(Debug)]
pub struct NodeLock {
    _file: File,
    path: PathBuf,
}

impl NodeLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file of the node pinned at `pin_dir`, under `lock_dir`.
pub fn lock_path(lock_dir: &Path, pin_dir: &Path) -> PathBuf {
    let name: String = pin_dir
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    lock_dir.join(format!("{name}.lock"))
}

/// Takes node `node`'s lock (its pins at `pin_dir`) without waiting and
/// writes this process's id into the lock file.
///
/// Errors: another process holds it — the message names the node, the
/// other daemon's pid and the lock file; or the lock file cannot be created.
pub fn lock_node(lock_dir: &Path, pin_dir: &Path, node: &str) -> anyhow::Result<NodeLock> {
    std::fs::create_dir_all(lock_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the lock directory {}: {e}",
            lock_dir.display()
        )
    })?;
    let path = lock_path(lock_dir, pin_dir);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open the node lock {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let who = if pid.is_empty() {
                String::new()
            } else {
                format!(" (pid {pid})")
            };
            anyhow::bail!(
                "another strait is already running for node {node}{who}: one daemon per node (pins {}, lock {}); stop it first or pass another --node",
                pin_dir.display(),
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock {}: {e}", path.display())
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(NodeLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_node_is_refused_with_the_pid() {
        let dir = std::env::temp_dir().join(format!("strait-lock-{}", std::process::id()));
        let pins = Path::new("/sys/fs/bpf/strait/n1");
        let first = lock_node(&dir, pins, "n1").unwrap();
        assert_eq!(first.path(), dir.join("sys_fs_bpf_strait_n1.lock"));
        // flock locks belong to the open file description: a second open
        // in the same process conflicts like another process would.
        let err = lock_node(&dir, pins, "n1").unwrap_err().to_string();
        assert!(
            err.contains("already running for node n1")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        let other = lock_node(&dir, Path::new("/sys/fs/bpf/strait/n2"), "n2");
        assert!(other.is_ok(), "another node is not locked");
        drop(first);
        assert!(lock_node(&dir, pins, "n1").is_ok(), "released on drop");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
