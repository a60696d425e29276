//! `fentry/tcp_close`: counts a kernel-balanced TCP connection closed, with
//! its exact bytes, when its application closes the socket — no sockops
//! state callback (each one a program run on the connection path) and no
//! per-socket cgroup program run.
//!
//! The sockops program marks a balanced socket when its active open
//! completes (it counts it opened there, in a run that happens anyway) by
//! setting `BPF_SOCK_OPS_RTO_CB_FLAG` in the socket's callback flags
//! (`tcp_sock.bpf_sock_ops_cb_flags`): a bit the kernel keeps per socket,
//! whose only effect is a sockops run at a retransmission timeout (rare;
//! the program returns at once). Every TCP `close()` on the node runs this
//! program through a BPF trampoline; an unmarked socket costs one helper
//! call and a one-byte load.
//!
//! At `tcp_close` entry the application wrote its last byte (the file's last
//! reference is gone) and reads no more (data arriving later resets the
//! connection, `LINUX_MIB_TCPABORTONDATA`): both counts are final. Bytes
//! written = bytes acknowledged + bytes queued (`write_seq - snd_una`), less
//! the SYN and our FIN if one is queued; bytes received = `bytes_received`
//! less the peer's FIN if it came (`SOCK_DONE`, set by `tcp_fin`). Our FIN
//! is queued in the states after a `shutdown(SHUT_WR)` (`FIN_WAIT1`,
//! `FIN_WAIT2`, `CLOSING`, `LAST_ACK`); in `TCP_CLOSE` (the connection
//! ended before the application closed the socket) it counts as sent when
//! the peer's FIN came and every byte was acknowledged (the graceful end of
//! a half-close) — off by one byte only for a reset after a FIN (module
//! docs of [`crate::tcp_stats`] compare with the state-callback design).
//!
//! Fields are loaded through the socket's BTF pointer
//! (`bpf_skc_to_tcp_sock`) at offsets the loader takes from the kernel's
//! BTF ([`TCP_CLOSE_OFFSETS`]); the program is loaded only when all are
//! known ([`TCP_CLOSE_HOOK`]).
use aya_ebpf::{
    helpers::{bpf_get_socket_cookie, bpf_skc_to_tcp_sock},
    macros::fentry,
    programs::FEntryContext,
};

use crate::tcp_stats;

/// 1: the loader attaches this program and the sockops program marks
/// balanced sockets for it; 0: closes are counted by sockops state
/// callbacks ([`crate::tcp_stats::state_changed`]).
#[unsafe(no_mangle)]
static TCP_CLOSE_HOOK: u8 = 0;

/// Byte offsets in the kernel's `struct tcp_sock` (which opens with
/// `struct sock`, which opens with `struct sock_common`), in the order of
/// the `O_*` constants below; set by the loader from the kernel's BTF.
#[unsafe(no_mangle)]
static TCP_CLOSE_OFFSETS: [u32; 12] = [0; 12];

const O_CB_FLAGS: usize = 0;
const O_SND_UNA: usize = 1;
const O_BYTES_ACKED: usize = 2;
const O_BYTES_RECEIVED: usize = 3;
const O_SK_FLAGS: usize = 4;
const O_STATE: usize = 5;
const O_FAMILY: usize = 6;
const O_RCV_SADDR: usize = 7;
const O_DADDR: usize = 8;
const O_DPORT: usize = 9;
const O_V6_RCV_SADDR: usize = 10;
const O_V6_DADDR: usize = 11;

/// Whether the loader attached this program (see [`TCP_CLOSE_HOOK`]).
#[inline(always)]
pub fn hooked() -> bool {
    // SAFETY: a plain load of a global the loader set.
    unsafe { core::ptr::read_volatile(&TCP_CLOSE_HOOK) != 0 }
}

#[inline(always)]
fn off(i: usize) -> usize {
    // SAFETY: a plain load of a read-only global (a constant to the
    // verifier).
    unsafe { core::ptr::read_volatile(&TCP_CLOSE_OFFSETS[i]) as usize }
}

/// Loads a `T` at byte offset `o` of the BTF pointer `tp`.
///
/// SAFETY: `tp` is a `struct tcp_sock` BTF pointer (the verifier checks the
/// constant offset and size against the kernel's type; faults read 0).
#[inline(always)]
unsafe fn at<T: Copy>(tp: *const u8, o: usize) -> T {
    unsafe { core::ptr::read_volatile(tp.add(o).cast::<T>()) }
}

/// Runs at the entry of `tcp_close(struct sock *sk, long timeout)`.
#[fentry(function = "tcp_close")]
pub fn tcp_close_stats(ctx: FEntryContext) -> i32 {
    if tcp_stats::on() && hooked() {
        let sk: *mut core::ffi::c_void = ctx.arg(0);
        closing(sk);
    }
    0
}

#[inline(always)]
fn closing(sk: *mut core::ffi::c_void) {
    // SAFETY: `sk` is the traced function's `struct sock *` (a BTF
    // pointer); the helper returns it as a `struct tcp_sock`, or null.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk) } as *const u8;
    if tp.is_null() {
        return;
    }
    // SAFETY: loads through the BTF pointer at the loader's offsets.
    unsafe {
        let flags: u8 = at(tp, off(O_CB_FLAGS));
        if u32::from(flags) & tcp_stats::MARK_FLAG == 0 {
            return;
        }
        let state: u8 = at(tp, off(O_STATE));
        let sk_flags: u64 = at(tp, off(O_SK_FLAGS));
        let una: u32 = at(tp, off(O_SND_UNA));
        let wseq: u32 = at(tp, tcp_stats::write_seq_offset());
        let acked: u64 = at(tp, off(O_BYTES_ACKED));
        let received: u64 = at(tp, off(O_BYTES_RECEIVED));
        let fin_received = sk_flags & (1 << SOCK_DONE) != 0;
        let fin_sent = match u32::from(state) {
            tcp_stats::FIN_WAIT1
            | tcp_stats::FIN_WAIT2
            | tcp_stats::CLOSING
            | tcp_stats::LAST_ACK => true,
            tcp_stats::CLOSE => fin_received && una == wseq,
            _ => false,
        };
        let d = tcp_stats::closed_counts(acked, wseq, una, received, fin_sent, fin_received);
        let cookie = bpf_get_socket_cookie(sk);
        let family: u16 = at(tp, off(O_FAMILY));
        let peer = tcp_stats::Peer {
            family: u32::from(family),
            src4: at(tp, off(O_RCV_SADDR)),
            dst4: at(tp, off(O_DADDR)),
            dport: at(tp, off(O_DPORT)),
            src6: ip6(tp, off(O_V6_RCV_SADDR)),
            dst6: ip6(tp, off(O_V6_DADDR)),
        };
        tcp_stats::count_closed(cookie, &peer, d);
    }
}

/// `SOCK_DONE` in `enum sock_flags` (`include/net/sock.h`: `SOCK_DEAD`,
/// `SOCK_DONE`, ...; its place has not changed since Linux 2.6).
const SOCK_DONE: u32 = 1;

/// The `struct in6_addr` at byte offset `o` of `tp`, as four words.
///
/// SAFETY: as [`at`].
#[inline(always)]
unsafe fn ip6(tp: *const u8, o: usize) -> [u32; 4] {
    unsafe { [at(tp, o), at(tp, o + 4), at(tp, o + 8), at(tp, o + 12)] }
}
