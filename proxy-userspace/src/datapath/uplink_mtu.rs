//! The uplink MTU the XDP balancer's ICMP "too big" check uses
//! (`XlbConfig::mtu` / `XlbConfig6::mtu`, see [`super::set_uplink_mtu`]),
//! read from the interface and kept current, as Cilium's agent follows
//! its devices: the daemon writes it at attach, then as the kernel
//! announces a change ([`MtuWatch`]: an `RTNLGRP_LINK` netlink
//! subscription, `RTM_NEWLINK` of the uplink's ifindex with its
//! `IFLA_MTU`), and re-reads it on every pod rescan (500 ms) and reload
//! ([`super::Datapath::follow_uplink_mtu`]) as the fallback for a lost or
//! overflowed (`ENOBUFS`) message. Katran takes its MTU from its
//! configuration once.
//!
//! Both writers read-modify-write `XLB_CONFIG` and `XLB_CONFIG6` (source,
//! gateway MAC and MTU share a value) under one lock
//! ([`UplinkConfigLock`]), so neither undoes the other's change.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Context;
use aya::maps::{Array, MapData};
use aya::Ebpf;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use proxy_common::{XlbConfig, XlbConfig6};

/// Serialises the read-modify-writes of `XLB_CONFIG`/`XLB_CONFIG6`
/// between the [`super::Datapath`] and its [`MtuWatch`].
#[derive(Clone, Debug, Default)]
pub struct UplinkConfigLock(Arc<Mutex<()>>);

impl UplinkConfigLock {
    /// Held while a value is read and written back.
    pub fn hold(&self) -> MutexGuard<'_, ()> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What one [`MtuWatch::read`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MtuRead {
    /// `(old, new)` when the uplink's MTU changed and was written.
    pub changed: Option<(u16, u16)>,
    /// Messages were lost (`ENOBUFS`) or did not parse: the periodic
    /// re-read catches up.
    pub lost: bool,
}

/// The kernel's link announcements for the uplink: a `NETLINK_ROUTE`
/// socket in the `RTNLGRP_LINK` group (non-blocking; wait for it to be
/// readable, then [`Self::read`]) and handles to the maps it writes.
/// Opened by [`super::Datapath::watch_uplink_mtu`] in the uplink's network
/// namespace (the socket stays in it whatever thread reads it).
pub struct MtuWatch {
    socket: Socket,
    ifindex: u32,
    iface: String,
    config: Array<MapData, XlbConfig>,
    config6: Array<MapData, XlbConfig6>,
    lock: UplinkConfigLock,
}

impl MtuWatch {
    /// Subscribes to `RTNLGRP_LINK` for `iface` (in the calling thread's
    /// network namespace) with handles to `ebpf`'s two uplink config maps.
    ///
    /// Errors: no such interface, the socket cannot be opened or joined
    /// to the group, a map is missing.
    pub(crate) fn open(iface: &str, ebpf: &Ebpf, lock: UplinkConfigLock) -> anyhow::Result<Self> {
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .with_context(|| format!("no interface {iface}"))?;
        let mut socket = Socket::new(NETLINK_ROUTE).context("opening a NETLINK_ROUTE socket")?;
        socket
            .bind(&SocketAddr::new(0, 0))
            .context("binding the netlink socket")?;
        socket
            .add_membership(libc::RTNLGRP_LINK)
            .context("joining RTNLGRP_LINK")?;
        socket
            .set_non_blocking(true)
            .context("making the netlink socket non-blocking")?;
        let map = |name: &str| -> anyhow::Result<aya::maps::Map> {
            let m = ebpf
                .map(name)
                .with_context(|| format!("map {name} missing from the eBPF object"))?;
            let aya::maps::Map::Array(data) = m else {
                anyhow::bail!("map {name} is not an array");
            };
            let fd = data.fd().as_fd().try_clone_to_owned()?;
            Ok(aya::maps::Map::Array(MapData::from_fd(fd)?))
        };
        Ok(Self {
            socket,
            ifindex,
            iface: iface.to_string(),
            config: Array::try_from(map(proxy_common::XLB_CONFIG)?)?,
            config6: Array::try_from(map(proxy_common::XLB_CONFIG6)?)?,
            lock,
        })
    }

    /// The uplink's name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Reads every queued announcement without blocking and writes the
    /// uplink's last announced MTU when it differs from the program's.
    ///
    /// Errors: the socket failed (other than lost messages), or a map
    /// update was refused.
    pub fn read(&mut self) -> anyhow::Result<MtuRead> {
        let mut out = MtuRead::default();
        let mut announced = None;
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            match self.socket.recv(&mut buf, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    out.lost = true;
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading link announcements"),
            }
            match link_mtu(&buf, self.ifindex) {
                Ok(Some(mtu)) => announced = Some(mtu),
                Ok(None) => {}
                Err(_) => out.lost = true,
            }
        }
        if let Some(mtu) = announced {
            let _held = self.lock.hold();
            let old = self.config.get(&0, 0).context("reading XLB_CONFIG")?.mtu;
            if old != mtu {
                write_mtu(&mut self.config, &mut self.config6, mtu)?;
                out.changed = Some((old, mtu));
            }
        }
        Ok(out)
    }
}

impl AsFd for MtuWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for MtuWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The MTU the last `RTM_NEWLINK` for `ifindex` in `datagram` announces
/// (at most 65,535), if any.
///
/// Errors: a message does not parse.
pub fn link_mtu(datagram: &[u8], ifindex: u32) -> anyhow::Result<Option<u16>> {
    let mut found = None;
    let mut offset = 0;
    while offset < datagram.len() {
        let msg: NetlinkMessage<RouteNetlinkMessage> =
            NetlinkMessage::deserialize(&datagram[offset..]).context("parsing a link message")?;
        let len = msg.header.length as usize;
        if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = msg.payload {
            if l.header.index == ifindex {
                for a in &l.attributes {
                    if let LinkAttribute::Mtu(m) = a {
                        found = Some((*m).min(u32::from(u16::MAX)) as u16);
                    }
                }
            }
        }
        if len == 0 {
            break;
        }
        // Messages are 4-byte aligned in a datagram.
        offset += len.next_multiple_of(4);
    }
    Ok(found)
}

/// Writes `mtu` into both families' uplink config, keeping the rest.
///
/// Errors: a map read or update failed.
pub fn write_mtu<A, B>(
    config: &mut Array<A, XlbConfig>,
    config6: &mut Array<B, XlbConfig6>,
    mtu: u16,
) -> anyhow::Result<()>
where
    A: std::borrow::BorrowMut<MapData>,
    B: std::borrow::BorrowMut<MapData>,
{
    let cfg = config.get(&0, 0).context("reading XLB_CONFIG")?;
    config.set(0, XlbConfig { mtu, ..cfg }, 0)?;
    let cfg = config6.get(&0, 0).context("reading XLB_CONFIG6")?;
    config6.set(0, XlbConfig6 { mtu, ..cfg }, 0)?;
    Ok(())
}

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

    /// An `RTM_NEWLINK` for `index` announcing `mtu`, serialised (4-byte
    /// aligned, as the kernel packs a datagram).
    fn new_link(index: u32, mtu: Option<u32>) -> Vec<u8> {
        use netlink_packet_route::link::LinkMessage;
        let mut body = LinkMessage::default();
        body.header.index = index;
        body.attributes
            .push(LinkAttribute::IfName(format!("if{index}")));
        body.attributes.extend(mtu.map(LinkAttribute::Mtu));
        let mut msg = NetlinkMessage::new(
            netlink_packet_core::NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::NewLink(body)),
        );
        msg.finalize();
        let mut buf = vec![0; (msg.header.length as usize).next_multiple_of(4)];
        msg.serialize(&mut buf[..]);
        buf
    }

    #[test]
    fn the_uplinks_last_announced_mtu_is_taken_from_a_datagram() {
        let mut d = new_link(7, Some(1400));
        d.extend(new_link(3, Some(9000)));
        d.extend(new_link(7, Some(1300)));
        assert_eq!(link_mtu(&d, 7).unwrap(), Some(1300));
        assert_eq!(link_mtu(&d, 3).unwrap(), Some(9000));
        assert_eq!(link_mtu(&d, 5).unwrap(), None);
        assert_eq!(link_mtu(&new_link(7, None), 7).unwrap(), None);
        assert_eq!(
            link_mtu(&new_link(7, Some(70_000)), 7).unwrap(),
            Some(65_535)
        );
        assert!(link_mtu(&d[..d.len() - 9], 7).is_err(), "a cut message");
    }

    #[test]
    fn reads_the_loopback_mtu_and_refuses_bad_names() {
        assert!(interface_mtu("lo").unwrap() >= 1280);
        for bad in ["", "a-name-too-long-x", "no-such-if0"] {
            assert!(interface_mtu(bad).is_err(), "{bad:?}");
        }
    }
}
