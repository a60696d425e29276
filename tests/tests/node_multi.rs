//! Two simulated nodes joined by a veth pair: pods on one reach pods on the
//! other, by plain routing between the pod CIDRs.
use std::net::{IpAddr, SocketAddr};

use strait_tests::node::echo::{self, Then};
use strait_tests::node::{link, Node, PodSpec};

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");

#[test]
fn a_pod_on_node_a_reaches_a_pod_on_node_b() {
    let Some(p) = strait_tests::privileged::require("a_pod_on_node_a_reaches_a_pod_on_node_b")
    else {
        return;
    };
    let mut a = Node::new(&p.cgroup2, "node-a", 20).unwrap();
    let mut b = Node::new(&p.cgroup2, "node-b", 21).unwrap();
    a.add_pod(PodSpec::new("client", &[("app", "client")]))
        .unwrap();
    b.add_pod(PodSpec::new("server", &[("app", "server")]))
        .unwrap();
    let client_ip = a.pods()[0].ip;
    let server_ip = b.pods()[0].ip;

    // Not linked yet: node A has no route to B's pods.
    let before = a.pods()[0]
        .command(PROBE)
        .unwrap()
        .args(["tcp", &format!("{server_ip}:7200")])
        .output()
        .unwrap();
    let before = String::from_utf8_lossy(&before.stdout);
    assert!(before.starts_with("error"), "{before}");

    link(&a, &b).unwrap();
    let addr = SocketAddr::from((server_ip, 7200));
    let l = echo::listen(&b.pods()[0].netns, addr).unwrap();
    let server = echo::tcp(l, |peer| format!("node-b saw {}", peer.ip()), Then::Close);
    let out = a.pods()[0]
        .command(PROBE)
        .unwrap()
        .args(["tcp", &addr.to_string(), "2"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    // Both connections arrive from the pod's own IP: routed, not NATed.
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![format!("node-b saw {client_ip}"); 2]
    );
    assert_eq!(echo::peers(&server), [IpAddr::from(client_ip); 2]);

    // The node addresses are reachable across the link too (where a peer
    // node's daemon would listen, e.g. HBONE on 15008).
    let gw = SocketAddr::from((b.gateway(), 7201));
    let l = echo::listen(b.netns(), gw).unwrap();
    let on_node = echo::tcp(l, |peer| format!("node {}", peer.ip()), Then::Close);
    let out = a
        .command(PROBE)
        .unwrap()
        .args(["tcp", &gw.to_string()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("node {}", a.gateway())
    );
    assert_eq!(echo::peers(&on_node), [IpAddr::from(a.gateway())]);
}

#[test]
fn nodes_with_the_same_pod_cidr_cannot_be_linked() {
    let Some(p) =
        strait_tests::privileged::require("nodes_with_the_same_pod_cidr_cannot_be_linked")
    else {
        return;
    };
    let a = Node::new(&p.cgroup2, "node-a", 22).unwrap();
    let b = Node::new(&p.cgroup2, "node-b", 22).unwrap();
    let e = link(&a, &b).unwrap_err().to_string();
    assert!(e.contains("10.244.22.0/24"), "{e}");
}
