//! Same-node hops without the TCP stack (issue 20): the sockhash
//! `SOCKMAP` of the sockets at both ends of a connection through Strait's
//! proxy that never leaves this node, and the `sk_msg` program
//! `sockmap_redirect` attached to it, which moves each `sendmsg()` of one
//! end straight into the other end's receive queue
//! (`bpf_msg_redirect_hash(.., BPF_F_INGRESS)`, as Cilium's
//! `bpf_sockops.c`/`bpf_redir.c` and merbridge do).
//!
//! Who is inserted (IPv4 only; all at the established callbacks, which run
//! anyway):
//! - a meshed client pod's socket redirected to the node proxy (the pods
//!   cgroup's sockops program, active open, [`client_established`]), and
//!   the proxy's accepted end of it ([`sockmap_daemon_ops`], attached to
//!   the daemon's own cgroup: passive open on the outbound listener);
//! - the proxy's in-pod delivery to a local pod (active open from
//!   `127.0.0.6`, [`sockmap_daemon_ops`]) and the pod's accepted end of it
//!   (pods cgroup, passive open from `127.0.0.6`,
//!   [`passive_established`]).
//!
//! A send is redirected only when its peer is in the map too, so a pair
//! with one end missing (map full, the daemon's program not attached)
//! keeps the TCP path. The kernel drops a socket from the map when it
//! closes. FIN/RST still travel over TCP (only data is redirected).
//! A socket is never taken out of the map by these programs: removing it
//! destroys its psock, and with it the redirected data it has not read.
//! A sender whose send finds no peer (its first bytes left before the
//! other end was inserted), or whose receiver already holds its receive
//! buffer's worth unread, stays on TCP for good ([`SOCKMAP_TCP`]), so its
//! later bytes cannot overtake the ones TCP still carries, and TCP's
//! window pushes back on it (see [`sockmap_redirect`]).
use aya_ebpf::{
    bindings::{sk_action, BPF_F_INGRESS},
    helpers::{bpf_msg_apply_bytes, bpf_probe_read_kernel},
    macros::{map, sk_msg, sock_ops},
    maps::{LruHashMap, SockHash},
    programs::{SkMsgContext, SockOpsContext},
};
use proxy_common::{SockPair, INBOUND_PASSTHROUGH_SOURCE};

use crate::maps::PROXY_CONFIG;

/// Same-node socket pairs, keyed by each socket's own 4-tuple.
#[map(name = "SOCKMAP")]
pub static SOCKMAP: SockHash<SockPair> = SockHash::with_max_entries(proxy_common::MAX_SOCKMAP, 0);

/// Senders in `SOCKMAP` that have sent data over TCP (a send found no
/// peer in the map, or the receiver was full): they never redirect again,
/// so their bytes reach the peer in the order sent (see
/// [`sockmap_redirect`]; their psock also keeps the verdict for 4 GiB,
/// so only past that could an LRU eviction let one redirect again). Keyed like
/// `SOCKMAP` (the sender's own 4-tuple); an entry is cleared when a socket
/// with that 4-tuple is inserted, so a reused 4-tuple starts clean and a
/// closed connection's entry is harmless until the LRU drops it.
#[map(name = "SOCKMAP_TCP")]
pub static SOCKMAP_TCP: LruHashMap<SockPair, u8> =
    LruHashMap::with_max_entries(proxy_common::MAX_SOCKMAP, 0);

/// The kernel address of each socket in `SOCKMAP` (its `struct sock`),
/// under the same key, written when it is inserted: what the `sk_msg`
/// program reads the receiver's queue through (it only has the sender).
/// Only written when [`SOCK_RCVBUF`] is known.
#[map(name = "SOCKMAP_SK")]
pub static SOCKMAP_SK: LruHashMap<SockPair, u64> =
    LruHashMap::with_max_entries(proxy_common::MAX_SOCKMAP, 0);

/// Byte offset in `struct sock` of `sk_backlog.rmem_alloc` (`int`: the
/// socket's receive memory, which counts the redirected data queued on it
/// too on kernels like 6.18); 0 when unknown. Set by the loader from the
/// kernel's BTF.
#[unsafe(no_mangle)]
static SOCK_RMEM_ALLOC: u32 = 0;

/// Byte offset in `struct sock` of `sk_rcvbuf` (`int`, the receive buffer
/// `SO_RCVBUF` sets); 0 when unknown (then nothing bounds the redirect).
#[unsafe(no_mangle)]
static SOCK_RCVBUF: u32 = 0;

/// Bytes a receiver may hold unread beyond its receive buffer before its
/// sender moves to TCP: what TCP would let the writer queue in its own
/// send buffer (the node's `tcp_wmem` maximum, set by the loader).
#[unsafe(no_mangle)]
static SOCK_SND_ALLOWANCE: u32 = 4 << 20;

/// 1 when the daemon runs with the redirect on (`strait run --sockmap`):
/// set by the loader; the pods cgroup's sockops program inserts nothing
/// otherwise, so a daemon without it leaves every socket untouched.
#[unsafe(no_mangle)]
static SOCKMAP_ON: u8 = 0;

const AF_INET: u32 = 2;
/// `BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB`.
const ACTIVE_ESTABLISHED: u32 = 4;
/// `BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB`.
pub const PASSIVE_ESTABLISHED: u32 = 5;

/// Whether the redirect is on (see [`SOCKMAP_ON`]).
#[inline(always)]
fn on() -> bool {
    // SAFETY: a plain load of a global (volatile: its value is the
    // loader's, not the one compiled in).
    unsafe { core::ptr::read_volatile(&SOCKMAP_ON) != 0 }
}

/// ([`SOCK_RMEM_ALLOC`], [`SOCK_RCVBUF`]) when the loader set both.
#[inline(always)]
fn offsets() -> Option<(u64, u64)> {
    // SAFETY: plain loads of read-only globals (constants to the
    // verifier, so with 0 the code using them is never loaded).
    let (rmem, rcvbuf) = unsafe {
        (
            core::ptr::read_volatile(&SOCK_RMEM_ALLOC),
            core::ptr::read_volatile(&SOCK_RCVBUF),
        )
    };
    if rmem == 0 || rcvbuf == 0 {
        None
    } else {
        Some((rmem as u64, rcvbuf as u64))
    }
}

/// Whether the socket stored under `key` holds at least its receive
/// buffer's worth of data it has not read (redirected or not), plus
/// [`SOCK_SND_ALLOWANCE`], read at its
/// kernel address ([`SOCKMAP_SK`]; a fault-safe read: a stale address
/// reads a wrong number, never crashes). `false` when unknown.
#[inline(always)]
fn receiver_full(key: &SockPair) -> bool {
    let Some((o_rmem, o_rcvbuf)) = offsets() else {
        return false;
    };
    // SAFETY: a lookup of a plain u64 value.
    let Some(&sk) = (unsafe { SOCKMAP_SK.get(key) }) else {
        return false;
    };
    // SAFETY: `bpf_probe_read_kernel` copies from any kernel address and
    // returns an error instead of faulting.
    let (rmem, rcvbuf) = unsafe {
        (
            bpf_probe_read_kernel((sk + o_rmem) as *const i32),
            bpf_probe_read_kernel((sk + o_rcvbuf) as *const i32),
        )
    };
    match (rmem, rcvbuf) {
        (Ok(rmem), Ok(rcvbuf)) => {
            // SAFETY: a plain load of a read-only global.
            let allowance = unsafe { core::ptr::read_volatile(&SOCK_SND_ALLOWANCE) };
            rmem as i64 >= rcvbuf as i64 + allowance as i64
        }
        _ => false,
    }
}

/// The established socket's own 4-tuple. `remote_port` comes in network
/// byte order in the upper 16 bits of the field (little-endian targets),
/// `local_port` in host byte order.
#[inline(always)]
fn key_of_ops(ctx: &SockOpsContext) -> SockPair {
    SockPair {
        local_ip: ctx.local_ip4(),
        remote_ip: ctx.remote_ip4(),
        local_port: ctx.local_port(),
        remote_port: u32::from_be(ctx.remote_port()),
    }
}

/// Inserts the established socket of `ctx`. A full map or a refused
/// insert leaves the socket on the TCP path.
#[inline(always)]
fn insert(ctx: &SockOpsContext) {
    let mut key = key_of_ops(ctx);
    // A peer already moved to TCP (its send raced this insert) marked this
    // end too: keep both on TCP. Otherwise a new connection with a reused
    // 4-tuple starts on the redirect. (A stale mark of a reused peer
    // 4-tuple only costs that connection the redirect.)
    // SAFETY: a lookup whose value is only tested for presence.
    if unsafe { SOCKMAP_TCP.get(&key.peer()) }.is_some() {
        let _ = SOCKMAP_TCP.insert(&key, &1, 0);
    } else {
        let _ = SOCKMAP_TCP.remove(&key);
    }
    // SAFETY: the context pointer is the kernel's `bpf_sock_ops`.
    let ops = unsafe { &mut *ctx.ops };
    // SAFETY: a plain load of a context field (the socket, or null).
    let sk = unsafe { core::ptr::read_volatile(&raw const ops.__bindgen_anon_2.sk) } as u64;
    if SOCKMAP.update(&mut key, ops, 0).is_ok() && sk != 0 && offsets().is_some() {
        let _ = SOCKMAP_SK.insert(&key, &sk, 0);
    }
}

/// Pods cgroup, active open completing of a connection connect4
/// redirected to the node proxy: the client's end of a same-node pair.
#[inline(always)]
pub fn client_established(ctx: &SockOpsContext) {
    if on() && ctx.family() == AF_INET {
        insert(ctx);
    }
}

/// Pods cgroup, passive open completing: a pod's end of the proxy's
/// in-pod delivery (the remote end is `127.0.0.6`).
#[inline(always)]
pub fn passive_established(ctx: &SockOpsContext) {
    if on() && ctx.family() == AF_INET && ctx.remote_ip4() == INBOUND_PASSTHROUGH_SOURCE {
        insert(ctx);
    }
}

/// Attached (with `--sockmap`) to the daemon's own cgroup: inserts the
/// proxy's end of each same-node pair — a connection accepted on the
/// outbound listener (`PROXY_CONFIG`) and a delivery into a pod from
/// `127.0.0.6`. Every other event exits after the op compare.
#[sock_ops]
pub fn sockmap_daemon_ops(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    if op == PASSIVE_ESTABLISHED {
        let Some(proxy) = PROXY_CONFIG.get(0) else {
            return 1;
        };
        if ctx.family() == AF_INET
            && ctx.local_port() == u16::from_be(proxy.port) as u32
            && ctx.local_ip4() == proxy.ip
        {
            insert(&ctx);
        }
    } else if op == ACTIVE_ESTABLISHED
        && ctx.family() == AF_INET
        && ctx.local_ip4() == INBOUND_PASSTHROUGH_SOURCE
    {
        insert(&ctx);
    }
    1
}

/// Runs for every `sendmsg()` of a socket in `SOCKMAP`: the data goes to
/// the receive queue of its peer (the socket stored under the swapped
/// 4-tuple) when the peer is in the map, else over TCP as usual.
///
/// Order: the receiver reads its redirected queue (psock) before its TCP
/// receive queue (`tcp_bpf_recvmsg`), so a sender may move from the
/// redirect to TCP but never back: bytes it sent over TCP that the
/// receiver has not read yet would be overtaken by later redirected ones
/// (a client's first bytes sent before the proxy's end was inserted). So
/// the first send that finds no peer puts the sender in `SOCKMAP_TCP`, and
/// every later send of it takes TCP.
///
/// Backpressure: the kernel queues redirected data on the receiver without
/// checking its receive buffer. So before redirecting, the program reads
/// the receiver's receive memory and buffer ([`receiver_full`]); once the
/// receiver holds its buffer's worth unread plus what the writer's own
/// TCP send buffer could have held, the sender moves to TCP for
/// good as above, where the receiver's window — computed from the same
/// receive memory, redirected bytes included — stops it as TCP does.
#[sk_msg]
pub fn sockmap_redirect(ctx: SkMsgContext) -> u32 {
    // SAFETY: the kernel hands a valid `sk_msg_md` to this program.
    let m = unsafe { &*ctx.msg };
    if m.family != AF_INET {
        return sk_action::SK_PASS;
    }
    let me = SockPair {
        local_ip: m.local_ip4,
        remote_ip: m.remote_ip4,
        local_port: m.local_port,
        remote_port: u32::from_be(m.remote_port),
    };
    // SAFETY: a lookup whose value is only tested for presence.
    if unsafe { SOCKMAP_TCP.get(&me) }.is_some() {
        return on_tcp_for_good(&ctx, &me);
    }
    let mut peer = me.peer();
    if receiver_full(&peer) {
        return on_tcp_for_good(&ctx, &me);
    }
    // A missing peer returns SK_DROP from the helper and sets no
    // redirect; SK_PASS then sends over TCP, from now on for good.
    if SOCKMAP.redirect_msg(&ctx, &mut peer, BPF_F_INGRESS as u64) != sk_action::SK_PASS as i64 {
        return on_tcp_for_good(&ctx, &me);
    }
    sk_action::SK_PASS
}

/// The verdict of a sender that stays on TCP: SK_PASS (no redirect),
/// remembered twice — in the socket's own psock, which applies it to the
/// next 4 GiB sent without running the program again
/// (`bpf_msg_apply_bytes`: freed with the socket, never evicted), and in
/// [`SOCKMAP_TCP`] for what follows.
///
/// The peer is marked too, so both directions take TCP (a peer may always
/// leave the redirect: its receiver reads the redirected queue first):
/// with one direction on TCP and the other redirected, the TCP side's
/// ACKs never ride on replies and wait for the delayed-ACK timer, which
/// holds a Nagle sender's next request (measured: a p99 of ~75 ms at
/// 1,000 requests/s).
#[inline(always)]
fn on_tcp_for_good(ctx: &SkMsgContext, me: &SockPair) -> u32 {
    let _ = SOCKMAP_TCP.insert(me, &1, 0);
    let _ = SOCKMAP_TCP.insert(&me.peer(), &1, 0);
    // SAFETY: the context pointer is the kernel's `sk_msg_md`.
    unsafe { bpf_msg_apply_bytes(ctx.msg, u32::MAX) };
    sk_action::SK_PASS
}
