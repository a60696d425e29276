//! Tier 2: the XDP deny program through BPF_PROG_TEST_RUN on packet fixtures.
use strait_tests::privileged;
use strait_tests::xdp::run;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// An Ethernet + IPv4 + UDP frame from `src` to 198.51.100.10:53.
fn udp_frame(src: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst MAC
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src MAC
    f.extend_from_slice(&[0x08, 0x00]); // IPv4
    let payload = b"strait";
    let udp_len = 8 + payload.len() as u16;
    let tot_len = 20 + udp_len;
    f.extend_from_slice(&[
        0x45,
        0,
        (tot_len >> 8) as u8,
        tot_len as u8,
        0,
        1,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[198, 51, 100, 10]);
    f.extend_from_slice(&[0x30, 0x39, 0, 53, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
    f.extend_from_slice(payload);
    f
}

#[test]
fn xdp_deny_drops_denied_sources_and_passes_the_rest_unchanged() {
    let Some(_p) =
        privileged::require("xdp_deny_drops_denied_sources_and_passes_the_rest_unchanged")
    else {
        return;
    };
    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::deny_source(&mut ebpf, "192.0.2.0".parse().unwrap(), 24, 7).unwrap();
    strait::datapath::deny_source(&mut ebpf, "203.0.113.5".parse().unwrap(), 32, 8).unwrap();
    let prog = strait::datapath::load_xdp_deny(&mut ebpf).unwrap();

    // Inside the /24 and the /32: dropped.
    assert_eq!(run(prog, &udp_frame([192, 0, 2, 77])).0, XDP_DROP);
    assert_eq!(run(prog, &udp_frame([203, 0, 113, 5])).0, XDP_DROP);

    // Outside both prefixes: passed, bytes unchanged.
    for src in [[192, 0, 3, 1], [203, 0, 113, 6], [198, 51, 100, 1]] {
        let frame = udp_frame(src);
        let (verdict, out) = run(prog, &frame);
        assert_eq!(verdict, XDP_PASS, "source {src:?}");
        assert_eq!(out, frame, "source {src:?}: output bytes differ");
    }

    // An ARP frame and a truncated IPv4 frame: passed unchanged.
    let mut arp = udp_frame([192, 0, 2, 77]);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(run(prog, &arp), (XDP_PASS, arp.clone()));
    let short = udp_frame([192, 0, 2, 77])[..14 + 12].to_vec();
    assert_eq!(run(prog, &short), (XDP_PASS, short.clone()));
}

/// An Ethernet + IPv6 + UDP frame from `src` to 2001:db8:ffff::10 port 53.
fn udp6_frame(src: [u8; 16]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x86, 0xdd]);
    let payload = b"strait";
    let udp_len = 8 + payload.len() as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0, (udp_len >> 8) as u8, udp_len as u8, 17, 64]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[
        0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ]);
    f.extend_from_slice(&[0x30, 0x39, 0, 53, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
    f.extend_from_slice(payload);
    f
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

#[test]
fn xdp_deny_syncs_v4_and_v6_prefixes_and_counts_each_drop() {
    let Some(_p) = privileged::require("xdp_deny_syncs_v4_and_v6_prefixes_and_counts_each_drop")
    else {
        return;
    };
    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::load_xdp_deny(&mut ebpf).unwrap();
    let mut deny = strait::datapath::DenyTries::take(&mut ebpf).unwrap();
    let p = |s: &str, l| (s.parse::<std::net::IpAddr>().unwrap(), l);
    // Host bits are cleared; an IPv4-mapped prefix is an IPv4 one.
    let report = deny
        .sync(&[
            p("192.0.2.99", 24),
            p("2001:db8:bad::", 48),
            p("::ffff:203.0.113.5", 128),
        ])
        .unwrap();
    assert_eq!((report.v4, report.v6), (2, 1));
    let prog: &aya::programs::Xdp = ebpf.program("xdp_deny").unwrap().try_into().unwrap();

    assert_eq!(run(prog, &udp_frame([192, 0, 2, 1])).0, XDP_DROP);
    assert_eq!(run(prog, &udp_frame([192, 0, 2, 2])).0, XDP_DROP);
    assert_eq!(run(prog, &udp_frame([203, 0, 113, 5])).0, XDP_DROP);
    assert_eq!(run(prog, &udp6_frame(v6("2001:db8:bad:1::7"))).0, XDP_DROP);
    for f in [
        udp_frame([192, 0, 3, 1]),
        udp6_frame(v6("2001:db8:bae::1")),
        udp6_frame(v6("2001:db8:bad::1"))[..14 + 39].to_vec(),
    ] {
        assert_eq!(run(prog, &f), (XDP_PASS, f.clone()));
    }
    let drops = deny.drops();
    assert_eq!(
        drops,
        vec![
            (p("192.0.2.0", 24), 2),
            (p("203.0.113.5", 32), 1),
            (p("2001:db8:bad::", 48), 1),
        ]
    );

    // A new list: the /24 stays with its count, the others go, a v6 /128
    // comes; removed prefixes no longer drop.
    deny.sync(&[p("192.0.2.0", 24), p("2001:db8::1", 128)])
        .unwrap();
    assert_eq!(run(prog, &udp_frame([203, 0, 113, 5])).0, XDP_PASS);
    assert_eq!(run(prog, &udp6_frame(v6("2001:db8:bad:1::7"))).0, XDP_PASS);
    assert_eq!(run(prog, &udp6_frame(v6("2001:db8::1"))).0, XDP_DROP);
    assert_eq!(
        deny.drops(),
        vec![(p("192.0.2.0", 24), 2), (p("2001:db8::1", 128), 1)]
    );
    // Eight distinct IPv4 lengths: looked up in the trie instead of one
    // hash per length; same answers.
    let many: Vec<_> = (0..8u8)
        .map(|k| p(&format!("10.{k}.0.0"), 16 + k))
        .chain([p("192.0.2.0", 24)])
        .collect();
    deny.sync(&many).unwrap();
    assert_eq!(run(prog, &udp_frame([10, 7, 0, 1])).0, XDP_DROP);
    assert_eq!(run(prog, &udp_frame([10, 7, 2, 1])).0, XDP_PASS);
    assert_eq!(run(prog, &udp_frame([192, 0, 2, 1])).0, XDP_DROP);
    assert_eq!(run(prog, &udp6_frame(v6("2001:db8::1"))).0, XDP_PASS);
    deny.sync(&[p("192.0.2.0", 24)]).unwrap();
    assert_eq!(run(prog, &udp_frame([10, 7, 0, 1])).0, XDP_PASS);
    // A bad prefix length changes nothing.
    assert!(deny.sync(&[p("10.0.0.0", 40)]).is_err());
    assert_eq!(run(prog, &udp_frame([192, 0, 2, 1])).0, XDP_DROP);
}

#[test]
fn xdp_deny_counts_the_longest_of_nested_prefixes_past_six_lengths() {
    let Some(_p) =
        privileged::require("xdp_deny_counts_the_longest_of_nested_prefixes_past_six_lengths")
    else {
        return;
    };
    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::load_xdp_deny(&mut ebpf).unwrap();
    let mut deny = strait::datapath::DenyTries::take(&mut ebpf).unwrap();
    let p = |s: &str, l| (s.parse::<std::net::IpAddr>().unwrap(), l);
    let prog: &aya::programs::Xdp = ebpf.program("xdp_deny").unwrap().try_into().unwrap();
    // Nine nested lengths in one /16 (10.9.0.0/16 ... /24), a /8 around
    // them and a /32 elsewhere: the /16's summary has ten lengths, the
    // six longest are hashed, the rest found in the trie.
    let mut list: Vec<_> = (16..=24u8).map(|l| p("10.9.0.0", l)).collect();
    list.extend([p("10.0.0.0", 8), p("198.51.100.7", 32)]);
    deny.sync(&list).unwrap();
    let sources: [([u8; 4], u8); 6] = [
        ([10, 9, 0, 1], 24),
        ([10, 9, 1, 1], 23),
        ([10, 9, 3, 1], 22),
        ([10, 9, 128, 1], 16),
        ([10, 200, 0, 1], 8),
        ([198, 51, 100, 7], 32),
    ];
    for (src, _) in sources {
        assert_eq!(run(prog, &udp_frame(src)).0, XDP_DROP, "source {src:?}");
    }
    for src in [[11, 9, 0, 1], [198, 51, 100, 8], [192, 0, 2, 1]] {
        let f = udp_frame(src);
        assert_eq!(run(prog, &f), (XDP_PASS, f.clone()), "source {src:?}");
    }
    let drops = deny.drops();
    for (src, len) in sources {
        let net = std::net::Ipv4Addr::from(u32::from_be_bytes(src) & (u32::MAX << (32 - len)));
        let want = (p(&net.to_string(), len), 1);
        assert!(drops.contains(&want), "{want:?} not in {drops:?}");
    }
    assert_eq!(drops.iter().map(|d| d.1).sum::<u64>(), 6);
    // Removing the /8 and the /16s' longer half: their sources fall back
    // to what is left, and the summary no longer sends 10.200/16 to a
    // lookup that would find nothing.
    deny.sync(&(16..=20u8).map(|l| p("10.9.0.0", l)).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(run(prog, &udp_frame([10, 9, 0, 1])).0, XDP_DROP);
    let f = udp_frame([10, 200, 0, 1]);
    assert_eq!(run(prog, &f), (XDP_PASS, f.clone()));
    assert!(deny.drops().contains(&(p("10.9.0.0", 20), 1)));
}

/// An Ethernet + IPv4 (`options` bytes of IP options, a multiple of 4) +
/// TCP frame from `src` to `dst`:80 with TCP flags `flags`.
fn tcp_frame(src: [u8; 4], dst: [u8; 4], flags: u8, options: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    let ihl = 20 + options;
    let tot_len = (ihl + 20) as u16;
    f.extend_from_slice(&[
        0x40 | (ihl / 4) as u8,
        0,
        (tot_len >> 8) as u8,
        tot_len as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    // NOP options (type 1).
    f.extend(std::iter::repeat_n(1u8, options));
    f.extend_from_slice(&[
        0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    f
}

/// An Ethernet + IPv6 + TCP frame from `src` to `dst`:80 with `flags`.
fn tcp6_frame(src: [u8; 16], dst: [u8; 16], flags: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[
        0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    f
}

/// The AuthorizationPolicy form of the filter: a prefix scoped to the
/// workloads a DENY selects drops only connection-opening TCP segments to
/// them, and a scoped prefix inside a wider unscoped one drops everything.
#[test]
fn xdp_deny_scoped_prefixes_drop_only_syns_to_protected_workloads() {
    use strait::datapath::DenyScope;
    let Some(_p) =
        privileged::require("xdp_deny_scoped_prefixes_drop_only_syns_to_protected_workloads")
    else {
        return;
    };
    const SYN: u8 = 0x02;
    const SYN_ACK: u8 = 0x12;
    const ACK: u8 = 0x10;
    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::load_xdp_deny(&mut ebpf).unwrap();
    let mut deny = strait::datapath::DenyTries::take(&mut ebpf).unwrap();
    let pod = [10, 244, 0, 5];
    let pod6 = v6("fd00::5");
    let scope = |ips: &[&str]| DenyScope::To(ips.iter().map(|s| s.parse().unwrap()).collect());
    let report = deny
        .sync_scoped(&[
            (("192.0.2.0".parse().unwrap(), 24), scope(&["10.244.0.5"])),
            (("2001:db8::".parse().unwrap(), 32), scope(&["fd00::5"])),
        ])
        .unwrap();
    assert_eq!((report.v4, report.v6, report.destinations), (1, 1, 2));
    let prog: &aya::programs::Xdp = ebpf.program("xdp_deny").unwrap().try_into().unwrap();
    let src = [192, 0, 2, 77];
    let cases: [(&str, Vec<u8>, u32); 11] = [
        ("SYN to the pod", tcp_frame(src, pod, SYN, 0), XDP_DROP),
        ("SYN with IP options", tcp_frame(src, pod, SYN, 8), XDP_DROP),
        (
            "SYN to another address",
            tcp_frame(src, [10, 244, 0, 6], SYN, 0),
            XDP_PASS,
        ),
        (
            "SYN-ACK (the pod's own connection)",
            tcp_frame(src, pod, SYN_ACK, 0),
            XDP_PASS,
        ),
        ("ACK", tcp_frame(src, pod, ACK, 0), XDP_PASS),
        ("UDP", udp_frame(src), XDP_PASS),
        (
            "SYN from elsewhere",
            tcp_frame([192, 0, 3, 1], pod, SYN, 0),
            XDP_PASS,
        ),
        (
            "IPv6 SYN to the pod",
            tcp6_frame(v6("2001:db8::9"), pod6, SYN),
            XDP_DROP,
        ),
        (
            "IPv6 ACK",
            tcp6_frame(v6("2001:db8::9"), pod6, ACK),
            XDP_PASS,
        ),
        (
            "IPv6 SYN elsewhere",
            tcp6_frame(v6("2001:db8::9"), v6("fd00::6"), SYN),
            XDP_PASS,
        ),
        // Truncated inside the TCP header: never read past the end.
        (
            "truncated SYN",
            tcp_frame(src, pod, SYN, 0)[..14 + 20 + 10].to_vec(),
            XDP_PASS,
        ),
    ];
    for (what, frame, want) in &cases {
        let (action, out) = run(prog, frame);
        assert_eq!(action, *want, "{what}");
        if *want == XDP_PASS {
            assert_eq!(&out, frame, "{what}: passed unchanged");
        }
    }
    let drops = deny.drops();
    assert_eq!(drops.iter().map(|d| d.1).sum::<u64>(), 3, "{drops:?}");

    // A wider prefix that drops everything covers the scoped one inside it.
    deny.sync_scoped(&[
        (("192.0.2.0".parse().unwrap(), 24), scope(&["10.244.0.5"])),
        (("192.0.0.0".parse().unwrap(), 16), DenyScope::Any),
    ])
    .unwrap();
    let prog: &aya::programs::Xdp = ebpf.program("xdp_deny").unwrap().try_into().unwrap();
    assert_eq!(
        run(prog, &tcp_frame(src, [10, 244, 0, 6], ACK, 0)).0,
        XDP_DROP
    );
    assert_eq!(run(prog, &udp_frame(src)).0, XDP_DROP);
    // And removing it brings the scoped behaviour back.
    deny.sync_scoped(&[(("192.0.2.0".parse().unwrap(), 24), scope(&["10.244.0.5"]))])
        .unwrap();
    let prog: &aya::programs::Xdp = ebpf.program("xdp_deny").unwrap().try_into().unwrap();
    assert_eq!(run(prog, &udp_frame(src)).0, XDP_PASS);
    assert_eq!(run(prog, &tcp_frame(src, pod, SYN, 0)).0, XDP_DROP);
}

#[test]
fn xdp_deny_v6_buckets_pass_misses_and_never_hide_a_prefix() {
    let Some(_p) = privileged::require("xdp_deny_v6_buckets_pass_misses_and_never_hide_a_prefix")
    else {
        return;
    };
    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::load_xdp_deny(&mut ebpf).unwrap();
    // What an older daemon left: `DENY_V6` filled, `DENY_CONFIG` zeroed
    // (walk the trie), `DENY_V6_LEN` and `DENY_V6_BUCKETS` empty (new to
    // this build).
    {
        let mut trie: aya::maps::LpmTrie<_, [u8; 16], u32> =
            aya::maps::LpmTrie::try_from(ebpf.map_mut("DENY_V6").unwrap()).unwrap();
        trie.insert(
            &aya::maps::lpm_trie::Key::new(48, v6("2001:db8:bad::")),
            0,
            0,
        )
        .unwrap();
    }
    let prog: &aya::programs::Xdp = ebpf.program("xdp_deny").unwrap().try_into().unwrap();
    assert_eq!(run(prog, &udp6_frame(v6("2001:db8:bad::9"))).0, XDP_DROP);
    let mut deny = strait::datapath::DenyTries::take(&mut ebpf).unwrap();
    // Adopted: the buckets are made to hold the recovered prefix before
    // the next sync switches the program to them.
    deny.recover().unwrap();
    let p = |s: &str, l| (s.parse::<std::net::IpAddr>().unwrap(), l);
    deny.sync(&[p("2001:db8:bad::", 48)]).unwrap();
    let prog: &aya::programs::Xdp = ebpf.program("xdp_deny").unwrap().try_into().unwrap();
    assert_eq!(run(prog, &udp6_frame(v6("2001:db8:bad::9"))).0, XDP_DROP);

    // A /32, a /10 (shorter than the /16 buckets: in 64 of them), a /56
    // (in its /48's bucket: the rest of that /48 misses the slot) and a
    // /128.
    let report = deny
        .sync(&[
            p("2001:db9::", 32),
            p("2a00::", 10),
            p("2001:db8:bad:100::", 56),
            p("2001:db8:5::7", 128),
        ])
        .unwrap();
    assert_eq!(report.v6, 4);
    for src in [
        "2001:db9::1",
        "2001:db9:ffff:ffff::1",
        "2a00::1",
        "2a3f:ffff::1",
        "2001:db8:bad:1ff::1",
        "2001:db8:5::7",
    ] {
        assert_eq!(run(prog, &udp6_frame(v6(src))).0, XDP_DROP, "{src}");
    }
    // Misses, neighbours of each prefix (outside it), and the /48 removed
    // above: passed with their bytes unchanged.
    for src in [
        "2001:db8:bad::9",
        "2001:db8:bad:200::1",
        "2001:dba::1",
        "2001:db8::1",
        "2a40::1",
        "29ff:ffff::1",
        "2001:db8:5::8",
        "fd00::1",
    ] {
        let f = udp6_frame(v6(src));
        assert_eq!(run(prog, &f), (XDP_PASS, f.clone()), "{src}");
    }
    let drops = deny.drops();
    assert_eq!(
        drops,
        vec![
            (p("2001:db8:5::7", 128), 1),
            (p("2001:db8:bad:100::", 56), 1),
            (p("2001:db9::", 32), 2),
            (p("2a00::", 10), 2),
        ]
    );
    // Emptied: nothing is dropped any more.
    deny.sync(&[]).unwrap();
    let f = udp6_frame(v6("2001:db9::1"));
    assert_eq!(run(prog, &f), (XDP_PASS, f.clone()));
}
