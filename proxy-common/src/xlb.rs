//! The XDP load balancer for external VIPs (Katran's design): map names,
//! limits, entry types and the flow hash shared by the `xdp_lb` program and
//! userspace.
//!
//! A packet to `vip:port/proto` listed in [`XLB_VIPS`] is sent to one of
//! the nodes hosting the service's endpoints (a "real" in Katran's words):
//! the flow's [`XlbFlow`] is looked up in the connection table
//! [`XLB_CONNS`] (an LRU with one LRU list per CPU), else hashed with
//! [`flow_position`] into the VIP's Maglev ring in [`XLB_RINGS`]; the packet
//! is then wrapped in an outer IPv4 header (IPIP, protocol 4) to the real's
//! address and transmitted back out of the same interface (`XDP_TX`) to the
//! gateway MAC in [`XLB_CONFIG`]. The real's own `xdp_lb` strips the outer
//! header of IPIP packets to a VIP (Katran's `xdpdecap`; no `ipip` module
//! needed) and the node answers the client directly from the VIP (direct
//! server return).

use crate::maglev::fmix64;

/// External VIPs: [`XlbVipKey`] → [`XlbVip`] (hash).
pub const XLB_VIPS: &str = "XLB_VIPS";
/// Maglev rings: `u32` ring id ([`XlbVip::ring`]) → [`crate::MaglevTable`]
/// whose entries are indexes into [`XLB_REALS`] (hash, not preallocated).
pub const XLB_RINGS: &str = "XLB_RINGS";
/// Reals (node addresses): array of [`MAX_XLB_REALS`] [`XlbReal`].
pub const XLB_REALS: &str = "XLB_REALS";
/// Connection table: [`XlbFlow`] → [`XlbConn`], an LRU hash created with
/// `BPF_F_NO_COMMON_LRU` (one LRU list per CPU, Katran's per-CPU LRU).
pub const XLB_CONNS: &str = "XLB_CONNS";
/// Settings: array of one [`XlbConfig`].
pub const XLB_CONFIG: &str = "XLB_CONFIG";
/// Counters: per-CPU array of one [`XlbStats`].
pub const XLB_STATS: &str = "XLB_STATS";

/// Maximum number of (VIP, port, protocol) entries plus one address marker
/// per VIP address in [`XLB_VIPS`].
pub const MAX_XLB_VIPS: u32 = 1024;
/// Size of [`XLB_REALS`].
pub const MAX_XLB_REALS: u32 = 4096;
/// Capacity of [`XLB_CONNS`] (over all CPUs).
pub const MAX_XLB_CONNS: u32 = 262_144;
/// [`XlbVip::ring`] of an address marker: the entry `{vip, 0, 0}` that
/// says "this address is a VIP" for packets without ports (fragments).
pub const XLB_ADDRESS_ONLY: u32 = u32::MAX;
/// TTL of the outer IPIP header (Katran's `DEFAULT_TTL`).
pub const XLB_OUTER_TTL: u8 = 64;

/// Key of [`XLB_VIPS`]. `port` and `proto` 0 is the address marker.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct XlbVipKey {
    /// VIP, IPv4 network byte order.
    pub vip: u32,
    /// Destination port, network byte order.
    pub port: u16,
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// Always 0.
    pub pad: u8,
}

/// Value of [`XLB_VIPS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbVip {
    /// Key of the VIP's ring in [`XLB_RINGS`]; no ring means no healthy
    /// real, and the packet is dropped. [`XLB_ADDRESS_ONLY`] for markers.
    pub ring: u32,
    /// Reserved; 0.
    pub flags: u32,
}

/// Value of [`XLB_REALS`]: a node the VIPs' traffic is tunnelled to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbReal {
    /// Node IPv4 address, network byte order; 0 for an unused index (a
    /// connection table entry pointing at it is ignored and the flow is
    /// hashed again).
    pub ip: u32,
    /// Reserved; 0.
    pub flags: u32,
}

/// Key of [`XLB_CONNS`]: a flow as the client sends it (for an ICMP error
/// about a flow, the flow it is about).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct XlbFlow {
    /// Client address, network byte order.
    pub src: u32,
    /// VIP, network byte order.
    pub dst: u32,
    /// Client port, network byte order.
    pub sport: u16,
    /// VIP port, network byte order.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Always 0.
    pub pad: [u8; 3],
}

/// Value of [`XLB_CONNS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbConn {
    /// Index in [`XLB_REALS`] the flow is pinned to.
    pub real: u32,
    /// Always 0.
    pub pad: u32,
}

/// The single entry of [`XLB_CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbConfig {
    /// Outer source address of the IPIP header (this node's uplink
    /// address), network byte order. 0: the balancer is off and every
    /// packet passes.
    pub src_ip: u32,
    /// Destination MAC of tunnelled frames (the uplink's gateway, Katran's
    /// `default_mac`).
    pub gw_mac: [u8; 6],
    /// Always 0.
    pub pad: u16,
}

/// Value of [`XLB_STATS`] (one per CPU; userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbStats {
    /// Packets tunnelled to a real.
    pub packets: u64,
    /// Inner bytes (IP total length) of those packets.
    pub bytes: u64,
    /// Packets of flows not in the connection table (hashed on the ring).
    pub new_flows: u64,
    /// ICMP "fragmentation needed" errors about a VIP's flow, tunnelled to
    /// the flow's real.
    pub icmp_frag_needed: u64,
    /// Fragments to a VIP address, dropped (Katran drops them: a non-first
    /// fragment has no ports to balance on).
    pub fragments_dropped: u64,
    /// Packets to a VIP with IP options, a bad length or a truncated
    /// header, dropped.
    pub malformed_dropped: u64,
    /// Packets to a VIP without a healthy real, dropped.
    pub no_real_dropped: u64,
    /// Packets whose tunnelled size would exceed 65535 bytes, dropped.
    pub too_big_dropped: u64,
    /// IPIP packets to a VIP received by this node as a real, decapsulated
    /// and passed up the stack.
    pub decapsulated: u64,
}

/// Position of `flow` in a Maglev ring of `size` entries: MurmurHash3's
/// `fmix64` of the client address and both ports, mixed with the protocol.
/// Used by the kernel and by userspace (tests, diagnostics) alike, so both
/// agree on where a flow lands.
pub const fn flow_position(flow: &XlbFlow, size: u32) -> u32 {
    let key = ((flow.src as u64) << 32) | ((flow.sport as u64) << 16) | flow.dport as u64;
    let h = fmix64(key ^ ((flow.proto as u64) << 56) ^ flow.dst as u64);
    (h % size as u64) as u32
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, integers only, explicit padding.
    unsafe impl aya::Pod for super::XlbVipKey {}
    unsafe impl aya::Pod for super::XlbVip {}
    unsafe impl aya::Pod for super::XlbReal {}
    unsafe impl aya::Pod for super::XlbFlow {}
    unsafe impl aya::Pod for super::XlbConn {}
    unsafe impl aya::Pod for super::XlbConfig {}
    unsafe impl aya::Pod for super::XlbStats {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<XlbVipKey>(), 8);
        assert_eq!(size_of::<XlbVip>(), 8);
        assert_eq!(size_of::<XlbReal>(), 8);
        assert_eq!(size_of::<XlbFlow>(), 16);
        assert_eq!(size_of::<XlbConn>(), 8);
        assert_eq!(size_of::<XlbConfig>(), 12);
        assert_eq!(size_of::<XlbStats>(), 72);
    }

    #[test]
    fn flow_position_depends_on_ports() {
        let a = XlbFlow {
            src: 1,
            dst: 2,
            sport: 3,
            dport: 4,
            proto: 6,
            pad: [0; 3],
        };
        let b = XlbFlow { sport: 5, ..a };
        assert!(flow_position(&a, 16_381) < 16_381);
        assert_ne!(flow_position(&a, 1 << 30), flow_position(&b, 1 << 30));
    }
}
