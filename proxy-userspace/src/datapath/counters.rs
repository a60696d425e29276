//! Counter indexes: userspace assigns every service a slot in the
//! `SERVICE_STATS` per-CPU array and every backend address (per protocol)
//! a slot in `BACKEND_STATS`, and writes the index into the `SERVICES` /
//! `BACKENDS` values, so the kernel counts with an array access (inlined by
//! the verifier) instead of hashing the key into a per-CPU hash map on every
//! `connect()`.
use std::collections::HashMap;
use std::hash::Hash;

use anyhow::{bail, Context};
use aya::maps::{MapData, PerCpuArray, PerCpuValues};
use aya::Pod;

/// Indexes `0..capacity` handed out per key; freed ones are reused first.
pub struct IndexPool<K> {
    by_key: HashMap<K, u32>,
    free: Vec<u32>,
    next: u32,
    capacity: u32,
    name: &'static str,
}

impl<K: Hash + Eq + Copy> IndexPool<K> {
    /// An empty pool for the array `name` of `capacity` slots.
    pub fn new(name: &'static str, capacity: u32) -> Self {
        Self {
            by_key: HashMap::new(),
            free: Vec::new(),
            next: 0,
            capacity,
            name,
        }
    }

    /// The index of `key`, if it has one.
    pub fn get(&self, key: &K) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    /// The index of `key`, assigning a free one when it has none; `clear`
    /// runs on a newly assigned index first (its slot may hold counts of an
    /// earlier owner; see [`zero`]).
    ///
    /// Errors: all `capacity` indexes are in use, or `clear` fails.
    pub fn assign(
        &mut self,
        key: K,
        clear: impl FnOnce(u32) -> anyhow::Result<()>,
    ) -> anyhow::Result<u32> {
        if let Some(&i) = self.by_key.get(&key) {
            return Ok(i);
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None if self.next < self.capacity => {
                self.next += 1;
                self.next - 1
            }
            None => bail!("{} is full ({} entries)", self.name, self.capacity),
        };
        if let Err(e) = clear(i) {
            self.free.push(i);
            return Err(e).with_context(|| format!("clearing {} slot {i}", self.name));
        }
        self.by_key.insert(key, i);
        Ok(i)
    }

    /// Records that `key` owns index `i` (read back from pinned maps after
    /// a restart). An out-of-range index is ignored: the kernel cannot have
    /// counted into it.
    pub fn adopt(&mut self, key: K, i: u32) {
        if i >= self.capacity {
            return;
        }
        self.by_key.insert(key, i);
        self.next = self.next.max(i + 1);
    }

    /// Rebuilds the free list after [`Self::adopt`] calls: every index
    /// below the highest adopted one that no key owns.
    pub fn finish_adopting(&mut self) {
        let used: std::collections::HashSet<u32> = self.by_key.values().copied().collect();
        self.free = (0..self.next).rev().filter(|i| !used.contains(i)).collect();
    }

    /// Frees the index of `key`, if it has one.
    pub fn release(&mut self, key: &K) {
        if let Some(i) = self.by_key.remove(key) {
            self.free.push(i);
        }
    }

    /// Frees the indexes of the keys `keep` rejects.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        let free = &mut self.free;
        self.by_key.retain(|k, i| {
            let kept = keep(k);
            if !kept {
                free.push(*i);
            }
            kept
        });
    }
}

/// Sets every CPU's value of slot `i` to the default (zero).
pub fn zero<V: Pod + Default>(array: &mut PerCpuArray<MapData, V>, i: u32) -> anyhow::Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    let values = PerCpuValues::try_from(vec![V::default(); cpus])?;
    array.set(i, values, 0)?;
    Ok(())
}

/// Every CPU's value of slot `i` of `array`, or none when it cannot be read.
pub fn per_cpu<V: Pod>(array: &PerCpuArray<MapData, V>, i: u32) -> Vec<V> {
    array
        .get(&i, 0)
        .map(|v| v.iter().copied().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: u32) -> anyhow::Result<()> {
        Ok(())
    }

    #[test]
    fn keys_keep_their_index_and_freed_indexes_are_reused() {
        let mut pool = IndexPool::new("STATS", 3);
        assert_eq!(pool.assign('a', ok).unwrap(), 0);
        assert_eq!(pool.assign('b', ok).unwrap(), 1);
        assert_eq!(pool.assign('a', ok).unwrap(), 0);
        pool.retain(|k| *k != 'a');
        assert_eq!(pool.get(&'a'), None);
        let mut cleared = Vec::new();
        let i = pool
            .assign('c', |i| {
                cleared.push(i);
                Ok(())
            })
            .unwrap();
        assert_eq!((i, cleared), (0, vec![0]), "the freed slot, cleared");
        assert_eq!(pool.assign('d', ok).unwrap(), 2);
        let err = pool.assign('e', ok).unwrap_err().to_string();
        assert!(err.contains("STATS is full (3 entries)"), "{err}");
    }

    #[test]
    fn a_failed_clear_leaves_the_index_free() {
        let mut pool = IndexPool::new("STATS", 1);
        assert!(pool.assign('a', |_| anyhow::bail!("EPERM")).is_err());
        assert_eq!(pool.get(&'a'), None);
        assert_eq!(pool.assign('b', ok).unwrap(), 0);
    }

    #[test]
    fn adopted_indexes_are_kept_and_holes_reused() {
        let mut pool = IndexPool::new("STATS", 8);
        pool.adopt('x', 3);
        pool.adopt('y', 1);
        pool.adopt('z', 99); // out of range: ignored
        pool.finish_adopting();
        assert_eq!(pool.get(&'x'), Some(3));
        assert_eq!(pool.get(&'z'), None);
        let fresh: Vec<u32> = "abc".chars().map(|k| pool.assign(k, ok).unwrap()).collect();
        assert_eq!(fresh, vec![0, 2, 4]);
    }
}
