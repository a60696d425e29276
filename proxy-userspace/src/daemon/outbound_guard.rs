//! The outbound listener (15001) answers only this node: a classic BPF
//! socket filter on the listening socket (`SO_ATTACH_FILTER`) drops every
//! packet — the SYN first, so no handshake completes — whose IPv4 source is
//! not loopback, one of the node's own addresses, or a meshed pod of this
//! node (a Pod with `spec.nodeName` = `--node`, or no node in a config
//! directory meant for one node). Another host connecting to
//! `<node IP>:15001` (the DaemonSet listens on the node's address so pods
//! can reach it) gets no answer, as with a firewall rule, but without
//! touching the node's iptables/nftables. The IPv6 outbound listener
//! (`--outbound6`) gets the same filter over IPv6 sources ([`program6`]):
//! `::1`, the node's IPv6 addresses and its meshed pods' (`status.podIPs`).
//!
//! The userspace check stays behind it: a connection the kernel did not
//! redirect has no original destination and is closed at once
//! (`proxy/server.rs`). Accepted connections inherit the filter; the list
//! is rewritten (atomically, one `setsockopt`) when the node's meshed pods
//! change.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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

/// Most IPv6 addresses one filter holds (nine instructions each).
pub const MAX_ADDRESSES6: usize = 400;

/// The filter program for an IPv6 listener: accept a packet whose IPv6
/// source is one of `allowed`, drop the rest. Each address is four word
/// compares; a mismatch skips to the next address.
pub fn program6(allowed: &[Ipv6Addr]) -> Vec<libc::sock_filter> {
    let mut p = Vec::with_capacity(allowed.len() * 9 + 1);
    for ip in allowed {
        let o = ip.octets();
        for w in 0..4u8 {
            let i = usize::from(w) * 4;
            let word = u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            // A = word w of ip6->saddr (at offset 8 of the IPv6 header).
            p.push(insn(
                BPF_LD_W_ABS,
                0,
                0,
                (SKF_NET_OFF + 8 + i32::from(w) * 4) as u32,
            ));
            // Mismatch: skip the rest of this address's block (the
            // remaining load/compare pairs and the accept).
            p.push(insn(BPF_JEQ_K, 0, 7 - 2 * w, word));
        }
        p.push(insn(BPF_RET_K, 0, 0, u32::MAX));
    }
    p.push(insn(BPF_RET_K, 0, 0, 0));
    p
}

/// The IPv6 sources allowed on this node: `::1`, its own IPv6 addresses
/// and its meshed pods' (every address of `status.podIPs`), sorted and
/// deduplicated. IPv4-mapped addresses are left to the IPv4 listener.
pub fn allowed_sources6(node: &str, node_ips: &[IpAddr], enrollment: &Enrollment) -> Vec<Ipv6Addr> {
    let v6 = |ip: &IpAddr| match ip {
        IpAddr::V6(a) if a.to_ipv4_mapped().is_none() => Some(*a),
        _ => None,
    };
    let mut out: Vec<Ipv6Addr> = vec![Ipv6Addr::LOCALHOST];
    out.extend(node_ips.iter().filter_map(v6));
    out.extend(
        enrollment
            .pods
            .iter()
            .filter(|p| p.meshed() && p.node.as_deref().is_none_or(|n| n == node))
            .flat_map(|p| p.ips.iter().filter_map(v6)),
    );
    out.sort();
    out.dedup();
    out
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

/// Keeps the outbound listeners' filters in step with the node's pods.
pub struct OutboundGuard {
    sock: std::net::TcpListener,
    /// The IPv6 outbound listener, if any.
    sock6: Option<std::net::TcpListener>,
    node: String,
    node_ips: Vec<IpAddr>,
    current: Option<Vec<Ipv4Addr>>,
    current6: Option<Vec<Ipv6Addr>>,
}

impl OutboundGuard {
    /// A guard for `sock` and `sock6` (duplicates of the IPv4 and IPv6
    /// outbound listeners: the same sockets) on `node` with addresses
    /// `node_ips`. Attaches the filters allowing the node itself and no
    /// pod yet.
    pub fn new(
        sock: std::net::TcpListener,
        sock6: Option<std::net::TcpListener>,
        node: &str,
        node_ips: Vec<IpAddr>,
    ) -> std::io::Result<Self> {
        let mut g = Self {
            sock,
            sock6,
            node: node.to_string(),
            node_ips,
            current: None,
            current6: None,
        };
        g.set(Vec::new())?;
        g.set6(&Enrollment::default())?;
        Ok(g)
    }

    fn set6(&mut self, enrollment: &Enrollment) -> std::io::Result<()> {
        let Some(sock) = &self.sock6 else {
            return Ok(());
        };
        let allowed = allowed_sources6(&self.node, &self.node_ips, enrollment);
        if self.current6.as_ref() == Some(&allowed) {
            return Ok(());
        }
        if allowed.len() > MAX_ADDRESSES6 {
            tracing::warn!(
                addresses = allowed.len(),
                max = MAX_ADDRESSES6,
                "too many local pods for the IPv6 outbound listener's source filter: every source is accepted (connections the kernel did not redirect are still closed)"
            );
            attach(sock, &[insn(BPF_RET_K, 0, 0, u32::MAX)])?;
        } else {
            attach(sock, &program6(&allowed))?;
        }
        self.current6 = Some(allowed);
        Ok(())
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
        if let Err(e) = self.set6(enrollment) {
            tracing::error!("updating the IPv6 outbound listener's source filter: {e}");
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

    fn connect6_from(src: Ipv6Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
        s.bind(&SocketAddr::from((src, 0)).into())?;
        s.connect_timeout(&dst.into(), Duration::from_millis(1500))?;
        Ok(s.into())
    }

    /// Loopback holds `::1` only, so the test compares sources that differ
    /// in one word at a time through the filter's own compare chain: the
    /// listed `::1` passes, an allow-list without it drops it.
    #[test]
    fn only_listed_ipv6_sources_complete_a_handshake() {
        let Ok(l) = TcpListener::bind("[::1]:0") else {
            eprintln!("SKIP only_listed_ipv6_sources_complete_a_handshake: no IPv6 loopback");
            return;
        };
        let addr = l.local_addr().unwrap();
        let one = Ipv6Addr::LOCALHOST;
        // Addresses that differ from ::1 in the first, second, third and
        // last word: each must fail at its own compare.
        let near: Vec<Ipv6Addr> = ["1::1", "0:0:1::1", "::1:0:0:1", "::2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        attach(&l, &program6(&near)).unwrap();
        let e = connect6_from(one, addr).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        let mut with_one = near.clone();
        with_one.push(one);
        attach(&l, &program6(&with_one)).unwrap();
        assert!(connect6_from(one, addr).is_ok());
        attach(&l, &program6(&[])).unwrap();
        assert!(connect6_from(one, addr).is_err());
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

    #[test]
    fn the_allowed_ipv6_sources_are_the_node_and_its_meshed_pods_ipv6_addresses() {
        let pod = |name: &str, node: &str, ips: &str, extra: &str| {
            let first = ips.split(',').next().unwrap();
            let list: Vec<String> = ips.split(',').map(|i| format!("{{ip: \"{i}\"}}")).collect();
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: {name}{extra}}}}}\nspec: {{nodeName: {node}, containers: [{{name: c}}]}}\nstatus: {{phase: Running, podIP: \"{first}\", podIPs: [{}]}}\n", list.join(", "))
        };
        let yaml = [
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: default, labels: {istio.io/dataplane-mode: ambient}}\n".to_string(),
            pod("dual", "node-a", "10.1.0.5,fd00:1::5", ""),
            pod("v6only", "node-a", "fd00:1::7", ""),
            pod("opted-out", "node-a", "10.1.0.6,fd00:1::6", ", istio.io/dataplane-mode: none"),
            pod("remote", "node-b", "10.1.1.5,fd00:1:1::5", ""),
        ]
        .join("---\n");
        let loaded = strait_config::load::load_str(&yaml, "p.yaml");
        let e = Enrollment::from_resources(&loaded.resources);
        let node: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        let want: Vec<Ipv6Addr> = ["::1", "fd00::1", "fd00:1::5", "fd00:1::7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(allowed_sources6("node-a", &node, &e), want);
        // The IPv4 list is unchanged by the pods' IPv6 addresses.
        assert_eq!(
            allowed_sources("node-a", &node, &e),
            [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 1, 0, 5)]
        );
    }
}
