//! The original destination of a redirected connection, for the node proxy:
//! it accepts the connection, then asks with the peer address `accept()`
//! returned (the client's `{ip, port}`), like Envoy's `original_dst`
//! listener filter reads `SO_ORIGINAL_DST` after iptables REDIRECT.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::Path;

use anyhow::Context;
use aya::maps::{HashMap, Map, MapData};
use proxy_common::{ClientKey, ClientKey6, OrigDst, OrigDst6};

/// A read handle on the pinned `ORIG_DST` and `ORIG_DST6` maps; cheap to
/// query from any thread (`Send + Sync`).
pub struct OriginalDestinations {
    map: HashMap<MapData, ClientKey, OrigDst>,
    map6: HashMap<MapData, ClientKey6, OrigDst6>,
}

/// Opens the pinned map `<pin_dir>/<name>`.
fn open_pinned(pin_dir: &Path, name: &str) -> anyhow::Result<Map> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
    Ok(Map::from_map_data(data)?)
}

impl OriginalDestinations {
    /// Opens `<pin_dir>/ORIG_DST` and `<pin_dir>/ORIG_DST6` (see
    /// [`super::DatapathConfig::pin_dir`]).
    ///
    /// Errors: the data path was never loaded for this pin directory.
    pub fn open(pin_dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            map: open_pinned(pin_dir, proxy_common::ORIG_DST)?.try_into()?,
            map6: open_pinned(pin_dir, proxy_common::ORIG_DST6)?.try_into()?,
        })
    }

    /// The address the client connected to before the kernel redirected it
    /// to the proxy, by the client's address as the proxy sees it (`peer`:
    /// IPv4 or IPv4-mapped IPv6 from the IPv4 listener, native IPv6 from
    /// the IPv6 one). `None` for a connection that was not redirected (or
    /// whose entry the LRU has evicted).
    pub fn get(&self, peer: SocketAddr) -> Option<SocketAddr> {
        match peer {
            SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_none() => lookup6(&self.map6, a),
            _ => lookup(&self.map, peer),
        }
    }
}

/// [`OriginalDestinations::get`] for a native IPv6 peer.
pub(super) fn lookup6(
    map: &HashMap<MapData, ClientKey6, OrigDst6>,
    peer: SocketAddrV6,
) -> Option<SocketAddr> {
    let key = ClientKey6 {
        ip: proxy_common::ipv6_words(peer.ip().octets()),
        port: proxy_common::port_to_be(peer.port()),
        pad: 0,
    };
    let v = map.get(&key, 0).ok()?;
    Some(SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::from(proxy_common::ipv6_from_words(v.ip)),
        u16::from_be(v.port),
        0,
        0,
    )))
}

/// [`OriginalDestinations::get`] on a map handle.
pub(super) fn lookup(
    map: &HashMap<MapData, ClientKey, OrigDst>,
    peer: SocketAddr,
) -> Option<SocketAddr> {
    let ip = match peer {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped()?,
    };
    let key = ClientKey {
        ip: proxy_common::ipv4_to_be(u32::from(ip)),
        port: proxy_common::port_to_be(peer.port()),
        pad: 0,
    };
    let v = map.get(&key, 0).ok()?;
    Some(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(v.ip)),
        u16::from_be(v.port),
    )))
}
