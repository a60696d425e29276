//! XDP fast drop of sources that an AuthorizationPolicy DENY rule names by
//! `ipBlocks`/`remoteIpBlocks` (IPv4: the source's /16 entry, then its
//! /24 slot — a DIR-16-8 table, `proxy_common::deny4` — else one
//! exact-length hash per length; IPv6: three buckets compared in
//! place, then exact-length hashes, [`crate::deny6`]; each family's LPM
//! trie past a few lengths), each drop counted per prefix; and `xdp_drop`, the
//! drop-everything and transmit-everything floors `cargo xtask bench xdp`
//! compares against.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    macros::xdp,
    maps::lpm_trie::Key,
    programs::XdpContext,
};

use proxy_common::{
    deny4_kind, deny_mode, deny_v4_payload_value, DenyConfig, DenyDstKey, DenyV4Key,
    DENY_MAX_HASHED_LENGTHS, DENY_SCOPED, DENY_V4_BLOCK_SLOTS, DENY_V4_DIR24_LEAF,
    DENY_V4_KIND_SHIFT, DENY_V4_PAYLOAD_SHIFT,
};

use crate::maps::{
    DENY_CONFIG, DENY_DST, DENY_STATS, DENY_V4, DENY_V4_DIR24, DENY_V4_LEN, DENY_V4_SLASH16,
};

const ETH_LEN: usize = 14;

/// Drops IPv4 and IPv6 packets whose source matches a deny prefix; passes
/// the rest unchanged (including truncated and other frames).
#[xdp]
pub fn xdp_deny(ctx: XdpContext) -> u32 {
    if denied(&ctx) {
        XDP_DROP
    } else {
        XDP_PASS
    }
}

/// Drops every packet: the cost floor of an XDP program.
#[xdp]
pub fn xdp_drop(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

/// Transmits every packet unchanged: the floor of a program that answers
/// `XDP_TX` (in live-frame test runs the kernel's transmit path is part of
/// every such figure).
#[xdp]
pub fn xdp_tx(_ctx: XdpContext) -> u32 {
    XDP_TX
}

/// Whether the frame's IPv4/IPv6 source is in a deny trie (for a scoped
/// prefix: and the frame opens a TCP connection to a destination the
/// prefix protects); counts the drop on the prefix's counter.
#[inline(always)]
pub fn denied(ctx: &XdpContext) -> bool {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + ETH_LEN > end {
        return false;
    }
    // SAFETY: bounds checked above against data_end; one 16-bit load
    // (x86 and arm64 kernels allow unaligned packet loads).
    let ether_type = unsafe { load16(start + 12) };
    let (hit, v6) = match ether_type {
        ETH_P_IP => {
            if start + ETH_LEN + 20 > end {
                return false;
            }
            // SAFETY: bounds checked above (source at IPv4 offset 12); one
            // 32-bit load, the address stays in network byte order.
            let host = u32::from_be(unsafe { load32(start + ETH_LEN + 12) });
            // One array load decides most packets: no prefix overlaps the
            // source's /16 (an empty list leaves every entry 0).
            let entry = DENY_V4_SLASH16.get(host >> 16).copied().unwrap_or(0);
            if entry == 0 {
                return false;
            }
            (direct(host, entry), false)
        }
        ETH_P_IPV6 => {
            let cfg = DENY_CONFIG.get(0).copied().unwrap_or(DenyConfig::default());
            if cfg.v6_mode == deny_mode::EMPTY || start + ETH_LEN + 40 > end {
                return false;
            }
            // SAFETY: bounds checked above (source at IPv6 offset 8); two
            // 64-bit loads, bytes as in the packet (read before the map
            // lookups, after which the verifier forgets the check).
            let words = unsafe {
                [
                    load64(start + ETH_LEN + 8),
                    load64(start + ETH_LEN + 16),
                ]
            };
            let hit = if cfg.v6_mode == deny_mode::BY_LENGTH6 {
                crate::deny6::lookup(words)
            } else {
                // TRIE, or an earlier daemon's BY_SUMMARY6 until the next
                // sync: the trie holds every prefix.
                crate::deny6::trie(words)
            };
            (hit, true)
        }
        _ => (None, false),
    };
    let Some(value) = hit else {
        return false;
    };
    let index = value & !DENY_SCOPED;
    if value & DENY_SCOPED != 0 && !protects(ctx, v6, index) {
        return false;
    }
    if let Some(n) = DENY_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
    true
}

/// TCP flag bits in the header's 14th byte.
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// For a scoped prefix (counter `index`): whether the frame is a TCP SYN
/// without ACK (a connection being opened, what an AuthorizationPolicy
/// decides on) to a destination `DENY_DST` lists under `index`. IPv4 with
/// options is parsed; IPv6 with extension headers, fragments and other
/// protocols are not dropped here (the node proxy still enforces the
/// policy on what it handles).
#[inline(always)]
fn protects(ctx: &XdpContext, v6: bool, index: u32) -> bool {
    let start = ctx.data();
    let end = ctx.data_end();
    let mut key = DenyDstKey {
        addr: [0; 16],
        index,
    };
    let flags_at;
    if v6 {
        if start + ETH_LEN + 40 + 14 > end {
            return false;
        }
        // SAFETY: bounds checked above (next header at 6, destination at
        // 24..40, TCP flags at 40 + 13).
        unsafe {
            if *((start + ETH_LEN + 6) as *const u8) != 6 {
                return false;
            }
            key.addr = *((start + ETH_LEN + 24) as *const [u8; 16]);
        }
        flags_at = start + ETH_LEN + 40 + 13;
    } else {
        // Checked again: the verifier forgets the caller's check across the
        // trie lookup (packet pointers are reloaded from the context).
        if start + ETH_LEN + 20 > end {
            return false;
        }
        // SAFETY: bounds checked above (20 bytes of IPv4 header).
        let (vihl, frag, proto, dst) = unsafe {
            (
                *((start + ETH_LEN) as *const u8),
                *((start + ETH_LEN + 6) as *const [u8; 2]),
                *((start + ETH_LEN + 9) as *const u8),
                *((start + ETH_LEN + 16) as *const [u8; 4]),
            )
        };
        // Not TCP, or a non-first fragment (no TCP header).
        if proto != 6 || u16::from_be_bytes(frag) & 0x1fff != 0 {
            return false;
        }
        let ihl = ((vihl & 0x0f) as usize) * 4;
        if ihl < 20 {
            return false;
        }
        if start + ETH_LEN + ihl + 14 > end {
            return false;
        }
        key.addr[10] = 0xff;
        key.addr[11] = 0xff;
        key.addr[12] = dst[0];
        key.addr[13] = dst[1];
        key.addr[14] = dst[2];
        key.addr[15] = dst[3];
        flags_at = start + ETH_LEN + ihl + 13;
    }
    // SAFETY: flags_at + 1 <= end checked in the branch that set it.
    let flags = unsafe { *(flags_at as *const u8) };
    if flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return false;
    }
    // SAFETY: only tested for presence.
    unsafe { DENY_DST.get(&key) }.is_some()
}

/// The value of the longest IPv4 deny prefix containing `src` (host byte
/// order) from its non-zero `DENY_V4_SLASH16` `entry`: the entry itself (a
/// leaf), its `DENY_V4_DIR24` block's slot for the source's /24, else the
/// length path ([`by_length`]) — see `proxy_common::deny4`.
#[inline(always)]
fn direct(src: u32, entry: u64) -> Option<u32> {
    let payload = (entry >> DENY_V4_PAYLOAD_SHIFT) as u32 & 0xffff;
    let kind = entry >> DENY_V4_KIND_SHIFT;
    if kind == deny4_kind::LEAF {
        return Some(deny_v4_payload_value(payload));
    }
    if kind == deny4_kind::BLOCK {
        // A block index past the array (a corrupt entry) reads nothing and
        // takes the length path, which is exact.
        let slot = DENY_V4_DIR24
            .get(payload * DENY_V4_BLOCK_SLOTS + ((src >> 8) & 0xff))
            .copied();
        match slot {
            Some(0) => return None,
            Some(s) if s & DENY_V4_DIR24_LEAF != 0 => return Some(s & !DENY_V4_DIR24_LEAF),
            _ => {}
        }
    }
    by_length(src, entry)
}

/// The counter of the longest prefix in `DENY_V4_LEN` containing `src`
/// (host byte order), trying only the lengths of the source's
/// `DENY_V4_SLASH16` `entry`, longest first (the entry names the longest,
/// so the common one-length case computes no bit index): one hash lookup
/// per length. Past [`DENY_MAX_HASHED_LENGTHS`] lengths the rest is looked
/// up in the trie (which holds every prefix), so no prefix is skipped.
#[inline(always)]
fn by_length(src: u32, entry: u64) -> Option<u32> {
    let mut left = entry & SLASH16_LENGTHS;
    let mut len = (entry >> SLASH16_LONGEST_SHIFT) as u32 & 63;
    let mut n = 0u32;
    while n < DENY_MAX_HASHED_LENGTHS {
        if n > 0 {
            if left == 0 {
                return None;
            }
            len = top_bit(left);
        }
        // In range for the shifts below (a corrupt entry cannot make the
        // program shift by 33 or more).
        let len = len & 63;
        if len > 32 {
            return None;
        }
        left &= !(1u64 << len);
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        // Two 32-bit stores, read back by the kernel's hash as two words.
        let key = DenyV4Key {
            prefix_len: len,
            addr: src & mask,
        };
        // SAFETY: copied out at once.
        if let Some(v) = unsafe { DENY_V4_LEN.get(&key) } {
            return Some(*v);
        }
        n += 1;
    }
    if left == 0 {
        return None;
    }
    DENY_V4.get(Key::new(32, src.to_be())).copied()
}

/// Bits of a `DENY_V4_SLASH16` entry: the lengths present (0–32).
const SLASH16_LENGTHS: u64 = (1u64 << 33) - 1;
/// Where in the entry the longest of them is.
const SLASH16_LONGEST_SHIFT: u32 = proxy_common::DENY_SLASH16_LONGEST_SHIFT;

/// Index of the highest set bit of `x` (`0 < x < 2^33`), without branches
/// (BPF has neither count-leading-zeros nor conditional moves, and every
/// branch here would multiply the verifier's states): a binary search whose
/// steps are computed as `(t + 2^k - 1) >> k`, 1 when `t` is non-zero.
#[inline(always)]
fn top_bit(x: u64) -> u32 {
    // Bit 32 (a /32 prefix) is the only one above the low word.
    let hi = (x >> 32) & 1;
    let mut x = x & 0xffff_ffff;
    let mut n = 0u64;
    let b = ((x >> 16) + 0xffff) >> 16 << 4;
    x >>= b;
    n += b;
    let b = ((x >> 8) + 0xff) >> 8 << 3;
    x >>= b;
    n += b;
    let b = ((x >> 4) + 0xf) >> 4 << 2;
    x >>= b;
    n += b;
    let b = ((x >> 2) + 0x3) >> 2 << 1;
    x >>= b;
    n += b;
    n += ((x >> 1) + 1) >> 1;
    // 32 when bit 32 is set, else n.
    let all = hi.wrapping_neg();
    ((32 & all) | (n & !all)) as u32
}

/// EtherType IPv4 as a native-endian load of the frame's bytes 12..14.
pub(crate) const ETH_P_IP: u16 = u16::from_ne_bytes([0x08, 0x00]);
/// EtherType IPv6, likewise.
const ETH_P_IPV6: u16 = u16::from_ne_bytes([0x86, 0xdd]);

/// One 16-bit load from packet memory at `p`, bytes as in the packet.
///
/// # Safety
/// `p + 2` must be at or below `data_end` (checked by the caller).
#[inline(always)]
pub(crate) unsafe fn load16(p: usize) -> u16 {
    // SAFETY: in bounds (caller); XDP packet loads may be unaligned on the
    // architectures Strait supports (the verifier allows them).
    unsafe { core::ptr::read_volatile(p as *const u16) }
}

/// One 32-bit load from packet memory at `p`, bytes as in the packet.
///
/// # Safety
/// `p + 4` must be at or below `data_end` (checked by the caller).
#[inline(always)]
pub(crate) unsafe fn load32(p: usize) -> u32 {
    // SAFETY: as `load16`.
    unsafe { core::ptr::read_volatile(p as *const u32) }
}

/// One 64-bit load from packet memory at `p`, bytes as in the packet.
///
/// # Safety
/// `p + 8` must be at or below `data_end` (checked by the caller).
#[inline(always)]
pub(crate) unsafe fn load64(p: usize) -> u64 {
    // SAFETY: as `load16`.
    unsafe { core::ptr::read_volatile(p as *const u64) }
}
