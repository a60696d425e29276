//! Istio `corsPolicy` as Envoy's CORS filter applies it: the proxy answers
//! allowed preflights itself and decorates responses to allowed origins.
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::proxy::body::{empty, ProxyBody};
use crate::proxy::head::ReqHeaders;
use crate::runtime::route::CorsPolicy;

/// The request's `origin` when the policy allows it.
pub fn allowed_origin(policy: &CorsPolicy, headers: &ReqHeaders) -> Option<HeaderValue> {
    let origin = headers.get_str(&http::header::ORIGIN)?;
    if !policy.origin_allowed(origin) {
        return None;
    }
    headers.get_value(&http::header::ORIGIN)
}

/// Whether the request is a CORS preflight (`OPTIONS` with `origin` and
/// `access-control-request-method`).
pub fn is_preflight(method: &Method, headers: &ReqHeaders) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(&http::header::ORIGIN)
        && headers.contains_key(&http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Envoy's preflight answer: 200, no body, the policy's allow-* headers.
pub fn preflight_response(policy: &CorsPolicy, origin: HeaderValue) -> Response<ProxyBody> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if let Some(v) = &policy.allow_methods {
        h.insert(http::header::ACCESS_CONTROL_ALLOW_METHODS, v.clone());
    }
    if let Some(v) = &policy.allow_headers {
        h.insert(http::header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
    }
    if let Some(v) = &policy.max_age {
        h.insert(http::header::ACCESS_CONTROL_MAX_AGE, v.clone());
    }
    if policy.allow_credentials {
        h.insert(
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    r
}

/// Adds the actual-response CORS headers for an allowed origin.
pub fn decorate(policy: &CorsPolicy, origin: HeaderValue, headers: &mut HeaderMap) {
    headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if let Some(v) = &policy.expose_headers {
        headers.insert(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
    }
    if policy.allow_credentials {
        headers.insert(
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}
