//! Which latency pairs of `bench-mesh` the mesh verdict keeps, so the
//! harness can measure until it has enough of them (issue 20's added p99
//! at 1,000 requests/s).
//!
//! A pair is a proxied latency sub-run and the `direct` sub-run of the
//! same round and cycle (JSON lines with `"latency": true` and the same
//! `round` and `cycle`). `cargo xtask bench mesh` (its `added_p99`) drops
//! a pair as disturbed when either sub-run's host stalls (`stall_sum_us`)
//! add up to [`Limits::stall_share`] of its length (`secs`) or more, when
//! the hypervisor stole over [`Limits::steal`] of the proxies' CPU in
//! either (`steal`), or when direct's p99 is over
//! [`Limits::direct_factor`] times the median direct p99. None of these
//! looks at the proxied p99, so measuring more pairs until a number of
//! them is kept does not select by the outcome: the stopping rule depends
//! on the host only. The limits are passed on `bench-mesh`'s command line
//! by the xtask, which owns them.
use serde_json::Value;

/// The disturbance limits a pair is judged by (shares are 0–1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Host stalls summed over a sub-run, as a share of its length: the
    /// pair is dropped at or above it.
    pub stall_share: f64,
    /// CPU steal over a sub-run: dropped above it.
    pub steal: f64,
    /// Direct's p99 over this many times the median direct p99: dropped.
    pub direct_factor: f64,
}

fn num(v: &Value, k: &str) -> Option<f64> {
    v[k].as_f64().filter(|x| x.is_finite())
}

fn latency_rows<'a>(rows: &'a [Value], key: &'a str) -> impl Iterator<Item = &'a Value> {
    rows.iter()
        .filter(move |r| r["latency"].as_bool() == Some(true) && r["scenario"] == key)
        .filter(|r| num(r, "p99_us").is_some())
}

/// `(kept, measured)`: of `key`'s latency sub-runs that have a `direct`
/// sub-run of their round and cycle (the pairs measured), how many the
/// verdict keeps under `limits`.
pub fn count(rows: &[Value], key: &str, limits: Limits) -> (usize, usize) {
    let mut direct: Vec<f64> = latency_rows(rows, "direct")
        .filter_map(|r| num(r, "p99_us"))
        .collect();
    direct.sort_by(f64::total_cmp);
    let median = match direct.len() {
        0 => None,
        n if n % 2 == 1 => Some(direct[n / 2]),
        n => Some((direct[n / 2 - 1] + direct[n / 2]) / 2.0),
    };
    let disturbed = |r: &Value| {
        let stalled = match (num(r, "stall_sum_us"), num(r, "secs")) {
            (Some(s), Some(secs)) => s >= limits.stall_share * secs * 1e6,
            _ => false,
        };
        stalled || num(r, "steal").is_some_and(|s| s > limits.steal)
    };
    let (mut kept, mut measured) = (0, 0);
    for r in latency_rows(rows, key) {
        let Some(d) = latency_rows(rows, "direct")
            .find(|d| d["round"] == r["round"] && d["cycle"] == r["cycle"])
        else {
            continue;
        };
        measured += 1;
        let slowed = match (median, num(d, "p99_us")) {
            (Some(m), Some(p)) => p > limits.direct_factor * m,
            _ => false,
        };
        if !disturbed(r) && !disturbed(d) && !slowed {
            kept += 1;
        }
    }
    (kept, measured)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: Limits = Limits {
        stall_share: 0.01,
        steal: 0.02,
        direct_factor: 2.0,
    };

    /// Latency lines from `(scenario, cycle, p99 µs, stalls µs, steal)`,
    /// all of round 0 and 2 s long.
    fn subs(v: &[(&str, usize, f64, f64, f64)]) -> Vec<Value> {
        v.iter()
            .map(|&(scenario, cycle, p99, stall, steal)| {
                json!({"scenario": scenario, "latency": true, "round": 0, "cycle": cycle,
                       "secs": 2, "p99_us": p99, "stall_sum_us": stall, "steal": steal})
            })
            .collect()
    }

    #[test]
    fn pairs_are_dropped_by_the_host_never_by_the_proxied_p99() {
        let (d, l4) = ("direct", "strait-l4-hbone");
        let rows = subs(&[
            // Kept, however slow the proxied side is.
            (d, 0, 300.0, 0.0, 0.0),
            (l4, 0, 90_000.0, 0.0, 0.0),
            // Stalls of 1% of 2 s on the direct side: dropped.
            (d, 1, 300.0, 20_000.0, 0.0),
            (l4, 1, 400.0, 0.0, 0.0),
            // Just under 1% on the proxied side: kept.
            (d, 2, 320.0, 0.0, 0.0),
            (l4, 2, 400.0, 19_999.0, 0.0),
            // Steal over 2% on the proxied side: dropped.
            (d, 3, 280.0, 0.0, 0.0),
            (l4, 3, 400.0, 0.0, 0.03),
            // Direct slowed past 2× the median direct p99 (300): dropped.
            (d, 4, 700.0, 0.0, 0.0),
            (l4, 4, 800.0, 0.0, 0.0),
            // No direct sub-run of its cycle: not a pair.
            (l4, 5, 400.0, 0.0, 0.0),
            // Another row's sub-runs are not counted for this one.
            ("strait-l7-hbone", 0, 400.0, 0.0, 0.0),
        ]);
        assert_eq!(count(&rows, l4, LIMITS), (2, 5));
        assert_eq!(count(&rows, "strait-l7-hbone", LIMITS), (1, 1));
        assert_eq!(count(&rows, "ztunnel", LIMITS), (0, 0));
    }

    #[test]
    fn pairs_match_on_round_as_well_as_cycle() {
        let mut rows = subs(&[
            ("direct", 0, 300.0, 0.0, 0.0),
            ("strait-l4-hbone", 0, 400.0, 0.0, 0.0),
        ]);
        rows[0]["round"] = json!(1);
        assert_eq!(count(&rows, "strait-l4-hbone", LIMITS), (0, 0));
    }
}
