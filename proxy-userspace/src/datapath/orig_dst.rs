//! The original destination of a redirected connection, for the node proxy:
//! it accepts the connection, then asks with the peer address `accept()`
//! returned (the client's `{ip, port}`), like Envoy's `original_dst`
//! listener filter reads `SO_ORIGINAL_DST` after iptables REDIRECT.
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

use anyhow::Context;
use aya::maps::{HashMap, Map, MapData};
use proxy_common::{ClientKey, OrigDst};

/// A read handle on the pinned `ORIG_DST` map; cheap to query from any
/// thread (`Send + Sync`).
pub struct OriginalDestinations {
    map: HashMap<MapData, ClientKey, OrigDst>,
}

impl OriginalDestinations {
    /// Opens `<pin_dir>/ORIG_DST` (see [`super::DatapathConfig::pin_dir`]).
    ///
    /// Errors: the data path was never loaded for this pin directory.
    pub fn open(pin_dir: &Path) -> anyhow::Result<Self> {
        let path = pin_dir.join(proxy_common::ORIG_DST);
        let data = MapData::from_pin(&path)
            .with_context(|| format!("opening pinned map {}", path.display()))?;
        let map = Map::from_map_data(data)?.try_into()?;
        Ok(Self { map })
    }

    /// The address the client connected to before the kernel redirected it
    /// to the proxy, by the client's address as the proxy sees it (`peer`,
    /// IPv4 or IPv4-mapped IPv6). `None` for a connection that was not
    /// redirected (or whose entry the LRU has evicted).
    pub fn get(&self, peer: SocketAddr) -> Option<SocketAddr> {
        lookup(&self.map, peer)
    }
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
