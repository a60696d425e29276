//! Never connect to this node's own listeners: a guard at upstream connect
//! time, behind config validation (which rejects loopback, link-local and
//! node-address endpoints, `strait_config::validate::special_ip`). An
//! endpoint that still names the daemon's admin or outbound listener (a DNS
//! name resolving to `127.0.0.1`, a node address missed at startup) gets
//! `503` with Envoy's `UF` flag and a transport failure reason, instead of
//! letting a pod read the admin API through the proxy.
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

/// The transport failure reason logged for a refused connect.
pub const REFUSED: &str = "refused: the endpoint is this node's own proxy or admin listener";

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

fn reaches(s: &SelfAddrs, addr: SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    s.listeners.iter().any(|l| {
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
        for miss in ["10.244.0.1:15000", "10.244.0.7:15001", "127.0.0.1:8080"] {
            assert!(!reaches(&s, miss.parse().unwrap()), "{miss}");
        }
    }
}
