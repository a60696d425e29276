//! `sockops`: when a client's connection is established,
//! - a redirected one: publish its original destination (from the socket's
//!   [`crate::sock_nat`] record) under the client's `{ip, port}`, so the
//!   node proxy finds it from the peer address its `accept()` returns (the
//!   proxy cannot see the client's socket);
//! - a kernel-balanced one: count it opened in [`TCP_STATS`] under
//!   (client, service VIP, backend) and turn on the socket's state
//!   callback, so its close is counted with its byte counts (Istio's
//!   `istio_tcp_*` metrics for connections no proxy sees).
//!
//! The kernel runs this program for every TCP event of every socket in the
//! pods cgroup (about five per connection: timeout init, receive window
//! init, connect, ECN, established); the callbacks it invokes without being
//! asked cannot be turned off per socket. Every event but the active open
//! completing (and the state changes of the balanced sockets that asked
//! for them) exits after one context load and two compares.
use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_TCP_CLOSE,
    },
    macros::sock_ops,
    programs::SockOpsContext,
    EbpfContext,
};
use proxy_common::{sock_nat, ClientKey, SockNat, TcpStats, TcpStatsKey};

use crate::maps::{ORIG_DST, TCP_STATS};

/// 1: count kernel-balanced connections in [`TCP_STATS`] (the default);
/// 0: don't (no counting, no state callbacks). Set at load time (a read-only
/// global the verifier treats as a constant, so the branch on it costs
/// nothing) by `DatapathConfig::tcp_stats`; off only to measure what the
/// counters cost (`cargo xtask bench l4-counters`).
#[unsafe(no_mangle)]
static TCP_STATS_ON: u8 = 1;

/// Runs for TCP events of sockets in the pods cgroup; acts on the client's
/// active open completing (before its final ACK is sent, so before the
/// proxy can accept the connection) and on a balanced socket closing.
#[sock_ops]
pub fn orig_dst_sockops(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    if op == BPF_SOCK_OPS_STATE_CB {
        closed(&ctx);
        return 1;
    }
    if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 1;
    }
    let Some(nat) = crate::sock_nat::of_socket(crate::sock_nat::cookie(ctx.as_ptr())) else {
        crate::lb6::publish_orig_dst6(&ctx);
        return 1;
    };
    if nat.flags & sock_nat::REDIRECTED == 0 {
        // SAFETY: a plain load of a global (volatile: its value is the
        // loader's, not the one compiled in).
        if unsafe { core::ptr::read_volatile(&TCP_STATS_ON) } != 0 {
            opened(&ctx, &nat);
        }
        return 1;
    }
    let key = ClientKey {
        ip: ctx.local_ip4(),
        // `local_port` is in host byte order, unlike every other port here.
        port: (ctx.local_port() as u16).to_be(),
        pad: 0,
    };
    let _ = ORIG_DST.insert(&key, &nat.orig, 0);
    1
}

/// The stats key of a balanced socket whose client address is `src`.
#[inline(always)]
fn key_of(src: u32, nat: &SockNat) -> TcpStatsKey {
    TcpStatsKey {
        src,
        vip: nat.orig.ip,
        backend: nat.to.ip,
        vport: nat.orig.port,
        bport: nat.to.port,
    }
}

/// Counts a kernel-balanced connection opened and asks for its state
/// changes.
#[inline(always)]
fn opened(ctx: &SockOpsContext, nat: &SockNat) {
    let key = key_of(ctx.local_ip4(), nat);
    match TCP_STATS.get_ptr_mut(&key) {
        // SAFETY: this CPU's value; nothing else writes it while we run.
        Some(s) => unsafe { (*s).opened += 1 },
        None => {
            let _ = TCP_STATS.insert(
                &key,
                &TcpStats {
                    opened: 1,
                    ..TcpStats::default()
                },
                0,
            );
        }
    }
    let _ = ctx.set_cb_flags(BPF_SOCK_OPS_STATE_CB_FLAG as i32);
}

/// The peer port in network byte order: sock_ops stores it in the upper
/// half of the word on little-endian kernels (Linux's
/// `sock_ops_convert_ctx_access`), in the lower half on others.
#[inline(always)]
fn remote_port(ctx: &SockOpsContext) -> u16 {
    // SAFETY: a plain load of the context field.
    let p = unsafe { core::ptr::read_volatile(&raw const (*ctx.ops).remote_port) };
    if p > 0xffff {
        (p >> 16) as u16
    } else {
        p as u16
    }
}

/// A balanced socket changed state: on `TCP_CLOSE`, count it closed with
/// the bytes it sent (acknowledged) and received.
#[inline(always)]
fn closed(ctx: &SockOpsContext) {
    if ctx.arg(1) != BPF_TCP_CLOSE {
        return;
    }
    // Every context field is read up front, each with its own constant
    // offset: the verifier refuses a load through a context pointer the
    // compiler offset in a shared branch.
    // SAFETY: the kernel hands a valid `bpf_sock_ops`; plain loads.
    let (src, peer, acked, received) = unsafe {
        let ops = ctx.ops;
        (
            core::ptr::read_volatile(&raw const (*ops).local_ip4),
            core::ptr::read_volatile(&raw const (*ops).remote_ip4),
            core::ptr::read_volatile(&raw const (*ops).bytes_acked),
            core::ptr::read_volatile(&raw const (*ops).bytes_received),
        )
    };
    let peer_port = remote_port(ctx);
    // The record is gone if its slot was reused meanwhile: the service is
    // then unknown (0), the backend is the socket's peer.
    let key = match crate::sock_nat::of_socket(crate::sock_nat::cookie(ctx.as_ptr())) {
        Some(nat) if nat.flags & sock_nat::REDIRECTED == 0 => key_of(src, &nat),
        _ => TcpStatsKey {
            src,
            vip: 0,
            backend: peer,
            vport: 0,
            bport: peer_port,
        },
    };
    match TCP_STATS.get_ptr_mut(&key) {
        // SAFETY: this CPU's value; nothing else writes it while we run.
        Some(s) => unsafe {
            (*s).closed += 1;
            (*s).sent += acked;
            (*s).received += received;
        },
        None => {
            let _ = TCP_STATS.insert(
                &key,
                &TcpStats {
                    opened: 0,
                    closed: 1,
                    sent: acked,
                    received,
                },
                0,
            );
        }
    }
}
