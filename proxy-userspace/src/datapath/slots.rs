//! Weighted backend slots for random and round-robin choice.
//!
//! The kernel picks a slot uniformly (random) or in order (round robin), so
//! a backend of weight `w` appears in `w` slots (weights divided by their
//! GCD, and scaled down when they sum past
//! [`proxy_common::MAX_SLOTS_PER_SERVICE`]). Slots are laid out in nginx's
//! smooth weighted round-robin order (weights 5:1:1 give `a a b a c a a`,
//! not `a a a a a b c`), so round robin spreads a heavy backend's turns.

/// Slot list for `weights` (each ≥ 1; 0 is treated as 1): the index of the
/// backend in each slot. At most `max_slots` slots, and at least one per
/// backend; empty for no backends.
pub fn expand(weights: &[u32], max_slots: u32) -> Vec<usize> {
    if weights.is_empty() {
        return Vec::new();
    }
    let mut w: Vec<u64> = weights.iter().map(|&w| w.max(1) as u64).collect();
    let g = w.iter().copied().fold(0, gcd);
    w.iter_mut().for_each(|x| *x /= g);
    let total: u64 = w.iter().sum();
    let max = (max_slots as u64).max(w.len() as u64);
    if total > max {
        // Scale down, keeping every backend at least once.
        w.iter_mut().for_each(|x| *x = (*x * max / total).max(1));
    }
    let total: u64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, x) in current.iter_mut().zip(&w) {
            *c += *x as i64;
        }
        let best = (0..w.len())
            .max_by_key(|&i| (current[i], -(i as i64)))
            .unwrap();
        current[best] -= total as i64;
        out.push(best);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(slots: &[usize], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        slots.iter().for_each(|&s| c[s] += 1);
        c
    }

    #[test]
    fn equal_weights_one_slot_each() {
        assert_eq!(expand(&[1, 1, 1], 4096), vec![0, 1, 2]);
        assert_eq!(expand(&[7, 7], 4096), vec![0, 1]);
    }

    #[test]
    fn weights_reduced_by_gcd_and_interleaved() {
        let s = expand(&[80, 20], 4096);
        assert_eq!(count(&s, 2), vec![4, 1]);
        assert_eq!(expand(&[5, 1, 1], 4096), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn large_weights_scaled_to_the_cap() {
        let s = expand(&[1_000_000, 1, 3_000_000], 100);
        let c = count(&s, 3);
        assert!(s.len() <= 100, "{}", s.len());
        assert_eq!(c[1], 1);
        assert!(c[2].abs_diff(3 * c[0]) <= 3, "{c:?}");
    }

    #[test]
    fn no_backends_no_slots() {
        assert!(expand(&[], 4096).is_empty());
    }
}
