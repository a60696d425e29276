//! The IPv6 side of the XDP load balancer (`xdp_lb`, entered from its
//! ethertype dispatch; Katran's IPv6 path in `balancer_kern.c`, see
//! `proxy_common::xlb6` for the maps): VIP lookup, sticky flow table,
//! Maglev ring, ip6ip6 encapsulation, `XDP_TX`; and the receiving node's
//! decapsulation of ip6ip6 whose inner destination is a VIP, and of
//! IPv4-in-IPv6 whose inner destination is an IPv4 VIP (as a Katran
//! balancer sends to IPv6-only reals).
//!
//! Packets not to a VIP address pass untouched. Packets to a VIP address
//! that cannot be balanced safely are dropped and counted (the counters of
//! `XLB_STATS`, shared with IPv4):
//! - a Fragment header (Katran drops IPv6 fragments: a non-first fragment
//!   carries no ports) → `fragments_dropped`;
//! - other extension headers in front of the transport header (Hop-by-Hop,
//!   Routing, Destination Options, Mobility, HIP, Shim6, experimental),
//!   a version other than 6, a truncated transport header or a payload
//!   length beyond the frame → `malformed_dropped`. Katran passes
//!   extension headers (its VIP lookup, keyed by the next header, misses);
//!   Strait drops them as it drops IPv4 options, so nothing to a VIP
//!   reaches the balancer's own stack unbalanced;
//! - no healthy real, or no known IPv6 gateway MAC (`XlbConfig6::gw_mac`
//!   all zero while the source is set: the daemon found no neighbour entry
//!   for the uplink's IPv6 default gateway; frames are never sent to a
//!   guessed MAC) → `no_real_dropped`.
//!
//! ICMPv6 "packet too big" about a VIP's flow (sent to the VIP by a router
//! on the client's path, since reals answer from the VIP) is tunnelled to
//! the real serving the flow, so path MTU discovery works (Katran's
//! `parse_icmpv6`); other ICMPv6 (neighbour discovery, echo) passes.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::bpf_xdp_adjust_head,
    programs::XdpContext,
};
use proxy_common::{
    flow_cache6_slot, flow_hash6_words, flow_position6_words, proto, vip_buckets6, XlbConfig6, XlbConn6, XlbFlow6,
    XlbReal6, XlbStats, XlbVipBucket6, MAGLEV_TABLE_SIZE, XLB_ADDRESS_ONLY, XLB_OUTER_TTL,
    XLB_VIP6_BUCKET_SLOTS, XLB_VIP_USED,
};

use crate::maps::XLB_STATS;
use crate::maps6::{XLB_CONFIG6, XLB_CONNS6, XLB_FLOW_CACHE6, XLB_REALS6, XLB_RINGS6, XLB_VIPS6};
use crate::xdp_deny::{load16, load32, load64, ETH_P_IP};

const ETH_LEN: usize = 14;
/// Length of the IPv6 header (and of the ip6ip6 tunnel header).
pub const IP6_LEN: usize = 40;
/// EtherType IPv6 as a native-endian load of the frame's bytes 12..14.
pub const ETH_P_IPV6: u16 = u16::from_ne_bytes([0x86, 0xdd]);
/// Next header: IPv6 encapsulated in IPv6 (RFC 2473).
const NEXTHDR_IPV6: u8 = 41;
/// Next header: IPv4 encapsulated in IPv6 (RFC 2473; Katran's 4in6 for an
/// IPv4 VIP on an IPv6 real).
const NEXTHDR_IPIP: u8 = 4;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_ICMPV6: u8 = 58;
/// ICMPv6 "packet too big" (RFC 4443 3.2).
const ICMPV6_PKT_TOOBIG: u8 = 2;

/// Which counter a drop bumps.
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

/// An IPv6 address as two native-endian 64-bit words (bytes 0..8 and
/// 8..16 as on the wire): loaded, compared, hashed and stored a word at a
/// time (a `[u8; 16]` copy compiles to 16 byte loads and stores, and the
/// kernel's hash, reading the key a word at a time, then waits on
/// store-to-load forwarding).
type Addr = [u64; 2];

/// The address at packet offset `p`.
///
/// # Safety
/// `p + 16` must be at or below `data_end` (checked by the caller).
#[inline(always)]
unsafe fn load_addr(p: usize) -> Addr {
    // SAFETY: in bounds (caller).
    unsafe { [load64(p), load64(p + 8)] }
}

/// A map key held as whole 64-bit words (see [`Addr`]), viewed as the
/// key's `repr(C)` layout (fields in ascending offsets, low bytes first on
/// little-endian BPF). The kernel reads the map's key size from its start.
#[repr(C, align(8))]
struct Words<const N: usize>([u64; N]);

const _: () = assert!(cfg!(target_endian = "little"));
const _: () = assert!(core::mem::size_of::<XlbFlow6>() == 40);
const _: () = assert!(core::mem::size_of::<XlbConn6>() == 48);
const _: () = assert!(core::mem::size_of::<XlbVipBucket6>() == XLB_VIP6_BUCKET_SLOTS * 32);
const _: () = assert!(core::mem::size_of::<XlbReal6>() == 16);

/// `XlbVipKey6 { vip, port, proto, pad: 0 }.words()`.
#[inline(always)]
fn vip_key(vip: Addr, port: u16, proto: u8) -> [u64; 3] {
    [vip[0], vip[1], port as u64 | (proto as u64) << 16]
}

/// The ring of VIP key `key` ([`vip_key`]) in `XLB_VIPS6`: its two
/// buckets' slots compared a word at a time, the full address, port and
/// protocol (two inlined array lookups at most, no hash-map helper call).
/// `None` when the key is in neither.
#[inline(always)]
fn find_vip(key: [u64; 3]) -> Option<u32> {
    let want = key[2] | (XLB_VIP_USED as u64) << 24;
    let [a, b] = vip_buckets6(key);
    if let Some(ring) = in_bucket(a, key[0], key[1], want) {
        return Some(ring);
    }
    in_bucket(b, key[0], key[1], want)
}

/// The ring of the slot of bucket `index` whose key words are `w0`, `w1`
/// and (low half of the third word) `tail`.
#[inline(always)]
fn in_bucket(index: u32, w0: u64, w1: u64, tail: u64) -> Option<u32> {
    let bucket = XLB_VIPS6.get_ptr(index)? as *const u64;
    let mut s = 0;
    while s < XLB_VIP6_BUCKET_SLOTS {
        // SAFETY: slot `s` is words 4s..4s + 4 of the 8-aligned map value
        // (address, address, port/proto/used/ring, flags).
        unsafe {
            let slot = bucket.add(4 * s);
            let third = *slot.add(2);
            if third as u32 as u64 == tail && *slot == w0 && *slot.add(1) == w1 {
                return Some((third >> 32) as u32);
            }
        }
        s += 1;
    }
    None
}

/// `XlbFlow6 { src, dst, sport, dport, proto, pad: 0 }` in five words;
/// `ports`: both ports as loaded from the transport header (source port
/// in the low half).
#[inline(always)]
fn flow_key(src: Addr, dst: Addr, ports: u32, proto: u8) -> Words<5> {
    Words([src[0], src[1], dst[0], dst[1], ports as u64 | (proto as u64) << 32])
}

impl Words<5> {
    /// The flow's key in the connection table
    /// ([`proxy_common::flow_hash6`]).
    #[inline(always)]
    fn hash(&self) -> u64 {
        flow_hash6_words(self.0)
    }

    /// Whether `conn` (an `XlbConn6`: real and pad, then the flow's five
    /// words) holds this flow.
    ///
    /// # Safety
    /// `conn` points at a live 48-byte, 8-aligned map value.
    #[inline(always)]
    unsafe fn stored_in(&self, conn: *const u64) -> bool {
        let w = &self.0;
        // SAFETY: words 1..6 of the value (caller).
        unsafe {
            *conn.add(5) == w[4]
                && *conn.add(1) == w[0]
                && *conn.add(2) == w[1]
                && *conn.add(3) == w[2]
                && *conn.add(4) == w[3]
        }
    }

    /// The flow's position in a Maglev ring ([`proxy_common::flow_position6`]).
    #[inline(always)]
    fn position(&self) -> u32 {
        let w = &self.0;
        flow_position6_words(
            [w[0], w[1]],
            [w[2], w[3]],
            w[4] as u16,
            (w[4] >> 16) as u16,
            (w[4] >> 32) as u8,
            MAGLEV_TABLE_SIZE,
        )
    }
}

/// Whether `ip` is an external IPv6 VIP address (its marker entry).
#[inline(always)]
fn is_vip_address(ip: Addr) -> bool {
    find_vip(vip_key(ip, 0, 0)).is_some()
}

/// Drops (counted) if `ip` is a VIP address, else passes.
#[inline(always)]
fn drop_if_vip(ip: Addr, c: Count) -> u32 {
    if is_vip_address(ip) {
        drop_counted(c)
    } else {
        XDP_PASS
    }
}

/// A real's address as words (all zero: an unused index).
#[inline(always)]
fn real_addr(r: &XlbReal6) -> Addr {
    // SAFETY: 16 bytes; array map values start 8-aligned.
    unsafe { *(r as *const XlbReal6 as *const Addr) }
}

/// Next headers that are IPv6 extension headers in front of the transport
/// header (RFC 8200 4, RFC 7045): Hop-by-Hop, Routing, Destination
/// Options, Mobility, HIP, Shim6 and the experimental 253/254. (Fragment
/// is handled apart; AH and ESP are protocols the balancer does not
/// balance, and pass like any other.)
#[inline(always)]
fn is_extension_header(n: u8) -> bool {
    matches!(n, 0 | 43 | 60 | 135 | 139 | 140 | 253 | 254)
}

/// The IPv6 balancer: called by `xdp_lb` for every frame that is not
/// IPv4 (after the deny check). Returns the XDP verdict.
#[inline(always)]
pub fn balance6(ctx: &XdpContext) -> u32 {
    let d = ctx.data();
    let e = ctx.data_end();
    if d + ETH_LEN + IP6_LEN > e {
        return XDP_PASS;
    }
    // SAFETY: d + 54 <= e checked above; every read is inside it.
    let (ether_type, vtc, payload_len, next, dst) = unsafe {
        let ip = d + ETH_LEN;
        (
            load16(d + 12),
            *(ip as *const u8),
            u16::from_be(load16(ip + 4)) as usize,
            *((ip + 6) as *const u8),
            load_addr(ip + 24),
        )
    };
    if ether_type != ETH_P_IPV6 {
        return XDP_PASS;
    }
    if vtc >> 4 != 6 {
        return drop_if_vip(dst, Count::Malformed);
    }
    if next == NEXTHDR_IPV6 {
        return decapsulate(ctx);
    }
    if next == NEXTHDR_IPIP {
        return decapsulate_4in6(ctx);
    }
    let Some(cfg) = XLB_CONFIG6.get(0) else {
        return XDP_PASS;
    };
    let src_ip = config_source(cfg);
    if src_ip[0] | src_ip[1] == 0 {
        return XDP_PASS;
    }
    if next == NEXTHDR_ICMPV6 {
        return icmp6(ctx, cfg, dst, payload_len);
    }
    if next == NEXTHDR_FRAGMENT {
        return drop_if_vip(dst, Count::Fragment);
    }
    if next != proto::TCP && next != proto::UDP {
        if is_extension_header(next) {
            return drop_if_vip(dst, Count::Malformed);
        }
        return XDP_PASS;
    }
    const L4: usize = ETH_LEN + IP6_LEN;
    if d + L4 + 4 > e {
        return drop_if_vip(dst, Count::Malformed);
    }
    // `ports`: both ports as one word, source port in the low half (the
    // flow key's layout).
    // SAFETY: the four port bytes are inside the packet (checked above).
    let ports = unsafe { load32(d + L4) };
    let dport = (ports >> 16) as u16;
    let Some(ring) = find_vip(vip_key(dst, dport, next)) else {
        return XDP_PASS;
    };
    // Packet pointers again: the verifier forgets them across the lookup.
    let d = ctx.data();
    let e = ctx.data_end();
    let mut syn = false;
    let l4_min = if next == proto::TCP {
        if d + L4 + 20 > e {
            return drop_counted(Count::Malformed);
        }
        // SAFETY: the TCP header is inside the packet (checked above).
        let flags = unsafe { *((d + L4 + 13) as *const u8) };
        // A SYN without ACK opens a new flow: Katran skips the table for it.
        syn = flags & 0x12 == 0x02;
        20
    } else {
        if d + L4 + 8 > e {
            return drop_counted(Count::Malformed);
        }
        8
    };
    if payload_len < l4_min || d + L4 + payload_len > e {
        return drop_counted(Count::Malformed);
    }
    if d + L4 > e {
        return XDP_PASS;
    }
    // SAFETY: the source (offset 8..24 of the IPv6 header) is inside the
    // packet (checked above).
    let src = unsafe { load_addr(d + ETH_LEN + 8) };
    let flow = flow_key(src, dst, ports, next);
    forward(ctx, cfg, ring, &flow, syn, true, IP6_LEN + payload_len)
}

/// The real's side (Katran's `decap_kern.c`): an ip6ip6 packet whose inner
/// destination is a VIP address loses its outer header and goes up the
/// stack as the client sent it (the node holds the VIP on a local
/// interface and answers the client directly). ip6ip6 to anything else
/// passes untouched.
#[inline(always)]
fn decapsulate(ctx: &XdpContext) -> u32 {
    let d = ctx.data();
    let e = ctx.data_end();
    if d + ETH_LEN + IP6_LEN + IP6_LEN > e {
        return XDP_PASS;
    }
    // SAFETY: d + 94 <= e checked above.
    let (inner_v, inner_dst) = unsafe {
        let q = d + ETH_LEN + IP6_LEN;
        (*(q as *const u8), load_addr(q + 24))
    };
    if inner_v >> 4 != 6 || !is_vip_address(inner_dst) {
        return XDP_PASS;
    }
    let d = ctx.data();
    let e = ctx.data_end();
    if d + ETH_LEN + IP6_LEN > e {
        return XDP_PASS;
    }
    // The Ethernet header moves 40 bytes up, over the outer IPv6 header.
    // SAFETY: reads below d + 14, writes below d + 54 <= e (checked).
    unsafe {
        let (a, b, t) = (load64(d), load32(d + 8), load16(d + 12));
        store64(d + IP6_LEN, a);
        store32(d + IP6_LEN + 8, b);
        store16(d + IP6_LEN + 12, t);
    }
    // SAFETY: ctx.ctx is the program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, IP6_LEN as i32) } != 0 {
        return XDP_DROP;
    }
    if let Some(s) = stats() {
        s.decapsulated += 1;
    }
    XDP_PASS
}

/// The real's side of IPv4-in-IPv6 (what Katran sends for an IPv4 VIP
/// whose real has only an IPv6 address: `create_v6_hdr` with next header
/// 4): a 4in6 packet whose inner IPv4 destination is an IPv4 VIP address
/// loses its outer IPv6 header, its EtherType becomes IPv4, and it goes up
/// the stack as the client sent it. Anything else passes untouched.
/// (Strait's own balancer tunnels IPv4 VIPs over IPv4 only.)
#[inline(always)]
fn decapsulate_4in6(ctx: &XdpContext) -> u32 {
    const IP4_LEN: usize = 20;
    let d = ctx.data();
    let e = ctx.data_end();
    if d + ETH_LEN + IP6_LEN + IP4_LEN > e {
        return XDP_PASS;
    }
    // SAFETY: d + 74 <= e checked above.
    let (inner_v, inner_dst) = unsafe {
        let q = d + ETH_LEN + IP6_LEN;
        (*(q as *const u8), load32(q + 16))
    };
    if inner_v >> 4 != 4 || !crate::xdp_lb::is_vip_address(inner_dst) {
        return XDP_PASS;
    }
    let d = ctx.data();
    let e = ctx.data_end();
    if d + ETH_LEN + IP6_LEN > e {
        return XDP_PASS;
    }
    // The MAC addresses move 40 bytes up, over the outer IPv6 header; the
    // EtherType written there is IPv4's.
    // SAFETY: reads below d + 12, writes below d + 54 <= e (checked).
    unsafe {
        let (a, b) = (load64(d), load32(d + 8));
        store64(d + IP6_LEN, a);
        store32(d + IP6_LEN + 8, b);
        store16(d + IP6_LEN + 12, ETH_P_IP);
    }
    // SAFETY: ctx.ctx is the program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, IP6_LEN as i32) } != 0 {
        return XDP_DROP;
    }
    if let Some(s) = stats() {
        s.decapsulated += 1;
    }
    XDP_PASS
}

/// ICMPv6 to an IPv6 address: "packet too big" about one of a VIP's flows
/// goes to that flow's real; the rest passes.
#[inline(always)]
fn icmp6(ctx: &XdpContext, cfg: &XlbConfig6, dst: Addr, payload_len: usize) -> u32 {
    let d = ctx.data();
    let e = ctx.data_end();
    const ICMP: usize = ETH_LEN + IP6_LEN;
    if d + ICMP + 4 > e {
        return drop_if_vip(dst, Count::Malformed);
    }
    // SAFETY: d + 58 <= e checked above.
    let ty = unsafe { *((d + ICMP) as *const u8) };
    if ty != ICMPV6_PKT_TOOBIG {
        return XDP_PASS;
    }
    // ICMPv6 header (8), quoted IPv6 header (40), the quoted ports (4).
    const QUOTE: usize = ICMP + 8;
    if d + QUOTE + IP6_LEN + 4 > e {
        return drop_if_vip(dst, Count::Malformed);
    }
    // SAFETY: d + QUOTE + 44 <= e checked above.
    let (in_v, in_next, in_src, in_dst, in_ports) = unsafe {
        let q = d + QUOTE;
        (
            *(q as *const u8),
            *((q + 6) as *const u8),
            load_addr(q + 8),
            load_addr(q + 24),
            load32(q + IP6_LEN),
        )
    };
    if in_v >> 4 != 6 || (in_next != proto::TCP && in_next != proto::UDP) {
        return drop_if_vip(in_src, Count::Malformed);
    }
    // The quoted packet is the real's reply (VIP -> client): the flow it
    // belongs to is the reverse (ports swapped).
    let dport = in_ports as u16;
    let Some(ring) = find_vip(vip_key(in_src, dport, in_next)) else {
        return XDP_PASS;
    };
    let d = ctx.data();
    let e = ctx.data_end();
    if payload_len < 8 + IP6_LEN + 4 || d + ICMP + payload_len > e {
        return drop_counted(Count::Malformed);
    }
    let flow = flow_key(in_dst, in_src, in_ports.rotate_left(16), in_next);
    if let Some(s) = stats() {
        s.icmp_frag_needed += 1;
    }
    forward(ctx, cfg, ring, &flow, false, false, IP6_LEN + payload_len)
}

/// Picks the flow's real and tunnels the packet (`inner_len` bytes from
/// the IPv6 header on) to it.
#[inline(always)]
fn forward(
    ctx: &XdpContext,
    cfg: &XlbConfig6,
    ring: u32,
    flow: &Words<5>,
    syn: bool,
    remember: bool,
    inner_len: usize,
) -> u32 {
    let (gw03, gw45) = config_gateway(cfg);
    // No known IPv6 next hop (the daemon found no neighbour entry for the
    // uplink's IPv6 gateway): fail closed rather than send the frame to a
    // wrong MAC, counted as a packet without a usable real.
    if ring == XLB_ADDRESS_ONLY || (gw03 == 0 && gw45 == 0) {
        return drop_counted(Count::NoReal);
    }
    let Some(real) = pick(ring, flow, syn, remember) else {
        return drop_counted(Count::NoReal);
    };
    encapsulate(ctx, cfg, real, inner_len)
}

/// `cfg.src_ip` as words.
#[inline(always)]
fn config_source(cfg: &XlbConfig6) -> Addr {
    // SAFETY: `src_ip` is at offset 0 of the 8-aligned map value.
    unsafe { *(cfg as *const XlbConfig6 as *const Addr) }
}

/// `cfg.gw_mac` as its first four and last two bytes.
#[inline(always)]
fn config_gateway(cfg: &XlbConfig6) -> (u32, u16) {
    let gw = cfg.gw_mac.as_ptr();
    // SAFETY: `gw_mac` sits at offset 16 of the 8-aligned map value:
    // aligned loads inside it.
    unsafe { (*(gw as *const u32), *(gw.add(4) as *const u16)) }
}

/// `xdp_lb_bench_miss`'s clearing for an IPv6 frame: its TCP/UDP flow's
/// slot in this CPU's `XLB_FLOW_CACHE6` zeroed.
#[inline(always)]
pub(crate) fn forget_cached_flow6(ctx: &XdpContext) {
    let d = ctx.data();
    if d + ETH_LEN + IP6_LEN + 4 > ctx.data_end() {
        return;
    }
    // SAFETY: d + 58 <= data_end (checked); next header at 6, addresses
    // at 8..40, ports right after the fixed header.
    let flow = unsafe {
        let ip = d + ETH_LEN;
        flow_key(
            load_addr(ip + 8),
            load_addr(ip + 24),
            load32(ip + IP6_LEN),
            *((ip + 6) as *const u8),
        )
    };
    if let Some(c) = XLB_FLOW_CACHE6.get_ptr_mut(flow_cache6_slot(flow.hash())) {
        // SAFETY: this CPU's 8-aligned 48-byte value.
        unsafe { *(c as *mut Words<6>) = Words([0; 6]) };
    }
}

/// The address of real `index` of `XLB_REALS6`; `None` when out of range
/// or unused (all zero).
#[inline(always)]
fn live_real(index: u32) -> Option<Addr> {
    let ip = real_addr(XLB_REALS6.get(index)?);
    (ip[0] | ip[1] != 0).then_some(ip)
}

/// Records in `slot` (this CPU's `XLB_FLOW_CACHE6` slot for `flow`) that
/// `flow` goes to real `index`: the same six words as its `XLB_FLOWS6`
/// value.
#[inline(always)]
fn cache_store(slot: Option<*mut XlbConn6>, flow: &Words<5>, index: u32) {
    if let Some(c) = slot {
        let w = &flow.0;
        // SAFETY: this CPU's 8-aligned 48-byte value; nothing else writes
        // it while this program runs on this CPU.
        unsafe {
            let c = c as *mut u64;
            *c = index as u64;
            *c.add(1) = w[0];
            *c.add(2) = w[1];
            *c.add(3) = w[2];
            *c.add(4) = w[3];
            *c.add(5) = w[4];
        }
    }
}

/// The real's address for `flow`: unless `syn` (a new connection), this
/// CPU's flow cache slot if it holds the flow, else the flow table's entry
/// (then cached), as long as that real is still there and the entry under
/// the flow's key holds this flow (a hash collision: never that flow's
/// real); else the Maglev ring's (recorded in the table, taking the entry
/// over, and in the cache when `remember`).
#[inline(always)]
fn pick(ring: u32, flow: &Words<5>, syn: bool, remember: bool) -> Option<Addr> {
    let key = flow.hash();
    let slot = XLB_FLOW_CACHE6.get_ptr_mut(flow_cache6_slot(key));
    if !syn {
        if let Some(c) = slot {
            let c = c as *const u64;
            // SAFETY: this CPU's 8-aligned 48-byte value (real index, pad,
            // the flow's five words).
            let (mine, index) = unsafe { (flow.stored_in(c), *(c as *const u32)) };
            if mine {
                if let Some(ip) = live_real(index) {
                    return Some(ip);
                }
            }
        }
        if let Some(c) = XLB_CONNS6.get_ptr(&key) {
            let c = c as *const u64;
            // SAFETY: a live 48-byte map value, 8-aligned; the real's index
            // is its first u32, read before anything else can change it.
            let (mine, index) = unsafe { (flow.stored_in(c), *(c as *const u32)) };
            if mine {
                if let Some(ip) = live_real(index) {
                    cache_store(slot, flow, index);
                    return Some(ip);
                }
            }
        }
    }
    let table = XLB_RINGS6.get_ptr(&ring)?;
    let pos = flow.position();
    // Launder through the stack so LLVM keeps the bound check the verifier
    // needs (it cannot derive the range of a modulo).
    // SAFETY: reads a local.
    let pos = unsafe { core::ptr::read_volatile(&pos) };
    if pos >= MAGLEV_TABLE_SIZE {
        return None;
    }
    // SAFETY: `table` points at a live map value; `pos` is in bounds.
    let index = unsafe { *(*table).slots.as_ptr().add(pos as usize) };
    let ip = real_addr(XLB_REALS6.get(index)?);
    if ip[0] | ip[1] == 0 {
        return None;
    }
    if let Some(s) = stats() {
        s.new_flows += 1;
    }
    if remember {
        let w = &flow.0;
        // `XlbConn6 { real: index, pad: 0, flow }` as six words.
        let value = Words([index as u64, w[0], w[1], w[2], w[3], w[4]]);
        // SAFETY: same size, alignment 8, every bit pattern valid.
        let value = unsafe { &*(&value as *const Words<6> as *const XlbConn6) };
        let _ = XLB_CONNS6.insert(&key, value, 0);
        cache_store(slot, flow, index);
    }
    Some(ip)
}

/// Prepends an outer IPv6 header (ip6ip6, Katran's `create_v6_hdr`: hop
/// limit 64, traffic class copied, flow label 0) from `cfg.src_ip` to
/// `real` and a new Ethernet header to the gateway, and transmits.
#[inline(always)]
fn encapsulate(ctx: &XdpContext, cfg: &XlbConfig6, real: Addr, inner_len: usize) -> u32 {
    if let Some(v) = crate::xdp_toobig::check6(ctx, inner_len, cfg.mtu) {
        return v;
    }
    if inner_len > 0xffff {
        return drop_counted(Count::TooBig);
    }
    // SAFETY: ctx.ctx is the program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(IP6_LEN as i32)) } != 0 {
        return drop_counted(Count::TooBig);
    }
    let d = ctx.data();
    let e = ctx.data_end();
    // The new headers overlay the 40 new bytes and the old Ethernet header;
    // the old destination MAC (d + 40) becomes the source, the inner
    // traffic class (d + 54, d + 55) is copied.
    if d + IP6_LEN + ETH_LEN + IP6_LEN > e {
        return XDP_DROP;
    }
    let (gw03, gw45) = config_gateway(cfg);
    let src = config_source(cfg);
    // SAFETY: every access is below d + 94 <= e (checked above); whole
    // words (no byte loops).
    unsafe {
        let (mac01, mac25) = (load16(d + IP6_LEN), load32(d + IP6_LEN + 2));
        let inner = d + IP6_LEN + ETH_LEN;
        let (b0, b1) = (*(inner as *const u8), *((inner + 1) as *const u8));
        let tc = (b0 & 0x0f) << 4 | b1 >> 4;
        // Destination: the gateway; source: the frame's old destination
        // (this node), as a 64-, a 32- and a 16-bit store.
        store64(d, gw03 as u64 | (gw45 as u64) << 32 | (mac01 as u64) << 48);
        store32(d + 8, mac25);
        store16(d + 12, ETH_P_IPV6);
        let ip = d + ETH_LEN;
        let len = (inner_len as u16).to_be_bytes();
        store32(ip, u32::from_ne_bytes([0x60 | tc >> 4, (tc & 0x0f) << 4, 0, 0]));
        store32(
            ip + 4,
            u32::from_ne_bytes([len[0], len[1], NEXTHDR_IPV6, XLB_OUTER_TTL]),
        );
        store64(ip + 8, src[0]);
        store64(ip + 16, src[1]);
        store64(ip + 24, real[0]);
        store64(ip + 32, real[1]);
    }
    if let Some(s) = stats() {
        s.packets += 1;
        s.bytes += inner_len as u64;
    }
    XDP_TX
}

/// One 16-bit store to packet memory at `p`.
///
/// # Safety
/// `p + 2` must be at or below `data_end` (checked by the caller).
#[inline(always)]
unsafe fn store16(p: usize, v: u16) {
    // SAFETY: in bounds (caller); unaligned packet stores are allowed.
    unsafe { core::ptr::write_volatile(p as *mut u16, v) }
}

/// One 32-bit store to packet memory at `p`.
///
/// # Safety
/// `p + 4` must be at or below `data_end` (checked by the caller).
#[inline(always)]
unsafe fn store32(p: usize, v: u32) {
    // SAFETY: as `store16`.
    unsafe { core::ptr::write_volatile(p as *mut u32, v) }
}

/// One 64-bit store to packet memory at `p`.
///
/// # Safety
/// `p + 8` must be at or below `data_end` (checked by the caller).
#[inline(always)]
unsafe fn store64(p: usize, v: u64) {
    // SAFETY: as `store16`.
    unsafe { core::ptr::write_volatile(p as *mut u64, v) }
}
