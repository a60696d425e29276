//! XDP load balancer for external VIPs (Katran's `balancer_kern.c` design;
//! see `proxy_common::xlb` for the maps): deny check, VIP lookup, sticky
//! flow table (read through a per-CPU flow cache), Maglev ring, IPIP
//! encapsulation (4in6 to an IPv6 real, `xdp_lb46.rs`), `XDP_TX`.
//!
//! Cost (`cargo xtask bench xdp`): with AMD's SRSO "safe RET" mitigation
//! every function return in the kernel costs several nanoseconds, so the
//! established-flow path makes as few calls as it can: the entry points
//! are `#[inline(always)]` (aya's `#[xdp]` wraps the function it is given
//! in the exported one, and LLVM left that large body a BPF-to-BPF call),
//! every map read is an array lookup the verifier inlines, and the one
//! hash lookup, the connection table, is skipped when this CPU's flow
//! cache slot holds the flow; `bpf_xdp_adjust_head` is the one helper
//! call left.
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
    flow_cache_slot, flow_position, proto, vip_buckets, XlbCachedFlow, XlbConfig, XlbConn, XlbFlow,
    XlbReal, XlbStats, XlbVipBucket, MAGLEV_TABLE_SIZE, XLB_ADDRESS_ONLY, XLB_OUTER_TTL,
    XLB_REAL_IPV6, XLB_VIP_BUCKET_SLOTS, XLB_VIP_USED,
};

use crate::maps::{
    XLB_CONFIG, XLB_CONNS, XLB_FLOW_CACHE, XLB_REALS, XLB_RINGS, XLB_STATS, XLB_VIPS,
};
use crate::xdp_deny::{load16, load32, load64, ETH_P_IP};

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_IPIP: u8 = 4;

/// The uplink program: sources in the deny tries are dropped, VIP traffic
/// is balanced, everything else passes.
#[xdp]
#[inline(always)]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    uplink(&ctx)
}

#[inline(always)]
fn uplink(ctx: &XdpContext) -> u32 {
    if crate::xdp_deny::denied(ctx) {
        return XDP_DROP;
    }
    balance(ctx)
}

/// Benchmark only (`cargo xtask bench xdp`, never attached): [`xdp_lb`]'s
/// code unchanged, then, for a tunnelled packet, the tunnel header taken
/// off again (the Ethernet header moved back over the outer IPv4 header —
/// 20 bytes — or, when the outer EtherType is IPv6, the outer IPv6 header —
/// 40 bytes — and the head advanced by as much: the same three loads,
/// three stores and one `bpf_xdp_adjust_head` as a decapsulation, without
/// its checks), so that `BPF_PROG_TEST_RUN` with repeat balances the same
/// client packet on every repetition. Its time per repetition is therefore
/// an upper bound of what balancing one packet costs (the balancer plus
/// that undo). Returns what `xdp_lb` returned.
#[xdp]
#[inline(always)]
pub fn xdp_lb_bench(ctx: XdpContext) -> u32 {
    balance_and_undo(&ctx)
}

/// Benchmark only, as [`xdp_lb_bench`], then this CPU's flow cache slot
/// of the restored client packet's flow cleared (`XLB_FLOW_CACHE`, or
/// `XLB_FLOW_CACHE6` for an IPv6 packet), so that every repetition of an
/// established flow misses the cache and is balanced from the connection
/// table — a flow whose slot another flow took. Its time per repetition is
/// an upper bound of that path (the clearing included). Returns what
/// `xdp_lb` returned.
#[xdp]
#[inline(always)]
pub fn xdp_lb_bench_miss(ctx: XdpContext) -> u32 {
    let verdict = balance_and_undo(&ctx);
    if verdict == XDP_TX {
        forget_cached_flow(&ctx);
    }
    verdict
}

/// [`xdp_lb_bench`]'s body: [`uplink`], then a tunnelled packet's outer
/// header taken off again.
#[inline(always)]
fn balance_and_undo(ctx: &XdpContext) -> u32 {
    let verdict = uplink(ctx);
    if verdict == XDP_TX {
        let d = ctx.data();
        if d + ETH_LEN > ctx.data_end() {
            return XDP_DROP;
        }
        // SAFETY: d + 14 <= data_end (checked).
        let outer6 = unsafe { load16(d + 12) } == crate::xdp_lb6::ETH_P_IPV6;
        return if outer6 {
            crate::xdp_lb46::undo_tunnel6(ctx, verdict)
        } else {
            undo_tunnel::<IP_LEN>(ctx, verdict)
        };
    }
    verdict
}

/// [`xdp_lb_bench_miss`]'s clearing: the frame's IPv4 TCP/UDP flow's slot
/// in this CPU's `XLB_FLOW_CACHE` zeroed (IPv6: `xdp_lb6`'s own).
#[inline(always)]
fn forget_cached_flow(ctx: &XdpContext) {
    let d = ctx.data();
    if d + ETH_LEN + IP_LEN + 4 > ctx.data_end() {
        return;
    }
    // SAFETY: d + 38 <= data_end (checked).
    let (ether_type, proto_, addrs, ports) = unsafe {
        (
            load16(d + 12),
            *((d + ETH_LEN + 9) as *const u8),
            load64(d + ETH_LEN + 12),
            load32(d + ETH_LEN + IP_LEN),
        )
    };
    if ether_type != ETH_P_IP {
        crate::xdp_lb6::forget_cached_flow6(ctx);
        return;
    }
    let w1 = ports as u64 | (proto_ as u64) << 32;
    if let Some(c) = XLB_FLOW_CACHE.get_ptr_mut(flow_cache_slot(addrs, w1)) {
        // SAFETY: this CPU's 8-aligned 24-byte value.
        unsafe {
            let w = c as *mut u64;
            *w = 0;
            *w.add(1) = 0;
            *w.add(2) = 0;
        }
    }
}

/// [`xdp_lb_bench`]'s undo: the Ethernet header moved `LEN` bytes up over
/// the outer header and the head advanced by `LEN`. Returns `verdict`, or
/// `XDP_DROP` if the frame is too short or the head cannot move.
#[inline(always)]
pub(crate) fn undo_tunnel<const LEN: usize>(ctx: &XdpContext, verdict: u32) -> u32 {
    let d = ctx.data();
    if d + ETH_LEN + LEN > ctx.data_end() {
        return XDP_DROP;
    }
    // SAFETY: reads and writes below d + LEN + 14 <= data_end (checked).
    unsafe {
        let (a, b, t) = (load64(d), load32(d + 8), load16(d + 12));
        store64(d + LEN, a);
        store32(d + LEN + 8, b);
        store16(d + LEN + 12, t);
    }
    // SAFETY: ctx.ctx is the program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, LEN as i32) } != 0 {
        return XDP_DROP;
    }
    verdict
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
        (*(q as *const u8), load32(q + 16))
    };
    if inner_v >> 4 != 4 || !is_vip_address(inner_dst) {
        return XDP_PASS;
    }
    // The Ethernet header moves 20 bytes up, over the outer IPv4 header:
    // three loads and three stores (not a byte loop).
    // SAFETY: reads and writes below d + 34 <= e (checked above).
    unsafe {
        let (a, b, t) = (load64(d), load32(d + 8), load16(d + 12));
        store64(d + IP_LEN, a);
        store32(d + IP_LEN + 8, b);
        store16(d + IP_LEN + 12, t);
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
pub(crate) enum Count {
    Malformed,
    Fragment,
    NoReal,
    TooBig,
}

#[inline(always)]
pub(crate) fn stats() -> Option<&'static mut XlbStats> {
    // SAFETY: per-CPU value, no concurrent writer on this CPU.
    XLB_STATS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub(crate) fn drop_counted(c: Count) -> u32 {
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
pub(crate) fn is_vip_address(ip: u32) -> bool {
    find_vip(vip_key(ip, 0, 0)).is_some()
}

/// The ring of VIP key `word` ([`vip_key`]) in `XLB_VIPS`: its two buckets'
/// slots compared a word at a time (two inlined array lookups at most, no
/// hash-map helper call: Katran's VIP map costs a jhash and a bucket walk
/// per packet). `None` when the key is in neither.
#[inline(always)]
fn find_vip(word: u64) -> Option<u32> {
    let want = word | (XLB_VIP_USED as u64) << 56;
    let [a, b] = vip_buckets(word);
    if let Some(ring) = in_bucket(a, want) {
        return Some(ring);
    }
    in_bucket(b, want)
}

/// The ring of the slot of bucket `index` whose key word is `want`.
#[inline(always)]
fn in_bucket(index: u32, want: u64) -> Option<u32> {
    const _: () = assert!(core::mem::size_of::<XlbVipBucket>() == XLB_VIP_BUCKET_SLOTS * 16);
    let bucket = XLB_VIPS.get_ptr(index)? as *const u64;
    let mut s = 0;
    while s < XLB_VIP_BUCKET_SLOTS {
        // SAFETY: slot `s` is words 2s (key) and 2s + 1 (ring, flags) of
        // the 8-aligned 64-byte map value.
        unsafe {
            if *bucket.add(2 * s) == want {
                return Some(*(bucket.add(2 * s + 1) as *const u32));
            }
        }
        s += 1;
    }
    None
}

/// A map key held as whole 64-bit words, so it is written to the stack
/// with one store per word and the kernel's hash, reading it a word at a
/// time, never waits on a store-to-load forward of narrower field stores.
#[repr(C, align(8))]
struct Words<const N: usize>([u64; N]);

// The views below reinterpret the words as the keys' `repr(C)` layouts
// (fields in ascending offsets, low bytes first on little-endian BPF).
const _: () = assert!(cfg!(target_endian = "little"));
const _: () = assert!(core::mem::size_of::<XlbFlow>() == 16);

/// `XlbVipKey { vip, port, proto, pad: 0 }.word()`.
#[inline(always)]
fn vip_key(vip: u32, port: u16, proto: u8) -> u64 {
    vip as u64 | (port as u64) << 32 | (proto as u64) << 48
}

/// `XlbFlow { src, dst, sport, dport, proto, pad: 0 }` as two words.
#[inline(always)]
fn flow_key(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> Words<2> {
    Words([
        src as u64 | (dst as u64) << 32,
        sport as u64 | (dport as u64) << 16 | (proto as u64) << 32,
    ])
}

impl Words<2> {
    #[inline(always)]
    fn flow(&self) -> &XlbFlow {
        // SAFETY: same size, alignment 8 >= 4, every bit pattern valid.
        unsafe { &*(self as *const Self as *const XlbFlow) }
    }
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
    // SAFETY: d + 34 <= e checked above; every read below is inside it
    // (one load per field, straight from the packet).
    // `addrs`: source and destination as one word, already in the flow
    // key's layout (source in the low half).
    let (ether_type, vihl, frags, proto_, addrs, tot_len) = unsafe {
        let ip = d + ETH_LEN;
        (
            load16(d + 12),
            *(ip as *const u8),
            load16(ip + 6).to_ne_bytes(),
            *((ip + 9) as *const u8),
            load64(ip + 12),
            u16::from_be(load16(ip + 2)) as usize,
        )
    };
    let dst = (addrs >> 32) as u32;
    if ether_type != ETH_P_IP {
        return crate::xdp_lb6::balance6(ctx);
    }
    if proto_ == IPPROTO_IPIP {
        return decapsulate(ctx, vihl, frags);
    }
    let Some(cfg) = XLB_CONFIG.get(0) else {
        return XDP_PASS;
    };
    if cfg.src_ip == 0 {
        return XDP_PASS;
    }
    if proto_ == IPPROTO_ICMP {
        return icmp(ctx, cfg, vihl, frags, dst, tot_len);
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
    // `ports`: both ports as one word, in the flow key's layout.
    // SAFETY: the four port bytes are inside the packet (checked above).
    let ports = unsafe { load32(d + ETH_LEN + IP_LEN) };
    let dport = (ports >> 16) as u16;
    let Some(ring) = find_vip(vip_key(dst, dport, proto_)) else {
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
    let flow = Words([addrs, ports as u64 | (proto_ as u64) << 32]);
    forward(ctx, cfg, ring, &flow, syn, true, tot_len)
}

/// ICMP to a VIP address: "fragmentation needed" about one of the VIP's
/// flows goes to that flow's real; the rest passes.
#[inline(always)]
fn icmp(
    ctx: &XdpContext,
    cfg: &XlbConfig,
    vihl: u8,
    frags: [u8; 2],
    dst: u32,
    tot_len: usize,
) -> u32 {
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
    let dport = u16::from_ne_bytes([in_ports[0], in_ports[1]]);
    let flow = flow_key(
        in_dst,
        in_src,
        u16::from_ne_bytes([in_ports[2], in_ports[3]]),
        dport,
        in_proto,
    );
    let Some(ring) = find_vip(vip_key(in_src, dport, in_proto)) else {
        return XDP_PASS;
    };
    if tot_len < QUOTE - ETH_LEN + IP_LEN + 8 || d + ETH_LEN + tot_len > e {
        return drop_counted(Count::Malformed);
    }
    if let Some(s) = stats() {
        s.icmp_frag_needed += 1;
    }
    forward(ctx, cfg, ring, &flow, false, false, tot_len)
}

/// Picks the flow's real and tunnels the packet to it: IPIP to an IPv4
/// real, 4in6 ([`crate::xdp_lb46`]) to an IPv6 one.
#[inline(always)]
fn forward(
    ctx: &XdpContext,
    cfg: &XlbConfig,
    ring: u32,
    flow: &Words<2>,
    syn: bool,
    remember: bool,
    tot_len: usize,
) -> u32 {
    if ring == XLB_ADDRESS_ONLY {
        return drop_counted(Count::NoReal);
    }
    let Some((index, real)) = pick(ring, flow, syn, remember) else {
        return drop_counted(Count::NoReal);
    };
    if (real >> 32) as u32 & XLB_REAL_IPV6 != 0 {
        return crate::xdp_lb46::encapsulate_4in6(ctx, index, flow.flow(), tot_len);
    }
    encapsulate(ctx, cfg, real as u32, tot_len)
}

/// The `XLB_REALS` entry at `index` as one word (`ip` low, `flags` high);
/// 0 when unused or out of range.
#[inline(always)]
fn real_word(index: u32) -> u64 {
    const _: () = assert!(core::mem::size_of::<XlbReal>() == 8);
    match XLB_REALS.get_ptr(index) {
        // SAFETY: an 8-byte, 4-aligned map value (array values are
        // 8-aligned), every bit pattern valid.
        Some(r) => unsafe { *(r as *const u64) },
        None => 0,
    }
}

/// This CPU's `XLB_FLOW_CACHE` slot for `flow` (see
/// `proxy_common::XLB_FLOW_CACHE`).
#[inline(always)]
fn cache_slot(flow: &Words<2>) -> Option<*mut XlbCachedFlow> {
    const _: () = assert!(core::mem::size_of::<XlbCachedFlow>() == 24);
    XLB_FLOW_CACHE.get_ptr_mut(flow_cache_slot(flow.0[0], flow.0[1]))
}

/// Records in `slot` that `flow` goes to real `index`.
#[inline(always)]
fn cache_store(slot: Option<*mut XlbCachedFlow>, flow: &Words<2>, index: u32) {
    if let Some(c) = slot {
        // SAFETY: this CPU's 8-aligned 24-byte value; nothing else writes
        // it while this program runs on this CPU.
        unsafe {
            let w = c as *mut u64;
            *w = flow.0[0];
            *w.add(1) = flow.0[1];
            *w.add(2) = index as u64;
        }
    }
}

/// The real for `flow` as its index and [`real_word`]: unless `syn` (a
/// new connection), this CPU's flow cache slot if it holds the flow, else
/// the flow table's entry (then cached), as long as that real is still
/// there; else the Maglev ring's (recorded in the table and the cache
/// when `remember`).
#[inline(always)]
fn pick(ring: u32, flow: &Words<2>, syn: bool, remember: bool) -> Option<(u32, u64)> {
    let slot = cache_slot(flow);
    if !syn {
        if let Some(c) = slot {
            // SAFETY: this CPU's 8-aligned 24-byte value: the flow's two
            // words, then the real index and 0.
            let (w0, w1, index) = unsafe {
                let w = c as *const u64;
                (*w, *w.add(1), *w.add(2) as u32)
            };
            if w0 == flow.0[0] && w1 == flow.0[1] {
                let real = real_word(index);
                if real != 0 {
                    return Some((index, real));
                }
            }
        }
        // SAFETY: copied out at once.
        if let Some(c) = unsafe { XLB_CONNS.get(flow.flow()) }.copied() {
            let real = real_word(c.real);
            if real != 0 {
                cache_store(slot, flow, c.real);
                return Some((c.real, real));
            }
        }
    }
    let flow_ = flow.flow();
    let table = XLB_RINGS.get_ptr(&ring)?;
    let pos = flow_position(flow_, MAGLEV_TABLE_SIZE);
    // Launder through the stack so LLVM keeps the bound check the verifier
    // needs (it cannot derive the range of a modulo).
    // SAFETY: reads a local.
    let pos = unsafe { core::ptr::read_volatile(&pos) };
    if pos >= MAGLEV_TABLE_SIZE {
        return None;
    }
    // SAFETY: `table` points at a live map value; `pos` is in bounds.
    let index = unsafe { *(*table).slots.as_ptr().add(pos as usize) };
    let real = real_word(index);
    if real == 0 {
        return None;
    }
    if let Some(s) = stats() {
        s.new_flows += 1;
    }
    if remember {
        let _ = XLB_CONNS.insert(
            flow_,
            &XlbConn {
                real: index,
                pad: 0,
            },
            0,
        );
        cache_store(slot, flow, index);
    }
    Some((index, real))
}

/// Prepends an outer IPv4 header (IPIP) from `cfg.src_ip` to `real_ip` and
/// a new Ethernet header to the gateway, and transmits.
#[inline(always)]
fn encapsulate(ctx: &XdpContext, cfg: &XlbConfig, real_ip: u32, tot_len: usize) -> u32 {
    if let Some(v) = crate::xdp_toobig::check4(ctx, tot_len, IP_LEN, cfg.mtu) {
        return v;
    }
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
    // SAFETY: every access is below d + 54 <= e (checked above). Word
    // loads and stores; the header checksum is the one's complement sum of
    // the header's 16-bit words taken in native byte order, which stored
    // natively is the right checksum (RFC 1071 2.(B)).
    unsafe {
        // Destination: the gateway; source: the frame's old destination
        // (this node), as a 64-, a 32- and a 16-bit store.
        let (mac01, mac25) = (load16(d + IP_LEN), load32(d + IP_LEN + 2));
        let tos = *((d + IP_LEN + ETH_LEN + 1) as *const u8);
        // `gw_mac` sits at offset 4 of the 4-aligned config: aligned loads.
        let gw = cfg.gw_mac.as_ptr();
        let (gw03, gw45) = (*(gw as *const u32), *(gw.add(4) as *const u16));
        store64(d, gw03 as u64 | (gw45 as u64) << 32 | (mac01 as u64) << 48);
        store32(d + 8, mac25);
        store16(d + 12, ETH_P_IP);
        let len = (outer_len as u16).to_be_bytes();
        let w0 = u32::from_ne_bytes([0x45, tos, len[0], len[1]]);
        let w2 = u32::from_ne_bytes([XLB_OUTER_TTL, IPPROTO_IPIP, 0, 0]);
        let (src, dst) = (cfg.src_ip, real_ip);
        let mut sum = (w0 & 0xffff) as u64
            + (w0 >> 16) as u64
            + (w2 & 0xffff) as u64
            + (src & 0xffff) as u64
            + (src >> 16) as u64
            + (dst & 0xffff) as u64
            + (dst >> 16) as u64;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        let check = (!(sum as u16)).to_ne_bytes();
        let ip = d + ETH_LEN;
        store32(ip, w0);
        store32(ip + 4, 0);
        store32(
            ip + 8,
            u32::from_ne_bytes([XLB_OUTER_TTL, IPPROTO_IPIP, check[0], check[1]]),
        );
        store32(ip + 12, src);
        store32(ip + 16, dst);
    }
    if let Some(s) = stats() {
        s.packets += 1;
        s.bytes += tot_len as u64;
    }
    XDP_TX
}

/// One 16-bit store to packet memory at `p`.
///
/// # Safety
/// `p + 2` must be at or below `data_end` (checked by the caller).
#[inline(always)]
pub(crate) unsafe fn store16(p: usize, v: u16) {
    // SAFETY: in bounds (caller); unaligned packet stores are allowed.
    unsafe { core::ptr::write_volatile(p as *mut u16, v) }
}

/// One 32-bit store to packet memory at `p`.
///
/// # Safety
/// `p + 4` must be at or below `data_end` (checked by the caller).
#[inline(always)]
pub(crate) unsafe fn store32(p: usize, v: u32) {
    // SAFETY: as `store16`.
    unsafe { core::ptr::write_volatile(p as *mut u32, v) }
}

/// One 64-bit store to packet memory at `p`.
///
/// # Safety
/// `p + 8` must be at or below `data_end` (checked by the caller).
#[inline(always)]
pub(crate) unsafe fn store64(p: usize, v: u64) {
    // SAFETY: as `store16`.
    unsafe { core::ptr::write_volatile(p as *mut u64, v) }
}
