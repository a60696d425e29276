//! IPv4 service translation shared by the socket hooks (connect4, connect6
//! for IPv4-mapped addresses, sendmsg4/6): look the destination up in
//! `SERVICES`, pick a backend (or the node proxy) and count — Cilium's
//! `__sock4_xlate_fwd`. The caller records the reverse NAT: one entry per
//! connected socket in [`crate::sock_nat`], one per rewritten address of an
//! unconnected UDP socket in [`crate::rev_nat`].
use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_set_retval};
use proxy_common::{
    lb, maglev_position, mode, proto, BackendKey, OrigDst, ServiceKey, MAGLEV_TABLE_SIZE,
};

use crate::maps::{
    BACKENDS, BACKEND_STATS, MAGLEV, PROXY_CONFIG, SERVICES, SERVICE_STATS, WORKLOADS,
};

/// Return value that lets the syscall proceed (possibly rewritten).
pub const ALLOW: i32 = 1;
/// Return value that fails the syscall with the errno set by `bpf_set_retval`.
pub const REJECT: i32 = 0;
/// `ECONNREFUSED`: what a client sees for a service without a usable
/// backend, at once, like Cilium's socket LB (never a hang or a timeout).
const ECONNREFUSED: i32 = 111;

/// What to do with a destination.
pub enum Verdict {
    /// Not a service (or not ours to change): leave it.
    Pass,
    /// Rewrite the destination to `to`; `redirected` when `to` is the node
    /// proxy rather than a backend.
    Rewrite { to: OrigDst, redirected: bool },
    /// Fail the syscall with `ECONNREFUSED`.
    Refuse,
}

/// The destination `ip:port` (network byte order) of a `proto` socket.
/// `ctx` is the program context (for the netns cookie helper); `client_ip`
/// the socket's bound source address or 0.
#[inline(always)]
pub fn translate(ctx: *mut c_void, ip: u32, port: u16, proto_: u8, client_ip: u32) -> Verdict {
    let key = ServiceKey {
        vip: ip,
        port,
        proto: proto_,
        pad: 0,
    };
    // SAFETY: the value is copied out before any use.
    let Some(svc) = (unsafe { SERVICES.get(&key) }).copied() else {
        // A meshed pod IP: TCP goes through the node proxy for mTLS.
        // SAFETY: only tested for presence.
        if proto_ == proto::TCP && unsafe { WORKLOADS.get(&ip) }.is_some() {
            return redirect(ip, port);
        }
        return Verdict::Pass;
    };
    // The node proxy listens for TCP only. UDP to a REDIRECT-mode service
    // is balanced here over the set userspace writes for it, as Istio
    // leaves UDP to kube-proxy (sidecar and ztunnel capture TCP only);
    // passing it through untranslated would send it to a VIP nothing
    // answers on.
    if svc.mode == mode::REDIRECT && proto_ == proto::TCP {
        count_service(svc.stats_index, false);
        return redirect(ip, port);
    }
    if svc.backend_count == 0 {
        count_service(svc.stats_index, true);
        return Verdict::Refuse;
    }
    let cursor = count_service(svc.stats_index, false);
    let slot = match svc.lb {
        lb::ROUND_ROBIN => (cursor % svc.backend_count as u64) as u32,
        lb::MAGLEV => match maglev_slot(ctx, svc.svc_id, client_ip) {
            Some(s) => s,
            None => return Verdict::Refuse,
        },
        // SAFETY: bpf_get_prandom_u32 has no preconditions.
        _ => (unsafe { bpf_get_prandom_u32() }) % svc.backend_count,
    };
    let bkey = BackendKey {
        svc_id: svc.svc_id,
        slot,
    };
    // SAFETY: copied out at once.
    let Some(backend) = (unsafe { BACKENDS.get(&bkey) }).copied() else {
        // The set was swapped between the two lookups; the next connect
        // sees the new one. Refusing is the honest answer meanwhile.
        return Verdict::Refuse;
    };
    if let Some(p) = BACKEND_STATS.get_ptr_mut(backend.stats_index) {
        // SAFETY: this CPU's slot; nothing else writes it while we run.
        unsafe { *p += 1 };
    }
    Verdict::Rewrite {
        to: OrigDst {
            ip: backend.ip,
            port: backend.port,
            pad: 0,
        },
        redirected: false,
    }
}

/// Sets the errno a rejected syscall returns (`bpf_set_retval`, 5.19+).
#[inline(always)]
pub fn refuse() -> i32 {
    // SAFETY: allowed in connect and sendmsg hooks; no preconditions.
    unsafe { bpf_set_retval(-ECONNREFUSED) };
    REJECT
}

/// Rewrites to the node proxy's outbound listener; the caller records the
/// original destination on the socket for the sockops program and for
/// `getpeername()`.
#[inline(always)]
fn redirect(ip: u32, port: u16) -> Verdict {
    let Some(proxy) = PROXY_CONFIG.get(0).copied() else {
        return Verdict::Pass;
    };
    if proxy.port == 0 || (proxy.ip == ip && proxy.port == port) {
        return Verdict::Pass;
    }
    Verdict::Rewrite {
        to: OrigDst {
            ip: proxy.ip,
            port: proxy.port,
            pad: 0,
        },
        redirected: true,
    }
}

/// The Maglev slot for this client: its bound source address, else its
/// network namespace (a pod), hashed into the set's lookup table.
#[inline(always)]
pub(crate) fn maglev_slot(ctx: *mut c_void, svc_id: u32, client_ip: u32) -> Option<u32> {
    let table = MAGLEV.get_ptr(&svc_id)?;
    let client = if client_ip != 0 {
        client_ip as u64
    } else {
        // SAFETY: ctx is a sock_addr context, which this helper accepts.
        unsafe { bpf_get_netns_cookie(ctx) }
    };
    let pos = maglev_position(client);
    // Launder through the stack so LLVM keeps the bound check the verifier
    // needs (it cannot derive the range of a modulo).
    // SAFETY: reads a local.
    let pos = unsafe { core::ptr::read_volatile(&pos) };
    if pos >= MAGLEV_TABLE_SIZE {
        return None;
    }
    // SAFETY: `table` points at a live map value; `pos` is in bounds.
    Some(unsafe { *(*table).slots.as_ptr().add(pos as usize) })
}

/// Counts a connection (or a refusal) for the service on this CPU and
/// returns the CPU's connection count before it: the round-robin cursor.
#[inline(always)]
pub(crate) fn count_service(index: u32, refused: bool) -> u64 {
    let Some(p) = SERVICE_STATS.get_ptr_mut(index) else {
        return 0;
    };
    // SAFETY: this CPU's slot; nothing else writes it while we run.
    unsafe {
        if refused {
            (*p).no_backend += 1;
            return 0;
        }
        let c = (*p).connections;
        (*p).connections = c + 1;
        c
    }
}
