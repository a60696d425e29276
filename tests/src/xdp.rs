//! Fixtures of the XDP program tests (tier 2, `BPF_PROG_TEST_RUN`) both
//! address families share: the verdicts, the Ethernet addresses of the
//! frames, TCP/UDP headers, the uplink program of a loaded object and one
//! test run of it.
use aya::programs::{TestRun, TestRunOptions, Xdp};

/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`.
pub const XDP_TX: u32 = 3;

/// The uplink gateway's MAC (the destination of tunnelled frames).
pub const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
/// The balancer's MAC: the destination of test frames.
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The sender's MAC: the source of test frames.
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// An Ethernet header from [`SRC_MAC`] to [`DST_MAC`] with `ether_type`
/// (`[0x08, 0x00]` IPv4, `[0x86, 0xdd]` IPv6).
pub fn eth(ether_type: [u8; 2]) -> Vec<u8> {
    let mut f = DST_MAC.to_vec();
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&ether_type);
    f
}

/// Internet checksum of `bytes` (RFC 1071), computed here independently of
/// the program.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in bytes.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 header (no options, id 0x1234, TTL 61) with a correct checksum;
/// `frags` is the flags/fragment-offset field.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload_len: usize, frags: u16) -> Vec<u8> {
    let tot = (20 + payload_len) as u16;
    let mut h = vec![0x45, 0, (tot >> 8) as u8, tot as u8, 0x12, 0x34];
    h.extend_from_slice(&frags.to_be_bytes());
    h.extend_from_slice(&[61, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// Ethernet + IPv4 + `l4` from `src` to `dst` (protocol `proto`).
pub fn frame(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = eth([0x08, 0x00]);
    f.extend(ipv4(src, dst, proto, l4.len(), 0));
    f.extend_from_slice(l4);
    f
}

/// A TCP segment header (sequence 1, data offset 5, window 0xffff,
/// checksum 0) with `flags` (SYN = 0x02, ACK = 0x10) and payload.
pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

/// Ethernet + IPv4 + TCP (ACK, from port 40000 to 80) from `src` to `dst`
/// whose IPv4 packet is `tot` bytes (at least 40), DF set or not: a
/// packet of a given size for the MTU checks.
pub fn tcp4_sized(src: [u8; 4], dst: [u8; 4], tot: usize, df: bool) -> Vec<u8> {
    let l4 = tcp(40000, 80, 0x10, &vec![0x5a; tot - 40]);
    let mut f = eth([0x08, 0x00]);
    f.extend(ipv4(src, dst, 6, l4.len(), if df { 0x4000 } else { 0 }));
    f.extend(l4);
    f
}

/// The frame `xdp_lb` must transmit for `inner` (an Ethernet + IPv4
/// frame) tunnelled IPIP from `source` to `real`, computed here from the
/// spec rather than the program: gateway MAC ([`GW_MAC`]), the old
/// destination MAC as source, an outer IPv4 header (TOS copied, id 0, no
/// fragment flags, TTL 64, protocol 4, checksum), then the inner IPv4
/// packet byte for byte.
pub fn ipip(inner: &[u8], source: [u8; 4], real: [u8; 4]) -> Vec<u8> {
    let ip = &inner[14..];
    let mut f = GW_MAC.to_vec();
    f.extend_from_slice(&inner[0..6]);
    f.extend_from_slice(&[0x08, 0x00]);
    let tot = (ip.len() + 20) as u16;
    let mut h = vec![
        0x45,
        ip[1],
        (tot >> 8) as u8,
        tot as u8,
        0,
        0,
        0,
        0,
        64,
        4,
        0,
        0,
    ];
    h.extend_from_slice(&source);
    h.extend_from_slice(&real);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(h);
    f.extend_from_slice(ip);
    f
}

/// A UDP datagram (checksum 0) with `payload`.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// The loaded `xdp_lb` program of `ebpf` (see
/// `strait::datapath::load_xdp_lb`).
///
/// Panics: the program is missing or not an XDP program.
pub fn prog(ebpf: &aya::Ebpf) -> &Xdp {
    ebpf.program("xdp_lb").unwrap().try_into().unwrap()
}

/// Runs `prog` once on `frame`: its verdict and the frame it leaves
/// (room for 256 added bytes).
///
/// Panics: `BPF_PROG_TEST_RUN` fails.
pub fn run(prog: &Xdp, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}

/// One address family of the XDP balancer as its program tests drive it:
/// the test file of each family implements it over its own frame builders
/// and tables, and the checks below run the same steps on both.
pub trait LbFamily {
    /// A real's (node's) address, as the outer header carries it.
    type Addr: Copy + Eq + std::fmt::Debug;
    /// The daemon's balancer tables of this family.
    type Tables;
    /// Real node number `n`.
    fn node(n: u8) -> Self::Addr;
    /// A loaded object with this family's uplink configured (outer
    /// source, gateway MAC) and `xdp_lb` loaded: the test file's `setup`.
    fn setup() -> aya::Ebpf;
    /// Empty tables (a fresh object).
    fn new_tables() -> Self::Tables;
    /// The tables' bookkeeping read back from `ebpf`'s maps (a restarted
    /// daemon).
    fn recover(ebpf: &aya::Ebpf) -> Self::Tables;
    /// Makes the kernel hold exactly the VIP (TCP on `port`) over `reals`,
    /// or no VIP at all with `None`.
    fn apply(
        tables: &mut Self::Tables,
        ebpf: &mut aya::Ebpf,
        port: u16,
        reals: Option<&[(Self::Addr, u32)]>,
    );
    /// A TCP frame from client number `client` (0..200), `sport` to the
    /// VIP's `dport`, with `flags`.
    fn tcp_frame(client: u16, sport: u16, dport: u16, flags: u8) -> Vec<u8>;
    /// The real a transmitted frame was tunnelled to (outer destination).
    fn real_of(out: &[u8]) -> Self::Addr;
}

/// [`LbFamily::setup`] with one TCP VIP on `port` over `reals` (the
/// tables' bookkeeping is dropped: a test that changes the set later
/// keeps its own tables).
///
/// Panics: the object cannot be loaded or the VIP written.
pub fn with_tcp_vip<F: LbFamily>(port: u16, reals: &[(F::Addr, u32)]) -> aya::Ebpf {
    let mut ebpf = F::setup();
    F::apply(&mut F::new_tables(), &mut ebpf, port, Some(reals));
    ebpf
}

/// With `ebpf`'s `xdp_lb` loaded and uplink configured: 300 flows to a
/// VIP on three reals spread over all three; when a fourth joins,
/// established flows (ACKs) stay and new ones (SYNs) reach it; when a real
/// leaves, its flows move to the others and the rest stay; recovered
/// bookkeeping re-applying the same set moves no flow; with the VIP gone
/// its packets pass to the host again.
///
/// Panics: any of that does not hold.
pub fn spreads_flows_and_keeps_them_when_reals_change<F: LbFamily>(ebpf: &mut aya::Ebpf) {
    const FLOWS: u16 = 300;
    let mut vips = F::new_tables();
    let three: Vec<(F::Addr, u32)> = (2..5).map(|i| (F::node(i), 1)).collect();
    F::apply(&mut vips, ebpf, 80, Some(&three));
    let send = |ebpf: &aya::Ebpf, i: u16, sport: u16, flags: u8| {
        run(prog(ebpf), &F::tcp_frame(i % 200, sport, 80, flags))
    };
    let mut first = Vec::new();
    for i in 0..FLOWS {
        let (v, out) = send(ebpf, i, 30000 + i, 0x02);
        assert_eq!(v, XDP_TX);
        first.push(F::real_of(&out));
    }
    for r in &three {
        let n = first.iter().filter(|x| **x == r.0).count();
        assert!(
            n > FLOWS as usize / 6,
            "real {:?} got {n} of {FLOWS} flows: {first:?}",
            r.0
        );
    }

    // A fourth real joins: established flows (ACKs) stay where they were;
    // new connections (SYNs) from other ports reach the newcomer too.
    let mut four = three.clone();
    four.push((F::node(5), 1));
    F::apply(&mut vips, ebpf, 80, Some(&four));
    for i in 0..FLOWS {
        let out = send(ebpf, i, 30000 + i, 0x10).1;
        assert_eq!(F::real_of(&out), first[i as usize], "flow {i} moved");
    }
    let newcomer = (0..FLOWS)
        .map(|i| F::real_of(&send(ebpf, i, 50000 + i, 0x02).1))
        .filter(|r| *r == F::node(5))
        .count();
    assert!(
        newcomer > FLOWS as usize / 8,
        "{newcomer} new flows on the new real"
    );

    // A real leaves: its flows move to the others (not dropped), flows on
    // the remaining reals stay.
    let gone = F::node(2);
    let rest: Vec<_> = four.iter().filter(|r| r.0 != gone).copied().collect();
    F::apply(&mut vips, ebpf, 80, Some(&rest));
    for i in 0..FLOWS {
        let (v, out) = send(ebpf, i, 30000 + i, 0x10);
        assert_eq!(v, XDP_TX);
        let now = F::real_of(&out);
        if first[i as usize] == gone {
            assert_ne!(now, gone, "flow {i} still on the removed real");
        } else {
            assert_eq!(now, first[i as usize], "flow {i} moved");
        }
    }

    // Recovered bookkeeping (a restarted daemon over the same maps) keeps
    // the indexes: re-applying the same set changes no flow.
    let mut again = F::recover(ebpf);
    F::apply(&mut again, ebpf, 80, Some(&rest));
    let moved: Vec<u16> = (0..FLOWS)
        .filter(|i| first[*i as usize] != gone)
        .filter(|i| F::real_of(&send(ebpf, *i, 30000 + i, 0x10).1) != first[*i as usize])
        .collect();
    assert!(moved.is_empty(), "flows moved after recover: {moved:?}");

    // The VIP goes: its packets pass to the host again.
    F::apply(&mut again, ebpf, 80, None);
    let f = F::tcp_frame(1, 30001, 80, 0x10);
    assert_eq!(run(prog(ebpf), &f), (XDP_PASS, f.clone()));
}

/// Runs `prog` on 3000 random mutations of `bases` (taken in turn): 1-4
/// bytes among the first `header_bytes` flipped, one frame in four cut
/// (never below an Ethernet header: `BPF_PROG_TEST_RUN` refuses less), by
/// an xorshift generator from `seed` (the same frames every run). Checks
/// that every verdict is DROP, PASS or TX and that a passed frame is
/// unchanged, then hands `check` the frame, verdict and output for the
/// family's own checks.
///
/// Panics: a check fails.
pub fn for_each_mutation(
    prog: &Xdp,
    bases: &[Vec<u8>],
    seed: u64,
    header_bytes: u64,
    mut check: impl FnMut(&[u8], u32, &[u8]),
) {
    let mut seed = seed;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for n in 0..3000 {
        let mut f = bases[n % bases.len()].clone();
        for _ in 0..(rnd() % 4 + 1) {
            let i = (rnd() % header_bytes) as usize % f.len();
            f[i] = rnd() as u8;
        }
        if rnd() % 4 == 0 {
            let cut = 14 + (rnd() as usize) % (f.len() - 14);
            f.truncate(cut);
        }
        let (v, out) = run(prog, &f);
        assert!(
            [XDP_DROP, XDP_PASS, XDP_TX].contains(&v),
            "verdict {v} for {f:02x?}"
        );
        if v == XDP_PASS {
            assert_eq!(out, f, "passed frames are unchanged");
        }
        check(&f, v, &out);
    }
}

/// `xdp_lb_bench` and `xdp_lb_bench_miss` (what `cargo xtask bench xdp`
/// times the balancer on) against `xdp_lb` in `ebpf` (its VIPs applied,
/// `xdp_lb` loaded): loads both, then for each and each of `tunnelled`
/// (frames `xdp_lb` tunnels:
/// a SYN then an ACK of one flow) checks the same verdict and counters
/// (one packet tunnelled, none decapsulated, a new flow only for the SYN)
/// and that it hands back the client's packet (the tunnel header, 20 or
/// 40 bytes, taken off; the MAC addresses as `xdp_lb` wrote them, the
/// client's EtherType), so a
/// repetition balances the same packet again rather than something
/// cheaper; for each of `untouched` (frames `xdp_lb` does not tunnel),
/// the same verdict and output as `xdp_lb`.
///
/// Panics: any of that does not hold, or the verifier refuses the program.
pub fn bench_program_balances_like_xdp_lb(
    ebpf: &mut aya::Ebpf,
    tunnelled: &[Vec<u8>],
    untouched: &[Vec<u8>],
) {
    for name in ["xdp_lb_bench", "xdp_lb_bench_miss"] {
        let p: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
        p.load()
            .unwrap_or_else(|e| panic!("the verifier refuses {name}: {e}"));
    }
    for name in ["xdp_lb_bench", "xdp_lb_bench_miss"] {
        bench_program_balances_like(ebpf, name, tunnelled, untouched);
    }
}

/// [`bench_program_balances_like_xdp_lb`] for the loaded bench program
/// `name`.
fn bench_program_balances_like(
    ebpf: &aya::Ebpf,
    name: &str,
    tunnelled: &[Vec<u8>],
    untouched: &[Vec<u8>],
) {
    let bench: &Xdp = ebpf.program(name).unwrap().try_into().unwrap();
    let lb = prog(ebpf);
    for f in tunnelled {
        let l4 = 14 + if f[12..14] == [0x86, 0xdd] { 40 } else { 20 };
        let syn = f[l4 + 13] & 0x12 == 0x02;
        let (v, out_lb) = run(lb, f);
        assert_eq!(v, XDP_TX);
        let before = strait::datapath::xlb_stats(ebpf).unwrap();
        let (v, out) = run(bench, f);
        let after = strait::datapath::xlb_stats(ebpf).unwrap();
        assert_eq!(v, XDP_TX);
        assert_eq!(after.packets - before.packets, 1, "balanced once");
        assert_eq!(after.decapsulated, before.decapsulated);
        // A SYN takes the ring; the ACK that follows is a flow table hit.
        assert_eq!(after.new_flows - before.new_flows, u64::from(syn));
        assert_eq!(&out[..12], &out_lb[..12], "xdp_lb's MAC addresses");
        assert_eq!(
            &out[12..14],
            &f[12..14],
            "the client's EtherType (IPv4 after 4in6)"
        );
        assert_eq!(&out[14..], &f[14..], "the client's packet, byte for byte");
    }
    for f in untouched {
        assert_eq!(run(bench, f), run(lb, f));
    }
}

/// The ICMP "fragmentation needed" frame the balancer must answer the
/// IPv4 frame `f` with when it no longer fits once tunnelled, computed
/// here from RFC 792 / RFC 1191 and Katran's `send_icmp4_too_big` rather
/// than from the program: the MACs swapped; IPv4 from `f`'s destination
/// (the VIP) to its source, TOS 0, total length 112, id 0, no fragment
/// flags, TTL 64, protocol 1, header checksum; ICMP type 3 code 4, unused
/// 0, next-hop MTU `next_mtu`, checksum; then the first 84 bytes of `f`'s
/// IPv4 packet.
///
/// Panics: `f` holds fewer than 84 bytes of IPv4 packet.
pub fn frag_needed(f: &[u8], next_mtu: u16) -> Vec<u8> {
    let mut out = f[6..12].to_vec();
    out.extend_from_slice(&f[0..6]);
    out.extend_from_slice(&[0x08, 0x00]);
    let mut dst = [0u8; 4];
    dst.copy_from_slice(&f[26..30]);
    let mut src = [0u8; 4];
    src.copy_from_slice(&f[30..34]);
    let mut h = vec![0x45, 0, 0, 112, 0, 0, 0, 0, 64, 1, 0, 0];
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    out.extend(h);
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&next_mtu.to_be_bytes());
    icmp.extend_from_slice(&f[14..14 + 84]);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    out.extend(icmp);
    out
}

/// The ICMPv6 "Packet Too Big" frame the balancer must answer the IPv6
/// frame `f` with when it no longer fits once tunnelled (RFC 4443 3.2,
/// Katran's `send_icmp6_too_big`): the MACs swapped; IPv6 from `f`'s
/// destination (the VIP) to its source, traffic class and flow label 0,
/// payload length 256, next header 58, hop limit 64; ICMPv6 type 2 code
/// 0, `mtu`, the checksum over RFC 8200's pseudo-header; then the first
/// 248 bytes of `f`'s IPv6 packet.
///
/// Panics: `f` holds fewer than 248 bytes of IPv6 packet.
pub fn packet_too_big(f: &[u8], mtu: u32) -> Vec<u8> {
    let mut out = f[6..12].to_vec();
    out.extend_from_slice(&f[0..6]);
    out.extend_from_slice(&[0x86, 0xdd]);
    let (src, dst) = (&f[38..54], &f[22..38]);
    out.extend_from_slice(&[0x60, 0, 0, 0, 1, 0, 58, 64]);
    out.extend_from_slice(src);
    out.extend_from_slice(dst);
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&f[14..14 + 248]);
    let mut pseudo = src.to_vec();
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    let c = checksum(&pseudo);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    out.extend(icmp);
    out
}

/// How one family's VIP packets cross the uplink MTU, for
/// [`too_big_threshold`].
pub struct TooBig<'a> {
    /// Bytes the tunnel adds: 20 (IPIP), 40 (4in6, ip6ip6).
    pub overhead: usize,
    /// A VIP packet whose IP packet (header included) is `n` bytes, DF
    /// set for IPv4.
    pub sized: &'a dyn Fn(usize) -> Vec<u8>,
    /// The frame the program transmits for a packet that fits.
    pub tunnelled: &'a dyn Fn(&[u8]) -> Vec<u8>,
    /// The ICMP answer to a packet that does not fit, announcing the
    /// given MTU ([`frag_needed`], [`packet_too_big`]).
    pub answer: &'a dyn Fn(&[u8], u32) -> Vec<u8>,
}

/// With the uplink MTU at `mtu` (as `XlbConfig::mtu` holds it): the VIP
/// packet that fills it once tunnelled goes out tunnelled, exact bytes;
/// one byte more, and a 3,000-byte packet, are answered (exact bytes:
/// swapped MACs, headers, checksums, the quote) announcing `announced`
/// (the MTU minus the overhead; IPv6 never below 1,280): one packet
/// tunnelled, two answered (`packets` + 1, `too_big_dropped` + 2). Returns
/// the two answers.
///
/// Panics: any of that does not hold.
pub fn too_big_threshold(prog: &Xdp, f: &TooBig, mtu: usize, announced: u32) -> [Vec<u8>; 2] {
    let fits = (f.sized)(mtu - f.overhead);
    assert_eq!(
        run(prog, &fits),
        (XDP_TX, (f.tunnelled)(&fits)),
        "{} bytes fit an MTU of {mtu} once tunnelled",
        mtu - f.overhead
    );
    [mtu - f.overhead + 1, 3000].map(|len| {
        let big = (f.sized)(len);
        let (v, out) = run(prog, &big);
        assert_eq!(
            (v, &out),
            (XDP_TX, &(f.answer)(&big, announced)),
            "{len} bytes over an MTU of {mtu}"
        );
        out
    })
}

/// [`too_big_threshold`] for an IPv4 VIP tunnelled with `overhead` bytes
/// (IPIP 20, 4in6 40): TCP from `client` to `vip`:80 of [`tcp4_sized`],
/// answered with [`frag_needed`] announcing the MTU minus the overhead;
/// besides, each answer's IPv4 header and ICMP checksums verify, and the
/// first packet that does not fit, sent without DF, is dropped. One
/// packet tunnelled, three counted as `too_big_dropped`.
///
/// Panics: any of that does not hold.
pub fn frag_needed_threshold(
    prog: &Xdp,
    (client, vip): ([u8; 4], [u8; 4]),
    overhead: usize,
    mtu: usize,
    tunnelled: &dyn Fn(&[u8]) -> Vec<u8>,
) {
    let ipv4 = TooBig {
        overhead,
        sized: &|n| tcp4_sized(client, vip, n, true),
        tunnelled,
        answer: &|f, mtu| frag_needed(f, mtu as u16),
    };
    for out in too_big_threshold(prog, &ipv4, mtu, (mtu - overhead) as u32) {
        assert_eq!(checksum(&out[14..34]), 0, "IPv4 header checksum verifies");
        assert_eq!(checksum(&out[34..]), 0, "ICMP checksum verifies");
    }
    let no_df = tcp4_sized(client, vip, mtu - overhead + 1, false);
    assert_eq!(run(prog, &no_df).0, XDP_DROP, "too big without DF");
}

/// Runs `prog` on `frame`, checks that it is tunnelled (`XDP_TX`) and
/// returns the real it went to.
///
/// Panics: another verdict.
pub fn tunnelled_to<F: LbFamily>(prog: &Xdp, frame: &[u8]) -> F::Addr {
    let (v, out) = run(prog, frame);
    assert_eq!(v, XDP_TX, "{frame:02x?}");
    F::real_of(&out)
}

/// Checks that two flows the program balances to different reals and that
/// share one flow cache slot (`slot`: the slot of the flow from a client
/// port) each keep their own real while they alternate: `balance` sends
/// one packet of the flow from a client port with the given TCP flags and
/// returns the real it went to. Panics if no such pair is found among
/// client ports 30000–39999 or a packet goes to another real.
pub fn flows_sharing_a_cache_slot_keep_their_reals<R: PartialEq + Copy + std::fmt::Debug>(
    mut balance: impl FnMut(u16, u8) -> R,
    slot: impl Fn(u16) -> u32,
) {
    let mut by_slot = std::collections::HashMap::new();
    let mut pair = None;
    for sport in 30000..40000u16 {
        let real = balance(sport, 0x02);
        match by_slot.insert(slot(sport), (sport, real)) {
            Some((other, other_real)) if other_real != real => {
                pair = Some([(other, other_real), (sport, real)]);
                break;
            }
            _ => {}
        }
    }
    let pair = pair.expect("two flows on different reals sharing a cache slot");
    for round in 0..4 {
        for (sport, real) in pair {
            assert_eq!(
                balance(sport, 0x10),
                real,
                "round {round}: flow from port {sport}"
            );
        }
    }
}
