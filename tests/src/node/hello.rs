//! The smallest meshed node: pods `client` and `server` (labelled
//! `app: <name>`), Service `server` (port `tcp-hello` 7000, kernel
//! balanced) and a server-first TCP server in the server pod that greets
//! every client with `hello from server to <peer ip>`: the line tells a
//! test whether the client reached the server and from which address
//! (its own when the kernel balanced the VIP, nothing when nothing did).
use std::net::SocketAddr;
use std::time::Duration;

use super::echo::{self, Then};
use super::{Node, PodSpec, ServiceDef, ServicePort};

/// A node built by [`hello_node`].
pub struct HelloNode {
    /// The node (still to be written to a config directory).
    pub node: Node,
    /// Service `server`'s VIP and port.
    pub vip: SocketAddr,
    /// What the client pod reads when it reaches the server.
    pub greeting: String,
}

/// Builds node `node-a` number `index` with the pods, Service and server
/// described in the module docs. Panics on any failure.
pub fn hello_node(p: &crate::privileged::Privileged, index: u8) -> HelloNode {
    let mut node = Node::new(&p.cgroup2, "node-a", index).unwrap();
    for name in ["client", "server"] {
        node.add_pod(PodSpec::new(name, &[("app", name)])).unwrap();
    }
    let ports = vec![ServicePort::named("tcp-hello", 7000)];
    let svc = node.add_service(ServiceDef::app("server", "server", ports));
    let vip = SocketAddr::from((svc.unwrap().cluster_ip.unwrap(), 7000));
    let client_ip = node.pod("default", "client").unwrap().ip;
    let server = node.pod("default", "server").unwrap();
    let l = echo::listen(&server.netns, (server.ip, 7000)).unwrap();
    let greet = |peer: SocketAddr| format!("hello from server to {}", peer.ip());
    echo::tcp(l, greet, Then::Close);
    HelloNode {
        node,
        vip,
        greeting: format!("hello from server to {client_ip}"),
    }
}

/// Probes `addr` from pod `client` until `want(line)` holds (30 s at most:
/// the machine may be loaded); returns the last line.
pub fn probe_until(node: &Node, addr: SocketAddr, want: impl Fn(&str) -> bool) -> String {
    let client = node.pod("default", "client").unwrap();
    client.probe_until(addr, Duration::from_secs(30), want)
}
