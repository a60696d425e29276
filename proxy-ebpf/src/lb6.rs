//! Native IPv6 service translation for connect6 and sendmsg6 (Cilium's
//! `__sock6_xlate_fwd`): look the destination up in `SERVICES6`, pick an
//! IPv6 backend from `BACKENDS6` with the same choices as IPv4 (random,
//! per-CPU round robin, Maglev over the shared `MAGLEV` tables), and count
//! in the shared per-CPU counters. The reverse NAT lives in `SOCK_NAT6`
//! (connected sockets, by cookie) and `REV_NAT6` (unconnected UDP).
//!
//! REDIRECT-mode TCP and TCP to a meshed pod's IPv6 address go to the node
//! proxy's IPv6 listener (`PROXY_CONFIG6`), the original destination kept
//! in `SOCK_NAT6` with the `REDIRECTED` flag and published in `ORIG_DST6`
//! by the sockops program ([`publish_orig_dst6`]). Without an IPv6
//! listener they are refused (`ECONNREFUSED`): passing the connection
//! through would bypass the policy or mTLS the proxy stands for.
use core::ffi::c_void;

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_prandom_u32, bpf_get_socket_cookie},
    programs::{SockAddrContext, SockOpsContext},
    EbpfContext,
};
use proxy_common::{
    ipv6_client, lb, mode, proto, sock_nat, BackendKey, ClientKey6, OrigDst6, RevNatKey6,
    ServiceKey6, SockNat6, SOCK_NAT6_SLOTS,
};

use crate::lb4::{count_service, maglev_slot};
use crate::maps::{BACKEND_STATS, PROXY_CONFIG};
use crate::maps6::{
    BACKENDS6, ORIG_DST6, PROXY_CONFIG6, REV_NAT6, SERVICES6, SOCK_NAT6, WORKLOADS6,
};

/// What to do with an IPv6 destination.
pub enum Verdict6 {
    /// Not a service: leave it.
    Pass,
    /// Rewrite the destination to `to`; `redirected` when `to` is the node
    /// proxy's IPv6 listener rather than a backend.
    Rewrite { to: OrigDst6, redirected: bool },
    /// Fail the syscall with `ECONNREFUSED`.
    Refuse,
}

/// The context's `user_ip6`, one 32-bit load per word (the only access
/// width the verifier allows on it).
#[inline(always)]
pub fn user_ip6(sa: &bpf_sock_addr) -> [u32; 4] {
    // SAFETY: plain loads of context fields.
    unsafe {
        [
            core::ptr::read_volatile(&sa.user_ip6[0]),
            core::ptr::read_volatile(&sa.user_ip6[1]),
            core::ptr::read_volatile(&sa.user_ip6[2]),
            core::ptr::read_volatile(&sa.user_ip6[3]),
        ]
    }
}

/// Writes `user_ip6` and `user_port` (one 32-bit store per word).
#[inline(always)]
pub fn set_dst6(sa: &mut bpf_sock_addr, to: &OrigDst6) {
    // SAFETY: plain stores to writable context fields.
    unsafe {
        core::ptr::write_volatile(&mut sa.user_ip6[0], to.ip[0]);
        core::ptr::write_volatile(&mut sa.user_ip6[1], to.ip[1]);
        core::ptr::write_volatile(&mut sa.user_ip6[2], to.ip[2]);
        core::ptr::write_volatile(&mut sa.user_ip6[3], to.ip[3]);
        core::ptr::write_volatile(&mut sa.user_port, to.port as u32);
    }
}

/// The socket's bound IPv6 source, folded for Maglev (0 when unbound).
#[inline(always)]
pub fn client6(sa: &bpf_sock_addr) -> u32 {
    // SAFETY: `sk` is always set for sock_addr hooks; 32-bit loads.
    unsafe {
        let sk = sa.__bindgen_anon_1.sk;
        ipv6_client([
            core::ptr::read_volatile(&(*sk).src_ip6[0]),
            core::ptr::read_volatile(&(*sk).src_ip6[1]),
            core::ptr::read_volatile(&(*sk).src_ip6[2]),
            core::ptr::read_volatile(&(*sk).src_ip6[3]),
        ])
    }
}

#[inline(always)]
fn eq6(a: &[u32; 4], b: &[u32; 4]) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]
}

/// The translation of the IPv6 destination `ip:port` (port in network
/// byte order) of a `proto_` socket; `client` is [`client6`].
#[inline(always)]
pub fn translate6(ctx: *mut c_void, ip: [u32; 4], port: u16, proto_: u8, client: u32) -> Verdict6 {
    let key = ServiceKey6 {
        vip: ip,
        port,
        proto: proto_,
        pad: 0,
    };
    // SAFETY: the value is copied out before any use.
    let Some(svc) = (unsafe { SERVICES6.get(&key) }).copied() else {
        // A meshed pod's IPv6 address: TCP goes through the node proxy for
        // mTLS, as for IPv4.
        // SAFETY: only tested for presence.
        if proto_ == proto::TCP && unsafe { WORKLOADS6.get(&ip) }.is_some() {
            return match redirect6(&ip, port) {
                Some(v) => v,
                // No IPv6 listener while IPv4 redirection is on: refuse
                // rather than let the connection bypass mTLS.
                None if PROXY_CONFIG.get(0).is_some_and(|p| p.port != 0) => Verdict6::Refuse,
                None => Verdict6::Pass,
            };
        }
        return Verdict6::Pass;
    };
    if svc.mode == mode::REDIRECT && proto_ == proto::TCP {
        return match redirect6(&ip, port) {
            Some(v) => {
                count_service(svc.stats_index, false);
                v
            }
            None => {
                count_service(svc.stats_index, true);
                Verdict6::Refuse
            }
        };
    }
    if svc.backend_count == 0 {
        count_service(svc.stats_index, true);
        return Verdict6::Refuse;
    }
    let cursor = count_service(svc.stats_index, false);
    let slot = match svc.lb {
        lb::ROUND_ROBIN => (cursor % svc.backend_count as u64) as u32,
        lb::MAGLEV => match maglev_slot(ctx, svc.svc_id, client) {
            Some(s) => s,
            None => return Verdict6::Refuse,
        },
        // SAFETY: no preconditions.
        _ => (unsafe { bpf_get_prandom_u32() }) % svc.backend_count,
    };
    let bkey = BackendKey {
        svc_id: svc.svc_id,
        slot,
    };
    // SAFETY: copied out at once.
    let Some(backend) = (unsafe { BACKENDS6.get(&bkey) }).copied() else {
        return Verdict6::Refuse;
    };
    if let Some(p) = BACKEND_STATS.get_ptr_mut(backend.stats_index) {
        // SAFETY: this CPU's slot.
        unsafe { *p += 1 };
    }
    Verdict6::Rewrite {
        to: OrigDst6 {
            ip: backend.ip,
            port: backend.port,
            pad: 0,
        },
        redirected: false,
    }
}

/// The rewrite to the node proxy's IPv6 listener, `None` without one. A
/// connection to the listener itself passes untouched.
#[inline(always)]
fn redirect6(ip: &[u32; 4], port: u16) -> Option<Verdict6> {
    let proxy = PROXY_CONFIG6.get(0).copied()?;
    if proxy.port == 0 {
        return None;
    }
    if proxy.port == port && eq6(&proxy.ip, ip) {
        return Some(Verdict6::Pass);
    }
    Some(Verdict6::Rewrite {
        to: OrigDst6 {
            ip: proxy.ip,
            port: proxy.port,
            pad: 0,
        },
        redirected: true,
    })
}

#[inline(always)]
fn slot(cookie: u64) -> u32 {
    (cookie as u32) & (SOCK_NAT6_SLOTS - 1)
}

/// Records that the connected socket `cookie`'s destination `orig` was
/// rewritten to `to` (`redirected`: to the node proxy).
#[inline(always)]
pub fn remember(cookie: u64, to: &OrigDst6, orig: &OrigDst6, redirected: bool) {
    let Some(p) = SOCK_NAT6.get_ptr_mut(slot(cookie)) else {
        return;
    };
    let flags = if redirected {
        sock_nat::REWRITTEN | sock_nat::REDIRECTED
    } else {
        sock_nat::REWRITTEN
    };
    // SAFETY: an array slot; readers check the cookie (see sock_nat.rs).
    unsafe {
        *p = SockNat6 {
            cookie,
            to: *to,
            orig: *orig,
            flags,
            pad: 0,
        }
    };
}

/// Forgets an earlier rewrite of the socket `cookie` (a socket that
/// connects again somewhere not rewritten).
#[inline(always)]
pub fn forget(cookie: u64) {
    if let Some(p) = SOCK_NAT6.get_ptr_mut(slot(cookie)) {
        // SAFETY: an array slot.
        unsafe {
            if (*p).cookie == cookie {
                (*p).flags = 0;
            }
        }
    }
}

/// Records for an unconnected UDP socket that datagrams to `orig` go to
/// `to`, so replies from `to` appear to come from `orig`.
#[inline(always)]
pub fn remember_unconnected(ctx: &SockAddrContext, to: &OrigDst6, orig: &OrigDst6) {
    let key = RevNatKey6 {
        // SAFETY: ctx is a sock_addr context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        ip: to.ip,
        port: to.port,
        pad: 0,
        pad2: 0,
    };
    let _ = REV_NAT6.insert(&key, orig, 0);
}

/// The address the application asked for when this socket's peer
/// `ip:port` is a rewritten IPv6 destination; `unconnected` also consults
/// the UDP table (recvmsg6).
#[inline(always)]
pub fn original(
    ctx: &SockAddrContext,
    ip: [u32; 4],
    port: u16,
    unconnected: bool,
) -> Option<OrigDst6> {
    let cookie = crate::sock_nat::cookie(ctx.as_ptr());
    if let Some(p) = SOCK_NAT6.get_ptr(slot(cookie)) {
        // SAFETY: an array slot, copied out at once.
        let v = unsafe { *p };
        if v.cookie == cookie
            && v.flags & sock_nat::REWRITTEN != 0
            && v.to.port == port
            && eq6(&v.to.ip, &ip)
        {
            return Some(v.orig);
        }
    }
    if !unconnected {
        return None;
    }
    let key = RevNatKey6 {
        cookie,
        ip,
        port,
        pad: 0,
        pad2: 0,
    };
    // SAFETY: copied out at once.
    unsafe { REV_NAT6.get(&key) }.copied()
}

/// `AF_INET6`.
const AF_INET6: u32 = 10;

/// The [`SOCK_NAT6`] record of the socket `cookie` when connect6 balanced
/// it to a native IPv6 backend (not redirected to the node proxy).
#[inline(always)]
pub fn balanced6(cookie: u64) -> Option<SockNat6> {
    let p = SOCK_NAT6.get_ptr(slot(cookie))?;
    // SAFETY: an array slot, copied out at once.
    let v = unsafe { *p };
    (v.cookie == cookie
        && v.flags & sock_nat::REWRITTEN != 0
        && v.flags & sock_nat::REDIRECTED == 0)
        .then_some(v)
}

/// sockops, the client's active open completing: when connect6 redirected
/// this IPv6 socket to the node proxy, publish its original destination in
/// `ORIG_DST6` under the client's `[ip]:port` (what the proxy's `accept()`
/// returns), as `ORIG_DST` for IPv4; when it balanced it to an IPv6
/// backend, count it opened (`crate::tcp_stats::opened6`). Other sockets
/// leave after the family check and one array lookup.
#[inline(always)]
pub fn publish_orig_dst6(ctx: &SockOpsContext) {
    if ctx.family() != AF_INET6 {
        return;
    }
    let cookie = crate::sock_nat::cookie(ctx.as_ptr());
    let Some(p) = SOCK_NAT6.get_ptr(slot(cookie)) else {
        return;
    };
    // SAFETY: an array slot, copied out at once.
    let v = unsafe { *p };
    if v.cookie != cookie || v.flags & sock_nat::REWRITTEN == 0 {
        return;
    }
    if v.flags & sock_nat::REDIRECTED == 0 {
        if crate::tcp_stats::on() {
            crate::tcp_stats::opened6(ctx, cookie, &v);
        }
        return;
    }
    // One 32-bit load per word, the only width the verifier allows here.
    // SAFETY: plain loads of context fields.
    let ip = unsafe {
        let ops = ctx.ops;
        [
            core::ptr::read_volatile(&raw const (*ops).local_ip6[0]),
            core::ptr::read_volatile(&raw const (*ops).local_ip6[1]),
            core::ptr::read_volatile(&raw const (*ops).local_ip6[2]),
            core::ptr::read_volatile(&raw const (*ops).local_ip6[3]),
        ]
    };
    let key = ClientKey6 {
        ip,
        // `local_port` is in host byte order, unlike every other port here.
        port: (ctx.local_port() as u16).to_be(),
        pad: 0,
    };
    let _ = ORIG_DST6.insert(&key, &v.orig, 0);
}
