//! `--worker-priority auto`: the proxy workers run `SCHED_FIFO` while they
//! are lightly loaded and in the fair class while they are busy (issue 20:
//! added p99 through two HBONE hops).
//!
//! Why both: measured on the mesh benchmark (`bench-mesh --ab-args
//! "--worker-priority fifo:1"`, same rounds, 2026-12-06), `SCHED_FIFO`
//! workers cut the added p99 at 1,000 requests/s from +514 to +119 µs —
//! a woken worker no longer waits behind a fair-class task holding its
//! CPU (the backend, or a process at a better nice value) — but cut the
//! requests/s at saturation to a third (11–12k against 31–37k) at 3.5×
//! the CPU per request: a worker that preempts the backend for every
//! segment leaves nothing to batch. Nice −10 did neither good (p99 +595
//! against +267, requests/s halved).
//!
//! So a monitor thread reads each worker's CPU time
//! (`/proc/self/task/<tid>/schedstat`, field 1, ns) every [`PERIOD`] and
//! moves a worker whose share of the period was over [`BUSY`] to
//! `SCHED_OTHER` (at its nice value), and back to `SCHED_FIFO` once its
//! share falls under [`IDLE`] (hysteresis: at most one change per worker
//! per period). A worker that spins (a bug, or saturation) therefore
//! holds `SCHED_FIFO` for at most one period, and the kernel's real-time
//! throttling (`sched_rt_runtime_us`, 95%) bounds even that. Nothing runs
//! on the workers' own path: no clock read, no system call per request.
use std::time::{Duration, Instant};

use super::sched::{set_class, Class};

/// How often the monitor reads the workers' CPU time: a worker that
/// turns busy keeps `SCHED_FIFO` for up to this long (at a third of the
/// fair class's requests/s, measured: 100 ms cost a 2 s saturation run
/// ~5%); a read is ~5 µs per worker, 20 times a second.
pub const PERIOD: Duration = Duration::from_millis(50);
/// A worker that ran more than this share of a period leaves `SCHED_FIFO`
/// (at 1,000 requests/s through two hops a worker runs ~5% of the time;
/// at saturation ~40%).
pub const BUSY: f64 = 0.25;
/// A worker in the fair class that ran less than this share of a period
/// returns to `SCHED_FIFO`.
pub const IDLE: f64 = 0.10;

/// The class a worker should have next, given its current class and the
/// share of the last period it ran (0.0–1.0): [`BUSY`] and [`IDLE`] with
/// hysteresis between them.
pub fn next_class(now: Class, busy_share: f64) -> Class {
    match now {
        Class::Fifo if busy_share > BUSY => Class::Fair,
        Class::Fair if busy_share < IDLE => Class::Fifo,
        c => c,
    }
}

/// A thread's CPU time so far, ns (`/proc/self/task/<tid>/schedstat`,
/// first field). `None` when the thread is gone.
fn cpu_ns(tid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    s.split_ascii_whitespace().next()?.parse().ok()
}

/// The running monitor; dropping it stops the thread (within one
/// [`PERIOD`]).
pub struct Monitor {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the monitor for the worker threads `tids`, which already run
/// `SCHED_FIFO` at `prio` (they set it themselves when they started).
/// A worker's class change that the kernel refuses is logged once and
/// that worker is left as it is.
///
/// Errors: the monitor thread cannot be created.
pub fn start(tids: Vec<i32>, prio: u8) -> std::io::Result<Monitor> {
    let (stop, rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("strait-sched".into())
        .spawn(move || run(&tids, prio, &rx))?;
    Ok(Monitor {
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// The monitor's loop (see the module documentation).
fn run(tids: &[i32], prio: u8, stop: &std::sync::mpsc::Receiver<()>) {
    let mut workers: Vec<(i32, Class, Option<u64>, bool)> = tids
        .iter()
        .map(|&t| (t, Class::Fifo, cpu_ns(t), false))
        .collect();
    let mut then = Instant::now();
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(PERIOD) {
        let now = Instant::now();
        let wall = now.duration_since(then).as_nanos().max(1) as f64;
        then = now;
        for (tid, class, last, refused) in &mut workers {
            let Some(ran) = cpu_ns(*tid) else { continue };
            let share = last.map_or(0.0, |l| ran.saturating_sub(l) as f64 / wall);
            *last = Some(ran);
            let next = next_class(*class, share);
            if next == *class || *refused {
                continue;
            }
            match set_class(*tid, next, prio) {
                Ok(()) => {
                    tracing::debug!(
                        tid = *tid,
                        ?next,
                        share,
                        "proxy worker's scheduling class changed"
                    );
                    *class = next;
                }
                Err(e) => {
                    tracing::warn!(
                        tid = *tid,
                        "--worker-priority auto: the kernel refused {next:?} for a proxy worker, left as it is: {e}"
                    );
                    *refused = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_fifo_when_busy_and_returns_when_idle_with_hysteresis() {
        assert_eq!(next_class(Class::Fifo, 0.05), Class::Fifo);
        assert_eq!(next_class(Class::Fifo, 0.20), Class::Fifo);
        assert_eq!(next_class(Class::Fifo, 0.30), Class::Fair);
        assert_eq!(next_class(Class::Fair, 0.20), Class::Fair);
        assert_eq!(next_class(Class::Fair, 0.30), Class::Fair);
        assert_eq!(next_class(Class::Fair, 0.05), Class::Fifo);
    }

    /// A `SCHED_FIFO` thread that spins is moved to the fair class within
    /// a few periods, and back to `SCHED_FIFO` once it sleeps. Needs root
    /// (`CAP_SYS_NICE`); elsewhere the first `sched_setscheduler` is
    /// refused and the test says so.
    #[test]
    fn a_spinning_fifo_thread_is_demoted_then_promoted_when_idle() {
        use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
        use std::sync::Arc;
        let spin = Arc::new(AtomicBool::new(true));
        let tid = Arc::new(AtomicI32::new(0));
        let (s, t) = (spin.clone(), tid.clone());
        let worker = std::thread::spawn(move || {
            let me = rustix::thread::gettid().as_raw_nonzero().get();
            if let Err(e) = set_class(me, Class::Fifo, 1) {
                t.store(-1, Ordering::SeqCst);
                return Err(e);
            }
            t.store(me, Ordering::SeqCst);
            // Spin, with a short sleep now and then so that the test's
            // own threads on a one-CPU machine are not held off by the
            // real-time thread for long.
            while s.load(Ordering::Relaxed) {
                let until = Instant::now() + Duration::from_millis(5);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        });
        while tid.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let me = tid.load(Ordering::SeqCst);
        if me < 0 {
            let e = worker.join().unwrap().unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM));
            eprintln!("skipped: SCHED_FIFO refused (not root): {e}");
            return;
        }
        // SAFETY: sched_getscheduler(2) of a live thread of this process.
        let policy = || unsafe { libc::sched_getscheduler(me) };
        assert_eq!(policy(), libc::SCHED_FIFO);
        let _monitor = start(vec![me], 1).unwrap();
        // Generous bounds: a loaded test machine delays the monitor.
        let wait_for = |want: i32, what: &str| {
            let deadline = Instant::now() + 40 * PERIOD;
            while policy() != want {
                assert!(Instant::now() < deadline, "{what}");
                std::thread::sleep(PERIOD / 4);
            }
        };
        wait_for(libc::SCHED_OTHER, "a spinning worker kept SCHED_FIFO");
        spin.store(false, Ordering::Relaxed);
        wait_for(
            libc::SCHED_FIFO,
            "an idle worker did not get SCHED_FIFO back",
        );
        worker.join().unwrap().unwrap();
    }
}
