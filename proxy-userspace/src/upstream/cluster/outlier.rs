//! Envoy outlier detection as Istio configures it (DestinationRule
//! `trafficPolicy.outlierDetection`), following Envoy's "ejection
//! algorithm" (arch overview, outlier detection):
//!
//! - consecutive errors (`consecutive5xxErrors`, `consecutiveGatewayErrors`)
//!   are counted per host on every response; reaching the threshold ejects
//!   the host inline (Envoy: "ejection runs inline for consecutive 5xx"),
//!   unless `maxEjectionPercent` of the cluster is already ejected (the
//!   first host is always ejectable, as Envoy's "at least one host");
//! - the host is ejected for `baseEjectionTime × times ejected in a row`,
//!   capped at Envoy's default `max_ejection_time` (300 s, or the base time
//!   when that is longer);
//! - every `interval` a sweep (run by the upstream registry) returns the
//!   hosts whose ejection time has passed, and lowers the multiplier of
//!   hosts that stayed in service a whole interval (Envoy decrements
//!   `num_ejections` on healthy sweeps), so a host that fails again soon is
//!   ejected for longer and one that recovered starts over.
//!
//! The counters live in the [`Endpoint`] the registry keeps across config
//! swaps, so an ejection survives a reload.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::endpoint::{now_ms, Endpoint};

/// Envoy's default `max_ejection_time`.
const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// Compiled `OutlierDetection`.
#[derive(Clone, Debug)]
pub struct OutlierDetection {
    /// `consecutive5xxErrors` (0 disables). Locally originated failures
    /// (connect errors, resets) count too, as with Envoy's default
    /// `split_external_local_origin_errors: false`.
    pub consecutive_5xx: u32,
    /// `consecutiveGatewayErrors` (0 disables): 502, 503, 504 and
    /// connect failures.
    pub consecutive_gateway: u32,
    /// `interval` (Istio default 10 s).
    pub interval: Duration,
    /// `baseEjectionTime` (Istio default 30 s).
    pub base_ejection_time: Duration,
    /// `maxEjectionPercent` (Istio default 10).
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_gateway: 0,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
        }
    }
}

/// What an upstream try ended with, for outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryResult {
    /// A response with this status.
    Status(u16),
    /// Connect failure, reset or timeout (locally originated; counts as 503).
    LocalFailure,
}

impl OutlierDetection {
    /// Records a try's result on `ep`; may eject it. `all` is the cluster's
    /// endpoint list (for `maxEjectionPercent`).
    pub fn record(&self, ep: &Endpoint, result: TryResult, all: &[Arc<Endpoint>]) {
        let status = match result {
            TryResult::Status(s) => s,
            TryResult::LocalFailure => 503,
        };
        let is_5xx = (500..600).contains(&status);
        let is_gateway = matches!(status, 502..=504);
        if !is_5xx {
            ep.consecutive_5xx.store(0, Ordering::Relaxed);
            ep.consecutive_gateway.store(0, Ordering::Relaxed);
            return;
        }
        let n5 = ep.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let ng = if is_gateway {
            ep.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            ep.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        let trip = (self.consecutive_5xx > 0 && n5 >= self.consecutive_5xx)
            || (self.consecutive_gateway > 0 && ng >= self.consecutive_gateway);
        if trip && !ep.is_ejected() {
            self.eject(ep, all);
        }
    }

    fn eject(&self, ep: &Endpoint, all: &[Arc<Endpoint>]) {
        let ejected = all.iter().filter(|e| e.is_ejected()).count();
        // Envoy: the first host is always ejectable; later ones only while
        // the share already ejected is under the maximum.
        if all.is_empty()
            || (ejected > 0 && ejected * 100 >= self.max_ejection_percent as usize * all.len())
        {
            return;
        }
        if ep.ejected.swap(true, Ordering::Relaxed) {
            return;
        }
        let times = ep.ejections.fetch_add(1, Ordering::Relaxed) as u64 + 1;
        let cap = MAX_EJECTION_TIME.max(self.base_ejection_time).as_millis() as u64;
        let ms = (self.base_ejection_time.as_millis() as u64)
            .saturating_mul(times)
            .min(cap);
        ep.ejected_until_ms.store(now_ms() + ms, Ordering::Relaxed);
        ep.consecutive_5xx.store(0, Ordering::Relaxed);
        ep.consecutive_gateway.store(0, Ordering::Relaxed);
    }

    /// The `interval` sweep over a cluster's hosts at time `now` (ms of
    /// [`now_ms`]): hosts whose ejection time has passed come back; hosts in
    /// service have their ejection multiplier lowered by one. Returns how
    /// many hosts came back.
    pub fn sweep(&self, all: &[Arc<Endpoint>], now: u64) -> usize {
        let mut back = 0;
        for ep in all {
            if ep.is_ejected() {
                if now >= ep.ejected_until_ms.load(Ordering::Relaxed) {
                    ep.ejected.store(false, Ordering::Relaxed);
                    back += 1;
                }
            } else if ep.ejections.load(Ordering::Relaxed) > 0 {
                let _ = ep
                    .ejections
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
        }
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_consecutive_errors_within_max_percent() {
        let eps: Vec<_> = (0..4)
            .map(|i| {
                Arc::new(Endpoint::new(
                    format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    Default::default(),
                ))
            })
            .collect();
        let od = OutlierDetection {
            consecutive_5xx: 2,
            max_ejection_percent: 50,
            ..Default::default()
        };
        od.record(&eps[0], TryResult::Status(500), &eps);
        assert!(!eps[0].is_ejected());
        od.record(&eps[0], TryResult::Status(200), &eps);
        od.record(&eps[0], TryResult::Status(500), &eps);
        assert!(!eps[0].is_ejected(), "a success resets the count");
        od.record(&eps[0], TryResult::LocalFailure, &eps);
        assert!(eps[0].is_ejected());
        for _ in 0..2 {
            od.record(&eps[1], TryResult::Status(503), &eps);
        }
        assert!(eps[1].is_ejected());
        for _ in 0..2 {
            od.record(&eps[2], TryResult::Status(503), &eps);
        }
        assert!(!eps[2].is_ejected(), "50% already ejected");
    }

    #[test]
    fn sweep_returns_hosts_after_their_time_and_the_multiplier_decays() {
        let eps: Vec<_> = (0..2)
            .map(|i| {
                Arc::new(Endpoint::new(
                    format!("127.0.0.1:{}", 1100 + i).parse().unwrap(),
                    Default::default(),
                ))
            })
            .collect();
        let od = OutlierDetection {
            consecutive_5xx: 1,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 100,
            ..Default::default()
        };
        od.record(&eps[0], TryResult::Status(500), &eps);
        assert!(eps[0].is_ejected());
        let t0 = now_ms();
        // Before the ejection time: a sweep keeps it out.
        assert_eq!(od.sweep(&eps, t0 + 29_000), 0);
        assert!(eps[0].is_ejected());
        // After it: back at the sweep, not before.
        assert_eq!(od.sweep(&eps, t0 + 31_000), 1);
        assert!(!eps[0].is_ejected());
        // Ejected again at once: twice the base time.
        od.record(&eps[0], TryResult::Status(500), &eps);
        assert_eq!(eps[0].ejections(), 2);
        let until = eps[0].ejected_until_ms.load(Ordering::Relaxed);
        assert!(until >= now_ms() + 59_000, "2 x 30 s");
        od.sweep(&eps, until);
        // Healthy sweeps lower the multiplier back to zero.
        od.sweep(&eps, until);
        od.sweep(&eps, until);
        assert_eq!(eps[0].ejections(), 0);
    }
}
