//! CPU time of user-space work outside a benchmark: every process on the
//! machine that is neither the benchmark harness nor one of its
//! descendants (load generator, proxies, backends), kernel threads left
//! out (they also do the benchmark's own network work).
//!
//! Why: the host-stall probe ([`crate::stall`]) runs at `SCHED_FIFO`, so
//! it preempts any ordinary task and never sees a CPU taken by another
//! *process*. A process at a better nice value than the benchmark's (a
//! sandbox's or node's agent at nice −10, say) can hold a CPU the proxies
//! share for a scheduler tick or more (4 ms at `HZ=250` on a kernel
//! without preemption of kernel code) while a woken proxy waits: the
//! same kind of disturbance, invisible to the probe. This counts it, per
//! benchmark sub-run, so a report can show it beside the stalls.
//!
//! Read from `/proc/<pid>/task/<tid>/schedstat` (field 1: nanoseconds on
//! a CPU, exact, not sampled by ticks); a kernel thread is told by
//! `PF_KTHREAD` in `stat`'s flags (field 9). Which CPU the time was spent
//! on is not known: all CPUs are counted.
use std::collections::{HashMap, HashSet};

/// `PF_KTHREAD` (`include/linux/sched.h`).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Per thread (tid), nanoseconds on a CPU so far, of the user-space
/// processes outside the tree rooted at the process that took it.
#[derive(Clone, Debug, Default)]
pub struct ForeignCpu(HashMap<u32, u64>);

impl ForeignCpu {
    /// Reads every process's threads now, leaving out this process, its
    /// descendants and kernel threads.
    pub fn now() -> ForeignCpu {
        let procs = processes();
        let ours = descendants(std::process::id(), &procs);
        let mut times = HashMap::new();
        for (pid, p) in &procs {
            if ours.contains(pid) || p.flags & PF_KTHREAD != 0 {
                continue;
            }
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let ns = std::fs::read_to_string(t.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
                if let Some(ns) = ns {
                    times.insert(tid, ns);
                }
            }
        }
        ForeignCpu(times)
    }

    /// Nanoseconds the foreign threads ran between `self` and `later`:
    /// threads present in both (a thread that started in between counts
    /// from 0; one that ended in between is lost, a lower bound).
    pub fn since(&self, later: &ForeignCpu) -> u64 {
        later
            .0
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(self.0.get(tid).copied().unwrap_or(0)))
            .sum()
    }
}

/// What one `/proc/<pid>/stat` says that matters here.
struct Proc {
    ppid: u32,
    flags: u64,
}

/// Every process now: pid → parent and flags.
fn processes() -> HashMap<u32, Proc> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        if let Some(p) = parse_stat(&stat) {
            out.insert(pid, p);
        }
    }
    out
}

/// Fields 4 (ppid) and 9 (flags) of a `stat` line; the command name
/// (field 2) may hold spaces and parentheses, so fields are counted
/// after its last `)`.
fn parse_stat(stat: &str) -> Option<Proc> {
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(Proc {
        ppid: f.get(1)?.parse().ok()?,
        flags: f.get(6)?.parse().ok()?,
    })
}

/// `root` and every process whose parent chain reaches it.
fn descendants(root: u32, procs: &HashMap<u32, Proc>) -> HashSet<u32> {
    let mut ours = HashSet::from([root]);
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, p) in procs {
            if !ours.contains(pid) && ours.contains(&p.ppid) {
                ours.insert(*pid);
                grew = true;
            }
        }
    }
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let p = parse_stat("42 (a) b (c)) S 7 42 42 0 -1 2097216 0 0").unwrap();
        assert_eq!((p.ppid, p.flags), (7, 2_097_216));
        assert_ne!(p.flags & PF_KTHREAD, 0);
    }

    #[test]
    fn a_busy_child_is_ours_and_an_orphaned_process_is_foreign() {
        const LOOP: &str = "i=0; while [ $i -lt 2000000 ]; do i=$((i+1)); done";
        // A child of this test process burns CPU: not foreign.
        let mut child = std::process::Command::new("sh")
            .args(["-c", LOOP])
            .spawn()
            .unwrap();
        // The same loop in a process outside this tree: a double fork
        // re-parents it to init; its pid comes back on stdout.
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("({LOOP}) >/dev/null 2>&1 & echo $!")])
            .output()
            .unwrap();
        let orphan: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let before = ForeignCpu::now();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let after = ForeignCpu::now();
        let _ = child.kill();
        let _ = child.wait();
        // SAFETY: kill(2) of a pid this test started.
        unsafe { libc::kill(orphan as libc::pid_t, libc::SIGKILL) };
        assert!(!after.0.contains_key(&child.id()), "the child is ours");
        let ran = after.0.get(&orphan).copied().unwrap_or(0)
            - before.0.get(&orphan).copied().unwrap_or(0);
        assert!(ran > 20_000_000, "the orphan ran {ran} ns in 300 ms");
        assert!(before.since(&after) >= ran);
    }
}
