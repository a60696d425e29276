//! The one Maglev table builder (Eisenbud et al., "Maglev: A Fast and
//! Reliable Software Network Load Balancer", NSDI 2016, §3.4), shared by the
//! kernel tables ([`crate::MaglevTable`], the XDP load balancer's node
//! table) and userspace's L7 `consistentHash.maglev`. Weights are applied
//! as Cilium applies them: a backend of weight `w` takes `w` turns per
//! round.
//!
//! Every node builds the same table from the same backends: a backend's
//! permutation depends only on its key bytes (userspace uses the address's
//! text, e.g. `10.0.0.1:8080`) through a fixed, unseeded-by-process hash.
//! `no_std` and allocation-free: the caller provides the table and the
//! scratch space, so this also compiles for the BPF target.

/// Seed of the hash giving a backend's first preferred position.
pub const OFFSET_SEED: u64 = 0x6d61_676c_6576_0001;
/// Seed of the hash giving a backend's step between preferred positions.
pub const SKIP_SEED: u64 = 0x6d61_676c_6576_0002;

/// FNV-1a over `bytes` from a seeded basis, finished with MurmurHash3's
/// `fmix64` so nearby addresses spread over the whole range. Stable across
/// Rust versions and machines (unlike `std`'s `DefaultHasher`).
pub fn hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

/// MurmurHash3's 64-bit finalizer.
pub const fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A backend's permutation in a table of `size` entries: `(offset, skip)`,
/// its preferred positions being `(offset + j * skip) % size`. `size` should
/// be prime (so every permutation visits every position) and ≥ 1.
pub fn permutation(key: &[u8], size: u32) -> (u64, u64) {
    let m = size.max(1) as u64;
    let offset = hash(OFFSET_SEED, key) % m;
    let skip = hash(SKIP_SEED, key) % (m - 1).max(1) + 1;
    (offset, skip)
}

/// Fills `table` (every entry) with backend indexes `0..perms.len()`:
/// `perms[i]` is backend `i`'s [`permutation`] for `table.len()`,
/// `weight(i)` its turns per round (0 counts as 1), `next` scratch of
/// `perms.len()` entries. Nothing is written when `perms` is empty, `next`
/// is shorter than `perms` or `table` is empty.
///
/// Disruption: removing one of N backends changes only the entries that
/// pointed at it plus a small fraction of the others (the paper's Fig. 12).
pub fn populate(
    perms: &[(u64, u64)],
    weight: impl Fn(usize) -> u32,
    next: &mut [u64],
    table: &mut [u32],
) {
    let m = table.len() as u64;
    if perms.is_empty() || next.len() < perms.len() || m == 0 {
        return;
    }
    next[..perms.len()].fill(0);
    table.fill(u32::MAX);
    let mut filled = 0u64;
    loop {
        for (i, &(offset, skip)) in perms.iter().enumerate() {
            for _ in 0..weight(i).max(1) {
                // Next preferred position of backend i still free.
                let mut c = (offset + next[i] * skip) % m;
                while table[c as usize] != u32::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                table[c as usize] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_stable_and_in_range() {
        // Pinned values: a change here changes every node's tables.
        let (o, s) = permutation(b"10.0.0.1:8080", 16_381);
        assert!(o < 16_381 && (1..16_381).contains(&s));
        assert_eq!((o, s), permutation(b"10.0.0.1:8080", 16_381));
        assert_eq!(permutation(b"x", 1), (0, 1));
    }

    #[test]
    fn small_table_filled_with_every_backend() {
        let perms = [permutation(b"a", 7), permutation(b"b", 7)];
        let mut next = [0u64; 2];
        let mut t = [0u32; 7];
        populate(&perms, |_| 1, &mut next, &mut t);
        assert!(t.iter().all(|e| *e < 2));
        let a = t.iter().filter(|e| **e == 0).count();
        assert!(a == 3 || a == 4, "{t:?}");
    }
}
