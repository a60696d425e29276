//! The node uplink: resolving what the XDP balancer needs to know about it
//! (its IPv4 and IPv6 addresses, each family's gateway MAC) from the
//! kernel's tables.
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context};

use super::xlb::UplinkConfig;
use super::xlb6::UplinkConfig6;

/// `source` and `gateway_mac` for `iface`, each taken from the argument
/// when given, else resolved: the interface's first IPv4 address
/// (`getifaddrs`), and the MAC of the gateway of the interface's default
/// route (`/proc/net/route`) from the neighbour table (`/proc/net/arp`).
///
/// Errors: the interface has no IPv4 address, no default route, or the
/// gateway has no resolved neighbour entry (ping it, or pass the MAC).
pub fn resolve(
    iface: &str,
    source: Option<Ipv4Addr>,
    gateway_mac: Option<[u8; 6]>,
) -> anyhow::Result<UplinkConfig> {
    let source = match source {
        Some(s) => s,
        None => interface_ipv4(iface)?,
    };
    let gateway_mac = match gateway_mac {
        Some(m) => m,
        None => {
            let route =
                std::fs::read_to_string("/proc/net/route").context("reading /proc/net/route")?;
            let gw = default_gateway(&route, iface).with_context(|| {
                format!("{iface} has no default route: pass the gateway MAC (--xdp-gateway-mac)")
            })?;
            let arp = std::fs::read_to_string("/proc/net/arp").context("reading /proc/net/arp")?;
            neighbour_mac(&arp, gw, iface).with_context(|| {
                format!(
                    "no neighbour entry for the gateway {gw} on {iface}: pass --xdp-gateway-mac"
                )
            })?
        }
    };
    Ok(UplinkConfig {
        source,
        gateway_mac,
    })
}

/// What [`resolve6`] found: the IPv6 uplink settings to write (`None`:
/// the IPv6 balancer stays off) and what the daemon must warn about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved6 {
    /// For [`super::configure_uplink6`]. With a source but an all-zero
    /// `gateway_mac` (no IPv6 next hop known) `xdp_lb` drops packets to
    /// IPv6 VIPs, counted as `no_real_dropped`, rather than send them to a
    /// wrong MAC.
    pub config: Option<UplinkConfig6>,
    /// Why IPv6 VIP packets are not balanced, when they are not.
    pub warning: Option<String>,
}

/// The IPv6 side of [`resolve`], per family as Katran configures its
/// gateway MAC per family: `source` when given, else `iface`'s first
/// global IPv6 address (not link-local); `gateway_mac` when given
/// (`--xdp-gateway-mac6`), else the MAC of the gateway of `iface`'s IPv6
/// default route from the kernel's neighbour (NDP) table
/// ([`super::neigh::gateway_mac6`]) — never the IPv4 gateway's.
///
/// No IPv6 source: `config` `None` (IPv6 packets to VIPs pass unbalanced)
/// and a warning. A source but no IPv6 gateway MAC (no IPv6 default
/// route, the neighbour not resolved): a config with an all-zero MAC,
/// which fails closed (IPv6 VIP packets dropped and counted), and a
/// warning naming the cause.
pub fn resolve6(iface: &str, source: Option<Ipv6Addr>, gateway_mac: Option<[u8; 6]>) -> Resolved6 {
    let Some(source) = source.or_else(|| interface_ipv6(iface)) else {
        return Resolved6 {
            config: None,
            warning: Some(format!(
                "the uplink {iface} has no global IPv6 address and --xdp-source6 is not set: \
                 packets to IPv6 external VIPs pass unbalanced"
            )),
        };
    };
    let (gateway_mac, warning) =
        match gateway_mac.map_or_else(|| super::neigh::gateway_mac6(iface), Ok) {
            Ok(mac) => (mac, None),
            Err(e) => (
                [0; 6],
                Some(format!(
                "no IPv6 gateway MAC for the uplink {iface}: {e:#}; packets to IPv6 external VIPs \
                 are dropped (counted as no_real_dropped) until the node resolves it (looked up \
                 again every few seconds) or --xdp-gateway-mac6 is set"
            )),
            ),
        };
    Resolved6 {
        config: Some(UplinkConfig6 {
            source,
            gateway_mac,
        }),
        warning,
    }
}

/// An IPv6 uplink whose gateway MAC was not known at start (and not
/// given): the daemon keeps looking it up, so IPv6 VIPs start being
/// balanced once the node has resolved its IPv6 router (any IPv6 traffic
/// of the node does), without a restart.
#[derive(Debug)]
pub struct PendingGateway6 {
    iface: String,
    source: Ipv6Addr,
    last: Option<std::time::Instant>,
}

impl PendingGateway6 {
    /// Shortest time between two lookups of [`Self::retry`].
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(2);

    /// `Some` when `resolved` (from [`resolve6`] on `iface`) has a source
    /// but no gateway MAC.
    pub fn new(iface: &str, resolved: &Resolved6) -> Option<Self> {
        let c = resolved.config?;
        (c.gateway_mac == [0; 6]).then(|| Self {
            iface: iface.to_string(),
            source: c.source,
            last: None,
        })
    }

    /// Looks the IPv6 gateway's MAC up again (at most once per
    /// [`Self::EVERY`]; `None` sooner): the settings to write once it is
    /// found.
    pub fn retry(&mut self) -> Option<UplinkConfig6> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::EVERY)
        {
            return None;
        }
        self.last = Some(now);
        let mac = super::neigh::gateway_mac6(&self.iface).ok()?;
        Some(UplinkConfig6 {
            source: self.source,
            gateway_mac: mac,
        })
    }
}

/// `iface`'s first IPv6 address outside `fe80::/10` and `::1`.
fn interface_ipv6(iface: &str) -> Option<Ipv6Addr> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return None;
    }
    let mut found = None;
    let mut p = addrs;
    while !p.is_null() {
        // SAFETY: p is a node of the list getifaddrs returned.
        let a = unsafe { &*p };
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(a.ifa_name) };
        // SAFETY: ifa_addr, when set, points at a sockaddr of its family.
        if name.to_bytes() == iface.as_bytes()
            && !a.ifa_addr.is_null()
            && unsafe { (*a.ifa_addr).sa_family } as i32 == libc::AF_INET6
        {
            // SAFETY: an AF_INET6 address is a sockaddr_in6.
            let sin6 = unsafe { &*(a.ifa_addr as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            if ip.segments()[0] & 0xffc0 != 0xfe80 && !ip.is_loopback() {
                found = Some(ip);
                break;
            }
        }
        p = a.ifa_next;
    }
    // SAFETY: frees the list getifaddrs allocated.
    unsafe { libc::freeifaddrs(addrs) };
    found
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)");
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16)
            .with_context(|| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
    }
    Ok(mac)
}

fn interface_ipv4(iface: &str) -> anyhow::Result<Ipv4Addr> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getifaddrs");
    }
    let mut found = None;
    let mut p = addrs;
    while !p.is_null() {
        // SAFETY: p is a node of the list getifaddrs returned.
        let a = unsafe { &*p };
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(a.ifa_name) };
        if name.to_bytes() == iface.as_bytes() && !a.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of its family.
            let family = unsafe { (*a.ifa_addr).sa_family } as i32;
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(a.ifa_addr as *const libc::sockaddr_in) };
                found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                break;
            }
        }
        p = a.ifa_next;
    }
    // SAFETY: frees the list getifaddrs allocated.
    unsafe { libc::freeifaddrs(addrs) };
    found.with_context(|| format!("{iface} has no IPv4 address: pass --xdp-source"))
}

/// The gateway of `iface`'s default route in `/proc/net/route` text.
fn default_gateway(route: &str, iface: &str) -> Option<Ipv4Addr> {
    route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 || f[0] != iface || f[1] != "00000000" {
            return None;
        }
        // Hex of the address as stored in memory (network order), printed
        // as a host-order (little-endian) number.
        let g = u32::from_str_radix(f[2], 16).ok()?;
        (g != 0).then(|| Ipv4Addr::from(g.to_le_bytes()))
    })
}

/// The MAC of `ip` on `iface` in `/proc/net/arp` text (complete entries).
fn neighbour_mac(arp: &str, ip: Ipv4Addr, iface: &str) -> Option<[u8; 6]> {
    arp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // IP, HW type, flags (0x2 = complete), MAC, mask, device.
        if f.len() < 6 || f[0] != ip.to_string() || f[5] != iface || f[2] == "0x0" {
            return None;
        }
        parse_mac(f[3]).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_and_its_mac_are_read_from_proc_tables() {
        let route =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth1\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(
            default_gateway(route, "eth0"),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(default_gateway(route, "eth2"), None);
        let arp =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
                   10.0.0.1         0x1         0x0         00:00:00:00:00:00     *        eth0\n\
                   10.0.0.1         0x1         0x2         02:42:ac:11:00:01     *        eth0\n";
        assert_eq!(
            neighbour_mac(arp, Ipv4Addr::new(10, 0, 0, 1), "eth0"),
            Some([2, 0x42, 0xac, 0x11, 0, 1])
        );
        assert_eq!(neighbour_mac(arp, Ipv4Addr::new(10, 0, 0, 2), "eth0"), None);
        assert!(parse_mac("02:42:ac:11:00").is_err());
        assert!(parse_mac("zz:42:ac:11:00:01").is_err());
    }
}
