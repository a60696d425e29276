//! Maps and entry types of native IPv6 services (an IPv6 VIP balanced over
//! IPv6 backends by connect6 / sendmsg6, restored by getpeername6 /
//! recvmsg6). They sit beside the IPv4 maps of [`crate::maps`] rather than
//! widening them, so the IPv4 layouts (and their pins) are unchanged.
//!
//! Shared with IPv4: the [`crate::ServiceValue`] of a service, the backend
//! set ids (one id space, so [`crate::MAGLEV`] holds the lookup tables of
//! both families, built by the one [`crate::maglev`] implementation), the
//! counters ([`crate::SERVICE_STATS`], [`crate::BACKEND_STATS`]). The node
//! proxy's IPv6 outbound listener is [`PROXY_CONFIG6`] (an IPv6 socket
//! cannot reach the IPv4 one of [`crate::PROXY_CONFIG`]): REDIRECT-mode TCP
//! to an IPv6 VIP and TCP to a meshed pod's IPv6 address go there, their
//! original destination published in [`ORIG_DST6`]; without it they are
//! refused (see [`SERVICES6`]).
//!
//! An IPv6 address is stored as four `u32` words exactly as the kernel
//! hands `bpf_sock_addr.user_ip6` to the hooks: the 16 address bytes in
//! network order (use [`ipv6_words`] / [`ipv6_from_words`]).

/// Service map for IPv6 VIPs: [`ServiceKey6`] → [`crate::ServiceValue`]
/// (hash). A [`crate::mode::REDIRECT`] TCP entry makes connect6 redirect
/// the connection to the node proxy's IPv6 listener ([`PROXY_CONFIG6`]);
/// while that is unset (port 0) connect6 fails with `ECONNREFUSED` (fail
/// closed): letting the connection through would bypass the policy or mTLS
/// that made the service REDIRECT. UDP is balanced whatever the mode, as
/// for IPv4.
pub const SERVICES6: &str = "SERVICES6";
/// IPv6 backend slots: [`crate::BackendKey`] → [`Backend6`] (hash, not
/// preallocated). Slot `s` of set `svc_id`, as [`crate::BACKENDS`].
pub const BACKENDS6: &str = "BACKENDS6";
/// What connect6 did to a socket with a native IPv6 destination: array of
/// [`SOCK_NAT6_SLOTS`] [`SockNat6`], direct-mapped by socket cookie and
/// tagged with the whole cookie, as [`crate::SOCK_NAT`] is for IPv4.
pub const SOCK_NAT6: &str = "SOCK_NAT6";
/// Reverse NAT of unconnected IPv6 UDP sockets: [`RevNatKey6`] →
/// [`OrigDst6`] (LRU), as [`crate::REV_NAT`].
pub const REV_NAT6: &str = "REV_NAT6";
/// Meshed pod IPv6 addresses: `[u32; 4]` → [`crate::Workload`] (hash).
/// TCP to one of them is redirected by connect6 to the node proxy's IPv6
/// listener ([`PROXY_CONFIG6`]), as IPv4 pod addresses are to
/// [`crate::PROXY_CONFIG`]. With IPv4 redirection on but no IPv6 listener
/// it is refused instead: a direct connection would bypass mTLS.
pub const WORKLOADS6: &str = "WORKLOADS6";
/// The node proxy's IPv6 outbound listener: array of one [`ProxyConfig6`];
/// port 0: none (REDIRECT-mode IPv6 TCP is then refused).
pub const PROXY_CONFIG6: &str = "PROXY_CONFIG6";
/// Original destination of a connection connect6 redirected to
/// [`PROXY_CONFIG6`], by the client's IPv6 address as the proxy's
/// `accept()` sees it: [`ClientKey6`] → [`OrigDst6`] (LRU). Written by the
/// sockops program when the client's connection is established, from the
/// socket's [`SOCK_NAT6`] entry (flag [`crate::sock_nat::REDIRECTED`]), as
/// [`crate::ORIG_DST`] is for IPv4.
pub const ORIG_DST6: &str = "ORIG_DST6";
/// Kernel-balanced native IPv6 TCP connections (an IPv6 VIP balanced to an
/// IPv6 backend by connect6), counted as [`crate::TCP_STATS`] counts IPv4
/// ones: per-CPU hash [`TcpStatsKey6`] → [`crate::TcpStats`]. An IPv6
/// socket connecting to an IPv4-mapped VIP is counted in
/// [`crate::TCP_STATS`] under its IPv4 addresses.
pub const TCP_STATS6: &str = "TCP_STATS6";

/// The IPv6 maps the loader pins beside [`crate::PINNED_MAPS`].
pub const PINNED_MAPS6: [&str; 8] = [
    SERVICES6,
    BACKENDS6,
    SOCK_NAT6,
    REV_NAT6,
    WORKLOADS6,
    PROXY_CONFIG6,
    ORIG_DST6,
    TCP_STATS6,
];

/// Size of [`SOCK_NAT6`] (a power of two; 56 bytes a slot, 3.5 MiB).
pub const SOCK_NAT6_SLOTS: u32 = 65_536;

/// Key of [`SERVICES6`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct ServiceKey6 {
    /// Virtual IPv6 address ([`ipv6_words`]).
    pub vip: [u32; 4],
    /// Port, network byte order.
    pub port: u16,
    /// IP protocol ([`crate::proto::TCP`] or [`crate::proto::UDP`]).
    pub proto: u8,
    /// Always 0.
    pub pad: u8,
}

/// Value of [`BACKENDS6`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Backend6 {
    /// Backend IPv6 address ([`ipv6_words`]).
    pub ip: [u32; 4],
    /// Backend port, network byte order.
    pub port: u16,
    /// Always 0.
    pub pad: u16,
    /// The backend's slot in [`crate::BACKEND_STATS`].
    pub stats_index: u32,
}

/// An IPv6 socket address as a map value ([`SockNat6`], [`REV_NAT6`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OrigDst6 {
    /// IPv6 address ([`ipv6_words`]).
    pub ip: [u32; 4],
    /// Port, network byte order.
    pub port: u16,
    /// Always 0.
    pub pad: u16,
}

/// Value of [`SOCK_NAT6`]: what connect6 did to one socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockNat6 {
    /// Cookie of the socket the entry belongs to.
    pub cookie: u64,
    /// The backend the destination was rewritten to.
    pub to: OrigDst6,
    /// The VIP the application asked for.
    pub orig: OrigDst6,
    /// [`crate::sock_nat`] flags.
    pub flags: u32,
    /// Always 0.
    pub pad: u32,
}

/// Value of [`PROXY_CONFIG6`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProxyConfig6 {
    /// Outbound listener IPv6 address ([`ipv6_words`]).
    pub ip: [u32; 4],
    /// Outbound listener port, network byte order; 0: no IPv6 listener.
    pub port: u16,
    /// Always 0.
    pub pad: u16,
}

/// Key of [`ORIG_DST6`]: the client's local address of a redirected IPv6
/// connection, i.e. the peer address the proxy's `accept()` returns.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ClientKey6 {
    /// Client IPv6 address ([`ipv6_words`]).
    pub ip: [u32; 4],
    /// Client port, network byte order.
    pub port: u16,
    /// Always 0.
    pub pad: u16,
}

/// Key of [`REV_NAT6`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RevNatKey6 {
    /// Socket cookie.
    pub cookie: u64,
    /// Rewritten IPv6 address ([`ipv6_words`]).
    pub ip: [u32; 4],
    /// Rewritten port, network byte order.
    pub port: u16,
    /// Always 0.
    pub pad: u16,
    /// Always 0.
    pub pad2: u32,
}

/// Key of [`TCP_STATS6`]: who connected to which IPv6 service through
/// which backend (addresses as [`ipv6_words`], ports in network byte
/// order), as [`crate::TcpStatsKey`] is for IPv4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct TcpStatsKey6 {
    /// The client's (pod's) address.
    pub src: [u32; 4],
    /// The service VIP the client asked for; all zero when the socket's
    /// [`SOCK_NAT6`] slot was reused before it closed (the service is then
    /// found from the backend).
    pub vip: [u32; 4],
    /// The backend the kernel chose.
    pub backend: [u32; 4],
    /// Service port; 0 with `vip` zero.
    pub vport: u16,
    /// Backend port.
    pub bport: u16,
}

/// The four words of an IPv6 address as the kernel stores `user_ip6`
/// (each word holds four address bytes in network order, i.e. it is read
/// with the machine's byte order from the address bytes).
pub const fn ipv6_words(octets: [u8; 16]) -> [u32; 4] {
    let o = octets;
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// The address bytes of [`ipv6_words`] output.
pub const fn ipv6_from_words(w: [u32; 4]) -> [u8; 16] {
    let (a, b, c, d) = (
        w[0].to_ne_bytes(),
        w[1].to_ne_bytes(),
        w[2].to_ne_bytes(),
        w[3].to_ne_bytes(),
    );
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

/// The Maglev client key of a bound IPv6 source address: its words folded
/// with XOR (0, i.e. unbound, makes the kernel use the netns cookie, as
/// for IPv4). Hashed by [`crate::maglev_position`] like an IPv4 address.
pub const fn ipv6_client(w: [u32; 4]) -> u32 {
    w[0] ^ w[1] ^ w[2] ^ w[3]
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, integers only, explicit padding.
    unsafe impl aya::Pod for super::ServiceKey6 {}
    unsafe impl aya::Pod for super::Backend6 {}
    unsafe impl aya::Pod for super::OrigDst6 {}
    unsafe impl aya::Pod for super::SockNat6 {}
    unsafe impl aya::Pod for super::RevNatKey6 {}
    unsafe impl aya::Pod for super::ProxyConfig6 {}
    unsafe impl aya::Pod for super::ClientKey6 {}
    unsafe impl aya::Pod for super::TcpStatsKey6 {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey6>(), 20);
        assert_eq!(size_of::<Backend6>(), 24);
        assert_eq!(size_of::<OrigDst6>(), 20);
        assert_eq!(size_of::<SockNat6>(), 56);
        assert_eq!(size_of::<RevNatKey6>(), 32);
        assert_eq!(size_of::<ProxyConfig6>(), 20);
        assert_eq!(size_of::<ClientKey6>(), 20);
        assert_eq!(size_of::<TcpStatsKey6>(), 52);
    }

    #[test]
    fn words_round_trip_in_kernel_order() {
        let a = [0xfd, 0, 0x57, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let w = ipv6_words(a);
        assert_eq!(ipv6_from_words(w), a);
        // The first word holds the first four bytes in memory order, as
        // `user_ip6[0]` does.
        assert_eq!(w[0].to_ne_bytes(), [0xfd, 0, 0x57, 0x19]);
        assert_ne!(ipv6_client(w), 0);
    }
}
