//! One `cargo xtask bench mesh` at a time: the harness's nodes use fixed
//! namespace names, VIPs and addresses, so two runs break each other. A
//! run takes an exclusive `flock(2)` (std's `File::try_lock`, as the
//! daemon's node lock `daemon/lock.rs`) on [`FILE`] under the target
//! directory before anything else and writes who it is into it; a second
//! run is refused at once with that text. The kernel drops the lock when
//! the run's process exits, however it exits (pass, fail, Ctrl-C, kill),
//! so a stale file never blocks the next run.
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The lock file's name in the target directory.
pub const FILE: &str = "bench-mesh.lock";

/// The held lock; released on drop or exit.
#[derive(Debug)]
pub struct MeshLock {
    _file: File,
}

/// Takes the lock in `dir` (created if missing) without waiting and
/// records this run (pid, start time as Unix seconds, command line).
///
/// Errors: another run holds it — the message names that run (its pid,
/// how long it has been running, its command line) and the lock file; or
/// the file cannot be created or locked.
pub fn take(dir: &Path) -> anyhow::Result<MeshLock> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut held = String::new();
            let _ = file.read_to_string(&mut held);
            anyhow::bail!(
                "another `cargo xtask bench mesh` is running ({}); two runs break each other \
                 (the same namespaces, VIPs and addresses): wait for it to end (lock {})",
                describe(&held, now()),
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock {}: {e}", path.display())
        }
    }
    let args: Vec<String> = std::env::args().collect();
    file.set_len(0)?;
    file.rewind()?;
    writeln!(
        file,
        "{}\n{}\n{}",
        std::process::id(),
        now(),
        args.join(" ")
    )?;
    Ok(MeshLock { _file: file })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The holder's record (pid, start in Unix seconds, command line; one a
/// line) as one phrase; what is missing is left out.
fn describe(record: &str, now: u64) -> String {
    let mut lines = record.lines().map(str::trim);
    let mut parts = Vec::new();
    if let Some(pid) = lines.next().filter(|p| !p.is_empty()) {
        parts.push(format!("pid {pid}"));
    }
    if let Some(since) = lines.next().and_then(|s| s.parse::<u64>().ok()) {
        parts.push(format!("for {} s", now.saturating_sub(since)));
    }
    if let Some(cmd) = lines.next().filter(|c| !c.is_empty()) {
        parts.push(format!("`{cmd}`"));
    }
    if parts.is_empty() {
        "its record is not written yet".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_is_refused_naming_the_first_until_it_ends() {
        let dir = std::env::temp_dir().join(format!("xtask-mesh-lock-{}", std::process::id()));
        let first = take(&dir).unwrap();
        // flock belongs to the open file description: a second open in
        // this process conflicts as another process's would.
        let err = take(&dir).unwrap_err().to_string();
        assert!(
            err.contains("another `cargo xtask bench mesh` is running")
                && err.contains(&format!("pid {}", std::process::id()))
                && err.contains(&dir.join(FILE).display().to_string()),
            "{err}"
        );
        drop(first);
        let again = take(&dir).expect("released when the first run ended");
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_holder_is_described_from_its_record() {
        assert_eq!(
            describe("4242\n1000\nxtask bench mesh --quick\n", 1090),
            "pid 4242, for 90 s, `xtask bench mesh --quick`"
        );
        assert_eq!(describe("4242\n", 1090), "pid 4242");
        assert_eq!(describe("", 1090), "its record is not written yet");
    }
}
