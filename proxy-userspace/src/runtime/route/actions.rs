//! The non-matching parts of an HTTP rule: rewrite, redirect, fault, mirror,
//! retries and CORS, with the Envoy behaviour Istio configures.
use std::time::Duration;

use http::{HeaderValue, StatusCode, Uri};
use regex::Regex;

use super::matching::StringMatch;
pub use super::retry::{RetryOn, RetryPolicy, TryOutcome};
use crate::runtime::ids::ClusterId;

/// Istio `HTTPRewrite`.
#[derive(Clone, Debug, Default)]
pub struct Rewrite {
    /// `uri`: Envoy `prefix_rewrite` — replaces the prefix the rule matched
    /// (the whole path for exact/regex matches, `/`... for a rule without a
    /// uri match only the leading `/`).
    pub uri: Option<String>,
    /// `uriRegexRewrite`: regex (whole-path RE2) and substitution with
    /// `\1`-style groups already converted to `${1}`.
    pub uri_regex: Option<(Regex, String)>,
    /// `authority`: new `Host` / `:authority`.
    pub authority: Option<HeaderValue>,
}

impl Rewrite {
    /// The new path-and-query for `uri`, given the `uri` condition that
    /// matched. `None` when the path is unchanged.
    pub fn rewrite_path(&self, uri: &Uri, matched: Option<&StringMatch>) -> Option<String> {
        let path = uri.path();
        let new_path = if let Some(prefix) = &self.uri {
            match matched {
                Some(StringMatch::Prefix(p)) => {
                    format!("{prefix}{}", &path[p.len().min(path.len())..])
                }
                Some(StringMatch::Exact(_)) | Some(StringMatch::Regex(_)) => prefix.clone(),
                // No uri condition: Istio matches prefix "/".
                _ => format!("{prefix}{}", path.strip_prefix('/').unwrap_or(path)),
            }
        } else if let Some((re, with)) = &self.uri_regex {
            re.replace_all(path, with.as_str()).into_owned()
        } else {
            return None;
        };
        Some(match uri.query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        })
    }
}

/// Converts RE2/Envoy substitution groups (`\1`) into the `regex` crate's
/// (`${1}`), escaping literal `$`.
pub fn convert_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                let d = chars.next().unwrap_or('0');
                out.push_str("${");
                out.push(d);
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// Istio `HTTPRedirect`.
#[derive(Clone, Debug)]
pub struct Redirect {
    /// Replacement path (query kept when it has none).
    pub uri: Option<String>,
    /// Replacement authority (host).
    pub authority: Option<String>,
    /// Replacement port; `None` keeps the request's.
    pub port: Option<u16>,
    /// `derivePort: FROM_PROTOCOL_DEFAULT` (no port in the location).
    pub port_from_protocol_default: bool,
    /// Replacement scheme.
    pub scheme: Option<String>,
    /// `redirectCode`, default 301.
    pub code: StatusCode,
}

impl Redirect {
    /// The `location` header for a request.
    pub fn location(&self, uri: &Uri, authority: &str, scheme: &str) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(scheme);
        let (req_host, req_port) = split_host_port(authority);
        let host = self.authority.as_deref().unwrap_or(req_host);
        let port = if self.port_from_protocol_default {
            None
        } else if let Some(p) = self.port {
            Some(p.to_string())
        } else if self.authority.is_some() {
            None
        } else {
            req_port.map(str::to_owned)
        };
        let path_and_query = match &self.uri {
            Some(p) if p.contains('?') => p.clone(),
            Some(p) => match uri.query() {
                Some(q) => format!("{p}?{q}"),
                None => p.clone(),
            },
            None => uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        };
        match port {
            Some(port) => format!("{scheme}://{host}:{port}{path_and_query}"),
            None => format!("{scheme}://{host}{path_and_query}"),
        }
    }
}

fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    let port_start = if authority.starts_with('[') {
        authority.find("]:").map(|i| i + 1)
    } else {
        authority.rfind(':')
    };
    match port_start {
        Some(i) if authority[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            (&authority[..i], Some(&authority[i + 1..]))
        }
        _ => (authority, None),
    }
}

/// Istio `HTTPFaultInjection`.
#[derive(Clone, Debug, Default)]
pub struct Fault {
    /// `delay`: (percentage 0–100, fixed delay).
    pub delay: Option<(f64, Duration)>,
    /// `abort`.
    pub abort: Option<FaultAbort>,
}

/// Istio `HTTPFaultInjection.Abort`.
#[derive(Clone, Debug)]
pub struct FaultAbort {
    /// Percentage of requests aborted, 0–100.
    pub percent: f64,
    /// `httpStatus` (e.g. 500), or a `grpcStatus` code sent as `grpc-status`
    /// in a 200 trailers-only response.
    pub status: AbortStatus,
}

/// What an abort answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortStatus {
    /// An HTTP status code.
    Http(u16),
    /// A gRPC status code (`UNAVAILABLE` = 14, ...).
    Grpc(u32),
}

/// Maps Istio's gRPC status names (`UNAVAILABLE`) or numbers to the code.
pub fn grpc_code(name: &str) -> Option<u32> {
    name.parse().ok().or_else(|| {
        strait_config::validate::GRPC_STATUS
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .map(|i| i as u32)
    })
}

/// Whether an event with `percent` (0–100) chance happens this time.
pub fn chance(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && rand::random::<f64>() * 100.0 < percent)
}

/// One mirror destination (`mirror` + `mirrorPercentage`, or `mirrors[]`).
/// Envoy's `request_mirror_policies`: the copy goes with `-shadow` appended
/// to the host; its response is discarded.
#[derive(Clone, Debug)]
pub struct Mirror {
    /// Mirror cluster.
    pub cluster: ClusterId,
    /// Percentage of requests mirrored (Istio default 100).
    pub percent: f64,
}

/// Istio `CorsPolicy`, answered as Envoy's CORS filter does.
#[derive(Clone, Debug, Default)]
pub struct CorsPolicy {
    /// `allowOrigins` (`allowOrigin` exact strings are folded in).
    pub allow_origins: Vec<StringMatch>,
    /// `allowMethods`, joined with `,`.
    pub allow_methods: Option<HeaderValue>,
    /// `allowHeaders`, joined with `,`.
    pub allow_headers: Option<HeaderValue>,
    /// `exposeHeaders`, joined with `,`.
    pub expose_headers: Option<HeaderValue>,
    /// `maxAge` in seconds.
    pub max_age: Option<HeaderValue>,
    /// `allowCredentials`.
    pub allow_credentials: bool,
}

impl CorsPolicy {
    /// Whether `origin` is allowed (`*` exact allows every origin).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allow_origins
            .iter()
            .any(|m| matches!(m, StringMatch::Exact(s) if s == "*") || m.matches(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrite_like_envoy() {
        let rw = Rewrite {
            uri: Some("/newcatalog".into()),
            ..Default::default()
        };
        let u: Uri = "/wpcatalog/item?x=1".parse().unwrap();
        let p = StringMatch::Prefix("/wpcatalog".into());
        assert_eq!(
            rw.rewrite_path(&u, Some(&p)).unwrap(),
            "/newcatalog/item?x=1"
        );
        let e = StringMatch::Exact("/wpcatalog/item".into());
        assert_eq!(rw.rewrite_path(&u, Some(&e)).unwrap(), "/newcatalog?x=1");
        let rx = Rewrite {
            uri_regex: Some((
                Regex::new("^/service/([^/]+)(/.*)$").unwrap(),
                convert_substitution("\\2/instance/\\1"),
            )),
            ..Default::default()
        };
        let u: Uri = "/service/foo/v1/api".parse().unwrap();
        assert_eq!(rx.rewrite_path(&u, None).unwrap(), "/v1/api/instance/foo");
    }

    #[test]
    fn redirect_location() {
        let r = Redirect {
            uri: Some("/v1/bookRatings".into()),
            authority: Some("newratings.default.svc.cluster.local".into()),
            port: None,
            port_from_protocol_default: false,
            scheme: None,
            code: StatusCode::MOVED_PERMANENTLY,
        };
        let u: Uri = "/v1/getProductRatings".parse().unwrap();
        assert_eq!(
            r.location(&u, "ratings:9080", "http"),
            "http://newratings.default.svc.cluster.local/v1/bookRatings"
        );
        let r2 = Redirect {
            authority: None,
            port: Some(8443),
            scheme: Some("https".into()),
            ..r
        };
        assert_eq!(
            r2.location(&u, "ratings:9080", "http"),
            "https://ratings:8443/v1/bookRatings"
        );
    }
}
