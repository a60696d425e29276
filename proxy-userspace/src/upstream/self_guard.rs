//! Never connect to the node itself: a guard at upstream connect time,
//! set by the daemon (`strait run`; without [`set`] nothing is refused).
//! Config validation rejects loopback, link-local and node-address
//! endpoints in Kubernetes kinds (`strait_config::validate::special_ip`)
//! and warns about them in ServiceEntry/WorkloadEntry, which Istio accepts.
//! Whatever gets through — such an entry, a DNS name resolving to
//! `127.0.0.1`, a node address missed at startup — is refused here: any
//! loopback, link-local or unspecified address, and the daemon's own
//! listeners on the node's addresses. The request gets `503` with Envoy's
//! `UF` flag and a transport failure reason, instead of a pod reading the
//! admin API, the kubelet or a metadata server through the proxy.
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

/// The transport failure reason logged for a refused connect.
pub const REFUSED: &str =
    "refused: the endpoint is this node's own listener or a loopback, link-local or unspecified address";

struct SelfAddrs {
    listeners: Vec<SocketAddr>,
    node_ips: Vec<IpAddr>,
}

static SELF: OnceLock<SelfAddrs> = OnceLock::new();

/// Declares the daemon's own listeners and the node's addresses (once per
/// process; later calls are ignored). Without it nothing is refused.
pub fn set(listeners: Vec<SocketAddr>, node_ips: Vec<IpAddr>) {
    let _ = SELF.set(SelfAddrs {
        listeners,
        node_ips: node_ips.into_iter().map(|ip| ip.to_canonical()).collect(),
    });
}

/// Whether connecting to `addr` would reach one of the declared listeners.
pub fn is_self(addr: SocketAddr) -> bool {
    SELF.get().is_some_and(|s| reaches(s, addr))
}

/// Addresses that only ever reach the node itself when the daemon (in the
/// node's network namespace) connects: loopback, link-local (cloud
/// metadata servers live there), unspecified. Istio accepts them in
/// ServiceEntry/WorkloadEntry endpoints; a pod's traffic is never sent there.
fn node_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unicast_link_local() || v6.is_unspecified(),
    }
}

fn reaches(s: &SelfAddrs, addr: SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    node_local(ip)
        || s.listeners.iter().any(|l| {
            let lip = l.ip().to_canonical();
            l.port() == addr.port()
                && (ip == lip
                    || ip.is_unspecified()
                    || (ip.is_loopback() && (lip.is_loopback() || lip.is_unspecified()))
                    || (lip.is_unspecified() && s.node_ips.contains(&ip)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listeners_are_recognised_by_address_and_port() {
        let s = SelfAddrs {
            listeners: vec![
                "127.0.0.1:15000".parse().unwrap(),
                "0.0.0.0:15001".parse().unwrap(),
            ],
            node_ips: vec!["10.244.0.1".parse().unwrap()],
        };
        for hit in [
            "127.0.0.1:15000",
            "127.0.0.9:15000",
            "0.0.0.0:15000",
            "10.244.0.1:15001",
            "[::ffff:127.0.0.1]:15001",
        ] {
            assert!(reaches(&s, hit.parse().unwrap()), "{hit}");
        }
        // Loopback, link-local and unspecified on any port: the node's own
        // services (kubelet, metadata servers).
        for hit in [
            "127.0.0.1:8080",
            "127.0.0.2:80",
            "169.254.169.254:80",
            "[::1]:10248",
        ] {
            assert!(reaches(&s, hit.parse().unwrap()), "{hit}");
        }
        for miss in ["10.244.0.1:15000", "10.244.0.7:15001", "10.96.0.10:80"] {
            assert!(!reaches(&s, miss.parse().unwrap()), "{miss}");
        }
    }
}
