//! The order contenders run in within a round of back-to-back runs.

/// Contender indexes (`0..len`) for round `r`: every contender once, the
/// first one rotating round by round, with the two contenders of `pair`
/// always next to each other (their order alternating), so that the
/// judged ratio compares runs seconds apart even when a round is long.
///
/// # Panics
/// When `pair` is not two different indexes below `len`.
pub fn order(r: usize, len: usize, pair: (usize, usize)) -> Vec<usize> {
    assert!(pair.0 != pair.1 && pair.0 < len && pair.1 < len);
    // Units: every contender but `pair.1`, which rides with `pair.0`.
    let units: Vec<usize> = (0..len).filter(|&i| i != pair.1).collect();
    let n = units.len();
    let mut out = Vec::with_capacity(len);
    for k in 0..n {
        let u = units[(r + k) % n];
        if u == pair.0 {
            if r.is_multiple_of(2) {
                out.extend([pair.0, pair.1]);
            } else {
                out.extend([pair.1, pair.0]);
            }
        } else {
            out.push(u);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::order;

    #[test]
    fn every_contender_once_with_the_pair_adjacent() {
        let mut first = [0usize; 4];
        let mut pair_first = [0usize; 2];
        for r in 0..12 {
            let o = order(r, 4, (1, 2));
            let mut sorted = o.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2, 3], "round {r}: {o:?}");
            let a = o.iter().position(|&i| i == 1).unwrap();
            let b = o.iter().position(|&i| i == 2).unwrap();
            assert_eq!(a.abs_diff(b), 1, "round {r}: {o:?}");
            first[o[0]] += 1;
            pair_first[usize::from(b < a)] += 1;
        }
        // Over 12 rounds: the three units lead 4 times each, and each of
        // the pair runs first in half of the rounds.
        assert_eq!(first[0], 4);
        assert_eq!(first[1] + first[2], 4);
        assert_eq!(first[3], 4);
        assert_eq!(pair_first, [6, 6]);
    }
}
