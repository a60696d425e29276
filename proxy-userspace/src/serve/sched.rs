//! The proxy workers' scheduling priority (`strait run --worker-priority`,
//! issue 20: added p99 through two HBONE hops).
//!
//! A proxied request passes through a worker thread of each node it
//! crosses, on CPUs it shares with the node's pods. At the default policy
//! a worker that wakes for a request waits behind whatever fair-class task
//! holds its CPU until EEVDF lets it preempt (up to a slice, 0.75 ms ×
//! (1 + log2 CPUs), longer behind a task of a better nice value), and the
//! request waits with it. The settings, per thread (only the workers
//! change: the daemon's other threads keep theirs):
//!
//! - `nice:N` (−20 … 19): `setpriority(PRIO_PROCESS, tid, N)`; the worker
//!   stays in the fair class with the weight of nice N
//!   (`sched_prio_to_weight`: −10 weighs 9,548 against 1,024 at 0).
//! - `fifo:P` (1 … 99): `sched_setscheduler(tid, SCHED_FIFO, P)`, as the
//!   kernel's own network processing (softirq) runs ahead of every task: a
//!   woken worker preempts any fair-class task at once (on a kernel without
//!   kernel preemption, at the next return to user space). Workers of equal
//!   priority do not preempt each other. The kernel keeps 5% of each
//!   second for the fair class (`sched_rt_runtime_us`, and since Linux
//!   6.12 the fair server), so a worker spinning on a bug cannot take a
//!   CPU from the pods entirely — but up to 95% of it can: use it on nodes
//!   whose proxy load is known, as one would for any real-time thread.
//! - `auto` (`strait run`'s default): `SCHED_FIFO` at priority 1 while a
//!   worker is lightly loaded, the fair class while it is busy
//!   (`sched_auto.rs`, which has the measurements: `fifo` alone cuts the
//!   tail but also the requests/s at saturation).
//! - `inherit`: the daemon's own priority.
//!
//! All but `inherit` need `CAP_SYS_NICE` (the daemon keeps it). A value
//! given on the command line that the kernel refuses fails the start with
//! the flag named (a priority asked for and not in force would be a
//! setting silently ignored); the default `auto` refused is one warning
//! and the workers keep the daemon's priority (`workers.rs`).
use std::fmt;
use std::str::FromStr;

/// A scheduling priority for the proxy worker threads (module
/// documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerPriority {
    /// Fair class at this nice value, −20 … 19.
    Nice(i32),
    /// `SCHED_FIFO` at this real-time priority, 1 … 99.
    Fifo(u8),
    /// `SCHED_FIFO` at priority 1 while lightly loaded, the fair class
    /// while busy ([`super::sched_auto`]). `strait run`'s default.
    Auto,
    /// The daemon's own priority, unchanged (`inherit`).
    Inherit,
}

/// Why `--worker-priority`'s value was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PriorityParseError {
    /// Neither `auto`, `inherit`, `nice:N` nor `fifo:P`.
    #[error(
        "expected auto, inherit, nice:N (N from -20 to 19) or fifo:P (P from 1 to 99), got {0:?}"
    )]
    Form(String),
    /// The number is outside the policy's range.
    #[error("{0} is outside the range of {1}")]
    Range(i64, &'static str),
}

impl FromStr for WorkerPriority {
    type Err = PriorityParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let form = || PriorityParseError::Form(s.to_owned());
        match s.trim() {
            "auto" => return Ok(Self::Auto),
            "inherit" => return Ok(Self::Inherit),
            _ => {}
        }
        let (kind, n) = s.split_once(':').ok_or_else(form)?;
        let n: i64 = n.trim().parse().map_err(|_| form())?;
        match kind.trim() {
            "nice" if (-20..=19).contains(&n) => Ok(Self::Nice(n as i32)),
            "nice" => Err(PriorityParseError::Range(n, "nice:N (-20 to 19)")),
            "fifo" if (1..=99).contains(&n) => Ok(Self::Fifo(n as u8)),
            "fifo" => Err(PriorityParseError::Range(n, "fifo:P (1 to 99)")),
            _ => Err(form()),
        }
    }
}

impl fmt::Display for WorkerPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nice(n) => write!(f, "nice:{n}"),
            Self::Fifo(p) => write!(f, "fifo:{p}"),
            Self::Auto => f.write_str("auto"),
            Self::Inherit => f.write_str("inherit"),
        }
    }
}

/// The real-time priority of `auto`'s `SCHED_FIFO` (the lowest).
pub const AUTO_FIFO: u8 = 1;

/// A thread's scheduling class as `auto` moves it ([`set_class`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `SCHED_FIFO` at a given real-time priority.
    Fifo,
    /// `SCHED_OTHER` (the fair class).
    Fair,
}

/// Sets thread `tid`'s class: `SCHED_FIFO` at `prio`, or `SCHED_OTHER`
/// (which keeps the thread's nice value; always allowed).
///
/// Errors: the kernel's refusal (`EPERM` without `CAP_SYS_NICE` or in a
/// cgroup without real-time runtime, `ESRCH` for a thread gone).
pub fn set_class(tid: i32, class: Class, prio: u8) -> std::io::Result<()> {
    let (policy, p) = match class {
        Class::Fifo => (libc::SCHED_FIFO, i32::from(prio)),
        Class::Fair => (libc::SCHED_OTHER, 0),
    };
    let param = libc::sched_param { sched_priority: p };
    // SAFETY: sched_setscheduler(2) on a thread of this process with an
    // initialized `sched_param` on the stack.
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl WorkerPriority {
    /// Applies this priority to the calling thread only (Linux's
    /// `setpriority(PRIO_PROCESS, tid)` and `sched_setscheduler(tid)` are
    /// per thread). `auto` starts at `SCHED_FIFO` priority
    /// [`AUTO_FIFO`]; the monitor moves the thread from there.
    ///
    /// Errors: the kernel's refusal, e.g. `EPERM` without `CAP_SYS_NICE`.
    pub fn apply_to_this_thread(self) -> std::io::Result<()> {
        let tid = rustix::thread::gettid();
        match self {
            Self::Inherit => {}
            Self::Nice(n) => rustix::process::setpriority_process(Some(tid), n)?,
            Self::Fifo(p) => set_class(tid.as_raw_nonzero().get(), Class::Fifo, p)?,
            Self::Auto => set_class(tid.as_raw_nonzero().get(), Class::Fifo, AUTO_FIFO)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_rejects_the_rest() {
        assert_eq!("nice:-10".parse(), Ok(WorkerPriority::Nice(-10)));
        assert_eq!("fifo:1".parse(), Ok(WorkerPriority::Fifo(1)));
        assert_eq!("auto".parse(), Ok(WorkerPriority::Auto));
        assert_eq!("inherit".parse(), Ok(WorkerPriority::Inherit));
        assert_eq!(" fifo : 99".parse(), Ok(WorkerPriority::Fifo(99)));
        assert!(matches!(
            "nice:-21".parse::<WorkerPriority>(),
            Err(PriorityParseError::Range(-21, _))
        ));
        assert!(matches!(
            "fifo:0".parse::<WorkerPriority>(),
            Err(PriorityParseError::Range(0, _))
        ));
        for bad in ["", "nice", "rr:1", "fifo:x", "-10"] {
            assert!(
                matches!(
                    bad.parse::<WorkerPriority>(),
                    Err(PriorityParseError::Form(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(WorkerPriority::Nice(-5).to_string(), "nice:-5");
        assert_eq!(WorkerPriority::Fifo(3).to_string(), "fifo:3");
        assert_eq!(WorkerPriority::Auto.to_string(), "auto");
    }

    /// A nice value applies to the calling thread only; another thread of
    /// the process keeps its own. Raising the nice value needs no
    /// privilege, so this runs everywhere.
    #[test]
    fn nice_changes_only_the_calling_thread() {
        let me = rustix::thread::gettid();
        let before = rustix::process::getpriority_process(Some(me)).unwrap();
        let want = (before + 3).min(19);
        let got = std::thread::spawn(move || {
            WorkerPriority::Nice(want).apply_to_this_thread().unwrap();
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(got, want);
        assert_eq!(
            rustix::process::getpriority_process(Some(me)).unwrap(),
            before
        );
    }

    /// `fifo:P` makes the calling thread `SCHED_FIFO` at P (as root), or
    /// is refused with the kernel's error (not root): never accepted and
    /// left undone.
    #[test]
    fn fifo_is_in_force_or_refused() {
        let (result, policy, prio) = std::thread::spawn(|| {
            let r = WorkerPriority::Fifo(2).apply_to_this_thread();
            let mut p = libc::sched_param { sched_priority: 0 };
            // SAFETY: queries of the calling thread into a stack value.
            let (policy, _) =
                unsafe { (libc::sched_getscheduler(0), libc::sched_getparam(0, &mut p)) };
            (r.map_err(|e| e.raw_os_error()), policy, p.sched_priority)
        })
        .join()
        .unwrap();
        match result {
            Ok(()) => assert_eq!((policy, prio), (libc::SCHED_FIFO, 2)),
            Err(e) => {
                assert_eq!(e, Some(libc::EPERM));
                assert_eq!(policy, libc::SCHED_OTHER);
            }
        }
    }
}
