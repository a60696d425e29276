//! One record per request (or TCP connection), printed in Istio's default
//! Envoy text format and handed to a sink so the daemon can also count
//! Istio's standard metrics (`istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes`, ...).
//!
//! Format (Istio `meshConfig.accessLogFormat` default, one line):
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
//! %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
//! "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
//! %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
//! "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
//! %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
//! %REQUESTED_SERVER_NAME% %ROUTE_NAME%
//! ```
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::flags::ResponseFlags;

/// Everything the access log line and Istio's metrics need about one request
/// (HTTP) or one connection (TCP / TLS passthrough). Missing values print as
/// `-`, as Envoy does.
#[derive(Clone, Debug, Default)]
pub struct AccessLogRecord {
    /// When the request's headers (or the connection) arrived.
    pub start_time: Option<SystemTime>,
    /// `:method`; `None` for TCP.
    pub method: Option<http::Method>,
    /// The path as the client sent it (before any rewrite).
    pub path: Option<String>,
    /// `HTTP/1.1`, `HTTP/2`, ...; `None` for TCP.
    pub protocol: Option<&'static str>,
    /// `"http"`, `"grpc"` or `"tcp"`: Istio's `request_protocol` label.
    pub request_protocol: &'static str,
    /// Status sent to the client; 0 for TCP and for requests reset before a
    /// response.
    pub response_code: u16,
    /// `grpc-status` of the response, when gRPC.
    pub grpc_status: Option<u32>,
    /// Envoy response flags (`UO`, `NR`, ...).
    pub response_flags: ResponseFlags,
    /// Envoy `%RESPONSE_CODE_DETAILS%`: `via_upstream`, `route_not_found`,
    /// `fault_filter_abort`, `upstream_reset_before_response_started{...}`, ...
    pub response_code_details: Option<&'static str>,
    /// Why connecting or talking to the upstream failed (e.g. `connection refused`).
    pub upstream_transport_failure_reason: Option<String>,
    /// Request body bytes read from the client.
    pub bytes_received: u64,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    /// From start until the last response byte, milliseconds.
    pub duration_ms: u64,
    /// Upstream time to response headers, milliseconds (Envoy's
    /// `x-envoy-upstream-service-time`).
    pub upstream_service_time_ms: Option<u64>,
    /// `x-forwarded-for` as received.
    pub x_forwarded_for: Option<String>,
    /// `user-agent`.
    pub user_agent: Option<String>,
    /// `x-request-id` (generated when the client sent none).
    pub request_id: Option<String>,
    /// `:authority` / `Host`.
    pub authority: Option<String>,
    /// The endpoint that served the request.
    pub upstream_host: Option<SocketAddr>,
    /// Envoy cluster name, e.g. `outbound|9080|v1|reviews.default.svc.cluster.local`.
    pub upstream_cluster: Option<Arc<str>>,
    /// Local address of the upstream connection.
    pub upstream_local_address: Option<SocketAddr>,
    /// The original destination (service VIP:port) of the connection.
    pub downstream_local_address: Option<SocketAddr>,
    /// The client's address.
    pub downstream_remote_address: Option<SocketAddr>,
    /// SNI of a TLS connection.
    pub requested_server_name: Option<String>,
    /// Name of the matched route (VirtualService `http[].name`).
    pub route_name: Option<Arc<str>>,
    /// Fully qualified destination service host (`destination_service` label).
    pub destination_service: Option<Arc<str>>,
}

/// Where access-log records go. Called once per finished request, on the
/// request's task: implementations must not block.
pub trait AccessLogSink: Send + Sync + 'static {
    /// Consume one record.
    fn log(&self, record: AccessLogRecord);

    /// `false` when records are dropped anyway: the proxy then skips
    /// copying request fields into them.
    fn enabled(&self) -> bool {
        true
    }
}

/// Drops every record (benchmarks).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAccessLog;

impl AccessLogSink for NoAccessLog {
    fn log(&self, _record: AccessLogRecord) {}

    fn enabled(&self) -> bool {
        false
    }
}

/// Writes each record as one line to standard output, like Istio's
/// `accessLogFile: /dev/stdout`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdoutAccessLog;

impl AccessLogSink for StdoutAccessLog {
    fn log(&self, record: AccessLogRecord) {
        println!("{record}");
    }
}

impl AccessLogSink for tokio::sync::mpsc::UnboundedSender<AccessLogRecord> {
    fn log(&self, record: AccessLogRecord) {
        // A closed receiver means nobody wants the log any more.
        let _ = self.send(record);
    }
}

struct Dash<'a, T>(&'a Option<T>);

impl<T: fmt::Display> fmt::Display for Dash<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// `2026-11-21T17:00:00.000Z`: Envoy's default `%START_TIME%` (UTC, ms).
pub fn format_start_time(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

impl fmt::Display for AccessLogRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let start = self.start_time.map(format_start_time);
        let code = if self.response_code == 0 {
            None
        } else {
            Some(self.response_code)
        };
        write!(
            f,
            "[{}] \"{} {} {}\" {} {} {} - \"{}\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} {} {} {} {} {}",
            Dash(&start),
            Dash(&self.method),
            Dash(&self.path),
            Dash(&self.protocol),
            code.unwrap_or(0),
            self.response_flags,
            Dash(&self.response_code_details),
            Dash(&self.upstream_transport_failure_reason),
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
            Dash(&self.upstream_service_time_ms),
            Dash(&self.x_forwarded_for),
            Dash(&self.user_agent),
            Dash(&self.request_id),
            Dash(&self.authority),
            Dash(&self.upstream_host),
            Dash(&self.upstream_cluster),
            Dash(&self.upstream_local_address),
            Dash(&self.downstream_local_address),
            Dash(&self.downstream_remote_address),
            Dash(&self.requested_server_name),
            Dash(&self.route_name),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_like_envoy() {
        let r = AccessLogRecord {
            start_time: Some(UNIX_EPOCH + Duration::from_millis(1_795_280_400_123)),
            method: Some(http::Method::GET),
            path: Some("/productpage".into()),
            protocol: Some("HTTP/1.1"),
            response_code: 200,
            response_code_details: Some("via_upstream"),
            bytes_sent: 5293,
            duration_ms: 31,
            upstream_service_time_ms: Some(30),
            user_agent: Some("curl/7.88.1".into()),
            request_id: Some("id-1".into()),
            authority: Some("productpage:9080".into()),
            upstream_host: Some("10.0.0.12:9080".parse().unwrap()),
            upstream_cluster: Some("outbound|9080|v1|productpage.default.svc.cluster.local".into()),
            ..Default::default()
        };
        assert_eq!(
            r.to_string(),
            "[2026-11-21T17:00:00.123Z] \"GET /productpage HTTP/1.1\" 200 - via_upstream - \"-\" 0 5293 31 30 \"-\" \"curl/7.88.1\" \"id-1\" \"productpage:9080\" \"10.0.0.12:9080\" outbound|9080|v1|productpage.default.svc.cluster.local - - - - -"
        );
    }
}
