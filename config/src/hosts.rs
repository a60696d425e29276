//! Host names as Istio resolves them.
//!
//! - A name without a `.` is a short name: it takes the resource's namespace
//!   and the cluster domain (`reviews` in `default` →
//!   `reviews.default.svc.cluster.local`), Istio's `ResolveShortnameToFQDN`.
//!   Names with a dot (`reviews.default`), IP addresses and `*` are kept as
//!   written.
//! - `*` matches every host; `*.example.com` matches any host ending in
//!   `.example.com` (one or more labels), like Istio's `host.Name.Matches`.
use std::net::IpAddr;

/// The cluster DNS domain (Kubernetes' default).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// FQDN of `host` written in a resource in `namespace`.
pub fn resolve(host: &str, namespace: &str) -> String {
    if host.is_empty() || host == "*" || host.contains('.') || host.parse::<IpAddr>().is_ok() {
        return host.to_string();
    }
    if namespace.is_empty() {
        return format!("{host}.svc.{CLUSTER_DOMAIN}");
    }
    format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}")
}

/// FQDN of the Kubernetes Service `name` in `namespace`.
pub fn service_fqdn(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc.{CLUSTER_DOMAIN}")
}

/// `true` when `pattern` (possibly a wildcard) matches the concrete `host`.
pub fn matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// `true` when two host patterns can match a common host (Istio's
/// `SubsetOf`/`Matches` either way), used for Gateway server hosts vs
/// VirtualService hosts.
pub fn intersect(a: &str, b: &str) -> bool {
    matches(a, b) || matches(b, a) || {
        // Two wildcards: the longer suffix must end with the shorter.
        match (a.strip_prefix('*'), b.strip_prefix('*')) {
            (Some(x), Some(y)) => x.ends_with(y) || y.ends_with(x),
            _ => false,
        }
    }
}

/// Splits a Gateway server / Sidecar egress host `namespace/host`
/// (namespace `*` = any, `.` = the resource's, `~` = none) into its parts.
pub fn split_namespaced(host: &str) -> (Option<&str>, &str) {
    match host.split_once('/') {
        Some((ns, h)) => (Some(ns), h),
        None => (None, host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_take_the_namespace() {
        assert_eq!(
            resolve("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(resolve("reviews.default", "x"), "reviews.default");
        assert_eq!(resolve("*", "x"), "*");
        assert_eq!(resolve("*.example.com", "x"), "*.example.com");
        assert_eq!(resolve("10.0.0.1", "x"), "10.0.0.1");
    }

    #[test]
    fn wildcards() {
        assert!(matches("*", "a.b"));
        assert!(matches("*.example.com", "www.example.com"));
        assert!(matches("*.example.com", "a.b.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(!matches("a.example.com", "b.example.com"));
        assert!(intersect("*.example.com", "*.com"));
        assert!(!intersect("*.example.com", "*.org"));
    }
}
