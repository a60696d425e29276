//! Tier 3: 4in6 in the XDP external-VIP balancer on a veth in network
//! namespaces, with real TCP connections. An IPv4 client reaches an IPv4
//! VIP through the balancer node, whose `xdp_lb` tunnels each connection
//! in IPv6 (next header 4) through the gateway to one of the real nodes,
//! which have no IPv4 address at all (their IPv4 default route goes via
//! the gateway's IPv6 address, RFC 5549 style). The real's `xdp_lb` takes
//! the outer IPv6 header off, as with IPIP — no `ip6_tunnel` module — and
//! the real answers the client directly from the VIP on its loopback
//! (direct server return). Connections spread over two reals and keep
//! their real when a third joins.
//!
//! ```text
//!  client 10.78.0.10            ─┐
//!  lb     10.78.0.2, fd78::2    ─┼─ br0 10.78.0.1, fd78::1 (netns "hub", forwarding)
//!  real-k fd78::2k (IPv6 only)  ─┘
//! ```
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use strait::datapath::{ExternalVip, ExternalVips, L4Protocol, UplinkConfig, UplinkConfig6};
use strait_tests::node::netns;
use strait_tests::privileged;
use strait_tests::xdp_net::{balance_then_a_node_joins, ip_in, network, Net, Subnet};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 78);
const PORT: u16 = 8080;
const GW_MAC: [u8; 6] = [0x02, 0x78, 0, 0, 0, 0x01];

/// The IPv4 subnet of the client, the balancer and (until they lose it)
/// the reals.
const SUBNET: Subnet = Subnet {
    tag: "46",
    gw_mac: GW_MAC,
    prefix: "10.78.0.",
    len: 24,
    host_len: 32,
    addr_flags: "",
    hub_sysctls: &[
        ("ipv4/ip_forward", "1"),
        ("ipv4/conf/all/send_redirects", "0"),
        ("ipv4/conf/br0/send_redirects", "0"),
        ("ipv6/conf/all/forwarding", "1"),
    ],
    vip: IpAddr::V4(VIP),
    port: PORT,
};

/// IPv6-only real node `k` (1-based) with weight 1.
fn real(k: u16) -> (IpAddr, u32) {
    (Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 0x20 + k).into(), 1)
}

fn vip(reals: Vec<(IpAddr, u32)>) -> ExternalVip {
    ExternalVip {
        vip: VIP,
        port: PORT,
        protocol: L4Protocol::Tcp,
        reals,
    }
}

#[test]
fn xdp_lb_spreads_ipv4_connections_over_ipv6_only_nodes_and_keeps_them_when_a_node_joins() {
    let Some(_p) = privileged::require(
        "xdp_lb_spreads_ipv4_connections_over_ipv6_only_nodes_and_keeps_them_when_a_node_joins",
    ) else {
        return;
    };
    let Net {
        topo,
        hub,
        client,
        lb,
        reals,
        ..
    } = network(&SUBNET);
    // IPv6 on the gateway and the balancer; the reals lose their IPv4
    // address (and with it their IPv4 route) and reach IPv4 destinations
    // through the gateway's IPv6 address.
    ip_in(&hub, &["addr add fd78::1/64 dev br0 nodad"]);
    ip_in(&lb, &["addr add fd78::2/64 dev v0 nodad"]);
    for (k, r) in reals.iter().enumerate() {
        ip_in(
            r,
            &[
                "addr flush dev v0 scope global",
                &format!("addr add fd78::2{}/64 dev v0 nodad", k + 1),
            ],
        );
        netns::ip(&[
            "-n", r, "-4", "route", "add", "default", "via", "inet6", "fd78::1", "dev", "v0",
        ])
        .unwrap();
    }
    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::configure_uplink(
        &mut ebpf,
        &UplinkConfig {
            source: Ipv4Addr::new(10, 78, 0, 2),
            gateway_mac: GW_MAC,
        },
    )
    .unwrap();
    strait::datapath::configure_uplink6(
        &mut ebpf,
        Some(&UplinkConfig6 {
            source: "fd78::2".parse().unwrap(),
            gateway_mac: GW_MAC,
        }),
    )
    .unwrap();
    let mut vips = ExternalVips::new();
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
