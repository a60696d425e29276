//! Maglev lookup table population (Eisenbud et al., "Maglev: A Fast and
//! Reliable Software Network Load Balancer", NSDI 2016, §3.4), with weights
//! as Cilium applies them: a backend of weight `w` takes `w` turns per round.
//!
//! Every node builds the same table from the same backends: the
//! permutations depend only on each backend's address, through a fixed
//! (unseeded) hash, and backends are taken in a sorted order. No maintained
//! Rust crate offers a stable-hash Maglev table builder, hence this module.
use std::net::SocketAddr;

/// A table of `size` entries (a prime), each the index of a backend in
/// `backends`. `backends` must be non-empty with weights ≥ 1; the caller
/// passes them in a deterministic order (sorted by address).
///
/// Disruption: removing one of N backends changes only the entries that
/// pointed at it plus a small fraction of the others (the paper's Fig. 12).
pub fn table(backends: &[(SocketAddr, u32)], size: u32) -> Vec<u32> {
    assert!(!backends.is_empty(), "maglev table of no backends");
    let m = size as u64;
    let perms: Vec<(u64, u64)> = backends
        .iter()
        .map(|(addr, _)| {
            let name = addr.to_string();
            let offset = hash(OFFSET_SEED, name.as_bytes()) % m;
            let skip = hash(SKIP_SEED, name.as_bytes()) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; backends.len()];
    let mut entry = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    'rounds: loop {
        for (i, &(offset, skip)) in perms.iter().enumerate() {
            for _ in 0..backends[i].1.max(1) {
                // Next preferred position of backend i still free.
                let mut c = (offset + next[i] * skip) % m;
                while entry[c as usize] != u32::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                entry[c as usize] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'rounds;
                }
            }
        }
    }
    entry
}

const OFFSET_SEED: u64 = 0x6d61_676c_6576_0001;
const SKIP_SEED: u64 = 0x6d61_676c_6576_0002;

/// FNV-1a over `bytes` from a seeded basis, finished with MurmurHash3's
/// `fmix64` so nearby addresses spread over the whole range. Stable across
/// Rust versions and machines (unlike `std`'s `DefaultHasher`).
fn hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u32 = 16_381;

    fn backends(n: usize) -> Vec<(SocketAddr, u32)> {
        (0..n)
            .map(|i| {
                (
                    format!("10.0.{}.{}:8080", i / 250, i % 250 + 1)
                        .parse()
                        .unwrap(),
                    1,
                )
            })
            .collect()
    }

    fn counts(t: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &e in t {
            c[e as usize] += 1;
        }
        c
    }

    #[test]
    fn every_entry_is_filled_and_shares_are_even() {
        let t = table(&backends(10), M);
        assert_eq!(t.len(), M as usize);
        let c = counts(&t, 10);
        // Maglev fills in turns, so shares differ by at most one turn's worth.
        let (min, max) = (*c.iter().min().unwrap(), *c.iter().max().unwrap());
        assert!(max - min <= 1, "uneven shares {c:?}");
    }

    #[test]
    fn same_backends_same_table() {
        assert_eq!(table(&backends(7), M), table(&backends(7), M));
    }

    #[test]
    fn weights_set_the_shares() {
        let mut b = backends(2);
        b[0].1 = 4;
        let c = counts(&table(&b, M), 2);
        // 4:1 turns per round: exactly 4/5 of the entries, up to one round.
        let want = (M as usize * 4) / 5;
        assert!(c[0].abs_diff(want) <= 4, "{c:?}");
    }

    #[test]
    fn removing_one_of_ten_moves_little_else() {
        let all = backends(10);
        let before = table(&all, M);
        let removed = 3usize;
        let rest: Vec<_> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != removed)
            .map(|(_, b)| *b)
            .collect();
        let after = table(&rest, M);
        // Map "after" indices back to the original backend indices.
        let orig = |i: u32| if (i as usize) < removed { i } else { i + 1 };
        let mut moved_other = 0;
        for (b, a) in before.iter().zip(&after) {
            let a = orig(*a);
            if *b as usize == removed {
                assert_ne!(a as usize, removed);
            } else if *b != a {
                moved_other += 1;
            }
        }
        // The paper reports a few percent at most for small tables; bound 5%.
        assert!(
            moved_other < M as usize / 20,
            "{moved_other} entries of surviving backends moved"
        );
    }
}
