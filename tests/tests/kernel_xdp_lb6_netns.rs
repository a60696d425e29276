//! Tier 3: the XDP external-VIP balancer's IPv6 side on a veth in network
//! namespaces, with real IPv6 TCP connections. A client reaches an IPv6
//! VIP through the balancer node, whose `xdp_lb` tunnels each connection
//! (ip6ip6) through the gateway to one of the real nodes; the real's
//! `xdp_lb` decapsulates and the real answers the client directly from the
//! VIP (direct server return). Connections spread over two reals, and
//! established ones stay on their real when a third joins.
//!
//! ```text
//!  client fd77::10 ─┐
//!  lb     fd77::2  ─┼─ br0 fd77::1 (gateway, netns "hub", forwarding)
//!  real-k fd77::2k ─┘
//! ```
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use strait::datapath::{ExternalVip6, ExternalVips6, L4Protocol, UplinkConfig6};
use strait_tests::node::netns;
use strait_tests::privileged;
use strait_tests::xdp_net::{balance_then_a_node_joins, network, Net, Subnet};

const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 0x80);
const PORT: u16 = 8080;
const GW_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x61];

/// The IPv6 subnet of the test's namespaces (addresses without duplicate
/// address detection, so they are usable at once).
const SUBNET: Subnet = Subnet {
    tag: "6",
    gw_mac: GW_MAC,
    prefix: "fd77::",
    len: 64,
    host_len: 128,
    addr_flags: " nodad",
    hub_sysctls: &[("ipv6/conf/all/forwarding", "1")],
    vip: IpAddr::V6(VIP),
    port: PORT,
};

/// Real node `k` (1-based) with weight 1.
fn real(k: u16) -> (Ipv6Addr, u32) {
    (Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x20 + k), 1)
}

fn vip(reals: Vec<(Ipv6Addr, u32)>) -> ExternalVip6 {
    ExternalVip6 {
        vip: VIP,
        port: PORT,
        protocol: L4Protocol::Tcp,
        reals,
    }
}

#[test]
fn xdp_lb6_spreads_real_ipv6_connections_over_nodes_and_keeps_them_when_a_node_joins() {
    let Some(_p) = privileged::require(
        "xdp_lb6_spreads_real_ipv6_connections_over_nodes_and_keeps_them_when_a_node_joins",
    ) else {
        return;
    };
    let Net {
        topo,
        client,
        lb,
        reals,
        ..
    } = network(&SUBNET);
    // What the daemon resolves without --xdp-source6 and
    // --xdp-gateway-mac6: the uplink's global address, not its link-local
    // one, and the IPv6 default gateway's MAC from the NDP table. Before
    // the gateway is resolved there is no MAC: the config fails closed
    // (all-zero MAC) with a warning naming the gateway.
    netns::ip(&["-n", &lb, "-6", "neigh", "flush", "dev", "v0"]).unwrap();
    let unresolved =
        netns::run_in(&lb, || strait::datapath::resolve_uplink6("v0", None, None)).unwrap();
    assert_eq!(
        unresolved.config,
        Some(UplinkConfig6 {
            source: "fd77::2".parse().unwrap(),
            gateway_mac: [0; 6],
        })
    );
    let warning = unresolved
        .warning
        .clone()
        .expect("a warning without a gateway MAC");
    assert!(
        warning.contains("fd77::1") && warning.contains("dropped"),
        "{warning}"
    );
    // What the daemon keeps looking up; one datagram to the gateway makes
    // the kernel resolve it (NDP) and the hub's bridge answers with its
    // MAC, which the next lookup finds.
    let mut pending = strait::datapath::PendingGateway6::new("v0", &unresolved)
        .expect("pending without a gateway MAC");
    let uplink = netns::run_in(&lb, || {
        assert_eq!(pending.retry(), None, "not resolved yet");
        let udp = std::net::UdpSocket::bind("[::]:0").unwrap();
        udp.send_to(b"x", "[fd77::1]:9").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(c) = pending.retry() {
                break c;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the gateway never resolved"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    })
    .unwrap();
    assert_eq!(
        uplink,
        UplinkConfig6 {
            source: "fd77::2".parse().unwrap(),
            gateway_mac: GW_MAC,
        },
        "the IPv6 gateway's own MAC, from neighbour discovery"
    );
    let resolved =
        netns::run_in(&lb, || strait::datapath::resolve_uplink6("v0", None, None)).unwrap();
    assert_eq!(
        (resolved.config, resolved.warning.clone()),
        (Some(uplink), None)
    );
    assert!(strait::datapath::PendingGateway6::new("v0", &resolved).is_none());
    // A given MAC is taken as it is; an interface without a global
    // address gives no config.
    let given = netns::run_in(&lb, || {
        strait::datapath::resolve_uplink6("v0", None, Some([2, 0, 0, 0, 0, 9]))
    })
    .unwrap();
    assert_eq!(
        given.config.map(|c| c.gateway_mac),
        Some([2, 0, 0, 0, 0, 9])
    );
    let lo = netns::run_in(&lb, || strait::datapath::resolve_uplink6("lo", None, None)).unwrap();
    assert_eq!(lo.config, None, "::1 is not an uplink source");
    assert!(lo.warning.is_some());
    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::configure_uplink6(&mut ebpf, Some(&uplink)).unwrap();
    let mut vips = ExternalVips6::new();
    balance_then_a_node_joins(
        &mut ebpf,
        (&lb, &reals, &client),
        SocketAddr::from((VIP, PORT)),
        |ebpf, n| {
            vips.apply(ebpf, &[vip((1..=n).map(|k| real(u16::from(k))).collect())])
                .unwrap();
        },
    );
    drop(ebpf);
    drop(topo);
}
