//! ICMP "too big" answers for VIP packets that no longer fit the uplink
//! once tunnelled (Katran's `ICMP_TOOBIG_GENERATION`: `send_icmp_too_big`,
//! `send_icmp4_too_big`, `send_icmp6_too_big` in `handle_icmp.h`): the
//! packet is cut to the quote Katran keeps, new Ethernet, IP and ICMP
//! headers are put in front of it and the frame goes back to the client
//! (`XDP_TX`, MACs swapped, from the VIP). The MTU announced is the
//! uplink's minus the tunnel's overhead (20 bytes for IPIP, 40 for 4in6
//! and ip6ip6), so the client's next packets fit once encapsulated.
//!
//! IPv4 (IPIP, 4in6): "fragmentation needed" (type 3 code 4, RFC 1191)
//! only for a packet with DF set; without DF a router would fragment,
//! which XDP cannot, so the packet is dropped (as Katran does without
//! `ICMP_TOOBIG_GENERATION`). IPv6 (ip6ip6): "Packet Too Big" (type 2,
//! RFC 4443) always, announcing at least 1,280 bytes (RFC 8200's minimum
//! link MTU). Either way counted as `too_big_dropped`. The uplink MTU is
//! `XlbConfig::mtu` / `XlbConfig6::mtu`; 0 (not set) checks nothing.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_TX},
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use proxy_common::XLB_OUTER_TTL;

use crate::xdp_deny::{load16, load32, load64, ETH_P_IP};
use crate::xdp_lb::{drop_counted, store16, store32, store64, Count};
use crate::xdp_lb6::ETH_P_IPV6;

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const IP6_LEN: usize = 40;
const ICMP_LEN: usize = 8;
/// Bytes of the IPv4 packet an ICMP answer quotes (Katran's
/// `ICMP_TOOBIG_SIZE` of 98 minus the Ethernet header): its header and
/// the first 64 bytes after it.
pub const QUOTE4: usize = 84;
/// Bytes of the IPv6 packet a Packet Too Big quotes (Katran's
/// `ICMP6_TOOBIG_SIZE` of 262 minus the Ethernet header).
pub const QUOTE6: usize = 248;
/// `IPPROTO_ICMPV6`.
const NEXTHDR_ICMP6: u8 = 58;
/// RFC 8200's minimum link MTU: the least a Packet Too Big announces.
const IPV6_MIN_MTU: usize = 1280;

/// Whether an IPv4 packet of `tot_len` bytes still fits an uplink of
/// `mtu` bytes (0: unknown) with `overhead` bytes of tunnel in front:
/// `None` if it does, else the verdict for it (the ICMP answer sent, or
/// dropped without DF).
#[inline(always)]
pub fn check4(ctx: &XdpContext, tot_len: usize, overhead: usize, mtu: u16) -> Option<u32> {
    let mtu = mtu as usize;
    if mtu == 0 || tot_len + overhead <= mtu {
        return None;
    }
    Some(answer4(ctx, mtu.saturating_sub(overhead)))
}

/// Whether an IPv6 packet of `len` bytes (header included) still fits an
/// uplink of `mtu` bytes (0: unknown) with the 40-byte ip6ip6 header in
/// front: `None` if it does, else the verdict (Packet Too Big sent).
#[inline(always)]
pub fn check6(ctx: &XdpContext, len: usize, mtu: u16) -> Option<u32> {
    let mtu = mtu as usize;
    if mtu == 0 || len + IP6_LEN <= mtu {
        return None;
    }
    let announce = mtu.saturating_sub(IP6_LEN);
    Some(answer6(
        ctx,
        if announce < IPV6_MIN_MTU {
            IPV6_MIN_MTU
        } else {
            announce
        },
    ))
}

/// Cuts the frame to `keep` bytes and opens `room` bytes in front of it.
/// False when the kernel refuses either (the caller drops).
#[inline(always)]
fn reshape(ctx: &XdpContext, keep: usize, room: usize) -> bool {
    let len = ctx.data_end() - ctx.data();
    if len < keep {
        return false;
    }
    // SAFETY: ctx.ctx is the program's context.
    unsafe {
        bpf_xdp_adjust_tail(ctx.ctx, -((len - keep) as i32)) == 0
            && bpf_xdp_adjust_head(ctx.ctx, -(room as i32)) == 0
    }
}

/// One's complement sum (folded to 16 bits, inverted: the checksum to
/// store natively) of `len` bytes at `p` (a multiple of 4, at most 512)
/// plus `seed`, by `bpf_csum_diff`.
///
/// # Safety
/// `p + len` must be at or below `data_end` (checked by the caller).
#[inline(always)]
unsafe fn checksum(p: usize, len: usize, seed: u32) -> u16 {
    // SAFETY: in bounds (caller); the helper only reads.
    let sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, len as u32, seed) };
    let mut s = sum as u64 & 0xffff_ffff;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// Writes at `d` the Ethernet header of the answer to the frame at `old`
/// (its source MAC as destination, its destination MAC as source) with
/// `ether_type`; both MACs are read before either is written (the headers
/// may overlap).
///
/// # Safety
/// `d + 14` and `old + 14` must be at or below `data_end` (checked by the
/// caller).
#[inline(always)]
unsafe fn turn_around(d: usize, old: usize, ether_type: u16) {
    // SAFETY: in bounds (caller).
    unsafe {
        let (to01, to25) = (load16(old + 6), load32(old + 8));
        let (from03, from45) = (load32(old), load16(old + 4));
        store16(d, to01);
        store32(d + 2, to25);
        store32(d + 6, from03);
        store16(d + 10, from45);
        store16(d + 12, ether_type);
    }
}

/// Turns the frame into the start of an answer: cut to the Ethernet
/// header and `quote` bytes of its packet, `room` bytes opened in front
/// for the answer's IP and ICMP headers, and the answer's Ethernet header
/// (MACs swapped, `ether_type`) written at the new start. Returns that
/// start, with `room + 14 + quote` bytes in bounds (the old frame at
/// `room`, its addresses still to be read); or the verdict when the
/// kernel refuses to resize (dropped, counted) or the bounds cannot be
/// proven (dropped).
#[inline(always)]
fn open_answer(ctx: &XdpContext, quote: usize, room: usize, ether_type: u16) -> Result<usize, u32> {
    if !reshape(ctx, ETH_LEN + quote, room) {
        return Err(drop_counted(Count::TooBig));
    }
    let d = ctx.data();
    if d + room + ETH_LEN + quote > ctx.data_end() {
        return Err(XDP_DROP);
    }
    // SAFETY: d + 14 and d + room + 14 are in bounds (checked above).
    unsafe { turn_around(d, d + room, ether_type) };
    Ok(d)
}

/// "Fragmentation needed" for the IPv4 packet in the frame, announcing
/// `next_mtu`, if it has DF set; else dropped. The answer: Ethernet with
/// the MACs swapped, IPv4 from the packet's destination (the VIP) to its
/// source (TOS 0, id 0, no fragment flags, TTL 64), ICMP type 3 code 4
/// with `next_mtu`, then the first [`QUOTE4`] bytes of the packet.
#[inline(never)]
fn answer4(ctx: &XdpContext, next_mtu: usize) -> u32 {
    let d = ctx.data();
    if d + ETH_LEN + IP_LEN > ctx.data_end() {
        return drop_counted(Count::TooBig);
    }
    // SAFETY: the flags byte is inside the frame (checked above).
    let df = unsafe { *((d + ETH_LEN + 6) as *const u8) } & 0x40 != 0;
    if !df {
        return drop_counted(Count::TooBig);
    }
    const ROOM: usize = IP_LEN + ICMP_LEN;
    let d = match open_answer(ctx, QUOTE4, ROOM, ETH_P_IP) {
        Ok(d) => d,
        Err(verdict) => return verdict,
    };
    // SAFETY: every access is below d + 126 <= data_end (open_answer).
    // The old frame starts at d + 28: its addresses are read before the
    // new headers (d + 14 .. d + 42) overwrite its Ethernet header.
    unsafe {
        let old = d + ROOM;
        let (src, dst) = (load32(old + ETH_LEN + 12), load32(old + ETH_LEN + 16));
        let ip = d + ETH_LEN;
        let tot = ((IP_LEN + ICMP_LEN + QUOTE4) as u16).to_be_bytes();
        store32(ip, u32::from_ne_bytes([0x45, 0, tot[0], tot[1]]));
        store32(ip + 4, 0);
        store32(ip + 8, u32::from_ne_bytes([XLB_OUTER_TTL, 1, 0, 0]));
        // From the VIP (the packet's destination) to the client.
        store32(ip + 12, dst);
        store32(ip + 16, src);
        let c = checksum(ip, IP_LEN, 0).to_ne_bytes();
        store32(ip + 8, u32::from_ne_bytes([XLB_OUTER_TTL, 1, c[0], c[1]]));
        let icmp = ip + IP_LEN;
        let mtu = (next_mtu as u16).to_be_bytes();
        store32(icmp, u32::from_ne_bytes([3, 4, 0, 0]));
        store32(icmp + 4, u32::from_ne_bytes([0, 0, mtu[0], mtu[1]]));
        let c = checksum(icmp, ICMP_LEN + QUOTE4, 0).to_ne_bytes();
        store16(icmp + 2, u16::from_ne_bytes(c));
    }
    drop_counted(Count::TooBig);
    XDP_TX
}

/// Packet Too Big for the IPv6 packet in the frame, announcing `mtu`:
/// Ethernet with the MACs swapped, IPv6 from the packet's destination (the
/// VIP) to its source (traffic class and flow label 0, hop limit 64),
/// ICMPv6 type 2 code 0 with `mtu`, then the first [`QUOTE6`] bytes of the
/// packet; the checksum covers RFC 8200's pseudo-header.
#[inline(never)]
fn answer6(ctx: &XdpContext, mtu: usize) -> u32 {
    const ROOM: usize = IP6_LEN + ICMP_LEN;
    let d = match open_answer(ctx, QUOTE6, ROOM, ETH_P_IPV6) {
        Ok(d) => d,
        Err(verdict) => return verdict,
    };
    // SAFETY: every access is below d + 310 <= data_end (open_answer).
    // The old frame starts at d + 48: its addresses are read before the
    // new headers (d + 14 .. d + 62) overwrite its Ethernet header.
    unsafe {
        let old = d + ROOM;
        let a = old + ETH_LEN + 8;
        let (s0, s1, t0, t1) = (load64(a), load64(a + 8), load64(a + 16), load64(a + 24));
        let ip = d + ETH_LEN;
        let len = ((ICMP_LEN + QUOTE6) as u16).to_be_bytes();
        store32(ip, u32::from_ne_bytes([0x60, 0, 0, 0]));
        store32(
            ip + 4,
            u32::from_ne_bytes([len[0], len[1], NEXTHDR_ICMP6, XLB_OUTER_TTL]),
        );
        store64(ip + 8, t0);
        store64(ip + 16, t1);
        store64(ip + 24, s0);
        store64(ip + 32, s1);
        let icmp = ip + IP6_LEN;
        store32(icmp, u32::from_ne_bytes([2, 0, 0, 0]));
        store32(icmp + 4, (mtu as u32).to_be());
        // Pseudo-header: both addresses, the upper-layer length and the
        // next header, as 16-bit words in memory order.
        let addrs = bpf_csum_diff(core::ptr::null_mut(), 0, (ip + 8) as *mut u32, 32, 0);
        let extra = u16::from_ne_bytes(len) as u32 + u16::from_ne_bytes([0, NEXTHDR_ICMP6]) as u32;
        let seed = addrs as u64 & 0xffff_ffff;
        let seed = (seed & 0xffff) + (seed >> 16) + extra as u64;
        let c = checksum(icmp, ICMP_LEN + QUOTE6, seed as u32).to_ne_bytes();
        store16(icmp + 2, u16::from_ne_bytes(c));
    }
    drop_counted(Count::TooBig);
    XDP_TX
}
