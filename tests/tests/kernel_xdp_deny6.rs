//! Tier 2: the IPv6 source deny of `xdp_deny` through BPF_PROG_TEST_RUN on
//! packet fixtures, exact verdicts and output bytes: bucket slot hits, the
//! exact-length lookups behind them (nested lengths, scoped inside
//! unscoped and the reverse), misses beside every prefix, and the trie
//! when more lengths are nested than the program looks up.
use std::net::{IpAddr, Ipv6Addr};

use strait::datapath::{DenyScope, DenyTries, SourcePrefix};
use strait_tests::privileged;
use strait_tests::xdp::{XDP_DROP, XDP_PASS};
use strait_tests::xdp_deny::{
    self, loaded, model_round, tcp_frame, unscoped, verdicts_during_updates, Rng, ACK, SYN,
};

/// The workload a scoped prefix protects, and another one.
const POD: &str = "fd00::5";
const OTHER_POD: &str = "fd00::6";

fn p(s: &str, l: u8) -> SourcePrefix {
    (s.parse::<IpAddr>().unwrap(), l)
}

/// An Ethernet + IPv6 + TCP frame from `src` to `dst`:80 with `flags`.
fn tcp6(src: &str, dst: &str, flags: u8) -> Vec<u8> {
    tcp_frame(src.parse().unwrap(), dst.parse().unwrap(), flags)
}

fn scope(ips: &[&str]) -> DenyScope {
    DenyScope::To(ips.iter().map(|s| s.parse().unwrap()).collect())
}

fn verdict(ebpf: &aya::Ebpf, frame: &[u8]) -> u32 {
    xdp_deny::verdict(ebpf, frame)
}

/// The drop counts of `deny` that are not zero.
fn counted(deny: &DenyTries) -> Vec<(SourcePrefix, u64)> {
    deny.drops().into_iter().filter(|(_, n)| *n > 0).collect()
}

#[test]
fn ipv6_deny_verdicts_are_exact_for_hosts_sites_short_and_nested_prefixes() {
    let Some(_p) = privileged::require(
        "ipv6_deny_verdicts_are_exact_for_hosts_sites_short_and_nested_prefixes",
    ) else {
        return;
    };
    let (ebpf, mut deny) = loaded();
    let report = deny
        .sync_scoped(&[
            // A site and a host: each alone in its /48 bucket (slot hits).
            (p("2001:db8:bad::", 48), DenyScope::Any),
            (p("2001:db8:5::7", 128), DenyScope::Any),
            // Shorter than the /16 buckets: in the buckets of 64 /16s.
            (p("2a00::", 10), DenyScope::Any),
            // Covers part of 3000::/16 only.
            (p("3000::", 20), DenyScope::Any),
            // Scoped /32 holding an unscoped /64 holding an unscoped /128,
            // and a scoped /56 protecting another workload: the longest
            // prefix containing a source decides.
            (p("2001:db9::", 32), scope(&[POD])),
            (p("2001:db9:0:1::", 64), DenyScope::Any),
            (p("2001:db9:0:1::9", 128), DenyScope::Any),
            (p("2001:db9:0:200::", 56), scope(&[OTHER_POD])),
            // Unscoped /40 holding a scoped /48: the /48 drops everything
            // too (a source in it is in the /40).
            (p("2001:dba::", 40), DenyScope::Any),
            (p("2001:dba:0::", 48), scope(&[POD])),
        ])
        .unwrap();
    assert_eq!(report.v6, 10, "{report:?}");

    let drops: &[(&str, &str, u8)] = &[
        ("2001:db8:bad::9", OTHER_POD, ACK),
        ("2001:db8:bad:ffff:ffff:ffff:ffff:ffff", OTHER_POD, ACK),
        ("2001:db8:5::7", OTHER_POD, ACK),
        ("2a00::1", OTHER_POD, ACK),
        ("2a3f:ffff::1", OTHER_POD, ACK),
        ("3000:fff:ffff::1", OTHER_POD, ACK),
        // Scoped /32: only a SYN to the protected workload.
        ("2001:db9:7::1", POD, SYN),
        // Inside the unscoped /64 and /128: everything.
        ("2001:db9:0:1::1", OTHER_POD, ACK),
        ("2001:db9:0:1::9", OTHER_POD, ACK),
        // Inside the scoped /56: a SYN to its workload or to the /32's.
        ("2001:db9:0:2ff::1", OTHER_POD, SYN),
        ("2001:db9:0:2ff::1", POD, SYN),
        // Scoped /48 inside the unscoped /40: everything.
        ("2001:dba:0:1::1", OTHER_POD, ACK),
        ("2001:dba:ff::1", OTHER_POD, ACK),
    ];
    for (src, dst, flags) in drops {
        assert_eq!(
            verdict(&ebpf, &tcp6(src, dst, *flags)),
            XDP_DROP,
            "{src} → {dst} flags {flags:#x}"
        );
    }
    let passes: &[(&str, &str, u8)] = &[
        // Neighbours of each prefix, just outside.
        ("2001:db8:bac:ffff::1", POD, SYN),
        ("2001:db8:bae::", POD, SYN),
        ("2001:db8:5::6", POD, SYN),
        ("2001:db8:5::8", POD, SYN),
        ("29ff:ffff::1", POD, SYN),
        ("2a40::", POD, SYN),
        // In a /16 a prefix covers part of (3000::/20 of 3000::/16).
        ("3000:1000::1", POD, SYN),
        ("2001:dbb::1", POD, SYN),
        // The scoped /32: not a SYN, or not to its workload.
        ("2001:db9:7::1", POD, ACK),
        ("2001:db9:7::1", OTHER_POD, SYN),
        // The /64's neighbour inside the /32: scoped again.
        ("2001:db9:0:2::1", POD, ACK),
        // The scoped /56: not a SYN.
        ("2001:db9:0:2ff::1", OTHER_POD, ACK),
        ("fd00::1", POD, SYN),
    ];
    for (src, dst, flags) in passes {
        assert_eq!(
            verdict(&ebpf, &tcp6(src, dst, *flags)),
            XDP_PASS,
            "{src} → {dst} flags {flags:#x}"
        );
    }
    // Each drop counted on the longest prefix containing its source.
    assert_eq!(
        counted(&deny),
        vec![
            (p("2001:db8:5::7", 128), 1),
            (p("2001:db8:bad::", 48), 2),
            (p("2001:db9::", 32), 1),
            (p("2001:db9:0:1::", 64), 1),
            (p("2001:db9:0:1::9", 128), 1),
            (p("2001:db9:0:200::", 56), 2),
            (p("2001:dba::", 40), 1),
            (p("2001:dba::", 48), 1),
            (p("2a00::", 10), 2),
            (p("3000::", 20), 1),
        ]
    );

    // Removing the /128 and the /64 leaves their sources to the /32
    // (scoped), and a truncated frame from a denied source passes.
    deny.sync_scoped(&[
        (p("2001:db9::", 32), scope(&[POD])),
        (p("2001:db8:bad::", 48), DenyScope::Any),
    ])
    .unwrap();
    assert_eq!(
        verdict(&ebpf, &tcp6("2001:db9:0:1::9", OTHER_POD, ACK)),
        XDP_PASS
    );
    assert_eq!(verdict(&ebpf, &tcp6("2001:db9:0:1::9", POD, SYN)), XDP_DROP);
    assert_eq!(verdict(&ebpf, &tcp6("2a00::1", POD, SYN)), XDP_PASS);
    let short = tcp6("2001:db8:bad::9", POD, SYN)[..14 + 39].to_vec();
    assert_eq!(verdict(&ebpf, &short), XDP_PASS);
    assert_eq!(verdict(&ebpf, &tcp6("2001:db8:bad::9", POD, ACK)), XDP_DROP);
    // Emptied: nothing dropped.
    deny.sync(&[]).unwrap();
    assert_eq!(verdict(&ebpf, &tcp6("2001:db8:bad::9", POD, SYN)), XDP_PASS);
}

/// Ten lengths nested in one /48: the program compares the bucket's slot
/// (the /128), looks up four more lengths, and leaves the rest to the
/// `DENY_V6` trie; every source is still counted on its longest prefix.
#[test]
fn ipv6_sources_past_the_looked_up_lengths_are_decided_by_the_trie() {
    let Some(_p) =
        privileged::require("ipv6_sources_past_the_looked_up_lengths_are_decided_by_the_trie")
    else {
        return;
    };
    let (ebpf, mut deny) = loaded();
    let base = u128::from(
        "2001:db8:bad:1234:5678:9abc:def0:1"
            .parse::<Ipv6Addr>()
            .unwrap(),
    );
    let lengths = [48u8, 52, 56, 60, 64, 80, 96, 112, 120, 128];
    let prefix = |l: u8| {
        let mask = u128::MAX.checked_shl(128 - u32::from(l)).unwrap_or(0);
        (IpAddr::V6(Ipv6Addr::from(base & mask)), l)
    };
    deny.sync(&lengths.map(prefix)).unwrap();
    // For each length, a source inside that prefix and outside the next
    // longer one: the next one's last bit flipped.
    for (i, l) in lengths.iter().enumerate() {
        let src = match lengths.get(i + 1) {
            Some(next) => base ^ (1u128 << (128 - u32::from(*next))),
            None => base,
        };
        let src = Ipv6Addr::from(src).to_string();
        let before = deny.drops();
        assert_eq!(
            verdict(&ebpf, &tcp6(&src, POD, ACK)),
            XDP_DROP,
            "{src} (/{l})"
        );
        let after = deny.drops();
        let changed: Vec<SourcePrefix> = after
            .iter()
            .zip(&before)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect();
        assert_eq!(changed, vec![prefix(*l)], "{src}");
    }
    // Beside the /48: passed.
    assert_eq!(verdict(&ebpf, &tcp6("2001:db8:bae::1", POD, SYN)), XDP_PASS);
}

/// Random prefix sets clustered into a few /48s (so lengths nest, buckets
/// hold several and more lengths than the program looks up) against
/// random sources near them: every verdict and every drop counter is the
/// longest-prefix match's, as a plain longest-prefix model computes it.
#[test]
fn random_ipv6_prefix_sets_match_a_longest_prefix_model() {
    let Some(_p) = privileged::require("random_ipv6_prefix_sets_match_a_longest_prefix_model")
    else {
        return;
    };
    let (ebpf, mut deny) = loaded();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    const LENGTHS: [u8; 20] = [
        8, 12, 16, 20, 24, 32, 36, 40, 44, 48, 52, 56, 60, 64, 72, 96, 112, 120, 127, 128,
    ];
    // Six /48s in three /32s and two /16s.
    let clusters: [u128; 6] = [
        0x2001_0db8_0001,
        0x2001_0db8_0002,
        0x2001_0db8_8001,
        0x2001_0db9_0001,
        0x2a00_0001_0001,
        0x2a00_0001_0002,
    ]
    .map(|c: u128| c << 80);
    let near = |rng: &mut Rng| -> u128 {
        let c = clusters[(rng.next_u64() % clusters.len() as u64) as usize];
        // Random bits below the /48, often mostly zero so sources land
        // inside long prefixes.
        let low = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) >> 48;
        match rng.next_u64() % 4 {
            0 => c | (low & !(u128::MAX >> 72)),
            1 => c | (low & !(u128::MAX >> 100)),
            _ => c | low,
        }
    };
    for round in 0..3 {
        let mut prefixes: Vec<SourcePrefix> = (0..120)
            .map(|_| {
                let l = LENGTHS[(rng.next_u64() % LENGTHS.len() as u64) as usize];
                let mask = u128::MAX.checked_shl(128 - u32::from(l)).unwrap_or(0);
                (IpAddr::V6(Ipv6Addr::from(near(&mut rng) & mask)), l)
            })
            .collect();
        prefixes.sort();
        prefixes.dedup();
        let sources: Vec<IpAddr> = (0..600u32)
            .map(|i| {
                let src = if i.is_multiple_of(3) {
                    // A prefix's own address, or one bit past its end.
                    let p = rng.pick(&prefixes);
                    let IpAddr::V6(a) = p.0 else { unreachable!() };
                    let flip = if p.1 == 0 || rng.next_u64().is_multiple_of(2) {
                        0
                    } else {
                        1u128 << (128 - u32::from(p.1))
                    };
                    u128::from(a) ^ flip
                } else {
                    near(&mut rng)
                };
                IpAddr::V6(Ipv6Addr::from(src))
            })
            .collect();
        let want = model_round(&ebpf, &mut deny, round, &prefixes, sources, |s| {
            tcp6(&s.to_string(), POD, ACK)
        });
        assert!(want.len() > 10, "round {round}: too few prefixes hit");
        assert!(
            want.keys().filter(|p| p.1 > 48).count() > 5,
            "round {round}: too few long prefixes hit"
        );
    }
}

/// The IPv6 tables rewritten back and forth between two sets while another
/// thread runs packets, a source's longest prefix replaced in each part of
/// the buckets: a /48 slot by a /32, a /32 by a shorter prefix in the /16
/// buckets, a /128 by a /120, prefixes nested past the looked-up lengths
/// (decided by the trie) by other lengths, a scoped /48 by a scoped /40
/// and a scoped prefix whose scope becomes every destination. Every
/// verdict is the old set's or the new set's: a source both sets drop is
/// never passed mid-update (the new prefixes are written before the gone
/// ones leave, which wait for a grace period).
#[test]
fn ipv6_verdicts_read_during_updates_are_the_old_or_the_new_sets() {
    let Some(_p) =
        privileged::require("ipv6_verdicts_read_during_updates_are_the_old_or_the_new_sets")
    else {
        return;
    };
    let (ebpf, mut deny) = loaded();
    let nested = |base: &str, lengths: &[u8]| -> Vec<SourcePrefix> {
        let bits = u128::from(base.parse::<Ipv6Addr>().unwrap());
        lengths
            .iter()
            .map(|l| {
                let mask = u128::MAX.checked_shl(128 - u32::from(*l)).unwrap_or(0);
                (IpAddr::V6(Ipv6Addr::from(bits & mask)), *l)
            })
            .collect()
    };
    let mut a = unscoped(&[
        p("2001:db8:1::", 48),
        p("2400:1::", 32),
        p("2600::1", 128),
        p("2800:5::", 32),
    ]);
    let mut b = unscoped(&[
        p("2001:db8::", 32),
        p("2400::", 16),
        p("2600::", 120),
        p("2800:5:6::", 48),
    ]);
    a.extend(unscoped(&nested("2a00:1:1::1", &[48, 52, 56, 60, 64, 80])));
    b.extend(unscoped(&nested("2a00:1:1::1", &[50, 54, 58, 62, 66, 82])));
    a.extend([
        (p("2001:dba::", 48), scope(&[POD])),
        (p("2001:dbb::", 48), scope(&[POD])),
    ]);
    b.extend([
        (p("2001:dba::", 40), scope(&[POD])),
        (p("2001:dbb::", 48), DenyScope::Any),
    ]);
    let (pod, other): (IpAddr, IpAddr) = (POD.parse().unwrap(), OTHER_POD.parse().unwrap());
    let mut probes: Vec<(IpAddr, IpAddr, bool)> = Vec::new();
    for s in [
        "2001:db8:1::1",
        "2001:db8:7::1",
        "2400:1::1",
        "2400:2::1",
        "2600::1",
        "2600::2",
        "2800:5:6::1",
        "2800:5:7::1",
        "2a00:1:1::1",
        "2a00:1:1:8000::1",
        "2001:dba::1",
        "2001:dba:1::1",
        "2001:dbb::1",
        "fd00:1::1",
    ] {
        let s: IpAddr = s.parse().unwrap();
        probes.extend([(s, pod, true), (s, pod, false), (s, other, true)]);
    }
    let frame = |s: IpAddr, d: IpAddr, syn: bool| {
        tcp6(&s.to_string(), &d.to_string(), if syn { SYN } else { ACK })
    };
    let checked = verdicts_during_updates(&ebpf, &mut deny, (&a, &b), &probes, frame, 200);
    assert!(checked > 1000, "only {checked} verdicts read");
}
