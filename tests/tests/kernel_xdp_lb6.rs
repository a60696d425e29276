//! Tier 2: the IPv6 side of the XDP external-VIP load balancer (`xdp_lb`,
//! IPv6 VIPs tunnelled ip6ip6) through BPF_PROG_TEST_RUN on packet
//! fixtures, with exact output bytes (outer IPv6 header: version, traffic
//! class, flow label, payload length, next header 41, hop limit 64,
//! addresses; the inner packet untouched), decapsulation back to the
//! client's packet, extension headers, fragments, ICMPv6 packet too big,
//! malformed and truncated frames, and random mutations that must never
//! pass a VIP packet unbalanced.
use std::collections::BTreeSet;
use std::net::Ipv6Addr;

use strait::datapath::{ExternalVip6, ExternalVips6, L4Protocol, UplinkConfig6};
use strait_tests::privileged;
use strait_tests::xdp::{
    bench_program_balances_like_xdp_lb, eth, flows_sharing_a_cache_slot_keep_their_reals,
    for_each_mutation, packet_too_big, prog, run, spreads_flows_and_keeps_them_when_reals_change,
    tcp, too_big_threshold, tunnelled_to, udp, with_tcp_vip, LbFamily, TooBig, DST_MAC, GW_MAC,
    XDP_DROP, XDP_PASS, XDP_TX,
};
use strait_tests::xdp_pass::{as_arp, assert_passed_unchanged};

const VIP: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
const LB_SRC: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const CLIENT: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// A node address `fd00::1:n`.
fn node(n: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[13] = 1;
    a[15] = n;
    a
}

/// A client address `2001:db8:99::n:m`.
fn client(i: u16) -> [u8; 16] {
    let mut a = CLIENT;
    a[14..16].copy_from_slice(&i.to_be_bytes());
    a
}

/// An IPv6 header: traffic class `tc`, flow label 0x51234, hop limit 61.
fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload_len: usize, tc: u8) -> Vec<u8> {
    let len = payload_len as u16;
    let mut h = vec![
        0x60 | tc >> 4,
        (tc & 0x0f) << 4 | 0x5,
        0x12,
        0x34,
        (len >> 8) as u8,
        len as u8,
        next,
        61,
    ];
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h
}

/// Ethernet + IPv6 (next header `next`) + `l4` from `src` to `dst`.
fn frame(src: [u8; 16], dst: [u8; 16], next: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = eth([0x86, 0xdd]);
    f.extend(ipv6(src, dst, next, l4.len(), 0));
    f.extend_from_slice(l4);
    f
}

fn tcp_frame(src: [u8; 16], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    frame(src, VIP, 6, &tcp(sport, dport, flags, b"hello"))
}

/// The frame `xdp_lb` must transmit for `inner` (an Ethernet frame) sent
/// to `real`: gateway MAC, the old destination MAC as source, EtherType
/// IPv6, an outer IPv6 header (traffic class copied, flow label 0, payload
/// length = the inner IPv6 packet's size, next header 41, hop limit 64,
/// the balancer's source, the real), then the inner packet byte for byte.
fn encapsulated(inner: &[u8], real: [u8; 16]) -> Vec<u8> {
    let ip = &inner[14..];
    let tc = (ip[0] & 0x0f) << 4 | ip[1] >> 4;
    let mut f = GW_MAC.to_vec();
    f.extend_from_slice(&inner[0..6]);
    f.extend_from_slice(&[0x86, 0xdd]);
    let len = ip.len() as u16;
    f.extend_from_slice(&[
        0x60 | tc >> 4,
        (tc & 0x0f) << 4,
        0,
        0,
        (len >> 8) as u8,
        len as u8,
        41,
        64,
    ]);
    f.extend_from_slice(&LB_SRC);
    f.extend_from_slice(&real);
    f.extend_from_slice(ip);
    f
}

fn vip(port: u16, protocol: L4Protocol, reals: &[([u8; 16], u32)]) -> ExternalVip6 {
    ExternalVip6 {
        vip: Ipv6Addr::from(VIP),
        port,
        protocol,
        reals: reals
            .iter()
            .map(|(a, w)| (Ipv6Addr::from(*a), *w))
            .collect(),
    }
}

fn setup() -> aya::Ebpf {
    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::configure_uplink6(
        &mut ebpf,
        Some(&UplinkConfig6 {
            source: Ipv6Addr::from(LB_SRC),
            gateway_mac: GW_MAC,
        }),
    )
    .unwrap();
    strait::datapath::load_xdp_lb(&mut ebpf).unwrap();
    ebpf
}

/// The real a transmitted frame was tunnelled to (outer destination).
fn real_of(out: &[u8]) -> [u8; 16] {
    out[38..54].try_into().unwrap()
}

#[test]
fn xdp_lb6_tunnels_ipv6_vip_packets_with_exact_outer_headers() {
    let Some(_p) = privileged::require("xdp_lb6_tunnels_ipv6_vip_packets_with_exact_outer_headers")
    else {
        return;
    };
    let mut ebpf = setup();
    let report = ExternalVips6::new()
        .apply(
            &mut ebpf,
            &[
                vip(80, L4Protocol::Tcp, &[(node(2), 1)]),
                vip(53, L4Protocol::Udp, &[(node(3), 1)]),
            ],
        )
        .unwrap();
    assert_eq!((report.vips, report.reals, report.without_reals), (2, 2, 0));
    let p = prog(&ebpf);

    // TCP SYN to the VIP: tunnelled to the only real, exact bytes.
    let syn = tcp_frame(CLIENT, 40000, 80, 0x02);
    let (v, out) = run(p, &syn);
    assert_eq!(v, XDP_TX);
    assert_eq!(out, encapsulated(&syn, node(2)));
    assert_eq!(&out[0..6], &GW_MAC, "to the gateway");
    assert_eq!(&out[6..12], &DST_MAC, "from this node's MAC");
    assert_eq!(out[14] >> 4, 6);
    assert_eq!(u16::from_be_bytes([out[18], out[19]]) as usize, 40 + 25);
    assert_eq!((out[20], out[21]), (41, 64), "next header, hop limit");
    assert_eq!(&out[22..38], &LB_SRC);
    assert_eq!(&out[54..], &syn[14..], "inner packet untouched");

    // A traffic class is copied to the outer header (the flow label is
    // not); UDP to the UDP VIP port.
    let mut tc = eth([0x86, 0xdd]);
    let l4 = udp(5353, 53, b"q");
    tc.extend(ipv6(CLIENT, VIP, 17, l4.len(), 0xb8));
    tc.extend(&l4);
    let (v, out) = run(p, &tc);
    assert_eq!((v, out.clone()), (XDP_TX, encapsulated(&tc, node(3))));
    assert_eq!((out[14], out[15], out[16], out[17]), (0x6b, 0x80, 0, 0));

    // Not a VIP, not a VIP port, not a VIP protocol, an unknown next
    // header, not IPv6: passed unchanged.
    let mut other_vip = VIP;
    other_vip[15] = 0x11;
    let unchanged = [
        frame(CLIENT, other_vip, 6, &tcp(40000, 80, 0x02, b"")),
        tcp_frame(CLIENT, 40000, 81, 0x02),
        frame(CLIENT, VIP, 17, &udp(5353, 80, b"x")),
        frame(CLIENT, VIP, 47, &[0u8; 24]),
        as_arp(&syn),
    ];
    assert_passed_unchanged(p, unchanged);
    let s = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!((s.packets, s.new_flows), (2, 2));
    assert_eq!(s.bytes, (40 + 25) + (40 + 9));
}

#[test]
fn xdp_lb6_decapsulates_ip6ip6_to_a_vip_back_to_the_clients_packet() {
    let Some(_p) =
        privileged::require("xdp_lb6_decapsulates_ip6ip6_to_a_vip_back_to_the_clients_packet")
    else {
        return;
    };
    let mut ebpf = with_tcp_vip::<V6>(80, &[(node(2), 1)]);
    let p = prog(&ebpf);
    // What the balancer sends, through the balancer program and then the
    // real's: the real sees the Ethernet header it arrived with plus the
    // client's packet, byte for byte.
    let inner = tcp_frame(CLIENT, 40000, 80, 0x10);
    let (v, tunnelled) = run(p, &inner);
    assert_eq!(v, XDP_TX);
    let mut want = tunnelled[..14].to_vec();
    want.extend_from_slice(&inner[14..]);
    assert_eq!(run(p, &tunnelled), (XDP_PASS, want));
    assert_eq!(strait::datapath::xlb_stats(&ebpf).unwrap().decapsulated, 1);

    // ip6ip6 to an address that is not a VIP, an IPv4 packet inside, or
    // truncated inside the inner header: untouched.
    let other = encapsulated(&frame(CLIENT, node(9), 6, &tcp(1, 80, 0x10, b"")), node(2));
    assert_eq!(run(p, &other), (XDP_PASS, other.clone()));
    let mut v4_inside = tunnelled.clone();
    v4_inside[54] = 0x45;
    assert_eq!(run(p, &v4_inside), (XDP_PASS, v4_inside.clone()));
    let cut = &tunnelled[..14 + 40 + 30];
    assert_eq!(run(p, cut), (XDP_PASS, cut.to_vec()));
    assert_eq!(strait::datapath::xlb_stats(&ebpf).unwrap().decapsulated, 1);

    // Decapsulation works with the balancer's own IPv6 side off (a node
    // that is only a real).
    strait::datapath::configure_uplink6(&mut ebpf, None).unwrap();
    let p = prog(&ebpf);
    assert_eq!(run(p, &tunnelled).0, XDP_PASS);
    assert_eq!(strait::datapath::xlb_stats(&ebpf).unwrap().decapsulated, 2);
    // ...and VIP packets then pass unbalanced.
    assert_eq!(run(p, &inner), (XDP_PASS, inner.clone()));
}

/// `xdp_lb_bench` (what `cargo xtask bench xdp` times the IPv6 rows on)
/// balances IPv6 VIP packets as `xdp_lb` does and takes the 40-byte
/// ip6ip6 header off again (see the shared check).
#[test]
fn xdp_lb_bench_balances_ipv6_like_xdp_lb_and_restores_the_clients_packet() {
    let Some(_p) = privileged::require(
        "xdp_lb_bench_balances_ipv6_like_xdp_lb_and_restores_the_clients_packet",
    ) else {
        return;
    };
    let mut ebpf = with_tcp_vip::<V6>(80, &[(node(2), 1), (node(3), 1)]);
    bench_program_balances_like_xdp_lb(
        &mut ebpf,
        &[0x02, 0x10].map(|flags| tcp_frame(CLIENT, 40000, 80, flags)),
        &[
            tcp_frame(CLIENT, 40000, 81, 0x02),
            frame(CLIENT, VIP, 6, &[0u8; 8]),
            encapsulated(&frame(CLIENT, node(9), 6, &tcp(1, 80, 0x10, b"")), node(2)),
        ],
    );
}

/// The kernel places a new IPv6 flow where `proxy_common::flow_position6`
/// says (the ring slot of the flow's position, read back from the maps):
/// the kernel's word-wise flow key and hash agree with userspace's.
#[test]
fn xdp_lb6_new_flows_land_where_flow_position6_says() {
    let Some(_p) = privileged::require("xdp_lb6_new_flows_land_where_flow_position6_says") else {
        return;
    };
    let ebpf = with_tcp_vip::<V6>(80, &[(node(2), 1), (node(3), 1), (node(4), 1)]);
    let rings: aya::maps::HashMap<_, u32, proxy_common::MaglevTable> =
        aya::maps::HashMap::try_from(ebpf.map(proxy_common::XLB_RINGS6).unwrap()).unwrap();
    let ring = rings.iter().next().unwrap().unwrap().1;
    let reals: aya::maps::Array<_, proxy_common::XlbReal6> =
        aya::maps::Array::try_from(ebpf.map(proxy_common::XLB_REALS6).unwrap()).unwrap();
    let p = prog(&ebpf);
    let mut seen = BTreeSet::new();
    for i in 0..60u16 {
        let sport = 30000 + i * 7;
        let (v, out) = run(p, &tcp_frame(client(i), sport, 80, 0x02));
        assert_eq!(v, XDP_TX);
        let flow = proxy_common::XlbFlow6 {
            src: client(i),
            dst: VIP,
            sport: sport.to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            pad: [0; 3],
        };
        let pos = proxy_common::flow_position6(&flow, proxy_common::MAGLEV_TABLE_SIZE);
        let want = reals.get(&ring.slots[pos as usize], 0).unwrap().ip;
        assert_eq!(real_of(&out), want, "client {i}");
        seen.insert(want);
    }
    assert_eq!(seen.len(), 3, "spread over the three reals");
}

/// Without a known IPv6 gateway MAC (the daemon found no neighbour entry:
/// all-zero `gw_mac` beside a source) IPv6 VIP packets are dropped and
/// counted — never sent to a guessed MAC — while other IPv6 traffic and
/// the decapsulation of ip6ip6 to this node still work.
#[test]
fn xdp_lb6_without_a_gateway_mac_drops_vip_packets_and_passes_the_rest() {
    let Some(_p) =
        privileged::require("xdp_lb6_without_a_gateway_mac_drops_vip_packets_and_passes_the_rest")
    else {
        return;
    };
    let mut ebpf = with_tcp_vip::<V6>(80, &[(node(2), 1)]);
    let syn = tcp_frame(CLIENT, 40000, 80, 0x02);
    let (v, tunnelled) = run(prog(&ebpf), &syn);
    assert_eq!(v, XDP_TX, "with the gateway MAC: balanced");
    strait::datapath::configure_uplink6(
        &mut ebpf,
        Some(&UplinkConfig6 {
            source: Ipv6Addr::from(LB_SRC),
            gateway_mac: [0; 6],
        }),
    )
    .unwrap();
    let p = prog(&ebpf);
    let before = strait::datapath::xlb_stats(&ebpf).unwrap();
    for flags in [0x02, 0x10] {
        let f = tcp_frame(CLIENT, 40000, 80, flags);
        assert_eq!(run(p, &f), (XDP_DROP, f.clone()));
    }
    let after = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!(after.no_real_dropped - before.no_real_dropped, 2);
    assert_eq!(after.packets, before.packets, "nothing tunnelled");
    let not_vip = frame(CLIENT, node(9), 6, &tcp(1, 80, 0x02, b""));
    assert_eq!(run(p, &not_vip), (XDP_PASS, not_vip.clone()));
    assert_eq!(run(p, &tunnelled).0, XDP_PASS, "decapsulated");
    assert_eq!(
        strait::datapath::xlb_stats(&ebpf).unwrap().decapsulated,
        after.decapsulated + 1
    );
}

#[test]
fn xdp_lb6_drops_extension_headers_fragments_and_malformed_vip_packets() {
    let Some(_p) =
        privileged::require("xdp_lb6_drops_extension_headers_fragments_and_malformed_vip_packets")
    else {
        return;
    };
    let ebpf = with_tcp_vip::<V6>(80, &[(node(2), 1)]);
    let p = prog(&ebpf);
    let good = tcp_frame(CLIENT, 40000, 80, 0x10);
    let mut other = VIP;
    other[15] = 0x99;

    // A Fragment header (first or non-first fragment): dropped when to the
    // VIP address (Katran drops IPv6 fragments), passed to others.
    let fragment = |dst: [u8; 16], offset_flags: u16| {
        let mut l4 = vec![6, 0];
        l4.extend_from_slice(&offset_flags.to_be_bytes());
        l4.extend_from_slice(&[0, 0, 0, 7]);
        l4.extend(tcp(40000, 80, 0x10, b"x"));
        frame(CLIENT, dst, 44, &l4)
    };
    assert_eq!(run(p, &fragment(VIP, 0x0001)).0, XDP_DROP);
    assert_eq!(run(p, &fragment(VIP, 0x0008)).0, XDP_DROP);
    let f = fragment(other, 0x0008);
    assert_eq!(run(p, &f), (XDP_PASS, f.clone()));

    // Hop-by-Hop, Routing and Destination Options headers in front of TCP
    // to the VIP: dropped; to another address: passed.
    for next in [0u8, 43, 60] {
        let mut l4 = vec![6, 0, 1, 4, 0, 0, 0, 0];
        l4.extend(tcp(40000, 80, 0x10, b"x"));
        assert_eq!(run(p, &frame(CLIENT, VIP, next, &l4)).0, XDP_DROP);
        let f = frame(CLIENT, other, next, &l4);
        assert_eq!(run(p, &f), (XDP_PASS, f.clone()), "next header {next}");
    }

    // A version other than 6 under the IPv6 EtherType, to the VIP.
    let mut v4 = good.clone();
    v4[14] = 0x40;
    assert_eq!(run(p, &v4).0, XDP_DROP);
    // Payload length beyond the frame, or shorter than the TCP header.
    let mut long = good.clone();
    long[18..20].copy_from_slice(&1000u16.to_be_bytes());
    assert_eq!(run(p, &long).0, XDP_DROP);
    let mut short_len = good.clone();
    short_len[18..20].copy_from_slice(&10u16.to_be_bytes());
    assert_eq!(run(p, &short_len).0, XDP_DROP);
    // Truncated inside the TCP header (ports present) or inside the ports
    // (the address is a VIP's): dropped; inside the IPv6 header: not
    // recognisable, passed unchanged.
    for cut in [14 + 40 + 10, 14 + 40 + 2] {
        assert_eq!(run(p, &good[..cut]).0, XDP_DROP, "cut at {cut}");
    }
    for cut in [14, 14 + 39] {
        let f = &good[..cut];
        assert_eq!(run(p, f), (XDP_PASS, f.to_vec()), "cut at {cut}");
    }
    let s = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!(s.fragments_dropped, 2);
    assert_eq!(s.malformed_dropped, 3 + 1 + 2 + 2);
    assert_eq!(s.packets, 0);

    // A VIP whose reals are all drained: dropped and counted.
    let mut ebpf2 = setup();
    let r = ExternalVips6::new()
        .apply(&mut ebpf2, &[vip(80, L4Protocol::Tcp, &[(node(2), 0)])])
        .unwrap();
    assert_eq!(r.without_reals, 1);
    assert_eq!(run(prog(&ebpf2), &good).0, XDP_DROP);
    let s = strait::datapath::xlb_stats(&ebpf2).unwrap();
    assert_eq!(s.no_real_dropped, 1);
}

/// An ICMPv6 message to the VIP: type, code, checksum 0, then `body`.
fn icmp6(ty: u8, code: u8, body: &[u8]) -> Vec<u8> {
    let mut f = frame(
        [0x20, 1, 0xd, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        VIP,
        58,
        &{
            let mut m = vec![ty, code, 0, 0];
            m.extend_from_slice(body);
            m
        },
    );
    f.shrink_to_fit();
    f
}

/// The body of a "packet too big" (MTU 1280) quoting the real's reply
/// (VIP:443 -> client:sport) with 8 bytes of its TCP header.
fn too_big_body(client: [u8; 16], sport: u16) -> Vec<u8> {
    let mut b = 1280u32.to_be_bytes().to_vec();
    b.extend(ipv6(VIP, client, 6, 1400, 0));
    b.extend(&tcp(443, sport, 0x10, b"")[..8]);
    b
}

#[test]
fn xdp_lb6_packet_too_big_follows_the_flow_and_other_icmpv6_passes() {
    let Some(_p) =
        privileged::require("xdp_lb6_packet_too_big_follows_the_flow_and_other_icmpv6_passes")
    else {
        return;
    };
    let reals: Vec<([u8; 16], u32)> = (2..6).map(|i| (node(i), 1)).collect();
    let ebpf = with_tcp_vip::<V6>(443, &reals);
    let p = prog(&ebpf);
    for sport in 40000..40016u16 {
        let syn = tcp_frame(CLIENT, sport, 443, 0x02);
        let (v, out) = run(p, &syn);
        assert_eq!(v, XDP_TX);
        let real = real_of(&out);
        let err = icmp6(2, 0, &too_big_body(CLIENT, sport));
        let (v, out) = run(p, &err);
        assert_eq!(v, XDP_TX, "sport {sport}");
        assert_eq!(out, encapsulated(&err, real), "sport {sport}");
    }
    assert_eq!(
        strait::datapath::xlb_stats(&ebpf).unwrap().icmp_frag_needed,
        16
    );
    // Neighbour solicitation, echo request and destination unreachable to
    // the VIP: passed unchanged.
    for (ty, code, body) in [
        (135u8, 0u8, {
            let mut b = vec![0u8; 4];
            b.extend_from_slice(&VIP);
            b
        }),
        (128, 0, vec![0, 1, 0, 1]),
        (1, 4, too_big_body(CLIENT, 40000)),
    ] {
        let f = icmp6(ty, code, &body);
        assert_eq!(run(p, &f), (XDP_PASS, f.clone()), "type {ty}");
    }
    // A packet too big quoting UDP to a TCP-only VIP port: passed (not a
    // VIP flow); quoting a non-TCP/UDP packet from the VIP, or truncated
    // before the quoted ports: dropped.
    let mut udp_body = too_big_body(CLIENT, 40000);
    udp_body[4 + 6] = 17;
    let f = icmp6(2, 0, &udp_body);
    assert_eq!(run(p, &f), (XDP_PASS, f.clone()));
    let mut gre_body = too_big_body(CLIENT, 40000);
    gre_body[4 + 6] = 47;
    assert_eq!(run(p, &icmp6(2, 0, &gre_body)).0, XDP_DROP);
    let f = icmp6(2, 0, &too_big_body(CLIENT, 40000));
    assert_eq!(run(p, &f[..f.len() - 6]).0, XDP_DROP);
    // Its payload length beyond the frame: dropped.
    let mut long = f.clone();
    long[18..20].copy_from_slice(&2000u16.to_be_bytes());
    assert_eq!(run(p, &long).0, XDP_DROP);
}

/// The IPv6 side for the checks both families share.
struct V6;

impl LbFamily for V6 {
    type Addr = [u8; 16];
    type Tables = ExternalVips6;
    fn node(n: u8) -> [u8; 16] {
        node(n)
    }
    fn setup() -> aya::Ebpf {
        setup()
    }
    fn new_tables() -> ExternalVips6 {
        ExternalVips6::new()
    }
    fn recover(ebpf: &aya::Ebpf) -> ExternalVips6 {
        ExternalVips6::recover(ebpf).unwrap()
    }
    fn apply(
        tables: &mut ExternalVips6,
        ebpf: &mut aya::Ebpf,
        port: u16,
        reals: Option<&[([u8; 16], u32)]>,
    ) {
        let list: Vec<ExternalVip6> = reals
            .map(|r| vip(port, L4Protocol::Tcp, r))
            .into_iter()
            .collect();
        tables.apply(ebpf, &list).unwrap();
    }
    fn tcp_frame(client: u16, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        tcp_frame(self::client(client), sport, dport, flags)
    }
    fn real_of(out: &[u8]) -> [u8; 16] {
        real_of(out)
    }
}

#[test]
fn xdp_lb6_spreads_flows_and_keeps_them_when_reals_change() {
    let Some(_p) = privileged::require("xdp_lb6_spreads_flows_and_keeps_them_when_reals_change")
    else {
        return;
    };
    let mut ebpf = setup();
    spreads_flows_and_keeps_them_when_reals_change::<V6>(&mut ebpf);
}

#[test]
fn xdp_lb6_random_mutations_never_pass_a_vip_packet_unbalanced() {
    let Some(_p) =
        privileged::require("xdp_lb6_random_mutations_never_pass_a_vip_packet_unbalanced")
    else {
        return;
    };
    let mut ebpf = setup();
    ExternalVips6::new()
        .apply(
            &mut ebpf,
            &[
                vip(80, L4Protocol::Tcp, &[(node(2), 1)]),
                vip(80, L4Protocol::Udp, &[(node(3), 1)]),
            ],
        )
        .unwrap();
    let bases = [
        tcp_frame(CLIENT, 40000, 80, 0x10),
        frame(CLIENT, VIP, 17, &udp(4000, 80, b"abcdef")),
        icmp6(2, 0, &too_big_body(CLIENT, 40000)),
    ];
    for_each_mutation(
        prog(&ebpf),
        &bases,
        0x2545_f491_4f6c_dd1d,
        74,
        |f, v, out| {
            let ipv6_frame = f.len() >= 54 && f[12..14] == [0x86, 0xdd];
            let to_vip_port = ipv6_frame
                && f[14] >> 4 == 6
                && f.len() >= 58
                && f[38..54] == VIP
                && (f[20] == 6 || f[20] == 17)
                && f[56..58] == [0, 80];
            match v {
                XDP_PASS => {
                    assert!(!to_vip_port, "a packet to a VIP port passed: {f:02x?}");
                }
                XDP_TX => {
                    assert!(ipv6_frame && f[14] >> 4 == 6, "{f:02x?}");
                    if f[20] != 58 {
                        // Only well-formed packets to the VIP port.
                        assert!(to_vip_port, "{f:02x?}");
                        let len = u16::from_be_bytes([f[18], f[19]]) as usize;
                        assert!(len + 54 <= f.len());
                    } else {
                        assert_eq!(f[54], 2, "only packet too big is tunnelled");
                    }
                    assert_eq!(&out[0..6], &GW_MAC);
                    assert_eq!((out[20], out[21]), (41, 64));
                    assert_eq!(&out[54..], &f[14..], "inner packet untouched");
                }
                _ => {}
            }
        },
    );
}

#[test]
fn xdp_lb6_drops_denied_ipv6_sources_before_balancing() {
    let Some(_p) = privileged::require("xdp_lb6_drops_denied_ipv6_sources_before_balancing") else {
        return;
    };
    let mut ebpf = with_tcp_vip::<V6>(80, &[(node(2), 1)]);
    let mut deny = strait::datapath::DenyTries::take(&mut ebpf).unwrap();
    deny.sync(&[("2001:db8:99::".parse().unwrap(), 48)])
        .unwrap();
    let p = prog(&ebpf);
    assert_eq!(run(p, &tcp_frame(CLIENT, 1, 80, 0x02)).0, XDP_DROP);
    let mut elsewhere = CLIENT;
    elsewhere[5] = 0x98;
    assert_eq!(run(p, &tcp_frame(elsewhere, 1, 80, 0x02)).0, XDP_TX);
    assert_eq!(deny.drops()[0].1, 1);
}

/// The wiring from the config: a Service's IPv6 `externalIPs` entry
/// becomes an XDP VIP spread over the IPv6 addresses (Pods'
/// `status.hostIPs`) of the nodes of its ready endpoints.
#[test]
fn xdp_lb6_vips_follow_the_snapshots_ipv6_external_ips_and_host_ips() {
    let Some(_p) =
        privileged::require("xdp_lb6_vips_follow_the_snapshots_ipv6_external_ips_and_host_ips")
    else {
        return;
    };
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: front, namespace: web}\n\
         spec:\n  clusterIP: 10.96.0.20\n  selector: {app: front}\n  externalIPs: [\"2001:db8:7::10\"]\n  ports:\n  - {name: http, port: 80}\n",
    );
    for (name, ip, n) in [("a", "10.244.1.5", 11), ("b", "10.244.2.5", 12)] {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: web, labels: {{app: front}}}}\n\
             spec: {{containers: [{{name: c, image: x}}]}}\n\
             status: {{podIP: {ip}, hostIP: 192.168.0.{n}, hostIPs: [{{ip: 192.168.0.{n}}}, {{ip: \"fd00::1:{n}\"}}], phase: Running, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
        ));
    }
    let loaded = strait_config::load::load_str(&yaml, "test.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let (snap, diags) = strait_config::compile(&loaded.resources);
    assert!(!diags.iter().any(|d| d.is_error()), "{diags:?}");
    let (v4, _) = strait::datapath::external_vips(&snap.external);
    assert!(v4.is_empty(), "an IPv6 VIP is not an IPv4 entry: {v4:?}");
    let (list, warnings) = strait::datapath::external_vips6(&snap.external);
    assert!(warnings.is_empty(), "{warnings:?}");
    let n11: Ipv6Addr = "fd00::1:11".parse().unwrap();
    let n12: Ipv6Addr = "fd00::1:12".parse().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reals, vec![(n11, 1), (n12, 1)]);

    let mut ebpf = setup();
    ExternalVips6::new().apply(&mut ebpf, &list).unwrap();
    let mut vip_ip = [0u8; 16];
    vip_ip.copy_from_slice(&"2001:db8:7::10".parse::<Ipv6Addr>().unwrap().octets());
    let used: BTreeSet<[u8; 16]> = (1000..1064u16)
        .map(|sport| {
            let f = frame(CLIENT, vip_ip, 6, &tcp(sport, 80, 0x02, b""));
            let (v, out) = run(prog(&ebpf), &f);
            assert_eq!(v, XDP_TX);
            real_of(&out)
        })
        .collect();
    assert_eq!(used, [n11.octets(), n12.octets()].into_iter().collect());
}

/// The daemon's path: a [`strait::datapath::Datapath`] fills the pinned
/// IPv6 tables from a snapshot (`apply_external_services`), and the next
/// run over the same pins keeps the flow table and the reals' indexes, so
/// an established flow stays on its node when another node joins.
#[test]
fn xdp_lb6_pinned_tables_keep_flows_across_a_datapath_restart() {
    let Some(_p) =
        privileged::require("xdp_lb6_pinned_tables_keep_flows_across_a_datapath_restart")
    else {
        return;
    };
    use strait::datapath::{Datapath, DatapathConfig};
    let bpffs = strait_tests::bpffs::TestBpffs::new().unwrap();
    let mut config =
        DatapathConfig::new(format!("{}-xlb6", strait_tests::node::names::new_node_id()));
    config.bpffs = bpffs.path().to_path_buf();
    let pins = config.pin_dir();
    let snap = |nodes: &[u8]| {
        let mut yaml = String::from(
            "apiVersion: v1\nkind: Service\nmetadata: {name: front, namespace: web}\n\
             spec:\n  clusterIP: 10.96.0.20\n  selector: {app: front}\n  externalIPs: [\"2001:db8:7::10\"]\n  ports:\n  - {name: http, port: 80}\n",
        );
        for n in nodes {
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{n}, namespace: web, labels: {{app: front}}}}\n\
                 spec: {{containers: [{{name: c, image: x}}]}}\n\
                 status: {{podIP: 10.244.{n}.5, hostIPs: [{{ip: \"fd00::1:{n}\"}}], phase: Running, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
            ));
        }
        let loaded = strait_config::load::load_str(&yaml, "test.yaml");
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        strait_config::compile(&loaded.resources).0
    };
    let uplink = UplinkConfig6 {
        source: Ipv6Addr::from(LB_SRC),
        gateway_mac: GW_MAC,
    };
    let vip_ip: [u8; 16] = "2001:db8:7::10".parse::<Ipv6Addr>().unwrap().octets();
    let flows = |dp: &mut Datapath, flags: u8| -> Vec<[u8; 16]> {
        let ebpf = dp.ebpf_mut();
        (1000..1032u16)
            .map(|sport| {
                let f = frame(CLIENT, vip_ip, 6, &tcp(sport, 80, flags, b""));
                let (v, out) = run(prog(ebpf), &f);
                assert_eq!(v, XDP_TX);
                real_of(&out)
            })
            .collect()
    };

    let mut dp = Datapath::new(&config).unwrap();
    dp.configure_uplink6(Some(&uplink)).unwrap();
    let r = dp.apply_external_services(&snap(&[11, 12])).unwrap();
    assert_eq!((r.vips, r.reals, r.without_reals), (1, 2, 0));
    strait::datapath::load_xdp_lb(dp.ebpf_mut()).unwrap();
    let first = flows(&mut dp, 0x02);
    let used: BTreeSet<[u8; 16]> = first.iter().copied().collect();
    assert_eq!(used.len(), 2, "32 flows over both nodes");
    for m in [
        proxy_common::XLB_VIPS6,
        proxy_common::XLB_RINGS6,
        proxy_common::XLB_REALS6,
        proxy_common::XLB_CONNS6,
        proxy_common::XLB_CONFIG6,
    ] {
        assert!(pins.join(m).exists(), "{m} is pinned");
    }
    drop(dp);

    // The next run: a third node joins; every established flow stays.
    let mut dp = Datapath::new(&config).unwrap();
    dp.configure_uplink6(Some(&uplink)).unwrap();
    let r = dp.apply_external_services(&snap(&[11, 12, 13])).unwrap();
    assert_eq!((r.vips, r.reals), (1, 3));
    strait::datapath::load_xdp_lb(dp.ebpf_mut()).unwrap();
    assert_eq!(flows(&mut dp, 0x10), first, "established flows moved");
    dp.cleanup().unwrap();
}

/// The buckets of `[vip]:port/proto` in `XLB_VIPS6` (as the program and
/// the daemon compute them).
fn buckets_of(vip: [u8; 16], port: u16, proto: u8) -> [u32; 2] {
    proxy_common::vip_buckets6(
        proxy_common::XlbVipKey6 {
            vip,
            port: port.to_be(),
            proto,
            pad: 0,
        }
        .words(),
    )
}

/// `2001:db8:7::<i>` for the `i`s (from 1) whose first bucket for TCP port
/// 80 is `bucket`, `n` of them.
fn vips_in_bucket(bucket: u32, n: usize) -> Vec<[u8; 16]> {
    (1..u32::MAX)
        .map(|i| {
            let mut a = VIP;
            a[12..16].copy_from_slice(&i.to_be_bytes());
            a
        })
        .filter(|a| buckets_of(*a, 80, 6)[0] == bucket)
        .take(n)
        .collect()
}

#[test]
fn xdp_lb6_vips_sharing_a_bucket_each_reach_their_own_real() {
    let Some(_p) = privileged::require("xdp_lb6_vips_sharing_a_bucket_each_reach_their_own_real")
    else {
        return;
    };
    use proxy_common::XLB_VIP6_BUCKET_SLOTS;
    // More VIPs whose first bucket is the same than a bucket has slots
    // (their address markers land there or elsewhere too): the daemon
    // places the rest in their second buckets (or moves a resident), and
    // each VIP's packets reach its own node, exact bytes.
    let bucket = buckets_of(VIP, 80, 6)[0];
    let addrs = vips_in_bucket(bucket, XLB_VIP6_BUCKET_SLOTS + 3);
    let mut ebpf = setup();
    let list: Vec<ExternalVip6> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| ExternalVip6 {
            vip: Ipv6Addr::from(*a),
            port: 80,
            protocol: L4Protocol::Tcp,
            reals: vec![(Ipv6Addr::from(node(i as u8 + 1)), 1)],
        })
        .collect();
    let mut vips = ExternalVips6::new();
    let r = vips.apply(&mut ebpf, &list).unwrap();
    assert_eq!(
        (r.vips, r.reals, r.without_reals),
        (addrs.len(), addrs.len(), 0)
    );
    let p = prog(&ebpf);
    for (i, a) in addrs.iter().enumerate() {
        let f = frame(CLIENT, *a, 6, &tcp(40000, 80, 0x10, b"hi"));
        assert_eq!(
            run(p, &f),
            (XDP_TX, encapsulated(&f, node(i as u8 + 1))),
            "VIP {}",
            Ipv6Addr::from(*a)
        );
        // The same address on another port, or UDP, is no VIP: passed.
        for g in [
            frame(CLIENT, *a, 6, &tcp(40000, 81, 0x10, b"hi")),
            frame(CLIENT, *a, 17, &udp(40000, 80, b"hi")),
        ] {
            assert_eq!(run(p, &g), (XDP_PASS, g.clone()));
        }
    }
    // One VIP removed: its packets pass, the others' still reach their
    // nodes.
    let r = vips.apply(&mut ebpf, &list[1..]).unwrap();
    assert_eq!(r.vips, addrs.len() - 1);
    let p = prog(&ebpf);
    let gone = frame(CLIENT, addrs[0], 6, &tcp(40000, 80, 0x10, b"hi"));
    assert_eq!(run(p, &gone), (XDP_PASS, gone.clone()));
    let last = addrs.len() - 1;
    let f = frame(CLIENT, addrs[last], 6, &tcp(40000, 80, 0x10, b"hi"));
    assert_eq!(run(p, &f), (XDP_TX, encapsulated(&f, node(last as u8 + 1))));
}

#[test]
fn xdp_lb6_near_miss_addresses_in_the_vips_own_buckets_pass() {
    let Some(_p) = privileged::require("xdp_lb6_near_miss_addresses_in_the_vips_own_buckets_pass")
    else {
        return;
    };
    let ebpf = with_tcp_vip::<V6>(80, &[(node(2), 1)]);
    let p = prog(&ebpf);
    let hit = tcp_frame(CLIENT, 40000, 80, 0x10);
    assert_eq!(run(p, &hit), (XDP_TX, encapsulated(&hit, node(2))));
    // Addresses one bit from the VIP in its first word, in its second
    // word, and an address whose two buckets are exactly the VIP's
    // (found by search): the program compares the whole address, so all
    // pass untouched, as does the VIP's address marker key as a port
    // (port 0).
    let mut first_word = VIP;
    first_word[5] ^= 1;
    let mut second_word = VIP;
    second_word[15] ^= 1;
    let want = buckets_of(VIP, 80, 6);
    let same_buckets = (0..u64::MAX)
        .map(|i| {
            let mut a = [0u8; 16];
            a[..8].copy_from_slice(&0x2001_0db8_0042_0000u64.to_be_bytes());
            a[8..].copy_from_slice(&i.to_be_bytes());
            a
        })
        .find(|a| buckets_of(*a, 80, 6) == want)
        .unwrap();
    assert_ne!(same_buckets, VIP);
    for dst in [first_word, second_word, same_buckets] {
        let f = frame(CLIENT, dst, 6, &tcp(40000, 80, 0x10, b"hi"));
        assert_eq!(run(p, &f), (XDP_PASS, f.clone()), "{}", Ipv6Addr::from(dst));
    }
    let port0 = tcp_frame(CLIENT, 40000, 0, 0x10);
    assert_eq!(run(p, &port0), (XDP_PASS, port0.clone()));
    let s = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!(s.packets, 1);
}

/// The flow of `tcp_frame(CLIENT, sport, 80, _)` as the connection table
/// stores it.
fn flow_of(sport: u16) -> proxy_common::XlbFlow6 {
    proxy_common::XlbFlow6 {
        src: CLIENT,
        dst: VIP,
        sport: sport.to_be(),
        dport: 80u16.to_be(),
        proto: 6,
        pad: [0; 3],
    }
}

/// The index of each real in `XLB_REALS6`.
fn real_indexes(ebpf: &aya::Ebpf) -> std::collections::BTreeMap<[u8; 16], u32> {
    let reals: aya::maps::Array<_, proxy_common::XlbReal6> =
        aya::maps::Array::try_from(ebpf.map(proxy_common::XLB_REALS6).unwrap()).unwrap();
    reals
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let r = r.unwrap();
            (r.ip != [0; 16]).then_some((r.ip, i as u32))
        })
        .collect()
}

/// Two IPv6 flows whose packets share a per-CPU flow cache slot
/// (`XLB_FLOW_CACHE6`) and were balanced to different reals: their ACKs,
/// interleaved so each takes the slot from the other, each reach the
/// flow's own real.
#[test]
fn xdp_lb6_flows_sharing_a_flow_cache_slot_each_keep_their_own_real() {
    let Some(_p) =
        privileged::require("xdp_lb6_flows_sharing_a_flow_cache_slot_each_keep_their_own_real")
    else {
        return;
    };
    let ebpf = with_tcp_vip::<V6>(80, &[(node(1), 1), (node(2), 1), (node(3), 1)]);
    let slot =
        |sport: u16| proxy_common::flow_cache6_slot(proxy_common::flow_hash6(&flow_of(sport)));
    flows_sharing_a_cache_slot_keep_their_reals(
        |sport, flags| tunnelled_to::<V6>(prog(&ebpf), &tcp_frame(CLIENT, sport, 80, flags)),
        slot,
    );
}

#[test]
fn xdp_lb6_a_flow_key_held_by_another_flow_is_never_that_flows_real() {
    let Some(_p) =
        privileged::require("xdp_lb6_a_flow_key_held_by_another_flow_is_never_that_flows_real")
    else {
        return;
    };
    use proxy_common::{
        flow_cache6_slot, flow_hash6, XlbConn6, XlbFlow6, XLB_CONNS6, XLB_FLOW_CACHE6,
    };
    let mut ebpf = with_tcp_vip::<V6>(80, &[(node(1), 1), (node(2), 1)]);
    let index = real_indexes(&ebpf);
    let other = |r: [u8; 16]| if r == node(1) { node(2) } else { node(1) };
    fn conns(ebpf: &mut aya::Ebpf) -> aya::maps::HashMap<&mut aya::maps::MapData, u64, XlbConn6> {
        aya::maps::HashMap::try_from(ebpf.map_mut(XLB_CONNS6).unwrap()).unwrap()
    }
    // The test writes the table itself (the daemon never does): flow A's
    // slot of the per-CPU flow cache, which repeats what each CPU last
    // read from or wrote to the table, is cleared on every CPU after each
    // write, so A's next packet reads the table.
    let forget_a = |ebpf: &mut aya::Ebpf| {
        let mut cache: aya::maps::PerCpuArray<_, XlbConn6> =
            aya::maps::PerCpuArray::try_from(ebpf.map_mut(XLB_FLOW_CACHE6).unwrap()).unwrap();
        let empty = vec![XlbConn6::default(); aya::util::nr_cpus().unwrap()];
        let slot = flow_cache6_slot(flow_hash6(&flow_of(40000)));
        cache
            .set(slot, aya::maps::PerCpuValues::try_from(empty).unwrap(), 0)
            .unwrap();
    };
    // Flow A opens on the ring's real and is recorded under its hash with
    // its own tuple.
    let a = flow_of(40000);
    let syn = tcp_frame(CLIENT, 40000, 80, 0x02);
    let (v, out) = run(prog(&ebpf), &syn);
    assert_eq!(v, XDP_TX);
    let ring_real = real_of(&out);
    let entry = conns(&mut ebpf).get(&flow_hash6(&a), 0).unwrap();
    assert_eq!(
        entry,
        XlbConn6 {
            real: index[&ring_real],
            pad: 0,
            flow: a
        }
    );
    // The table is what keeps A: its entry pointed at the other node sends
    // A's next packet there (exact bytes).
    let ack = tcp_frame(CLIENT, 40000, 80, 0x10);
    let mut moved = entry;
    moved.real = index[&other(ring_real)];
    conns(&mut ebpf).insert(flow_hash6(&a), moved, 0).unwrap();
    forget_a(&mut ebpf);
    assert_eq!(
        run(prog(&ebpf), &ack),
        (XDP_TX, encapsulated(&ack, other(ring_real)))
    );
    // A hash collision: flow B (another client port) holds A's key, pinned
    // to the other node. A's packet is not B's: it is balanced as a new
    // flow on the ring (counted) and takes the entry over.
    // Writes, under A's key, an entry of `flow` pinned to the other node.
    let other_flow_holds_a = |ebpf: &mut aya::Ebpf, flow: XlbFlow6| {
        let held = XlbConn6 {
            real: index[&other(ring_real)],
            pad: 0,
            flow,
        };
        conns(ebpf).insert(flow_hash6(&a), held, 0).unwrap();
    };
    let b = flow_of(40001);
    let before = strait::datapath::xlb_stats(&ebpf).unwrap();
    other_flow_holds_a(&mut ebpf, b);
    forget_a(&mut ebpf);
    assert_eq!(
        run(prog(&ebpf), &ack),
        (XDP_TX, encapsulated(&ack, ring_real)),
        "a colliding entry sent flow A to flow B's node"
    );
    let after = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!(after.new_flows - before.new_flows, 1);
    assert_eq!(
        conns(&mut ebpf).get(&flow_hash6(&a), 0).unwrap(),
        XlbConn6 {
            real: index[&ring_real],
            pad: 0,
            flow: a
        }
    );
    // Each word of the stored flow counts: an entry one field off is
    // another flow.
    let mut near = [a; 5];
    near[0].src[0] ^= 1;
    near[1].src[15] ^= 1;
    near[2].dst[0] ^= 1;
    near[3].dst[15] ^= 1;
    near[4].proto = 17;
    for n in near {
        other_flow_holds_a(&mut ebpf, n);
        forget_a(&mut ebpf);
        assert_eq!(
            run(prog(&ebpf), &ack),
            (XDP_TX, encapsulated(&ack, ring_real)),
            "{n:?}"
        );
    }
}

#[test]
fn xdp_lb6_finds_every_vip_of_a_full_table_and_forgets_removed_ones() {
    let Some(_p) =
        privileged::require("xdp_lb6_finds_every_vip_of_a_full_table_and_forgets_removed_ones")
    else {
        return;
    };
    let mut ebpf = setup();
    // 512 addresses (in one /64 and across /48s) with one TCP port each:
    // 512 entries and 512 address markers, the table's whole capacity
    // (MAX_XLB_VIPS6).
    let addr = |i: u32| {
        let mut a = VIP;
        a[4..6].copy_from_slice(&((i % 4) as u16).to_be_bytes());
        a[12..16].copy_from_slice(&(i * 7 + 1).to_be_bytes());
        a
    };
    let all: Vec<ExternalVip6> = (0..512)
        .map(|i| ExternalVip6 {
            vip: Ipv6Addr::from(addr(i)),
            port: 80,
            protocol: L4Protocol::Tcp,
            reals: vec![(Ipv6Addr::from(node(1)), 1)],
        })
        .collect();
    let mut vips = ExternalVips6::new();
    let r = vips.apply(&mut ebpf, &all).unwrap();
    assert_eq!(r.vips, 512, "{r:?}");
    let to = |i: u32, dport: u16| frame(CLIENT, addr(i), 6, &tcp(40_000, dport, 0x02, b"x"));
    for i in 0..512 {
        let (v, out) = run(prog(&ebpf), &to(i, 80));
        assert_eq!(
            (v, real_of(&out)),
            (XDP_TX, node(1)),
            "VIP {} not found",
            Ipv6Addr::from(addr(i))
        );
        let miss = to(i, 81);
        assert_eq!(run(prog(&ebpf), &miss), (XDP_PASS, miss.clone()));
    }
    // Every other one removed: those pass, the rest are still balanced.
    let kept: Vec<ExternalVip6> = all.iter().step_by(2).cloned().collect();
    vips.apply(&mut ebpf, &kept).unwrap();
    for i in 0..512 {
        let want = if i % 2 == 0 { XDP_TX } else { XDP_PASS };
        let f = to(i, 80);
        assert_eq!(
            run(prog(&ebpf), &f).0,
            want,
            "VIP {}",
            Ipv6Addr::from(addr(i))
        );
    }
    // Over capacity: refused with a message, nothing lost.
    let mut over = all.clone();
    over.push(ExternalVip6 {
        vip: Ipv6Addr::from(addr(600)),
        ..all[0].clone()
    });
    let e = vips.apply(&mut ebpf, &over).unwrap_err().to_string();
    assert!(e.contains("exceed"), "{e}");
    assert_eq!(run(prog(&ebpf), &to(0, 80)).0, XDP_TX);
}

/// A TCP frame from [`CLIENT`]:40000 to the VIP's port 80 whose IPv6
/// packet (header included) is `len` bytes.
fn sized(len: usize) -> Vec<u8> {
    frame(CLIENT, VIP, 6, &tcp(40000, 80, 0x10, &vec![0x5a; len - 60]))
}

/// ip6ip6 adds 40 bytes: a packet that fills the uplink's MTU with them
/// goes out; one byte more is answered with ICMPv6 "Packet Too Big"
/// announcing the MTU minus 40 (exact bytes, checksum over the
/// pseudo-header, the 248-byte quote), never less than 1,280.
#[test]
fn xdp_lb6_answers_packets_too_big_for_the_tunnel_with_packet_too_big() {
    let Some(_p) =
        privileged::require("xdp_lb6_answers_packets_too_big_for_the_tunnel_with_packet_too_big")
    else {
        return;
    };
    let mut ebpf = with_tcp_vip::<V6>(80, &[(node(2), 1)]);
    let ip6ip6 = TooBig {
        overhead: 40,
        sized: &sized,
        tunnelled: &|f| encapsulated(f, node(2)),
        answer: &packet_too_big,
    };
    strait::datapath::set_uplink_mtu(&mut ebpf, 1500).unwrap();
    too_big_threshold(prog(&ebpf), &ip6ip6, 1500, 1460);
    // 1,300 - 40 is below IPv6's minimum MTU: 1,280 is announced.
    strait::datapath::set_uplink_mtu(&mut ebpf, 1300).unwrap();
    too_big_threshold(prog(&ebpf), &ip6ip6, 1300, 1280);
    let s = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!((s.too_big_dropped, s.packets), (4, 2));
}
