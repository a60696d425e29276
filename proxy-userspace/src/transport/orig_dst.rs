//! Where a redirected connection was going before the kernel sent it to the
//! node proxy.
//!
//! In the node daemon the answer comes from the eBPF `cgroup/connect4` +
//! sockops maps (keyed by the client's `{ip, port}`, ARCHITECTURE.md / DESIGN "Kernel data
//! path"); that implementation lives with the datapath. Here are the trait and
//! the two implementations tests and benchmarks need.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;

/// Finds the original destination (`VIP:port` or pod `IP:port`) of an
/// accepted connection, like Envoy's `original_dst` listener filter.
pub trait OriginalDst: Send + Sync + 'static {
    /// `peer` is the accepted connection's remote address, `local` the
    /// listener-side address. `None` when unknown: the proxy then closes the
    /// connection (Envoy's BlackHoleCluster) rather than loop back to itself.
    fn original_destination(&self, peer: SocketAddr, local: SocketAddr) -> Option<SocketAddr>;
}

/// Every connection goes to one destination: Strait as a plain reverse proxy
/// in front of one service (benchmarks, the demo without a kernel).
#[derive(Clone, Copy, Debug)]
pub struct FixedDestination(pub SocketAddr);

impl OriginalDst for FixedDestination {
    fn original_destination(&self, _peer: SocketAddr, _local: SocketAddr) -> Option<SocketAddr> {
        Some(self.0)
    }
}

/// A map from the listener's local address to a destination: tests open one
/// listener per service VIP:port they want to reach, so several services can
/// be exercised without a kernel redirect. Falls back to `default` when set.
#[derive(Debug, Default)]
pub struct StaticOriginalDst {
    by_local: RwLock<HashMap<SocketAddr, SocketAddr>>,
    default: Option<SocketAddr>,
}

impl StaticOriginalDst {
    /// An empty map with an optional fallback destination.
    pub fn new(default: Option<SocketAddr>) -> Self {
        Self {
            by_local: RwLock::default(),
            default,
        }
    }

    /// Connections accepted on `local` were going to `original`.
    pub fn insert(&self, local: SocketAddr, original: SocketAddr) {
        self.by_local
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(local, original);
    }
}

impl OriginalDst for StaticOriginalDst {
    fn original_destination(&self, _peer: SocketAddr, local: SocketAddr) -> Option<SocketAddr> {
        let map = self.by_local.read().unwrap_or_else(|e| e.into_inner());
        map.get(&local).copied().or(self.default)
    }
}

impl<T: OriginalDst> OriginalDst for std::sync::Arc<T> {
    fn original_destination(&self, peer: SocketAddr, local: SocketAddr) -> Option<SocketAddr> {
        (**self).original_destination(peer, local)
    }
}
