//! Reverse NAT by socket cookie: the peer address a rewritten socket
//! reports (`getpeername()`, `recvmsg()` source) is the one the application
//! connected to — the VIP, or the original destination of a redirected
//! connection — not the backend or the proxy.
use aya_ebpf::{
    helpers::bpf_get_socket_cookie, macros::cgroup_sock_addr, programs::SockAddrContext,
    EbpfContext,
};
use proxy_common::RevNatKey;

use crate::{lb4::ALLOW, maps::REV_NAT};

/// Rewrites the context's peer address back to what the application asked
/// for, when this socket's destination was rewritten.
#[inline(always)]
pub fn restore(ctx: &SockAddrContext) {
    // SAFETY: the kernel hands a valid `bpf_sock_addr` to these hooks.
    let sa = unsafe { &mut *ctx.sock_addr };
    let key = RevNatKey {
        // SAFETY: ctx is a sock_addr context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        ip: sa.user_ip4,
        port: sa.user_port as u16,
        pad: 0,
    };
    // SAFETY: copied out at once.
    if let Some(orig) = unsafe { REV_NAT.get(&key) }.copied() {
        sa.user_ip4 = orig.ip;
        sa.user_port = orig.port as u32;
    }
}

/// `getpeername()` hook: a balanced socket reports the VIP.
#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    restore(&ctx);
    ALLOW
}
