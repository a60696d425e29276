//! The socket's own record of what connect4/connect6 did to it
//! ([`SOCK_NAT`], socket-local storage): the address the application asked
//! for and the one the kernel connects to instead. getpeername/recvmsg read
//! it back (reverse NAT) and the sockops program reads it to publish a
//! redirected connection's original destination. The storage hangs off the
//! socket (`sk->sk_bpf_storage`), so reading it touches memory the socket
//! call has just used, and it is freed with the socket.
use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::bpf_sock, helpers::generated::bpf_sk_storage_get, programs::SockAddrContext,
};
use proxy_common::{sock_nat, OrigDst, SockNat};

use crate::maps::SOCK_NAT;

/// Records on the socket that its destination `orig` was rewritten to `to`
/// (`redirected`: to the node proxy). Best effort: if the kernel cannot
/// allocate the storage, the connection still goes to `to` and only the
/// reverse translation is lost (as when Cilium's LRU evicts an entry).
#[inline(always)]
pub fn remember(ctx: &SockAddrContext, to: &OrigDst, orig: &OrigDst, redirected: bool) {
    // SAFETY: `sk` of a sock_addr context is a valid socket.
    let p = unsafe { SOCK_NAT.get_or_insert_ptr_mut(ctx, None) };
    if p.is_null() {
        return;
    }
    // SAFETY: non-null storage of this socket; the socket lock is held by
    // the connect/sendmsg path, so nothing else writes it now.
    unsafe {
        (*p).to = *to;
        (*p).orig = *orig;
        (*p).flags = if redirected {
            sock_nat::REWRITTEN | sock_nat::REDIRECTED
        } else {
            sock_nat::REWRITTEN
        };
    }
}

/// Forgets an earlier rewrite when the socket connects somewhere that is
/// not rewritten (a UDP socket may `connect()` again; a TCP socket may
/// retry a failed `connect()` elsewhere). Costs one helper call that finds
/// no storage on a socket that was never rewritten.
#[inline(always)]
pub fn forget(ctx: &SockAddrContext) {
    // SAFETY: as in `remember`; no storage is created.
    let p = unsafe { SOCK_NAT.get_ptr_mut(ctx) };
    if !p.is_null() {
        // SAFETY: non-null storage of this socket.
        unsafe { (*p).flags = 0 };
    }
}

/// The address the application asked for, when this socket's destination
/// was rewritten to `ip:port` (network byte order).
#[inline(always)]
pub fn original(ctx: &SockAddrContext, ip: u32, port: u16) -> Option<OrigDst> {
    // SAFETY: as in `remember`; no storage is created.
    let p = unsafe { SOCK_NAT.get_ptr_mut(ctx) };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null storage of this socket, copied out at once.
    let v = unsafe { *p };
    (v.flags & sock_nat::REWRITTEN != 0 && v.to.ip == ip && v.to.port == port).then_some(v.orig)
}

/// The record of `sk` (a full socket from a sockops context), if any.
///
/// # Safety
/// `sk` must be the non-null `bpf_sock_ops.sk` of the running program.
#[inline(always)]
pub unsafe fn of_socket(sk: *mut bpf_sock) -> Option<SockNat> {
    // `SkStorage` only takes sock_addr contexts; the helper itself accepts
    // any socket pointer the verifier knows, as `bpf_sock_ops.sk` is.
    let map = ptr::from_ref(&SOCK_NAT).cast_mut().cast::<c_void>();
    // SAFETY: `map` is the map definition the loader relocates; `sk` is a
    // socket per the contract; no storage is created.
    let p = unsafe { bpf_sk_storage_get(map, sk.cast(), ptr::null_mut(), 0) }.cast::<SockNat>();
    if p.is_null() {
        None
    } else {
        // SAFETY: non-null storage, copied out at once.
        Some(unsafe { *p })
    }
}
