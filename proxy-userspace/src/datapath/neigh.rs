//! The uplink's IPv6 next hop for the XDP balancer: the gateway of the
//! interface's IPv6 default route (`/proc/net/ipv6_route`) and its MAC
//! from the kernel's neighbour (NDP) table, read with one `RTM_GETNEIGH`
//! dump (`netlink-packet-route`; there is no `/proc` file of IPv6
//! neighbours as `/proc/net/arp` is for IPv4).
//!
//! Katran takes the gateway MAC from its configuration, per family; Strait
//! resolves it per family from the kernel's tables, so ip6ip6 frames go to
//! the IPv6 router and never to the IPv4 one's MAC.
use std::net::{IpAddr, Ipv6Addr};

use anyhow::{bail, Context};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::{
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// `RTF_GATEWAY` and `RTF_REJECT` of a route's flags (`linux/route.h`).
const RTF_GATEWAY: u32 = 0x0002;
const RTF_REJECT: u32 = 0x0200;

/// The gateway of `iface`'s IPv6 default route in `/proc/net/ipv6_route`
/// text (`::/0` with a next hop, not a reject route; the lowest metric
/// when there are several). Often a link-local address (`fe80::1`).
pub fn default_gateway6(route: &str, iface: &str) -> Option<Ipv6Addr> {
    route
        .lines()
        .filter_map(|l| {
            // dst, dst prefix length, src, src prefix length, next hop,
            // metric, refcnt, use, flags, device (hex, no separators).
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10
                || f[9] != iface
                || f[1] != "00"
                || u128::from_str_radix(f[0], 16).ok()? != 0
            {
                return None;
            }
            let flags = u32::from_str_radix(f[8], 16).ok()?;
            if flags & RTF_GATEWAY == 0 || flags & RTF_REJECT != 0 {
                return None;
            }
            let gw = Ipv6Addr::from(u128::from_str_radix(f[4], 16).ok()?);
            let metric = u32::from_str_radix(f[5], 16).ok()?;
            (!gw.is_unspecified()).then_some((metric, gw))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, gw)| gw)
}

/// Whether a neighbour entry in `state` holds a link-layer address the
/// kernel itself would send to (as `/proc/net/arp`'s "complete" flag for
/// IPv4): reachable, stale (last known, re-verified by the kernel on its
/// own next use), being re-verified, or static.
fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

/// The MAC of `ip` on interface `ifindex` among `entries` (a neighbour
/// dump): a usable entry ([`usable`]) with a 6-byte link-layer address.
pub fn neighbour_mac6(entries: &[NeighbourMessage], ip: Ipv6Addr, ifindex: u32) -> Option<[u8; 6]> {
    entries.iter().find_map(|e| {
        if e.header.family != AddressFamily::Inet6
            || e.header.ifindex != ifindex
            || !usable(e.header.state)
        {
            return None;
        }
        let mut dst = None;
        let mut mac = None;
        for a in &e.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(d)) => dst = Some(*d),
                NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(&l[..]).ok(),
                _ => {}
            }
        }
        (dst == Some(ip)).then_some(mac).flatten()
    })
}

/// The neighbour messages in `datagrams` (the answers to a dump, in
/// order), up to the dump's end.
///
/// Errors: a message does not parse, or the kernel answered with an error.
pub fn parse_dump(datagrams: &[Vec<u8>]) -> anyhow::Result<(Vec<NeighbourMessage>, bool)> {
    let mut out = Vec::new();
    for d in datagrams {
        let mut offset = 0;
        while offset < d.len() {
            let msg: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&d[offset..]).context("parsing a neighbour dump")?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok((out, true)),
                NetlinkPayload::Error(e) => bail!("the kernel refused the neighbour dump: {e}"),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => out.push(n),
                _ => {}
            }
            if len == 0 {
                break;
            }
            // Messages are 4-byte aligned in a datagram.
            offset += len.next_multiple_of(4);
        }
    }
    Ok((out, false))
}

/// Every IPv6 entry of the calling thread's network namespace's neighbour
/// table (one `RTM_GETNEIGH` dump over a `NETLINK_ROUTE` socket).
///
/// Errors: the socket cannot be opened, the kernel refuses the dump or
/// sends what does not parse.
pub fn neighbours6() -> anyhow::Result<Vec<NeighbourMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE).context("opening a NETLINK_ROUTE socket")?;
    socket.bind_auto().context("binding the netlink socket")?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connecting the netlink socket")?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_DUMP | NLM_F_REQUEST;
    let mut body = NeighbourMessage::default();
    body.header.family = AddressFamily::Inet6;
    let mut req = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetNeighbour(body)),
    );
    req.finalize();
    let mut buf = vec![0; req.header.length as usize];
    req.serialize(&mut buf[..]);
    socket.send(&buf, 0).context("sending RTM_GETNEIGH")?;
    let mut datagrams = Vec::new();
    // A dump ends with NLMSG_DONE; bound the datagrams read so a kernel
    // that never ends it cannot keep the daemon here.
    for _ in 0..4096 {
        let mut d = Vec::with_capacity(64 * 1024);
        socket
            .recv(&mut d, 0)
            .context("reading the neighbour dump")?;
        datagrams.push(d);
        let (entries, done) = parse_dump(&datagrams)?;
        if done {
            return Ok(entries);
        }
    }
    bail!("the neighbour dump did not end")
}

/// The MAC of the gateway of `iface`'s IPv6 default route, in the calling
/// thread's network namespace.
///
/// Errors (each says what to do): no IPv6 default route on `iface`, the
/// neighbour table cannot be read, or it holds no usable entry for the
/// gateway (not resolved yet: ping it from the node, or pass the MAC).
pub fn gateway_mac6(iface: &str) -> anyhow::Result<[u8; 6]> {
    // The calling thread's namespace's routes (`/proc/net` is the main
    // thread's).
    let route = std::fs::read_to_string("/proc/thread-self/net/ipv6_route")
        .context("reading /proc/thread-self/net/ipv6_route")?;
    let gw = default_gateway6(&route, iface)
        .with_context(|| format!("{iface} has no IPv6 default route via a gateway"))?;
    let ifindex =
        nix::net::if_::if_nametoindex(iface).with_context(|| format!("no interface {iface}"))?;
    let entries = neighbours6()?;
    neighbour_mac6(&entries, gw, ifindex).with_context(|| {
        format!(
            "no resolved neighbour entry for the IPv6 gateway {} on {iface} \
             (`ip -6 neigh show dev {iface}`; `ping -c1 {gw}%{iface}` resolves it)",
            IpAddr::V6(gw)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, NLM_F_MULTIPART};

    #[test]
    fn the_default_ipv6_gateway_is_read_from_proc_net_ipv6_route() {
        let route = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000002 00000400 00000001 00000000 00000003 eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000100 00000001 00000000 00000003 eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000009 00000001 00000001 00000000 00000003 eth1
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo
";
        // The lowest metric of eth0's two defaults; the on-link /64 and
        // eth1's and lo's (a reject route) routes are not it.
        assert_eq!(
            default_gateway6(route, "eth0"),
            Some("fe80::1".parse().unwrap())
        );
        assert_eq!(
            default_gateway6(route, "eth1"),
            Some("fe80::9".parse().unwrap())
        );
        assert_eq!(default_gateway6(route, "lo"), None);
        assert_eq!(default_gateway6(route, "eth2"), None);
    }

    fn entry(ifindex: u32, state: NeighbourState, ip: &str, mac: &[u8]) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet6;
        m.header.ifindex = ifindex;
        m.header.state = state;
        m.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip.parse().unwrap())),
            NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
        ];
        m
    }

    /// The bytes the kernel sends for `entries`: one multipart datagram,
    /// then NLMSG_DONE in a second.
    fn dump_bytes(entries: &[NeighbourMessage]) -> Vec<Vec<u8>> {
        let mut first = Vec::new();
        for e in entries {
            let mut h = NetlinkHeader::default();
            h.flags = NLM_F_MULTIPART;
            let mut m = NetlinkMessage::new(
                h,
                NetlinkPayload::from(RouteNetlinkMessage::NewNeighbour(e.clone())),
            );
            m.finalize();
            let mut b = vec![0; m.header.length as usize];
            m.serialize(&mut b);
            first.extend(b);
        }
        let mut done = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::<RouteNetlinkMessage>::Done(DoneMessage::default()),
        );
        done.finalize();
        let mut b = vec![0; done.header.length as usize];
        done.serialize(&mut b);
        vec![first, b]
    }

    #[test]
    fn the_gateway_mac_comes_from_a_usable_entry_on_the_uplink() {
        let gw: Ipv6Addr = "fe80::1".parse().unwrap();
        let dump = dump_bytes(&[
            entry(2, NeighbourState::Failed, "fe80::1", &[2, 0, 0, 0, 0, 0xaa]),
            entry(
                3,
                NeighbourState::Reachable,
                "fe80::1",
                &[2, 0, 0, 0, 0, 0xbb],
            ),
            entry(
                2,
                NeighbourState::Reachable,
                "fe80::2",
                &[2, 0, 0, 0, 0, 0xcc],
            ),
            entry(2, NeighbourState::Stale, "fe80::1", &[2, 0, 0, 0, 0, 0xdd]),
        ]);
        let (entries, done) = parse_dump(&dump).unwrap();
        assert!(done);
        assert_eq!(entries.len(), 4);
        // Interface 2: the failed entry is skipped, the stale one is used.
        assert_eq!(neighbour_mac6(&entries, gw, 2), Some([2, 0, 0, 0, 0, 0xdd]));
        assert_eq!(neighbour_mac6(&entries, gw, 3), Some([2, 0, 0, 0, 0, 0xbb]));
        assert_eq!(neighbour_mac6(&entries, gw, 4), None);
        // Still resolving (incomplete, no address yet) or not a 6-byte
        // address: no MAC.
        let (entries, _) = parse_dump(&dump_bytes(&[
            entry(2, NeighbourState::Incomplete, "fe80::1", &[]),
            entry(2, NeighbourState::Reachable, "fe80::1", &[2, 0, 0, 0]),
        ]))
        .unwrap();
        assert_eq!(neighbour_mac6(&entries, gw, 2), None);
        // A dump cut before NLMSG_DONE is not done; garbage is an error.
        let (_, done) = parse_dump(&dump[..1]).unwrap();
        assert!(!done);
        assert!(parse_dump(&[vec![0xff; 20]]).is_err());
    }
}
