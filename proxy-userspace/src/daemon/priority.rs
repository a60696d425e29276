//! The daemon's housekeeping thread yields the CPU to the proxy workers.
//!
//! `strait-reload` compiles configuration changes and, between them, every
//! [`super::CGROUP_RESCAN`] rescans the pods' cgroups and HBONE listeners
//! and every two seconds reads the kernel's TCP counters (one map lookup
//! per slot: ~1,000 syscalls in one burst). On a node whose proxy worker
//! shares its CPU (one worker per CPU), such a burst at the same
//! priority holds the CPU for up to a scheduler slice (0.75 ms × (1 +
//! log2 CPUs) under EEVDF) while a request waits, which shows in the
//! proxies' tail latency (issue 20: added p99 through two HBONE hops).
//!
//! Ten nice steps below a worker ([`HOUSEKEEPING_NICE`]) the thread's weight is 110 against a
//! worker's 1024: a waking worker has the earlier virtual deadline and
//! preempts it at once, and when both stay busy the thread still gets about
//! a tenth of the CPU, so reloads slow down under saturation but never stop
//! (unlike `SCHED_IDLE`). The scheduler and weights are the kernel's
//! (`kernel/sched/fair.c`, `sched_prio_to_weight`).

/// How many nice steps the housekeeping thread runs below the daemon's
/// own priority (the workers keep the daemon's, normally 0 → 10).
pub(super) const HOUSEKEEPING_NICE: i32 = 10;

/// Lowers the calling thread's priority by [`HOUSEKEEPING_NICE`] steps
/// (at most to 19), for this thread only: Linux's
/// `setpriority(PRIO_PROCESS, tid)` is per thread. Lowering needs no
/// privilege; a failure is logged and changes nothing else.
pub(super) fn lower_this_thread() {
    let tid = Some(rustix::thread::gettid());
    let r = rustix::process::getpriority_process(tid).and_then(|now| {
        rustix::process::setpriority_process(tid, (now + HOUSEKEEPING_NICE).min(19))
    });
    if let Err(e) = r {
        tracing::warn!("could not lower the reload thread's priority: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the calling thread is lowered: another thread of the process
    /// keeps its priority.
    #[test]
    fn lowers_only_the_calling_thread() {
        let me = rustix::thread::gettid();
        let before = rustix::process::getpriority_process(Some(me)).unwrap();
        let lowered = std::thread::spawn(|| {
            lower_this_thread();
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before + HOUSEKEEPING_NICE).min(19));
        assert_eq!(
            rustix::process::getpriority_process(Some(me)).unwrap(),
            before
        );
    }
}
