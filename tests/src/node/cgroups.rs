//! The node's cgroup v2 tree: `<cgroup2>/strait-<id>/pods/<pod>` for pods
//! (the design's (ARCHITECTURE.md) pods cgroup, where the daemon attaches its socket programs)
//! and `<cgroup2>/strait-<id>/node` for processes that run "on the node"
//! (the daemon), outside the pods cgroup.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Creates `dir` (one level); an error names the directory.
pub fn create(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir(dir).with_context(|| format!("create cgroup {}", dir.display()))
}

/// Kills every process in the tree under `root` (`cgroup.kill`, recursive,
/// Linux 5.14+; older kernels: SIGKILL to each listed pid), waits up to 2 s
/// for it to empty, then removes the directories bottom up. Missing
/// directories are fine; what cannot be removed is reported on stderr.
pub fn remove_tree(root: &Path) {
    if !root.exists() {
        return;
    }
    if std::fs::write(root.join("cgroup.kill"), "1").is_err() {
        for dir in subtree(root) {
            kill_listed(&dir);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while populated(root) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Deepest first: a cgroup with children cannot be removed.
    let mut dirs = subtree(root);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        if let Err(e) = remove_dir_retrying(&dir) {
            eprintln!("warning: could not remove cgroup {}: {e}", dir.display());
        }
    }
}

/// Whether any process is left in the tree (`populated 1` in cgroup.events).
pub fn populated(root: &Path) -> bool {
    std::fs::read_to_string(root.join("cgroup.events"))
        .map(|e| e.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// The pids directly in one cgroup.
pub fn pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

fn kill_listed(dir: &Path) {
    for pid in pids(dir) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// `root` and every cgroup below it.
fn subtree(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

fn remove_dir_retrying(dir: &Path) -> std::io::Result<()> {
    let mut last = Ok(());
    for _ in 0..100 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // EBUSY while the last killed process is still being reaped.
            Err(e) => last = Err(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    last
}
