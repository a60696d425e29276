//! What connect4/connect6 did to a socket, in [`SOCK_NAT`]: a direct-mapped
//! table indexed by the socket cookie's low bits and tagged with the whole
//! cookie. getpeername/recvmsg read it back (reverse NAT) and the sockops
//! program reads it to publish a redirected connection's original
//! destination. Cookies increase, so consecutive connections write
//! neighbouring slots and a slot is reused only after `SOCK_NAT_SLOTS`
//! newer sockets (see `proxy_common::SOCK_NAT` for the measurements that
//! chose this over an LRU or socket-local storage).
use core::ffi::c_void;

use aya_ebpf::helpers::bpf_get_socket_cookie;
use proxy_common::{sock_nat, OrigDst, SockNat, SOCK_NAT_SLOTS};

use crate::maps::SOCK_NAT;

/// The slot of `cookie`.
#[inline(always)]
fn slot(cookie: u64) -> u32 {
    (cookie as u32) & (SOCK_NAT_SLOTS - 1)
}

/// The cookie of the context's socket (a sock_addr or sock_ops context);
/// the first call for a socket assigns it.
#[inline(always)]
pub fn cookie(ctx: *mut c_void) -> u64 {
    // SAFETY: both context kinds this is called with accept the helper.
    unsafe { bpf_get_socket_cookie(ctx) }
}

/// Records that the socket `cookie`'s destination `orig` was rewritten to
/// `to` (`redirected`: to the node proxy).
#[inline(always)]
pub fn remember(cookie: u64, to: &OrigDst, orig: &OrigDst, redirected: bool) {
    let Some(p) = SOCK_NAT.get_ptr_mut(slot(cookie)) else {
        return;
    };
    let flags = if redirected {
        sock_nat::REWRITTEN | sock_nat::REDIRECTED
    } else {
        sock_nat::REWRITTEN
    };
    // SAFETY: an array slot; a concurrent writer of the same slot would be
    // a socket `SOCK_NAT_SLOTS` cookies apart, whose entry replaces this
    // one either way (readers check the cookie).
    unsafe {
        *p = SockNat {
            cookie,
            to: *to,
            orig: *orig,
            flags,
            src: 0,
        }
    };
}

/// The live record of the socket `cookie` in place (see [`of_socket`]),
/// for the sockops program to read and then note the client address it
/// counted the connection opened with ([`SockNat::src`]).
#[inline(always)]
pub fn record(cookie: u64) -> Option<*mut SockNat> {
    let p = SOCK_NAT.get_ptr_mut(slot(cookie))?;
    // SAFETY: an array slot (see `remember`).
    let live = unsafe { (*p).cookie == cookie && (*p).flags & sock_nat::REWRITTEN != 0 };
    live.then_some(p)
}

/// Forgets an earlier rewrite of the socket `cookie` (a socket that
/// connects again, somewhere not rewritten).
#[inline(always)]
pub fn forget(cookie: u64) {
    if let Some(p) = SOCK_NAT.get_ptr_mut(slot(cookie)) {
        // SAFETY: an array slot (see `remember`).
        unsafe {
            if (*p).cookie == cookie {
                (*p).flags = 0;
            }
        }
    }
}

/// The record of the socket `cookie`, if it has a live one.
#[inline(always)]
pub fn of_socket(cookie: u64) -> Option<SockNat> {
    let p = SOCK_NAT.get_ptr(slot(cookie))?;
    // SAFETY: an array slot, copied out at once.
    let v = unsafe { *p };
    (v.cookie == cookie && v.flags & sock_nat::REWRITTEN != 0).then_some(v)
}

/// The address the application asked for, when the socket `cookie`'s
/// destination was rewritten to `ip:port` (network byte order).
#[inline(always)]
pub fn original(cookie: u64, ip: u32, port: u16) -> Option<OrigDst> {
    let v = of_socket(cookie)?;
    (v.to.ip == ip && v.to.port == port).then_some(v.orig)
}
