//! Processes the bench starts, and what it reads about them from /proc.
//!
//! Every long-running process is held by a [`Proc`] guard that kills it and
//! all its descendants when dropped (on success, error, panic or Ctrl-C), so
//! no nginx worker or backend outlives the bench.
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};

/// `ip netns exec NS [taskset -c CPU] PROGRAM`: a command inside the bench's
/// namespace `ns`, pinned to `cpu` when given. Both `ip netns exec` and
/// `taskset` exec the program, so the child's pid is the program's pid.
pub fn in_ns(ns: &str, cpu: Option<usize>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]);
    if let Some(c) = cpu {
        cmd.args(["taskset", "-c", &c.to_string()]);
    }
    cmd.arg(program);
    cmd
}

/// A process the bench started, killed with its descendants on drop.
pub struct Proc {
    name: String,
    child: Child,
    /// Kept open while the process should live (bench-datapath exits when
    /// its stdin closes).
    stdin: Option<ChildStdin>,
    /// [`Proc::close_stdin`] was called: the process is cleaning up.
    stdin_closed: bool,
    lines: Option<mpsc::Receiver<String>>,
}

impl Proc {
    /// Starts `cmd` with piped stdin/stdout; stderr is inherited so its
    /// errors reach the console.
    pub fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self {
            name: name.to_string(),
            child,
            stdin,
            stdin_closed: false,
            lines: Some(rx),
        })
    }

    /// Waits up to `timeout` for a stdout line starting with `prefix` and
    /// returns it; fails if the process exits or stays silent.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let rx = self.lines.as_ref().context("stdout already taken")?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => continue,
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        bail!("{} exited with {status} before it was ready", self.name);
                    }
                    bail!("{} not ready after {timeout:?}", self.name);
                }
            }
        }
    }

    /// Closes the process's stdin (bench-datapath then reports and exits);
    /// its stdout can still be read with [`Proc::wait_line`].
    pub fn close_stdin(&mut self) {
        self.stdin = None;
        self.stdin_closed = true;
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited unexpectedly with {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Closing stdin asks helpers such as bench-datapath to clean up and
        // exit; give them a moment before the kill (also when stdin was
        // closed earlier: a kill in the middle of bench-datapath's cleanup
        // leaves its pinned maps, with their counts, to the next run).
        if self.stdin.take().is_some() || self.stdin_closed {
            for _ in 0..100 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let mut pids = tree(self.child.id());
        pids.retain(|&p| p != self.child.id());
        kill(&pids);
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill(&pids);
    }
}

/// Sends SIGKILL to `pids` (ignoring those already gone).
pub fn kill(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// `pid` and all its descendants, from the ppid field of /proc/*/stat.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(f) = stat_fields(p) {
                if let Some(ppid) = f.get(1).and_then(|s| s.parse().ok()) {
                    parents.push((p, ppid));
                }
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// The fields of /proc/PID/stat after the command name: index 0 is the
/// state (field 3 in proc(5)), 1 the ppid, 11 utime, 12 stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(String::from).collect())
}

/// User + system CPU time of `pids` in seconds (utime + stime of
/// /proc/PID/stat, which cover all threads of each process).
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|&p| stat_fields(p))
        .map(|f| {
            f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .sum();
    ticks as f64 / clk_tck()
}

/// Peak resident set (VmHWM) summed over `pids`, in MiB. Shared pages of
/// several processes (nginx's workers) are counted once per process.
pub fn peak_rss_mib(pids: &[u32]) -> f64 {
    let kib: u64 = pids
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum();
    kib as f64 / 1024.0
}

/// Clock ticks per second for /proc times (`getconf CLK_TCK`, else 100).
fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        crate::cmd::output(Command::new("getconf").arg("CLK_TCK"))
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
