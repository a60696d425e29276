//! Raw tracepoint `tcp_destroy_sock`: counts a kernel-balanced TCP
//! connection closed, with its exact bytes, when the kernel destroys its
//! socket — no sockops state callback (each one a program run on the
//! connection path) and no per-socket cgroup program run.
//!
//! The tracepoint fires once per TCP socket, in `tcp_v4_destroy_sock`
//! (IPv6 sockets too: `tcp_v6_destroy_sock` calls it), reached from
//! `inet_csk_destroy_sock` when a closed socket's last user is gone: the
//! application's `close()` of a socket already in `TCP_CLOSE`, the end of
//! `LAST_ACK`/`CLOSING`/`FIN_WAIT2` of an orphan, the move to `TIME_WAIT`
//! (the full socket is destroyed there, the time-wait socket lives on), a
//! reset. The socket is in `TCP_CLOSE` and its counts are final.
//!
//! The sockops program marks a balanced socket when its active open
//! completes (it counts it opened there, in a run that happens anyway) by
//! setting `BPF_SOCK_OPS_RTO_CB_FLAG` in the socket's callback flags
//! (`tcp_sock.bpf_sock_ops_cb_flags`): a bit the kernel keeps per socket,
//! whose only effect is a sockops run at a retransmission timeout (rare;
//! the program returns at once). A socket that never established is never
//! marked. Every TCP socket destroyed on the node runs this program; an
//! unmarked one costs one `bpf_probe_read_kernel` of that byte.
//!
//! Raw tracepoint programs see the socket as a plain address (no BTF
//! pointer: typed `tp_btf`/fentry programs are refused on locked-down
//! kernels), so fields are copied with `bpf_probe_read_kernel` at offsets
//! the loader takes from the kernel's BTF ([`TCP_DESTROY_OFFSETS`]); the
//! program is attached only when all are known ([`TCP_DESTROY_HOOK`]).
//!
//! Bytes written = bytes acknowledged + bytes still queued
//! (`write_seq - snd_una`), less the SYN and our FIN if one was queued;
//! bytes received = `bytes_received` less the peer's FIN if it came
//! (`SOCK_DONE`, set by `tcp_fin`). In `TCP_CLOSE` our FIN counts as
//! queued when every data byte was transmitted (`bytes_sent -
//! bytes_retrans`) and the sequence space used after the SYN is one more;
//! when data was still unsent (a reset), when the peer's FIN came and
//! every byte was acknowledged — one byte off only for a reset that found
//! both unsent data and our FIN queued. A close
//! with `SO_LINGER` 0 goes through `tcp_disconnect`, which zeroes the byte
//! counters first: such a connection is counted closed with 0 bytes.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::raw_tracepoint, programs::RawTracePointContext,
};

use crate::tcp_stats;

/// 1: the loader attaches this program and the sockops program marks
/// balanced sockets for it; 0: closes are counted by sockops state
/// callbacks ([`crate::tcp_stats::state_changed`]).
#[unsafe(no_mangle)]
static TCP_DESTROY_HOOK: u8 = 0;

/// Byte offsets in the kernel's `struct tcp_sock` (which opens with
/// `struct sock`, which opens with `struct sock_common`), in the order of
/// the `O_*` constants below; set by the loader from the kernel's BTF.
#[unsafe(no_mangle)]
static TCP_DESTROY_OFFSETS: [u32; 15] = [0; 15];

const O_CB_FLAGS: usize = 0;
const O_SND_UNA: usize = 1;
const O_BYTES_ACKED: usize = 2;
const O_BYTES_RECEIVED: usize = 3;
const O_SK_FLAGS: usize = 4;
const O_STATE: usize = 5;
// 6: skc_family, 8: skc_daddr, 9: skc_dport, 11: skc_v6_daddr (resolved
// with the others, unused).
const O_RCV_SADDR: usize = 7;
const O_V6_RCV_SADDR: usize = 10;
const O_COOKIE: usize = 12;
const O_BYTES_SENT: usize = 13;
const O_BYTES_RETRANS: usize = 14;

/// Whether the loader attached this program (see [`TCP_DESTROY_HOOK`]).
#[inline(always)]
pub fn hooked() -> bool {
    // SAFETY: a plain load of a global the loader set.
    unsafe { core::ptr::read_volatile(&TCP_DESTROY_HOOK) != 0 }
}

#[inline(always)]
fn off(i: usize) -> usize {
    // SAFETY: a plain load of a read-only global (a constant to the
    // verifier).
    unsafe { core::ptr::read_volatile(&TCP_DESTROY_OFFSETS[i]) as usize }
}

/// Copies a `T` from kernel address `sk + o` (0 when the copy faults).
#[inline(always)]
fn at<T: Copy + Default>(sk: usize, o: usize) -> T {
    // SAFETY: `bpf_probe_read_kernel` copies from any kernel address and
    // returns an error (not a fault) for a bad one.
    unsafe { bpf_probe_read_kernel((sk + o) as *const T).unwrap_or_default() }
}

/// Runs at `trace_tcp_destroy_sock(struct sock *sk)`.
#[raw_tracepoint(tracepoint = "tcp_destroy_sock")]
pub fn tcp_destroy_stats(ctx: RawTracePointContext) -> i32 {
    if tcp_stats::on() && hooked() {
        let sk: u64 = ctx.arg(0);
        destroyed(sk as usize);
    }
    0
}

#[inline(always)]
fn destroyed(sk: usize) {
    let flags: u8 = at(sk, off(O_CB_FLAGS));
    if u32::from(flags) & tcp_stats::MARK_FLAG == 0 {
        return;
    }
    let state: u8 = at(sk, off(O_STATE));
    let sk_flags: u64 = at(sk, off(O_SK_FLAGS));
    let una: u32 = at(sk, off(O_SND_UNA));
    let wseq: u32 = at(sk, tcp_stats::write_seq_offset());
    let acked: u64 = at(sk, off(O_BYTES_ACKED));
    let received: u64 = at(sk, off(O_BYTES_RECEIVED));
    let fin_received = sk_flags & (1 << SOCK_DONE) != 0;
    let fin_sent = match u32::from(state) {
        tcp_stats::FIN_WAIT1 | tcp_stats::FIN_WAIT2 | tcp_stats::CLOSING | tcp_stats::LAST_ACK => {
            true
        }
        tcp_stats::CLOSE => {
            // Sequence space used after the SYN (data, and our FIN if
            // queued) against the data bytes transmitted at least once
            // (`bytes_sent` counts retransmissions, `bytes_retrans` them):
            // every byte went out and one more is used → our FIN. Data
            // still unsent (a reset): the graceful-end rule.
            let used = acked + u64::from(wseq.wrapping_sub(una));
            let sent: u64 = at(sk, off(O_BYTES_SENT));
            let retrans: u64 = at(sk, off(O_BYTES_RETRANS));
            let data = sent.wrapping_sub(retrans);
            if used == data + 2 {
                true
            } else if used == data + 1 {
                false
            } else {
                fin_received && una == wseq
            }
        }
        _ => false,
    };
    let d = tcp_stats::closed_counts(acked, wseq, una, received, fin_sent, fin_received);
    let cookie: u64 = at(sk, off(O_COOKIE));
    // Only a socket whose record is still in this data path's maps is
    // counted: every data path on the kernel (simulated nodes, tests) has
    // this hook and sees every marked socket, so a socket without a
    // record here is another data path's (or its record was overwritten,
    // after `SOCK_NAT_SLOTS` newer sockets: then counted opened only).
    if let Some(nat) = crate::sock_nat::of_socket(cookie) {
        tcp_stats::count_nat4(at(sk, off(O_RCV_SADDR)), &nat, d);
        return;
    }
    if let Some(nat6) = crate::lb6::balanced6(cookie) {
        tcp_stats::count_nat6(ip6(sk, off(O_V6_RCV_SADDR)), &nat6, d);
    }
}

/// `SOCK_DONE` in `enum sock_flags` (`include/net/sock.h`: `SOCK_DEAD`,
/// `SOCK_DONE`, ...; its place has not changed since Linux 2.6).
const SOCK_DONE: u32 = 1;

/// The `struct in6_addr` at byte offset `o` of `sk`, as four words.
#[inline(always)]
fn ip6(sk: usize, o: usize) -> [u32; 4] {
    at(sk, o)
}
