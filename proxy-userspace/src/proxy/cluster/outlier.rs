//! Envoy outlier detection as Istio configures it (DestinationRule
//! `trafficPolicy.outlierDetection`): consecutive errors eject a host for
//! `baseEjectionTime × times ejected`, never more than
//! `maxEjectionPercent` of the cluster at once.
//!
//! Differences from Envoy: ejection is checked when the error arrives and
//! the host comes back when its ejection time has passed (Envoy re-checks
//! both every `interval`; `interval` is kept for the config dump only).
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::endpoint::{now_ms, Endpoint};

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
    pub fn record(&self, ep: &Endpoint, result: TryResult, all: &[std::sync::Arc<Endpoint>]) {
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

    fn eject(&self, ep: &Endpoint, all: &[std::sync::Arc<Endpoint>]) {
        let ejected = all.iter().filter(|e| e.is_ejected()).count();
        // Envoy: no new ejection once the ejected share reaches the maximum.
        if all.is_empty() || ejected * 100 / all.len() >= self.max_ejection_percent as usize {
            return;
        }
        let times = ep.ejections.fetch_add(1, Ordering::Relaxed) as u64 + 1;
        let ms = self.base_ejection_time.as_millis() as u64 * times;
        ep.ejected_until_ms.store(now_ms() + ms, Ordering::Relaxed);
        ep.consecutive_5xx.store(0, Ordering::Relaxed);
        ep.consecutive_gateway.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
}
