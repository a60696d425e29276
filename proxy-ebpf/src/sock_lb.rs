//! Socket-level load balancing (`cgroup/connect4`), the approach of Cilium's
//! `bpf_sock.c`: the service's backend is chosen once per `connect()` and the
//! socket's destination rewritten, so no packet is ever translated.
use aya_ebpf::{helpers::bpf_get_prandom_u32, macros::cgroup_sock_addr, programs::SockAddrContext};
use proxy_common::{mode, proto, BackendKey, ServiceKey};

use crate::maps::{BACKENDS, SERVICES};

/// Return value that lets the `connect()` proceed (possibly rewritten).
const ALLOW: i32 = 1;
/// Return value that fails the `connect()` with `EPERM`.
const REJECT: i32 = 0;

/// TCP `connect()` hook for IPv4.
#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands a valid `bpf_sock_addr` to this hook.
    let sa = unsafe { &mut *ctx.sock_addr };
    let key = ServiceKey {
        vip: sa.user_ip4,
        port: sa.user_port as u16,
        proto: proto::TCP,
        pad: 0,
    };
    // SAFETY: the value is copied out before any map update can race.
    let Some(svc) = (unsafe { SERVICES.get(&key) }).copied() else {
        return ALLOW;
    };
    if svc.mode != mode::L4 {
        return ALLOW;
    }
    if svc.backend_count == 0 {
        return REJECT;
    }
    // SAFETY: bpf_get_prandom_u32 has no preconditions.
    let slot = unsafe { bpf_get_prandom_u32() } % svc.backend_count;
    let bkey = BackendKey {
        svc_id: svc.svc_id,
        slot,
    };
    // SAFETY: as above.
    let Some(backend) = (unsafe { BACKENDS.get(&bkey) }).copied() else {
        return REJECT;
    };
    sa.user_ip4 = backend.ip;
    sa.user_port = backend.port as u32;
    ALLOW
}
