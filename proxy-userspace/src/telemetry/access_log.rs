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
    /// The connection's security and peer identities (Istio's
    /// `connection_security_policy`, `source_principal`,
    /// `destination_principal`, `reporter`).
    pub peer: crate::telemetry::PeerInfo,
    /// TCP: `istio_tcp_connections_opened_total` was counted when the
    /// connection opened ([`AccessLogSink::opened`]), so this closing
    /// record does not count it again.
    pub opened_counted: bool,
}

/// Where access-log records go. Called once per finished request, on the
/// request's task: implementations must not block.
pub trait AccessLogSink: Send + Sync + 'static {
    /// Consume one record.
    fn log(&self, record: AccessLogRecord);

    /// A TCP connection opened: count it now, as Istio counts
    /// `istio_tcp_connections_opened_total` when a connection opens (its
    /// record comes to [`AccessLogSink::log`] when it closes, with
    /// `opened_counted` set). Default: nothing.
    fn opened(&self, _record: &AccessLogRecord) {}

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

/// One Envoy format operator Strait can fill from an [`AccessLogRecord`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    StartTime,
    Method,
    Path,
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamServiceTime,
    XForwardedFor,
    UserAgent,
    RequestId,
    Authority,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamLocalAddress,
    DownstreamRemoteAddress,
    RequestedServerName,
    RouteName,
    DownstreamPeerUriSan,
    UpstreamPeerUriSan,
}

impl Op {
    /// `%NAME%` or `%NAME(ARG)%` (`%REQ(X?Y)%` takes the first header the
    /// record has); `Err` names what Strait cannot log.
    fn parse(op: &str) -> Result<Op, String> {
        let (name, arg) = match op.split_once('(') {
            Some((n, rest)) => {
                let arg = rest.split(')').next().unwrap_or("");
                (n, Some(arg.to_ascii_lowercase()))
            }
            None => (op, None),
        };
        Ok(match (name, arg.as_deref()) {
            ("START_TIME", _) => Op::StartTime,
            ("PROTOCOL", None) => Op::Protocol,
            ("RESPONSE_CODE", None) => Op::ResponseCode,
            ("RESPONSE_FLAGS", None) => Op::ResponseFlags,
            ("RESPONSE_CODE_DETAILS", None) => Op::ResponseCodeDetails,
            ("CONNECTION_TERMINATION_DETAILS", None) => Op::ConnectionTerminationDetails,
            ("UPSTREAM_TRANSPORT_FAILURE_REASON", None) => Op::UpstreamTransportFailureReason,
            ("BYTES_RECEIVED", None) => Op::BytesReceived,
            ("BYTES_SENT", None) => Op::BytesSent,
            ("DURATION", None) => Op::Duration,
            ("UPSTREAM_HOST", None) => Op::UpstreamHost,
            ("UPSTREAM_CLUSTER", None) => Op::UpstreamCluster,
            ("UPSTREAM_LOCAL_ADDRESS", None) => Op::UpstreamLocalAddress,
            ("DOWNSTREAM_LOCAL_ADDRESS", None) => Op::DownstreamLocalAddress,
            ("DOWNSTREAM_REMOTE_ADDRESS", None) => Op::DownstreamRemoteAddress,
            ("REQUESTED_SERVER_NAME", None) => Op::RequestedServerName,
            ("ROUTE_NAME", None) => Op::RouteName,
            ("DOWNSTREAM_PEER_URI_SAN", None) => Op::DownstreamPeerUriSan,
            ("UPSTREAM_PEER_URI_SAN", None) => Op::UpstreamPeerUriSan,
            ("RESP", Some("x-envoy-upstream-service-time")) => Op::UpstreamServiceTime,
            ("REQ", Some(h)) => match h.split('?').next().unwrap_or(h) {
                ":method" => Op::Method,
                ":path" | "x-envoy-original-path" => Op::Path,
                ":authority" | "host" => Op::Authority,
                "user-agent" => Op::UserAgent,
                "x-forwarded-for" => Op::XForwardedFor,
                "x-request-id" => Op::RequestId,
                other => return Err(format!("request header {other} is not recorded by Strait")),
            },
            _ => return Err(format!("operator %{op}% is not supported by Strait")),
        })
    }

    fn value(&self, r: &AccessLogRecord) -> Option<String> {
        fn s<T: ToString>(v: &Option<T>) -> Option<String> {
            v.as_ref().map(ToString::to_string)
        }
        match self {
            Op::StartTime => r.start_time.map(format_start_time),
            Op::Method => s(&r.method),
            Op::Path => r.path.clone(),
            Op::Protocol => r.protocol.map(str::to_string),
            Op::ResponseCode => Some(r.response_code.to_string()),
            Op::ResponseFlags => Some(r.response_flags.to_string()),
            Op::ResponseCodeDetails => s(&r.response_code_details),
            Op::ConnectionTerminationDetails => None,
            Op::UpstreamTransportFailureReason => r.upstream_transport_failure_reason.clone(),
            Op::BytesReceived => Some(r.bytes_received.to_string()),
            Op::BytesSent => Some(r.bytes_sent.to_string()),
            Op::Duration => Some(r.duration_ms.to_string()),
            Op::UpstreamServiceTime => s(&r.upstream_service_time_ms),
            Op::XForwardedFor => r.x_forwarded_for.clone(),
            Op::UserAgent => r.user_agent.clone(),
            Op::RequestId => r.request_id.clone(),
            Op::Authority => r.authority.clone(),
            Op::UpstreamHost => s(&r.upstream_host),
            Op::UpstreamCluster => s(&r.upstream_cluster),
            Op::UpstreamLocalAddress => s(&r.upstream_local_address),
            Op::DownstreamLocalAddress => s(&r.downstream_local_address),
            Op::DownstreamRemoteAddress => s(&r.downstream_remote_address),
            Op::RequestedServerName => r.requested_server_name.clone(),
            Op::RouteName => s(&r.route_name),
            Op::DownstreamPeerUriSan => s(&r.peer.source_principal),
            Op::UpstreamPeerUriSan => s(&r.peer.destination_principal),
        }
    }

    /// JSON value: numbers for counts and codes, strings else, `null` when unset.
    fn json(&self, r: &AccessLogRecord) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Op::ResponseCode => Value::from(r.response_code),
            Op::BytesReceived => Value::from(r.bytes_received),
            Op::BytesSent => Value::from(r.bytes_sent),
            Op::Duration => Value::from(r.duration_ms),
            Op::UpstreamServiceTime => r.upstream_service_time_ms.map_or(Value::Null, Value::from),
            _ => self.value(r).map_or(Value::Null, Value::String),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Op(Op),
}

fn parse_pieces(format: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = format;
    while let Some(i) = rest.find('%') {
        if i > 0 {
            out.push(Piece::Text(rest[..i].to_string()));
        }
        let after = &rest[i + 1..];
        let Some(j) = after.find('%') else {
            return Err(format!("unterminated operator in {format:?}"));
        };
        out.push(Piece::Op(Op::parse(&after[..j])?));
        rest = &after[j + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

/// How access-log lines are written: MeshConfig `accessLogEncoding` and
/// `accessLogFormat` (Envoy's format operators, those Strait records:
/// `%START_TIME%`, `%REQ(:METHOD)%`, `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`,
/// `%PROTOCOL%`, `%RESPONSE_CODE%`, `%RESPONSE_FLAGS%`,
/// `%RESPONSE_CODE_DETAILS%`, `%CONNECTION_TERMINATION_DETAILS%`,
/// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`, `%BYTES_RECEIVED%`, `%BYTES_SENT%`,
/// `%DURATION%`, `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%`,
/// `%REQ(X-FORWARDED-FOR)%`, `%REQ(USER-AGENT)%`, `%REQ(X-REQUEST-ID)%`,
/// `%REQ(:AUTHORITY)%`, `%UPSTREAM_HOST%`, `%UPSTREAM_CLUSTER%`,
/// `%UPSTREAM_LOCAL_ADDRESS%`, `%DOWNSTREAM_LOCAL_ADDRESS%`,
/// `%DOWNSTREAM_REMOTE_ADDRESS%`, `%REQUESTED_SERVER_NAME%`,
/// `%ROUTE_NAME%`). Empty format: Istio's default line (TEXT) or Istio's
/// default JSON object (JSON, its keys as Istio names them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFormat(Format);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Format {
    /// Istio's default text line ([`AccessLogRecord`]'s `Display`).
    DefaultText,
    /// A text format string.
    Text(Vec<Piece>),
    /// JSON: key → format (Istio's default keys when no format was given).
    Json(Vec<(String, Vec<Piece>)>),
}

/// Istio's default JSON access-log keys and their operators.
const DEFAULT_JSON: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    ("route_name", "%ROUTE_NAME%"),
];

impl LogFormat {
    /// From MeshConfig `accessLogEncoding` (`json`) and `accessLogFormat`.
    /// A JSON format is a JSON object of key → format string. `Err` says
    /// which operator or header Strait cannot log.
    pub fn new(json: bool, format: &str) -> Result<LogFormat, String> {
        let format = format.trim_end_matches('\n');
        let f = match (json, format.trim().is_empty()) {
            (false, true) => Ok(Format::DefaultText),
            (false, false) => parse_pieces(format).map(Format::Text),
            (true, true) => Ok(Format::Json(
                DEFAULT_JSON
                    .iter()
                    .map(|(k, f)| Ok((k.to_string(), parse_pieces(f)?)))
                    .collect::<Result<_, String>>()?,
            )),
            (true, false) => {
                let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(format)
                    .map_err(|e| format!("JSON accessLogFormat is not a JSON object: {e}"))?;
                obj.into_iter()
                    .map(|(k, v)| {
                        let f = v.as_str().ok_or_else(|| {
                            format!("JSON accessLogFormat key {k:?}: not a string")
                        })?;
                        Ok((k, parse_pieces(f)?))
                    })
                    .collect::<Result<_, String>>()
                    .map(Format::Json)
            }
        };
        f.map(LogFormat)
    }

    /// One line (without the newline).
    pub fn render(&self, r: &AccessLogRecord) -> String {
        fn text(pieces: &[Piece], r: &AccessLogRecord) -> String {
            let mut out = String::new();
            for p in pieces {
                match p {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Op(op) => out.push_str(op.value(r).as_deref().unwrap_or("-")),
                }
            }
            out
        }
        match &self.0 {
            Format::DefaultText => r.to_string(),
            Format::Text(pieces) => text(pieces, r),
            Format::Json(fields) => {
                let mut m = serde_json::Map::new();
                for (k, pieces) in fields {
                    let v = match pieces.as_slice() {
                        [Piece::Op(op)] => op.json(r),
                        _ => serde_json::Value::String(text(pieces, r)),
                    };
                    m.insert(k.clone(), v);
                }
                serde_json::Value::Object(m).to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn mesh_config_formats() {
        let r = AccessLogRecord {
            method: Some(http::Method::GET),
            path: Some("/p".into()),
            response_code: 503,
            response_flags: ResponseFlags::NO_HEALTHY_UPSTREAM,
            upstream_cluster: Some("c".into()),
            duration_ms: 7,
            ..Default::default()
        };
        let t = LogFormat::new(false, "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% [%DURATION%]\n").unwrap();
        assert_eq!(t.render(&r), "GET /p 503 UH - [7]");
        let j = LogFormat::new(true, "").unwrap();
        let v: serde_json::Value = serde_json::from_str(&j.render(&r)).unwrap();
        assert_eq!(v["method"], "GET");
        assert_eq!(v["response_code"], 503);
        assert_eq!(v["response_flags"], "UH");
        assert_eq!(v["upstream_host"], serde_json::Value::Null);
        assert_eq!(v.as_object().unwrap().len(), DEFAULT_JSON.len());
        let j = LogFormat::new(
            true,
            r#"{"code": "%RESPONSE_CODE%", "what": "%REQ(:METHOD)% on %UPSTREAM_CLUSTER%"}"#,
        )
        .unwrap();
        assert_eq!(j.render(&r), r#"{"code":503,"what":"GET on c"}"#);
        assert!(LogFormat::new(false, "%REQ(X-B3-TRACEID)%")
            .unwrap_err()
            .contains("x-b3-traceid"));
        assert!(LogFormat::new(false, "%DYNAMIC_METADATA(x)%").is_err());
        assert_eq!(LogFormat::new(false, "").unwrap().0, Format::DefaultText);
    }

    #[test]
    fn peer_uri_sans_are_the_connection_identities() {
        let r = AccessLogRecord {
            peer: crate::telemetry::PeerInfo::mutual_tls(
                crate::telemetry::Reporter::Destination,
                Some("spiffe://cluster.local/ns/a/sa/client".into()),
                Some("spiffe://cluster.local/ns/b/sa/server".into()),
            ),
            ..Default::default()
        };
        let t =
            LogFormat::new(false, "%DOWNSTREAM_PEER_URI_SAN% %UPSTREAM_PEER_URI_SAN%\n").unwrap();
        assert_eq!(
            t.render(&r),
            "spiffe://cluster.local/ns/a/sa/client spiffe://cluster.local/ns/b/sa/server"
        );
        let j = LogFormat::new(true, r#"{"src": "%DOWNSTREAM_PEER_URI_SAN%"}"#).unwrap();
        assert_eq!(
            j.render(&AccessLogRecord::default()),
            r#"{"src":null}"#,
            "no identity: null, as Envoy"
        );
    }

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
