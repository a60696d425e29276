//! The node proxy's own plain-text connections to this node's captured
//! pods. With in-pod inbound capture (`daemon/inbound.rs`) a connection to
//! a policy-protected port of a local pod is steered by the kernel to the
//! pod's plaintext inbound listener (15006), which checks the pod's
//! AuthorizationPolicy / RequestAuthentication with the connection's peer
//! as `source.ip` and no peer identity. When the node proxy itself opens
//! that connection for a request it has already checked against the same
//! workload's policies (the route's cluster guard, `serve/http/authz.rs`),
//! a second check there would decide with the wrong facts: the node's
//! address instead of the client pod's, no identity, and a JWT the first
//! hop already removed (`forwardOriginalToken: false`).
//!
//! So the daemon publishes here, per captured pod, its network namespace
//! and which ports go through the policy listener ([`set`], [`remove`]);
//! [`connect`] delivers a *checked* connection to such a port from
//! `127.0.0.6` inside the pod ([`super::inpod::connect_in_pod`]), as the
//! policy listener and HBONE deliver theirs, so the kernel program leaves
//! it alone. Everything else is an ordinary `connect`: ports without
//! policy (delivered as before, the pod sees the node's address), STRICT
//! ports (the kernel refuses plain text), and connections the proxy has
//! not checked (`checked == false`: Envoy's `PassthroughCluster`, TLS
//! origination), which the policy listener checks like any other client.
//!
//! Istio's sidecar delivers to the application from `127.0.0.6` in the
//! same way after its inbound checks.
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use tokio::net::TcpStream;

use super::inpod::{connect_in_pod, InPodNetns};

/// Which ports of one captured pod go through its policy listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyPorts {
    /// Ports not listed below.
    pub default: bool,
    /// Per-port answers (PeerAuthentication `portLevelMtls`).
    pub ports: BTreeMap<u16, bool>,
}

impl PolicyPorts {
    /// Whether plain text to `port` is steered to the policy listener.
    pub fn covers(&self, port: u16) -> bool {
        self.ports.get(&port).copied().unwrap_or(self.default)
    }

    /// Whether no port is.
    pub fn is_empty(&self) -> bool {
        !self.default && !self.ports.values().any(|v| *v)
    }
}

/// One captured pod.
#[derive(Clone, Debug)]
struct Pod {
    netns: Arc<InPodNetns>,
    ports: PolicyPorts,
}

type Table = HashMap<IpAddr, Pod>;

fn table() -> &'static ArcSwap<Table> {
    static T: OnceLock<ArcSwap<Table>> = OnceLock::new();
    T.get_or_init(|| ArcSwap::from_pointee(Table::new()))
}

/// Publishes captured pod `ip`: its namespace and policy ports (a pod with
/// no policy port is removed).
pub fn set(ip: IpAddr, netns: Arc<InPodNetns>, ports: PolicyPorts) {
    table().rcu(|t| {
        let mut t = Table::clone(t);
        if ports.is_empty() {
            t.remove(&ip);
        } else {
            t.insert(
                ip,
                Pod {
                    netns: netns.clone(),
                    ports: ports.clone(),
                },
            );
        }
        t
    });
}

/// Forgets pod `ip` (no longer captured).
pub fn remove(ip: IpAddr) {
    if !table().load().contains_key(&ip) {
        return;
    }
    table().rcu(|t| {
        let mut t = Table::clone(t);
        t.remove(&ip);
        t
    });
}

/// The namespace to deliver a checked connection to `dst` in, if `dst` is
/// a policy port of a captured pod.
fn in_pod(dst: SocketAddr) -> Option<Arc<InPodNetns>> {
    let t = table().load();
    let pod = t.get(&dst.ip())?;
    pod.ports.covers(dst.port()).then(|| pod.netns.clone())
}

/// Whether [`connect`] with `checked` delivers inside the pod (`dst` is a
/// policy port of a captured local pod).
pub fn delivers_in_pod(dst: SocketAddr) -> bool {
    in_pod(dst).is_some()
}

/// Opens the proxy's plain-text connection to `dst`. `checked`: the proxy
/// has enforced `dst`'s workload policies for what it will send on it (a
/// route's cluster, never the passthrough cluster); then a policy port of
/// a captured local pod is reached from `127.0.0.6` inside the pod. Any
/// other connection is an ordinary `connect` (one table lookup more).
///
/// Errors: the connect's; joining the pod's namespace refused.
pub async fn connect(dst: SocketAddr, checked: bool) -> io::Result<TcpStream> {
    if checked {
        if let Some(netns) = in_pod(dst) {
            return connect_in_pod(&netns, dst).await;
        }
    }
    TcpStream::connect(dst).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_ports_follow_the_port_level_answer() {
        let p = PolicyPorts {
            default: true,
            ports: [(9090, false)].into_iter().collect(),
        };
        assert!(p.covers(8080));
        assert!(!p.covers(9090));
        assert!(!p.is_empty());
        let q = PolicyPorts {
            default: false,
            ports: [(9090, false)].into_iter().collect(),
        };
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn unknown_or_unchecked_destinations_connect_normally() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dst = l.local_addr().unwrap();
        assert!(!delivers_in_pod(dst));
        let s = connect(dst, true).await.unwrap();
        let (peer, _) = l.accept().await.unwrap();
        assert_eq!(s.local_addr().unwrap(), peer.peer_addr().unwrap());
    }
}
