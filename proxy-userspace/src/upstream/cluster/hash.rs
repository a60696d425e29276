//! Consistent-hash lookup tables for `consistentHash`: Envoy's ring hash
//! (`ringHash.minimumRingSize`, default 1024) and Maglev
//! (`maglev.tableSize`, default 65537). Built once per snapshot; a lookup is
//! a binary search (ring) or an index (Maglev).
//!
//! Hand-written: the crates that exist (`hashring`, `maglev`) do not expose
//! skipping unhealthy hosts, which Envoy's lookup does.
use std::sync::Arc;

use super::endpoint::Endpoint;

/// 64-bit FNV-1a: stable across processes and nodes, so every node maps a
/// key to the same host.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A consistent-hash table over a cluster's endpoint indexes.
#[derive(Debug)]
pub enum HashTable {
    /// Sorted `(hash, endpoint index)` points.
    Ring(Vec<(u64, u32)>),
    /// Maglev permutation table of endpoint indexes (prime size).
    Maglev(Vec<u32>),
}

impl HashTable {
    /// Ring hash with at least `min_size` points spread evenly over hosts.
    pub fn ring(eps: &[Arc<Endpoint>], min_size: usize) -> Self {
        if eps.is_empty() {
            return Self::Ring(Vec::new());
        }
        let per_host = min_size.div_ceil(eps.len()).max(1);
        let mut ring = Vec::with_capacity(per_host * eps.len());
        for (i, ep) in eps.iter().enumerate() {
            let name = ep.addr.to_string();
            for r in 0..per_host {
                ring.push((fnv1a(format!("{name}_{r}").as_bytes()), i as u32));
            }
        }
        ring.sort_unstable();
        Self::Ring(ring)
    }

    /// Maglev table of `size` entries (should be prime), Maglev paper §3.4,
    /// from [`proxy_common::maglev`] (the builder the kernel tables use).
    pub fn maglev(eps: &[Arc<Endpoint>], size: usize) -> Self {
        let n = eps.len();
        if n == 0 || size == 0 {
            return Self::Maglev(Vec::new());
        }
        // The one Maglev builder, shared with the kernel tables.
        let size = size.min(u32::MAX as usize) as u32;
        let perms: Vec<(u64, u64)> = eps
            .iter()
            .map(|e| proxy_common::maglev::permutation(e.addr.to_string().as_bytes(), size))
            .collect();
        let mut next = vec![0u64; n];
        let mut table = vec![u32::MAX; size as usize];
        proxy_common::maglev::populate(&perms, |_| 1, &mut next, &mut table);
        Self::Maglev(table)
    }

    /// The endpoint index for `hash`, walking on past hosts `usable` rejects.
    pub fn lookup(&self, hash: u64, usable: impl Fn(usize) -> bool) -> Option<usize> {
        match self {
            Self::Ring(ring) => {
                if ring.is_empty() {
                    return None;
                }
                let start = ring.partition_point(|(h, _)| *h < hash);
                (0..ring.len())
                    .map(|k| ring[(start + k) % ring.len()].1 as usize)
                    .find(|i| usable(*i))
            }
            Self::Maglev(table) => {
                if table.is_empty() {
                    return None;
                }
                let start = (hash % table.len() as u64) as usize;
                (0..table.len())
                    .map(|k| table[(start + k) % table.len()] as usize)
                    .find(|i| usable(*i))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn maglev_spreads_evenly_and_moves_little() {
        let eps: Vec<_> = (0..5)
            .map(|i| {
                Arc::new(Endpoint::new(
                    SocketAddr::from(([127, 0, 0, 1], 3000 + i)),
                    Default::default(),
                ))
            })
            .collect();
        let HashTable::Maglev(t) = HashTable::maglev(&eps, 65537) else {
            unreachable!()
        };
        for i in 0..5u32 {
            let share = t.iter().filter(|x| **x == i).count();
            assert!(
                (share as i64 - 65537 / 5).abs() < 65537 / 50,
                "host {i} has {share}"
            );
        }
        let HashTable::Maglev(t4) = HashTable::maglev(&eps[..4], 65537) else {
            unreachable!()
        };
        let moved = t
            .iter()
            .zip(&t4)
            .filter(|(a, b)| **a != 4 && a != b)
            .count();
        assert!(moved < 65537 / 10, "{moved} entries moved");
    }
}
