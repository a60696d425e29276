//! VirtualService delegation (Istio's `delegate`): a root rule with
//! `delegate: {name, namespace}` is replaced by the delegate
//! VirtualService's rules. Matches are merged pairwise (root AND delegate):
//! the delegate's conditions win where both set one, headers / query
//! parameters / labels are unioned, and a pair whose URI conditions cannot
//! both hold (delegate prefix or exact path outside the root prefix) is
//! dropped. Fields the delegate rule leaves unset (timeout, retries, fault,
//! mirror, CORS, headers, rewrite) come from the root rule, as in Istio's
//! `mergeHTTPRoute`. Delegate destinations resolve in the delegate's
//! namespace. Delegation is one level deep, like Istio.
use std::borrow::Cow;

use super::Index;
use crate::api::virtual_service::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};
use crate::api::Resource;

fn prefix_of(m: &StringMatch) -> Option<&str> {
    m.prefix.as_deref().or(m.exact.as_deref())
}

/// Root AND delegate match; None when they cannot both hold.
fn merge_match(root: &HttpMatchRequest, d: &HttpMatchRequest) -> Option<HttpMatchRequest> {
    if let (Some(ru), Some(du)) = (&root.uri, &d.uri) {
        if let (Some(rp), Some(dp)) = (ru.prefix.as_deref(), prefix_of(du)) {
            if !dp.starts_with(rp) {
                return None;
            }
        }
        if let (Some(re), Some(de)) = (ru.exact.as_deref(), prefix_of(du)) {
            if !re.starts_with(de) {
                return None;
            }
        }
    }
    let mut m = d.clone();
    m.uri = m.uri.or_else(|| root.uri.clone());
    m.scheme = m.scheme.or_else(|| root.scheme.clone());
    m.method = m.method.or_else(|| root.method.clone());
    m.authority = m.authority.or_else(|| root.authority.clone());
    for (k, v) in &root.headers {
        m.headers.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in &root.query_params {
        m.query_params.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in &root.without_headers {
        m.without_headers
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    for (k, v) in &root.source_labels {
        m.source_labels
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    m.port = m.port.or(root.port);
    if m.gateways.is_empty() {
        m.gateways = root.gateways.clone();
    }
    m.source_namespace = m.source_namespace.or_else(|| root.source_namespace.clone());
    m.ignore_uri_case |= root.ignore_uri_case;
    Some(m)
}

fn merge_rule(root: &HttpRoute, d: &HttpRoute) -> Option<HttpRoute> {
    let mut out = d.clone();
    out.matches = match (root.matches.is_empty(), d.matches.is_empty()) {
        (true, _) => d.matches.clone(),
        (false, true) => root.matches.clone(),
        (false, false) => {
            let merged: Vec<_> = root
                .matches
                .iter()
                .flat_map(|r| d.matches.iter().filter_map(move |m| merge_match(r, m)))
                .collect();
            if merged.is_empty() {
                return None;
            }
            merged
        }
    };
    out.timeout = out.timeout.or_else(|| root.timeout.clone());
    out.retries = out.retries.or_else(|| root.retries.clone());
    out.fault = out.fault.or_else(|| root.fault.clone());
    out.mirror = out.mirror.or_else(|| root.mirror.clone());
    out.cors_policy = out.cors_policy.or_else(|| root.cors_policy.clone());
    out.headers = out.headers.or_else(|| root.headers.clone());
    out.rewrite = out.rewrite.or_else(|| root.rewrite.clone());
    out.delegate = None;
    Some(out)
}

/// The HTTP rules of `v` with delegations expanded, each with the resource
/// whose namespace its destinations resolve in.
pub(crate) fn expand<'a>(
    idx: &Index<'a>,
    res: &'a Resource,
    v: &'a VirtualService,
) -> Vec<(Cow<'a, HttpRoute>, &'a Resource)> {
    let mut out = Vec::with_capacity(v.http.len());
    for r in &v.http {
        let Some(d) = &r.delegate else {
            out.push((Cow::Borrowed(r), res));
            continue;
        };
        let ns = d
            .namespace
            .clone()
            .unwrap_or_else(|| res.namespace().to_string());
        let Some(&i) = idx.vs_by_name.get(&(ns, d.name.clone())) else {
            continue;
        };
        let (dres, dvs) = idx.virtual_services[i];
        if !dvs.hosts.is_empty() {
            // Only host-less VirtualServices can be delegates.
            continue;
        }
        for dr in dvs.http.iter().filter(|dr| dr.delegate.is_none()) {
            if let Some(m) = merge_rule(r, dr) {
                out.push((Cow::Owned(m), dres));
            }
        }
    }
    out
}
