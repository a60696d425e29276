//! Tier 2: the IPv6 source deny of `xdp_deny` through BPF_PROG_TEST_RUN on
//! packet fixtures, exact verdicts and output bytes: bucket slot hits, the
//! exact-length lookups behind them (nested lengths, scoped inside
//! unscoped and the reverse), misses beside every prefix, and the trie
//! when more lengths are nested than the program looks up.
use std::net::{IpAddr, Ipv6Addr};

use strait::datapath::{DenyScope, DenyTries, SourcePrefix};
use strait_tests::privileged;
use strait_tests::xdp::run;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// The workload a scoped prefix protects, and another one.
const POD: &str = "fd00::5";
const OTHER_POD: &str = "fd00::6";

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

fn p(s: &str, l: u8) -> SourcePrefix {
    (s.parse::<IpAddr>().unwrap(), l)
}

/// An Ethernet + IPv6 + TCP frame from `src` to `dst`:80 with `flags`.
fn tcp6(src: &str, dst: &str, flags: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
    f.extend_from_slice(&v6(src));
    f.extend_from_slice(&v6(dst));
    f.extend_from_slice(&[
        0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    f
}

fn scope(ips: &[&str]) -> DenyScope {
    DenyScope::To(ips.iter().map(|s| s.parse().unwrap()).collect())
}

/// Runs `frame` through `xdp_deny`: the verdict; a passed frame must come
/// out byte for byte as it went in.
fn verdict(ebpf: &aya::Ebpf, frame: &[u8]) -> u32 {
    let prog: &aya::programs::Xdp = ebpf.program("xdp_deny").unwrap().try_into().unwrap();
    let (v, out) = run(prog, frame);
    if v == XDP_PASS {
        assert_eq!(out, frame, "a passed frame was changed");
    }
    v
}

fn loaded() -> (aya::Ebpf, DenyTries) {
    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::load_xdp_deny(&mut ebpf).unwrap();
    let deny = DenyTries::take(&mut ebpf).unwrap();
    (ebpf, deny)
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

/// xorshift64*: a fixed pseudo-random sequence (the test is reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
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
        let c = clusters[(rng.next() % clusters.len() as u64) as usize];
        // Random bits below the /48, often mostly zero so sources land
        // inside long prefixes.
        let low = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 48;
        match rng.next() % 4 {
            0 => c | (low & !(u128::MAX >> 72)),
            1 => c | (low & !(u128::MAX >> 100)),
            _ => c | low,
        }
    };
    for round in 0..3 {
        let mut prefixes: Vec<SourcePrefix> = (0..120)
            .map(|_| {
                let l = LENGTHS[(rng.next() % LENGTHS.len() as u64) as usize];
                let mask = u128::MAX.checked_shl(128 - u32::from(l)).unwrap_or(0);
                (IpAddr::V6(Ipv6Addr::from(near(&mut rng) & mask)), l)
            })
            .collect();
        prefixes.sort();
        prefixes.dedup();
        deny.sync(&prefixes).unwrap();
        let before = deny.drops();
        let contains = |(a, l): &SourcePrefix, src: u128| {
            let IpAddr::V6(a) = a else { unreachable!() };
            let mask = u128::MAX.checked_shl(128 - u32::from(*l)).unwrap_or(0);
            src & mask == u128::from(*a)
        };
        let mut want: std::collections::BTreeMap<SourcePrefix, u64> = Default::default();
        for i in 0..600u32 {
            let src = if i.is_multiple_of(3) {
                // A prefix's own address, or one bit past its end.
                let p = prefixes[(rng.next() % prefixes.len() as u64) as usize];
                let IpAddr::V6(a) = p.0 else { unreachable!() };
                let flip = if p.1 == 0 || rng.next().is_multiple_of(2) {
                    0
                } else {
                    1u128 << (128 - u32::from(p.1))
                };
                u128::from(a) ^ flip
            } else {
                near(&mut rng)
            };
            let longest = prefixes
                .iter()
                .filter(|p| contains(p, src))
                .max_by_key(|p| p.1);
            let s = Ipv6Addr::from(src).to_string();
            let got = verdict(&ebpf, &tcp6(&s, POD, ACK));
            match longest {
                Some(p) => {
                    assert_eq!(got, XDP_DROP, "round {round}: {s} is in {p:?}");
                    *want.entry(*p).or_default() += 1;
                }
                None => assert_eq!(got, XDP_PASS, "round {round}: {s} is in no prefix"),
            }
        }
        let after = deny.drops();
        let counted: std::collections::BTreeMap<SourcePrefix, u64> = after
            .iter()
            .map(|(p, n)| {
                let b = before.iter().find(|(q, _)| q == p).map_or(0, |(_, n)| *n);
                (*p, n - b)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(counted, want, "round {round}");
        assert!(want.len() > 10, "round {round}: too few prefixes hit");
        assert!(
            want.keys().filter(|p| p.1 > 48).count() > 5,
            "round {round}: too few long prefixes hit"
        );
    }
}
