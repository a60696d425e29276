//! Unique, short names for one simulated node's kernel objects.
//!
//! Every object a node creates carries the node id `<pid:5>_<n:2>` (base 36,
//! fixed width, 8 characters): the creating process id and a per-process
//! counter. Interface names must fit in 15 bytes (`IFNAMSIZ - 1`), so the id
//! is short; the pid in it lets [`super::sweep`] tell leftovers of a dead test
//! run from objects a live run still owns. The `_` cannot occur in a host
//! or Kubernetes node name, so `strait run`'s own `strait-<node>` cgroups
//! are never mistaken for a node id.
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every netns, cgroup, tmp dir and bpffs dir a node creates.
pub const PREFIX: &str = "strait-";

const PID_WIDTH: usize = 5;
const COUNTER_WIDTH: usize = 2;
/// Length of a node id.
pub const ID_LEN: usize = PID_WIDTH + 1 + COUNTER_WIDTH;

/// A fresh node id for this process: `<pid, 5 chars>_<counter, 2 chars>`.
pub fn new_node_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    id_for(std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The id of the `n`-th node (mod 1296) of process `pid`.
pub fn id_for(pid: u32, n: u32) -> String {
    let n = n % 36u32.pow(COUNTER_WIDTH as u32);
    format!("{}_{}", base36(pid, PID_WIDTH), base36(n, COUNTER_WIDTH))
}

/// The pid encoded in a node id, or `None` when `id` is not one.
pub fn pid_of(id: &str) -> Option<u32> {
    let (pid, n) = id.split_once('_')?;
    let base36 = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    };
    if pid.len() != PID_WIDTH || n.len() != COUNTER_WIDTH || !base36(pid) || !base36(n) {
        return None;
    }
    u32::from_str_radix(pid, 36).ok()
}

/// The node id inside an object name `strait-<id>` or `strait-<id>-<rest>`.
pub fn id_in(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PREFIX)?;
    let id = rest.get(..ID_LEN)?;
    let tail = &rest[ID_LEN..];
    (tail.is_empty() || tail.starts_with('-')).then_some(id)?;
    pid_of(id).map(|_| id)
}

fn base36(mut v: u32, width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v % 36) as usize];
        v /= 36;
    }
    String::from_utf8(out).expect("ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_the_pid() {
        let id = new_node_id();
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(pid_of(&id), Some(std::process::id()));
        let name = format!("{PREFIX}{id}-node");
        assert_eq!(id_in(&name), Some(id.as_str()));
        assert_eq!(id_in(&format!("{PREFIX}{id}")), Some(id.as_str()));
    }

    #[test]
    fn other_strait_names_are_not_node_ids() {
        assert_eq!(id_in("strait-test-123-0-lb"), None);
        assert_eq!(id_in("strait"), None);
        assert_eq!(id_in("strait-ABCDEFG"), None);
        assert_eq!(id_in("strait-abcdefgh"), None);
        // `strait run`'s default cgroup for a node named like an id.
        assert_eq!(id_in("strait-worke01"), None);
        assert_eq!(id_in("strait-worker01"), None);
    }

    #[test]
    fn ids_are_unique_within_a_process() {
        assert_ne!(new_node_id(), new_node_id());
    }
}
