//! The IPv6 hooks. For IPv4-mapped destinations (`::ffff:a.b.c.d`, as
//! dual-stack clients use) `connect6` and `sendmsg6` balance exactly like
//! their IPv4 twins over the IPv4 maps; for native IPv6 destinations they
//! balance over the IPv6 maps ([`crate::lb6`]). `getpeername6` and
//! `recvmsg6` restore the VIP for both.
use aya_ebpf::{
    bindings::bpf_sock_addr, macros::cgroup_sock_addr, programs::SockAddrContext, EbpfContext,
};
use proxy_common::{proto, OrigDst};

use crate::{
    lb4::{refuse, translate, Verdict, ALLOW},
    lb6::{self, Verdict6},
    rev_nat, sock_nat,
};

/// Third word of an IPv4-mapped IPv6 address (`0:0:0:0:0:ffff`), as the
/// kernel stores it (network byte order).
const V4_MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// The IPv4 address inside an IPv4-mapped `user_ip6`, if it is one.
#[inline(always)]
fn mapped_v4(sa: &bpf_sock_addr) -> Option<u32> {
    let ip6 = sa.user_ip6;
    (ip6[0] == 0 && ip6[1] == 0 && ip6[2] == V4_MAPPED).then_some(ip6[3])
}

/// Balances a `proto_` socket's IPv4-mapped destination; `connected`
/// (connect6) records the reverse NAT on the socket, else (sendmsg6) by
/// cookie.
#[inline(always)]
fn balance(ctx: &SockAddrContext, proto_: u8, connected: bool) -> i32 {
    // SAFETY: the kernel hands a valid `bpf_sock_addr` to these hooks.
    let sa = unsafe { &mut *ctx.sock_addr };
    let Some(ip) = mapped_v4(sa) else {
        return balance6(ctx, proto_, connected);
    };
    let port = sa.user_port as u16;
    match translate(ctx.as_ptr(), ip, port, proto_, 0) {
        Verdict::Pass => {
            // As in connect4: only a UDP socket can carry an older entry.
            if connected && proto_ != proto::TCP {
                sock_nat::forget(sock_nat::cookie(ctx.as_ptr()));
            }
            ALLOW
        }
        Verdict::Refuse => refuse(),
        Verdict::Rewrite { to, redirected } => {
            let orig = OrigDst { ip, port, pad: 0 };
            if connected {
                sock_nat::remember(sock_nat::cookie(ctx.as_ptr()), &to, &orig, redirected);
            } else {
                rev_nat::remember_unconnected(ctx, &to, &orig);
            }
            sa.user_ip6[3] = to.ip;
            sa.user_port = to.port as u32;
            ALLOW
        }
    }
}

/// Balances a native IPv6 destination (see [`balance`]).
#[inline(always)]
fn balance6(ctx: &SockAddrContext, proto_: u8, connected: bool) -> i32 {
    // SAFETY: the kernel hands a valid `bpf_sock_addr` to these hooks.
    let sa = unsafe { &mut *ctx.sock_addr };
    let ip = lb6::user_ip6(sa);
    let port = sa.user_port as u16;
    match lb6::translate6(ctx.as_ptr(), ip, port, proto_, lb6::client6(sa)) {
        Verdict6::Pass => {
            if connected && proto_ != proto::TCP {
                let cookie = sock_nat::cookie(ctx.as_ptr());
                lb6::forget(cookie);
                sock_nat::forget(cookie);
            }
            ALLOW
        }
        Verdict6::Refuse => refuse(),
        Verdict6::Rewrite { to, redirected } => {
            let orig = proxy_common::OrigDst6 { ip, port, pad: 0 };
            if connected {
                lb6::remember(sock_nat::cookie(ctx.as_ptr()), &to, &orig, redirected);
            } else {
                lb6::remember_unconnected(ctx, &to, &orig);
            }
            lb6::set_dst6(sa, &to);
            ALLOW
        }
    }
}

/// Restores a native IPv6 peer address (see [`restore`]).
#[inline(always)]
fn restore6(ctx: &SockAddrContext, unconnected: bool) -> i32 {
    // SAFETY: the kernel hands a valid `bpf_sock_addr` to these hooks.
    let sa = unsafe { &mut *ctx.sock_addr };
    let ip = lb6::user_ip6(sa);
    if let Some(orig) = lb6::original(ctx, ip, sa.user_port as u16, unconnected) {
        lb6::set_dst6(sa, &orig);
    }
    ALLOW
}

#[inline(always)]
fn restore(ctx: &SockAddrContext, unconnected: bool) -> i32 {
    // SAFETY: the kernel hands a valid `bpf_sock_addr` to these hooks.
    let sa = unsafe { &mut *ctx.sock_addr };
    let Some(ip) = mapped_v4(sa) else {
        return restore6(ctx, unconnected);
    };
    if let Some(orig) = rev_nat::original(ctx, ip, sa.user_port as u16, unconnected) {
        sa.user_ip6[3] = orig.ip;
        sa.user_port = orig.port as u32;
    }
    ALLOW
}

/// IPv6 `connect()` hook (TCP and connected UDP).
#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as in `balance`.
    let proto_ = unsafe { (*ctx.sock_addr).protocol } as u8;
    balance(&ctx, proto_, true)
}

/// IPv6 UDP `sendmsg()` hook (unconnected sockets).
#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    balance(&ctx, proto::UDP, false)
}

/// IPv6 UDP `recvmsg()` hook: replies appear from the VIP.
#[cgroup_sock_addr(recvmsg6)]
pub fn recvmsg6(ctx: SockAddrContext) -> i32 {
    restore(&ctx, true)
}

/// IPv6 `getpeername()` hook: a balanced socket reports the VIP.
#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    restore(&ctx, false)
}
