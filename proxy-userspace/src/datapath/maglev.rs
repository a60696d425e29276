//! Maglev lookup tables for the kernel's backend sets, built by the one
//! Maglev implementation shared with the L7 balancer
//! ([`proxy_common::maglev`]): weights as Cilium applies them, a backend
//! keyed by its address's text so every node builds the same table.
use std::net::SocketAddr;

/// A table of `size` entries (a prime), each the index of a backend in
/// `backends`. `backends` must be non-empty with weights ≥ 1; the caller
/// passes them in a deterministic order (sorted by address).
///
/// Disruption: removing one of N backends changes only the entries that
/// pointed at it plus a small fraction of the others (the paper's Fig. 12).
pub fn table(backends: &[(SocketAddr, u32)], size: u32) -> Vec<u32> {
    assert!(!backends.is_empty(), "maglev table of no backends");
    let perms: Vec<(u64, u64)> = backends
        .iter()
        .map(|(addr, _)| proxy_common::maglev::permutation(addr.to_string().as_bytes(), size))
        .collect();
    let mut next = vec![0u64; backends.len()];
    let mut entry = vec![u32::MAX; size as usize];
    proxy_common::maglev::populate(&perms, |i| backends[i].1, &mut next, &mut entry);
    entry
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
