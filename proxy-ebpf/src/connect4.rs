//! `cgroup/connect4`: socket-level load balancing for TCP and connected
//! UDP, the approach of Cilium's `bpf_sock.c`: the backend is chosen once
//! per `connect()` and the socket's destination rewritten, so no packet is
//! ever translated.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext, EbpfContext};
use proxy_common::{proto, OrigDst};

use crate::{
    lb4::{refuse, translate, Verdict, ALLOW},
    sock_nat,
};

/// IPv4 `connect()` hook.
#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands a valid `bpf_sock_addr` to this hook.
    let sa = unsafe { &mut *ctx.sock_addr };
    // SAFETY: `sk` is always set for sock_addr hooks.
    let client_ip = unsafe { (*sa.__bindgen_anon_1.sk).src_ip4 };
    let (ip, port) = (sa.user_ip4, sa.user_port as u16);
    let proto_ = sa.protocol as u8;
    match translate(ctx.as_ptr(), ip, port, proto_, client_ip) {
        Verdict::Pass => {
            // Only UDP sockets connect again after a success; a TCP socket
            // never rewritten has no entry, and asking would assign it a
            // cookie for nothing.
            if proto_ != proto::TCP {
                sock_nat::forget(sock_nat::cookie(ctx.as_ptr()));
            }
            ALLOW
        }
        Verdict::Refuse => refuse(),
        Verdict::Rewrite { to, redirected } => {
            let orig = OrigDst { ip, port, pad: 0 };
            sock_nat::remember(sock_nat::cookie(ctx.as_ptr()), &to, &orig, redirected);
            sa.user_ip4 = to.ip;
            sa.user_port = to.port as u32;
            ALLOW
        }
    }
}
