//! `cgroup/connect6`: the same load balancing for IPv6 sockets that connect
//! to an IPv4-mapped address (`::ffff:a.b.c.d`), as dual-stack clients do.
//! Native IPv6 services are not balanced yet.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext, EbpfContext};

use crate::lb4::{refuse, translate, Verdict, ALLOW};

/// Third word of an IPv4-mapped IPv6 address (`0:0:0:0:0:ffff`), as the
/// kernel stores it (network byte order).
const V4_MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// IPv6 `connect()` hook.
#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands a valid `bpf_sock_addr` to this hook.
    let sa = unsafe { &mut *ctx.sock_addr };
    let ip6 = sa.user_ip6;
    if ip6[0] != 0 || ip6[1] != 0 || ip6[2] != V4_MAPPED {
        return ALLOW;
    }
    match translate(
        ctx.as_ptr(),
        ip6[3],
        sa.user_port as u16,
        sa.protocol as u8,
        0,
    ) {
        Verdict::Pass => ALLOW,
        Verdict::Refuse => refuse(),
        Verdict::Rewrite(to) => {
            sa.user_ip6[3] = to.ip;
            sa.user_port = to.port as u32;
            ALLOW
        }
    }
}
