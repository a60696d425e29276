//! Fixtures of the XDP deny filter's tests (`kernel_xdp_deny4`,
//! `kernel_xdp_deny6`) both address families share: the loaded program and
//! its tables, one verdict, a longest-prefix model of the deny rules
//! (scopes included, as `DenyTries::sync_scoped` documents them), the
//! random-set rounds checked against it and the verdicts read while the
//! tables are rewritten.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use strait::datapath::{DenyScope, DenyTries, SourcePrefix};

use crate::xdp::{eth, run, tcp, XDP_DROP, XDP_PASS};

/// The TCP SYN flag.
pub const SYN: u8 = 0x02;
/// The TCP ACK flag.
pub const ACK: u8 = 0x10;

/// Ethernet + IPv4 or IPv6 + TCP (no payload, checksums 0) from
/// `src`:12345 to `dst`:80 with `flags`; IPv4 with DF, TTL 64; IPv6 hop
/// limit 64.
///
/// Panics: `src` and `dst` are of different families.
pub fn tcp_frame(src: IpAddr, dst: IpAddr, flags: u8) -> Vec<u8> {
    let l4 = tcp(12345, 80, flags, &[]);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut f = eth([0x08, 0x00]);
            f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            f.extend(l4);
            f
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut f = eth([0x86, 0xdd]);
            f.extend_from_slice(&[0x60, 0, 0, 0, 0, l4.len() as u8, 6, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            f.extend(l4);
            f
        }
        _ => panic!("{src} and {dst} are of different families"),
    }
}

/// A fresh object with `xdp_deny` loaded (not attached) and its tables.
///
/// Panics: the object or the program does not load.
pub fn loaded() -> (aya::Ebpf, DenyTries) {
    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::load_xdp_deny(&mut ebpf).unwrap();
    let deny = DenyTries::take(&mut ebpf).unwrap();
    (ebpf, deny)
}

/// Runs `frame` through `xdp_deny`: the verdict; a passed frame must come
/// out byte for byte as it went in.
///
/// Panics: the test run fails, or a passed frame was changed.
pub fn verdict(ebpf: &aya::Ebpf, frame: &[u8]) -> u32 {
    let prog: &aya::programs::Xdp = ebpf.program("xdp_deny").unwrap().try_into().unwrap();
    let (v, out) = run(prog, frame);
    if v == XDP_PASS {
        assert_eq!(out, frame, "a passed frame was changed");
    }
    v
}

/// xorshift64*: a fixed pseudo-random sequence (the tests are
/// reproducible).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// One of `items`, uniformly.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// Whether prefix `p` contains `src` (false across families).
pub fn contains(p: &SourcePrefix, src: IpAddr) -> bool {
    match (p.0, src) {
        (IpAddr::V4(a), IpAddr::V4(s)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(p.1)).unwrap_or(0);
            u32::from(s) & mask == u32::from(a)
        }
        (IpAddr::V6(a), IpAddr::V6(s)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(p.1)).unwrap_or(0);
            u128::from(s) & mask == u128::from(a)
        }
        _ => false,
    }
}

/// The longest prefix of `set` containing `src`.
pub fn longest(set: &[SourcePrefix], src: IpAddr) -> Option<SourcePrefix> {
    set.iter()
        .filter(|p| contains(p, src))
        .max_by_key(|p| p.1)
        .copied()
}

/// The verdict `rules` give a TCP segment from `src` to `dst` (`syn`: a SYN
/// without ACK), modelled plainly: no prefix contains `src` → pass; one
/// that does is [`DenyScope::Any`] → drop; else drop only a SYN to a
/// destination one of them protects (the kernel looks up the longest,
/// which holds the scopes of every prefix containing it).
pub fn model(rules: &[(SourcePrefix, DenyScope)], src: IpAddr, dst: IpAddr, syn: bool) -> u32 {
    for (_, scope) in rules.iter().filter(|(p, _)| contains(p, src)) {
        match scope {
            DenyScope::Any => return XDP_DROP,
            DenyScope::To(d) if syn && d.contains(&dst) => return XDP_DROP,
            DenyScope::To(_) => {}
        }
    }
    XDP_PASS
}

/// Drop counts since `before` (a [`DenyTries::drops`]), the prefixes with
/// none left out.
pub fn counted_since(
    deny: &DenyTries,
    before: &[(SourcePrefix, u64)],
) -> BTreeMap<SourcePrefix, u64> {
    deny.drops()
        .into_iter()
        .map(|(p, n)| {
            let b = before.iter().find(|(q, _)| *q == p).map_or(0, |(_, n)| *n);
            (p, n - b)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// One round of a random-set test: `set` synced (every prefix
/// [`DenyScope::Any`]), then each of `sources` run as `frame(source)`:
/// dropped exactly when a prefix contains it, and each drop counted on the
/// longest such prefix, as [`longest`] computes it. Returns the drops
/// counted per prefix (for the caller's checks of what the round hit).
///
/// Panics: a verdict or a counter differs from the model's (`round` names
/// the round).
pub fn model_round(
    ebpf: &aya::Ebpf,
    deny: &mut DenyTries,
    round: usize,
    set: &[SourcePrefix],
    sources: impl IntoIterator<Item = IpAddr>,
    frame: impl Fn(IpAddr) -> Vec<u8>,
) -> BTreeMap<SourcePrefix, u64> {
    deny.sync(set).unwrap();
    let before = deny.drops();
    let mut want: BTreeMap<SourcePrefix, u64> = BTreeMap::new();
    for src in sources {
        let got = verdict(ebpf, &frame(src));
        match longest(set, src) {
            Some(h) => {
                assert_eq!(got, XDP_DROP, "round {round}: {src} is in {h:?}");
                *want.entry(h).or_default() += 1;
            }
            None => assert_eq!(got, XDP_PASS, "round {round}: {src} is in no prefix"),
        }
    }
    assert_eq!(counted_since(deny, &before), want, "round {round}");
    want
}

/// Deny rules as `DenyTries::sync_scoped` takes them.
pub type Rules = [(SourcePrefix, DenyScope)];

/// `DenyScope::Any` for each prefix of `set`.
pub fn unscoped(set: &[SourcePrefix]) -> Vec<(SourcePrefix, DenyScope)> {
    set.iter().map(|p| (*p, DenyScope::Any)).collect()
}

/// The tables synced to `a` and `b` in turn, `syncs` times, while another
/// thread runs each of `probes` (source, destination, SYN or not) as
/// `frame(probe)` in a loop: every verdict is one that `a` or `b` gives
/// ([`model`]) — in particular a probe both sets drop is never passed
/// mid-update, and one both pass is never dropped. Returns how many
/// verdicts were read.
///
/// Panics: a verdict neither set gives; fewer than two probes on which the
/// sets agree to drop, or fewer than two on which they disagree (the test
/// would not exercise an update); a sync fails.
pub fn verdicts_during_updates(
    ebpf: &aya::Ebpf,
    deny: &mut DenyTries,
    (a, b): (&Rules, &Rules),
    probes: &[(IpAddr, IpAddr, bool)],
    frame: impl Fn(IpAddr, IpAddr, bool) -> Vec<u8> + Sync,
    syncs: usize,
) -> u64 {
    let allowed: Vec<[u32; 2]> = probes
        .iter()
        .map(|&(s, d, syn)| [model(a, s, d, syn), model(b, s, d, syn)])
        .collect();
    let both_drop = allowed.iter().filter(|v| *v == &[XDP_DROP; 2]).count();
    let differ = allowed.iter().filter(|v| v[0] != v[1]).count();
    assert!(
        both_drop >= 2 && differ >= 2,
        "probes: {both_drop} dropped by both sets, {differ} where they differ"
    );
    let frames: Vec<Vec<u8>> = probes.iter().map(|&(s, d, syn)| frame(s, d, syn)).collect();
    deny.sync_scoped(a).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for ((f, ok), probe) in frames.iter().zip(&allowed).zip(probes) {
                    let got = verdict(ebpf, f);
                    assert!(
                        ok.contains(&got),
                        "{probe:?}: verdict {got} mid-update, the sets give {ok:?}"
                    );
                    n += 1;
                }
            }
            n
        });
        for i in 0..syncs {
            let result = deny.sync_scoped(if i % 2 == 0 { b } else { a });
            if result.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            result.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap()
    })
}
