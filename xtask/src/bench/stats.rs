//! Summaries of repeated runs: median with min–max, and ratios to a baseline.
use serde_json::{json, Value};

/// The samples of one figure over the runs of a case (one per run).
#[derive(Clone, Debug, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    /// Adds one run's value.
    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    /// The median (mean of the two middle values for an even count);
    /// `None` without samples.
    pub fn median(&self) -> Option<f64> {
        let mut v = self.0.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }

    /// Smallest and largest sample.
    pub fn range(&self) -> Option<(f64, f64)> {
        let min = self.0.iter().copied().min_by(f64::total_cmp)?;
        let max = self.0.iter().copied().max_by(f64::total_cmp)?;
        Some((min, max))
    }

    /// `"median (min–max)"` with `decimals` digits after the point, and
    /// `×ratio` to `baseline`'s median when given; `n/a` without samples.
    pub fn cell(&self, decimals: usize, baseline: Option<&Samples>) -> String {
        let (Some(m), Some((lo, hi))) = (self.median(), self.range()) else {
            return "n/a".into();
        };
        let mut s = if self.0.len() == 1 {
            num(m, decimals)
        } else {
            format!(
                "{} ({}–{})",
                num(m, decimals),
                num(lo, decimals),
                num(hi, decimals)
            )
        };
        if let Some(r) = baseline.and_then(|b| self.ratio(b)) {
            s.push_str(&format!(" ×{r:.2}"));
        }
        s
    }

    /// This median over `baseline`'s median.
    pub fn ratio(&self, baseline: &Samples) -> Option<f64> {
        let (m, b) = (self.median()?, baseline.median()?);
        (b != 0.0).then_some(m / b)
    }

    /// Run-by-run ratios to `baseline`: sample `i` over the baseline's
    /// sample `i` (runs measured back to back in the same round), so drift
    /// between rounds cancels out. `None` when the run counts differ or a
    /// baseline sample is zero.
    pub fn paired_ratios(&self, baseline: &Samples) -> Option<Samples> {
        if self.0.len() != baseline.0.len() || baseline.0.contains(&0.0) {
            return None;
        }
        Some(Samples(
            self.0.iter().zip(&baseline.0).map(|(v, b)| v / b).collect(),
        ))
    }

    /// A distribution-free confidence interval for the median at `level`
    /// (e.g. 0.95): the order statistics `x(k)` and `x(n+1-k)` of the sorted
    /// samples with the largest `k` whose coverage, `1 - 2·P(B ≤ k-1)` for
    /// `B ~ Binomial(n, ½)`, is still at least `level` (the sign-test
    /// interval; it assumes only independent samples of one distribution).
    /// Returns `(low, high, coverage)`; `None` when even the whole range
    /// covers less than `level` (fewer than 6 samples for 95%).
    pub fn median_interval(&self, level: f64) -> Option<(f64, f64, f64)> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let cdf = binomial_half_cdf(n);
        // coverage(k) = 1 - 2·cdf[k-1], falling as k grows.
        let k = (1..=n.div_ceil(2))
            .take_while(|&k| 1.0 - 2.0 * cdf[k - 1] >= level)
            .last()?;
        Some((v[k - 1], v[n - k], 1.0 - 2.0 * cdf[k - 1]))
    }

    /// `"median [low–high]"`: the median with its 95% interval
    /// ([`Self::median_interval`]), or the min–max range in parentheses
    /// when there are too few samples for the interval.
    pub fn interval_cell(&self, decimals: usize) -> String {
        match (self.median(), self.median_interval(0.95)) {
            (Some(m), Some((lo, hi, _))) => format!(
                "{} [{}–{}]",
                num(m, decimals),
                num(lo, decimals),
                num(hi, decimals)
            ),
            _ => self.cell(decimals, None),
        }
    }

    /// `{"median", "min", "max", "runs": [...]}` for results.json.
    pub fn json(&self) -> Value {
        let (lo, hi) = self.range().unzip();
        json!({"median": self.median(), "min": lo, "max": hi, "runs": self.0})
    }
}

/// `P(B ≤ i)` for `B ~ Binomial(n, ½)`, for `i` in `0..=n` (in logs, so a
/// few thousand samples do not underflow).
fn binomial_half_cdf(n: usize) -> Vec<f64> {
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_choose = 0.0f64;
    let mut acc = 0.0f64;
    (0..=n)
        .map(|i| {
            if i > 0 {
                ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
            }
            acc += (ln_choose + ln_half_n).exp();
            acc.min(1.0)
        })
        .collect()
}

/// A number with thousands separators and `decimals` fraction digits.
pub fn num(v: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Samples(vec![3.0, 1.0, 2.0]).median(), Some(2.0));
        assert_eq!(Samples(vec![4.0, 1.0, 2.0, 3.0]).median(), Some(2.5));
        assert_eq!(Samples(vec![]).median(), None);
    }

    #[test]
    fn cell_shows_median_range_and_ratio() {
        let base = Samples(vec![100.0, 100.0, 100.0]);
        let s = Samples(vec![1200.0, 1000.0, 1100.0]);
        assert_eq!(s.cell(0, Some(&base)), "1,100 (1,000–1,200) ×11.00");
        assert_eq!(Samples(vec![]).cell(1, None), "n/a");
    }

    #[test]
    fn paired_ratios_cancel_drift_between_rounds() {
        // The machine slows down round by round; the contender stays 5%
        // behind the baseline measured next to it.
        let base = Samples(vec![100.0, 80.0, 60.0]);
        let s = Samples(vec![95.0, 76.0, 57.0]);
        let r = s.paired_ratios(&base).unwrap();
        assert!(r.0.iter().all(|x| (x - 0.95).abs() < 1e-9));
        assert!(Samples(vec![1.0]).paired_ratios(&base).is_none());
    }

    #[test]
    fn median_interval_uses_the_sign_test_order_statistics() {
        // Textbook ranks for 95%: n = 6..8 → x(1), x(n) (n = 6: 96.9%);
        // n = 20 → x(6), x(15) (95.9%); n = 100 → x(40), x(61).
        let s = |n: usize| Samples((1..=n).rev().map(|i| i as f64).collect());
        // n = 5: the whole range covers 30/32 = 93.75% only.
        assert!(s(5).median_interval(0.95).is_none());
        let (lo, hi, cov) = s(6).median_interval(0.95).unwrap();
        assert_eq!((lo, hi), (1.0, 6.0));
        assert!((cov - 0.96875).abs() < 1e-12);
        let (lo, hi, cov) = s(20).median_interval(0.95).unwrap();
        assert_eq!((lo, hi), (6.0, 15.0));
        assert!((cov - 0.958610).abs() < 1e-5, "{cov}");
        let (lo, hi, _) = s(100).median_interval(0.95).unwrap();
        assert_eq!((lo, hi), (40.0, 61.0));
        // Thousands of samples: no underflow, and the interval narrows.
        let (lo, hi, cov) = s(4000).median_interval(0.95).unwrap();
        assert!((0.95..0.96).contains(&cov), "{cov}");
        assert!(lo > 1900.0 && hi < 2100.0 && lo < 2000.5 && hi > 2000.5);
    }

    #[test]
    fn interval_cell_falls_back_to_the_range() {
        let few = Samples(vec![0.9, 1.0, 1.1]);
        assert_eq!(few.interval_cell(2), "1.00 (0.90–1.10)");
        let many = Samples((1..=20).map(|i| i as f64 / 10.0).collect());
        assert_eq!(many.interval_cell(2), "1.05 [0.60–1.50]");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(num(1234567.891, 1), "1,234,567.9");
        assert_eq!(num(999.0, 0), "999");
        assert_eq!(num(-1000.0, 0), "-1,000");
    }
}
