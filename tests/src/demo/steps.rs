//! The traffic-management steps of the demo (Istio's bookinfo tasks), what
//! each must produce, and the tables printed for a person.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use super::mesh::Sample;

/// What every request of a check must show.
#[derive(Clone, Debug)]
pub enum Expect {
    /// reviews `version` answered every request (status 200).
    Version(&'static str),
    /// reviews versions split by these weights (fractions summing to 1),
    /// each count within 5 sigma of the binomial for the sample size.
    Split(&'static [(&'static str, f64)]),
    /// reviews `version` with a ratings answer, each page ≥ `min` late.
    Delayed {
        version: &'static str,
        min: Duration,
    },
    /// reviews `version` with `{"error":"ratings service unavailable","status":<status>}`.
    RatingsError { version: &'static str, status: u16 },
}

/// One group of requests in a step.
#[derive(Clone, Debug)]
pub struct Check {
    /// Who sends them: `jason` (header `end-user: jason`) or `anonymous`.
    pub user: Option<&'static str>,
    /// How many requests.
    pub n: usize,
    /// What they must show.
    pub expect: Expect,
}

impl Check {
    /// `n` requests as `user` (`None`: anonymous), every one showing
    /// reviews `version`.
    pub fn version(user: Option<&'static str>, n: usize, version: &'static str) -> Check {
        Check {
            user,
            n,
            expect: Expect::Version(version),
        }
    }
}

/// A step: the routing file to apply and the checks after it.
#[derive(Clone, Debug)]
pub struct Step {
    /// Short title.
    pub title: &'static str,
    /// Routing file (in the samples directory).
    pub file: &'static str,
    /// Checks.
    pub checks: Vec<Check>,
}

/// The five steps of the demo over the project's samples
/// (`tests/samples/bookinfo/README.md` states the same outcomes).
pub fn bookinfo_steps() -> Vec<Step> {
    let jason = Some("jason");
    vec![
        Step {
            title: "all traffic to v1",
            file: "all-v1.yaml",
            checks: vec![
                Check {
                    user: None,
                    n: 20,
                    expect: Expect::Version("v1"),
                },
                Check {
                    user: jason,
                    n: 10,
                    expect: Expect::Version("v1"),
                },
            ],
        },
        Step {
            title: "end-user jason to reviews v2",
            file: "reviews-jason-v2.yaml",
            checks: vec![
                Check {
                    user: jason,
                    n: 20,
                    expect: Expect::Version("v2"),
                },
                Check {
                    user: None,
                    n: 20,
                    expect: Expect::Version("v1"),
                },
            ],
        },
        Step {
            title: "50/50 split between reviews v1 and v3",
            file: "reviews-50-v1-v3.yaml",
            checks: vec![Check {
                user: None,
                n: 100,
                expect: Expect::Split(&[("v1", 0.5), ("v3", 0.5)]),
            }],
        },
        Step {
            title: "2 s delay on ratings for jason",
            file: "ratings-delay-jason.yaml",
            checks: vec![
                Check {
                    user: jason,
                    n: 3,
                    expect: Expect::Delayed {
                        version: "v2",
                        min: Duration::from_secs(2),
                    },
                },
                Check {
                    user: None,
                    n: 20,
                    expect: Expect::Version("v1"),
                },
            ],
        },
        Step {
            title: "HTTP 500 abort on ratings for jason",
            file: "ratings-abort-jason.yaml",
            checks: vec![
                Check {
                    user: jason,
                    n: 20,
                    expect: Expect::RatingsError {
                        version: "v2",
                        status: 500,
                    },
                },
                Check {
                    user: None,
                    n: 20,
                    expect: Expect::Version("v1"),
                },
            ],
        },
    ]
}

/// What a check saw.
#[derive(Clone, Debug)]
pub struct Row {
    /// `jason` or `anonymous`.
    pub who: String,
    /// Requests sent.
    pub n: usize,
    /// reviews version → count (`-` when no reviews answer).
    pub versions: BTreeMap<String, usize>,
    /// productpage status → count.
    pub statuses: BTreeMap<u16, usize>,
    /// Median latency.
    pub p50: Duration,
    /// Slowest request.
    pub max: Duration,
    /// Why the check failed; None when it passed.
    pub problem: Option<String>,
}

/// Evaluates `samples` against `check`.
pub fn evaluate(check: &Check, samples: &[Sample]) -> Row {
    let mut versions = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    let mut lat: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    lat.sort();
    for s in samples {
        *versions
            .entry(s.reviews_version().unwrap_or("-").to_string())
            .or_insert(0) += 1;
        *statuses.entry(s.status).or_insert(0) += 1;
    }
    let mut problem = None;
    let mut fail = |msg: String| {
        problem.get_or_insert(msg);
    };
    if samples.len() != check.n {
        fail(format!(
            "{} answers for {} requests",
            samples.len(),
            check.n
        ));
    }
    if let Some(bad) = samples.iter().find(|s| s.status != 200) {
        fail(format!(
            "productpage answered {} ({})",
            bad.status, bad.body
        ));
    }
    let all_version = |v: &str| samples.iter().all(|s| s.reviews_version() == Some(v));
    match &check.expect {
        Expect::Version(v) => {
            if !all_version(v) {
                fail(format!("expected every request on reviews {v}"));
            }
            let wants_ratings = *v != "v1";
            if samples
                .iter()
                .any(|s| s.ratings()["service"].is_string() != wants_ratings)
            {
                fail(format!(
                    "reviews {v} {} call ratings",
                    if wants_ratings { "must" } else { "must not" }
                ));
            }
        }
        Expect::Split(weights) => {
            let n = samples.len() as f64;
            for (v, p) in weights.iter() {
                let k = versions.get(*v).copied().unwrap_or(0) as f64;
                let tol = 5.0 * (n * p * (1.0 - p)).sqrt();
                if (k - n * p).abs() > tol {
                    fail(format!(
                        "reviews {v}: {k} of {n}, expected {:.0} ± {tol:.1} (5 sigma)",
                        n * p
                    ));
                }
            }
            let known: usize = weights
                .iter()
                .map(|(v, _)| versions.get(*v).copied().unwrap_or(0))
                .sum();
            if known != samples.len() {
                fail(format!("versions outside the split: {versions:?}"));
            }
        }
        Expect::Delayed { version, min } => {
            if !all_version(version) {
                fail(format!("expected every request on reviews {version}"));
            }
            if let Some(s) = samples.iter().find(|s| s.latency < *min) {
                fail(format!(
                    "a page took {:?}, expected at least {min:?}",
                    s.latency
                ));
            }
            if samples.iter().any(|s| !s.ratings()["service"].is_string()) {
                fail("the delayed ratings answer is missing".into());
            }
        }
        Expect::RatingsError { version, status } => {
            if !all_version(version) {
                fail(format!("expected every request on reviews {version}"));
            }
            let ok = |s: &Sample| {
                s.ratings()["error"] == "ratings service unavailable"
                    && s.ratings()["status"] == *status
            };
            if let Some(s) = samples.iter().find(|s| !ok(s)) {
                fail(format!(
                    "expected ratings error {status}, got {}",
                    s.ratings()
                ));
            }
        }
    }
    Row {
        who: check.user.unwrap_or("anonymous").to_string(),
        n: check.n,
        versions,
        statuses,
        p50: lat.get(lat.len() / 2).copied().unwrap_or_default(),
        max: lat.last().copied().unwrap_or_default(),
        problem,
    }
}

fn counts<K: std::fmt::Display>(m: &BTreeMap<K, usize>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The table a person reads for one step.
pub fn table(n: usize, step: &Step, rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\nStep {n}: {} ({})", step.title, step.file);
    let _ = writeln!(
        s,
        "  {:<10} {:>5}  {:<22} {:<10} {:>8} {:>8}  check",
        "user", "reqs", "reviews versions", "status", "p50 ms", "max ms"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "  {:<10} {:>5}  {:<22} {:<10} {:>8.1} {:>8.1}  {}",
            r.who,
            r.n,
            counts(&r.versions),
            counts(&r.statuses),
            r.p50.as_secs_f64() * 1e3,
            r.max.as_secs_f64() * 1e3,
            r.problem
                .as_deref()
                .map_or("ok".to_string(), |p| format!("FAIL: {p}")),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(version: &str, ratings: serde_json::Value, ms: u64) -> Sample {
        Sample {
            t_ms: 0,
            status: 200,
            latency: Duration::from_millis(ms),
            body: serde_json::json!({"service": "productpage", "reviews": {"version": version, "ratings": ratings}}),
        }
    }

    #[test]
    fn a_split_far_from_its_weights_fails_and_a_fair_one_passes() {
        let check = Check {
            user: None,
            n: 100,
            expect: Expect::Split(&[("v1", 0.5), ("v3", 0.5)]),
        };
        let r = serde_json::json!({"service": "ratings"});
        let fair: Vec<Sample> = (0..100)
            .map(|i| sample(if i % 2 == 0 { "v1" } else { "v3" }, r.clone(), 5))
            .collect();
        assert!(evaluate(&check, &fair).problem.is_none());
        // 80/20 is 6 sigma from 50/50 at n = 100.
        let skewed: Vec<Sample> = (0..100)
            .map(|i| sample(if i < 80 { "v1" } else { "v3" }, r.clone(), 5))
            .collect();
        assert!(evaluate(&check, &skewed).problem.is_some());
    }

    #[test]
    fn a_fast_page_fails_the_delay_check() {
        let check = Check {
            user: Some("jason"),
            n: 1,
            expect: Expect::Delayed {
                version: "v2",
                min: Duration::from_secs(2),
            },
        };
        let r = serde_json::json!({"service": "ratings"});
        assert!(evaluate(&check, &[sample("v2", r.clone(), 2100)])
            .problem
            .is_none());
        assert!(evaluate(&check, &[sample("v2", r, 30)]).problem.is_some());
    }

    #[test]
    fn the_abort_check_wants_the_ratings_error() {
        let check = Check {
            user: Some("jason"),
            n: 1,
            expect: Expect::RatingsError {
                version: "v2",
                status: 500,
            },
        };
        let err = serde_json::json!({"error": "ratings service unavailable", "status": 500});
        assert!(evaluate(&check, &[sample("v2", err, 5)]).problem.is_none());
        let ok = serde_json::json!({"service": "ratings"});
        assert!(evaluate(&check, &[sample("v2", ok, 5)]).problem.is_some());
    }
}
