//! Same-node socket pairs for the `sk_msg` redirect (issue 20): the
//! sockets at both ends of a connection that never leaves this node and
//! has Strait's proxy at one end — a meshed client pod's connection to
//! the node proxy's outbound listener, and the proxy's in-pod delivery
//! (from `127.0.0.6`) to a local pod — are kept in the sockhash
//! [`SOCKMAP`] under their own 4-tuple. The `sk_msg` program attached to
//! it hands each `sendmsg()` of one end straight to the receive queue of
//! the other (`bpf_msg_redirect_hash(.., BPF_F_INGRESS)`), skipping the
//! TCP/IP stack and the veth/loopback device in between, as Cilium's
//! sockops acceleration (`bpf_sockops.c`, `bpf_redir.c`) and merbridge do.
//! Not pinned: the daemon creates it at each start; a socket leaves it
//! when it closes (the kernel removes a closing socket from every
//! sockmap/sockhash).

/// Sockhash of same-node socket pairs, keyed by [`SockPair`] (the
/// socket's own view of its connection).
pub const SOCKMAP: &str = "SOCKMAP";
/// Maximum entries of [`SOCKMAP`]: two per same-node connection through
/// the proxy. When full, new connections simply take the TCP path.
pub const MAX_SOCKMAP: u32 = 65_536;

/// Key of [`SOCKMAP`]: a TCP socket's IPv4 4-tuple as the socket sees it.
/// Addresses in network byte order, ports in host byte order (the form
/// `bpf_sock_ops.local_port` has; a context's `remote_port` is converted).
/// The peer of the socket `{l, r, lp, rp}` is `{r, l, rp, lp}`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockPair {
    /// Local IPv4 address, network byte order.
    pub local_ip: u32,
    /// Remote IPv4 address, network byte order.
    pub remote_ip: u32,
    /// Local port, host byte order.
    pub local_port: u32,
    /// Remote port, host byte order.
    pub remote_port: u32,
}

impl SockPair {
    /// The key its peer socket is stored under.
    pub const fn peer(&self) -> SockPair {
        SockPair {
            local_ip: self.remote_ip,
            remote_ip: self.local_ip,
            local_port: self.remote_port,
            remote_port: self.local_port,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` integers without padding.
    unsafe impl aya::Pod for super::SockPair {}
}
