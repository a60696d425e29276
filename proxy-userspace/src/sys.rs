//! Facts about the host the daemon needs: privileges and the cgroup v2 mount.
use std::path::PathBuf;

pub mod code;

/// Whether the process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The cgroup v2 mount point, read from `/proc/self/mounts`.
///
/// On hybrid hosts it is `/sys/fs/cgroup/unified` rather than
/// `/sys/fs/cgroup`, so it is never hard-coded. `None` when no cgroup2
/// filesystem is mounted.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    parse_cgroup2_mount(&mounts)
}

fn parse_cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// The addresses of this network namespace's interfaces (`getifaddrs`):
/// the node's own addresses. Empty when they cannot be read.
pub fn node_addresses() -> Vec<std::net::IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<std::net::IpAddr> = addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(std::net::IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h` of the v3 the
/// `mimalloc` crate builds by default, and of v2: `mi_option_e` entry 15;
/// `libmimalloc-sys` has no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The environment variable mimalloc reads the purge delay from; when the
/// user sets it, [`tune_allocator`] leaves the delay alone.
pub const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Sets the daemon's allocator up for a small resident set (issue 20: RSS
/// per node): memory mimalloc no longer uses goes back to the OS when it is
/// freed (`purge_delay` 0) instead of up to a second later (mimalloc v3's
/// default is 1,000 ms) — and a delayed purge only runs while the freeing
/// thread keeps allocating, so a proxy worker that goes quiet after a burst
/// kept the burst's pages. Each thread still keeps a couple of free pages
/// per size class (`page_full_retain`), so a hot size class is not purged
/// and refaulted on every request. A `MIMALLOC_PURGE_DELAY` in the
/// environment wins (e.g. `1000` to trade memory for fewer `madvise`
/// calls). Call once, early; harmless when mimalloc is not the global
/// allocator.
pub fn tune_allocator() {
    if std::env::var_os(PURGE_DELAY_ENV).is_some() {
        return;
    }
    // SAFETY: mi_option_set only stores the value in mimalloc's option
    // table; the option index is in range for the mimalloc v2 this links.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

/// Hands the memory the allocator holds but no longer uses back to the OS
/// at once (`mi_collect(true)`: the calling thread's free pages, then every
/// arena's pending purges), instead of after mimalloc's purge delay — which
/// only runs while the freeing thread keeps allocating, so garbage a thread
/// leaves before it goes quiet would stay resident.
///
/// The daemon calls it once its start-up is done: parsing and compiling the
/// configuration and loading the eBPF object free several MB on the main
/// thread, which then only waits on the runtime. Costs a few hundred µs;
/// not for hot paths. Harmless when mimalloc is not the global allocator
/// (tests): it then has nothing to collect.
pub fn release_free_memory() {
    // SAFETY: mi_collect has no preconditions; it only walks mimalloc's own
    // heaps and arenas.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_cgroup2_mount() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            parse_cgroup2_mount(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn no_cgroup2_mount() {
        assert_eq!(parse_cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }

    /// The daemon's allocator purges freed memory at once, unless the user
    /// chose a delay through mimalloc's own variable.
    #[test]
    fn allocator_purges_immediately_unless_told() {
        // SAFETY: reading an option of the linked mimalloc.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os(PURGE_DELAY_ENV).is_some() {
            let before = get();
            tune_allocator();
            assert_eq!(get(), before, "{PURGE_DELAY_ENV} must win");
        } else {
            assert_eq!(get(), 1000, "mimalloc v3's default purge delay (option 15)");
            tune_allocator();
            assert_eq!(get(), 0);
        }
    }
}
