//! Load balancers of DestinationRule `trafficPolicy.loadBalancer`, with
//! Envoy's behaviour: ROUND_ROBIN, RANDOM, LEAST_REQUEST (power of two
//! choices), PASSTHROUGH (the original destination) and consistentHash
//! (ring hash or Maglev). Ejected hosts are skipped; Istio sets Envoy's
//! panic threshold to 0 so all-ejected means "no healthy upstream".
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::HeaderName;

use super::endpoint::Endpoint;
use super::hash::{fnv1a, HashTable};
use crate::proxy::head::ReqHeaders;

/// Where consistentHash takes its key from.
#[derive(Clone, Debug)]
pub enum HashKey {
    /// `httpHeaderName`.
    Header(HeaderName),
    /// `httpCookie`: hash the cookie `name`. When the request has none and
    /// `ttl` is set, the proxy makes one up, hashes it, and sends it back in
    /// `set-cookie` (Envoy generates the cookie the same way), so the client
    /// sticks to the host from its first request on.
    Cookie {
        /// Cookie name.
        name: String,
        /// `path` of the generated cookie.
        path: Option<String>,
        /// `ttl` of the generated cookie; `None` = never generate.
        ttl: Option<std::time::Duration>,
    },
    /// `useSourceIp`.
    SourceIp,
    /// `httpQueryParameterName`.
    QueryParameter(String),
}

/// The simple policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simple {
    /// `ROUND_ROBIN`; also the default when no DestinationRule picks one
    /// (Istio's default is LEAST_REQUEST; see `LoadBalancer::default` in
    /// the config crate).
    RoundRobin,
    /// `RANDOM`.
    Random,
    /// `LEAST_REQUEST`: the less loaded of two random hosts.
    LeastRequest,
    /// `PASSTHROUGH`: connect to the original destination.
    Passthrough,
}

/// A cluster's load balancer with its state, built once per snapshot.
#[derive(Debug)]
pub enum LoadBalancer {
    /// A simple policy.
    Simple(Simple, AtomicUsize),
    /// `consistentHash`: a lookup table over the endpoints.
    Hash(HashKey, HashTable),
}

/// Per-request inputs of a pick.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickContext<'a> {
    /// Request headers (HTTP), for header / cookie hashing.
    pub headers: Option<&'a ReqHeaders>,
    /// Query string, for parameter hashing.
    pub query: Option<&'a str>,
    /// Client IP.
    pub source_ip: Option<IpAddr>,
    /// An endpoint to avoid (a retry's previous host), when others exist.
    pub avoid: Option<SocketAddr>,
    /// A generated hash cookie value to use when the request has none.
    pub generated_cookie: Option<&'a str>,
}

impl LoadBalancer {
    /// A simple policy.
    pub fn simple(policy: Simple) -> Self {
        Self::Simple(policy, AtomicUsize::new(rand::random::<u16>() as usize))
    }

    /// Picks a healthy endpoint; `None` when none is healthy. PASSTHROUGH
    /// returns `None` too: the caller uses the original destination.
    pub fn pick(&self, eps: &[Arc<Endpoint>], ctx: &PickContext<'_>) -> Option<Arc<Endpoint>> {
        if eps.is_empty() {
            return None;
        }
        let usable = |e: &Endpoint| !e.is_ejected() && Some(e.addr) != ctx.avoid;
        let chosen = match self {
            Self::Simple(Simple::Passthrough, _) => return None,
            Self::Simple(Simple::RoundRobin, next) => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                (0..eps.len())
                    .map(|i| &eps[(start + i) % eps.len()])
                    .find(|e| usable(e))
            }
            Self::Simple(Simple::Random, _) => {
                let start = rand::random::<u32>() as usize;
                (0..eps.len())
                    .map(|i| &eps[(start + i) % eps.len()])
                    .find(|e| usable(e))
            }
            Self::Simple(Simple::LeastRequest, _) => {
                let a = &eps[rand::random::<u32>() as usize % eps.len()];
                let b = &eps[rand::random::<u32>() as usize % eps.len()];
                match (usable(a), usable(b)) {
                    (true, true) => Some(if b.active_requests() < a.active_requests() {
                        b
                    } else {
                        a
                    }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    (false, false) => {
                        let start = rand::random::<u32>() as usize;
                        (0..eps.len())
                            .map(|i| &eps[(start + i) % eps.len()])
                            .find(|e| usable(e))
                    }
                }
            }
            Self::Hash(key, table) => match hash_of(key, ctx) {
                Some(h) => table.lookup(h, |i| usable(&eps[i])).map(|i| &eps[i]),
                None => {
                    let start = rand::random::<u32>() as usize;
                    (0..eps.len())
                        .map(|i| &eps[(start + i) % eps.len()])
                        .find(|e| usable(e))
                }
            },
        };
        // The avoided host is still better than nothing.
        chosen
            .or_else(|| eps.iter().find(|e| !e.is_ejected()))
            .cloned()
    }

    /// Whether this is PASSTHROUGH.
    pub fn is_passthrough(&self) -> bool {
        matches!(self, Self::Simple(Simple::Passthrough, _))
    }
}

/// The value of cookie `name` (surrounding quotes removed, as Envoy does).
pub fn cookie<'h>(headers: &'h ReqHeaders, name: &str) -> Option<&'h str> {
    headers.find_map_all(&http::header::COOKIE, |v| {
        std::str::from_utf8(v).ok()?.split(';').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
    })
}

impl LoadBalancer {
    /// For `httpCookie` hashing with a `ttl`: the cookie to generate when
    /// the request has none, as `(name, path, ttl)`.
    pub fn cookie_to_generate(
        &self,
        headers: &ReqHeaders,
    ) -> Option<(&str, Option<&str>, std::time::Duration)> {
        match self {
            Self::Hash(
                HashKey::Cookie {
                    name,
                    path,
                    ttl: Some(ttl),
                },
                _,
            ) if cookie(headers, name).is_none() => Some((name, path.as_deref(), *ttl)),
            _ => None,
        }
    }
}

fn hash_of(key: &HashKey, ctx: &PickContext<'_>) -> Option<u64> {
    match key {
        HashKey::Header(name) => ctx.headers?.get_bytes(name).map(fnv1a),
        HashKey::Cookie { name, .. } => ctx
            .headers
            .and_then(|h| cookie(h, name))
            .or(ctx.generated_cookie)
            .map(|v| fnv1a(v.as_bytes())),
        HashKey::SourceIp => ctx.source_ip.map(|ip| fnv1a(ip.to_string().as_bytes())),
        HashKey::QueryParameter(name) => {
            crate::runtime::route::matching::query_param(ctx.query?, name)
                .map(|v| fnv1a(v.as_bytes()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u16) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                Arc::new(Endpoint::new(
                    SocketAddr::from(([127, 0, 0, 1], 2000 + i)),
                    Default::default(),
                ))
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles_and_skips_ejected() {
        let e = eps(3);
        let lb = LoadBalancer::simple(Simple::RoundRobin);
        let ctx = PickContext::default();
        let picks: Vec<_> = (0..6)
            .map(|_| lb.pick(&e, &ctx).unwrap().addr.port())
            .collect();
        for p in 2000..2003 {
            assert_eq!(picks.iter().filter(|x| **x == p).count(), 2);
        }
        e[1].ejected.store(true, Ordering::Relaxed);
        assert!((0..6).all(|_| lb.pick(&e, &ctx).unwrap().addr.port() != 2001));
        for x in &e {
            x.ejected.store(true, Ordering::Relaxed);
        }
        assert!(
            lb.pick(&e, &ctx).is_none(),
            "all ejected: no healthy upstream"
        );
    }

    #[test]
    fn least_request_prefers_idle_host() {
        let e = eps(2);
        let _busy: Vec<_> = (0..5)
            .map(|_| super::super::endpoint::ActiveGuard::new(e[0].clone()))
            .collect();
        let lb = LoadBalancer::simple(Simple::LeastRequest);
        let n = 400;
        let idle = (0..n)
            .filter(|_| lb.pick(&e, &PickContext::default()).unwrap().addr.port() == 2001)
            .count();
        // P2C picks the busy host only when both draws hit it: p = 1/4.
        let p = 0.75f64;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (idle as f64 - n as f64 * p).abs() < 5.0 * sigma,
            "idle picked {idle} of {n}"
        );
    }

    #[test]
    fn header_hash_is_sticky() {
        let e = eps(5);
        let lb = LoadBalancer::Hash(
            HashKey::Header(HeaderName::from_static("x-user")),
            HashTable::ring(&e, 1024),
        );
        let mut h = http::HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        let h = ReqHeaders::Map(h);
        let ctx = PickContext {
            headers: Some(&h),
            ..Default::default()
        };
        let first = lb.pick(&e, &ctx).unwrap().addr;
        assert!((0..20).all(|_| lb.pick(&e, &ctx).unwrap().addr == first));
    }
}
