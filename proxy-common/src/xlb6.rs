//! The XDP load balancer's IPv6 side (Katran's IPv6 path): map names and
//! entry types shared by `xdp_lb` (its IPv6 branch, `proxy-ebpf`'s
//! `xdp_lb6.rs`) and userspace.
//!
//! The same design as [`crate::xlb`], keyed by IPv6 addresses: a packet to
//! `[vip]:port/proto` listed in [`XLB_VIPS6`] (found in one of two buckets,
//! [`vip_buckets6`], with its full address, port and protocol compared) is
//! sent to one of the nodes
//! hosting the service's endpoints, chosen from the flow table
//! [`XLB_CONNS6`] (per-CPU LRU keyed by the 64-bit [`flow_hash6`] of the
//! 5-tuple, the full tuple stored and compared in the entry) or else the
//! VIP's Maglev ring in
//! [`XLB_RINGS6`] (entries index [`XLB_REALS6`]), then wrapped in an outer
//! IPv6 header (ip6ip6: next header 41, hop limit [`crate::XLB_OUTER_TTL`],
//! traffic class copied from the inner packet, flow label 0, as Katran's
//! `create_v6_hdr`) from [`XlbConfig6::src_ip`] to the node's IPv6
//! address, and transmitted back out of the uplink (`XDP_TX`). The node's
//! own `xdp_lb` strips the outer header of an ip6ip6 packet whose inner
//! destination is a VIP address and passes it up the stack (DSR). Counters
//! are shared with IPv4 ([`crate::XLB_STATS`]).

use crate::maglev::fmix64;

/// External IPv6 VIPs: an array of [`XLB_VIP6_BUCKETS`] [`XlbVipBucket6`]s,
/// an open-addressed table the daemon fills (two-choice buckets of
/// [`XLB_VIP6_BUCKET_SLOTS`] slots, [`vip_buckets6`]), as IPv4's
/// [`crate::XLB_VIPS`]: the program reads it with inlined array lookups and
/// word compares, no hash-map helper call (no jhash of a 20-byte key).
/// (Builds before it kept the IPv6 VIPs in the hash map
/// [`XLB_VIPS6_V1`].)
pub const XLB_VIPS6: &str = "XLB_VIP6_BUCKETS";
/// The hash map `XlbVipKey6 → XlbVip` earlier builds pinned under this
/// name; a daemon starting over such pins copies its entries into
/// [`XLB_VIPS6`] and unpins it.
pub const XLB_VIPS6_V1: &str = "XLB_VIPS6";
/// Maglev rings of IPv6 VIPs: `u32` ring id → [`crate::MaglevTable`]
/// whose entries index [`XLB_REALS6`] (hash, not preallocated).
pub const XLB_RINGS6: &str = "XLB_RINGS6";
/// IPv6 reals (node addresses): array of [`MAX_XLB_REALS6`] [`XlbReal6`].
pub const XLB_REALS6: &str = "XLB_REALS6";
/// IPv6 connection table: [`flow_hash6`] of the flow (`u64`) →
/// [`XlbConn6`] (index in [`XLB_REALS6`] and the full [`XlbFlow6`]), an LRU
/// hash with one LRU list per CPU. An 8-byte key instead of the 40-byte
/// flow: the kernel hashes two words instead of ten per lookup. An entry
/// whose stored flow is not the packet's (two flows whose hashes collide)
/// is not the packet's: the packet is balanced as a new flow (Maglev ring)
/// and takes the entry over, so two flows are never mixed; a collision
/// costs the other flow its entry, as an LRU eviction does. (Builds before
/// it keyed the table by the flow itself, [`XLB_CONNS6_V1`].)
pub const XLB_CONNS6: &str = "XLB_FLOWS6";
/// The LRU hash `XlbFlow6 → XlbConn` earlier builds pinned under this
/// name; a daemon starting over such pins copies its entries into
/// [`XLB_CONNS6`] (keys hashed with [`flow_hash6`]) and unpins it.
pub const XLB_CONNS6_V1: &str = "XLB_CONNS6";
/// Per-CPU flow cache in front of [`XLB_CONNS6`] (the IPv6 form of
/// [`crate::XLB_FLOW_CACHE`]): a per-CPU array of
/// [`XLB_FLOW_CACHE6_SLOTS`] [`XlbConn6`]s, the slot of a flow the top bits
/// of its [`flow_hash6`]; a slot answers only for the flow it holds
/// (compared whole), and only repeats what this CPU read from or wrote to
/// [`XLB_CONNS6`]. Not pinned: each load starts empty.
pub const XLB_FLOW_CACHE6: &str = "XLB_FLOW_CACHE6";
/// Slots per CPU of [`XLB_FLOW_CACHE6`] (a power of two; 96 KiB per CPU).
pub const XLB_FLOW_CACHE6_SLOTS: u32 = 2048;

/// The [`XLB_FLOW_CACHE6`] slot of a flow whose [`XLB_CONNS6`] key is
/// `hash` ([`flow_hash6`]): its top bits.
pub const fn flow_cache6_slot(hash: u64) -> u32 {
    (hash >> (64 - XLB_FLOW_CACHE6_SLOTS.trailing_zeros())) as u32
}
/// IPv6 settings: array of one [`XlbConfig6`].
pub const XLB_CONFIG6: &str = "XLB_CONFIG6";

/// Maximum number of (VIP, port, protocol) entries plus one address
/// marker per VIP address in [`XLB_VIPS6`].
pub const MAX_XLB_VIPS6: u32 = 1024;
/// Buckets of [`XLB_VIPS6`] (a power of two): 4 slots for each of the
/// [`MAX_XLB_VIPS6`] entries, so a bucket is rarely full.
pub const XLB_VIP6_BUCKETS: u32 = 1024;
/// Slots per bucket of [`XLB_VIPS6`] (32 bytes each: two 64-byte cache
/// lines a bucket).
pub const XLB_VIP6_BUCKET_SLOTS: usize = 4;
/// Size of [`XLB_REALS6`].
pub const MAX_XLB_REALS6: u32 = 4096;
/// Capacity of [`XLB_CONNS6`] (over all CPUs).
pub const MAX_XLB_CONNS6: u32 = 262_144;

/// Key of an IPv6 VIP entry. `port` and `proto` 0 is the address marker
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
    /// 0 in a key; [`crate::XLB_VIP_USED`] in an occupied [`XlbVipSlot6`].
    pub pad: u8,
}

impl XlbVipKey6 {
    /// The key as the three little-endian words the program compares: the
    /// address's bytes 0..8 and 8..16 as native-endian words, then
    /// `port | proto << 16 | pad << 24`.
    pub const fn words(&self) -> [u64; 3] {
        let v = &self.vip;
        [
            u64::from_ne_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]),
            u64::from_ne_bytes([v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]]),
            self.port as u64 | (self.proto as u64) << 16 | (self.pad as u64) << 24,
        ]
    }
}

/// The two buckets of [`XLB_VIPS6`] a key of words `w` (see
/// [`XlbVipKey6::words`], `pad` 0) may sit in: bits of a two-multiply mix
/// of the words (the two may coincide). Shared by the program and the
/// daemon, so both look in the same place. Which bucket a key lands in
/// only decides where the daemon puts it: the program compares the full
/// address, port and protocol of every slot it reads, so a key whose
/// buckets collide with a VIP's never matches it.
pub const fn vip_buckets6(w: [u64; 3]) -> [u32; 2] {
    let x = (w[0] ^ w[2].rotate_left(40)).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ w[1];
    let h = (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    [
        (h >> 54) as u32 & (XLB_VIP6_BUCKETS - 1),
        (h >> 44) as u32 & (XLB_VIP6_BUCKETS - 1),
    ]
}

/// One slot of [`XLB_VIPS6`]: a key (with `pad` [`crate::XLB_VIP_USED`])
/// and its value; all zero when free. As words: the address (two), then
/// `port | proto << 16 | pad << 24 | ring << 32`, then `flags`. Written by
/// the daemon under the same rules as IPv4's [`crate::XlbVipSlot`] (a
/// program reading a slot while it is written sees the old key, or the new
/// key with ring 0 or the final ring; ring id 0 is never used).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbVipSlot6 {
    /// The key, `pad` = [`crate::XLB_VIP_USED`].
    pub key: XlbVipKey6,
    /// Its value.
    pub vip: crate::XlbVip,
    /// Always 0.
    pub pad: u32,
}

/// Value of [`XLB_VIPS6`]: [`XLB_VIP6_BUCKET_SLOTS`] slots, a key in any.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbVipBucket6 {
    /// The slots, free ones all zero.
    pub slots: [XlbVipSlot6; XLB_VIP6_BUCKET_SLOTS],
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

impl XlbFlow6 {
    /// The flow as the five little-endian words the program builds from
    /// the packet: the source's and the destination's bytes 0..8 and 8..16
    /// as native-endian words, then `sport | dport << 16 | proto << 32`
    /// (ports as on the wire).
    pub const fn words(&self) -> [u64; 5] {
        let s = &self.src;
        let d = &self.dst;
        [
            u64::from_ne_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]),
            u64::from_ne_bytes([s[8], s[9], s[10], s[11], s[12], s[13], s[14], s[15]]),
            u64::from_ne_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]),
            u64::from_ne_bytes([d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]]),
            self.sport as u64 | (self.dport as u64) << 16 | (self.proto as u64) << 32,
        ]
    }
}

/// Value of [`XLB_CONNS6`]: the real a flow is pinned to and the flow
/// itself (compared with the packet's on every lookup).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XlbConn6 {
    /// Index in [`XLB_REALS6`] the flow is pinned to.
    pub real: u32,
    /// Always 0.
    pub pad: u32,
    /// The flow (as its key in earlier builds, pad 0).
    pub flow: XlbFlow6,
}

/// Key of `flow` in [`XLB_CONNS6`]: [`flow_hash6_words`] of its words.
pub const fn flow_hash6(flow: &XlbFlow6) -> u64 {
    flow_hash6_words(flow.words())
}

/// The 64-bit key in [`XLB_CONNS6`] of the flow whose words
/// ([`XlbFlow6::words`]) are `w`: each word multiplied by its own odd
/// constant (independent, so the multiplies overlap), summed and folded.
/// Not keyed: a client who knows another flow's tuple can make its own
/// flow's key equal; that costs the other flow its entry (the stored flow
/// differs, so each packet is balanced as a new flow on the current ring:
/// the same real unless the ring changed), no more than flooding the LRU
/// with new flows does, and never sends one flow's packets to the other's
/// real. The kernel hashes this key again with its own random seed.
#[inline(always)]
pub const fn flow_hash6_words(w: [u64; 5]) -> u64 {
    let h = w[0].wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ w[1].wrapping_mul(0xbf58_476d_1ce4_e5b9)
        ^ w[2].wrapping_mul(0x94d0_49bb_1331_11eb).rotate_left(21)
        ^ w[3].wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(42)
        ^ w[4].wrapping_mul(0xc4ce_b9fe_1a85_ec53).rotate_left(32);
    h ^ (h >> 31)
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
    /// The uplink's MTU, as [`crate::XlbConfig::mtu`] (the same uplink):
    /// checked for ip6ip6 and 4in6. 0: not known, nothing checked.
    pub mtu: u16,
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
    unsafe impl aya::Pod for super::XlbVipSlot6 {}
    unsafe impl aya::Pod for super::XlbVipBucket6 {}
    unsafe impl aya::Pod for super::XlbReal6 {}
    unsafe impl aya::Pod for super::XlbFlow6 {}
    unsafe impl aya::Pod for super::XlbConn6 {}
    unsafe impl aya::Pod for super::XlbConfig6 {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<XlbVipKey6>(), 20);
        assert_eq!(size_of::<XlbVipSlot6>(), 32);
        assert_eq!(core::mem::offset_of!(XlbVipSlot6, vip), 20);
        assert_eq!(size_of::<XlbVipBucket6>(), 128);
        assert_eq!(size_of::<XlbReal6>(), 16);
        assert_eq!(size_of::<XlbFlow6>(), 40);
        assert_eq!(size_of::<XlbConn6>(), 48);
        assert_eq!(core::mem::offset_of!(XlbConn6, flow), 8);
        assert_eq!(size_of::<XlbConfig6>(), 24);
    }

    fn key(vip: [u8; 16], port: u16, proto: u8) -> XlbVipKey6 {
        XlbVipKey6 {
            vip,
            port: port.to_be(),
            proto,
            pad: 0,
        }
    }

    #[test]
    fn vip_buckets6_are_in_range_and_spread() {
        // VIPs in one /64 (last byte apart), across /48s (byte 5 apart),
        // and TCP beside UDP on the same address and port.
        let mut seen = [false; XLB_VIP6_BUCKETS as usize];
        let mut n = 0;
        for i in 0..256u32 {
            let mut a = [0x20, 1, 0xd, 0xb8, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            a[15] = i as u8;
            let mut b = a;
            b[15] = 1;
            b[5] = i as u8;
            for vip in [a, b] {
                let k = key(vip, 443, 6);
                let [x, y] = vip_buckets6(k.words());
                assert!(x < XLB_VIP6_BUCKETS && y < XLB_VIP6_BUCKETS);
                if !seen[x as usize] {
                    seen[x as usize] = true;
                    n += 1;
                }
                assert_ne!(vip_buckets6(key(vip, 443, 17).words()), [x, y]);
                assert_ne!(vip_buckets6(key(vip, 444, 6).words()), [x, y]);
            }
        }
        assert!(n > 380, "512 VIPs in {n} first buckets");
        let k = XlbVipKey6 {
            vip: [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0],
            port: 3,
            proto: 4,
            pad: crate::XLB_VIP_USED,
        };
        assert_eq!(k.words(), [1, 2, 3 | 4 << 16 | 1 << 24]);
    }

    #[test]
    fn a_slots_third_word_holds_the_key_tail_and_the_ring() {
        let slot = XlbVipSlot6 {
            key: XlbVipKey6 {
                vip: [0; 16],
                port: 0x0102,
                proto: 6,
                pad: crate::XLB_VIP_USED,
            },
            vip: crate::XlbVip {
                ring: 0x0a0b_0c0d,
                flags: 0,
            },
            pad: 0,
        };
        // SAFETY: 32 bytes, 8-aligned, integers only.
        let w: [u64; 4] = unsafe { core::mem::transmute(slot) };
        assert_eq!(w[2], slot.key.words()[2] | 0x0a0b_0c0d << 32);
    }

    #[test]
    fn flow_hash6_depends_on_every_part_of_the_flow_and_spreads_clients() {
        let a = XlbFlow6 {
            src: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            dst: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            sport: 3,
            dport: 4,
            proto: 6,
            pad: [0; 3],
        };
        let mut src = a.src;
        src[15] = 9;
        let mut high = a.src;
        high[0] = 0x30;
        for b in [
            XlbFlow6 { sport: 5, ..a },
            XlbFlow6 { dport: 5, ..a },
            XlbFlow6 { proto: 17, ..a },
            XlbFlow6 { src, ..a },
            XlbFlow6 { src: high, ..a },
            XlbFlow6 { dst: src, ..a },
            XlbFlow6 { dst: high, ..a },
            // Source and destination swapped.
            XlbFlow6 {
                src: a.dst,
                dst: a.src,
                ..a
            },
        ] {
            assert_ne!(flow_hash6(&a), flow_hash6(&b), "{b:?}");
        }
        assert_eq!(
            flow_hash6(&a),
            flow_hash6_words(a.words()),
            "one function for the kernel's words and userspace's flows"
        );
        // 2^16 clients of one /64 on 16 ports: no two keys alike.
        extern crate std;
        let mut keys = std::collections::BTreeSet::new();
        for i in 0..4096u16 {
            for port in 0..16u16 {
                let mut src = a.src;
                src[12..14].copy_from_slice(&i.to_be_bytes());
                src[14..16].copy_from_slice(&(i ^ 0x5a5a).to_be_bytes());
                let f = XlbFlow6 {
                    src,
                    sport: (40000 + port).to_be(),
                    ..a
                };
                assert!(keys.insert(flow_hash6(&f)), "{f:?}");
            }
        }
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
