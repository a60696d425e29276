//! Tier 2/3: socket load balancing between pods in network namespaces, on a
//! simulated node (`strait_tests::node`): a client pod connects to a
//! ClusterIP; the kernel picks a backend pod and the packets go pod → node →
//! pod over the veths, with no address translation on the way.
use std::net::{SocketAddrV4, TcpListener};

use strait::datapath::{Datapath, DatapathConfig, L4LoadBalancer};
use strait_tests::lb::{serve_name, service, tally};
use strait_tests::node::{Node, PodSpec};
use strait_tests::privileged;

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");

fn run(cmd: &mut std::process::Command) -> Vec<String> {
    let out = cmd.output().expect("run strait-probe in a pod");
    assert!(
        out.status.success(),
        "strait-probe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn pods_reach_a_cluster_ip_balanced_over_backend_pods() {
    let Some(p) = privileged::require("pods_reach_a_cluster_ip_balanced_over_backend_pods") else {
        return;
    };
    let mut node = Node::new(&p.cgroup2, "lb-pods", 61).unwrap();
    let mut backends = Vec::new();
    for name in ["web-0", "web-1", "web-2"] {
        let pod = node.add_pod(PodSpec::new(name, &[("app", "web")])).unwrap();
        let ip = pod.ip;
        let l = pod
            .run_in(move || TcpListener::bind(SocketAddrV4::new(ip, 8080)))
            .unwrap()
            .unwrap();
        serve_name(l, name);
        backends.push((SocketAddrV4::new(ip, 8080), 1, true));
    }
    let clients: Vec<String> = (0..4).map(|i| format!("client-{i}")).collect();
    for c in &clients {
        node.add_pod(PodSpec::new(c, &[("app", "client")])).unwrap();
    }

    let mut config = DatapathConfig::new(node.name());
    config.bpffs = node.bpffs_dir();
    config.outbound = SocketAddrV4::new(node.gateway(), proxy_common::ports::OUTBOUND);
    let mut dp = Datapath::new(&config).unwrap();
    dp.attach(&node.pods_cgroup()).unwrap();
    let random: SocketAddrV4 = "10.96.0.10:80".parse().unwrap();
    let maglev: SocketAddrV4 = "10.96.0.11:80".parse().unwrap();
    dp.apply(&[
        service(random, L4LoadBalancer::Random, &backends),
        service(maglev, L4LoadBalancer::Maglev, &backends),
    ])
    .unwrap();

    // Random: one client pod reaches all three (P(miss) = 3·(2/3)^60).
    let client = node.pod("default", &clients[0]).unwrap();
    let lines =
        run(client
            .command(PROBE)
            .unwrap()
            .args(["tcp", &random.to_string(), "60", "--peer"]));
    let names: Vec<&str> = lines
        .iter()
        .map(|l| {
            l.strip_prefix(&format!("{random} "))
                .unwrap_or_else(|| panic!("peer is not the ClusterIP: {l}"))
        })
        .collect();
    assert_eq!(
        tally(&names).keys().collect::<Vec<_>>(),
        ["web-0", "web-1", "web-2"],
        "{lines:?}"
    );

    // Maglev on unbound sockets hashes the pod (its network namespace):
    // every connection from one pod lands on the same backend.
    for c in &clients {
        let pod = node.pod("default", c).unwrap();
        let lines = run(pod
            .command(PROBE)
            .unwrap()
            .args(["tcp", &maglev.to_string(), "5"]));
        let seen = tally(&lines);
        assert_eq!(seen.len(), 1, "pod {c}: {seen:?}");
        assert!(
            seen.keys().all(|k| k.starts_with("web-")),
            "pod {c}: {seen:?}"
        );
    }

    // A process on the node (outside the pods cgroup) is not balanced.
    let lines = run(node
        .command(PROBE)
        .unwrap()
        .args(["tcp", &random.to_string()]));
    assert!(lines[0].starts_with("error "), "{lines:?}");

    dp.cleanup().unwrap();
}
