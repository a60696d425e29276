//! Compiled `HTTPMatchRequest`s: evaluated per request with no allocation
//! except lowercasing for `ignoreUriCase`.
use std::collections::BTreeMap;

use crate::proxy::head::ReqHead;
use regex::Regex;

/// Istio `StringMatch`, compiled. Regexes are RE2 syntax (the `regex` crate)
/// and, like Envoy's `safe_regex`, must match the whole value.
#[derive(Clone, Debug)]
pub enum StringMatch {
    /// Equal to the value.
    Exact(String),
    /// Starts with the value.
    Prefix(String),
    /// The whole value matches (compiled as `^(?:re)$`).
    Regex(Regex),
    /// Only presence is required (an empty `StringMatch` under `headers`).
    Present,
}

impl StringMatch {
    /// Compiles a regex with Envoy's whole-string semantics.
    ///
    /// Errors: the regex does not compile.
    pub fn regex(re: &str) -> Result<Self, regex::Error> {
        Ok(Self::Regex(Regex::new(&format!("^(?:{re})$"))?))
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == s,
            Self::Prefix(s) => value.starts_with(s.as_str()),
            Self::Regex(r) => r.is_match(value),
            Self::Present => true,
        }
    }

    fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value.eq_ignore_ascii_case(s),
            Self::Prefix(s) => {
                value.len() >= s.len()
                    && value.as_bytes()[..s.len()].eq_ignore_ascii_case(s.as_bytes())
            }
            other => other.matches(value),
        }
    }
}

/// One compiled `HTTPMatchRequest`: every condition set must hold.
#[derive(Clone, Debug, Default)]
pub struct HttpMatch {
    /// `name`, prefixed to the route name in logs.
    pub name: Option<String>,
    /// Path, without the query string.
    pub uri: Option<StringMatch>,
    /// `http` / `https`.
    pub scheme: Option<StringMatch>,
    /// Request method.
    pub method: Option<StringMatch>,
    /// `:authority` / `Host`.
    pub authority: Option<StringMatch>,
    /// Header name (lower case) → condition.
    pub headers: Vec<(http::HeaderName, StringMatch)>,
    /// Header name → condition that must NOT hold (absent header passes).
    pub without_headers: Vec<(http::HeaderName, StringMatch)>,
    /// Query parameter → condition.
    pub query_params: Vec<(String, StringMatch)>,
    /// Port the request was addressed to (the service port).
    pub port: Option<u16>,
    /// Labels the client workload must carry.
    pub source_labels: BTreeMap<String, String>,
    /// Namespace the client workload must be in.
    pub source_namespace: Option<String>,
    /// Exact/prefix `uri` match ignores ASCII case.
    pub ignore_uri_case: bool,
}

/// What a match looks at besides the request itself.
#[derive(Clone, Copy, Debug)]
pub struct MatchContext<'a> {
    /// The service port the connection was addressed to.
    pub port: u16,
    /// The client workload, when the client is a known pod.
    pub source: Option<&'a super::SourceWorkload>,
    /// `http` or `https` (`x-forwarded-proto`, else `http`).
    pub scheme: &'a str,
}

impl HttpMatch {
    /// Whether the request satisfies every condition.
    pub fn matches(&self, req: &ReqHead, ctx: &MatchContext<'_>) -> bool {
        if let Some(p) = self.port {
            if p != ctx.port {
                return false;
            }
        }
        if let Some(m) = &self.uri {
            let path = req.uri.path();
            let ok = if self.ignore_uri_case {
                m.matches_ignore_case(path)
            } else {
                m.matches(path)
            };
            if !ok {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if !m.matches(req.method.as_str()) {
                return false;
            }
        }
        if let Some(m) = &self.scheme {
            if !m.matches(ctx.scheme) {
                return false;
            }
        }
        if let Some(m) = &self.authority {
            if !m.matches(authority(req).unwrap_or("")) {
                return false;
            }
        }
        for (name, m) in &self.headers {
            // Envoy joins repeated headers with ','; the first value is
            // enough for the common case and avoids allocating.
            match req.headers.get_str(name) {
                Some(v) if m.matches(v) => {}
                _ => return false,
            }
        }
        for (name, m) in &self.without_headers {
            if let Some(v) = req.headers.get_str(name) {
                if m.matches(v) {
                    return false;
                }
            }
        }
        if !self.query_params.is_empty() {
            let query = req.uri.query().unwrap_or("");
            for (name, m) in &self.query_params {
                match query_param(query, name) {
                    Some(v) if m.matches(v) => {}
                    _ => return false,
                }
            }
        }
        if !source_matches(
            &self.source_labels,
            self.source_namespace.as_deref(),
            ctx.source,
        ) {
            return false;
        }
        true
    }
}

/// `sourceLabels` and `sourceNamespace`: both hold when unset; set, they
/// need a known client workload.
pub fn source_matches(
    labels: &BTreeMap<String, String>,
    namespace: Option<&str>,
    source: Option<&super::SourceWorkload>,
) -> bool {
    if labels.is_empty() && namespace.is_none() {
        return true;
    }
    let Some(src) = source else { return false };
    namespace.is_none_or(|ns| ns == src.namespace)
        && labels.iter().all(|(k, v)| src.labels.get(k) == Some(v))
}

/// The request's authority: `:authority` for HTTP/2, else the `Host` header.
pub fn authority(req: &ReqHead) -> Option<&str> {
    req.uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get_str(&http::header::HOST))
}

/// The raw (not percent-decoded) value of the first `name=` in `query`; a
/// parameter without `=` has the empty value, as in Envoy.
pub fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> ReqHead {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0.into()
    }

    const CTX: MatchContext<'static> = MatchContext {
        port: 9080,
        source: None,
        scheme: "http",
    };

    #[test]
    fn uri_kinds() {
        let m = |s: StringMatch, ic: bool| HttpMatch {
            uri: Some(s),
            ignore_uri_case: ic,
            ..Default::default()
        };
        let p = parts("/Reviews/1?x=1", &[]);
        assert!(!m(StringMatch::Exact("/reviews/1".into()), false).matches(&p, &CTX));
        assert!(m(StringMatch::Exact("/reviews/1".into()), true).matches(&p, &CTX));
        assert!(m(StringMatch::Prefix("/rev".into()), true).matches(&p, &CTX));
        assert!(!m(StringMatch::Prefix("/rev".into()), false).matches(&p, &CTX));
        assert!(m(StringMatch::regex("/Reviews/[0-9]+").unwrap(), false).matches(&p, &CTX));
        // Envoy's regex must match the whole path.
        assert!(!m(StringMatch::regex("/Reviews").unwrap(), false).matches(&p, &CTX));
    }

    #[test]
    fn headers_without_headers_query_port() {
        let p = parts("/?user=jason&debug", &[("end-user", "jason"), ("x-b", "1")]);
        let hm = HttpMatch {
            headers: vec![(
                "end-user".parse().unwrap(),
                StringMatch::Exact("jason".into()),
            )],
            without_headers: vec![("x-c".parse().unwrap(), StringMatch::Present)],
            query_params: vec![
                ("user".into(), StringMatch::Exact("jason".into())),
                ("debug".into(), StringMatch::Exact("".into())),
            ],
            port: Some(9080),
            ..Default::default()
        };
        assert!(hm.matches(&p, &CTX));
        let hm2 = HttpMatch {
            without_headers: vec![("x-b".parse().unwrap(), StringMatch::Present)],
            ..Default::default()
        };
        assert!(!hm2.matches(&p, &CTX));
        let hm3 = HttpMatch {
            port: Some(80),
            ..Default::default()
        };
        assert!(!hm3.matches(&p, &CTX));
    }
}
