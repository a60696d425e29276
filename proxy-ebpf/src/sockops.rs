//! `sockops`: when a client's connection is established,
//! - a redirected one: publish its original destination (from the socket's
//!   [`crate::sock_nat`] record) under the client's `{ip, port}`, so the
//!   node proxy finds it from the peer address its `accept()` returns (the
//!   proxy cannot see the client's socket);
//! - a kernel-balanced one (IPv4, IPv4-mapped or native IPv6): count it
//!   opened and mark it for the release counter ([`crate::tcp_release`]),
//!   or, on kernels without its kfuncs, turn on the socket's state
//!   callback, so it is counted closed with its byte counts
//!   ([`crate::tcp_stats`]: Istio's `istio_tcp_*` metrics for connections
//!   no proxy sees).
//!
//! The kernel runs this program for every TCP event of every socket in the
//! pods cgroup (about five per connection: timeout init, receive window
//! init, connect, ECN, established); the callbacks it invokes without being
//! asked cannot be turned off per socket. Every event but the active open
//! completing (and the state changes of the balanced sockets that asked
//! for them) exits after one context load and two compares. With the
//! release counter no state callback is asked for (the mark,
//! `BPF_SOCK_OPS_RTO_CB_FLAG`, adds a run only on a retransmission
//! timeout); without it a balanced socket's state callback is turned off
//! again at the first state change where its counts are final: one extra
//! run per connection closed with `close()`, two when the peer closes
//! first.
use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB},
    macros::sock_ops,
    programs::SockOpsContext,
    EbpfContext,
};
use proxy_common::{sock_nat, ClientKey};

use crate::maps::ORIG_DST;
use crate::tcp_stats;

/// Runs for TCP events of sockets in the pods cgroup; acts on the client's
/// active open completing (before its final ACK is sent, so before the
/// proxy can accept the connection) and on a balanced socket's state
/// changes.
#[sock_ops]
pub fn orig_dst_sockops(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    if op == BPF_SOCK_OPS_STATE_CB {
        if tcp_stats::on() {
            tcp_stats::state_changed(&ctx);
        }
        return 1;
    }
    if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        if op == crate::sockmap::PASSIVE_ESTABLISHED {
            crate::sockmap::passive_established(&ctx);
        }
        return 1;
    }
    let cookie = crate::sock_nat::cookie(ctx.as_ptr());
    let Some(rec) = crate::sock_nat::record(cookie) else {
        crate::lb6::publish_orig_dst6(&ctx);
        return 1;
    };
    // SAFETY: an array slot, copied out at once.
    let nat = unsafe { *rec };
    if nat.flags & sock_nat::REDIRECTED == 0 {
        if tcp_stats::on() {
            tcp_stats::opened(&ctx, cookie, rec, &nat);
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
    crate::sockmap::client_established(&ctx);
    1
}
