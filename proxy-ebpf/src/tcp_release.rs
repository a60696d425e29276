//! `cgroup/sock_release`: counts a kernel-balanced TCP connection closed
//! (Istio's `istio_tcp_connections_closed_total` and the exact bytes,
//! [`crate::tcp_stats`]) when its application releases the socket —
//! `close()` of its last descriptor, or the process's exit — in one run in
//! process context, where the socket is warm, instead of the sockops state
//! callbacks (two extra sockops runs, the first in the backend CPU's
//! softirq, when the backend closes first; each run ~70 ns on this host).
//!
//! The kernel runs it for every socket of the pods cgroup (`inet_release`,
//! before the protocol's `close`): anything not TCP leaves after one
//! context load; a TCP socket after one more load, the callback flags the
//! sockops program set on the balanced ones when their active open
//! completed ([`MARK`], `BPF_SOCK_OPS_RTO_CB_FLAG`: it asks for a callback
//! only on a retransmission timeout, which the sockops program ignores).
//! A socket that never reached `ESTABLISHED` was never counted opened and
//! carries no mark.
//!
//! The socket's fields are read through `struct tcp_sock` at offsets the
//! loader takes from the kernel's BTF, the pointer from the kfuncs
//! `bpf_cast_to_kern_ctx` (the context as the kernel's `struct sock`) and
//! `bpf_rdonly_cast` (as `struct tcp_sock`), both inlined by the verifier
//! to a register move: no helper call in the whole program. aya does not
//! relocate kfunc calls; the program calls them through the placeholder
//! ids of `proxy_common::kfunc`, which the
//! loader rewrites into kfunc calls to the running kernel's BTF ids
//! (`proxy-userspace/src/datapath/kfunc.rs`) — without them (Linux < 6.2,
//! or counters off) the program is not loaded and the state callback
//! counts closes ([`on`] is 0).
//!
//! Counts at release (the application can no longer write, so
//! `write_seq` is final): bytes written = `bytes_acked` + (`write_seq` −
//! `snd_una`) − our SYN − our FIN if queued; received = `bytes_received` −
//! the peer's FIN if it came. Our FIN is queued in `FIN_WAIT1`,
//! `FIN_WAIT2`, `CLOSING`, `LAST_ACK` (the application shut down its side
//! before closing) and not in `ESTABLISHED` / `CLOSE_WAIT`; the peer's FIN
//! came in `CLOSE_WAIT`, `CLOSING`, `LAST_ACK`. In `TCP_CLOSE` (both FINs
//! exchanged after a `shutdown()`, or a reset) our FIN was sent iff the
//! sequence space sent (`snd_nxt` − ISN, ISN = `snd_una` − `bytes_acked`)
//! exceeds the SYN and the unique data sent (`bytes_sent` −
//! `bytes_retrans`), and the peer's FIN came iff `SOCK_DONE` is set
//! (`tcp_fin`; a reset does not set it). A FIN queued but never sent (a
//! reset came while it waited behind unsent data or for a window) is in
//! `write_seq` too: then `write_seq` ≠ `snd_nxt` and ≠ `pushed_seq`, which
//! `tcp_push` sets to `write_seq` at the end of every write that leaves
//! data unsent (nothing is written after the FIN), while unsent data
//! without a FIN leaves `pushed_seq` = `write_seq`. The one case this
//! misreads: a reset while data is unsent and the application's last write
//! was `MSG_MORE` (or a splice with more to come) without a forced push and
//! no FIN queued — one byte too few counted as sent.
//!
//! A disconnect (`connect(AF_UNSPEC)`, `tcp_disconnect`) keeps the
//! socket's callback flags (the mark) but zeroes `bytes_acked`,
//! `bytes_received` and the other byte counters, and runs no program that
//! could read them first. Its connection is counted closed without bytes:
//! here when the socket is released next (no SYN acknowledged since:
//! `bytes_acked` 0), or, when it connects again and completes the open, by
//! the sockops program, which finds the mark already set
//! ([`crate::tcp_stats::opened`]) — through a VIP, under the new
//! connection's key (the record of the old one was replaced), else (a
//! stale record whose backend is not the peer) under the old one, the
//! mark then cleared. A disconnect also clears an unbound socket's source
//! address: an IPv4 key takes the one the sockops program noted in the
//! record at open ([`proxy_common::SockNat::src`]); a native IPv6 socket
//! released while disconnected is counted under the unspecified client
//! address (`SOCK_NAT6`'s record has no room for one). The state-callback
//! fallback counts a disconnected connection exactly, at the `TCP_CLOSE`
//! that `tcp_disconnect` sets before it zeroes.
use aya_ebpf::{bindings::BPF_SOCK_OPS_RTO_CB_FLAG, macros::cgroup_sock, programs::SockContext};
use proxy_common::{kfunc, TcpStats, TcpStatsKey};

use crate::tcp_stats::{
    add4_any, add6, key4, key6_of, AF_INET6, CLOSE, CLOSE_WAIT, CLOSING, FIN_WAIT1, FIN_WAIT2, LAST_ACK,
    MAPPED_WORD,
};

/// The callback flag that marks a socket counted opened (see the module
/// documentation).
pub const MARK: u32 = BPF_SOCK_OPS_RTO_CB_FLAG;


/// 1: closes are counted here (the loader found the kfuncs and the
/// offsets and loads this program); 0: by the sockops state callback.
#[unsafe(no_mangle)]
static TCP_RELEASE_ON: u8 = 0;

/// What the program reads, set by the loader from the kernel's BTF: the
/// BTF id of `struct tcp_sock`, then byte offsets from the socket's start
/// (in this order, as `proxy-userspace`'s `TcpReleaseOffsets`).
#[unsafe(no_mangle)]
static TCP_RELEASE_BTF: [u32; 14] = [0; 14];

const TCP_SOCK_ID: usize = 0;
const COOKIE: usize = 1;
const CB_FLAGS: usize = 2;
const BYTES_ACKED: usize = 3;
const BYTES_RECEIVED: usize = 4;
const SND_UNA: usize = 5;
const WRITE_SEQ: usize = 6;
const SND_NXT: usize = 7;
const BYTES_SENT: usize = 8;
const BYTES_RETRANS: usize = 9;
const SK_FLAGS: usize = 10;
const RCV_SADDR: usize = 11;
const V6_RCV_SADDR: usize = 12;
const PUSHED_SEQ: usize = 13;

/// `SOCK_DONE` in `sk_flags` (`enum sock_flags`: the peer's FIN came).
const SOCK_DONE: u64 = 1 << 1;
const IPPROTO_TCP: u32 = 6;

/// Whether closes are counted at release (see [`TCP_RELEASE_ON`]).
#[inline(always)]
pub fn on() -> bool {
    // SAFETY: a plain load of a global (volatile: the loader's value).
    unsafe { core::ptr::read_volatile(&TCP_RELEASE_ON) != 0 }
}

/// The loader's value `i` of [`TCP_RELEASE_BTF`].
#[inline(always)]
fn btf(i: usize) -> u32 {
    // SAFETY: a plain load of a global at a constant index.
    unsafe { core::ptr::read_volatile(&TCP_RELEASE_BTF[i]) }
}

/// A `T` at byte offset `off` of the BTF pointer `tp`.
///
/// # Safety
/// `tp` comes from `bpf_rdonly_cast` and `off` is a loader constant: the
/// verifier checks the load against the kernel's type; it is fault-safe.
#[inline(always)]
unsafe fn field<T: Copy>(tp: *const u8, off: u32) -> T {
    unsafe { core::ptr::read_volatile(tp.add(off as usize).cast::<T>()) }
}

/// Runs when a socket of the pods cgroup is released; counts a marked
/// (balanced, counted opened) TCP socket closed. Always allows (1).
#[cgroup_sock(sock_release)]
pub fn tcp_stats_release(ctx: SockContext) -> i32 {
    let sk = ctx.sock;
    // SAFETY: plain loads of context fields; the kfuncs are inlined casts
    // of the context pointer (module documentation).
    unsafe {
        if core::ptr::read_volatile(&raw const (*sk).protocol) != IPPROTO_TCP {
            return 1;
        }
        let cast_to_kern_ctx: unsafe extern "C" fn(*mut core::ffi::c_void) -> *const u8 =
            core::mem::transmute(kfunc::CAST_TO_KERN_CTX as usize);
        let rdonly_cast: unsafe extern "C" fn(*const u8, u32) -> *const u8 =
            core::mem::transmute(kfunc::RDONLY_CAST as usize);
        let tp = rdonly_cast(cast_to_kern_ctx(sk.cast()), btf(TCP_SOCK_ID));
        if u32::from(field::<u8>(tp, btf(CB_FLAGS))) & MARK == 0 {
            return 1;
        }
        let state = core::ptr::read_volatile(&raw const (*sk).state);
        let acked: u64 = field(tp, btf(BYTES_ACKED));
        let received: u64 = field(tp, btf(BYTES_RECEIVED));
        let una: u32 = field(tp, btf(SND_UNA));
        let wseq: u32 = field(tp, btf(WRITE_SEQ));
        let (fin_sent, fin_received) = match state {
            FIN_WAIT1 | FIN_WAIT2 => (1, 0),
            CLOSING | LAST_ACK => (1, 1),
            CLOSE_WAIT => (0, 1),
            CLOSE => {
                let nxt: u32 = field(tp, btf(SND_NXT));
                let sent: u64 = field(tp, btf(BYTES_SENT));
                let retrans: u64 = field(tp, btf(BYTES_RETRANS));
                let flags: u64 = field(tp, btf(SK_FLAGS));
                let pushed: u32 = field(tp, btf(PUSHED_SEQ));
                // Sequence space sent after the SYN, less unique data.
                let isn = una.wrapping_sub(acked as u32);
                let space = u64::from(nxt.wrapping_sub(isn).wrapping_sub(1));
                // Our FIN sent, or queued unsent (behind unsent data, or
                // against a zero window) when a reset came: then it is the
                // last sequence number queued, after the last write's push
                // mark (`tcp_push` sets `pushed_seq` = `write_seq` when a
                // write leaves data unsent; nothing is written after the
                // FIN).
                let fin_queued = (wseq != nxt && pushed != wseq) || space > sent.wrapping_sub(retrans);
                (u64::from(fin_queued), u64::from(flags & SOCK_DONE != 0))
            }
            _ => (0, 0),
        };
        let d = TcpStats {
            opened: 0,
            closed: 1,
            // No SYN acknowledged: disconnected (`tcp_disconnect` zeroed the
            // counts; the connection is counted closed without bytes) or a
            // reconnect that did not complete.
            sent: if acked == 0 {
                0
            } else {
                (acked + u64::from(wseq.wrapping_sub(una))).saturating_sub(1 + fin_sent)
            },
            received: received.saturating_sub(fin_received),
        };
        let cookie: u64 = field(tp, btf(COOKIE));
        // (The context's source fields are for post-bind programs only.)
        let src: u32 = field(tp, btf(RCV_SADDR));
        if let Some(nat) = crate::sock_nat::of_socket(cookie) {
            // 0: a disconnect cleared it; the one counted opened.
            let src = if src == 0 { nat.src } else { src };
            add4_any(&key4(src, &nat), d);
            return 1;
        }
        let peer = core::ptr::read_volatile(&raw const (*sk).dst_ip4);
        let bport = core::ptr::read_volatile(&raw const (*sk).dst_port);
        if core::ptr::read_volatile(&raw const (*sk).family) == AF_INET6 {
            let remote = [
                core::ptr::read_volatile(&raw const (*sk).dst_ip6[0]),
                core::ptr::read_volatile(&raw const (*sk).dst_ip6[1]),
                core::ptr::read_volatile(&raw const (*sk).dst_ip6[2]),
                core::ptr::read_volatile(&raw const (*sk).dst_ip6[3]),
            ];
            // `::ffff:a.b.c.d`: an IPv4 peer, counted under IPv4 below.
            if !(remote[0] == 0 && remote[1] == 0 && remote[2] == MAPPED_WORD) {
                let o = btf(V6_RCV_SADDR);
                let src6: [u32; 4] = [
                    field(tp, o),
                    field(tp, o + 4),
                    field(tp, o + 8),
                    field(tp, o + 12),
                ];
                add6(&key6_of(cookie, src6, remote, bport), d);
                return 1;
            }
        }
        // The record's slot was reused meanwhile: the service is unknown
        // (0), the backend is the socket's peer.
        add4_any(
            &TcpStatsKey {
                src,
                vip: 0,
                backend: peer,
                vport: 0,
                bport,
            },
            d,
        );
    }
    1
}
