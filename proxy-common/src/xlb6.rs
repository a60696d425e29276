//! The XDP load balancer's IPv6 side (Katran's IPv6 path): map names and
//! entry types shared by `xdp_lb` (its IPv6 branch, `proxy-ebpf`'s
//! `xdp_lb6.rs`) and userspace.
//!
//! The same design as [`crate::xlb`], keyed by IPv6 addresses: a packet to
//! `[vip]:port/proto` listed in [`XLB_VIPS6`] is sent to one of the nodes
//! hosting the service's endpoints, chosen from the flow table
//! [`XLB_CONNS6`] (per-CPU LRU) or else the VIP's Maglev ring in
//! [`XLB_RINGS6`] (entries index [`XLB_REALS6`]), then wrapped in an outer
//! IPv6 header (ip6ip6: next header 41, hop limit [`crate::XLB_OUTER_TTL`],
//! traffic class copied from the inner packet, flow label 0, as Katran's
//! `create_v6_hdr`) from [`XlbConfig6::src_ip`] to the node's IPv6
//! address, and transmitted back out of the uplink (`XDP_TX`). The node's
//! own `xdp_lb` strips the outer header of an ip6ip6 packet whose inner
//! destination is a VIP address and passes it up the stack (DSR). Counters
//! are shared with IPv4 ([`crate::XLB_STATS`]).

use crate::maglev::fmix64;

/// External IPv6 VIPs: [`XlbVipKey6`] → [`crate::XlbVip`] (hash).
pub const XLB_VIPS6: &str = "XLB_VIPS6";
/// Maglev rings of IPv6 VIPs: `u32` ring id → [`crate::MaglevTable`]
/// whose entries index [`XLB_REALS6`] (hash, not preallocated).
pub const XLB_RINGS6: &str = "XLB_RINGS6";
/// IPv6 reals (node addresses): array of [`MAX_XLB_REALS6`] [`XlbReal6`].
pub const XLB_REALS6: &str = "XLB_REALS6";
/// IPv6 connection table: [`XlbFlow6`] → [`crate::XlbConn`] (index in
/// [`XLB_REALS6`]), an LRU hash with one LRU list per CPU.
pub const XLB_CONNS6: &str = "XLB_CONNS6";
/// IPv6 settings: array of one [`XlbConfig6`].
pub const XLB_CONFIG6: &str = "XLB_CONFIG6";

/// Maximum number of (VIP, port, protocol) entries plus one address
/// marker per VIP address in [`XLB_VIPS6`].
pub const MAX_XLB_VIPS6: u32 = 1024;
/// Size of [`XLB_REALS6`].
pub const MAX_XLB_REALS6: u32 = 4096;
/// Capacity of [`XLB_CONNS6`] (over all CPUs).
pub const MAX_XLB_CONNS6: u32 = 262_144;

/// Key of [`XLB_VIPS6`]. `port` and `proto` 0 is the address marker
/// (value ring [`crate::XLB_ADDRESS_ONLY`]): "this address is a VIP", for
/// packets without ports (fragments) and for decapsulation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct XlbVipKey6 {
    /// VIP, the 16 address bytes as on the wire.
    pub vip: [u8; 16],
    /// Destination port, network byte order.
    pub port: u16,
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// Always 0.
    pub pad: u8,
}

/// Value of [`XLB_REALS6`]: a node the IPv6 VIPs' traffic is tunnelled to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbReal6 {
    /// Node IPv6 address as on the wire; all zero for an unused index (a
    /// connection table entry pointing at it is ignored and the flow is
    /// hashed again).
    pub ip: [u8; 16],
}

/// Key of [`XLB_CONNS6`]: a flow as the client sends it (for an ICMPv6
/// error about a flow, the flow it is about).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct XlbFlow6 {
    /// Client address as on the wire.
    pub src: [u8; 16],
    /// VIP as on the wire.
    pub dst: [u8; 16],
    /// Client port, network byte order.
    pub sport: u16,
    /// VIP port, network byte order.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Always 0.
    pub pad: [u8; 3],
}

/// The single entry of [`XLB_CONFIG6`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbConfig6 {
    /// Outer source address of the ip6ip6 header (this node's uplink IPv6
    /// address). All zero: the IPv6 balancer is off and IPv6 packets to
    /// VIPs pass (decapsulation still works).
    pub src_ip: [u8; 16],
    /// Destination MAC of tunnelled frames (the uplink's IPv6 gateway).
    pub gw_mac: [u8; 6],
    /// Always 0.
    pub pad: u16,
}

/// Position of `flow` in a Maglev ring of `size` entries: MurmurHash3's
/// `fmix64` over the client address, both ports, the protocol and the
/// VIP. Used by the kernel and by userspace (tests) alike.
pub const fn flow_position6(flow: &XlbFlow6, size: u32) -> u32 {
    let s = &flow.src;
    let d = &flow.dst;
    let s0 = u64::from_ne_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
    let s1 = u64::from_ne_bytes([s[8], s[9], s[10], s[11], s[12], s[13], s[14], s[15]]);
    let d0 = u64::from_ne_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    let d1 = u64::from_ne_bytes([d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]]);
    flow_position6_words([s0, s1], [d0, d1], flow.sport, flow.dport, flow.proto, size)
}

/// [`flow_position6`] of the flow whose addresses are the native-endian
/// 64-bit words `src` and `dst` (bytes 0..8 and 8..16 as on the wire): what
/// the kernel computes from whole-word packet loads, without a byte-wise
/// copy of the addresses.
#[inline(always)]
pub const fn flow_position6_words(
    src: [u64; 2],
    dst: [u64; 2],
    sport: u16,
    dport: u16,
    proto: u8,
    size: u32,
) -> u32 {
    let ports = ((sport as u64) << 16) | dport as u64;
    let h = fmix64(
        src[0] ^ fmix64(src[1] ^ (ports << 8) ^ proto as u64) ^ dst[0] ^ dst[1].rotate_left(17),
    );
    (h % size as u64) as u32
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, integers only, explicit padding.
    unsafe impl aya::Pod for super::XlbVipKey6 {}
    unsafe impl aya::Pod for super::XlbReal6 {}
    unsafe impl aya::Pod for super::XlbFlow6 {}
    unsafe impl aya::Pod for super::XlbConfig6 {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<XlbVipKey6>(), 20);
        assert_eq!(size_of::<XlbReal6>(), 16);
        assert_eq!(size_of::<XlbFlow6>(), 40);
        assert_eq!(size_of::<XlbConfig6>(), 24);
    }

    #[test]
    fn flow_position6_depends_on_every_part_of_the_flow() {
        let a = XlbFlow6 {
            src: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            dst: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            sport: 3,
            dport: 4,
            proto: 6,
            pad: [0; 3],
        };
        let n = 1 << 30;
        assert!(flow_position6(&a, 16_381) < 16_381);
        let mut src = a.src;
        src[15] = 9;
        for b in [
            XlbFlow6 { sport: 5, ..a },
            XlbFlow6 { dport: 5, ..a },
            XlbFlow6 { proto: 17, ..a },
            XlbFlow6 { src, ..a },
            XlbFlow6 { dst: src, ..a },
        ] {
            assert_ne!(flow_position6(&a, n), flow_position6(&b, n), "{b:?}");
        }
    }
}
