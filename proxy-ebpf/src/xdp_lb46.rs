//! 4in6: an IPv4 VIP's packet tunnelled to an IPv6 real (Katran's
//! `encap_v6(..., is_ipv6 = false)` with `create_encap_ipv6_src` and
//! `create_v6_hdr`): an outer IPv6 header (next header 4, hop limit 64,
//! traffic class = the inner TOS, flow label 0, payload length = the inner
//! packet, source = this node's /96 + client address XOR client port, so
//! routers hashing the outer header (ECMP) and the real's RSS spread flows;
//! Katran uses a fixed prefix, this node's own keeps the source inside its
//! uplink's prefix for the router's source address validation) and
//! a new Ethernet header to the IPv6 gateway, then `XDP_TX`. Entered from
//! `xdp_lb.rs`'s `forward` for a real flagged `XLB_REAL_IPV6`; the flow
//! table, ring, ICMP and fragment handling are the IPv4 path's.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_TX},
    helpers::bpf_xdp_adjust_head,
    programs::XdpContext,
};
use proxy_common::{XlbFlow, XLB_OUTER_TTL};

use crate::maps::XLB_REALS_4IN6;
use crate::maps6::XLB_CONFIG6;
use crate::xdp_deny::{load16, load32, load64, ETH_P_IP};
use crate::xdp_lb::{drop_counted, stats, store16, store32, store64, Count};
use crate::xdp_lb6::{ETH_P_IPV6, IP6_LEN};

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const NEXTHDR_IPIP: u8 = 4;

/// Tunnels the IPv4 packet (`tot_len` bytes from its IPv4 header) of
/// `flow` to the IPv6 real at `index` of `XLB_REALS4IN6`, from the outer
/// source (the first 96 bits of `XLB_CONFIG6`'s address, then Katran's
/// `create_encap_ipv6_src` suffix: client address XOR client port), to
/// `XLB_CONFIG6`'s gateway MAC. Without an IPv6 uplink (source or gateway
/// MAC all zero) or an address at `index`: dropped, counted as
/// `no_real_dropped` (never sent to a wrong MAC or address).
#[inline(always)]
pub fn encapsulate_4in6(ctx: &XdpContext, index: u32, flow: &XlbFlow, tot_len: usize) -> u32 {
    let Some(cfg) = XLB_CONFIG6.get_ptr(0) else {
        return drop_counted(Count::NoReal);
    };
    let Some(real) = XLB_REALS_4IN6.get_ptr(index) else {
        return drop_counted(Count::NoReal);
    };
    // SAFETY: map values: `XlbConfig6` is 24 bytes (source at 0, MAC at
    // 16), `XlbReal6` 16; array values are 8-aligned.
    let (src0, src1, gw03, gw45, dst0, dst1) = unsafe {
        let c = cfg as *const u64;
        let m = (cfg as *const u8).add(16);
        let r = real as *const u64;
        (
            *c,
            *c.add(1),
            *(m as *const u32),
            *(m.add(4) as *const u16),
            *r,
            *r.add(1),
        )
    };
    if src0 | src1 == 0 || (gw03 == 0 && gw45 == 0) || dst0 | dst1 == 0 {
        return drop_counted(Count::NoReal);
    }
    // SAFETY: as above (`mtu` at offset 22).
    let mtu = unsafe { (*cfg).mtu };
    if let Some(v) = crate::xdp_toobig::check4(ctx, tot_len, IP6_LEN, mtu) {
        return v;
    }
    if tot_len > 0xffff {
        return drop_counted(Count::TooBig);
    }
    // SAFETY: ctx.ctx is the program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(IP6_LEN as i32)) } != 0 {
        return drop_counted(Count::TooBig);
    }
    let d = ctx.data();
    let e = ctx.data_end();
    // The new headers overlay the 40 new bytes and the old Ethernet
    // header; the old destination MAC (d + 40) becomes the source, the
    // inner TOS (d + 55) becomes the traffic class.
    if d + IP6_LEN + ETH_LEN + IP_LEN > e {
        return XDP_DROP;
    }
    // Katran's `src ^ port16[0]`: the client address and port as on the
    // wire, the port on the address's first two bytes.
    let suffix = flow.src ^ flow.sport as u32;
    // SAFETY: every access is below d + 74 <= e (checked above); whole
    // words (no byte loops).
    unsafe {
        let (mac01, mac25) = (load16(d + IP6_LEN), load32(d + IP6_LEN + 2));
        let tos = *((d + IP6_LEN + ETH_LEN + 1) as *const u8);
        store64(d, gw03 as u64 | (gw45 as u64) << 32 | (mac01 as u64) << 48);
        store32(d + 8, mac25);
        store16(d + 12, ETH_P_IPV6);
        let ip = d + ETH_LEN;
        let len = (tot_len as u16).to_be_bytes();
        store32(ip, u32::from_ne_bytes([0x60 | tos >> 4, (tos & 0x0f) << 4, 0, 0]));
        store32(
            ip + 4,
            u32::from_ne_bytes([len[0], len[1], NEXTHDR_IPIP, XLB_OUTER_TTL]),
        );
        store64(ip + 8, src0);
        store64(ip + 16, (src1 & 0xffff_ffff) | (suffix as u64) << 32);
        store64(ip + 24, dst0);
        store64(ip + 32, dst1);
    }
    if let Some(s) = stats() {
        s.packets += 1;
        s.bytes += tot_len as u64;
    }
    XDP_TX
}

/// `xdp_lb_bench`'s undo of an outer IPv6 header (ip6ip6 or 4in6): the
/// Ethernet header moved 40 bytes up, with the EtherType of the inner
/// packet (IPv4 under next header 4), and the head advanced by 40.
/// Returns `verdict`, or `XDP_DROP` if the frame is too short or the head
/// cannot move.
#[inline(always)]
pub fn undo_tunnel6(ctx: &XdpContext, verdict: u32) -> u32 {
    let d = ctx.data();
    if d + ETH_LEN + IP6_LEN > ctx.data_end() {
        return XDP_DROP;
    }
    // SAFETY: reads and writes below d + 54 <= data_end (checked).
    unsafe {
        let (a, b, t) = (load64(d), load32(d + 8), load16(d + 12));
        let next = *((d + ETH_LEN + 6) as *const u8);
        store64(d + IP6_LEN, a);
        store32(d + IP6_LEN + 8, b);
        store16(
            d + IP6_LEN + 12,
            if next == NEXTHDR_IPIP { ETH_P_IP } else { t },
        );
    }
    // SAFETY: ctx.ctx is the program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, IP6_LEN as i32) } != 0 {
        return XDP_DROP;
    }
    verdict
}
