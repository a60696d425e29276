//! Sockets inside a pod's network namespace, as ztunnel's in-pod mode
//! (`ztunnel/src/inpod/netns.rs`): the daemon stays in the node's
//! namespace and, for each meshed pod, switches one thread into the pod's
//! namespace just long enough to create a socket (listen or connect); the
//! socket then works from any thread of the daemon's runtime.
//!
//! - [`find_netns`]: a pod's namespace, from a process in its cgroup
//!   (`/proc/<pid>/ns/net`) or the named namespace under `/run/netns/`
//!   (containerd/CRI-O; the simulated node) that holds the pod IP;
//! - [`listen_in_pod`]: a listening socket on `<pod IP>:<port>` there;
//! - [`connect_in_pod`]: a connection to the pod from `127.0.0.6` (Istio's
//!   inbound passthrough source; `::6` for IPv6) made inside the pod, so
//!   the kernel programs recognise the daemon's own deliveries (remote IP
//!   127.0.0.6 over `lo`) and never capture them again.
//!
//! Switching namespaces needs `CAP_SYS_ADMIN` (kept by `strait run` with a
//! CA or the in-pod inbound capture, see `daemon/privs.rs`).
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// Istio's inbound passthrough source address (IPv4).
pub const INBOUND_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// Istio's inbound passthrough source address (IPv6, `::6`).
pub const INBOUND_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// Where container runtimes (and the simulated node) name network namespaces.
pub const NAMED_NETNS_DIR: &str = "/run/netns";

/// An open pod network namespace (an owned `nsfs` descriptor).
#[derive(Debug)]
pub struct InPodNetns {
    fd: OwnedFd,
    path: PathBuf,
    /// Set once `::6` is on the namespace's `lo` ([`super::loopback6`]).
    source_v6: OnceLock<()>,
}

/// The daemon's own namespace, where every thread returns after
/// [`InPodNetns::run`]. The main thread never switches, so
/// `/proc/self/ns/net` (the thread-group leader's) is it.
fn home() -> io::Result<&'static OwnedFd> {
    static HOME: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = HOME.get() {
        return Ok(fd);
    }
    let fd: OwnedFd = std::fs::File::open("/proc/self/ns/net")?.into();
    Ok(HOME.get_or_init(|| fd))
}

impl InPodNetns {
    /// Opens the namespace at `path` (`/proc/<pid>/ns/net`,
    /// `/run/netns/<name>`).
    pub fn open(path: &Path) -> io::Result<Self> {
        home()?;
        let fd: OwnedFd = std::fs::File::open(path)?.into();
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            source_v6: OnceLock::new(),
        })
    }

    /// Where it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the calling thread inside this namespace, then moves the
    /// thread back. `f` must not block or yield to other tasks (it creates
    /// sockets). Errors: the switch was refused (no `CAP_SYS_ADMIN`, not a
    /// network namespace). If the thread cannot return, the process aborts:
    /// a daemon thread left in a pod's namespace would serve other pods'
    /// traffic from there.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> io::Result<T> {
        let home = home()?;
        move_into_link_name_space(self.fd.as_fd(), Some(LinkNameSpaceType::Network))?;
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        if let Err(e) = move_into_link_name_space(home.as_fd(), Some(LinkNameSpaceType::Network)) {
            tracing::error!("cannot return to the node's network namespace: {e}; aborting");
            std::process::abort();
        }
        match out {
            Ok(v) => Ok(v),
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Whether `ip` is one of the namespace's interface addresses.
    pub fn has_address(&self, ip: IpAddr) -> io::Result<bool> {
        self.run(|| {
            nix::ifaddrs::getifaddrs().map(|addrs| {
                addrs.into_iter().any(|a| {
                    let Some(s) = a.address else { return false };
                    if let Some(v4) = s.as_sockaddr_in() {
                        return IpAddr::V4(v4.ip()) == ip;
                    }
                    s.as_sockaddr_in6()
                        .is_some_and(|v6| IpAddr::V6(v6.ip()) == ip)
                })
            })
        })?
        .map_err(io::Error::from)
    }
}

/// The network namespace of the pod with `pod_ip`: the namespace of a
/// process in `cgroup` (the pod's cgroup, searched with its sub-cgroups)
/// when one is there and holds the IP, else a named namespace under
/// `netns_dir` holding the IP — names containing `hint` (e.g.
/// `<namespace>-<pod>`) are tried first. `Ok(None)`: not found (yet).
pub fn find_netns(
    pod_ip: IpAddr,
    cgroup: Option<&Path>,
    netns_dir: &Path,
    hint: Option<&str>,
) -> io::Result<Option<InPodNetns>> {
    if let Some(cg) = cgroup {
        for pid in cgroup_pids(cg) {
            let Ok(ns) = InPodNetns::open(&PathBuf::from(format!("/proc/{pid}/ns/net"))) else {
                continue;
            };
            if ns.has_address(pod_ip).unwrap_or(false) {
                return Ok(Some(ns));
            }
            break;
        }
    }
    let entries = match std::fs::read_dir(netns_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut names: Vec<(bool, PathBuf)> = entries
        .flatten()
        .map(|e| {
            let hinted = hint.is_some_and(|h| e.file_name().to_string_lossy().contains(h));
            (!hinted, e.path())
        })
        .collect();
    names.sort();
    for (_, path) in names {
        let Ok(ns) = InPodNetns::open(&path) else {
            continue;
        };
        if ns.has_address(pod_ip).unwrap_or(false) {
            return Ok(Some(ns));
        }
    }
    Ok(None)
}

/// Process IDs in `cgroup` and its sub-cgroups (containers).
fn cgroup_pids(cgroup: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let mut stack = vec![cgroup.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// A listening socket on `addr` inside `netns` (`SO_REUSEADDR`, so a
/// restarted daemon binds again at once; an IPv6 one is `IPV6_V6ONLY`, so
/// `[::]:15006` and `0.0.0.0:15006` are two sockets). Must be called inside
/// a tokio runtime.
pub fn listen_in_pod(netns: &InPodNetns, addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let std_listener = netns.run(|| -> io::Result<std::net::TcpListener> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        s.set_reuse_address(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        Ok(s.into())
    })??;
    tokio::net::TcpListener::from_std(std_listener)
}

/// A TCP connection to `dst` opened inside `netns`, bound to `src` (the
/// kernel picks the port); with `freebind`, `src` need not be configured
/// yet (IPv6 `IP_FREEBIND`). The socket is the daemon's (its cgroup), so
/// the pod's socket programs do not see it.
pub async fn connect_bound(
    netns: &InPodNetns,
    src: std::net::IpAddr,
    dst: SocketAddr,
    freebind: bool,
) -> io::Result<tokio::net::TcpStream> {
    let sock = netns.run(|| -> io::Result<std::net::TcpStream> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(dst),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        s.set_nonblocking(true)?;
        if freebind {
            s.set_freebind_v6(true)?;
        }
        s.bind(&SocketAddr::new(src, 0).into())?;
        Ok(s.into())
    })??;
    tokio::net::TcpSocket::from_std_stream(sock)
        .connect(dst)
        .await
}

/// Connects to `dst` (the pod's own address) from inside the pod's
/// namespace, from `127.0.0.6` (`::6`), as Istio delivers inbound traffic.
pub async fn connect_in_pod(
    netns: &InPodNetns,
    dst: SocketAddr,
) -> io::Result<tokio::net::TcpStream> {
    let src: SocketAddr = match dst {
        SocketAddr::V4(_) => (INBOUND_SOURCE_V4, 0).into(),
        SocketAddr::V6(_) => (INBOUND_SOURCE_V6, 0).into(),
    };
    // ::6 must be local for the pod's answers to come back to it.
    if src.is_ipv6() && netns.source_v6.get().is_none() {
        netns.run(|| super::loopback6::add_to_loopback(INBOUND_SOURCE_V6))??;
        let _ = netns.source_v6.set(());
    }
    // 127.0.0.6 is on the pod's `lo` (127/8); ::6 was just added there
    // (freebind covers a race with its duplicate address check).
    let stream = connect_bound(netns, src.ip(), dst, src.is_ipv6()).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
