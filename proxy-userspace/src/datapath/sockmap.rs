//! Same-node hops without the TCP stack (`strait run --sockmap`, issue 20):
//! attaches the `sk_msg` program `sockmap_redirect` to the sockhash
//! `SOCKMAP` and the sockops program `sockmap_daemon_ops` to the daemon's
//! own cgroup (see proxy-ebpf/src/sockmap.rs for who is inserted and
//! why). The pods cgroup's sockops program inserts the pods' ends only
//! when the object was loaded with `SOCKMAP_ON` set
//! ([`super::DatapathConfig::sockmap`]).
//!
//! Neither is pinned: both live as long as the daemon's [`aya::Ebpf`]
//! (the links stay in their programs), so a daemon that exits leaves no
//! redirect behind; the pairs of a later daemon go into its own map.
use std::path::{Path, PathBuf};

use anyhow::Context;
use aya::{
    maps::SockHash,
    programs::{links::CgroupAttachMode, SkMsg, SockOps},
    Ebpf,
};
use proxy_common::SockPair;

/// Program names in the eBPF object.
pub const SK_MSG: &str = "sockmap_redirect";
/// The sockops program for the daemon's own cgroup.
pub const DAEMON_OPS: &str = "sockmap_daemon_ops";
/// The LRU hash of senders that stay on TCP for good.
pub const SOCKMAP_TCP: &str = "SOCKMAP_TCP";

/// The daemon's own cgroup v2 directory: the `0::` line of
/// `/proc/self/cgroup` under the cgroup2 mount.
///
/// Errors: no cgroup2 mount, or no unified-hierarchy line.
pub fn own_cgroup() -> anyhow::Result<PathBuf> {
    let mount = crate::sys::cgroup2_mount().context("no cgroup2 filesystem is mounted")?;
    let text = std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let rel = parse_own_cgroup(&text).context("no cgroup v2 line in /proc/self/cgroup")?;
    Ok(mount.join(rel))
}

fn parse_own_cgroup(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_start_matches('/'))
}

/// Attaches the redirect: `sockmap_redirect` to `SOCKMAP`, then
/// `sockmap_daemon_ops` to `cgroup` (the daemon's own) as a BPF link
/// (links attach in multi mode, so programs of other tools on that cgroup
/// and the pods cgroup's programs below it are unaffected).
///
/// Errors: the map or a program is missing, the kernel refuses to load or
/// attach one (kernels before 4.17 have no `sk_msg`). The caller logs and
/// runs without the redirect.
pub fn start(ebpf: &mut Ebpf, cgroup: &Path) -> anyhow::Result<()> {
    attach_redirect(ebpf)?;
    let cg = std::fs::File::open(cgroup)
        .with_context(|| format!("opening the daemon's cgroup {}", cgroup.display()))?;
    let ops: &mut SockOps = ebpf
        .program_mut(DAEMON_OPS)
        .context("program sockmap_daemon_ops missing from the eBPF object")?
        .try_into()?;
    if ops.fd().is_err() {
        ops.load().context("loading sockmap_daemon_ops")?;
    }
    ops.attach(cg, CgroupAttachMode::Single).with_context(|| {
        format!(
            "attaching sockmap_daemon_ops to the daemon's cgroup {}",
            cgroup.display()
        )
    })?;
    Ok(())
}

/// Attaches `sockmap_redirect` to `SOCKMAP` (no sockops program: callers
/// other than [`start`], e.g. tests, insert sockets themselves with
/// [`insert`]).
///
/// Errors: the map or the program is missing, or the kernel refuses to
/// load or attach it.
pub fn attach_redirect(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let map = ebpf
        .map(proxy_common::SOCKMAP)
        .context("map SOCKMAP missing from the eBPF object")?;
    let map: SockHash<_, SockPair> = SockHash::try_from(map)?;
    let map_fd = map.fd().try_clone().context("duplicating the SOCKMAP fd")?;
    let prog: &mut SkMsg = ebpf
        .program_mut(SK_MSG)
        .context("program sockmap_redirect missing from the eBPF object")?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load().context("loading sockmap_redirect")?;
    }
    prog.attach(&map_fd)
        .context("attaching sockmap_redirect to SOCKMAP")?;
    Ok(())
}

/// Puts the established TCP socket `sock` into `SOCKMAP` under `key` (its
/// own 4-tuple), as the sockops programs do, clearing a stale
/// `SOCKMAP_TCP` mark of that 4-tuple. For tests and tools.
///
/// Errors: a map is missing, the socket is not an established TCP socket,
/// or the map is full.
pub fn insert(
    ebpf: &mut Ebpf,
    key: SockPair,
    sock: &impl std::os::fd::AsRawFd,
) -> anyhow::Result<()> {
    if let Some(map) = ebpf.map_mut(SOCKMAP_TCP) {
        let mut tcp: aya::maps::HashMap<_, SockPair, u8> = aya::maps::HashMap::try_from(map)?;
        let _ = tcp.remove(&key);
    }
    let map = ebpf
        .map_mut(proxy_common::SOCKMAP)
        .context("map SOCKMAP missing from the eBPF object")?;
    let mut map: SockHash<_, SockPair> = SockHash::try_from(map)?;
    map.insert(key, sock.as_raw_fd(), 0)
        .context("inserting into SOCKMAP")?;
    Ok(())
}

/// Whether the socket stored under `key` has been moved to TCP for good
/// (its send found no peer: `SOCKMAP_TCP`, see proxy-ebpf/src/sockmap.rs).
/// Errors: the map is missing.
pub fn on_tcp(ebpf: &Ebpf, key: &SockPair) -> anyhow::Result<bool> {
    let map = ebpf
        .map(SOCKMAP_TCP)
        .context("map SOCKMAP_TCP missing from the eBPF object")?;
    let map: aya::maps::HashMap<_, SockPair, u8> = aya::maps::HashMap::try_from(map)?;
    Ok(map.get(key, 0).is_ok())
}

/// The pairs in `SOCKMAP` now (each socket's own 4-tuple), for the admin
/// endpoint and tests. Errors: the map is missing.
pub fn pairs(ebpf: &Ebpf) -> anyhow::Result<Vec<SockPair>> {
    let map = ebpf
        .map(proxy_common::SOCKMAP)
        .context("map SOCKMAP missing from the eBPF object")?;
    let map: SockHash<_, SockPair> = SockHash::try_from(map)?;
    Ok(map.keys().filter_map(Result::ok).collect())
}

#[cfg(test)]
mod tests {
    use super::parse_own_cgroup;

    #[test]
    fn own_cgroup_is_the_unified_line() {
        let text = "12:cpu,cpuacct:/x\n0::/strait-n1/node\n";
        assert_eq!(parse_own_cgroup(text), Some("strait-n1/node"));
        assert_eq!(parse_own_cgroup("0::/\n"), Some(""));
        assert_eq!(parse_own_cgroup("1:name=systemd:/\n"), None);
    }
}
