//! The uplink MTU the XDP balancer's ICMP "too big" check uses
//! (`XlbConfig::mtu` / `XlbConfig6::mtu`, see [`super::set_uplink_mtu`]),
//! read from the interface and kept current: the daemon writes it at
//! attach and re-reads it on every pod rescan (500 ms) and reload
//! ([`super::Datapath::follow_uplink_mtu`]), so an `ip link set <uplink>
//! mtu N` reaches the program within half a second. Katran takes its MTU
//! from its configuration once; Cilium reads the device MTU at start.
use anyhow::Context;
use aya::{maps::Array, Ebpf};
use proxy_common::XlbConfig;

/// The MTU of interface `iface` in the calling thread's network namespace
/// (`SIOCGIFMTU` on a datagram socket, as `ip link` reports it), at most
/// 65,535. Unlike `/sys/class/net/<iface>/mtu`, which shows the namespace
/// sysfs was mounted in, the socket's namespace is the thread's.
///
/// Errors: no such interface, a name longer than 15 bytes, no socket.
pub fn interface_mtu(iface: &str) -> anyhow::Result<u16> {
    // SAFETY: `ifreq` is plain data; all zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = iface.as_bytes();
    anyhow::ensure!(
        !name.is_empty() && name.len() < req.ifr_name.len() && !name.contains(&0),
        "{iface:?} is not an interface name"
    );
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain socket call; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket for SIOCGIFMTU");
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: SIOCGIFMTU reads the name from and writes the MTU into `req`,
    // which lives across the call.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SIOCGIFMTU as _,
            &mut req,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("reading the MTU of {iface}"));
    }
    // SAFETY: SIOCGIFMTU filled the union's MTU member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(mtu.clamp(0, i32::from(u16::MAX)) as u16)
}

/// The uplink MTU the program checks now (`XLB_CONFIG`'s; 0: unknown).
///
/// Errors: the map is missing or unreadable.
pub fn uplink_mtu(ebpf: &Ebpf) -> anyhow::Result<u16> {
    let a: Array<_, XlbConfig> = Array::try_from(
        ebpf.map(proxy_common::XLB_CONFIG)
            .context("map XLB_CONFIG missing from the eBPF object")?,
    )?;
    Ok(a.get(&0, 0).context("reading XLB_CONFIG")?.mtu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_loopback_mtu_and_refuses_bad_names() {
        assert!(interface_mtu("lo").unwrap() >= 1280);
        for bad in ["", "a-name-too-long-x", "no-such-if0"] {
            assert!(interface_mtu(bad).is_err(), "{bad:?}");
        }
    }
}
