//! Unconnected UDP: `cgroup/sendmsg4` balances each datagram sent to a
//! service VIP (and records the reverse NAT); `cgroup/recvmsg4` makes the
//! replies appear to come from the VIP, so a client that checks the source
//! of a DNS-style reply accepts it. Connected UDP sockets are balanced by
//! connect4 and restored here from their [`crate::sock_nat`] record.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext, EbpfContext};
use proxy_common::{proto, OrigDst};

use crate::{
    lb4::{refuse, translate, Verdict, ALLOW},
    rev_nat,
};

/// UDP `sendmsg()` hook (unconnected sockets).
#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands a valid `bpf_sock_addr` to this hook.
    let sa = unsafe { &mut *ctx.sock_addr };
    // SAFETY: `sk` is always set for sock_addr hooks.
    let client_ip = unsafe { (*sa.__bindgen_anon_1.sk).src_ip4 };
    let (ip, port) = (sa.user_ip4, sa.user_port as u16);
    match translate(ctx.as_ptr(), ip, port, proto::UDP, client_ip) {
        Verdict::Pass => ALLOW,
        Verdict::Refuse => refuse(),
        Verdict::Rewrite { to, .. } => {
            rev_nat::remember_unconnected(&ctx, &to, &OrigDst { ip, port, pad: 0 });
            sa.user_ip4 = to.ip;
            sa.user_port = to.port as u32;
            ALLOW
        }
    }
}

/// UDP `recvmsg()` hook: the reply's source becomes the VIP.
#[cgroup_sock_addr(recvmsg4)]
pub fn recvmsg4(ctx: SockAddrContext) -> i32 {
    rev_nat::restore(&ctx, true);
    ALLOW
}
