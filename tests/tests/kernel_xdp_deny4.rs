//! Tier 2: the IPv4 source deny of `xdp_deny` through BPF_PROG_TEST_RUN:
//! the DIR-16-8 table (`proxy_common::deny4`: leaf verdicts per /16, /24
//! slots in `DENY_V4_DIR24` blocks, the length path for /24s holding
//! longer prefixes) — exact verdicts and counters, random prefix sets of
//! every length 0–32 against a longest-prefix model across updates, the
//! fallback when every block is in use, and verdicts read while the table
//! is rewritten (old or new, never another).
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use strait::datapath::{DenyScope, SourcePrefix};
use strait_tests::privileged;
use strait_tests::xdp::{XDP_DROP, XDP_PASS};
use strait_tests::xdp_deny::{
    self, counted_since, loaded, model_round, tcp_frame, unscoped, verdicts_during_updates, Rng,
    ACK, SYN,
};

fn p(s: &str, l: u8) -> SourcePrefix {
    (s.parse::<IpAddr>().unwrap(), l)
}

/// An Ethernet + IPv4 + TCP frame from `src` to `dst`:80 with `flags`.
fn frame_to(src: u32, dst: [u8; 4], flags: u8) -> Vec<u8> {
    tcp_frame(Ipv4Addr::from(src).into(), dst.into(), flags)
}

/// An Ethernet + IPv4 + TCP frame from `src` to 198.51.100.10:80 (ACK).
fn frame(src: u32) -> Vec<u8> {
    frame_to(src, [198, 51, 100, 10], ACK)
}

fn v4(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap())
}

/// Runs a frame from `src` through `xdp_deny`: the verdict; a passed frame
/// must come out byte for byte as it went in.
fn verdict(ebpf: &aya::Ebpf, src: u32) -> u32 {
    xdp_deny::verdict(ebpf, &frame(src))
}

#[test]
fn ipv4_deny_verdicts_are_exact_for_leaves_slots_and_longer_prefixes() {
    let Some(_p) =
        privileged::require("ipv4_deny_verdicts_are_exact_for_leaves_slots_and_longer_prefixes")
    else {
        return;
    };
    let (ebpf, mut deny) = loaded();
    let set = [
        p("10.0.0.0", 8),
        p("10.1.0.0", 16),
        p("10.1.2.0", 23),
        p("10.1.2.0", 24),
        p("10.1.9.128", 25),
        p("10.1.9.7", 32),
        p("192.0.2.0", 24),
        p("203.0.113.5", 32),
    ];
    deny.sync(&set).unwrap();
    // 10.1/16, 192.0/16 and 203.0/16 hold prefixes longer than /16.
    assert_eq!(deny.v4_blocks(), 3);
    let before = deny.drops();
    let cases: [(&str, Option<SourcePrefix>); 14] = [
        ("10.200.3.4", Some(p("10.0.0.0", 8))),
        ("10.1.200.1", Some(p("10.1.0.0", 16))),
        ("10.1.3.1", Some(p("10.1.2.0", 23))),
        ("10.1.2.255", Some(p("10.1.2.0", 24))),
        ("10.1.9.200", Some(p("10.1.9.128", 25))),
        ("10.1.9.7", Some(p("10.1.9.7", 32))),
        ("10.1.9.8", Some(p("10.1.0.0", 16))),
        ("10.1.9.127", Some(p("10.1.0.0", 16))),
        ("192.0.2.77", Some(p("192.0.2.0", 24))),
        ("192.0.3.1", None),
        ("203.0.113.5", Some(p("203.0.113.5", 32))),
        ("203.0.113.6", None),
        ("11.0.0.1", None),
        ("9.255.255.255", None),
    ];
    let mut want: BTreeMap<SourcePrefix, u64> = BTreeMap::new();
    for (src, hit) in cases {
        let got = verdict(&ebpf, v4(src));
        assert_eq!(
            got,
            if hit.is_some() { XDP_DROP } else { XDP_PASS },
            "{src}"
        );
        if let Some(h) = hit {
            *want.entry(h).or_default() += 1;
        }
    }
    assert_eq!(counted_since(&deny, &before), want);

    // The /8 removed and a /0 added: every other source is the /0's; the
    // 10.1/16 block stays, 192.0's and 203.0's too.
    let mut set: Vec<SourcePrefix> = set[1..].to_vec();
    set.push(p("0.0.0.0", 0));
    deny.sync(&set).unwrap();
    assert_eq!(deny.v4_blocks(), 3);
    let before = deny.drops();
    for src in ["10.200.3.4", "11.0.0.1", "192.0.3.1", "255.255.255.255"] {
        assert_eq!(verdict(&ebpf, v4(src)), XDP_DROP, "{src}");
    }
    assert_eq!(verdict(&ebpf, v4("10.1.9.7")), XDP_DROP);
    let got = counted_since(&deny, &before);
    assert_eq!(got.get(&p("0.0.0.0", 0)), Some(&4), "{got:?}");
    assert_eq!(got.get(&p("10.1.9.7", 32)), Some(&1), "{got:?}");

    // Only /16s and shorter: no block; all removed: everything passes.
    deny.sync(&[p("10.1.0.0", 16), p("172.16.0.0", 12)])
        .unwrap();
    assert_eq!(deny.v4_blocks(), 0);
    assert_eq!(verdict(&ebpf, v4("10.1.9.7")), XDP_DROP);
    assert_eq!(verdict(&ebpf, v4("172.31.255.1")), XDP_DROP);
    assert_eq!(verdict(&ebpf, v4("172.32.0.1")), XDP_PASS);
    deny.sync(&[]).unwrap();
    for src in ["10.1.9.7", "172.31.255.1", "192.0.2.77"] {
        assert_eq!(verdict(&ebpf, v4(src)), XDP_PASS, "{src}");
    }
}

/// Random sets of prefixes of every length 0–32, clustered into a few /8s
/// so they nest (leaves, slots, /24s with longer prefixes, more lengths
/// than the length path looks up), each round replacing the last (blocks
/// kept, freed and reused): every verdict and every drop counter is the
/// longest-prefix match's, as a plain longest-prefix model computes it.
#[test]
fn random_ipv4_prefix_sets_match_a_longest_prefix_model() {
    let Some(_p) = privileged::require("random_ipv4_prefix_sets_match_a_longest_prefix_model")
    else {
        return;
    };
    let (ebpf, mut deny) = loaded();
    let mut rng = Rng(0x5eed_4444_abcd_0004);
    let clusters = [v4("10.0.0.0"), v4("100.64.0.0"), v4("192.168.0.0")];
    let near = |rng: &mut Rng| -> u32 {
        let c = clusters[(rng.next_u64() % clusters.len() as u64) as usize];
        let low = rng.next_u64() as u32;
        match rng.next_u64() % 3 {
            0 => c | (low & 0x0003_ff00) | (low & 0xff) >> 6,
            1 => c | (low & 0x00ff_ffff),
            _ => c | (low & 0x0000_ffff),
        }
    };
    let mut blocks_seen = 0;
    for round in 0..3 {
        let mut set: Vec<SourcePrefix> = (0..150)
            .map(|_| {
                // Lengths 1–32 uniformly; /0 in one round only.
                let l = (1 + rng.next_u64() % 32) as u8;
                let mask = u32::MAX << (32 - u32::from(l));
                (IpAddr::V4(Ipv4Addr::from(near(&mut rng) & mask)), l)
            })
            .collect();
        if round == 2 {
            set.push(p("0.0.0.0", 0));
        }
        set.sort();
        set.dedup();
        let sources: Vec<IpAddr> = (0..600u32)
            .map(|i| {
                let src = match i % 4 {
                    // A prefix's own address, its last, or one past its end.
                    0 => {
                        let (a, l) = rng.pick(&set);
                        let IpAddr::V4(a) = a else { unreachable!() };
                        let size = 1u64 << (32 - u32::from(l));
                        let a = u64::from(u32::from(a));
                        (match rng.next_u64() % 3 {
                            0 => a,
                            1 => a + size - 1,
                            _ => a + size,
                        }) as u32
                    }
                    3 => rng.next_u64() as u32,
                    _ => near(&mut rng),
                };
                IpAddr::V4(Ipv4Addr::from(src))
            })
            .collect();
        let want = model_round(&ebpf, &mut deny, round, &set, sources, |s| {
            let IpAddr::V4(s) = s else { unreachable!() };
            frame(u32::from(s))
        });
        blocks_seen = blocks_seen.max(deny.v4_blocks());
        assert!(want.len() > 20, "round {round}: too few prefixes hit");
        assert!(
            want.keys().filter(|p| p.1 > 24).count() > 3,
            "round {round}: too few prefixes longer than /24 hit"
        );
    }
    assert!(blocks_seen > 0, "no round used a DENY_V4_DIR24 block");
}

/// More /16s with prefixes longer than /16 than `DENY_V4_DIR24` has blocks:
/// the rest take the length path, verdicts unchanged; removing them frees
/// the blocks for others (reused after a grace period).
#[test]
fn ipv4_slash16s_past_the_blocks_take_the_length_path() {
    let Some(_p) = privileged::require("ipv4_slash16s_past_the_blocks_take_the_length_path") else {
        return;
    };
    let (ebpf, mut deny) = loaded();
    let blocks = proxy_common::DENY_V4_BLOCKS;
    // One /24 in each of `blocks + 100` /16s from 20.0/16 on.
    let set: Vec<SourcePrefix> = (0..blocks + 100)
        .map(|i| {
            (
                IpAddr::V4(Ipv4Addr::from((20 << 24) + (i << 16) + (7 << 8))),
                24,
            )
        })
        .collect();
    deny.sync(&set).unwrap();
    assert_eq!(deny.v4_blocks(), blocks as usize);
    for i in [0, blocks - 1, blocks, blocks + 99] {
        let base = (20 << 24) + (i << 16);
        assert_eq!(verdict(&ebpf, base + (7 << 8) + 9), XDP_DROP, "/16 {i}");
        assert_eq!(verdict(&ebpf, base + (8 << 8) + 9), XDP_PASS, "/16 {i}");
    }
    // The first half removed, others added: their blocks are reused.
    let set: Vec<SourcePrefix> = set[set.len() / 2..]
        .iter()
        .copied()
        .chain((0..300).map(|i| {
            (
                IpAddr::V4(Ipv4Addr::from((60 << 24) + (i << 16) + (3 << 8))),
                26,
            )
        }))
        .collect();
    deny.sync(&set).unwrap();
    assert_eq!(deny.v4_blocks(), set.len().min(blocks as usize));
    assert_eq!(verdict(&ebpf, (20 << 24) + (7 << 8) + 9), XDP_PASS);
    for i in [0, 299] {
        let base = (60 << 24) + (i << 16) + (3 << 8);
        assert_eq!(verdict(&ebpf, base + 5), XDP_DROP, "60.{i}");
        assert_eq!(verdict(&ebpf, base + 64), XDP_PASS, "60.{i}");
    }
}

/// The table rewritten back and forth between two prefix sets (leaf ↔
/// block, slot ↔ length path, blocks freed and reused, a source's longest
/// prefix replaced by a shorter or a longer one, scoped prefixes whose
/// scope or prefix changes) while another thread runs packets: every
/// verdict is the old set's or the new set's — a source both sets drop is
/// never passed mid-update.
#[test]
fn ipv4_verdicts_read_during_updates_are_the_old_or_the_new_sets() {
    let Some(_p) =
        privileged::require("ipv4_verdicts_read_during_updates_are_the_old_or_the_new_sets")
    else {
        return;
    };
    let (ebpf, mut deny) = loaded();
    let (pod, other) = ([198, 51, 100, 10], [198, 51, 100, 11]);
    let to_pod = || DenyScope::To([IpAddr::from(pod)].into());
    let mut a = unscoped(&[
        p("10.1.0.0", 16),
        p("10.2.3.0", 24),
        p("10.3.0.0", 16),
        p("10.4.4.4", 32),
    ]);
    let mut b = unscoped(&[
        p("10.1.5.0", 24),
        p("10.2.0.0", 16),
        p("10.3.0.0", 17),
        p("10.3.9.0", 24),
        p("10.4.0.0", 16),
        p("10.4.4.0", 30),
    ]);
    // Scoped: a /16 replaced by a /24 inside it, and a /16 whose scope
    // becomes every destination.
    a.extend([(p("10.6.0.0", 16), to_pod()), (p("10.7.0.0", 16), to_pod())]);
    b.extend([
        (p("10.6.7.0", 24), to_pod()),
        (p("10.7.0.0", 16), DenyScope::Any),
    ]);
    let sources = [
        "10.1.5.1",
        "10.1.6.1",
        "10.2.3.1",
        "10.2.4.1",
        "10.3.9.1",
        "10.3.200.1",
        "10.4.4.4",
        "10.4.4.6",
        "10.4.5.1",
        "10.5.0.1",
    ];
    let mut probes: Vec<(IpAddr, IpAddr, bool)> = sources
        .iter()
        .map(|s| (s.parse().unwrap(), IpAddr::from(pod), false))
        .collect();
    for s in ["10.6.7.1", "10.6.8.1", "10.7.0.1"] {
        let s: IpAddr = s.parse().unwrap();
        probes.extend([
            (s, IpAddr::from(pod), true),
            (s, IpAddr::from(pod), false),
            (s, IpAddr::from(other), true),
        ]);
    }
    // Sources both sets drop or both pass (the verdicts checked), and
    // sources they disagree on (the table's entries for them change).
    let differ = probes
        .iter()
        .filter(|(s, d, syn)| {
            xdp_deny::model(&a, *s, *d, *syn) != xdp_deny::model(&b, *s, *d, *syn)
        })
        .count();
    assert!(differ >= 4 && probes.len() - differ >= 4, "{differ}");
    let frame = |s: IpAddr, d: IpAddr, syn: bool| {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (s, d) else {
            unreachable!()
        };
        frame_to(u32::from(s), d.octets(), if syn { SYN } else { ACK })
    };
    // Each sync frees blocks, reused by the next ones.
    let checked = verdicts_during_updates(&ebpf, &mut deny, (&a, &b), &probes, frame, 200);
    assert!(checked > 1000, "only {checked} verdicts read");
}
