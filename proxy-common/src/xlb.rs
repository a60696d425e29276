//! The XDP load balancer for external VIPs (Katran's design): map names,
//! limits, entry types and the flow hash shared by the `xdp_lb` program and
//! userspace.
//!
//! A packet to `vip:port/proto` listed in [`XLB_VIPS`] (found in one of two
//! buckets, [`vip_buckets`]) is sent to one of
//! the nodes hosting the service's endpoints (a "real" in Katran's words):
//! the flow's [`XlbFlow`] is looked up in the connection table
//! [`XLB_CONNS`] (an LRU with one LRU list per CPU), else hashed with
//! [`flow_position`] into the VIP's Maglev ring in [`XLB_RINGS`]; the packet
//! is then wrapped in an outer IPv4 header (IPIP, protocol 4) to the real's
//! address and transmitted back out of the same interface (`XDP_TX`) to the
//! gateway MAC in [`XLB_CONFIG`]. A real may also be an IPv6 node (flag
//! [`XLB_REAL_IPV6`], address in [`XLB_REALS_4IN6`]): the packet is then
//! wrapped in an outer IPv6 header (next header 4, Katran's 4in6
//! `encap_v6(..., is_ipv6 = false)`) and sent to the IPv6 gateway MAC of
//! [`crate::XLB_CONFIG6`]. The real's own `xdp_lb` strips the outer
//! header of IPIP / 4in6 packets to a VIP (Katran's `xdpdecap`; no `ipip`
//! or `ip6_tunnel` module needed) and the node answers the client directly
//! from the VIP (direct server return).

use crate::maglev::fmix64;

/// External VIPs: an array of [`XLB_VIP_BUCKETS`] [`XlbVipBucket`]s, an
/// open-addressed table the daemon fills (two-choice buckets of
/// [`XLB_VIP_BUCKET_SLOTS`] slots, [`vip_buckets`]); the program reads it
/// with inlined array lookups and word compares, no hash-map helper call.
/// (Builds before it kept the VIPs in the hash map [`XLB_VIPS_V1`].)
pub const XLB_VIPS: &str = "XLB_VIP_BUCKETS";
/// The hash map `XlbVipKey → XlbVip` earlier builds pinned under this name;
/// a daemon starting over such pins copies its entries into [`XLB_VIPS`]
/// and unpins it.
pub const XLB_VIPS_V1: &str = "XLB_VIPS";
/// Maglev rings: `u32` ring id ([`XlbVip::ring`]) → [`crate::MaglevTable`]
/// whose entries are indexes into [`XLB_REALS`] (hash, not preallocated).
pub const XLB_RINGS: &str = "XLB_RINGS";
/// Reals (node addresses): array of [`MAX_XLB_REALS`] [`XlbReal`].
pub const XLB_REALS: &str = "XLB_REALS";
/// IPv6 addresses of the IPv4 VIPs' IPv6 reals (4in6): array of
/// [`MAX_XLB_REALS`] [`crate::XlbReal6`], same index as [`XLB_REALS`],
/// read only for an entry flagged [`XLB_REAL_IPV6`].
pub const XLB_REALS_4IN6: &str = "XLB_REALS4IN6";
/// Connection table: [`XlbFlow`] → [`XlbConn`], an LRU hash created with
/// `BPF_F_NO_COMMON_LRU` (one LRU list per CPU, Katran's per-CPU LRU).
pub const XLB_CONNS: &str = "XLB_CONNS";
/// Per-CPU flow cache in front of [`XLB_CONNS`]: a per-CPU array of
/// [`XLB_FLOW_CACHE_SLOTS`] [`XlbCachedFlow`]s, direct-mapped by
/// [`flow_cache_slot`]. An established flow's packet is balanced from its
/// CPU's slot with inlined array loads and word compares (no hash-map
/// helper: under AMD's SRSO "safe RET" mitigation each of the hash
/// lookup's function returns costs several nanoseconds); a miss, or a slot
/// whose real was removed, falls back to [`XLB_CONNS`], whose answer (and
/// every flow the ring picks and records) is written to the slot. The slot
/// only ever repeats what this CPU read from or wrote to [`XLB_CONNS`], so
/// a flow keeps its real as Katran's per-CPU LRUs keep it: a flow whose
/// packets all reach one CPU (RSS) sees exactly the connection table's
/// real; a flow the table evicted stays on its real while its slot lasts.
/// Not pinned: each load starts empty (the pinned [`XLB_CONNS`] keeps the
/// flows across restarts and upgrades).
pub const XLB_FLOW_CACHE: &str = "XLB_FLOW_CACHE";
/// Slots per CPU of [`XLB_FLOW_CACHE`] (a power of two; 96 KiB per CPU).
pub const XLB_FLOW_CACHE_SLOTS: u32 = 4096;
/// Settings: array of one [`XlbConfig`].
pub const XLB_CONFIG: &str = "XLB_CONFIG";
/// Counters: per-CPU array of one [`XlbStats`].
pub const XLB_STATS: &str = "XLB_STATS";

/// Maximum number of (VIP, port, protocol) entries plus one address marker
/// per VIP address in [`XLB_VIPS`].
pub const MAX_XLB_VIPS: u32 = 1024;
/// Buckets of [`XLB_VIPS`] (a power of two): 4 slots for each of the
/// [`MAX_XLB_VIPS`] entries, so a bucket is rarely full.
pub const XLB_VIP_BUCKETS: u32 = 1024;
/// Slots per bucket of [`XLB_VIPS`] (one 64-byte cache line).
pub const XLB_VIP_BUCKET_SLOTS: usize = 4;
/// [`XlbVipKey::pad`] of an occupied [`XlbVipSlot`] (a free slot is all
/// zero, so no packet's key matches it).
pub const XLB_VIP_USED: u8 = 1;
/// Size of [`XLB_REALS`].
pub const MAX_XLB_REALS: u32 = 4096;
/// Capacity of [`XLB_CONNS`] (over all CPUs).
pub const MAX_XLB_CONNS: u32 = 262_144;
/// [`XlbVip::ring`] of an address marker: the entry `{vip, 0, 0}` that
/// says "this address is a VIP" for packets without ports (fragments).
pub const XLB_ADDRESS_ONLY: u32 = u32::MAX;
/// TTL of the outer IPIP header, hop limit of the outer IPv6 header
/// (Katran's `DEFAULT_TTL`).
pub const XLB_OUTER_TTL: u8 = 64;
/// [`XlbReal::flags`] bit: the real is an IPv6 node (Katran's `F_IPV6`);
/// its address is entry [`XLB_REALS_4IN6`] of the same index and
/// [`XlbReal::ip`] is 0 (so a build without 4in6 reads the entry as
/// unused and drops the flow's packets rather than tunnel them to a
/// wrong address).
pub const XLB_REAL_IPV6: u32 = 1;

/// Key of a VIP entry. `port` and `proto` 0 is the address marker.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct XlbVipKey {
    /// VIP, IPv4 network byte order.
    pub vip: u32,
    /// Destination port, network byte order.
    pub port: u16,
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// 0 in a key; [`XLB_VIP_USED`] in an occupied [`XlbVipSlot`].
    pub pad: u8,
}

impl XlbVipKey {
    /// The key as the little-endian word the program compares
    /// (`vip | port << 32 | proto << 48 | pad << 56`).
    pub const fn word(&self) -> u64 {
        self.vip as u64
            | (self.port as u64) << 32
            | (self.proto as u64) << 48
            | (self.pad as u64) << 56
    }
}

/// The two buckets of [`XLB_VIPS`] a key of word `word` (see
/// [`XlbVipKey::word`], `pad` 0) may sit in: bits of one multiplicative
/// hash of the word folded on itself (the two may coincide). Shared by the
/// program and the daemon.
pub const fn vip_buckets(word: u64) -> [u32; 2] {
    let h = (word ^ (word >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    [
        (h >> 54) as u32 & (XLB_VIP_BUCKETS - 1),
        (h >> 44) as u32 & (XLB_VIP_BUCKETS - 1),
    ]
}

/// One slot of [`XLB_VIPS`]: a key (with `pad` [`XLB_VIP_USED`]) and its
/// value; all zero when free. The daemon writes a new entry into a free
/// slot and clears a slot before reusing it, so a program reading a slot
/// while it is written sees the old key, or the new key with ring 0 or the
/// final ring (ring id 0 is never used: such a packet finds no ring and is
/// dropped and counted, never sent to another VIP's real).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbVipSlot {
    /// The key, `pad` = [`XLB_VIP_USED`].
    pub key: XlbVipKey,
    /// Its value.
    pub vip: XlbVip,
}

/// Value of [`XLB_VIPS`]: [`XLB_VIP_BUCKET_SLOTS`] slots, a key in any.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbVipBucket {
    /// The slots, free ones all zero.
    pub slots: [XlbVipSlot; XLB_VIP_BUCKET_SLOTS],
}

/// Value of a VIP entry ([`XlbVipSlot::vip`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbVip {
    /// Key of the VIP's ring in [`XLB_RINGS`] (never 0); no ring means no
    /// healthy real, and the packet is dropped. [`XLB_ADDRESS_ONLY`] for
    /// markers.
    pub ring: u32,
    /// Reserved; 0.
    pub flags: u32,
}

/// Value of [`XLB_REALS`]: a node the VIPs' traffic is tunnelled to.
/// All zero for an unused index (a connection table entry pointing at it
/// is ignored and the flow is hashed again).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbReal {
    /// Node IPv4 address, network byte order; 0 for an IPv6 real.
    pub ip: u32,
    /// 0 for an IPv4 real, [`XLB_REAL_IPV6`] for an IPv6 one.
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

/// Value of [`XLB_FLOW_CACHE`]: a flow and the [`XLB_REALS`] index
/// [`XLB_CONNS`] held (or the ring picked) for it on this CPU. All zero
/// when empty (protocol 0: no TCP or UDP flow matches).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbCachedFlow {
    /// The flow, as its [`XLB_CONNS`] key.
    pub flow: XlbFlow,
    /// Index in [`XLB_REALS`].
    pub real: u32,
    /// Always 0.
    pub pad: u32,
}

/// The [`XLB_FLOW_CACHE`] slot of the flow whose [`XlbFlow`] reads as the
/// little-endian words `w0` (source, destination) and `w1` (ports,
/// protocol): the top bits of one multiplicative hash of both. Not keyed:
/// a client can only make its own flows share a slot with another flow,
/// which costs that flow the cache (its packets then take [`XLB_CONNS`]),
/// never its real.
pub const fn flow_cache_slot(w0: u64, w1: u64) -> u32 {
    const BITS: u32 = XLB_FLOW_CACHE_SLOTS.trailing_zeros();
    let h = (w0 ^ w1.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> (64 - BITS)) as u32
}

/// The single entry of [`XLB_CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbConfig {
    /// Outer source address of the IPIP header (this node's uplink
    /// address), network byte order. 0: the IPv4 balancer is off and every
    /// IPv4 packet passes. (4in6 takes its outer source and gateway from
    /// [`crate::XlbConfig6`].)
    pub src_ip: u32,
    /// Destination MAC of tunnelled frames (the uplink's gateway, Katran's
    /// `default_mac`).
    pub gw_mac: [u8; 6],
    /// The uplink's MTU (largest IP packet it sends, bytes): a VIP packet
    /// that no longer fits once tunnelled is answered with ICMP
    /// "fragmentation needed" (DF set) or dropped, as Katran's
    /// `ICMP_TOOBIG_GENERATION` does (`proxy-ebpf/src/xdp_toobig.rs`). 0:
    /// not known, nothing checked (earlier builds wrote 0 here as padding).
    pub mtu: u16,
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
    /// Packets that would not fit once tunnelled (past the uplink's MTU,
    /// or 65,535 bytes), not forwarded: answered with ICMP
    /// "fragmentation needed" (IPv4 with DF) or "Packet Too Big" (IPv6)
    /// carrying the MTU minus the tunnel's overhead, else dropped.
    pub too_big_dropped: u64,
    /// IPIP (and 4in6, ip6ip6) packets to a VIP received by this node as
    /// a real, decapsulated and passed up the stack.
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
    unsafe impl aya::Pod for super::XlbVipSlot {}
    unsafe impl aya::Pod for super::XlbVipBucket {}
    unsafe impl aya::Pod for super::XlbReal {}
    unsafe impl aya::Pod for super::XlbFlow {}
    unsafe impl aya::Pod for super::XlbConn {}
    unsafe impl aya::Pod for super::XlbCachedFlow {}
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
        assert_eq!(size_of::<XlbVipSlot>(), 16);
        assert_eq!(size_of::<XlbVipBucket>(), 64);
        assert_eq!(size_of::<XlbReal>(), 8);
        assert_eq!(size_of::<XlbFlow>(), 16);
        assert_eq!(size_of::<XlbConn>(), 8);
        assert_eq!(size_of::<XlbCachedFlow>(), 24);
        assert_eq!(size_of::<XlbConfig>(), 12);
        assert_eq!(size_of::<XlbStats>(), 72);
    }

    #[test]
    fn vip_buckets_are_in_range_and_spread() {
        let mut seen = [false; XLB_VIP_BUCKETS as usize];
        for i in 0..256u32 {
            let k = XlbVipKey {
                vip: ipv4_be(198, 51, 100, i as u8),
                port: 80u16.to_be(),
                proto: 6,
                pad: 0,
            };
            let [a, b] = vip_buckets(k.word());
            assert!(a < XLB_VIP_BUCKETS && b < XLB_VIP_BUCKETS);
            seen[a as usize] = true;
            // TCP and UDP on the same address and port land apart.
            let u = XlbVipKey { proto: 17, ..k };
            assert_ne!(vip_buckets(u.word()), [a, b]);
        }
        let n = seen.iter().filter(|s| **s).count();
        assert!(n > 200, "256 VIPs in {n} first buckets");
        let k = XlbVipKey {
            vip: 1,
            port: 2,
            proto: 3,
            pad: XLB_VIP_USED,
        };
        assert_eq!(k.word(), 1 | 2 << 32 | 3 << 48 | 1 << 56);
    }

    fn ipv4_be(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from_ne_bytes([a, b, c, d])
    }

    #[test]
    fn flow_cache_slots_are_in_range_and_spread_clients_and_ports() {
        extern crate std;
        let mut used = std::collections::BTreeSet::new();
        for i in 0..1024u64 {
            // Clients 192.0.2.0/24 (bytes as on the wire) to one VIP, four
            // source ports each.
            let src = u32::from_ne_bytes([192, 0, 2, (i >> 2) as u8]) as u64;
            let w0 = src | (ipv4_be(198, 51, 100, 10) as u64) << 32;
            let sport = (40_000 + i as u16 % 4).to_be() as u64;
            let w1 = sport | (80u16.to_be() as u64) << 16 | 6 << 32;
            let slot = flow_cache_slot(w0, w1);
            assert!(slot < XLB_FLOW_CACHE_SLOTS);
            used.insert(slot);
        }
        // 1,024 flows in 4,096 slots: about 900 distinct slots expected
        // (4096 * (1 - e^-0.25) = 905); far fewer means the hash ignores
        // part of the key.
        assert!(used.len() > 850, "1024 flows in {} slots", used.len());
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
