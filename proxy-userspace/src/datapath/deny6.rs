//! The IPv6 deny prefixes' exact-length tables from userspace
//! ([`proxy_common::deny6`]): `DENY_V6_LEN` (every prefix by exact length
//! and address) and `DENY_V6_BUCKETS` (per hashed /48, /32 and /16: the
//! longest prefix in a slot the program compares in place, and the other
//! lengths to look up), kept beside the `DENY_V6` trie by
//! [`super::DenyTries`].
//!
//! A bucket is changed in steps that keep every prefix findable by a
//! program reading it mid-write (see [`proxy_common::DenyV6Bucket`]):
//! [`Buckets6::prepare`] before the new prefixes are written (lengths made
//! the union of old and new, a slot that changes cleared),
//! [`Buckets6::finish`] after (new slot address, then the slot, then the
//! exact lengths).
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use anyhow::Context;
use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use proxy_common::{
    deny_v6_buckets, deny_v6_length_list, deny_v6_list_lengths, DenyV6Bucket, DenyV6Key,
};

use super::xdp::SourcePrefix;

/// A set of IPv6 prefix lengths (bits 0–128) and whether more exist than
/// a list read back named (bit 129: it ended in
/// [`proxy_common::DENY_V6_LIST_MORE`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Lengths6([u64; 3]);

impl Lengths6 {
    pub(super) const MORE: u32 = 129;

    pub(super) fn add(&mut self, bit: u32) {
        self.0[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    pub(super) fn has(&self, bit: u32) -> bool {
        self.0[(bit / 64) as usize] & 1 << (bit % 64) != 0
    }

    pub(super) fn union(self, o: Self) -> Self {
        Self([self.0[0] | o.0[0], self.0[1] | o.0[1], self.0[2] | o.0[2]])
    }

    /// The set a length list names.
    pub(super) fn decode(list: u64) -> Self {
        let (lengths, n, more) = deny_v6_list_lengths(list);
        let mut out = Self::default();
        for l in &lengths[..n] {
            out.add(u32::from(*l));
        }
        if more {
            out.add(Self::MORE);
        }
        out
    }

    /// The length list of the set.
    pub(super) fn encode(&self) -> u64 {
        deny_v6_length_list(
            (0..=128u32).filter(|l| self.has(*l)).map(|l| l as u8),
            self.has(Self::MORE),
        )
    }
}

/// The key of prefix `a`/`len` in `DENY_V6_LEN`.
pub(super) fn len_key(a: Ipv6Addr, len: u8) -> DenyV6Key {
    DenyV6Key::new(u128::from(a), u32::from(len))
}

/// The `DENY_V6_BUCKETS` entries `prefixes` (prefix → value as in the
/// trie) need: a prefix of 48 bits or more goes to its /48's bucket, one of
/// 32–47 bits to its /32's, a shorter one to the bucket of every /16 it
/// overlaps ([`deny_v6_buckets`] names the buckets a source reads). In each
/// bucket the longest prefix (then the lowest address) takes the slot; the
/// others' lengths are listed.
pub(super) fn buckets<'a>(
    prefixes: impl Iterator<Item = (&'a SourcePrefix, u32)>,
) -> HashMap<u32, DenyV6Bucket> {
    let mut members: HashMap<u32, Vec<(u8, u128, u32)>> = HashMap::new();
    for ((addr, len), value) in prefixes {
        let IpAddr::V6(a) = addr else { continue };
        let bits = u128::from(*a);
        let hi = (bits >> 64) as u64;
        let [b48, b32, b16] = deny_v6_buckets(hi);
        let entry = (*len, bits, value);
        if *len >= 48 {
            members.entry(b48).or_default().push(entry);
        } else if *len >= 32 {
            members.entry(b32).or_default().push(entry);
        } else if *len >= 16 {
            members.entry(b16).or_default().push(entry);
        } else {
            let first = (hi >> 48) as u32;
            for top16 in first..first + (1u32 << (16 - len)) {
                let [_, _, b] = deny_v6_buckets(u64::from(top16) << 48);
                let list = members.entry(b).or_default();
                // A short prefix overlaps many /16s that may share a bucket.
                if !list.contains(&entry) {
                    list.push(entry);
                }
            }
        }
    }
    members
        .into_iter()
        .map(|(i, mut m)| {
            // Longest first, then lowest address.
            m.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let (len, bits, value) = m[0];
            let key = DenyV6Key::new(bits, u32::from(len));
            let mut others = Lengths6::default();
            for (l, _, _) in &m[1..] {
                others.add(u32::from(*l));
            }
            (
                i,
                DenyV6Bucket {
                    lengths: others.encode(),
                    hi: key.hi,
                    lo: key.lo,
                    slot: DenyV6Bucket::slot_word(u32::from(len), value),
                },
            )
        })
        .collect()
}

/// The length of a slot word's prefix.
fn slot_len(slot: u64) -> u32 {
    (slot as u32).wrapping_sub(1).min(128)
}

/// Whether two buckets hold the same slot prefix and value.
fn same_slot(a: &DenyV6Bucket, b: &DenyV6Bucket) -> bool {
    (a.slot, a.hi, a.lo) == (b.slot, b.hi, b.lo)
}

/// `DENY_V6_LEN` and `DENY_V6_BUCKETS`, with the buckets as written.
pub(super) struct Buckets6 {
    len: BpfHashMap<MapData, DenyV6Key, u32>,
    buckets: Array<MapData, DenyV6Bucket>,
    /// Non-zero buckets as written.
    written: HashMap<u32, DenyV6Bucket>,
}

impl Buckets6 {
    /// The two maps, taken out of a loaded object.
    ///
    /// Errors: a map is missing or of another type.
    pub fn take(ebpf: &mut aya::Ebpf) -> anyhow::Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} missing from the eBPF object"))
        };
        Ok(Self {
            len: BpfHashMap::try_from(take(proxy_common::DENY_V6_LEN)?)?,
            buckets: Array::try_from(take(proxy_common::DENY_V6_BUCKETS)?)?,
            written: HashMap::new(),
        })
    }

    /// Adopts what the maps hold (pinned by an earlier run) for the IPv6
    /// prefixes of `counters` (prefix → value, as recovered from the
    /// trie): their `DENY_V6_LEN` entries written (new to this build when
    /// an earlier one filled only the trie), the buckets read and made to
    /// hold exactly them.
    ///
    /// Errors: a map cannot be read or written.
    pub fn recover<'a>(
        &mut self,
        counters: impl Iterator<Item = (&'a SourcePrefix, u32)> + Clone,
    ) -> anyhow::Result<()> {
        for ((addr, len), value) in counters.clone() {
            if let IpAddr::V6(a) = addr {
                self.insert(*a, *len, value)?;
            }
        }
        self.written.clear();
        for i in 0..proxy_common::DENY_V6_BUCKET_ENTRIES {
            let b = self.buckets.get(&i, 0).context("reading DENY_V6_BUCKETS")?;
            if b != DenyV6Bucket::default() {
                self.written.insert(i, b);
            }
        }
        let want = buckets(counters);
        self.prepare(&want)?;
        self.finish(&want)
    }

    /// Writes prefix `a`/`len` with `value` into `DENY_V6_LEN`.
    ///
    /// Errors: the map is full.
    pub fn insert(&mut self, a: Ipv6Addr, len: u8, value: u32) -> anyhow::Result<()> {
        self.len
            .insert(len_key(a, len), value, 0)
            .context("DENY_V6_LEN is full")
    }

    /// Removes prefix `a`/`len` from `DENY_V6_LEN` (absent: nothing).
    pub fn remove(&mut self, a: Ipv6Addr, len: u8) {
        let _ = self.len.remove(&len_key(a, len));
    }

    fn write(&mut self, i: u32, b: DenyV6Bucket) -> anyhow::Result<()> {
        self.buckets
            .set(i, b, 0)
            .with_context(|| format!("writing DENY_V6_BUCKETS[{i}]"))?;
        if b == DenyV6Bucket::default() {
            self.written.remove(&i);
        } else {
            self.written.insert(i, b);
        }
        Ok(())
    }

    fn apply(&mut self, writes: Vec<(u32, DenyV6Bucket)>) -> anyhow::Result<()> {
        for (i, b) in writes {
            self.write(i, b)?;
        }
        Ok(())
    }

    /// Before the prefixes of `want` are written to `DENY_V6_LEN`:
    /// [`prepare_writes`].
    ///
    /// Errors: a bucket cannot be written.
    pub fn prepare(&mut self, want: &HashMap<u32, DenyV6Bucket>) -> anyhow::Result<()> {
        let writes = prepare_writes(&self.written, want);
        self.apply(writes)
    }

    /// After the prefixes of `want` are in `DENY_V6_LEN`:
    /// [`finish_writes`].
    ///
    /// Errors: a bucket cannot be written.
    pub fn finish(&mut self, want: &HashMap<u32, DenyV6Bucket>) -> anyhow::Result<()> {
        let writes = finish_writes(&self.written, want);
        self.apply(writes)
    }
}

/// Buckets in either map, in index order.
fn touched(a: &HashMap<u32, DenyV6Bucket>, b: &HashMap<u32, DenyV6Bucket>) -> Vec<u32> {
    let mut out: Vec<u32> = a.keys().chain(b.keys()).copied().collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The bucket writes, in order, that take `written` towards `want` before
/// the new prefixes are written: every bucket that changes lists the
/// union of its old and new lengths and slot lengths (a lookup may try a
/// length with nothing in it, never skip one that has a prefix), then a
/// slot that changes is cleared. Each write changes one word.
pub(super) fn prepare_writes(
    written: &HashMap<u32, DenyV6Bucket>,
    want: &HashMap<u32, DenyV6Bucket>,
) -> Vec<(u32, DenyV6Bucket)> {
    let mut out = Vec::new();
    for i in touched(written, want) {
        let old = written.get(&i).copied().unwrap_or_default();
        let new = want.get(&i).copied().unwrap_or_default();
        if old == new {
            continue;
        }
        let mut union = Lengths6::decode(old.lengths).union(Lengths6::decode(new.lengths));
        for b in [&old, &new] {
            if b.slot != 0 {
                union.add(slot_len(b.slot));
            }
        }
        let mut cur = old;
        cur.lengths = union.encode();
        if cur != old {
            out.push((i, cur));
        }
        if cur.slot != 0 && !same_slot(&cur, &new) {
            cur.slot = 0;
            out.push((i, cur));
        }
    }
    out
}

/// The bucket writes, in order, that make `written` (as left by
/// [`prepare_writes`]) exactly `want` once the new prefixes are in
/// `DENY_V6_LEN`: the slot's address (slot still clear), then the slot,
/// then the exact lengths (all zero for an empty bucket). Each write
/// changes one word, or the address words while the slot is clear.
pub(super) fn finish_writes(
    written: &HashMap<u32, DenyV6Bucket>,
    want: &HashMap<u32, DenyV6Bucket>,
) -> Vec<(u32, DenyV6Bucket)> {
    let mut out = Vec::new();
    for i in touched(written, want) {
        let mut cur = written.get(&i).copied().unwrap_or_default();
        let new = want.get(&i).copied().unwrap_or_default();
        if cur == new {
            continue;
        }
        if new.slot != 0 && !same_slot(&cur, &new) {
            if cur.slot != 0 {
                cur.slot = 0;
                out.push((i, cur));
            }
            cur.hi = new.hi;
            cur.lo = new.lo;
            out.push((i, cur));
            cur.slot = new.slot;
            out.push((i, cur));
        } else if new.slot == 0 && cur.slot != 0 {
            cur.slot = 0;
            out.push((i, cur));
        }
        if cur != new {
            out.push((i, new));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str, l: u8) -> SourcePrefix {
        (s.parse().unwrap(), l)
    }

    /// What the program finds for `src` in `b` with `exact` the prefixes
    /// of `DENY_V6_LEN`: the value, or `Err(true)` for "ask the trie",
    /// `Err(false)` for not denied — `xdp_deny`'s IPv6 walk, in Rust.
    fn find(
        b: &HashMap<u32, DenyV6Bucket>,
        exact: &HashMap<DenyV6Key, u32>,
        src: &str,
    ) -> Result<u32, bool> {
        let bits = u128::from(src.parse::<Ipv6Addr>().unwrap());
        let (hi, lo) = ((bits >> 64) as u64, bits as u64);
        let mut n = 0;
        for i in deny_v6_buckets(hi) {
            let e = b.get(&i).copied().unwrap_or_default();
            if e.slot != 0 {
                let (mhi, mlo) = proxy_common::deny_v6_masks(slot_len(e.slot));
                if hi & mhi == e.hi && lo & mlo == e.lo {
                    return Ok((e.slot >> 32) as u32);
                }
            }
            let (lengths, count, more) = deny_v6_list_lengths(e.lengths);
            for l in &lengths[..count] {
                if n == proxy_common::DENY_V6_MAX_HASHED_LENGTHS {
                    return Err(true);
                }
                let k = DenyV6Key::new(bits, u32::from(*l));
                if let Some(v) = exact.get(&k) {
                    return Ok(*v);
                }
                n += 1;
            }
            if more {
                return Err(true);
            }
        }
        Err(false)
    }

    fn model(
        prefixes: &[(SourcePrefix, u32)],
    ) -> (HashMap<u32, DenyV6Bucket>, HashMap<DenyV6Key, u32>) {
        let b = buckets(prefixes.iter().map(|(p, v)| (p, *v)));
        let exact = prefixes
            .iter()
            .filter_map(|((a, l), v)| match a {
                IpAddr::V6(a) => Some((len_key(*a, *l), *v)),
                IpAddr::V4(_) => None,
            })
            .collect();
        (b, exact)
    }

    #[test]
    fn a_bucket_of_one_prefix_decides_by_its_slot_and_nested_ones_longest_first() {
        let prefixes = [
            (p("2001:db8:bad::", 48), 1),
            (p("2001:db8:bad:100::", 56), 2),
            (p("2001:db8:5::7", 128), 3),
            (p("2001:db9::", 32), 4),
            (p("2a00::", 10), 5),
            (p("3000::", 20), 6),
            (p("192.0.2.0", 24), 7),
        ];
        let (b, exact) = model(&prefixes);
        for (src, want) in [
            ("2001:db8:bad::1", 1),
            ("2001:db8:bad:ff::9", 1),
            ("2001:db8:bad:1ff::9", 2),
            ("2001:db8:5::7", 3),
            ("2001:db9:1234::1", 4),
            ("2a00::1", 5),
            ("2a3f:ffff::1", 5),
            ("3000:fff::1", 6),
        ] {
            assert_eq!(find(&b, &exact, src), Ok(want), "{src}");
        }
        for src in [
            "2001:db8:bae::1",
            "2001:db8:5::8",
            "2001:db7::1",
            "2a40::1",
            "3001::1",
            "fd00::1",
        ] {
            assert_eq!(find(&b, &exact, src), Err(false), "{src}");
        }
        // The /56 holds the slot of the shared /48 bucket, the /48 is listed.
        let [b48, _, _] = deny_v6_buckets(0x2001_0db8_0bad_0000);
        assert_eq!(slot_len(b[&b48].slot), 56);
        assert_eq!(deny_v6_list_lengths(b[&b48].lengths).1, 1);
        // A /10 is in the buckets of its 64 /16s (fewer if they collide);
        // the IPv4 prefix in none.
        assert!(b.len() >= 6 + 60, "{}", b.len());
    }

    #[test]
    fn more_lengths_than_a_list_holds_or_the_budget_end_in_the_trie() {
        let lengths = [48u8, 52, 56, 60, 64, 80, 96, 112, 120, 128];
        let prefixes: Vec<(SourcePrefix, u32)> = lengths
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let IpAddr::V6(a) = p("2001:db8:bad:1234:5678::9", 0).0 else {
                    unreachable!()
                };
                let bits = u128::from(a) & !(u128::MAX.checked_shr(u32::from(*l)).unwrap_or(0));
                ((IpAddr::V6(Ipv6Addr::from(bits)), *l), i as u32)
            })
            .collect();
        let (b, exact) = model(&prefixes);
        // The /128 is the slot: a hit there is decided in place.
        assert_eq!(find(&b, &exact, "2001:db8:bad:1234:5678::9"), Ok(9));
        // Next to it: /120 … /96 looked up (four), then the trie.
        assert_eq!(find(&b, &exact, "2001:db8:bad:1234:5678::a"), Ok(8));
        assert_eq!(find(&b, &exact, "2001:db8:bad:1234::1"), Err(true));
        let [b48, _, _] = deny_v6_buckets(0x2001_0db8_0bad_1234);
        let (listed, n, more) = deny_v6_list_lengths(b[&b48].lengths);
        assert_eq!(
            (&listed[..n], more),
            (&[120, 112, 96, 80, 64, 60, 56][..], true)
        );
    }

    #[test]
    fn length_sets_round_trip_and_keep_more_through_a_union() {
        let mut one = Lengths6::default();
        one.add(48);
        one.add(0);
        one.add(128);
        assert_eq!(Lengths6::decode(one.encode()), one);
        let mut many = Lengths6::default();
        for l in 40..60 {
            many.add(l);
        }
        let read = Lengths6::decode(many.encode());
        assert!(read.has(Lengths6::MORE));
        assert!(read.union(one).has(Lengths6::MORE));
    }

    /// Every bucket state a program can read while one set of prefixes
    /// replaces another: after each write, and with each write torn into
    /// any mix of its words with the previous state's.
    #[test]
    fn every_state_between_two_sets_finds_the_kept_prefixes_and_nothing_else() {
        let old = [
            (p("2001:db8:bad::", 48), 1),
            (p("2001:db8:bad:100::", 56), 2),
            (p("2001:db8:5::7", 128), 3),
            (p("2001:db9::", 32), 4),
            (p("2a00::", 10), 5),
        ];
        let new = [
            // Kept, one with a new value (its scope changed).
            (p("2001:db8:bad::", 48), 1),
            (p("2001:db8:5::7", 128), 13),
            (p("2a00::", 10), 5),
            // Added: a longer prefix takes the /48 bucket's slot, another
            // joins the /16 buckets.
            (p("2001:db8:bad:100:1::", 80), 6),
            (p("2a01::", 16), 7),
        ];
        let (b_old, x_old) = model(&old);
        let (b_new, x_new) = model(&new);
        // DENY_V6_LEN during the change: the old prefixes while the
        // buckets are prepared, the new and changed ones added before they
        // are finished; the gone ones leave after (`DenyTries::sync_scoped`).
        let x_mid = x_old.clone();
        let mut x_end = x_old.clone();
        x_end.extend(x_new.iter().map(|(k, v)| (*k, *v)));
        let mut state = b_old.clone();
        let mut states = vec![(state.clone(), x_mid.clone())];
        let step = |state: &mut HashMap<u32, DenyV6Bucket>,
                    writes: Vec<(u32, DenyV6Bucket)>,
                    x: &HashMap<DenyV6Key, u32>,
                    states: &mut Vec<_>| {
            for (i, b) in writes {
                let before = state.get(&i).copied().unwrap_or_default();
                // The write torn: each of the four words old or new.
                for mask in 0..16u8 {
                    let pick = |bit: u8, n: u64, o: u64| if mask & bit != 0 { n } else { o };
                    let torn = DenyV6Bucket {
                        lengths: pick(1, b.lengths, before.lengths),
                        hi: pick(2, b.hi, before.hi),
                        lo: pick(4, b.lo, before.lo),
                        slot: pick(8, b.slot, before.slot),
                    };
                    let mut s = state.clone();
                    s.insert(i, torn);
                    states.push((s, x.clone()));
                }
                state.insert(i, b);
            }
        };
        let w = prepare_writes(&state, &b_new);
        step(&mut state, w, &x_mid, &mut states);
        let w = finish_writes(&state, &b_new);
        step(&mut state, w, &x_end, &mut states);
        state.retain(|_, b| *b != DenyV6Bucket::default());
        assert_eq!(state, b_new);
        for (s, x) in &states {
            for (src, allowed) in [
                ("2001:db8:bad::1", &[1][..]),
                ("2001:db8:5::7", &[3, 13]),
                ("2a00::1", &[5]),
                ("2a3f::1", &[5]),
            ] {
                let got = find(s, x, src);
                assert!(
                    matches!(got, Ok(v) if allowed.contains(&v)) || got == Err(true),
                    "{src}: {got:?} in {s:?}"
                );
            }
            // Sources in a gone or new prefix inside a kept one: its value
            // or the kept one's, never passed.
            for (src, allowed) in [
                ("2001:db8:bad:100::9", &[1, 2][..]),
                ("2001:db8:bad:100:1::9", &[1, 2, 6]),
                ("2a01::1", &[5, 7]),
            ] {
                let got = find(s, x, src);
                assert!(
                    matches!(got, Ok(v) if allowed.contains(&v)) || got == Err(true),
                    "{src}: {got:?}"
                );
            }
            // In a gone prefix only: its value or passed.
            let got = find(s, x, "2001:db9::1");
            assert!(matches!(got, Ok(4) | Err(_)), "{got:?}");
            for src in ["2001:db8:bae::1", "fd00::1", "2001:db8:5::8"] {
                assert!(find(s, x, src).is_err(), "{src}");
            }
        }
    }
}
