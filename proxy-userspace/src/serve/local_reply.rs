//! Responses the proxy makes itself (Envoy "local replies"): text bodies
//! with Envoy's wording, turned into trailers-only gRPC responses for gRPC
//! clients as Envoy's `grpc_status` mapping does.
use http::{HeaderValue, Response, StatusCode};

use crate::proxy::body::{empty, full, ProxyBody};

/// Envoy's body for a 503 with no healthy host (`UH`).
pub const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";
/// Envoy's body for a connect failure (`UF`).
pub const CONNECT_FAILURE: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
/// Envoy's body for a reset before response headers (`UC`).
pub const CONNECTION_TERMINATION: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
/// Envoy's body for an overflow (`UO`).
pub const OVERFLOW: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";
/// Envoy's body for a route timeout (`UT`).
pub const TIMEOUT: &str = "upstream request timeout";
/// Envoy's body for a fault abort (`FI`).
pub const FAULT_ABORT: &str = "fault filter abort";

/// Envoy's HTTP → gRPC status mapping for local replies.
pub fn grpc_status_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// A local reply. For gRPC requests: HTTP 200, `content-type:
/// application/grpc`, `grpc-status` and `grpc-message` in the headers
/// (trailers-only), like Envoy.
pub fn local_reply(status: StatusCode, body: &'static str, grpc: bool) -> Response<ProxyBody> {
    if grpc {
        return grpc_reply(grpc_status_for(status), body);
    }
    let mut r = Response::new(if body.is_empty() { empty() } else { full(body) });
    *r.status_mut() = status;
    if !body.is_empty() {
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        r.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    r
}

/// A trailers-only gRPC response with `grpc-status: code`.
pub fn grpc_reply(code: u32, message: &str) -> Response<ProxyBody> {
    let mut r = Response::new(empty());
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(message) {
        if !message.is_empty() {
            h.insert("grpc-message", v);
        }
    }
    r
}
