//! Istio's `istio_tcp_*` counts for kernel-balanced TCP connections (no
//! proxy sees them), in `TCP_STATS` (IPv4 and IPv4-mapped) and
//! `TCP_STATS6` (native IPv6):
//! - opened, by the sockops program when the client's active open
//!   completes ([`opened`], [`opened6`]), which also sets a callback flag
//!   on the socket: the mark [`crate::tcp_release::MARK`], or the state
//!   callback;
//! - closed, with the exact bytes the client wrote and received, by the
//!   `cgroup/sock_release` program when the application releases the
//!   socket ([`crate::tcp_release`]: one run in process context, no helper
//!   call) — where the kernel has the kfuncs it calls (Linux ≥ 6.2 with
//!   BTF) — else by the state callback ([`state_changed`], below), at the
//!   **first** state change after which both counts are final, where the
//!   state callback is turned off.
//!
//! The state callback (kernels without the kfuncs): when are both final? The client's written bytes once it shut down its
//! side (`FIN_WAIT1`, `LAST_ACK`, `CLOSING`: `write_seq` no longer grows;
//! bytes still queued count as written, as Envoy counts what it wrote).
//! The received bytes once the peer's FIN came (`LAST_ACK`, `CLOSING`) or
//! once the application closed the socket for reading (`close()`: the
//! kernel resets a connection whose peer sends more, `LINUX_MIB_TCPABORTONDATA`,
//! so nothing more is received) — so an application's `close()` in
//! `ESTABLISHED` is counted at its `FIN_WAIT1`, in one state callback
//! instead of the three (`FIN_WAIT1`, `FIN_WAIT2`, `CLOSE`) that counting
//! at `TCP_CLOSE` takes. A half-close (`shutdown(SHUT_WR)`, then reading
//! on) is counted at `CLOSING` or `TCP_CLOSE`; a reset at `TCP_CLOSE`.
//!
//! Two values are not in the sockops context: `write_seq` (bytes queued
//! but not yet sent) and `sk_shutdown` (whether the application closed
//! for reading). They are loaded through the socket's BTF pointer
//! (`bpf_skc_to_tcp_sock`) at offsets the loader takes from the running
//! kernel's BTF and writes into the read-only globals below — plain loads
//! the verifier checks against the kernel's `struct tcp_sock`, no
//! `bpf_probe_read_kernel` call. Offsets 0 (unknown): every close is
//! counted at `TCP_CLOSE`, bytes written = bytes acknowledged, and the
//! peer's FIN is taken as received.
//!
//! Byte counts are data only: `bytes_acked` counts our SYN (and FIN) in
//! sequence space and `bytes_received` the peer's FIN; both are taken out.
//!
//! Where the counts go: IPv4 keys first to their slot in
//! `TCP_STATS_DIRECT` on the running CPU (a per-CPU array direct-mapped by
//! [`proxy_common::tcp_stats_slot`]: a multiply, a shift and an inlined
//! array load), which the first key to land there keeps; a key whose slot
//! is taken goes to the per-CPU hash `TCP_STATS` (a `jhash`, a bucket walk
//! and a helper call). Userspace adds both. Native IPv6 keys (40 bytes)
//! stay in the `TCP_STATS6` hash.
//!
//! What the counters cost with the release counter (2026-12-06, branch
//! `counters8`): `cargo xtask bench l4-counters --quick`, the VIP's
//! sockops + `tcp_stats_release` run time per connection on − off, same
//! round, median of 7 rounds; this build and main's `bench-datapath`
//! (`STRAIT_BENCH_DATAPATH`) interleaved B A B A B, then B A again, load average 1.7–6.9
//! on 2 CPUs: this build 0.261 / 0.247 / 0.321 / 0.226 µs, main (state
//! callbacks) 0.372 / 0.428 / 0.306 µs — ~0.1 µs less in every pair. Per connection the counters now add one
//! `TCP_STATS_DIRECT` update and one `cb_flags_set` call at open, and one
//! release run (no helper call) at close; the backend closing first costs
//! nothing more. The price: every other socket of the cgroup now pays one
//! release run too — a UDP socket one context load, a TCP socket that was
//! not balanced one more load (its callback flags); the bench's "direct
//! from the data path's cgroup" row (sockops + release) went from 502 /
//! 521 / 500 ns (main) to 637 / 646 / 672 / 588 ns per connection in the
//! same runs (7 program runs instead of 6): ~90–170 ns, nearly what a
//! balanced socket's release run costs and far more than its three
//! instructions suggest — one run per connection of a program, its
//! `.rodata` and the flags' cache line of a socket about to close are all
//! cold (not profiled further). Before this design the idle machine
//! measured 0.359 µs; the idle figure of this one is not measured yet.
//!
//! Where that time goes, and what exact release counts cost (2026-12-06,
//! branch `counters9`, `cargo xtask bench l4-counters --quick`, which now
//! also prints each counting program's share; load average 1.8–7.7 on 2
//! CPUs): of the added ~0.15–0.22 µs, the sockops work at open (one
//! `TCP_STATS_DIRECT` update, the `cb_flags_set` call) is ~35–60 ns and
//! the release run of a balanced socket ~115–180 ns, of which ~85–115 ns
//! is what a run costs at all — an unbalanced TCP socket's run (three
//! loads and an exit) measures that much in the same rounds: one cold run
//! per connection, in the kernel's accounting window. The body's
//! loads, record and counter update are the remaining ~30–50 ns. The
//! release-count fixes (reconnects, a queued FIN at a reset: one
//! callback-flags load, the peer compared with the record and the client
//! address stored in it at open; a branch or two at release) measured
//! against main's build interleaved A B A B A B and B A B A B: on − off
//! per connection 0.221 / 0.182 / 0.174 / 0.187 / 0.151 / 0.175 µs
//! against main's 0.159 / 0.158 / 0.164 / 0.211 / 0.222 — no difference
//! the runs can tell apart (each run's own min–max spans ~0.1 µs). Not
//! tried: marking the socket without the helper call (only `sk_txhash`
//! is writable from sockops, and it is the flow hash), or telling a
//! balanced socket at release by its `SOCK_NAT` record alone: a record's
//! slot is reused after 131,072 newer cookies, so a long-lived
//! connection's close would go uncounted, where the mark still counts it
//! (under an unknown service).
//!
//! The state-callback design's cost (sockops run time per connection, on − off,
//! kernel `bpf_stats`; 10,000 connections per run of `bench-l4` to a
//! `bench-backend` that closes first, variants of this file loaded
//! alternately, six rounds; load average 11–13 on 2 CPUs, so absolute
//! figures are ~1.4× the idle machine's): ~630 ns with the per-CPU hash,
//! ~480 ns with the direct slots. Of the ~630: the two extra state-callback
//! runs with no work in them (`CLOSE_WAIT` then `LAST_ACK`) ~270 ns; the
//! two hash updates ~100 ns; reading the byte counts (context fields and
//! `write_seq` through the BTF pointer) and the socket's `SOCK_NAT` record
//! the rest. Counting at `CLOSE_WAIT` instead (one run, not exact for bytes
//! written after the peer's FIN) measured *more*, not less: that run is in
//! the softirq of the backend's CPU, where the client's socket and the
//! maps are cold.
//!
//! Helper and BPF-to-BPF calls per run (`bpftool prog dump xlated` of
//! the loaded program, 2026-12-06; each call and return costs ~10–20 ns
//! on a host with AMD SRSO's safe RET): the body is already inlined into
//! the `#[sock_ops]` entry, and the verifier inlines the array lookups
//! (`SOCK_NAT`, `TCP_STATS_DIRECT`); the only BPF-to-BPF call is a
//! `memset` on the native-IPv6 fallback path. The active open calls
//! `bpf_get_socket_cookie` (counters on or off) and, counting,
//! `bpf_sock_ops_cb_flags_set`; the counting state callback called
//! `bpf_skc_to_tcp_sock`, `bpf_get_socket_cookie` and
//! `bpf_sock_ops_cb_flags_set`. The cookie is now loaded through the BTF
//! pointer the first helper returns (`skc_cookie`, [`TCP_SK_COOKIE`]):
//! two helper calls there. `bpf_skc_to_tcp_sock` stays (the only way to
//! a BTF pointer without kfuncs, which the loader does not relocate), and
//! so do both `cb_flags_set` calls (turning the callback off saves the
//! `TCP_CLOSE` run). Same-run A/B, `cargo xtask bench l4-counters
//! --quick` with main's `bench-datapath` (`STRAIT_BENCH_DATAPATH`) and
//! this one interleaved (B A B A B), load average 3.9–6.4 on 2 CPUs: on −
//! off per connection 0.424 / 0.395 µs (main) against 0.392 / 0.326 /
//! 0.397 µs (this): ~20–30 ns less at best, inside each run's min–max
//! spread (~0.1–0.3 µs) — not a demonstrated gain, and far from the
//! 0.2 µs target, which the two state-callback runs themselves exceed.
//!
//! Not measured: counting closes from `fentry/tcp_close` (no state
//! callback; the balanced socket marked with `BPF_SOCK_OPS_RTO_CB_FLAG` at
//! open, its fields read through BTF offsets, nested `sock_common` members
//! included). The kernel of the development machine refuses every
//! `BPF_PROG_TYPE_TRACING` (and LSM) program with `EPERM` before
//! verification — kprobe, tracepoint and raw tracepoint programs load —
//! so it could be neither tested nor measured; the prototype is in the
//! history of branch `counters5` (commit "counters: fentry/tcp_close
//! prototype", reverted). A `cgroup/sock_release` program measured no
//! better than this design under that harness (load 11–13, one process
//! per 10,000 connections, its fields read with helper calls); with the
//! kfunc casts and the batch harness it is what counts closes now (above).
//!
//! Measured, not landed: closes counted by a raw tracepoint on
//! `tcp_destroy_sock` (once per TCP socket, in `TCP_CLOSE`, counts final;
//! the balanced socket marked with `BPF_SOCK_OPS_RTO_CB_FLAG` at open, its
//! fields copied with `bpf_probe_read_kernel` at BTF offsets, `SOCK_DONE`
//! for the peer's FIN, `bytes_sent - bytes_retrans` to tell whether our
//! FIN was queued; exact bytes in every `kernel_tcp_stats` case). Same
//! run, load 5.6–7, one `strait-probe` process per connection (cold
//! caches), six rounds, on − off per balanced connection: median ~1.9 µs
//! against ~2.1 µs for this design — within the noise — while every other
//! TCP socket the node destroys pays one run (one probe read, ~240–390 ns
//! in the same setting), which this design never charges. The tracepoint
//! is also node-wide: every data path on the kernel (simulated nodes)
//! sees every marked socket, so only sockets with a live `SOCK_NAT` record
//! can be counted. Branch `counters5`, commit "counters: closes counted
//! by a tcp_destroy_sock raw tracepoint", reverted.
use aya_ebpf::{
    bindings::{bpf_sock_ops, BPF_SOCK_OPS_STATE_CB_FLAG},
    helpers::bpf_skc_to_tcp_sock,
    programs::SockOpsContext,
    EbpfContext,
};
use proxy_common::{tcp_stats_slot, SockNat, SockNat6, TcpStats, TcpStatsKey, TcpStatsKey6};

use crate::maps::{TCP_STATS, TCP_STATS_DIRECT};
use crate::maps6::TCP_STATS6;

/// 1: count kernel-balanced connections in `TCP_STATS` / `TCP_STATS6` (the
/// default); 0: don't (no counting, no state callbacks). Set at load time
/// (a read-only global the verifier treats as a constant, so the branch on
/// it costs nothing) by `DatapathConfig::tcp_stats`; off only to measure
/// what the counters cost (`cargo xtask bench l4-counters`).
#[unsafe(no_mangle)]
static TCP_STATS_ON: u8 = 1;

/// Byte offset of `write_seq` (`u32`) in the kernel's `struct tcp_sock`;
/// 0 when unknown. Set by the loader from the kernel's BTF.
#[unsafe(no_mangle)]
static TCP_SK_WRITE_SEQ: u32 = 0;

/// Byte offset of `sk_shutdown` (`u8`) in `struct sock` (which opens
/// `struct tcp_sock`); 0 when unknown.
#[unsafe(no_mangle)]
static TCP_SK_SHUTDOWN: u32 = 0;

/// Byte offset of `skc_cookie` (`atomic64_t`: the socket cookie, which
/// `bpf_get_socket_cookie` returns once assigned) in `struct sock_common`
/// (which opens `struct sock`); 0 when unknown (then the state callback
/// calls the helper).
#[unsafe(no_mangle)]
static TCP_SK_COOKIE: u32 = 0;

// TCP states (`include/net/tcp_states.h`), shared with `tcp_release`.
pub(crate) const FIN_WAIT1: u32 = 4;
pub(crate) const FIN_WAIT2: u32 = 5;
pub(crate) const CLOSE: u32 = 7;
pub(crate) const CLOSE_WAIT: u32 = 8;
pub(crate) const LAST_ACK: u32 = 9;
pub(crate) const CLOSING: u32 = 11;

/// `RCV_SHUTDOWN` in `sk_shutdown`.
const RCV_SHUTDOWN: u8 = 1;
/// `AF_INET6`.
pub(crate) const AF_INET6: u32 = 10;
/// The third word of an IPv4-mapped IPv6 address (`::ffff:0:0/96`) as the
/// kernel stores it.
pub(crate) const MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// Whether counting is on (see [`TCP_STATS_ON`]).
#[inline(always)]
pub fn on() -> bool {
    // SAFETY: a plain load of a global (volatile: its value is the
    // loader's, not the one compiled in).
    unsafe { core::ptr::read_volatile(&TCP_STATS_ON) != 0 }
}

/// Adds `d` to `key`'s counters in `map` (one lookup; an insert the first
/// time the key is seen on this CPU).
macro_rules! add {
    ($map:expr, $key:expr, $d:expr) => {{
        let d: TcpStats = $d;
        match $map.get_ptr_mut($key) {
            // SAFETY: this CPU's value; nothing else writes it while we run.
            Some(s) => unsafe {
                (*s).opened += d.opened;
                (*s).closed += d.closed;
                (*s).sent += d.sent;
                (*s).received += d.received;
            },
            None => {
                let _ = $map.insert($key, &d, 0);
            }
        }
    }};
}

/// Adds `d` to `key`'s IPv4 counters: in its [`TCP_STATS_DIRECT`] slot on
/// this CPU when the slot holds `key` or is free (then it takes it), else
/// in [`TCP_STATS`]. `key.src` must not be 0 (a free slot's); see
/// [`add4_any`].
///
/// Plain (non-atomic) stores, as the per-CPU hash's adds are: only this
/// CPU writes its slot. A run in a softirq that interrupts a run in
/// process context on the same CPU in the few instructions between the
/// free check and the key store, for another key of the same slot, would
/// leave that connection's counts under the first key — the same window
/// in which the hash's `+=` can lose an update.
#[inline(always)]
pub(crate) fn add4(key: &TcpStatsKey, d: TcpStats) {
    if let Some(e) = TCP_STATS_DIRECT.get_ptr_mut(tcp_stats_slot(key)) {
        // SAFETY: this CPU's slot; nothing else on this CPU writes it while
        // we run (userspace only reads).
        unsafe {
            let k = &mut (*e).key;
            let free = k.src == 0;
            if free
                || (k.src == key.src
                    && k.vip == key.vip
                    && k.backend == key.backend
                    && k.vport == key.vport
                    && k.bport == key.bport)
            {
                if free {
                    *k = *key;
                }
                let s = &mut (*e).stats;
                s.opened += d.opened;
                s.closed += d.closed;
                s.sent += d.sent;
                s.received += d.received;
                return;
            }
        }
    }
    add!(TCP_STATS, key, d);
}

/// [`add4`] for a key whose client address may be 0 (a disconnected
/// socket's, recorded by an older build): such a key goes to the hash, as
/// in a direct slot it would look free.
#[inline(always)]
pub(crate) fn add4_any(key: &TcpStatsKey, d: TcpStats) {
    if key.src == 0 {
        add!(TCP_STATS, key, d);
    } else {
        add4(key, d);
    }
}

const OPENED: TcpStats = TcpStats {
    opened: 1,
    closed: 0,
    sent: 0,
    received: 0,
};

/// Adds `d` to `key`'s native IPv6 counters in [`TCP_STATS6`].
#[inline(always)]
pub(crate) fn add6(key: &TcpStatsKey6, d: TcpStats) {
    add!(TCP_STATS6, key, d);
}

/// The `TCP_STATS` key of a balanced socket whose client address is `src`.
#[inline(always)]
pub(crate) fn key4(src: u32, nat: &SockNat) -> TcpStatsKey {
    TcpStatsKey {
        src,
        vip: nat.orig.ip,
        backend: nat.to.ip,
        vport: nat.orig.port,
        bport: nat.to.port,
    }
}

/// The `TCP_STATS6` key of a balanced native IPv6 socket.
#[inline(always)]
pub(crate) fn key6(src: [u32; 4], nat: &SockNat6) -> TcpStatsKey6 {
    TcpStatsKey6 {
        src,
        vip: nat.orig.ip,
        backend: nat.to.ip,
        vport: nat.orig.port,
        bport: nat.to.port,
    }
}

/// The `TCP_STATS6` key of the native IPv6 socket with `cookie` whose
/// client address is `src6` and peer `remote`:`bport` (network byte
/// order), from its `SOCK_NAT6` record; if the record's slot was reused
/// meanwhile, the service is unknown and the backend is the peer.
#[inline(always)]
pub(crate) fn key6_of(cookie: u64, src6: [u32; 4], remote: [u32; 4], bport: u16) -> TcpStatsKey6 {
    match crate::lb6::balanced6(cookie) {
        Some(nat6) => key6(src6, &nat6),
        None => TcpStatsKey6 {
            src: src6,
            vip: [0; 4],
            backend: remote,
            vport: 0,
            bport,
        },
    }
}

/// One close without bytes: the connection before a reconnect of the same
/// socket, ended by `connect(AF_UNSPEC)` (module documentation).
const DISCONNECTED: TcpStats = TcpStats {
    opened: 0,
    closed: 1,
    sent: 0,
    received: 0,
};

/// [`OPENED`] plus [`DISCONNECTED`]: a socket reconnected through a VIP.
const REOPENED: TcpStats = TcpStats {
    opened: 1,
    closed: 1,
    sent: 0,
    received: 0,
};

/// Whether the socket's callback flags `flags` carry the release counter's
/// mark from an earlier connection that was counted opened and not closed:
/// the socket was disconnected (`connect(AF_UNSPEC)`: `tcp_disconnect`
/// keeps the flags, zeroes the byte counters and runs no program) and is
/// connecting again. The state callback counts such a connection at its
/// `TCP_CLOSE` (`tcp_disconnect` sets the state before it zeroes), so only
/// the release counter needs this.
#[inline(always)]
fn disconnected(flags: u32) -> bool {
    crate::tcp_release::on() && flags & crate::tcp_release::MARK != 0
}

/// Counts a kernel-balanced IPv4 (or IPv4-mapped) connection opened, as
/// connect4/connect6 recorded it in `nat` for the socket `cookie`, and
/// marks it for its close (the release counter's mark, or the state
/// callback).
///
/// A record whose backend is not the socket's peer is stale: the socket
/// connected through a VIP before, was disconnected, and has now connected
/// somewhere connect4 did not rewrite — it is not balanced; the record is
/// forgotten and the socket's flags cleared. A socket still marked from a
/// counted connection (see [`disconnected`]) counts that one closed
/// (without bytes: the kernel zeroed them) with this one opened.
#[inline(always)]
pub fn opened(ctx: &SockOpsContext, cookie: u64, rec: *mut SockNat, nat: &SockNat) {
    let src = ctx.local_ip4();
    let flags = ctx.cb_flags();
    if nat.to.ip != ctx.remote_ip4() || nat.to.port != remote_port(ctx.ops) {
        if disconnected(flags) {
            add4(&key4(src, nat), DISCONNECTED);
        }
        crate::sock_nat::forget(cookie);
        if flags != 0 {
            let _ = ctx.set_cb_flags(0);
        }
        return;
    }
    let d = if disconnected(flags) { REOPENED } else { OPENED };
    add4(&key4(src, nat), d);
    // SAFETY: `rec` is `nat`'s array slot (`sock_nat::record`).
    unsafe { (*rec).src = src };
    let _ = ctx.set_cb_flags(close_flag());
}

/// The callback flag [`opened`] sets: the state callback, or (closes
/// counted at release, [`crate::tcp_release`]) only the marker the release
/// program looks for.
#[inline(always)]
fn close_flag() -> i32 {
    if crate::tcp_release::on() {
        crate::tcp_release::MARK as i32
    } else {
        BPF_SOCK_OPS_STATE_CB_FLAG as i32
    }
}

/// [`opened`] for a connection connect6 balanced to a native IPv6 backend.
#[inline(always)]
pub fn opened6(ctx: &SockOpsContext, cookie: u64, nat: &SockNat6) {
    let key = key6(ip6(ctx.ops, false), nat);
    let flags = ctx.cb_flags();
    let peer = ip6(ctx.ops, true);
    if nat.to.port != remote_port(ctx.ops)
        || nat.to.ip[0] != peer[0]
        || nat.to.ip[1] != peer[1]
        || nat.to.ip[2] != peer[2]
        || nat.to.ip[3] != peer[3]
    {
        if disconnected(flags) {
            add6(&key, DISCONNECTED);
        }
        crate::lb6::forget(cookie);
        if flags != 0 {
            let _ = ctx.set_cb_flags(0);
        }
        return;
    }
    let d = if disconnected(flags) { REOPENED } else { OPENED };
    add6(&key, d);
    let _ = ctx.set_cb_flags(close_flag());
}

/// The context's local (`remote`: peer) IPv6 address, one 32-bit load per
/// word, each at its own constant offset (the verifier refuses a load
/// through a context pointer the compiler offset first).
#[inline(always)]
fn ip6(ops: *mut bpf_sock_ops, remote: bool) -> [u32; 4] {
    // SAFETY: plain loads of context fields.
    unsafe {
        if remote {
            [
                core::ptr::read_volatile(&raw const (*ops).remote_ip6[0]),
                core::ptr::read_volatile(&raw const (*ops).remote_ip6[1]),
                core::ptr::read_volatile(&raw const (*ops).remote_ip6[2]),
                core::ptr::read_volatile(&raw const (*ops).remote_ip6[3]),
            ]
        } else {
            [
                core::ptr::read_volatile(&raw const (*ops).local_ip6[0]),
                core::ptr::read_volatile(&raw const (*ops).local_ip6[1]),
                core::ptr::read_volatile(&raw const (*ops).local_ip6[2]),
                core::ptr::read_volatile(&raw const (*ops).local_ip6[3]),
            ]
        }
    }
}

/// The peer port in network byte order: sock_ops stores it in the upper
/// half of the word on little-endian kernels (Linux's
/// `sock_ops_convert_ctx_access`), in the lower half on others.
#[inline(always)]
fn remote_port(ops: *mut bpf_sock_ops) -> u16 {
    // SAFETY: a plain load of the context field.
    let p = unsafe { core::ptr::read_volatile(&raw const (*ops).remote_port) };
    if p > 0xffff {
        (p >> 16) as u16
    } else {
        p as u16
    }
}

/// `(sk_shutdown, write_seq, cookie)` of the context's socket, through
/// its BTF pointer (`cookie` 0: its offset is unknown, or no cookie was
/// assigned yet); `None` when the offsets are unknown or the socket is
/// not a full TCP socket.
#[inline(always)]
fn tcp_sock_fields(ops: *mut bpf_sock_ops) -> Option<(u8, u32, u64)> {
    // SAFETY: plain loads of globals the loader set (constants to the
    // verifier: a frozen read-only map).
    let (o_shut, o_wseq, o_cookie) = unsafe {
        (
            core::ptr::read_volatile(&TCP_SK_SHUTDOWN),
            core::ptr::read_volatile(&TCP_SK_WRITE_SEQ),
            core::ptr::read_volatile(&TCP_SK_COOKIE),
        )
    };
    if o_shut == 0 || o_wseq == 0 {
        return None;
    }
    // SAFETY: `sk` is a context field (the socket, or null); the helper
    // returns the `struct tcp_sock` it is, or null; loads through the BTF
    // pointer the helper returns are checked by the verifier against the
    // kernel's type at these (constant) offsets and fault-safe.
    unsafe {
        let sk = core::ptr::read_volatile(&raw const (*ops).__bindgen_anon_2.sk);
        if sk.is_null() {
            return None;
        }
        let tp = bpf_skc_to_tcp_sock(sk.cast()) as *const u8;
        if tp.is_null() {
            return None;
        }
        // The cookie in place of `bpf_get_socket_cookie` (a helper call,
        // ~20 ns with SRSO's safe RET): connect4/connect6 assigned it to
        // every socket they balanced, so a balanced socket's is non-zero.
        let cookie = if o_cookie == 0 {
            0
        } else {
            core::ptr::read_volatile(tp.add(o_cookie as usize).cast::<u64>())
        };
        Some((
            core::ptr::read_volatile(tp.add(o_shut as usize)),
            core::ptr::read_volatile(tp.add(o_wseq as usize).cast::<u32>()),
            cookie,
        ))
    }
}

/// A balanced socket changed state (its state callback, which [`opened`]
/// turned on): at the first state where the client's written and received
/// bytes are both final (module documentation), counts it closed with
/// them and turns the callback off; other states return at once.
#[inline(always)]
pub fn state_changed(ctx: &SockOpsContext) {
    let old = ctx.arg(0);
    let new = ctx.arg(1);
    if !matches!(new, FIN_WAIT1 | FIN_WAIT2 | CLOSING | LAST_ACK | CLOSE) {
        return;
    }
    let ops = ctx.ops;
    let fields = tcp_sock_fields(ops);
    let rcv_shut = match fields {
        Some((shutdown, _, _)) => shutdown & RCV_SHUTDOWN != 0,
        // Unknown: wait for TCP_CLOSE, and take the peer's FIN as
        // received there.
        None => {
            if new != CLOSE {
                return;
            }
            true
        }
    };
    // Our side shut down, the peer's not: final only if the application
    // closed for reading too.
    if matches!(new, FIN_WAIT1 | FIN_WAIT2) && !rcv_shut {
        return;
    }
    // Every context field is read up front, each with its own constant
    // offset: the verifier refuses a load through a context pointer the
    // compiler offset in a shared branch.
    // SAFETY: the kernel hands a valid `bpf_sock_ops`; plain loads.
    let (acked, received, una, family) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*ops).bytes_acked),
            core::ptr::read_volatile(&raw const (*ops).bytes_received),
            core::ptr::read_volatile(&raw const (*ops).snd_una),
            core::ptr::read_volatile(&raw const (*ops).family),
        )
    };
    let wseq = match fields {
        Some((_, w, _)) => w,
        None => una,
    };
    // Our FIN is in `write_seq` once queued (the callback for FIN_WAIT1 and
    // LAST_ACK runs before `tcp_send_fin`), the peer's in `bytes_received`
    // once it came.
    let fin_sent = matches!(old, FIN_WAIT1 | FIN_WAIT2 | CLOSING | LAST_ACK) || new == CLOSING;
    let fin_received = matches!(old, CLOSE_WAIT | CLOSING | LAST_ACK)
        || matches!(new, CLOSING | LAST_ACK)
        || (new == CLOSE && matches!(old, FIN_WAIT1 | FIN_WAIT2) && rcv_shut);
    let d = TcpStats {
        opened: 0,
        closed: 1,
        // Bytes acknowledged plus those still queued, less our SYN (the
        // SYN-ACK acknowledged it) and FIN.
        sent: (acked + u64::from(wseq.wrapping_sub(una))).saturating_sub(1 + u64::from(fin_sent)),
        received: received.saturating_sub(u64::from(fin_received)),
    };
    if new != CLOSE {
        let _ = ctx.set_cb_flags(0);
    }
    let cookie = match fields {
        Some((_, _, c)) if c != 0 => c,
        _ => crate::sock_nat::cookie(ctx.as_ptr()),
    };
    // SAFETY: plain loads of context fields.
    let (src, peer) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*ops).local_ip4),
            core::ptr::read_volatile(&raw const (*ops).remote_ip4),
        )
    };
    if let Some(nat) = crate::sock_nat::of_socket(cookie) {
        add4(&key4(src, &nat), d);
        return;
    }
    if family == AF_INET6 {
        let remote = ip6(ops, true);
        // `::ffff:a.b.c.d`: an IPv4 peer, counted under IPv4 below.
        let mapped = remote[0] == 0 && remote[1] == 0 && remote[2] == MAPPED_WORD;
        if !mapped {
            let key = key6_of(cookie, ip6(ops, false), remote, remote_port(ops));
            add!(TCP_STATS6, &key, d);
            return;
        }
    }
    // The record is gone if its slot was reused meanwhile: the service is
    // then unknown (0), the backend is the socket's peer.
    let key = TcpStatsKey {
        src,
        vip: 0,
        backend: peer,
        vport: 0,
        bport: remote_port(ops),
    };
    add4_any(&key, d);
}
