//! Tier 2: 4in6 in the XDP external-VIP balancer (`xdp_lb`) through
//! BPF_PROG_TEST_RUN: an IPv4 VIP whose reals are IPv6 nodes is tunnelled
//! in an outer IPv6 header (Katran's `encap_v6(..., is_ipv6 = false)`),
//! with exact output bytes (outer header fields, the inner packet byte for
//! byte, its TTL untouched), malformed and truncated packets, ICMP
//! "fragmentation needed", Maglev spread over IPv6 reals and flows kept
//! across real-set changes, rings mixing IPv4 and IPv6 reals, and the
//! fail-closed cases (no IPv6 uplink).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use strait::datapath::{ExternalVip, ExternalVips, L4Protocol, UplinkConfig, UplinkConfig6};
use strait_tests::privileged;
use strait_tests::xdp::{
    bench_program_balances_like_xdp_lb, checksum, for_each_mutation, frag_needed_threshold, frame,
    ipv4, prog, run, spreads_flows_and_keeps_them_when_reals_change, tcp, udp, with_tcp_vip,
    LbFamily, GW_MAC, XDP_DROP, XDP_PASS, XDP_TX,
};

const VIP: [u8; 4] = [198, 51, 100, 10];
const LB_SRC: [u8; 4] = [10, 0, 0, 1];
/// The balancer's uplink IPv6 address: its first 96 bits prefix the outer
/// source.
const LB_SRC6: &str = "2001:db8:1::5";
/// The IPv6 gateway's MAC (Katran configures one per family).
const GW6_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x66];
const CLIENT: [u8; 4] = [192, 0, 2, 1];

/// IPv6 real node `n`.
fn node6(n: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..2].copy_from_slice(&[0xfd, 0x00]);
    a[15] = n;
    a
}

fn tcp_frame(src: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    frame(src, VIP, 6, &tcp(sport, dport, flags, b"hello"))
}

/// The frame `xdp_lb` must transmit for `inner` (an Ethernet + IPv4 frame)
/// tunnelled to IPv6 real `real`, computed here from the spec rather than
/// the program: IPv6 gateway MAC, the old destination MAC as source,
/// EtherType IPv6; version 6, traffic class = the inner TOS, flow label 0,
/// payload length = the inner IPv4 total length, next header 4, hop limit 64,
/// source = the first 96 bits of [`LB_SRC6`] then (client address XOR
/// client port, the port on the first two bytes: Katran's
/// `src ^ port16[0]`), destination `real`; then the inner packet.
/// `client` and `sport` are the flow's (for an ICMP error, the flow it is
/// about).
fn in_ipv6(inner: &[u8], real: [u8; 16], client: [u8; 4], sport: u16) -> Vec<u8> {
    let ip = &inner[14..];
    let mut f = GW6_MAC.to_vec();
    f.extend_from_slice(&inner[0..6]);
    f.extend_from_slice(&[0x86, 0xdd]);
    let tos = ip[1];
    f.extend_from_slice(&[0x60 | tos >> 4, (tos & 0x0f) << 4, 0, 0]);
    f.extend_from_slice(&[ip[2], ip[3], 4, 64]);
    let prefix = LB_SRC6.parse::<Ipv6Addr>().unwrap().octets();
    f.extend_from_slice(&prefix[..12]);
    let p = sport.to_be_bytes();
    f.extend_from_slice(&[client[0] ^ p[0], client[1] ^ p[1], client[2], client[3]]);
    f.extend_from_slice(&real);
    f.extend_from_slice(ip);
    f
}

fn vip(port: u16, protocol: L4Protocol, reals: &[(IpAddr, u32)]) -> ExternalVip {
    ExternalVip {
        vip: Ipv4Addr::from(VIP),
        port,
        protocol,
        reals: reals.to_vec(),
    }
}

fn v6(n: u8) -> IpAddr {
    Ipv6Addr::from(node6(n)).into()
}

/// A loaded object with both uplinks configured and `xdp_lb` loaded.
fn setup() -> aya::Ebpf {
    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::configure_uplink(
        &mut ebpf,
        &UplinkConfig {
            source: Ipv4Addr::from(LB_SRC),
            gateway_mac: GW_MAC,
        },
    )
    .unwrap();
    uplink6(&mut ebpf, GW6_MAC);
    strait::datapath::load_xdp_lb(&mut ebpf).unwrap();
    ebpf
}

fn uplink6(ebpf: &mut aya::Ebpf, gateway_mac: [u8; 6]) {
    strait::datapath::configure_uplink6(
        ebpf,
        Some(&UplinkConfig6 {
            source: LB_SRC6.parse().unwrap(),
            gateway_mac,
        }),
    )
    .unwrap();
}

/// The IPv6 real a transmitted 4in6 frame was tunnelled to.
fn real6_of(out: &[u8]) -> [u8; 16] {
    assert_eq!(
        out[12..14],
        [0x86, 0xdd],
        "an outer IPv6 header: {out:02x?}"
    );
    out[38..54].try_into().unwrap()
}

#[test]
fn xdp_lb_tunnels_an_ipv4_vip_to_ipv6_reals_with_exact_outer_headers() {
    let Some(_p) =
        privileged::require("xdp_lb_tunnels_an_ipv4_vip_to_ipv6_reals_with_exact_outer_headers")
    else {
        return;
    };
    let mut ebpf = setup();
    let report = ExternalVips::new()
        .apply(
            &mut ebpf,
            &[
                vip(80, L4Protocol::Tcp, &[(v6(2), 1)]),
                vip(53, L4Protocol::Udp, &[(v6(3), 1)]),
            ],
        )
        .unwrap();
    assert_eq!((report.vips, report.reals, report.without_reals), (2, 2, 0));
    let p = prog(&ebpf);

    // A TCP SYN with TOS 0xb8 (DSCP EF): traffic class 0xb8, flow label 0,
    // the inner packet (TTL 61, checksum) byte for byte.
    let mut syn = tcp_frame(CLIENT, 40000, 80, 0x02);
    syn[15] = 0xb8;
    syn[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&syn[14..34]);
    syn[24..26].copy_from_slice(&c.to_be_bytes());
    let (v, out) = run(p, &syn);
    assert_eq!(v, XDP_TX);
    let want = in_ipv6(&syn, node6(2), CLIENT, 40000);
    assert_eq!(out, want, "exact 4in6 frame");
    assert_eq!(out.len(), syn.len() + 40);
    assert_eq!(&out[14..16], &[0x6b, 0x80], "version 6, traffic class 0xb8");
    assert_eq!(&out[16..18], &[0, 0], "flow label 0");
    assert_eq!(
        (out[20], out[21]),
        (4, 64),
        "next header IPIP, hop limit 64"
    );
    assert_eq!(out[54 + 8], 61, "the inner TTL is untouched");

    // A UDP datagram from another client port: another outer source (the
    // suffix follows the client's port), same real.
    let dns = frame(CLIENT, VIP, 17, &udp(5353, 53, b"query"));
    let (v, out) = run(p, &dns);
    assert_eq!(v, XDP_TX);
    assert_eq!(out, in_ipv6(&dns, node6(3), CLIENT, 5353));
    assert_ne!(out[34..38], want[34..38], "the source spreads by port");

    let s = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!((s.packets, s.new_flows), (2, 2), "{s:?}");
    assert_eq!(s.bytes, (syn.len() - 14 + dns.len() - 14) as u64);
}

/// Katran keys each real by its own family: one ring may hold IPv4 nodes
/// (IPIP) and IPv6-only nodes (4in6); flows reach both, each in its
/// encapsulation; when the IPv6 node leaves, the IPv4 node's established
/// flows stay and the IPv6 node's move to it.
#[test]
fn xdp_lb_spreads_an_ipv4_vip_over_ipv4_and_ipv6_reals_in_their_own_encapsulation() {
    let Some(_p) = privileged::require(
        "xdp_lb_spreads_an_ipv4_vip_over_ipv4_and_ipv6_reals_in_their_own_encapsulation",
    ) else {
        return;
    };
    let mut ebpf = setup();
    let v4 = IpAddr::from([10, 1, 0, 2]);
    let mut vips = ExternalVips::new();
    vips.apply(
        &mut ebpf,
        &[vip(80, L4Protocol::Tcp, &[(v4, 1), (v6(2), 1)])],
    )
    .unwrap();
    let mut on_v4 = Vec::new();
    let mut on_v6 = 0;
    for sport in 30000..30100u16 {
        let f = tcp_frame(CLIENT, sport, 80, 0x02);
        let (v, out) = run(prog(&ebpf), &f);
        assert_eq!(v, XDP_TX);
        if out[12..14] == [0x08, 0x00] {
            assert_eq!(&out[30..34], &[10, 1, 0, 2], "IPIP to the IPv4 node");
            assert_eq!(&out[34..], &f[14..]);
            on_v4.push(sport);
        } else {
            assert_eq!(out, in_ipv6(&f, node6(2), CLIENT, sport));
            on_v6 += 1;
        }
    }
    assert!(on_v4.len() > 25 && on_v6 > 25, "{} / {on_v6}", on_v4.len());
    // The IPv6 node leaves: the IPv4 node's flows stay, the others move to it.
    vips.apply(&mut ebpf, &[vip(80, L4Protocol::Tcp, &[(v4, 1)])])
        .unwrap();
    for sport in 30000..30100u16 {
        let (v, out) = run(prog(&ebpf), &tcp_frame(CLIENT, sport, 80, 0x10));
        assert_eq!(v, XDP_TX);
        assert_eq!(&out[30..34], &[10, 1, 0, 2], "flow {sport}");
    }
    let s = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!(s.new_flows, 100 + 100 - on_v4.len() as u64, "{s:?}");
}

/// Without an IPv6 uplink (no outer source, or no IPv6 gateway MAC yet)
/// a flow on an IPv6 real is dropped and counted, never sent to a wrong
/// MAC or passed to this node's stack; once configured it is tunnelled.
#[test]
fn xdp_lb_drops_4in6_flows_without_an_ipv6_uplink() {
    let Some(_p) = privileged::require("xdp_lb_drops_4in6_flows_without_an_ipv6_uplink") else {
        return;
    };
    let mut ebpf = with_tcp_vip::<V4in6>(80, &[(node6(2), 1)]);
    let f = tcp_frame(CLIENT, 40000, 80, 0x02);
    strait::datapath::configure_uplink6(&mut ebpf, None).unwrap();
    assert_eq!(run(prog(&ebpf), &f).0, XDP_DROP, "no IPv6 source");
    uplink6(&mut ebpf, [0; 6]);
    assert_eq!(run(prog(&ebpf), &f).0, XDP_DROP, "no IPv6 gateway MAC");
    let s = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!((s.no_real_dropped, s.packets), (2, 0), "{s:?}");
    uplink6(&mut ebpf, GW6_MAC);
    let (v, out) = run(prog(&ebpf), &f);
    assert_eq!((v, out), (XDP_TX, in_ipv6(&f, node6(2), CLIENT, 40000)));
}

/// The IPv4 path's checks before a real is chosen hold for IPv6 reals:
/// fragments, IP options, truncated headers and a total length past the
/// frame are dropped and counted; other destinations pass; ICMP
/// "fragmentation needed" about a flow goes (4in6) to that flow's real.
#[test]
fn xdp_lb_4in6_drops_malformed_and_follows_icmp_frag_needed() {
    let Some(_p) = privileged::require("xdp_lb_4in6_drops_malformed_and_follows_icmp_frag_needed")
    else {
        return;
    };
    let reals: Vec<([u8; 16], u32)> = (2..6).map(|n| (node6(n), 1)).collect();
    let ebpf = with_tcp_vip::<V4in6>(80, &reals);
    let p = prog(&ebpf);
    let ok = tcp_frame(CLIENT, 40000, 80, 0x02);
    let mut fragment = ok.clone();
    fragment[14..34].copy_from_slice(&ipv4(CLIENT, VIP, 6, ok.len() - 34, 0x2000));
    let mut options = ok.clone();
    options[14] = 0x46;
    let mut long = ok.clone();
    long[16..18].copy_from_slice(&((ok.len() - 14 + 1) as u16).to_be_bytes());
    let truncated = ok[..14 + 20 + 12].to_vec();
    for (f, what) in [
        (&fragment, "fragment"),
        (&options, "options"),
        (&long, "total length past the frame"),
        (&truncated, "cut TCP header"),
    ] {
        assert_eq!(run(p, f).0, XDP_DROP, "{what}");
    }
    let s = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!((s.fragments_dropped, s.malformed_dropped), (1, 3), "{s:?}");
    let other = frame(CLIENT, [203, 0, 113, 9], 6, &tcp(1, 80, 0x02, b""));
    assert_eq!(run(p, &other), (XDP_PASS, other.clone()));

    // The flow's real, then a router's "fragmentation needed" quoting the
    // real's reply (VIP:80 -> client:40000): same real, and the outer
    // source of the flow it is about.
    let real = real6_of(&run(p, &ok).1);
    let mut quote = ipv4(VIP, CLIENT, 6, 8, 0);
    quote.extend_from_slice(&[0, 80, 0x9c, 0x40, 0, 0, 0, 1]);
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    icmp.extend(quote);
    let err = frame([203, 0, 113, 1], VIP, 1, &icmp);
    let (v, out) = run(p, &err);
    assert_eq!(v, XDP_TX);
    assert_eq!(out, in_ipv6(&err, real, CLIENT, 40000));
    assert_eq!(
        strait::datapath::xlb_stats(&ebpf).unwrap().icmp_frag_needed,
        1
    );
}

/// An IPv4 VIP on IPv6 nodes, for the checks both families share.
struct V4in6;

impl LbFamily for V4in6 {
    type Addr = [u8; 16];
    type Tables = ExternalVips;
    fn node(n: u8) -> [u8; 16] {
        node6(n)
    }
    fn setup() -> aya::Ebpf {
        setup()
    }
    fn new_tables() -> ExternalVips {
        ExternalVips::new()
    }
    fn recover(ebpf: &aya::Ebpf) -> ExternalVips {
        ExternalVips::recover(ebpf).unwrap()
    }
    fn apply(
        tables: &mut ExternalVips,
        ebpf: &mut aya::Ebpf,
        port: u16,
        reals: Option<&[([u8; 16], u32)]>,
    ) {
        let list: Vec<ExternalVip> = reals
            .map(|r| {
                let r: Vec<(IpAddr, u32)> = r
                    .iter()
                    .map(|(a, w)| (Ipv6Addr::from(*a).into(), *w))
                    .collect();
                vip(port, L4Protocol::Tcp, &r)
            })
            .into_iter()
            .collect();
        tables.apply(ebpf, &list).unwrap();
    }
    fn tcp_frame(client: u16, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        tcp_frame([192, 0, 2, client as u8 + 1], sport, dport, flags)
    }
    fn real_of(out: &[u8]) -> [u8; 16] {
        real6_of(out)
    }
}

#[test]
fn xdp_lb_spreads_4in6_flows_over_ipv6_reals_and_keeps_them_when_reals_change() {
    let Some(_p) = privileged::require(
        "xdp_lb_spreads_4in6_flows_over_ipv6_reals_and_keeps_them_when_reals_change",
    ) else {
        return;
    };
    let mut ebpf = setup();
    spreads_flows_and_keeps_them_when_reals_change::<V4in6>(&mut ebpf);
}

/// `xdp_lb_bench` takes a 4in6 header off again and restores the client's
/// IPv4 EtherType, so the bench repeats the same balancing.
#[test]
fn xdp_lb_bench_balances_4in6_like_xdp_lb_and_restores_the_clients_packet() {
    let Some(_p) = privileged::require(
        "xdp_lb_bench_balances_4in6_like_xdp_lb_and_restores_the_clients_packet",
    ) else {
        return;
    };
    let mut ebpf = with_tcp_vip::<V4in6>(80, &[(node6(2), 1), (node6(3), 1)]);
    bench_program_balances_like_xdp_lb(
        &mut ebpf,
        &[0x02, 0x10].map(|flags| tcp_frame(CLIENT, 40000, 80, flags)),
        &[tcp_frame(CLIENT, 40000, 81, 0x02)],
    );
}

#[test]
fn xdp_lb_4in6_random_mutations_never_pass_a_vip_packet_unbalanced() {
    let Some(_p) =
        privileged::require("xdp_lb_4in6_random_mutations_never_pass_a_vip_packet_unbalanced")
    else {
        return;
    };
    let mut ebpf = setup();
    ExternalVips::new()
        .apply(
            &mut ebpf,
            &[
                vip(80, L4Protocol::Tcp, &[(v6(2), 1)]),
                vip(80, L4Protocol::Udp, &[(v6(3), 1)]),
            ],
        )
        .unwrap();
    let bases = [
        tcp_frame(CLIENT, 40000, 80, 0x10),
        frame(CLIENT, VIP, 17, &udp(4000, 80, b"abcdef")),
    ];
    for_each_mutation(
        prog(&ebpf),
        &bases,
        0x2545_f491_4f6c_dd1d,
        54,
        |f, v, out| {
            let to_vip_port = f.len() >= 38
                && f[12..14] == [0x08, 0x00]
                && f[30..34] == VIP
                && (f[23] == 6 || f[23] == 17)
                && f[36..38] == [0, 80];
            match v {
                XDP_PASS => assert!(!to_vip_port, "a packet to a VIP port passed: {f:02x?}"),
                XDP_TX => {
                    assert!(to_vip_port, "{f:02x?}");
                    assert_eq!(f[14], 0x45);
                    let sport = u16::from_be_bytes([f[34], f[35]]);
                    let src: [u8; 4] = f[26..30].try_into().unwrap();
                    assert_eq!(out, in_ipv6(f, real6_of(out), src, sport));
                    assert_eq!(&out[..6], &GW6_MAC);
                }
                _ => {}
            }
        },
    );
}

/// The wiring from the config: an IPv4 `externalIPs` entry whose endpoints
/// are on a dual-stack node and an IPv6-only node spreads over the first
/// by its IPv4 address (IPIP) and the second by its IPv6 one (4in6). A
/// balancer without an IPv6 uplink leaves the IPv6 node out, with a
/// warning naming the VIP.
#[test]
fn xdp_lb_vips_take_ipv6_only_nodes_of_an_ipv4_vip_by_their_ipv6_address() {
    let Some(_p) = privileged::require(
        "xdp_lb_vips_take_ipv6_only_nodes_of_an_ipv4_vip_by_their_ipv6_address",
    ) else {
        return;
    };
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: front, namespace: web}\n\
         spec:\n  clusterIP: 10.96.0.20\n  selector: {app: front}\n  externalIPs: [198.51.100.10]\n  ports:\n  - {name: http, port: 80}\n",
    );
    for (name, ip, host, host_ips) in [
        (
            "a",
            "10.244.1.5",
            "192.168.0.11",
            "{ip: 192.168.0.11}, {ip: \"fd00::11\"}",
        ),
        ("b", "10.244.2.5", "fd00::12", "{ip: \"fd00::12\"}"),
    ] {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: web, labels: {{app: front}}}}\n\
             spec: {{containers: [{{name: c, image: x}}]}}\n\
             status: {{podIP: {ip}, hostIP: \"{host}\", hostIPs: [{host_ips}], phase: Running, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
        ));
    }
    let loaded = strait_config::load::load_str(&yaml, "test.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let (snap, diags) = strait_config::compile(&loaded.resources);
    assert!(!diags.iter().any(|d| d.is_error()), "{diags:?}");
    let (mut list, warnings) = strait::datapath::external_vips(&snap.external);
    assert!(warnings.is_empty(), "{warnings:?}");
    let dual: IpAddr = "192.168.0.11".parse().unwrap();
    let only6: IpAddr = "fd00::12".parse().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reals, vec![(dual, 1), (only6, 1)]);

    let mut ebpf = setup();
    assert!(strait::datapath::ipv6_uplink(&ebpf).unwrap());
    ExternalVips::new().apply(&mut ebpf, &list).unwrap();
    let mut outer = std::collections::BTreeSet::new();
    for sport in 1000..1064u16 {
        let (v, out) = run(prog(&ebpf), &tcp_frame(CLIENT, sport, 80, 0x02));
        assert_eq!(v, XDP_TX);
        outer.insert(if out[12..14] == [0x86, 0xdd] {
            IpAddr::from(real6_of(&out))
        } else {
            IpAddr::from(<[u8; 4]>::try_from(&out[30..34]).unwrap())
        });
    }
    assert_eq!(outer, [dual, only6].into_iter().collect());

    // No IPv6 uplink on the balancer: the IPv6 node is left out, named.
    strait::datapath::configure_uplink6(&mut ebpf, None).unwrap();
    assert!(!strait::datapath::ipv6_uplink(&ebpf).unwrap());
    let w = strait::datapath::without_ipv6_reals(&mut list);
    assert_eq!(list[0].reals, vec![(dual, 1)]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("198.51.100.10:80") && w[0].contains("1 IPv6-only node(s) left out"),
        "{w:?}"
    );
}

/// 4in6 adds 40 bytes: a packet that fills the uplink's MTU with them goes
/// out; one byte more with DF is answered with ICMP "fragmentation needed"
/// announcing the MTU minus 40 (exact bytes), without DF dropped.
#[test]
fn xdp_lb_answers_packets_too_big_for_4in6_with_fragmentation_needed() {
    let Some(_p) =
        privileged::require("xdp_lb_answers_packets_too_big_for_4in6_with_fragmentation_needed")
    else {
        return;
    };
    let mut ebpf = with_tcp_vip::<V4in6>(80, &[(node6(2), 1)]);
    strait::datapath::set_uplink_mtu(&mut ebpf, 1500).unwrap();
    let p = prog(&ebpf);
    frag_needed_threshold(p, (CLIENT, VIP), 40, 1500, &|f| {
        in_ipv6(f, node6(2), CLIENT, 40000)
    });
    let s = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!((s.too_big_dropped, s.packets), (3, 1));
}
