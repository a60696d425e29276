//! Tier 2: the XDP external-VIP load balancer (`xdp_lb`) through
//! BPF_PROG_TEST_RUN on packet fixtures, with exact output bytes (outer
//! IPIP header, checksum, TTL), malformed and truncated packets, and
//! random mutations that must never pass a VIP packet unbalanced.
use std::net::Ipv4Addr;

use strait::datapath::{ExternalVip, ExternalVips, L4Protocol, UplinkConfig};
use strait_tests::privileged;
use strait_tests::xdp::{
    bench_program_balances_like_xdp_lb, checksum, eth, flows_sharing_a_cache_slot_keep_their_reals,
    for_each_mutation, frag_needed_threshold, frame, ipip, ipv4, prog, run,
    spreads_flows_and_keeps_them_when_reals_change, tcp, tcp4_sized, tunnelled_to, udp,
    with_tcp_vip, LbFamily, GW_MAC, XDP_DROP, XDP_PASS, XDP_TX,
};
use strait_tests::xdp_pass::{as_arp, assert_passed_unchanged};

const VIP: [u8; 4] = [198, 51, 100, 10];
const LB_SRC: [u8; 4] = [10, 0, 0, 1];

fn tcp_frame(src: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    frame(src, VIP, 6, &tcp(sport, dport, flags, b"hello"))
}

/// The IPIP frame `xdp_lb` must transmit for `inner` sent to `real`
/// (see [`ipip`]).
fn encapsulated(inner: &[u8], real: [u8; 4]) -> Vec<u8> {
    ipip(inner, LB_SRC, real)
}

fn vip(port: u16, protocol: L4Protocol, reals: &[([u8; 4], u32)]) -> ExternalVip {
    ExternalVip {
        vip: Ipv4Addr::from(VIP),
        port,
        protocol,
        reals: reals
            .iter()
            .map(|(a, w)| (Ipv4Addr::from(*a).into(), *w))
            .collect(),
    }
}

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
    strait::datapath::load_xdp_lb(&mut ebpf).unwrap();
    ebpf
}

/// The real a transmitted frame was tunnelled to (outer destination).
fn real_of(out: &[u8]) -> [u8; 4] {
    out[30..34].try_into().unwrap()
}

#[test]
fn xdp_lb_tunnels_vip_packets_with_exact_outer_headers() {
    let Some(_p) = privileged::require("xdp_lb_tunnels_vip_packets_with_exact_outer_headers")
    else {
        return;
    };
    let mut ebpf = setup();
    let mut vips = ExternalVips::new();
    let report = vips
        .apply(
            &mut ebpf,
            &[
                vip(80, L4Protocol::Tcp, &[([10, 1, 0, 2], 1)]),
                vip(53, L4Protocol::Udp, &[([10, 1, 0, 3], 1)]),
            ],
        )
        .unwrap();
    assert_eq!((report.vips, report.reals, report.without_reals), (2, 2, 0));
    let p = prog(&ebpf);

    // TCP SYN to the VIP: tunnelled to the only real, exact bytes.
    let syn = tcp_frame([192, 0, 2, 1], 40000, 80, 0x02);
    let (v, out) = run(p, &syn);
    assert_eq!(v, XDP_TX);
    assert_eq!(out, encapsulated(&syn, [10, 1, 0, 2]));
    assert_eq!(checksum(&out[14..34]), 0, "outer header checksum verifies");
    assert_eq!(out[22], 64, "outer TTL");
    assert_eq!(
        &out[34..],
        &syn[14..],
        "inner packet (TTL 61 too) untouched"
    );

    // A TOS byte is copied to the outer header; UDP to the UDP VIP port.
    let mut dscp = frame([192, 0, 2, 1], VIP, 17, &udp(5353, 53, b"q"));
    dscp[15] = 0xb8;
    let c = checksum(&{
        let mut h = dscp[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    dscp[24..26].copy_from_slice(&c.to_be_bytes());
    let (v, out) = run(p, &dscp);
    assert_eq!(
        (v, out.clone()),
        (XDP_TX, encapsulated(&dscp, [10, 1, 0, 3]))
    );
    assert_eq!(out[15], 0xb8);

    // Not a VIP, not a VIP port, not a VIP protocol, not IPv4: passed
    // unchanged.
    let unchanged = [
        frame(
            [192, 0, 2, 1],
            [198, 51, 100, 11],
            6,
            &tcp(40000, 80, 0x02, b""),
        ),
        tcp_frame([192, 0, 2, 1], 40000, 81, 0x02),
        frame([192, 0, 2, 1], VIP, 17, &udp(5353, 80, b"x")),
        frame([192, 0, 2, 1], VIP, 47, &[0u8; 24]),
        as_arp(&syn),
    ];
    assert_passed_unchanged(p, unchanged);
    let s = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!((s.packets, s.new_flows), (2, 2));
}

/// `xdp_lb_bench` (what `cargo xtask bench xdp` times the balancer on)
/// runs `xdp_lb`'s code: the same verdicts and counters, and for a
/// tunnelled packet it hands back the client's packet (the tunnel header
/// taken off, the Ethernet header as `xdp_lb` wrote it), so a repetition
/// balances the same packet again rather than something cheaper.
#[test]
fn xdp_lb_bench_balances_like_xdp_lb_and_restores_the_clients_packet() {
    let Some(_p) =
        privileged::require("xdp_lb_bench_balances_like_xdp_lb_and_restores_the_clients_packet")
    else {
        return;
    };
    let mut ebpf = with_tcp_vip::<V4>(80, &[([10, 1, 0, 2], 1), ([10, 1, 0, 3], 1)]);
    bench_program_balances_like_xdp_lb(
        &mut ebpf,
        &[0x02, 0x10].map(|flags| tcp_frame([192, 0, 2, 1], 40000, 80, flags)),
        // Not tunnelled: what xdp_lb does, unchanged.
        &[
            tcp_frame([192, 0, 2, 1], 40000, 81, 0x02),
            frame([192, 0, 2, 1], VIP, 6, &[0u8; 8]),
        ],
    );
}

/// Two flows whose packets share a per-CPU flow cache slot
/// (`XLB_FLOW_CACHE`) and were balanced to different reals: their ACKs,
/// interleaved so each takes the slot from the other, each reach the
/// flow's own real — the cache answers only for the flow it holds.
#[test]
fn xdp_lb_flows_sharing_a_flow_cache_slot_each_keep_their_own_real() {
    let Some(_p) =
        privileged::require("xdp_lb_flows_sharing_a_flow_cache_slot_each_keep_their_own_real")
    else {
        return;
    };
    let reals = [([10, 1, 0, 2], 1), ([10, 1, 0, 3], 1), ([10, 1, 0, 4], 1)];
    let ebpf = with_tcp_vip::<V4>(80, &reals);
    let client = [192, 0, 2, 1];
    // The flow's `XlbFlow` as the program's two little-endian words.
    let slot = |sport: u16| {
        let w0 = u32::from_ne_bytes(client) as u64 | (u32::from_ne_bytes(VIP) as u64) << 32;
        let w1 = sport.to_be() as u64 | (80u16.to_be() as u64) << 16 | 6 << 32;
        proxy_common::flow_cache_slot(w0, w1)
    };
    flows_sharing_a_cache_slot_keep_their_reals(
        |sport, flags| tunnelled_to::<V4>(prog(&ebpf), &tcp_frame(client, sport, 80, flags)),
        slot,
    );
}

#[test]
fn xdp_lb_drops_malformed_and_fragmented_vip_packets_and_passes_others() {
    let Some(_p) =
        privileged::require("xdp_lb_drops_malformed_and_fragmented_vip_packets_and_passes_others")
    else {
        return;
    };
    let ebpf = with_tcp_vip::<V4>(80, &[([10, 1, 0, 2], 1)]);
    let p = prog(&ebpf);
    let good = tcp_frame([192, 0, 2, 1], 40000, 80, 0x10);

    let with_frags = |dst: [u8; 4], frags: u16| {
        let l4 = tcp(40000, 80, 0x10, b"x");
        let mut f = eth([0x08, 0x00]);
        f.extend(ipv4([192, 0, 2, 1], dst, 6, l4.len(), frags));
        f.extend(l4);
        f
    };
    // First fragment (MF) and a non-first fragment (offset, no ports).
    assert_eq!(run(p, &with_frags(VIP, 0x2000)).0, XDP_DROP);
    assert_eq!(run(p, &with_frags(VIP, 0x0005)).0, XDP_DROP);
    // Fragments to other addresses are not ours.
    let other = with_frags([198, 51, 100, 99], 0x0005);
    assert_eq!(run(p, &other), (XDP_PASS, other.clone()));

    // IP options (IHL 6) to the VIP: dropped (Katran drops them).
    let mut opts = good.clone();
    opts[14] = 0x46;
    assert_eq!(run(p, &opts).0, XDP_DROP);
    // Total length beyond the frame, or shorter than the TCP header.
    let mut long = good.clone();
    long[16..18].copy_from_slice(&1000u16.to_be_bytes());
    assert_eq!(run(p, &long).0, XDP_DROP);
    let mut short_len = good.clone();
    short_len[16..18].copy_from_slice(&30u16.to_be_bytes());
    assert_eq!(run(p, &short_len).0, XDP_DROP);
    // Truncated inside the TCP header (ports present): dropped; inside the
    // ports: dropped (the address is a VIP's); inside the IP header: not
    // recognisable, passed unchanged.
    for (cut, want) in [(14 + 20 + 10, XDP_DROP), (14 + 20 + 2, XDP_DROP)] {
        assert_eq!(run(p, &good[..cut]).0, want, "cut at {cut}");
    }
    // (The kernel refuses to test-run frames shorter than Ethernet.)
    for cut in [14, 14 + 19] {
        let f = &good[..cut];
        assert_eq!(run(p, f), (XDP_PASS, f.to_vec()), "cut at {cut}");
    }
    let s = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!(s.fragments_dropped, 2);
    assert_eq!(s.malformed_dropped, 5);
    assert_eq!(s.packets, 0);

    // A VIP whose reals are all drained: dropped and counted.
    let mut vips = ExternalVips::new();
    let mut ebpf2 = setup();
    let r = vips
        .apply(
            &mut ebpf2,
            &[vip(80, L4Protocol::Tcp, &[([10, 1, 0, 2], 0)])],
        )
        .unwrap();
    assert_eq!(r.without_reals, 1);
    assert_eq!(run(prog(&ebpf2), &good).0, XDP_DROP);
    assert_eq!(
        strait::datapath::xlb_stats(&ebpf2).unwrap().no_real_dropped,
        1
    );
}

#[test]
fn xdp_lb_icmp_frag_needed_follows_the_flow_and_other_icmp_passes() {
    let Some(_p) =
        privileged::require("xdp_lb_icmp_frag_needed_follows_the_flow_and_other_icmp_passes")
    else {
        return;
    };
    let reals: Vec<([u8; 4], u32)> = (2..6).map(|i| ([10, 1, 0, i], 1)).collect();
    let ebpf = with_tcp_vip::<V4>(443, &reals);
    let p = prog(&ebpf);
    let client = [192, 0, 2, 9];
    for sport in 40000..40016u16 {
        let syn = tcp_frame(client, sport, 443, 0x02);
        let (v, out) = run(p, &syn);
        assert_eq!(v, XDP_TX);
        let real = real_of(&out);
        // A router on the way back says the real's reply (VIP:443 ->
        // client:sport) was too big: the error goes to the same real.
        let reply = {
            let mut r = ipv4(VIP, client, 6, 20, 0x4000);
            r.extend(&tcp(443, sport, 0x10, b"")[..8]);
            r
        };
        let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0xdc];
        icmp.extend(&reply);
        let c = checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let err = frame([203, 0, 113, 1], VIP, 1, &icmp);
        let (v, out) = run(p, &err);
        assert_eq!(v, XDP_TX, "sport {sport}");
        assert_eq!(out, encapsulated(&err, real), "sport {sport}");
    }
    assert_eq!(
        strait::datapath::xlb_stats(&ebpf).unwrap().icmp_frag_needed,
        16
    );
    // Echo request and port unreachable to the VIP: passed unchanged.
    for (ty, code) in [(8u8, 0u8), (3, 3)] {
        let mut icmp = vec![ty, code, 0, 0, 0, 0, 0, 0];
        icmp.extend(ipv4(VIP, client, 6, 8, 0));
        icmp.extend(&tcp(443, 40000, 0x10, b"")[..8]);
        let f = frame([203, 0, 113, 1], VIP, 1, &icmp);
        assert_eq!(run(p, &f), (XDP_PASS, f.clone()));
    }
    // A frag-needed quoting a packet with options: dropped; truncated
    // before the quoted ports: dropped.
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0xdc];
    icmp.extend(ipv4(VIP, client, 6, 8, 0));
    icmp.extend(&tcp(443, 40000, 0x10, b"")[..8]);
    let f = frame([203, 0, 113, 1], VIP, 1, &icmp);
    let mut opts = f.clone();
    opts[14 + 20 + 8] = 0x46;
    assert_eq!(run(p, &opts).0, XDP_DROP);
    assert_eq!(run(p, &f[..f.len() - 6]).0, XDP_DROP);
}

/// The IPv4 side for the checks both families share.
struct V4;

impl LbFamily for V4 {
    type Addr = [u8; 4];
    type Tables = ExternalVips;
    fn node(n: u8) -> [u8; 4] {
        [10, 1, 0, n]
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
        reals: Option<&[([u8; 4], u32)]>,
    ) {
        let list: Vec<ExternalVip> = reals
            .map(|r| vip(port, L4Protocol::Tcp, r))
            .into_iter()
            .collect();
        tables.apply(ebpf, &list).unwrap();
    }
    fn tcp_frame(client: u16, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        tcp_frame([192, 0, 2, client as u8 + 1], sport, dport, flags)
    }
    fn real_of(out: &[u8]) -> [u8; 4] {
        real_of(out)
    }
}

#[test]
fn xdp_lb_spreads_flows_and_keeps_them_when_reals_change() {
    let Some(_p) = privileged::require("xdp_lb_spreads_flows_and_keeps_them_when_reals_change")
    else {
        return;
    };
    let mut ebpf = setup();
    spreads_flows_and_keeps_them_when_reals_change::<V4>(&mut ebpf);
}

#[test]
fn xdp_lb_random_mutations_never_pass_a_vip_packet_unbalanced() {
    let Some(_p) =
        privileged::require("xdp_lb_random_mutations_never_pass_a_vip_packet_unbalanced")
    else {
        return;
    };
    let mut ebpf = setup();
    ExternalVips::new()
        .apply(
            &mut ebpf,
            &[
                vip(80, L4Protocol::Tcp, &[([10, 1, 0, 2], 1)]),
                vip(80, L4Protocol::Udp, &[([10, 1, 0, 3], 1)]),
            ],
        )
        .unwrap();
    let bases = [
        tcp_frame([192, 0, 2, 1], 40000, 80, 0x10),
        frame([192, 0, 2, 1], VIP, 17, &udp(4000, 80, b"abcdef")),
    ];
    for_each_mutation(
        prog(&ebpf),
        &bases,
        0x9e37_79b9_7f4a_7c15,
        54,
        |f, v, out| {
            let ipv4_frame = f.len() >= 34 && f[12..14] == [0x08, 0x00];
            let to_vip_port = ipv4_frame
                && f.len() >= 38
                && f[30..34] == VIP
                && (f[23] == 6 || f[23] == 17)
                && f[36..38] == [0, 80];
            match v {
                XDP_PASS => {
                    assert!(!to_vip_port, "a packet to a VIP port passed: {f:02x?}");
                }
                XDP_TX => {
                    // Only well-formed, unfragmented packets to the VIP port.
                    assert!(to_vip_port, "{f:02x?}");
                    assert_eq!(f[14], 0x45);
                    assert_eq!(u16::from_be_bytes([f[20], f[21]]) & 0x3fff, 0);
                    let tot = u16::from_be_bytes([f[16], f[17]]) as usize;
                    assert!(tot <= f.len() - 14);
                    assert_eq!(checksum(&out[14..34]), 0);
                    assert_eq!(&out[34..], &f[14..]);
                }
                _ => {}
            }
        },
    );
}

#[test]
fn xdp_lb_drops_denied_sources_before_balancing() {
    let Some(_p) = privileged::require("xdp_lb_drops_denied_sources_before_balancing") else {
        return;
    };
    let mut ebpf = with_tcp_vip::<V4>(80, &[([10, 1, 0, 2], 1)]);
    let mut deny = strait::datapath::DenyTries::take(&mut ebpf).unwrap();
    deny.sync(&[("192.0.2.0".parse().unwrap(), 24)]).unwrap();
    let p = prog(&ebpf);
    assert_eq!(run(p, &tcp_frame([192, 0, 2, 7], 1, 80, 0x02)).0, XDP_DROP);
    assert_eq!(run(p, &tcp_frame([192, 0, 3, 7], 1, 80, 0x02)).0, XDP_TX);
    assert_eq!(deny.drops()[0].1, 1);
}

/// `inner` (an Ethernet + IPv4 frame) behind an outer IPv6 header with
/// next header 4, as Katran's `create_v6_hdr` writes IPv4-in-IPv6 for an
/// IPv4 VIP on an IPv6 real: EtherType IPv6, payload length = the inner
/// packet, hop limit 64.
fn in_ipv6(inner: &[u8]) -> Vec<u8> {
    let mut f = inner[..12].to_vec();
    f.extend_from_slice(&[0x86, 0xdd]);
    let len = (inner.len() - 14) as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0, (len >> 8) as u8, len as u8, 4, 64]);
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2]);
    f.extend_from_slice(&inner[14..]);
    f
}

/// The real's side of IPv4-in-IPv6 (what a Katran balancer sends for an
/// IPv4 VIP to a node with only an IPv6 address): the outer IPv6 header is
/// taken off and the EtherType becomes IPv4, leaving the client's packet
/// byte for byte; 4in6 to an address that is not a VIP, with an IPv6
/// packet inside, or cut inside the inner header passes untouched.
#[test]
fn xdp_lb_decapsulates_ipv4_in_ipv6_to_an_ipv4_vip() {
    let Some(_p) = privileged::require("xdp_lb_decapsulates_ipv4_in_ipv6_to_an_ipv4_vip") else {
        return;
    };
    let mut ebpf = with_tcp_vip::<V4>(80, &[([10, 1, 0, 2], 1)]);
    // A node that is only a real: neither family's balancer configured.
    strait::datapath::configure_uplink6(&mut ebpf, None).unwrap();
    let p = prog(&ebpf);
    let inner = tcp_frame([192, 0, 2, 1], 40000, 80, 0x10);
    let tunnelled = in_ipv6(&inner);
    let (v, out) = run(p, &tunnelled);
    assert_eq!(v, XDP_PASS);
    let mut want = tunnelled[..12].to_vec();
    want.extend_from_slice(&[0x08, 0x00]);
    want.extend_from_slice(&inner[14..]);
    assert_eq!(
        out, want,
        "the MACs it arrived with, EtherType IPv4, the client's packet"
    );
    assert_eq!(out[..], inner[..], "which is the client's frame as sent");
    assert_eq!(strait::datapath::xlb_stats(&ebpf).unwrap().decapsulated, 1);

    let not_vip = in_ipv6(&frame(
        [192, 0, 2, 1],
        [203, 0, 113, 9],
        6,
        &tcp(1, 80, 0x10, b""),
    ));
    let mut v6_inside = tunnelled.clone();
    v6_inside[54] = 0x60;
    let cut = tunnelled[..14 + 40 + 19].to_vec();
    for f in [not_vip, v6_inside, cut] {
        assert_eq!(run(p, &f), (XDP_PASS, f.clone()));
    }
    assert_eq!(strait::datapath::xlb_stats(&ebpf).unwrap().decapsulated, 1);
}

#[test]
fn xdp_lb_decapsulates_ipip_to_a_vip_on_the_real() {
    let Some(_p) = privileged::require("xdp_lb_decapsulates_ipip_to_a_vip_on_the_real") else {
        return;
    };
    let ebpf = with_tcp_vip::<V4>(80, &[([10, 1, 0, 2], 1)]);
    let p = prog(&ebpf);
    // What the balancer sent: decapsulated to the Ethernet header it
    // arrived with plus the client's packet, byte for byte.
    let inner = tcp_frame([192, 0, 2, 1], 40000, 80, 0x10);
    let tunnelled = encapsulated(&inner, [10, 1, 0, 2]);
    let mut want = tunnelled[..14].to_vec();
    want.extend_from_slice(&inner[14..]);
    assert_eq!(run(p, &tunnelled), (XDP_PASS, want));
    assert_eq!(strait::datapath::xlb_stats(&ebpf).unwrap().decapsulated, 1);
    // IPIP to an address that is not a VIP, or truncated: untouched.
    let other = encapsulated(
        &frame([192, 0, 2, 1], [203, 0, 113, 9], 6, &tcp(1, 80, 0x10, b"")),
        [10, 1, 0, 2],
    );
    assert_eq!(run(p, &other), (XDP_PASS, other.clone()));
    let cut = &tunnelled[..14 + 20 + 12];
    assert_eq!(run(p, cut), (XDP_PASS, cut.to_vec()));
    assert_eq!(strait::datapath::xlb_stats(&ebpf).unwrap().decapsulated, 1);
}

fn snapshot(yaml: &str) -> strait_config::MeshSnapshot {
    let loaded = strait_config::load::load_str(yaml, "test.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let (snap, diags) = strait_config::compile(&loaded.resources);
    assert!(!diags.iter().any(|d| d.is_error()), "{diags:?}");
    snap
}

/// A Service with the external IP [`VIP`] (port 80) and pods `(name, pod
/// IP, node address, ready)`.
fn external_service(pods: &[(&str, &str, &str, bool)]) -> strait_config::MeshSnapshot {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: front, namespace: web}}\n\
         spec:\n  clusterIP: 10.96.0.20\n  selector: {{app: front}}\n  externalIPs: [{}]\n  ports:\n  - {{name: http, port: 80}}\n",
        Ipv4Addr::from(VIP)
    );
    for (name, ip, host, ready) in pods {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: web, labels: {{app: front}}}}\n\
             spec: {{containers: [{{name: c, image: x}}]}}\n\
             status: {{podIP: {ip}, hostIP: {host}, phase: Running, conditions: [{{type: Ready, status: \"{}\"}}]}}\n",
            if *ready { "True" } else { "False" }
        ));
    }
    snapshot(&yaml)
}

/// The wiring from the config: a Service's `externalIPs` becomes an XDP
/// VIP spread over the nodes of its ready endpoints; a node whose only
/// endpoint turns unready is drained (its flows stay, new ones go
/// elsewhere); re-applying an unchanged snapshot rebuilds nothing.
#[test]
fn xdp_lb_vips_follow_the_snapshots_external_ips_and_endpoints() {
    let Some(_p) =
        privileged::require("xdp_lb_vips_follow_the_snapshots_external_ips_and_endpoints")
    else {
        return;
    };
    let mut ebpf = setup();
    let mut vips = ExternalVips::new();
    let n1 = [192, 168, 0, 11];
    let n2 = [192, 168, 0, 12];
    let snap = external_service(&[
        ("a", "10.244.1.5", "192.168.0.11", true),
        ("b", "10.244.2.5", "192.168.0.12", true),
    ]);
    let (list, skipped) = strait::datapath::external_vips(&snap.external);
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(list, vec![vip(80, L4Protocol::Tcp, &[(n1, 1), (n2, 1)])]);
    let report = vips.apply(&mut ebpf, &list).unwrap();
    assert_eq!((report.vips, report.reals, report.without_reals), (1, 2, 0));

    let mut on: std::collections::HashMap<u16, [u8; 4]> = Default::default();
    for sport in 1000..1064u16 {
        let (action, out) = run(prog(&ebpf), &tcp_frame([203, 0, 113, 1], sport, 80, 0x02));
        assert_eq!(action, XDP_TX, "sport {sport}");
        on.insert(sport, real_of(&out));
    }
    let used: std::collections::BTreeSet<[u8; 4]> = on.values().copied().collect();
    assert_eq!(
        used,
        [n1, n2].into_iter().collect(),
        "64 flows over both nodes"
    );

    // Node 2's endpoint is no longer ready: drained.
    let snap = external_service(&[
        ("a", "10.244.1.5", "192.168.0.11", true),
        ("b", "10.244.2.5", "192.168.0.12", false),
    ]);
    let (list, _) = strait::datapath::external_vips(&snap.external);
    assert_eq!(list, vec![vip(80, L4Protocol::Tcp, &[(n1, 1), (n2, 0)])]);
    vips.apply(&mut ebpf, &list).unwrap();
    for (sport, real) in &on {
        let (_, out) = run(prog(&ebpf), &tcp_frame([203, 0, 113, 1], *sport, 80, 0x10));
        assert_eq!(real_of(&out), *real, "established flow {sport} stays");
    }
    for sport in 2000..2032u16 {
        let (_, out) = run(prog(&ebpf), &tcp_frame([203, 0, 113, 1], sport, 80, 0x02));
        assert_eq!(
            real_of(&out),
            n1,
            "new flow {sport} avoids the drained node"
        );
    }
    // The Service without external IPs: the VIP is gone, packets pass.
    let snap = snapshot(
        "apiVersion: v1\nkind: Service\nmetadata: {name: front, namespace: web}\n\
         spec:\n  clusterIP: 10.96.0.20\n  ports:\n  - {name: http, port: 80}\n",
    );
    let (list, _) = strait::datapath::external_vips(&snap.external);
    assert!(list.is_empty());
    assert_eq!(vips.apply(&mut ebpf, &list).unwrap().vips, 0);
    let frame = tcp_frame([203, 0, 113, 1], 3000, 80, 0x02);
    assert_eq!(run(prog(&ebpf), &frame), (XDP_PASS, frame));
}

#[test]
fn xdp_lb_finds_every_vip_of_a_full_table_and_forgets_removed_ones() {
    let Some(_p) =
        privileged::require("xdp_lb_finds_every_vip_of_a_full_table_and_forgets_removed_ones")
    else {
        return;
    };
    let mut ebpf = setup();
    let real = [10, 1, 0, 1];
    // 512 addresses with one TCP port each: 512 entries and 512 address
    // markers, the table's whole capacity (MAX_XLB_VIPS).
    let addr = |i: u32| Ipv4Addr::from(0xc612_0000 + i * 7 + 1);
    let all: Vec<ExternalVip> = (0..512)
        .map(|i| ExternalVip {
            vip: addr(i),
            port: 80,
            protocol: L4Protocol::Tcp,
            reals: vec![(Ipv4Addr::from(real).into(), 1)],
        })
        .collect();
    let mut vips = ExternalVips::new();
    let r = vips.apply(&mut ebpf, &all).unwrap();
    assert_eq!(r.vips, 512, "{r:?}");
    let to = |i: u32, dport: u16| {
        frame(
            [192, 0, 2, 1],
            addr(i).octets(),
            6,
            &tcp(40_000, dport, 0x02, b"x"),
        )
    };
    for i in 0..512 {
        let (v, out) = run(prog(&ebpf), &to(i, 80));
        assert_eq!(
            (v, real_of(&out)),
            (XDP_TX, real),
            "VIP {} not found",
            addr(i)
        );
        assert_eq!(run(prog(&ebpf), &to(i, 81)).0, XDP_PASS, "{}:81", addr(i));
    }
    // Every other one removed: those pass, the rest are still balanced.
    let kept: Vec<ExternalVip> = all.iter().step_by(2).cloned().collect();
    vips.apply(&mut ebpf, &kept).unwrap();
    for i in 0..512 {
        let want = if i % 2 == 0 { XDP_TX } else { XDP_PASS };
        assert_eq!(run(prog(&ebpf), &to(i, 80)).0, want, "VIP {}", addr(i));
    }
    // Over capacity: refused with a message, nothing lost.
    let mut over = all.clone();
    over.push(ExternalVip {
        vip: addr(600),
        ..all[0].clone()
    });
    let e = vips.apply(&mut ebpf, &over).unwrap_err().to_string();
    assert!(e.contains("exceed"), "{e}");
    assert_eq!(run(prog(&ebpf), &to(0, 80)).0, XDP_TX);
}

/// What stays unsupported of an IPv4 VIP on IPv6-only nodes: a balancer
/// node whose uplink has no IPv6 address cannot send 4in6 (see
/// `kernel_xdp_lb46`), so such nodes are left out of the ring with a
/// warning (what `Datapath::apply_external_services` does when
/// `ipv6_uplink` is false); with all endpoints there the VIP fails closed:
/// in the table without a node, its packets dropped and counted — never
/// tunnelled, never passed to this node's stack.
#[test]
fn an_ipv4_vip_whose_endpoints_are_all_on_ipv6_only_nodes_is_dropped_and_counted() {
    let Some(_p) = privileged::require(
        "an_ipv4_vip_whose_endpoints_are_all_on_ipv6_only_nodes_is_dropped_and_counted",
    ) else {
        return;
    };
    let svc = strait_config::snapshot::ExternalL4Service {
        host: "front.web.svc.cluster.local".into(),
        vip: Ipv4Addr::from(VIP).into(),
        port: 80,
        protocol: L4Protocol::Tcp,
        nodes: vec![
            ("fd00::11".parse().unwrap(), 1),
            ("fd00::12".parse().unwrap(), 1),
        ],
        unplaced: 0,
    };
    let (mut list, warnings) = strait::datapath::external_vips(&[svc]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(list[0].reals.len(), 2, "4in6 reals: {list:?}");
    let mut ebpf = setup();
    assert!(
        !strait::datapath::ipv6_uplink(&ebpf).unwrap(),
        "setup configures no IPv6 uplink"
    );
    let warnings = strait::datapath::without_ipv6_reals(&mut list);
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].reals.is_empty(), "{list:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("2 IPv6-only node(s) left out of the XDP ring")
            && warnings[0].contains("--xdp-source6"),
        "{warnings:?}"
    );
    let r = ExternalVips::new().apply(&mut ebpf, &list).unwrap();
    assert_eq!((r.vips, r.without_reals), (1, 1), "{r:?}");
    for flags in [0x02, 0x10] {
        let frame = tcp_frame([192, 0, 2, 1], 40000, 80, flags);
        assert_eq!(run(prog(&ebpf), &frame).0, XDP_DROP, "flags {flags:#x}");
    }
    let s = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!((s.no_real_dropped, s.packets), (2, 0), "{s:?}");
}

/// A TCP frame to the VIP's port 80 whose IPv4 packet is `tot` bytes.
fn sized(tot: usize, df: bool) -> Vec<u8> {
    tcp4_sized([192, 0, 2, 1], VIP, tot, df)
}

/// The uplink's MTU set: a packet that fills it once tunnelled goes out;
/// one byte more with DF is answered with ICMP "fragmentation needed"
/// announcing the MTU minus the 20 bytes of IPIP (exact bytes: swapped
/// MACs, headers, both checksums, the 84-byte quote, also of a large
/// packet), without DF dropped, both counted; with no MTU known nothing
/// is checked.
#[test]
fn xdp_lb_answers_packets_too_big_for_the_ipip_tunnel_with_fragmentation_needed() {
    let Some(_p) = privileged::require(
        "xdp_lb_answers_packets_too_big_for_the_ipip_tunnel_with_fragmentation_needed",
    ) else {
        return;
    };
    let mut ebpf = with_tcp_vip::<V4>(80, &[([10, 1, 0, 2], 1)]);
    strait::datapath::set_uplink_mtu(&mut ebpf, 1500).unwrap();
    let p = prog(&ebpf);
    frag_needed_threshold(p, ([192, 0, 2, 1], VIP), 20, 1500, &|f| {
        encapsulated(f, [10, 1, 0, 2])
    });
    let s = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert_eq!((s.too_big_dropped, s.packets), (3, 1));
    // Unknown MTU: tunnelled, as the driver's limit decides.
    strait::datapath::set_uplink_mtu(&mut ebpf, 0).unwrap();
    let big = sized(1481, true);
    assert_eq!(
        run(prog(&ebpf), &big),
        (XDP_TX, encapsulated(&big, [10, 1, 0, 2]))
    );
}
