//! XDP load balancer for external VIPs (Katran's `balancer_kern.c` design;
//! see `proxy_common::xlb` for the maps): deny check, VIP lookup, sticky
//! flow table, Maglev ring, IPIP encapsulation, `XDP_TX`.
//!
//! Packets not to a VIP pass untouched. Packets to a VIP that cannot be
//! balanced safely are dropped and counted: IP options or a bad length
//! (Katran drops `ihl != 5`), fragments (a non-first fragment carries no
//! ports; Katran drops fragments to VIPs), truncated headers, no healthy
//! real. ICMP "fragmentation needed" about a VIP's flow (sent to the VIP by
//! a router on the client's path, since reals answer from the VIP) is
//! tunnelled to the real that serves the flow, so path MTU discovery works
//! (Katran's `parse_icmp`); other ICMP passes.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::bpf_xdp_adjust_head,
    macros::xdp,
    programs::XdpContext,
};
use proxy_common::{
    flow_position, proto, XlbConfig, XlbConn, XlbFlow, XlbStats, XlbVipKey, MAGLEV_TABLE_SIZE,
    XLB_ADDRESS_ONLY, XLB_OUTER_TTL,
};

use crate::maps::{XLB_CONFIG, XLB_CONNS, XLB_REALS, XLB_RINGS, XLB_STATS, XLB_VIPS};

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_IPIP: u8 = 4;

/// The uplink program: sources in the deny tries are dropped, VIP traffic
/// is balanced, everything else passes.
#[xdp]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    if crate::xdp_deny::denied(&ctx) {
        return XDP_DROP;
    }
    balance(&ctx)
}

/// The real's side (Katran's `decap_kern.c`): an IPIP packet whose inner
/// destination is a VIP address loses its outer header and goes up the
/// stack as the client sent it (the node holds the VIP on a local
/// interface and answers the client directly). IPIP to anything else
/// passes untouched (the kernel's own tunnel devices, if any, see it).
#[inline(always)]
fn decapsulate(ctx: &XdpContext, vihl: u8, frags: [u8; 2]) -> u32 {
    if vihl != 0x45 || u16::from_be_bytes(frags) & 0x3fff != 0 {
        return XDP_PASS;
    }
    let d = ctx.data();
    let e = ctx.data_end();
    if d + ETH_LEN + IP_LEN + IP_LEN > e {
        return XDP_PASS;
    }
    // SAFETY: d + 54 <= e checked above.
    let (inner_v, inner_dst) = unsafe {
        let q = d + ETH_LEN + IP_LEN;
        (
            *(q as *const u8),
            u32::from_ne_bytes(*((q + 16) as *const [u8; 4])),
        )
    };
    if inner_v >> 4 != 4 || !is_vip_address(inner_dst) {
        return XDP_PASS;
    }
    // SAFETY: reads and writes below d + 34 <= e (checked above).
    unsafe {
        let eth = *(d as *const [u8; 14]);
        *((d + IP_LEN) as *mut [u8; 14]) = eth;
    }
    // SAFETY: ctx.ctx is the program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, IP_LEN as i32) } != 0 {
        return XDP_DROP;
    }
    if let Some(s) = stats() {
        s.decapsulated += 1;
    }
    XDP_PASS
}

/// Which counter a drop or forward bumps.
#[derive(Clone, Copy)]
enum Count {
    Malformed,
    Fragment,
    NoReal,
    TooBig,
}

#[inline(always)]
fn stats() -> Option<&'static mut XlbStats> {
    // SAFETY: per-CPU value, no concurrent writer on this CPU.
    XLB_STATS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn drop_counted(c: Count) -> u32 {
    if let Some(s) = stats() {
        match c {
            Count::Malformed => s.malformed_dropped += 1,
            Count::Fragment => s.fragments_dropped += 1,
            Count::NoReal => s.no_real_dropped += 1,
            Count::TooBig => s.too_big_dropped += 1,
        }
    }
    XDP_DROP
}

/// Whether `ip` (network byte order) is an external VIP address.
#[inline(always)]
fn is_vip_address(ip: u32) -> bool {
    let key = XlbVipKey {
        vip: ip,
        port: 0,
        proto: 0,
        pad: 0,
    };
    XLB_VIPS.get_ptr(&key).is_some()
}

/// Drops (counted) if `ip` is a VIP address, else passes.
#[inline(always)]
fn drop_if_vip(ip: u32, c: Count) -> u32 {
    if is_vip_address(ip) {
        drop_counted(c)
    } else {
        XDP_PASS
    }
}

#[inline(always)]
fn balance(ctx: &XdpContext) -> u32 {
    let d = ctx.data();
    let e = ctx.data_end();
    if d + ETH_LEN + IP_LEN > e {
        return XDP_PASS;
    }
    // SAFETY: d + 34 <= e checked above; every read below is inside it.
    let (ether_type, vihl, frags, proto_, src, dst, tot_len) = unsafe {
        let ip = d + ETH_LEN;
        (
            *((d + 12) as *const [u8; 2]),
            *(ip as *const u8),
            *((ip + 6) as *const [u8; 2]),
            *((ip + 9) as *const u8),
            u32::from_ne_bytes(*((ip + 12) as *const [u8; 4])),
            u32::from_ne_bytes(*((ip + 16) as *const [u8; 4])),
            u16::from_be_bytes(*((ip + 2) as *const [u8; 2])) as usize,
        )
    };
    if ether_type != [0x08, 0x00] {
        return XDP_PASS;
    }
    if proto_ == IPPROTO_IPIP {
        return decapsulate(ctx, vihl, frags);
    }
    let Some(cfg) = XLB_CONFIG.get(0).copied() else {
        return XDP_PASS;
    };
    if cfg.src_ip == 0 {
        return XDP_PASS;
    }
    if proto_ == IPPROTO_ICMP {
        return icmp(ctx, &cfg, vihl, frags, dst, tot_len);
    }
    if proto_ != proto::TCP && proto_ != proto::UDP {
        return XDP_PASS;
    }
    if u16::from_be_bytes(frags) & 0x3fff != 0 {
        return drop_if_vip(dst, Count::Fragment);
    }
    if vihl != 0x45 {
        return drop_if_vip(dst, Count::Malformed);
    }
    if d + ETH_LEN + IP_LEN + 4 > e {
        return drop_if_vip(dst, Count::Malformed);
    }
    // SAFETY: the four port bytes are inside the packet (checked above).
    let ports = unsafe { *((d + ETH_LEN + IP_LEN) as *const [u8; 4]) };
    let sport = u16::from_ne_bytes([ports[0], ports[1]]);
    let dport = u16::from_ne_bytes([ports[2], ports[3]]);
    let key = XlbVipKey {
        vip: dst,
        port: dport,
        proto: proto_,
        pad: 0,
    };
    // SAFETY: copied out at once.
    let Some(vip) = (unsafe { XLB_VIPS.get(&key) }).copied() else {
        return XDP_PASS;
    };
    // The whole L4 header is in the frame (checked before the total length,
    // so the compiler keeps this constant bound the verifier needs).
    let mut syn = false;
    let l4_min = if proto_ == proto::TCP {
        if d + ETH_LEN + IP_LEN + 20 > e {
            return drop_counted(Count::Malformed);
        }
        // SAFETY: the TCP header is inside the packet (checked above).
        let flags = unsafe { *((d + ETH_LEN + IP_LEN + 13) as *const u8) };
        // A SYN without ACK opens a new flow: Katran skips the table for it.
        syn = flags & 0x12 == 0x02;
        20
    } else {
        if d + ETH_LEN + IP_LEN + 8 > e {
            return drop_counted(Count::Malformed);
        }
        8
    };
    if tot_len < IP_LEN + l4_min || d + ETH_LEN + tot_len > e {
        return drop_counted(Count::Malformed);
    }
    let flow = XlbFlow {
        src,
        dst,
        sport,
        dport,
        proto: proto_,
        pad: [0; 3],
    };
    forward(ctx, &cfg, vip.ring, &flow, syn, true, tot_len)
}

/// ICMP to a VIP address: "fragmentation needed" about one of the VIP's
/// flows goes to that flow's real; the rest passes.
#[inline(always)]
fn icmp(ctx: &XdpContext, cfg: &XlbConfig, vihl: u8, frags: [u8; 2], dst: u32, tot_len: usize) -> u32 {
    if vihl != 0x45 || u16::from_be_bytes(frags) & 0x3fff != 0 {
        return drop_if_vip(dst, Count::Malformed);
    }
    let d = ctx.data();
    let e = ctx.data_end();
    // ICMP header (8), quoted IPv4 header (20), first 8 bytes of its payload.
    const QUOTE: usize = ETH_LEN + IP_LEN + 8;
    if d + QUOTE + IP_LEN + 8 > e {
        return drop_if_vip(dst, Count::Malformed);
    }
    // SAFETY: d + QUOTE + 28 <= e checked above.
    let (ty, code, in_vihl, in_proto, in_src, in_dst, in_ports) = unsafe {
        let q = d + QUOTE;
        (
            *((d + ETH_LEN + IP_LEN) as *const u8),
            *((d + ETH_LEN + IP_LEN + 1) as *const u8),
            *(q as *const u8),
            *((q + 9) as *const u8),
            u32::from_ne_bytes(*((q + 12) as *const [u8; 4])),
            u32::from_ne_bytes(*((q + 16) as *const [u8; 4])),
            *((q + IP_LEN) as *const [u8; 4]),
        )
    };
    // Destination unreachable / fragmentation needed (RFC 792, RFC 1191).
    if ty != 3 || code != 4 {
        return XDP_PASS;
    }
    if in_vihl != 0x45 || (in_proto != proto::TCP && in_proto != proto::UDP) {
        return drop_if_vip(in_src, Count::Malformed);
    }
    // The quoted packet is the real's reply (VIP -> client): the flow it
    // belongs to is the reverse.
    let flow = XlbFlow {
        src: in_dst,
        dst: in_src,
        sport: u16::from_ne_bytes([in_ports[2], in_ports[3]]),
        dport: u16::from_ne_bytes([in_ports[0], in_ports[1]]),
        proto: in_proto,
        pad: [0; 3],
    };
    let key = XlbVipKey {
        vip: in_src,
        port: flow.dport,
        proto: in_proto,
        pad: 0,
    };
    // SAFETY: copied out at once.
    let Some(vip) = (unsafe { XLB_VIPS.get(&key) }).copied() else {
        return XDP_PASS;
    };
    if tot_len < QUOTE - ETH_LEN + IP_LEN + 8 || d + ETH_LEN + tot_len > e {
        return drop_counted(Count::Malformed);
    }
    if let Some(s) = stats() {
        s.icmp_frag_needed += 1;
    }
    forward(ctx, cfg, vip.ring, &flow, false, false, tot_len)
}

/// Picks the flow's real and tunnels the packet to it.
#[inline(always)]
fn forward(
    ctx: &XdpContext,
    cfg: &XlbConfig,
    ring: u32,
    flow: &XlbFlow,
    syn: bool,
    remember: bool,
    tot_len: usize,
) -> u32 {
    if ring == XLB_ADDRESS_ONLY {
        return drop_counted(Count::NoReal);
    }
    let Some(real_ip) = pick(ring, flow, syn, remember) else {
        return drop_counted(Count::NoReal);
    };
    encapsulate(ctx, cfg, real_ip, tot_len)
}

/// The real's address for `flow`: the flow table's entry unless `syn` (a
/// new connection) or its real was removed, else the Maglev ring's
/// (recorded when `remember`).
#[inline(always)]
fn pick(ring: u32, flow: &XlbFlow, syn: bool, remember: bool) -> Option<u32> {
    if !syn {
        // SAFETY: copied out at once.
        if let Some(c) = unsafe { XLB_CONNS.get(flow) }.copied() {
            if let Some(real) = XLB_REALS.get(c.real) {
                if real.ip != 0 {
                    return Some(real.ip);
                }
            }
        }
    }
    let table = XLB_RINGS.get_ptr(&ring)?;
    let pos = flow_position(flow, MAGLEV_TABLE_SIZE);
    // Launder through the stack so LLVM keeps the bound check the verifier
    // needs (it cannot derive the range of a modulo).
    // SAFETY: reads a local.
    let pos = unsafe { core::ptr::read_volatile(&pos) };
    if pos >= MAGLEV_TABLE_SIZE {
        return None;
    }
    // SAFETY: `table` points at a live map value; `pos` is in bounds.
    let index = unsafe { *(*table).slots.as_ptr().add(pos as usize) };
    let real = XLB_REALS.get(index)?;
    if real.ip == 0 {
        return None;
    }
    let ip = real.ip;
    if let Some(s) = stats() {
        s.new_flows += 1;
    }
    if remember {
        let _ = XLB_CONNS.insert(flow, &XlbConn { real: index, pad: 0 }, 0);
    }
    Some(ip)
}

/// Prepends an outer IPv4 header (IPIP) from `cfg.src_ip` to `real_ip` and
/// a new Ethernet header to the gateway, and transmits.
#[inline(always)]
fn encapsulate(ctx: &XdpContext, cfg: &XlbConfig, real_ip: u32, tot_len: usize) -> u32 {
    let outer_len = tot_len + IP_LEN;
    if outer_len > 0xffff {
        return drop_counted(Count::TooBig);
    }
    // SAFETY: ctx.ctx is the program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(IP_LEN as i32)) } != 0 {
        return drop_counted(Count::TooBig);
    }
    let d = ctx.data();
    let e = ctx.data_end();
    // The new headers overlay the 20 new bytes and the old Ethernet header;
    // the old destination MAC (d + 20) becomes the source, the inner TOS
    // (d + 35) is copied.
    if d + IP_LEN + ETH_LEN + IP_LEN > e {
        return XDP_DROP;
    }
    // SAFETY: every access is below d + 54 <= e (checked above).
    unsafe {
        let old_dst_mac = *((d + IP_LEN) as *const [u8; 6]);
        let tos = *((d + IP_LEN + ETH_LEN + 1) as *const u8);
        let eth = d as *mut [u8; 14];
        let mut h = [0u8; 14];
        h[..6].copy_from_slice(&cfg.gw_mac);
        h[6..12].copy_from_slice(&old_dst_mac);
        h[12] = 0x08;
        h[13] = 0x00;
        *eth = h;
        let src = cfg.src_ip.to_ne_bytes();
        let dst = real_ip.to_ne_bytes();
        let len = (outer_len as u16).to_be_bytes();
        let mut ip = [
            0x45,
            tos,
            len[0],
            len[1],
            0,
            0,
            0,
            0,
            XLB_OUTER_TTL,
            IPPROTO_IPIP,
            0,
            0,
            src[0],
            src[1],
            src[2],
            src[3],
            dst[0],
            dst[1],
            dst[2],
            dst[3],
        ];
        let mut sum = 0u32;
        let mut i = 0;
        while i < IP_LEN {
            sum += u16::from_be_bytes([ip[i], ip[i + 1]]) as u32;
            i += 2;
        }
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        let check = (!(sum as u16)).to_be_bytes();
        ip[10] = check[0];
        ip[11] = check[1];
        *((d + ETH_LEN) as *mut [u8; 20]) = ip;
    }
    if let Some(s) = stats() {
        s.packets += 1;
        s.bytes += tot_len as u64;
    }
    XDP_TX
}
