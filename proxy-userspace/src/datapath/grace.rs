//! RCU grace periods for the XDP tables' writers: a value a program may
//! have read (a `DENY_V4_DIR24` block an old level-1 entry named, a deny
//! prefix an old bucket or summary listed, a `DENY_DST` entry an old
//! prefix value sends lookups to) is reused or removed only once every
//! program run that started before it was unpublished has finished.
//! Katran and Cilium rely on the same guarantee (`synchronize_rcu()`
//! after a map value stops being reachable) for their LPM and LRU swaps.

/// Waits for an RCU grace period (`membarrier(MEMBARRIER_CMD_GLOBAL)`,
/// which the kernel implements with `synchronize_rcu()`, about 10 ms on a
/// loaded 2-CPU host): every XDP program run that started before has
/// finished. False when the call is refused (`EINVAL` on `nohz_full`
/// kernels, `ENOSYS` without `CONFIG_MEMBARRIER`): nothing was waited for.
pub(super) fn rcu_grace_period() -> bool {
    /// `MEMBARRIER_CMD_GLOBAL` from `linux/membarrier.h`.
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if r != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "membarrier(MEMBARRIER_CMD_GLOBAL) refused: no RCU grace period waited for");
    }
    r == 0
}

/// How long [`wait_before_removing`] sleeps when no grace period can be
/// waited for: an XDP program run takes well under a microsecond with
/// bottom halves off, so only a stalled CPU (a preempted vCPU) outlasts it.
const FALLBACK: std::time::Duration = std::time::Duration::from_millis(20);

/// Before removing entries that the tables no longer lead to, but that a
/// program run which started earlier may still look up: an RCU grace
/// period, or, when the kernel refuses one, a [`FALLBACK`] sleep (warned
/// by [`rcu_grace_period`]). Returns whether it was a grace period (only
/// then may freed entries be reused).
pub(super) fn wait_before_removing() -> bool {
    let waited = rcu_grace_period();
    if !waited {
        std::thread::sleep(FALLBACK);
    }
    waited
}
