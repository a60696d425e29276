//! Envoy's retry policy as Istio configures it (`HTTPRetry`): conditions
//! (`retryOn`), attempts, per-try timeout, and the default policy Istio
//! applies to routes without `retries`.
use std::time::Duration;

/// Envoy `retry_on` conditions Istio passes through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    /// `5xx`: any 5xx response, or reset / connect failure.
    pub const FIVE_XX: Self = Self(1);
    /// `gateway-error`: 502, 503, 504.
    pub const GATEWAY_ERROR: Self = Self(1 << 1);
    /// `reset`: upstream reset/disconnect before response headers.
    pub const RESET: Self = Self(1 << 2);
    /// `connect-failure`.
    pub const CONNECT_FAILURE: Self = Self(1 << 3);
    /// `retriable-4xx`: 409.
    pub const RETRIABLE_4XX: Self = Self(1 << 4);
    /// `refused-stream`: HTTP/2 REFUSED_STREAM.
    pub const REFUSED_STREAM: Self = Self(1 << 5);
    /// `retriable-status-codes`: the policy's status list.
    pub const RETRIABLE_STATUS_CODES: Self = Self(1 << 6);
    /// gRPC `cancelled` (1).
    pub const CANCELLED: Self = Self(1 << 7);
    /// gRPC `deadline-exceeded` (4).
    pub const DEADLINE_EXCEEDED: Self = Self(1 << 8);
    /// gRPC `internal` (13).
    pub const INTERNAL: Self = Self(1 << 9);
    /// gRPC `resource-exhausted` (8).
    pub const RESOURCE_EXHAUSTED: Self = Self(1 << 10);
    /// gRPC `unavailable` (14).
    pub const UNAVAILABLE: Self = Self(1 << 11);

    /// Parses Istio's `retryOn` (comma separated). Plain numbers are status
    /// codes, added to `codes` (and enable `retriable-status-codes`), as
    /// Istio does. Unknown names are errors.
    pub fn parse(s: &str, codes: &mut Vec<u16>) -> Result<Self, String> {
        let mut on = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Ok(code) = part.parse::<u16>() {
                codes.push(code);
                on.0 |= Self::RETRIABLE_STATUS_CODES.0;
                continue;
            }
            on.0 |= match part {
                "5xx" => Self::FIVE_XX,
                "gateway-error" => Self::GATEWAY_ERROR,
                "reset" | "reset-before-request" => Self::RESET,
                "connect-failure" => Self::CONNECT_FAILURE,
                "retriable-4xx" => Self::RETRIABLE_4XX,
                "refused-stream" => Self::REFUSED_STREAM,
                "retriable-status-codes" => Self::RETRIABLE_STATUS_CODES,
                "cancelled" => Self::CANCELLED,
                "deadline-exceeded" => Self::DEADLINE_EXCEEDED,
                "internal" => Self::INTERNAL,
                "resource-exhausted" => Self::RESOURCE_EXHAUSTED,
                "unavailable" => Self::UNAVAILABLE,
                // Accepted by Envoy, no effect here (no such upstream events).
                "envoy-ratelimited" | "retriable-headers" | "http3-post-connect-failure" => {
                    Self::default()
                }
                other => return Err(format!("unknown retryOn value {other:?}")),
            }
            .0;
        }
        Ok(on)
    }

    /// Whether every condition of `other` is enabled.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Istio `HTTPRetry` compiled to Envoy's `retry_policy`.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first try (`attempts`); 0 disables retries.
    pub attempts: u32,
    /// `perTryTimeout`; `None` = the route timeout only.
    pub per_try_timeout: Option<Duration>,
    /// `retryOn` conditions.
    pub retry_on: RetryOn,
    /// Status codes for `retriable-status-codes`.
    pub retriable_status_codes: Vec<u16>,
}

impl Default for RetryPolicy {
    /// Istio's default when a route has no `retries`: 2 attempts on
    /// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`
    /// with 503 retriable.
    fn default() -> Self {
        let mut codes = vec![503];
        let retry_on = RetryOn::parse(
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
            &mut codes,
        )
        .unwrap_or_default();
        Self {
            attempts: 2,
            per_try_timeout: None,
            retry_on,
            retriable_status_codes: codes,
        }
    }
}

/// Outcome of one upstream try, for the retry decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryOutcome {
    /// Response headers with this status and, for gRPC, `grpc-status`.
    Response(u16, Option<u32>),
    /// TCP connect failed or timed out.
    ConnectFailure,
    /// HTTP/2 REFUSED_STREAM.
    RefusedStream,
    /// Reset or disconnect before response headers.
    Reset,
    /// The per-try timeout fired.
    PerTryTimeout,
}

impl RetryPolicy {
    /// Whether `outcome` may be retried under this policy (attempt budget
    /// is the caller's).
    pub fn retriable(&self, outcome: TryOutcome) -> bool {
        let on = self.retry_on;
        match outcome {
            TryOutcome::Response(code, grpc) => {
                (on.contains(RetryOn::FIVE_XX) && (500..600).contains(&code))
                    || (on.contains(RetryOn::GATEWAY_ERROR) && matches!(code, 502..=504))
                    || (on.contains(RetryOn::RETRIABLE_4XX) && code == 409)
                    || (on.contains(RetryOn::RETRIABLE_STATUS_CODES)
                        && self.retriable_status_codes.contains(&code))
                    || grpc.is_some_and(|g| {
                        (on.contains(RetryOn::CANCELLED) && g == 1)
                            || (on.contains(RetryOn::DEADLINE_EXCEEDED) && g == 4)
                            || (on.contains(RetryOn::RESOURCE_EXHAUSTED) && g == 8)
                            || (on.contains(RetryOn::INTERNAL) && g == 13)
                            || (on.contains(RetryOn::UNAVAILABLE) && g == 14)
                    })
            }
            TryOutcome::ConnectFailure => {
                on.contains(RetryOn::CONNECT_FAILURE)
                    || on.contains(RetryOn::FIVE_XX)
                    || on.contains(RetryOn::GATEWAY_ERROR)
            }
            TryOutcome::RefusedStream => {
                on.contains(RetryOn::REFUSED_STREAM) || on.contains(RetryOn::FIVE_XX)
            }
            TryOutcome::Reset => {
                on.contains(RetryOn::RESET)
                    || on.contains(RetryOn::FIVE_XX)
                    || on.contains(RetryOn::GATEWAY_ERROR)
            }
            TryOutcome::PerTryTimeout => {
                on.contains(RetryOn::FIVE_XX)
                    || on.contains(RetryOn::GATEWAY_ERROR)
                    || on.contains(RetryOn::RESET)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_on_values() {
        let mut codes = vec![];
        let on =
            RetryOn::parse("gateway-error,connect-failure,503,unavailable", &mut codes).unwrap();
        assert_eq!(codes, vec![503]);
        let p = RetryPolicy {
            attempts: 3,
            per_try_timeout: None,
            retry_on: on,
            retriable_status_codes: codes,
        };
        assert!(p.retriable(TryOutcome::Response(502, None)));
        assert!(!p.retriable(TryOutcome::Response(500, None)));
        assert!(p.retriable(TryOutcome::Response(200, Some(14))));
        assert!(p.retriable(TryOutcome::ConnectFailure));
        assert!(RetryOn::parse("bogus", &mut vec![]).is_err());
        let d = RetryPolicy::default();
        assert!(d.retriable(TryOutcome::Response(503, None)));
        assert!(!d.retriable(TryOutcome::Response(500, None)));
    }
}
