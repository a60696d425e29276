//! A host-stall probe for benchmarks, measured the way `cyclictest`
//! (rt-tests) measures wake-up latency: one `SCHED_FIFO` thread pinned to
//! each CPU of interest sleeps to absolute deadlines 1 ms apart
//! (`clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`) and records every
//! wake-up later than a threshold. A real-time thread preempts every
//! ordinary task at once, so a late wake-up means the CPU was unavailable
//! to anything: the hypervisor did not run the vCPU, interrupts or a
//! non-preemptible kernel section held it. That does not depend on which
//! benchmark path (direct or proxied) was running, so it can be used to
//! set aside measurements the host disturbed, on either side of a pair.
//!
//! The probe costs each CPU one wake-up per millisecond (a few µs), the
//! same whichever path runs. After a late wake-up the next deadline is
//! taken from the wake-up (no catch-up burst), so one stall is one event
//! whose lateness is about the stall's length.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The probe's period (cyclictest's default interval, 1,000 µs).
const PERIOD: Duration = Duration::from_millis(1);
/// Real-time priority of the probe threads: above the proxy workers'
/// `SCHED_FIFO` 1 (`strait run --worker-priority auto`, the default), so
/// a worker's run is never taken for a host stall; ahead of every
/// `SCHED_OTHER` task. (cyclictest is commonly run at 80–99.)
const PRIORITY: libc::c_int = 50;

/// One late wake-up of a probe thread.
#[derive(Clone, Copy, Debug)]
pub struct Stall {
    /// The CPU the thread is pinned to.
    pub cpu: usize,
    /// When the thread woke up (late).
    pub at: Instant,
    /// How late it woke up after its deadline.
    pub late: Duration,
}

/// Probe threads, one per CPU, stopped and joined on drop.
pub struct StallProbe {
    stalls: Arc<Mutex<Vec<Stall>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl StallProbe {
    /// Starts one probe thread pinned to each of `cpus`, recording
    /// wake-ups later than `threshold`.
    ///
    /// # Errors
    /// When a thread cannot be pinned or made `SCHED_FIFO` (not root, or
    /// a cgroup without real-time runtime): the threads already started
    /// are stopped, and the error says which CPU and why.
    pub fn start(cpus: &[usize], threshold: Duration) -> std::io::Result<Self> {
        let mut probe = StallProbe {
            stalls: Arc::default(),
            stop: Arc::default(),
            threads: Vec::new(),
        };
        for &cpu in cpus {
            let (tx, rx) = std::sync::mpsc::channel();
            let (stalls, stop) = (probe.stalls.clone(), probe.stop.clone());
            probe.threads.push(
                std::thread::Builder::new()
                    .name(format!("stall-probe-{cpu}"))
                    .spawn(move || {
                        let setup = realtime_on(cpu);
                        let ok = setup.is_ok();
                        let _ = tx.send(setup);
                        if ok {
                            run(cpu, threshold, &stalls, &stop);
                        }
                    })?,
            );
            rx.recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("probe thread died")))
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("stall probe on CPU {cpu}: {e}"))
                })?;
        }
        Ok(probe)
    }

    /// The stalls whose wake-up fell in `from..=to`, any CPU.
    pub fn between(&self, from: Instant, to: Instant) -> Vec<Stall> {
        self.stalls
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|s| s.at >= from && s.at <= to)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for StallProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Pins the calling thread to `cpu` and makes it `SCHED_FIFO`.
fn realtime_on(cpu: usize) -> std::io::Result<()> {
    // SAFETY: sched_setaffinity/sched_setscheduler on the calling thread
    // (tid 0) with values on the stack.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let param = libc::sched_param {
            sched_priority: PRIORITY,
        };
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn now() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts
}

/// `ts` in nanoseconds.
fn ns(ts: libc::timespec) -> i128 {
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

fn add(ts: libc::timespec, d: Duration) -> libc::timespec {
    let t = ns(ts) + d.as_nanos() as i128;
    libc::timespec {
        tv_sec: (t / 1_000_000_000) as libc::time_t,
        tv_nsec: (t % 1_000_000_000) as libc::c_long,
    }
}

/// `a - b` in nanoseconds.
fn diff_ns(a: libc::timespec, b: libc::timespec) -> i128 {
    ns(a) - ns(b)
}

fn run(cpu: usize, threshold: Duration, stalls: &Mutex<Vec<Stall>>, stop: &AtomicBool) {
    let mut next = add(now(), PERIOD);
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: an absolute sleep to a timespec on the stack; EINTR
        // just wakes early (measured as on time).
        unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &next,
                std::ptr::null_mut(),
            )
        };
        let woke = now();
        let late = diff_ns(woke, next).max(0) as u64;
        if u128::from(late) > threshold.as_nanos() {
            if let Ok(mut s) = stalls.lock() {
                s.push(Stall {
                    cpu,
                    at: Instant::now(),
                    late: Duration::from_nanos(late),
                });
            }
            next = add(woke, PERIOD);
        } else {
            next = add(next, PERIOD);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespec_arithmetic_carries_nanoseconds() {
        let t = libc::timespec {
            tv_sec: 5,
            tv_nsec: 999_500_000,
        };
        let u = add(t, Duration::from_millis(1));
        assert_eq!((u.tv_sec, u.tv_nsec), (6, 500_000));
        assert_eq!(diff_ns(u, t), 1_000_000);
        assert_eq!(diff_ns(t, u), -1_000_000);
    }

    #[test]
    fn records_late_wake_ups_in_their_window_and_stops_on_drop() {
        if crate::privileged::require("stall probe").is_none() {
            return;
        }
        // A zero threshold records every wake-up: about one per period
        // inside the window, none outside it.
        let probe = StallProbe::start(&[0], Duration::ZERO).expect("probe on CPU 0");
        std::thread::sleep(Duration::from_millis(5));
        let from = Instant::now();
        std::thread::sleep(Duration::from_millis(50));
        let to = Instant::now();
        let seen = probe.between(from, to);
        assert!(seen.len() >= 10, "{} wake-ups in 50 ms", seen.len());
        assert!(seen
            .iter()
            .all(|s| s.cpu == 0 && s.at >= from && s.at <= to));
        assert!(probe
            .between(to + Duration::from_secs(1), to + Duration::from_secs(2))
            .is_empty());
        drop(probe);
        // A threshold no wake-up reaches records nothing.
        let probe = StallProbe::start(&[0], Duration::from_secs(10)).expect("probe on CPU 0");
        std::thread::sleep(Duration::from_millis(20));
        assert!(probe.between(from, Instant::now()).is_empty());
    }
}
