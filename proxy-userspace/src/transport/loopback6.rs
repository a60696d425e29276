//! Istio's IPv6 inbound passthrough source `::6` on a pod's loopback.
//!
//! The daemon delivers to a pod's IPv6 address from `::6` inside the pod's
//! namespace, as it delivers to IPv4 addresses from `127.0.0.6`
//! ([`super::inpod::connect_in_pod`]). `127.0.0.6` is local in every
//! namespace (all of 127/8 is on `lo`); `::6` is not, so a connection bound
//! to it with `IP_FREEBIND` sends its SYN, but the pod's answer to `::6`
//! leaves by the pod's default route and the connection never completes.
//! Istio's sidecar init adds `::6/128` to `lo` for the same reason; this
//! does it once per pod namespace with one `RTM_NEWADDR` (no DAD, host
//! scope).
use std::io;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `struct nlmsghdr`.
#[repr(C)]
#[derive(Clone, Copy)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// `RTM_NEWADDR` for one IPv6 address: `nlmsghdr`, `ifaddrmsg`, one
/// `IFA_ADDRESS` attribute.
#[repr(C)]
struct NewAddr {
    nh: NlMsgHdr,
    family: u8,
    prefixlen: u8,
    flags: u8,
    scope: u8,
    index: u32,
    rta_len: u16,
    rta_type: u16,
    addr: [u8; 16],
}

const RTM_NEWADDR: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFA_ADDRESS: u16 = 1;
const IFA_F_NODAD: u8 = 0x02;
const RT_SCOPE_HOST: u8 = 254;
/// `lo` is interface 1 in every network namespace (`LOOPBACK_IFINDEX`).
const LOOPBACK_IFINDEX: u32 = 1;

/// Adds `ip/128` to `lo` of the calling thread's network namespace; an
/// address already there is success. Call it inside
/// [`super::inpod::InPodNetns::run`].
///
/// Errors: the netlink socket cannot be opened or the kernel refuses the
/// address (no `CAP_NET_ADMIN`, IPv6 disabled in the namespace).
pub fn add_to_loopback(ip: Ipv6Addr) -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let req = NewAddr {
        nh: NlMsgHdr {
            len: std::mem::size_of::<NewAddr>() as u32,
            kind: RTM_NEWADDR,
            flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            seq: 1,
            pid: 0,
        },
        family: libc::AF_INET6 as u8,
        prefixlen: 128,
        flags: IFA_F_NODAD,
        scope: RT_SCOPE_HOST,
        index: LOOPBACK_IFINDEX,
        rta_len: 4 + 16,
        rta_type: IFA_ADDRESS,
        addr: ip.octets(),
    };
    // SAFETY: sends `req`'s bytes (a `repr(C)` struct without padding) to
    // the kernel (destination: the default, the kernel).
    let sent = unsafe {
        libc::send(
            fd.as_raw_fd(),
            (&req as *const NewAddr).cast(),
            std::mem::size_of::<NewAddr>(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    // The acknowledgement: an NLMSG_ERROR whose error is 0 (done) or
    // -EEXIST (already there).
    let mut buf = [0u8; 512];
    // SAFETY: receives into `buf`, within its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let hdr = std::mem::size_of::<NlMsgHdr>();
    if (n as usize) < hdr + 4 {
        return Err(io::Error::other("short netlink answer"));
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if kind != NLMSG_ERROR {
        return Err(io::Error::other(format!("netlink answer of type {kind}")));
    }
    let err = i32::from_ne_bytes([buf[hdr], buf[hdr + 1], buf[hdr + 2], buf[hdr + 3]]);
    match -err {
        0 => Ok(()),
        libc::EEXIST => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_is_what_the_kernel_reads() {
        assert_eq!(std::mem::size_of::<NlMsgHdr>(), 16);
        // nlmsghdr 16 + ifaddrmsg 8 + rtattr 4 + address 16, no padding.
        assert_eq!(std::mem::size_of::<NewAddr>(), 44);
    }
}
