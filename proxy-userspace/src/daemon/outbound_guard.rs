//! The outbound listener (15001) answers only this node: a classic BPF
//! socket filter on the listening socket (`SO_ATTACH_FILTER`) drops every
//! packet — the SYN first, so no handshake completes — whose IPv4 source is
//! not loopback, one of the node's own addresses, or a meshed pod of this
//! node (a Pod with `spec.nodeName` = `--node`, or no node in a config
//! directory meant for one node). Another host connecting to
//! `<node IP>:15001` (the DaemonSet listens on the node's address so pods
//! can reach it) gets no answer, as with a firewall rule, but without
//! touching the node's iptables/nftables.
//!
//! The userspace check stays behind it: a connection the kernel did not
//! redirect has no original destination and is closed at once
//! (`proxy/server.rs`). Accepted connections inherit the filter; the list
//! is rewritten (atomically, one `setsockopt`) when the node's meshed pods
//! change.
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use strait_config::enroll::Enrollment;

/// Most addresses one filter holds (two instructions each; the kernel's
/// limit is 4,096 instructions). Beyond it the filter allows every source
/// and a warning says so; the original-destination check still applies.
pub const MAX_ADDRESSES: usize = 2000;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_AND_K: u16 = 0x54;
const BPF_RET_K: u16 = 0x06;
/// `SKF_NET_OFF`: loads relative to the network (IP) header.
const SKF_NET_OFF: i32 = -0x100000;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter program: accept a packet whose IPv4 source is one of
/// `allowed` (or in 127.0.0.0/8 with `loopback`), drop the rest.
pub fn program(allowed: &[Ipv4Addr], loopback: bool) -> Vec<libc::sock_filter> {
    let accept = insn(BPF_RET_K, 0, 0, u32::MAX);
    // A = ip->saddr (cBPF loads are big-endian: A is the address as a u32).
    let mut p = vec![insn(BPF_LD_W_ABS, 0, 0, (SKF_NET_OFF + 12) as u32)];
    for ip in allowed {
        // if A == ip { accept } else { next }
        p.push(insn(BPF_JEQ_K, 0, 1, u32::from(*ip)));
        p.push(accept);
    }
    if loopback {
        p.push(insn(BPF_AND_K, 0, 0, 0xff00_0000));
        p.push(insn(BPF_JEQ_K, 0, 1, 0x7f00_0000));
        p.push(accept);
    }
    p.push(insn(BPF_RET_K, 0, 0, 0));
    p
}

/// Attaches (or replaces) `prog` on `sock`.
pub fn attach(sock: &impl AsRawFd, prog: &[libc::sock_filter]) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel
    // copies the program.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The sources allowed on this node: its own IPv4 addresses and its
/// meshed pods' (sorted, deduplicated).
pub fn allowed_sources(node: &str, node_ips: &[IpAddr], enrollment: &Enrollment) -> Vec<Ipv4Addr> {
    let v4 = |ip: &IpAddr| match ip {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    let mut out: Vec<Ipv4Addr> = node_ips.iter().filter_map(v4).collect();
    out.extend(
        enrollment
            .pods
            .iter()
            .filter(|p| p.meshed() && p.node.as_deref().is_none_or(|n| n == node))
            .filter_map(|p| p.ip.as_ref().and_then(v4)),
    );
    out.sort();
    out.dedup();
    out
}

/// Keeps the outbound listener's filter in step with the node's pods.
pub struct OutboundGuard {
    sock: std::net::TcpListener,
    node: String,
    node_ips: Vec<IpAddr>,
    current: Option<Vec<Ipv4Addr>>,
}

impl OutboundGuard {
    /// A guard for `sock` (a duplicate of the outbound listener: the same
    /// socket) on `node` with addresses `node_ips`. Attaches the filter
    /// allowing the node itself and no pod yet.
    pub fn new(
        sock: std::net::TcpListener,
        node: &str,
        node_ips: Vec<IpAddr>,
    ) -> std::io::Result<Self> {
        let mut g = Self {
            sock,
            node: node.to_string(),
            node_ips,
            current: None,
        };
        g.set(Vec::new())?;
        Ok(g)
    }

    fn set(&mut self, pods: Vec<Ipv4Addr>) -> std::io::Result<()> {
        let mut allowed = pods;
        allowed.extend(self.node_ips.iter().filter_map(|ip| match ip {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        }));
        allowed.sort();
        allowed.dedup();
        if self.current.as_ref() == Some(&allowed) {
            return Ok(());
        }
        if allowed.len() > MAX_ADDRESSES {
            tracing::warn!(
                addresses = allowed.len(),
                max = MAX_ADDRESSES,
                "too many local pods for the outbound listener's source filter: every source is accepted (connections the kernel did not redirect are still closed)"
            );
            // An empty program is invalid: accept everything explicitly.
            attach(&self.sock, &[insn(BPF_RET_K, 0, 0, u32::MAX)])?;
        } else {
            attach(&self.sock, &program(&allowed, true))?;
        }
        tracing::debug!(
            sources = allowed.len(),
            "outbound listener accepts this node's pods only"
        );
        self.current = Some(allowed);
        Ok(())
    }

    /// Allows the meshed pods of this node in `enrollment` (and the node
    /// itself). A failure is logged; the previous filter stays.
    pub fn update(&mut self, enrollment: &Enrollment) {
        let pods = allowed_sources(&self.node, &[], enrollment);
        if let Err(e) = self.set(pods) {
            tracing::error!("updating the outbound listener's source filter: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;

    fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.bind(&SocketAddr::from((src, 0)).into())?;
        s.connect_timeout(&dst.into(), Duration::from_millis(1500))?;
        Ok(s.into())
    }

    #[test]
    fn only_listed_sources_complete_a_handshake() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Allow 127.0.0.2 only (without the loopback range).
        attach(&l, &program(&[Ipv4Addr::new(127, 0, 0, 2)], false)).unwrap();
        assert!(connect_from(Ipv4Addr::new(127, 0, 0, 2), addr).is_ok());
        let e = connect_from(Ipv4Addr::new(127, 0, 0, 3), addr).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        // Replaced at once: now 127.0.0.3 is in, 127.0.0.2 out.
        attach(&l, &program(&[Ipv4Addr::new(127, 0, 0, 3)], false)).unwrap();
        assert!(connect_from(Ipv4Addr::new(127, 0, 0, 3), addr).is_ok());
        assert!(connect_from(Ipv4Addr::new(127, 0, 0, 2), addr).is_err());
        // With the loopback range every 127/8 source is in.
        attach(&l, &program(&[], true)).unwrap();
        assert!(connect_from(Ipv4Addr::new(127, 0, 0, 9), addr).is_ok());
    }

    #[test]
    fn the_allowed_sources_are_the_node_and_its_meshed_pods() {
        let pod = |name: &str, node: &str, ip: &str, extra: &str| {
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: {name}{extra}}}}}\nspec: {{nodeName: {node}, containers: [{{name: c}}]}}\nstatus: {{phase: Running, podIP: {ip}}}\n")
        };
        let yaml = [
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: default, labels: {istio.io/dataplane-mode: ambient}}\n".to_string(),
            pod("a", "node-a", "10.1.0.5", ""),
            pod("opted-out", "node-a", "10.1.0.6", ", istio.io/dataplane-mode: none"),
            pod("remote", "node-b", "10.1.1.5", ""),
        ]
        .join("---\n");
        let loaded = strait_config::load::load_str(&yaml, "p.yaml");
        let e = Enrollment::from_resources(&loaded.resources);
        let got = allowed_sources("node-a", &["10.0.0.1".parse().unwrap()], &e);
        assert_eq!(
            got,
            [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 1, 0, 5)]
        );
    }
}
