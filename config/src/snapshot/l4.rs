//! The L4 kernel tables: one entry per service VIP, port and protocol, with
//! the backends the kernel may pick, compiled from Services, Endpoints /
//! EndpointSlices, ServiceEntries and DestinationRules.
//!
//! Mode rules (ARCHITECTURE.md / DESIGN, "Kernel data path"): a service whose traffic needs L7
//! routing, mTLS or L7 policy is [`L4Mode::Redirect`] (the kernel sends the
//! connection to the node proxy's outbound listener, port 15001); every other
//! service is [`L4Mode::L4`] (the kernel picks the backend itself).
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Transport protocol of a kernel service entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum L4Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// What the kernel does with a `connect()` / `sendmsg()` to the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum L4Mode {
    /// The kernel picks a backend and rewrites the destination.
    L4,
    /// The kernel rewrites the destination to the node proxy (port 15001).
    Redirect,
}

/// How the kernel picks among a service's backends in [`L4Mode::L4`].
///
/// Mapped from DestinationRule `trafficPolicy.loadBalancer`: `simple: RANDOM`
/// → `Random`; `ROUND_ROBIN` and `LEAST_REQUEST` (no per-request state in the
/// kernel) → `RoundRobin`; `consistentHash` with `useSourceIp` or `maglev` →
/// `Maglev`. The default, like kube-proxy's, is `Random`, weighted by
/// [`L4Backend::weight`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum L4LoadBalancer {
    /// Weighted random choice per connection.
    Random,
    /// Weighted round robin per service.
    RoundRobin,
    /// Maglev consistent hashing on the client address; the lookup table is
    /// built in userspace (size a prime, e.g. 16381) so every node agrees.
    Maglev,
}

/// One backend of a kernel service entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct L4Backend {
    /// Backend address and target port.
    pub addr: SocketAddr,
    /// Relative weight, ≥ 1 (from endpoint or ServiceEntry weights; 1 by default).
    pub weight: u32,
    /// `false` for endpoints that are not ready or are terminating: kept in
    /// the table for established flows, never picked for new connections.
    pub healthy: bool,
}

/// One kernel service entry: `vip:port/protocol` → backends.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct L4Service {
    /// Fully qualified host of the service, e.g. `reviews.default.svc.cluster.local`.
    pub host: String,
    /// The service's virtual IP (ClusterIP or ServiceEntry address).
    pub vip: IpAddr,
    /// Service port.
    pub port: u16,
    /// Transport protocol.
    pub protocol: L4Protocol,
    /// What the kernel does with the connection.
    pub mode: L4Mode,
    /// Backend choice in [`L4Mode::L4`].
    pub load_balancer: L4LoadBalancer,
    /// Backends in a deterministic order (sorted by address).
    pub backends: Vec<L4Backend>,
}

/// One external address of a Service on one port, for the XDP load
/// balancer on the node uplink (Katran's design): packets to `vip:port`
/// are spread with Maglev over the nodes hosting the Service's endpoints
/// and tunnelled (IPIP) to the chosen node, which answers directly.
///
/// From `spec.externalIPs` and `status.loadBalancer.ingress[].ip` of
/// Kubernetes Services (hostname-only ingress entries carry no address and
/// are skipped).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExternalL4Service {
    /// Fully qualified host of the service.
    pub host: String,
    /// The external address.
    pub vip: IpAddr,
    /// Service port.
    pub port: u16,
    /// Transport protocol.
    pub protocol: L4Protocol,
    /// Nodes hosting endpoints of the port, by node address of the VIP's
    /// family (the Pods' `status.hostIPs`, else `status.hostIP`; for an
    /// IPv4 VIP, a node without an IPv4 address by its IPv6 one: 4in6),
    /// sorted,
    /// with weight = the node's ready endpoints (0: only endpoints not
    /// ready or terminating, drained: established flows stay, new ones go
    /// elsewhere). Endpoints without a known node address are not
    /// reachable this way and left out.
    pub nodes: Vec<(IpAddr, u32)>,
    /// Endpoints left out because their Pod lists node addresses, none of
    /// the VIP's family, for an IPv6 VIP (its Pods' `status.hostIPs` hold
    /// only IPv4; 6in4 is not built): the daemon warns about them. Always
    /// 0 for an IPv4 VIP.
    #[serde(default)]
    pub unplaced: u32,
}
