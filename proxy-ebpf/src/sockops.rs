//! `sockops`: when a redirected connection is established, publish its
//! original destination (from the socket's [`crate::sock_nat`] record)
//! under the client's `{ip, port}`, so the node proxy finds it from the
//! peer address its `accept()` returns (the proxy cannot see the client's
//! socket).
//!
//! The kernel runs this program for every TCP event of every socket in the
//! pods cgroup (about five per connection: timeout init, receive window
//! init, connect, ECN, established); the callbacks it invokes without being
//! asked cannot be turned off per socket. Every event but the active open
//! completing exits after one context load and compare.
use aya_ebpf::{
    bindings::BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, macros::sock_ops, programs::SockOpsContext,
    EbpfContext,
};
use proxy_common::{sock_nat, ClientKey};

use crate::maps::ORIG_DST;

/// Runs for TCP events of sockets in the pods cgroup; acts on the client's
/// active open completing (before its final ACK is sent, so before the
/// proxy can accept the connection).
#[sock_ops]
pub fn orig_dst_sockops(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 1;
    }
    let Some(nat) = crate::sock_nat::of_socket(crate::sock_nat::cookie(ctx.as_ptr())) else {
        return 1;
    };
    if nat.flags & sock_nat::REDIRECTED == 0 {
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
