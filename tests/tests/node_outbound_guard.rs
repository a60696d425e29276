//! The outbound listener (`<node address>:15001`) is reachable from this
//! node's meshed pods only: another node connecting to it gets no
//! handshake (its SYN is dropped by the listener's socket filter), nor does
//! a pod of this node that opted out of the mesh; a pod joining the mesh is
//! let in without a restart.
use std::net::{SocketAddr, TcpStream};

use std::time::{Duration, Instant};

use strait_tests::node::{link, Daemon, Node, PodSpec};

const ADMIN: &str = "127.0.0.1:15000";

/// Whether a TCP handshake with `addr` completes within 2 s.
fn handshake(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

fn from_pod(node: &Node, pod: &str, addr: SocketAddr) -> bool {
    node.pod("default", pod)
        .unwrap()
        .run_in(|| handshake(addr))
        .unwrap()
}

/// Retries `f` until it returns `want` (60 s at most: the machine may be
/// loaded); returns the last answer.
fn until(want: bool, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = f();
        if got == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_outbound_listener_answers_this_nodes_meshed_pods_only() {
    let name = "the_outbound_listener_answers_this_nodes_meshed_pods_only";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mut a = Node::new(&p.cgroup2, "node-a", 45).unwrap();
    let b = Node::new(&p.cgroup2, "node-b", 46).unwrap();
    a.add_pod(PodSpec::new("client", &[("app", "client")]))
        .unwrap();
    a.add_pod(PodSpec::new(
        "outsider",
        &[("app", "outsider"), ("istio.io/dataplane-mode", "none")],
    ))
    .unwrap();
    link(&a, &b).unwrap();
    let config = a.tmp_dir().join("config");
    a.write_config(&config).unwrap();
    let daemon = Daemon::on(&a, &config)
        .args(["--admin", ADMIN, "--no-access-log"])
        .env("RUST_LOG", "strait=debug")
        .spawn()
        .unwrap();
    let outbound = SocketAddr::V4(a.outbound_addr());

    // This node's meshed pod reaches the listener (a connection the kernel
    // did not redirect is then closed by the proxy, but the handshake
    // completes).
    assert!(
        until(true, || from_pod(&a, "client", outbound)),
        "the meshed pod cannot reach the outbound listener:\n{}",
        daemon.log_tail(30)
    );
    // The node itself does too (loopback and its own address).
    assert!(a.run_in(|| handshake(outbound)).unwrap());
    // Node B, which routes to node A's address (the link), gets no answer.
    assert!(
        !b.run_in(|| handshake(outbound)).unwrap(),
        "another node completed a handshake with the outbound listener:\n{}",
        daemon.log_tail(30)
    );
    // Nor does this node's opted-out pod.
    assert!(!from_pod(&a, "outsider", outbound));
    // The pod joins the mesh: let in without a restart.
    assert!(a.set_pod_label("default", "outsider", "istio.io/dataplane-mode", None));
    a.write_config(&config).unwrap();
    assert!(
        until(true, || from_pod(&a, "outsider", outbound)),
        "a pod that joined the mesh is still refused:\n{}",
        daemon.log_tail(30)
    );
    // Node B still is not.
    assert!(!b.run_in(|| handshake(outbound)).unwrap());
}
