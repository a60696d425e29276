//! Reverse NAT: the peer address a rewritten socket reports
//! (`getpeername()`, `recvmsg()` source) is the one the application asked
//! for — the VIP, or the original destination of a redirected connection —
//! not the backend or the proxy. Connected sockets have one translation,
//! in [`crate::sock_nat`]; unconnected UDP sockets, which may send to
//! several VIPs, one per rewritten address, by socket cookie in `REV_NAT`.
use aya_ebpf::{
    helpers::bpf_get_socket_cookie, macros::cgroup_sock_addr, programs::SockAddrContext,
    EbpfContext,
};
use proxy_common::{OrigDst, RevNatKey};

use crate::{lb4::ALLOW, maps::REV_NAT, sock_nat};

/// Records for an unconnected UDP socket that datagrams to `orig` go to
/// `to`, so replies from `to` appear to come from `orig`.
#[inline(always)]
pub fn remember_unconnected(ctx: &SockAddrContext, to: &OrigDst, orig: &OrigDst) {
    let key = RevNatKey {
        // SAFETY: ctx is a sock_addr context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        ip: to.ip,
        port: to.port,
        pad: 0,
    };
    let _ = REV_NAT.insert(&key, orig, 0);
}

/// The address the application asked for when this socket's peer
/// `ip:port` (network byte order) is a rewritten destination. `unconnected`
/// also consults the UDP table (recvmsg; getpeername needs a connected
/// socket).
#[inline(always)]
pub fn original(ctx: &SockAddrContext, ip: u32, port: u16, unconnected: bool) -> Option<OrigDst> {
    let cookie = sock_nat::cookie(ctx.as_ptr());
    if let Some(orig) = sock_nat::original(cookie, ip, port) {
        return Some(orig);
    }
    if !unconnected {
        return None;
    }
    let key = RevNatKey {
        cookie,
        ip,
        port,
        pad: 0,
    };
    // SAFETY: copied out at once.
    unsafe { REV_NAT.get(&key) }.copied()
}

/// Rewrites the context's peer address back to what the application asked
/// for, when this socket's destination was rewritten.
#[inline(always)]
pub fn restore(ctx: &SockAddrContext, unconnected: bool) {
    // SAFETY: the kernel hands a valid `bpf_sock_addr` to these hooks.
    let sa = unsafe { &mut *ctx.sock_addr };
    if let Some(orig) = original(ctx, sa.user_ip4, sa.user_port as u16, unconnected) {
        sa.user_ip4 = orig.ip;
        sa.user_port = orig.port as u32;
    }
}

/// `getpeername()` hook: a balanced socket reports the VIP.
#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    restore(&ctx, false);
    ALLOW
}
