//! `sockops`: when a redirected connection is established, copy its
//! original destination from the socket-cookie LRU to a key of the client's
//! `{ip, port}`, so the node proxy finds it from the peer address its
//! `accept()` returns (the proxy cannot learn the client's cookie).
use aya_ebpf::{
    bindings::BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, helpers::bpf_get_socket_cookie, macros::sock_ops,
    programs::SockOpsContext, EbpfContext,
};
use proxy_common::ClientKey;

use crate::maps::{ORIG_DST, ORIG_DST_BY_COOKIE};

/// Runs for TCP events of sockets in the pods cgroup; acts on the client's
/// active open completing (before its final ACK is sent, so before the
/// proxy can accept the connection).
#[sock_ops]
pub fn orig_dst_sockops(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 1;
    }
    // SAFETY: ctx is a sock_ops context, which this helper accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: copied out at once.
    let Some(orig) = (unsafe { ORIG_DST_BY_COOKIE.get(&cookie) }).copied() else {
        return 1;
    };
    let key = ClientKey {
        ip: ctx.local_ip4(),
        // `local_port` is in host byte order, unlike every other port here.
        port: (ctx.local_port() as u16).to_be(),
        pad: 0,
    };
    let _ = ORIG_DST.insert(&key, &orig, 0);
    let _ = ORIG_DST_BY_COOKIE.remove(&cookie);
    1
}
