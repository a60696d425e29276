//! A proxy worker asks the scheduler for a short time slice (issue 20:
//! added p99 through two HBONE hops).
//!
//! Under EEVDF (Linux ≥ 6.6) a runnable task of the fair class gets a
//! virtual deadline of its eligible time plus its slice over its weight;
//! a task that wakes preempts the running one only when its deadline is
//! earlier. Since Linux 6.12 a thread may request its own slice:
//! `sched_setattr(2)` with `SCHED_OTHER` and `sched_runtime` = the slice in
//! nanoseconds (clamped by the kernel to 0.1–100 ms; `sched_getattr`
//! returns the slice in force). A proxy worker runs for tens of
//! microseconds per wake-up, so a short request does not cut its work, but
//! its deadline comes earlier when it wakes: it runs before a task on the
//! same CPU that woke at the same time with the default slice (0.75 ms ×
//! (1 + log2 CPUs)), e.g. the backend or the other node's proxy.
//! Upstream: `kernel/sched/syscalls.c::__setscheduler_params` (commit
//! 857b158dc5e8, "sched/eevdf: Use sched_attr::sched_runtime to set
//! request/slice suggestion"), `kernel/sched/fair.c::update_deadline`.
//!
//! Older kernels accept the call and ignore the slice (`sched_getattr`
//! reads 0): [`request`] reports that as [`SliceError::Ignored`].
use std::time::Duration;

/// The kernel's bounds for a requested fair-class slice
/// (`NSEC_PER_MSEC / 10` and `100 * NSEC_PER_MSEC`).
pub const SLICE_RANGE: (Duration, Duration) =
    (Duration::from_micros(100), Duration::from_millis(100));

/// Why a slice request did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    /// The requested slice is outside [`SLICE_RANGE`] (the kernel would
    /// silently clamp it).
    #[error("slice {0:?} is outside the kernel's range of 100 µs to 100 ms")]
    OutOfRange(Duration),
    /// `sched_getattr`/`sched_setattr` failed (e.g. `EPERM` under a
    /// seccomp filter, `ENOSYS`).
    #[error("sched_setattr refused the slice request: {0}")]
    Refused(std::io::Error),
    /// The call succeeded but the thread's slice is not the one asked for
    /// (Linux < 6.12 ignores `sched_runtime` for `SCHED_OTHER`); the value
    /// read back, nanoseconds (0 on such kernels).
    #[error("the kernel ignored the slice request (slice read back: {0} ns; needs Linux ≥ 6.12)")]
    Ignored(u64),
    /// The thread runs under a policy other than `SCHED_OTHER`/`SCHED_BATCH`
    /// (e.g. `chrt`): its slice is not the fair class's; left unchanged.
    #[error("the thread runs under scheduling policy {0}, not SCHED_OTHER: left unchanged")]
    NotFair(u32),
}

/// `struct sched_attr` (`include/uapi/linux/sched/types.h`, size ver. 1).
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

/// `sched_getattr(tid)`: the thread's policy, nice and (fair class,
/// Linux ≥ 6.12) slice.
fn get(tid: i32) -> std::io::Result<SchedAttr> {
    let mut a = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: `a` is a valid, writable `sched_attr` of `size` bytes.
    let r = unsafe { libc::syscall(libc::SYS_sched_getattr, tid, &mut a, size, 0u32) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(a)
}

/// The fair-class slice of thread `tid` in force (0 of the calling
/// thread), or `None` when the kernel does not report one (Linux < 6.12,
/// or a policy outside the fair class).
///
/// Errors: `sched_getattr` fails (no such thread).
pub fn slice_of(tid: i32) -> std::io::Result<Option<Duration>> {
    let a = get(tid)?;
    Ok(
        ((a.policy == SCHED_OTHER || a.policy == SCHED_BATCH) && a.runtime > 0)
            .then(|| Duration::from_nanos(a.runtime)),
    )
}

/// Requests `slice` for the calling thread only, keeping its policy and
/// nice value; returns the slice in force afterwards.
///
/// Errors: [`SliceError`] — out of range, refused, ignored by the kernel,
/// or the thread is not in the fair class. The thread is unchanged then.
pub fn request(slice: Duration) -> Result<Duration, SliceError> {
    if slice < SLICE_RANGE.0 || slice > SLICE_RANGE.1 {
        return Err(SliceError::OutOfRange(slice));
    }
    let now = get(0).map_err(SliceError::Refused)?;
    if now.policy != SCHED_OTHER && now.policy != SCHED_BATCH {
        return Err(SliceError::NotFair(now.policy));
    }
    let want = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: now.policy,
        // The nice value is part of the fair-class parameters: keep it.
        nice: now.nice,
        runtime: slice.as_nanos() as u64,
        ..SchedAttr::default()
    };
    // SAFETY: `want` is a valid `sched_attr` of the size it declares; pid
    // 0 is the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &want, 0u32) };
    if r != 0 {
        return Err(SliceError::Refused(std::io::Error::last_os_error()));
    }
    let after = get(0).map_err(SliceError::Refused)?;
    if after.runtime != want.runtime {
        return Err(SliceError::Ignored(after.runtime));
    }
    Ok(Duration::from_nanos(after.runtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request changes the calling thread's slice and nothing else:
    /// its nice value stays, another thread keeps the default slice. On a
    /// kernel that ignores it (< 6.12) the error says so.
    #[test]
    fn a_slice_request_applies_to_the_calling_thread_only() {
        let main_before = slice_of(0).unwrap();
        let (granted, nice_before, nice_after) = std::thread::spawn(|| {
            let tid = Some(rustix::thread::gettid());
            let before = rustix::process::getpriority_process(tid).unwrap();
            let r = request(Duration::from_micros(150));
            (
                r,
                before,
                rustix::process::getpriority_process(tid).unwrap(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(nice_before, nice_after);
        match granted {
            Ok(g) => assert_eq!(g, Duration::from_micros(150)),
            Err(SliceError::Ignored(0)) => {
                assert_eq!(main_before, None, "an ignoring kernel reports no slice")
            }
            Err(e) => panic!("{e}"),
        }
        assert_eq!(slice_of(0).unwrap(), main_before);
    }

    /// A thread under another policy (here `SCHED_IDLE`, which needs no
    /// privilege) is refused and left as it was.
    #[test]
    fn a_thread_outside_the_fair_class_is_left_unchanged() {
        let (r, before, after) = std::thread::spawn(|| {
            let mut a = get(0).unwrap();
            a.size = std::mem::size_of::<SchedAttr>() as u32;
            a.policy = 5; // SCHED_IDLE
            a.runtime = 0;
            // SAFETY: a valid `sched_attr` of the size it declares.
            let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &a, 0u32) };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            let before = get(0).unwrap();
            let r = request(Duration::from_micros(200));
            (r, before, get(0).unwrap())
        })
        .join()
        .unwrap();
        assert!(matches!(r, Err(SliceError::NotFair(5))), "{r:?}");
        assert_eq!(
            (before.policy, before.runtime),
            (after.policy, after.runtime)
        );
    }

    #[test]
    fn a_slice_the_kernel_would_clamp_is_refused() {
        for s in [Duration::from_micros(99), Duration::from_millis(101)] {
            assert!(matches!(request(s), Err(SliceError::OutOfRange(_))));
        }
    }
}
