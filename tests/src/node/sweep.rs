//! Removing what an earlier test run left behind when it was killed before
//! its Drop guards ran (SIGKILL, a timeout, a crash).
//!
//! Candidates are names `strait-<id>` / `strait-<id>-…` ([`super::names`])
//! in `/run/netns`, the cgroup v2 root and the temp dir (with the node's
//! bpffs mount inside), whose id encodes a pid that no longer runs. Names
//! of other shapes (e.g. `strait-test-…` from [`crate::cgroup`]) are never
//! touched.
use std::path::{Path, PathBuf};
use std::sync::Once;

use super::{bpffs, cgroups, names, netns};

/// Runs [`stale`] once per process, before the first node is made. That
/// first sweep also removes leftovers carrying this process's own pid (a
/// reused pid), since this process has made nothing yet.
pub fn once(cgroup2: &Path) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for removed in sweep(cgroup2, true) {
            eprintln!("removed stale test leftover {}", removed.display());
        }
    });
}

/// Removes leftovers of dead test runs; returns what was removed.
pub fn stale(cgroup2: &Path) -> Vec<PathBuf> {
    sweep(cgroup2, false)
}

fn sweep(cgroup2: &Path, include_self: bool) -> Vec<PathBuf> {
    let dead = |name: &str| {
        names::id_in(name)
            .and_then(names::pid_of)
            .is_some_and(|pid| {
                (include_self && pid == std::process::id())
                    || !Path::new(&format!("/proc/{pid}")).exists()
            })
    };
    let mut removed = Vec::new();
    for dir in entries(cgroup2, &dead) {
        cgroups::remove_tree(&dir);
        removed.push(dir);
    }
    for ns in entries(Path::new(netns::NETNS_DIR), &dead) {
        if let Some(name) = ns.file_name().and_then(|n| n.to_str()) {
            remove_netns(name);
        }
        removed.push(ns);
    }
    for dir in entries(&std::env::temp_dir(), &dead) {
        remove_tmp(&dir);
        removed.push(dir);
    }
    removed
}

/// Removes a node's tmp dir, unmounting its bpffs first (so the pins are
/// released, not walked).
pub fn remove_tmp(dir: &Path) {
    bpffs::unmount(&dir.join("bpffs"));
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            eprintln!("warning: could not remove {}: {e}", dir.display());
        }
    }
}

fn entries(dir: &Path, dead: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(dead))
        .map(|e| e.path())
        .collect()
}

/// Kills every process still in the named namespace (`ip netns pids`),
/// then deletes it. Missing namespaces are fine.
pub fn remove_netns(name: &str) {
    if !netns::path(name).exists() {
        return;
    }
    if let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "pids", name])
        .output()
    {
        for pid in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
        {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    netns::del(name);
}
