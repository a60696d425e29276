//! ztunnel's "in-pod" model: the daemon opens sockets *inside* a meshed
//! pod's network namespace (a listener there, or the connection that
//! delivers an accepted inbound connection to the application) and uses
//! them from its own runtime afterwards; a socket stays in the namespace it
//! was created in.
//!
//! - [`find_netns`]: a pod's network namespace, from a process in the pod's
//!   cgroup (`/proc/<pid>/ns/net`, what Kubernetes' pause container gives
//!   every pod), else the one named namespace under `/run/netns/` (where
//!   containerd, CRI-O and the simulated node keep them) whose addresses
//!   include the pod IP.
//! - [`InPodNetns::run`]: runs a closure on a short-lived thread that has
//!   joined the namespace (`setns(2)` needs `CAP_SYS_ADMIN`, which the
//!   daemon keeps when in-pod capture is on; see `daemon/privs.rs`).
//! - [`connect_in_pod`]: connects to the pod from `127.0.0.6` (Istio's
//!   inbound passthrough source), which the in-pod `sk_lookup` program
//!   never captures, so a delivery is not captured again.
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// Istio's inbound passthrough source address: deliveries to a pod come
/// from here.
pub const PASSTHROUGH_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// Where named network namespaces are bind-mounted (`ip netns`, CNI).
pub const NETNS_DIR: &str = "/run/netns";

/// An owned handle on a pod's network namespace.
#[derive(Debug)]
pub struct InPodNetns {
    fd: OwnedFd,
    inode: u64,
}

impl InPodNetns {
    /// Opens the namespace file `path` (`/proc/<pid>/ns/net`,
    /// `/run/netns/<name>`).
    ///
    /// Errors: the file cannot be opened (gone, no permission).
    pub fn open(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let f = File::open(path)?;
        let inode = f.metadata()?.ino();
        Ok(Self {
            fd: f.into(),
            inode,
        })
    }

    /// The namespace's inode number (its identity: two handles on one
    /// namespace have the same).
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// Runs `f` on a new thread that has joined this namespace and returns
    /// its result; the calling thread stays where it is. Sockets `f`
    /// creates belong to the pod's namespace and may be used from any
    /// thread afterwards. A panic in `f` is resumed on the caller.
    ///
    /// Errors: `setns(2)` refused (no `CAP_SYS_ADMIN`, the namespace is
    /// gone) or the thread could not be started.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let fd = self.fd.as_fd();
        std::thread::scope(|s| {
            let joined = std::thread::Builder::new()
                .name("strait-inpod".into())
                .spawn_scoped(s, move || {
                    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
                    move_into_link_name_space(fd, Some(LinkNameSpaceType::Network))
                        .map_err(io::Error::from)?;
                    Ok(f())
                })?;
            match joined.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl AsFd for InPodNetns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Connects to `dst` (the pod's own address and port) from inside the
/// pod's namespace, from [`PASSTHROUGH_SOURCE`] (port chosen by the
/// kernel). The socket is created in the namespace; the connect runs on the
/// caller's runtime.
///
/// Errors: the namespace cannot be joined, `127.0.0.6` cannot be bound
/// (the pod's `lo` is down), or the connect fails (nothing listens:
/// refused).
pub async fn connect_in_pod(
    netns: &InPodNetns,
    dst: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = netns.run(|| -> io::Result<tokio::net::TcpSocket> {
        let s = match dst {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        if dst.is_ipv4() {
            s.bind(SocketAddr::new(IpAddr::V4(PASSTHROUGH_SOURCE), 0))?;
        }
        Ok(s)
    })??;
    let stream = socket.connect(dst).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A listening TCP socket bound to `addr` inside the pod's namespace
/// (non-blocking, `SO_REUSEADDR`, std's backlog), for the daemon's runtime.
///
/// Errors: the namespace cannot be joined or the address is taken.
pub fn listen_in_pod(netns: &InPodNetns, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    // std sets SO_REUSEADDR on Unix listeners.
    let l = netns.run(|| std::net::TcpListener::bind(addr))??;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// The network namespace of the pod with IP `pod_ip` whose cgroup is
/// `cgroup` (see the module docs for the order of the searches). `None`:
/// no process in the cgroup and no (or more than one) named namespace with
/// the address — the caller looks again later.
pub fn find_netns(pod_ip: IpAddr, cgroup: Option<&Path>) -> Option<InPodNetns> {
    if let Some(cg) = cgroup {
        if let Some(ns) = from_cgroup(cg) {
            return Some(ns);
        }
    }
    from_named(Path::new(NETNS_DIR), pod_ip)
}

/// `/proc/<pid>/ns/net` of the first process found in `cgroup` or its
/// children (a pod's processes live in its containers' cgroups).
fn from_cgroup(cgroup: &Path) -> Option<InPodNetns> {
    let mut stack = vec![(cgroup.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                if let Ok(ns) = InPodNetns::open(Path::new(&format!("/proc/{pid}/ns/net"))) {
                    return Some(ns);
                }
            }
        }
        if depth < 2 {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push((e.path(), depth + 1));
                    }
                }
            }
        }
    }
    None
}

/// The one named namespace in `dir` with `ip` on an interface; `None` when
/// none or several have it (a pod IP is ambiguous across separate
/// networks, e.g. simulated nodes of other test runs).
fn from_named(dir: &Path, ip: IpAddr) -> Option<InPodNetns> {
    let mut found: Option<InPodNetns> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(ns) = InPodNetns::open(&e.path()) else {
            continue;
        };
        let has = ns
            .run(|| {
                nix::ifaddrs::getifaddrs().is_ok_and(|mut addrs| {
                    addrs.any(|a| {
                        a.address.as_ref().is_some_and(|s| {
                            s.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())) == Some(ip)
                                || s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())) == Some(ip)
                        })
                    })
                })
            })
            .unwrap_or(false);
        if has {
            if found.as_ref().is_some_and(|f| f.inode() != ns.inode()) {
                return None;
            }
            found = Some(ns);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_namespace_runs_closures_and_reports_its_inode() {
        let ns = InPodNetns::open(Path::new("/proc/self/ns/net")).unwrap();
        use std::os::unix::fs::MetadataExt;
        let want = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_eq!(ns.inode(), want);
        // Joining one's own namespace needs CAP_SYS_ADMIN too; as root it
        // works and the closure's value comes back.
        if rustix::process::geteuid().is_root() {
            assert_eq!(ns.run(|| 7).unwrap(), 7);
        }
    }
}
