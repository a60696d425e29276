//! The one table of what the proxy does when it answers a request (or ends
//! a connection) itself: for each failure, Envoy's response flag,
//! `%RESPONSE_CODE_DETAILS%`, status and local-reply body. Every failure
//! path records and replies through [`Failure::record`] and
//! [`Failure::reply`], so the mapping cannot drift between HTTP/1.1,
//! HTTP/2, gRPC and TCP.
use http::{Response, StatusCode};

use super::local_reply::{self as lr, local_reply};
use crate::proxy::body::ProxyBody;
use crate::telemetry::access_log::AccessLogRecord;
use crate::telemetry::flags::ResponseFlags;
use crate::upstream::client::UpstreamError;

/// A request the proxy could not send upstream, or an upstream try that
/// failed before response headers.
#[derive(Debug, Clone, Copy)]
pub enum Failure<'a> {
    /// No route matched (`NR`, 404).
    NoRoute,
    /// No healthy endpoint to pick (`UH`, 503 `no healthy upstream`).
    NoHealthyUpstream,
    /// The circuit breaker is full (`UO`, 503 `... reset reason: overflow`).
    Overflow,
    /// The route timeout (`overall`) or the per-try timeout passed (`UT`,
    /// 504 `upstream request timeout`).
    Timeout {
        /// The route's whole timeout, not one try's.
        overall: bool,
    },
    /// The upstream try failed: connect failure (`UF`) or reset before
    /// headers (`UC`), 503 with Envoy's reset reason.
    Upstream(&'a UpstreamError),
}

impl Failure<'_> {
    /// Envoy's response flag.
    pub fn flag(&self) -> ResponseFlags {
        match self {
            Failure::NoRoute => ResponseFlags::NO_ROUTE_FOUND,
            Failure::NoHealthyUpstream => ResponseFlags::NO_HEALTHY_UPSTREAM,
            Failure::Overflow => ResponseFlags::UPSTREAM_OVERFLOW,
            Failure::Timeout { .. } => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
            Failure::Upstream(UpstreamError::Connect(_)) => {
                ResponseFlags::UPSTREAM_CONNECTION_FAILURE
            }
            Failure::Upstream(UpstreamError::RefusedStream | UpstreamError::Reset(_)) => {
                ResponseFlags::UPSTREAM_CONNECTION_TERMINATION
            }
        }
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%`.
    pub fn details(&self) -> &'static str {
        match self {
            Failure::NoRoute => "route_not_found",
            Failure::NoHealthyUpstream => "no_healthy_upstream",
            Failure::Overflow => "overflow",
            Failure::Timeout { overall: true } => "upstream_response_timeout",
            Failure::Timeout { overall: false } => "upstream_per_try_timeout",
            Failure::Upstream(UpstreamError::Connect(_)) => {
                "upstream_reset_before_response_started{connection_failure}"
            }
            Failure::Upstream(_) => {
                "upstream_reset_before_response_started{connection_termination}"
            }
        }
    }

    /// The local reply's status.
    pub fn status(&self) -> StatusCode {
        match self {
            Failure::NoRoute => StatusCode::NOT_FOUND,
            Failure::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The local reply's body (Envoy's wording).
    pub fn body(&self) -> &'static str {
        match self {
            Failure::NoRoute => "",
            Failure::NoHealthyUpstream => lr::NO_HEALTHY_UPSTREAM,
            Failure::Overflow => lr::OVERFLOW,
            Failure::Timeout { .. } => lr::TIMEOUT,
            Failure::Upstream(UpstreamError::Connect(_)) => lr::CONNECT_FAILURE,
            Failure::Upstream(_) => lr::CONNECTION_TERMINATION,
        }
    }

    /// Records the failure in the access-log record: flag, details and,
    /// for a connect failure, `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub fn record(&self, rec: &mut AccessLogRecord) {
        rec.response_flags.insert(self.flag());
        rec.response_code_details = Some(self.details());
        if let Failure::Upstream(e) = self {
            if let Some(reason) = e.transport_failure_reason() {
                rec.upstream_transport_failure_reason = Some(reason);
            }
        }
    }

    /// Records the failure and builds the local reply (trailers-only gRPC
    /// for gRPC clients).
    pub fn reply(&self, rec: &mut AccessLogRecord, grpc: bool) -> Response<ProxyBody> {
        self.record(rec);
        local_reply(self.status(), self.body(), grpc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::client::ConnectError;

    #[test]
    fn a_connect_failure_keeps_its_cause_and_maps_to_uf() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = UpstreamError::Connect(ConnectError::from(io));
        // The cause is reachable as a source, not flattened into a string.
        let src = std::error::Error::source(&e).expect("a source");
        assert!(src
            .downcast_ref::<ConnectError>()
            .is_some_and(|c| matches!(c, ConnectError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused)));
        let mut rec = AccessLogRecord::default();
        let f = Failure::Upstream(&e);
        let resp = f.reply(&mut rec, false);
        assert_eq!(resp.status(), 503);
        assert_eq!(rec.response_flags.to_string(), "UF");
        assert_eq!(
            rec.response_code_details,
            Some("upstream_reset_before_response_started{connection_failure}")
        );
        assert_eq!(
            rec.upstream_transport_failure_reason.as_deref(),
            Some("connection refused")
        );
        let mut rec = AccessLogRecord::default();
        Failure::Timeout { overall: false }.record(&mut rec);
        assert_eq!(rec.response_flags.to_string(), "UT");
        assert_eq!(rec.response_code_details, Some("upstream_per_try_timeout"));
        let reset = UpstreamError::Reset("peer reset".into());
        assert_eq!(Failure::Upstream(&reset).flag().to_string(), "UC");
        assert_eq!(Failure::NoRoute.status(), 404);
    }
}
