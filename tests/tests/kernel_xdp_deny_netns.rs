//! Tier 3: AuthorizationPolicy DENY by source address, compiled from the
//! config into the uplink XDP program's deny tries, on a veth between two
//! network namespaces with real TCP connections: the denied client's
//! connections are dropped at their first packet (the prefix's drop
//! counter rises), another address on the node is still reachable, and
//! removing the policy lets the client through again.
//!
//! ```text
//!  client 10.78.0.10 (netns "cli") ── v0 ═ v0 ── node 10.78.0.2 (pod "web"), 10.78.0.3 (not selected)
//!                                              xdp_lb on the node's v0
//! ```
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use strait::datapath::UplinkConfig;
use strait_tests::lb::Fixture;
use strait_tests::node::echo::{self, Then};
use strait_tests::node::{names, netns};
use strait_tests::privileged;
use strait_tests::xdp_net::{ip_in, Topology};

const PORT: u16 = 8080;

/// Whether a connection from the client namespace to `ip` gets the
/// server's answer within `timeout` (a dropped SYN times out).
fn reaches(ns: &str, ip: Ipv4Addr, timeout: Duration) -> bool {
    netns::run_in(ns, || {
        let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::from((ip, PORT)), timeout) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).is_ok() && &buf == b"ok"
    })
    .unwrap()
}

fn snapshot(yaml: &str) -> strait_config::MeshSnapshot {
    let loaded = strait_config::load::load_str(yaml, "test.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let (snap, diags) = strait_config::compile(&loaded.resources);
    assert!(!diags.iter().any(|d| d.is_error()), "{diags:?}");
    snap
}

#[test]
fn deny_ip_blocks_policy_drops_the_source_in_xdp_until_it_is_removed() {
    let Some(p) =
        privileged::require("deny_ip_blocks_policy_drops_the_source_in_xdp_until_it_is_removed")
    else {
        return;
    };
    let id = names::new_node_id();
    let node_name = format!("{}{id}-xdpdeny", names::PREFIX);
    let (client, node) = (format!("{node_name}-cli"), format!("{node_name}-node"));
    let spaces = Topology::create(&[&client, &node]);
    ip_in(
        &client,
        &[
            &format!("link add v0 type veth peer name v0 netns {node}"),
            "addr add 10.78.0.10/24 dev v0",
            "link set v0 up",
            "link set lo up",
        ],
    );
    ip_in(
        &node,
        &[
            "addr add 10.78.0.2/24 dev v0",
            "addr add 10.78.0.3/24 dev v0",
            "link set v0 up",
            "link set lo up",
        ],
    );
    let l = echo::listen(&node, ([0, 0, 0, 0], PORT)).unwrap();
    echo::tcp(l, |_| "ok".into(), Then::Close);

    let mut fx = Fixture::new(&p, &node_name, "127.0.0.1:1".parse().unwrap());
    let dp = fx.dp();
    netns::run_in(&node, || {
        dp.attach_uplink(
            "v0",
            &UplinkConfig {
                source: Ipv4Addr::new(10, 78, 0, 2),
                gateway_mac: [0x02, 0, 0, 0, 0, 1],
            },
        )
    })
    .unwrap()
    .expect("attach xdp_lb to the node's veth");

    let wait = Duration::from_secs(10);
    let web = Ipv4Addr::new(10, 78, 0, 2);
    let other = Ipv4Addr::new(10, 78, 0, 3);
    assert!(reaches(&client, web, wait), "reachable before any policy");

    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: shop, labels: {{app: web}}}}\n\
         spec: {{nodeName: {node_name}, containers: [{{name: c, image: x}}]}}\n\
         status: {{podIP: 10.78.0.2, phase: Running}}\n"
    );
    let policy = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: block-client, namespace: shop}\n\
         spec:\n  selector: {matchLabels: {app: web}}\n  action: DENY\n  rules:\n  - from:\n    - source: {ipBlocks: [\"10.78.0.0/28\"]}\n";
    let report = fx
        .dp()
        .apply_deny_policies(&snapshot(&format!("{pod}{policy}")))
        .unwrap();
    assert_eq!((report.v4, report.destinations), (1, 1));

    assert!(
        !reaches(&client, web, Duration::from_secs(2)),
        "the DENY policy's source must not connect"
    );
    let drops = fx.dp().deny_drops();
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert_eq!(drops[0].0, ("10.78.0.0".parse().unwrap(), 28));
    assert!(drops[0].1 >= 1, "the SYN was counted: {drops:?}");
    // The node's other address is not a selected workload.
    assert!(
        reaches(&client, other, wait),
        "unselected address reachable"
    );

    // Policy removed: the same client connects again.
    let report = fx.dp().apply_deny_policies(&snapshot(&pod)).unwrap();
    assert_eq!((report.v4, report.destinations), (0, 0));
    assert!(
        reaches(&client, web, wait),
        "reachable once the policy is gone"
    );
    drop(fx);
    drop(spaces);
}
